"""The mixed-precision policy (precision.compute, jaxstage/precision.py): bf16 compute with fp32 master
weights tracks the fp32 run, is what the compiled step computes, and shards like fp32."""

import collections
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstage import parallel
from jaxstage.config import MeshConfig, load_config
from jaxstage.data.pipeline import BatchStream
from jaxstage.precision import compute_dtype
from jaxstage.train.state import build_experiment
from jaxstage.train.step import abstract_batch, compile_train_step, make_train_step
from jaxstage.train.trainer import fresh_state

TINY = "configs/tiny_t2a.py"
# the tiny config with all three mechanisms driven by a measured p that completes its rise in 300 steps
ADAPTIVE = ["regime.mode=adaptive", "guidance.lambda0=0.5", "guidance.hidden=64", "regime.every=10", "regime.warmup_steps=50",
            "regime.window=4", "regime.monitor_size=8", "timesteps.adaptive=true", "train.batch_size=4"]
STEPS = 300
WINDOW = 30
LOSS_TOLERANCE = 0.01  # |bf16 - fp32| / fp32 of every 30-step mean of the loss (measured: ~2e-5)
PROGRESS_TOLERANCE = 0.02  # |p_bf16 - p_fp32| at every step (measured: 4e-4)


def test_compute_dtype_per_platform():
    assert compute_dtype("auto", "cpu") == jnp.float32
    for platform in ("gpu", "cuda", "tpu"):
        assert compute_dtype("auto", platform) == jnp.bfloat16
    assert compute_dtype("bfloat16", "cpu") == jnp.bfloat16
    assert compute_dtype("float32", "gpu") == jnp.float32
    with pytest.raises(ValueError, match="precision.compute='fp8'"):
        compute_dtype("fp8", "cpu")


def _dot_dtypes(hlo: str) -> collections.Counter:
    """(lhs, rhs, result) element types of every dot_general in StableHLO text."""
    counts = collections.Counter()
    for line in hlo.splitlines():
        if "stablehlo.dot_general" in line:
            counts[tuple(t.split("x")[-1] for t in re.findall(r"tensor<([^>]*)>", line))] += 1
    return counts


@pytest.fixture(scope="module")
def tiny_steps():
    """(experiment, fresh state) per compute dtype."""
    out = {}
    for compute in ("float32", "bfloat16"):
        exp = build_experiment(load_config(TINY, [f"precision.compute={compute}"]))
        out[compute] = exp, fresh_state(exp)
    return out


def test_compiled_step_matmul_dtypes(tiny_steps):
    """bf16: the DiT's matmuls take bf16 operands (fp32 stays for the rest); fp32: no bf16 anywhere."""
    dots = {}
    for compute, (exp, state) in tiny_steps.items():
        dots[compute] = _dot_dtypes(jax.jit(make_train_step(exp)).lower(state, abstract_batch(exp)).as_text())
    assert not any("bf16" in key for key in dots["float32"]), dots["float32"]
    bf16 = dots["bfloat16"]
    bf16_dots = sum(n for key, n in bf16.items() if key[:2] == ("bf16", "bf16"))
    exp, _ = tiny_steps["bfloat16"]
    # per block, forward: qkv, self-attention (2), to_out, cross q, kv, attention (2), to_out, ff (2) = 11
    assert bf16_dots >= 11 * exp.cfg.model.depth * 3, bf16  # forward + two backward products each
    assert sum(n for key, n in bf16.items() if key == ("f32", "f32", "f32")) > 0  # text encoder, projector


