"""Padded prepared clips: the diffusion loss, the alignment loss and the monitor discrepancy average
over the real codec frames only (frame t is real when the sample at its window centre, t·hop, is).

The prepared directory is written here: 1 s clips at 8 kHz whose second half (even records) or last
quarter (odd records) is zero padding with ``audio_mask`` False there, as ``jaxstage prepare`` writes
clips shorter than ``data.clip_seconds``.
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordWriter

from jaxstage.config import load_config
from jaxstage.data.pipeline import BatchStream, example_spec, held_out_batch
from jaxstage.data.records import DATASET_JSON, FORMAT_VERSION, encode_record
from jaxstage.train.recipe import build_monitor
from jaxstage.train.state import build_experiment
from jaxstage.train.step import make_discrepancy, make_train_step
from jaxstage.train.trainer import fresh_state

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny_t2a.py")
SR, N, TEXT_LEN, TEXT_DIM, SSL_FRAMES, SSL_DIM, COUNT = 8000, 8000, 8, 16, 20, 24, 12
SHARD = "shard-00000.array_record"


@pytest.fixture(scope="module")
def padded(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("padded")
    rng = np.random.default_rng(0)
    writer = ArrayRecordWriter(str(directory / SHARD), "group_size:1")
    for i in range(COUNT):
        mask = np.arange(N) < (N // 2 if i % 2 == 0 else 3 * N // 4)
        writer.write(encode_record({
            "audio": np.where(mask, 0.3 * rng.standard_normal(N), 0.0).astype(np.float32), "audio_mask": mask,
            "text_emb": rng.standard_normal((TEXT_LEN, TEXT_DIM)).astype(np.float32),
            "text_mask": np.ones(TEXT_LEN, bool),
            "ssl": rng.standard_normal((SSL_FRAMES, SSL_DIM)).astype(np.float32),
            "caption": f"clip {i}", "id": f"item-{i}"}))
    writer.close()
    features = {"audio": ([N], "float32"), "audio_mask": ([N], "bool"), "text_mask": ([TEXT_LEN], "bool"),
                "text_emb": ([TEXT_LEN, TEXT_DIM], "float32"), "ssl": ([SSL_FRAMES, SSL_DIM], "float32")}
    meta = {"version": FORMAT_VERSION, "count": COUNT, "sample_rate": SR, "num_samples": N,
            "shards": [{"file": SHARD, "count": COUNT}], "skipped": [],
            "features": {k: {"shape": s, "dtype": d} for k, (s, d) in features.items()},
            "encoders": {"text": "test-random", "ssl": "test-random"}}
    (directory / DATASET_JSON).write_text(json.dumps(meta))
    return directory


def config(path: Path, *extra: str):
    return load_config(TINY, [
        "data.source=prepared", f"data.path={path}", "data.clip_seconds=1.0", "text.kind=precomputed",
        "guidance.ssl=precomputed", "guidance.lambda0=0.5", "guidance.hidden=32", "regime.mode=adaptive",
        "regime.every=2", "regime.monitor_size=4", *extra])


def expected_frame_mask(audio_mask: np.ndarray, num_frames: int, hop: int) -> np.ndarray:
    """By the definition: frame t is real iff sample t·hop is (right padding: iff t·hop < length)."""
    return (np.arange(num_frames)[None] * hop < audio_mask.sum(1)[:, None]).astype(np.float32)


def test_only_prepared_batches_carry_the_padding_mask(padded):
    assert example_spec(config(padded))["audio_mask"] == ((N,), np.dtype(bool))
    assert "audio_mask" not in example_spec(load_config(TINY, []))  # synthetic: batch as before
    mask = next(BatchStream(config(padded), 0, 1))["audio_mask"]
    assert mask.dtype == bool and set(mask.sum(1).tolist()) == {N // 2, 3 * N // 4}


def test_diffusion_loss_averages_over_real_frames_only(padded):
    """The step converts the batch's sample mask to codec frames and hands it to the loss: the loss
    is the per-example mean over real frames (then the batch mean) and its gradient with respect to
    the model's output is exactly 0 at padded frames. Without the key the step takes the unmasked path."""
    cfg = config(padded)
    exp = build_experiment(cfg)
    real_objective, seen = exp.objective, []

    def record(x0, eps, level, mask=None):
        seen.append({"x0": np.asarray(x0), "eps": np.asarray(eps), "level": np.asarray(level),
                     "mask": None if mask is None else np.asarray(mask)})

    class Recording(type(real_objective)):  # the step's loss inputs, sent to the host from the compiled step
        def loss(self, model_output, x_t, x0, eps, level, mask=None):
            jax.debug.callback(record, x0, eps, level, *([] if mask is None else [mask]))
            return super().loss(model_output, x_t, x0, eps, level, mask)

    exp.objective = Recording()
    state = fresh_state(exp)
    host = next(BatchStream(cfg, 0, 1))
    step = jax.jit(make_train_step(exp))  # compiled (eagerly the two steps took over a minute)
    _, metrics = step(jax.tree.map(jnp.copy, state), {k: jnp.asarray(v) for k, v in host.items()})
    jax.effects_barrier()
    rec = seen[-1]
    x0, eps, level = rec["x0"], rec["eps"], rec["level"]
    real = expected_frame_mask(host["audio_mask"], x0.shape[1], cfg.codec.hop_length)
    assert 0 < real.mean() < 1
    np.testing.assert_array_equal(rec["mask"], real)

    out = jax.random.normal(jax.random.PRNGKey(1), x0.shape)

    def loss(o, mask):
        return jnp.mean(real_objective.loss(o, None, x0, eps, level, mask))

    grad = np.asarray(jax.grad(loss)(out, rec["mask"]))
    assert np.all(grad[real == 0] == 0.0) and np.all(np.abs(grad[real == 1]).sum(-1) > 0)
    err = np.asarray(((out - (eps - x0)) ** 2).mean(-1))  # rectified flow: v = eps − x0
    by_hand = np.mean((err * real).sum(1) / real.sum(1))
    assert float(loss(out, rec["mask"])) == pytest.approx(by_hand, rel=1e-6)
    assert float(loss(out, None)) != pytest.approx(by_hand, rel=1e-3)

    unmasked = {k: jnp.asarray(v) for k, v in host.items() if k != "audio_mask"}
    _, plain = step(jax.tree.map(jnp.copy, state), unmasked)
    jax.effects_barrier()
    assert seen[-1]["mask"] is None
    assert float(plain["loss_diff"]) != pytest.approx(float(metrics["loss_diff"]), rel=1e-3)
    assert float(plain["loss_align"]) != pytest.approx(float(metrics["loss_align"]), rel=1e-4)


@pytest.mark.parametrize("kind", ["alignment", "output"])
def test_monitor_discrepancy_ignores_padded_frames(padded, kind):
    extra = () if kind == "alignment" else ("regime.discrepancy=output", "guidance.ssl=spectral")
    cfg = config(padded, *extra)
    exp = build_experiment(cfg)
    state = fresh_state(exp)
    batch, _ = held_out_batch(cfg, cfg.regime.monitor_size)
    monitor = build_monitor(cfg, exp.recipe, exp.codec, exp.objective, state.codec_stats, batch["audio"],
                            batch[exp.text_key], batch["text_mask"], batch.get("ssl_targets"),
                            ssl_params=exp.ssl_params, audio_mask=batch["audio_mask"])
    real = expected_frame_mask(batch["audio_mask"], monitor.x0.shape[1], cfg.codec.hop_length)
    np.testing.assert_array_equal(monitor.frame_mask, real)
    measure = jax.jit(make_discrepancy(exp))

    def d(m):
        return float(measure(state.params, m, state.codec_stats))

    base = d(monitor)
    noise = 3.0 * jax.random.normal(jax.random.PRNGKey(2), monitor.targets.shape)
    is_real = jnp.asarray(real)[..., None] > 0
    assert d(monitor.replace(targets=jnp.where(is_real, monitor.targets, noise))) == base
    assert d(monitor.replace(targets=jnp.where(is_real, noise, monitor.targets))) != pytest.approx(base, rel=1e-4)
    assert d(monitor.replace(frame_mask=None)) != pytest.approx(base, rel=1e-4)