def test_state_stays_float32_under_bf16(tiny_steps):
    """Master weights, optimizer moments, EMA and the metrics are fp32 after a bf16-compute step."""
    exp, state = tiny_steps["bfloat16"]
    step = compile_train_step(exp, state)
    state, metrics = step(state, parallel.global_batch(next(BatchStream(exp.cfg, 0, 1)), exp.batch_sharding))
    floats = [x for x in jax.tree.leaves((state.params, state.opt_state, state.ema_params))
              if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(x.dtype == jnp.float32 for x in floats)
    assert metrics["loss"].dtype == jnp.float32 and np.isfinite(float(metrics["loss"]))


def _train(compute: str, steps: int, extra: list[str], mesh_cfg: MeshConfig | None = None, devices=None):
    cfg = load_config(TINY, [*extra, f"precision.compute={compute}", f"train.steps={steps}"])
    mesh = None
    if mesh_cfg is not None:
        cfg.mesh = mesh_cfg
        mesh = parallel.make_mesh(cfg.mesh, devices)
    exp = build_experiment(cfg, mesh)
    state = fresh_state(exp)
    step = compile_train_step(exp, state)
    stream = BatchStream(cfg, 0, 1)
    rows = []
    for _ in range(steps):
        state, metrics = step(state, parallel.global_batch(next(stream), exp.batch_sharding))
        rows.append((float(metrics["loss"]), float(metrics["progress"])))
    return np.array(rows), jax.device_get(state.params)


def _flat(params) -> np.ndarray:
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(params)])


def test_bf16_tracks_fp32_for_300_steps():
    """300 steps of the tiny adaptive run: every 30-step loss mean within 1% of fp32's, p rises in
    both and agrees, and the weights do differ (bf16 really ran)."""
    one = (MeshConfig(1, 1, 1), jax.devices()[:1])
    fp32, fp32_params = _train("float32", STEPS, ADAPTIVE, *one)
    bf16, bf16_params = _train("bfloat16", STEPS, ADAPTIVE, *one)
    means = [rows[:, 0].reshape(-1, WINDOW).mean(axis=1) for rows in (fp32, bf16)]
    rel = np.abs(means[1] - means[0]) / means[0]
    assert rel.max() <= LOSS_TOLERANCE, rel
    assert means[1][-1] < means[1][0] * 0.9, means[1]  # it learns
    assert fp32[-1, 1] > 0.5 and bf16[-1, 1] > 0.5, (fp32[-1, 1], bf16[-1, 1])  # the regime moves
    assert np.abs(fp32[:, 1] - bf16[:, 1]).max() <= PROGRESS_TOLERANCE
    a, b = _flat(fp32_params), _flat(bf16_params)
    assert 0 < np.linalg.norm(a - b) / np.linalg.norm(a) < 0.05


def test_sharded_bf16_step_equals_single_device():
    """bf16 compute on an FSDP-8 x 1 mesh of fake devices gives the single-device bf16 losses and weights
    (to bf16 rounding of differently ordered reductions)."""
    assert len(jax.devices()) == 8, "tests/conftest.py must provide 8 fake CPU devices"
    single, single_params = _train("bfloat16", 4, [], MeshConfig(1, 1, 1), jax.devices()[:1])
    sharded, sharded_params = _train("bfloat16", 4, [], MeshConfig(2, 4, 1), jax.devices())
    np.testing.assert_allclose(sharded[:, 0], single[:, 0], rtol=1e-3)
    a, b = _flat(single_params), _flat(sharded_params)
    assert np.linalg.norm(a - b) / np.linalg.norm(a) <= 1e-3


def test_bf16_run_resumes_in_fp32_and_samples(tmp_path):
    """The checkpoint of a bf16-compute run is float32 state: it resumes with precision.compute=float32
    and its weights load for sampling at either precision."""
    from jaxstage.inference.load import load_run
    from jaxstage.train.trainer import train

    sets = ["train.steps=2", "train.ckpt_every=2", "train.log_every=1", "train.progress_bar=false",
            "codec.stats_examples=4"]
    train(load_config(TINY, [*sets, "precision.compute=bfloat16"]), tmp_path)
    result = train(load_config(TINY, [*sets, "precision.compute=float32", "train.steps=4"]), tmp_path)
    assert result.final_step == 4
    from jaxstage.inference.sampling import Generator

    audio = {}
    for compute in ("float32", "bfloat16"):
        cfg = load_config(TINY, [*sets, f"precision.compute={compute}", "train.steps=4"])
        model, weights = load_run(cfg, tmp_path)
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(weights.params))
        audio[compute] = np.asarray(Generator(model)(weights.ema_params, weights.codec_stats, ["a low hum"], steps=2))
        assert audio[compute].dtype == np.float32 and np.isfinite(audio[compute]).all()
    assert not np.array_equal(audio["float32"], audio["bfloat16"])  # the bf16 sampler really ran in bf16
