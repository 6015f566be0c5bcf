"""Fine-tuning and ARC post-training of imported Stable Audio Open-shaped models (issue 20, acceptance 4).

Two toy checkpoints in stable-audio-tools' layout (tests/tools/export/sao_like.py: SAO 1.0's structure,
v objective, seconds_start + seconds_total; SAO Small's: rectified flow, seconds_total only, qk_norm)
are imported with `jaxstage import --t5`. A prepared directory per import (`prepare` with the JAX T5,
the tiny HuBERT's SSL targets and that import's Oobleck latents) feeds:

- the stage-adaptive fine-tune (adaptive regime, REPA alignment on the precomputed targets, adaptive
  timesteps, structure regularizer) from ``train.init_from`` = the SAO-shaped import, on a fake
  8-device (data 4 × fsdp 2) mesh, compiled once, matching the single-device steps;
- ARC post-training of the SAO-Small-shaped import (text.kind=precomputed: ARC runs no T5), which
  then samples with 8-step ping-pong without CFG and exports the whole model back; stable-audio-tools
  0.0.19 loads that export strictly and samples the same audio (tests/tools/export/sao_reference.py).

Fixtures are per model (not one for the file) so that `pytest -n 2` splitting the file across workers
builds each import once.
"""

import json
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tools" / "export"))
sys.path.insert(0, str(ROOT / "tests" / "data"))

from sao_like import SR, sao_like_config, save_wide_t5, write_sao_like_checkpoint

from jaxstage import cli, parallel
from jaxstage.config import apply_overrides, load_json
from jaxstage.tools.export import safetensors_io

CLIPS, MONITOR, BATCH, STEPS = 16, 4, 8, 4
CLIP_SECONDS = 0.032  # the imports' sample_size: 256 samples = 16 latent frames
MESH = (4, 2, 1)  # data × fsdp × tensor on the 8 fake devices of tests/conftest.py
# the stage-adaptive recipe at toy cadences (every stage component changes within the 4 steps)
RECIPE = ["regime.mode=adaptive", "regime.every=2", f"regime.monitor_size={MONITOR}", "regime.window=2",
          "guidance.ssl=precomputed", "guidance.lambda0=0.5", "guidance.hidden=32", "timesteps.adaptive=true",
          "struct.enabled=true", "struct.num_groups=2", "struct.every=2", "struct.ramp_steps=2"]
RUN = [f"train.steps={STEPS}", f"train.batch_size={BATCH}", "train.log_every=1", "train.ckpt_every=1000",
       "train.progress_bar=false", "train.async_checkpoint=false", "sample.num=2", "sample.every=0"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> types.SimpleNamespace:
    """The T5 both imports use (t5-small's width, 1 layer) and the clips with their manifest."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from hf_tiny import TINY_WORDS

    work = tmp_path_factory.mktemp("sao_shared")
    t5 = save_wide_t5(work / "t5", 512)
    rng = np.random.default_rng(0)
    (work / "clips").mkdir()
    lines = ["path,caption"]
    for i in range(CLIPS):
        seconds = 0.04 + 0.01 * (i % 5)  # longer than the clip: seconds_total varies per record
        sf.write(work / f"clips/{i}.wav", (0.3 * rng.standard_normal(int(SR * seconds))).astype(np.float32), SR)
        lines.append(f"clips/{i}.wav,{' '.join(rng.choice(TINY_WORDS, 3))}")
    (work / "manifest.csv").write_text("\n".join(lines) + "\n")
    return types.SimpleNamespace(work=work, t5=t5, manifest=work / "manifest.csv")


def _import_and_prepare(shared, work: Path, *, small: bool, ssl: bool) -> types.SimpleNamespace:
    """A SAO-shaped checkpoint (``src``) `jaxstage import`ed (``run``), and the clips `prepare`d (``prepared``)
    with the JAX T5, that import's Oobleck latents and (``ssl``) the tiny HuBERT's targets."""
    from jaxstage.data.encoders import HFAudioEncoder, text_encoder_for
    from jaxstage.data.latent_encoder import AutoencoderEncoder
    from jaxstage.data.prepare import prepare

    src = write_sao_like_checkpoint(work / "src", sao_like_config(512, small=small))
    run = work / "run"
    assert cli.main(["import", "--src", str(src), "--out", str(run), "--t5", str(shared.t5)]) == 0
    ssl_encoder = None
    if ssl:
        from hf_tiny import save_tiny_hubert

        ssl_encoder = HFAudioEncoder(save_tiny_hubert(work / "hubert"), layers=(1, 2), sample_rate=SR)
    prepare(shared.manifest, work / "prepared", sample_rate=SR, clip_seconds=CLIP_SECONDS, batch_size=BATCH,
            progress=False, min_seconds=0.01, text_encoder=text_encoder_for(shared.t5, 8), ssl_encoder=ssl_encoder,
            autoencoder=AutoencoderEncoder(run / "autoencoder", SR, round(SR * CLIP_SECONDS), batch_size=BATCH))
    return types.SimpleNamespace(src=src, run=run, prepared=work / "prepared", t5=shared.t5)


@pytest.fixture(scope="module")
def sao(shared, tmp_path_factory) -> types.SimpleNamespace:
    """SAO 1.0's structure: v objective, seconds_start + seconds_total; prepared with SSL targets."""
    return _import_and_prepare(shared, tmp_path_factory.mktemp("sao"), small=False, ssl=True)


@pytest.fixture(scope="module")
def small(shared, tmp_path_factory) -> types.SimpleNamespace:
    """SAO Small's structure: rectified flow, seconds_total only, qk_norm ln."""
    return _import_and_prepare(shared, tmp_path_factory.mktemp("small"), small=True, ssl=False)


def finetune_config(sao, mesh: tuple[int, int, int], *extra: str):
    """The imported SAO run's own config, fine-tuned on its prepared latents with the stage-adaptive recipe."""
    cfg = load_json(sao.run / "config.json")
    data, fsdp, tensor = mesh
    return apply_overrides(cfg, [
        "data.source=prepared", f"data.path={sao.prepared}", "data.latents=true", "text.kind=precomputed",
        f"train.init_from={sao.run}", "optim.lr=1e-3", "optim.warmup_steps=0", "sample.steps=2",
        f"mesh.data={data}", f"mesh.fsdp={fsdp}", f"mesh.tensor={tensor}", *RECIPE, *RUN, *extra])


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def _single_device_steps(cfg):
    """STEPS steps of the compiled step on one device from ``train.init_from``: (losses, params and EMA
    at step 0, params after)."""
    from jaxstage.data.pipeline import BatchStream
    from jaxstage.train.state import build_experiment
    from jaxstage.train.step import compile_train_step
    from jaxstage.train.trainer import state_from_run

    exp = build_experiment(cfg, parallel.make_mesh(cfg.mesh, jax.devices()[:1]))
    state, note = state_from_run(exp, cfg.train.init_from)
    assert "codec statistics copied" in note
    start, start_ema = jax.device_get(state.params), jax.device_get(state.ema_params)
    step = compile_train_step(exp, state)
    stream = BatchStream(cfg, 0, 1)
    losses = []
    for _ in range(STEPS):
        state, metrics = step(state, parallel.global_batch(next(stream), exp.batch_sharding))
        losses.append(float(metrics["loss"]))
    assert step.trace_count == 1
    return np.array(losses), start, start_ema, jax.device_get(state.params)


def _as_checkpoint(params: dict) -> dict[str, np.ndarray]:
    """The DiT and number-conditioner weights of ``params`` under their stable-audio-tools keys."""
    from jaxstage.tools.export import key_map
    from jaxstage.tools.export.sat_conditioning import numbers_to_torch

    return {**key_map.to_torch_state(params["dit"], {}), **numbers_to_torch(params["numbers"])}


def test_finetune_imported_sao_on_a_mesh_matches_one_device(sao, tmp_path):
    from jaxstage.inference.load import load_run
    from jaxstage.train.state import build_experiment
    from jaxstage.train.trainer import train

    assert len(jax.devices()) == 8, "tests/conftest.py must provide 8 fake CPU devices"
    cfg = finetune_config(sao, MESH)
    result = train(cfg, tmp_path / "ft")
    assert result.final_step == STEPS and result.compile_count == 1
    rows = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["loss_align"]) for r in rows)
    assert rows[-1]["discrepancy"] is not None  # the adaptive regime's monitor ran on held-out records
    # the mesh really splits parameters (the run device_puts its state on these shardings)
    mesh_exp = build_experiment(cfg)
    assert dict(mesh_exp.mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
    sharded = [s for s in jax.tree.leaves(mesh_exp.param_shardings["dit"]) if not s.is_fully_replicated]
    assert sharded, "no DiT parameter is sharded on the data × fsdp mesh"

    one = finetune_config(sao, (1, 1, 1))
    losses, start, start_ema, ref = _single_device_steps(one)
    # the fine-tune starts from the stable-audio-tools checkpoint's weights (raw and EMA alike)
    source = safetensors_io.read_checkpoint(sao.src / safetensors_io.SINGLE_NAME)
    for weights in (start, start_ema):
        for key, value in _as_checkpoint(weights).items():
            np.testing.assert_array_equal(value, source[key], err_msg=key)
    np.testing.assert_allclose([r["loss"] for r in rows], losses, rtol=1e-5)
    _, ran = load_run(cfg, tmp_path / "ft")
    got, want, init = _flat(ran.params), _flat(ref), _flat(start)
    moved = np.linalg.norm(want - init) / np.linalg.norm(init)
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert moved > 1e-3, f"the steps barely moved the weights ({moved:.1e}): the comparison would prove nothing"
    assert rel <= 1e-5, f"relative parameter error {rel:.2e} after {STEPS} steps on mesh {MESH} (moved {moved:.1e})"


def arc_config(small):
    """The imported SAO-Small-shaped run's config, ARC post-trained on its prepared latents with precomputed
    T5 embeddings (the T5 directory stays: free-text prompts are encoded with it when sampling)."""
    cfg = load_json(small.run / "config.json")
    return apply_overrides(cfg, [
        "data.source=prepared", f"data.path={small.prepared}", "data.latents=true", "text.kind=precomputed",
        f"regime.monitor_size={MONITOR}", "arc.disc_depth=1", "arc.gen_lr=1e-3", "arc.disc_lr=1e-3",
        "arc.warmup_steps=1", "arc.ema_decay=0.5", "sample.sampler=pingpong", "sample.steps=8", "sample.cfg_scale=1.0",
        "mesh.data=4", "mesh.fsdp=2", "train.steps=3", *RUN[1:]])


def test_arc_posttrain_of_imported_sao_small_samples_pingpong_and_exports(small, tmp_path, monkeypatch):
    from jaxstage.inference import sampling
    from jaxstage.inference.load import load_run
    from jaxstage.inference.sampling import make_generate_fn
    from jaxstage.posttrain.trainer import posttrain
    from jaxstage.run.workdir import read_run_config

    arc = tmp_path / "arc"
    result = posttrain(arc_config(small), arc, init_from=str(small.run))
    assert result.final_step == 3 and result.compile_count == 1
    rows = [json.loads(line) for line in (arc / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss_g" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(np.isfinite(r[k]) for r in rows for k in ("loss_g", "loss_d", "loss_c"))
    assert json.loads((arc / "posttrain.json").read_text())["init_from"] == str(small.run.resolve())

    # 8-step ping-pong without CFG: the post-trained run's own sampler, which `jaxstage sample` runs
    _, cfg = read_run_config(arc)
    assert (cfg.sample.sampler, cfg.sample.steps, cfg.sample.cfg_scale) == ("pingpong", 8, 1.0)
    assert len(list((arc / "samples").glob("*.wav"))) == 2  # the end-of-run samples, with that sampler
    built = []

    def spy(exp, sampler, steps, guided=True):
        built.append((sampler, steps, guided))
        return make_generate_fn(exp, sampler, steps, guided)

    with monkeypatch.context() as patch:
        patch.setattr(sampling, "make_generate_fn", spy)
        wav = tmp_path / "arc.wav"
        assert cli.main(["sample", "--workdir", str(arc), "--prompt", "a dog barks", "--seconds-total", "1",
                         "--out", str(wav)]) == 0
    assert built == [("pingpong", 8, False)]  # unguided: CFG 1 is one model pass per step
    audio, rate = sf.read(wav)
    assert rate == SR and audio.shape == (cfg.num_samples,) and np.all(np.isfinite(audio)) and np.abs(audio).max() > 0

    # export: the whole model in stable-audio-tools' layout, the post-trained (EMA) DiT and conditioner
    exported = tmp_path / "exported"
    assert cli.main(["export", "--workdir", str(arc), "--out", str(exported), "--ema"]) == 0
    tensors = safetensors_io.read_checkpoint(exported / safetensors_io.SINGLE_NAME)
    source = safetensors_io.read_checkpoint(small.src / safetensors_io.SINGLE_NAME)
    assert sorted(tensors) == sorted(source)
    assert any(k.startswith("conditioner.conditioners.seconds_total.") for k in tensors)
    pretransform = [k for k in source if k.startswith("pretransform.model.")]
    assert pretransform
    for key in pretransform:
        np.testing.assert_array_equal(tensors[key], source[key], err_msg=key)  # the frozen VAE, bit for bit
    exp, state = load_run(cfg, arc)
    trained = _as_checkpoint(jax.device_get(state.ema_params))
    for key, value in trained.items():
        np.testing.assert_array_equal(tensors[key], value, err_msg=key)
    assert any(not np.array_equal(tensors[k], source[k]) for k in trained), "the export holds the imported weights"
    model = json.loads((exported / "model_config.json").read_text())["model"]
    assert model["diffusion"]["diffusion_objective"] == "rectified_flow"
    assert [c["id"] for c in model["conditioning"]["configs"]] == ["prompt", "seconds_total"]
    assert model["pretransform"]["type"] == "autoencoder"
    assert model["diffusion"]["global_cond_ids"] == ["seconds_total"]

    # ... which stable-audio-tools loads strictly and samples to the same audio (last: skipped without it)
    _same_audio_in_stable_audio_tools(exported, small.t5, exp, state)


def _same_audio_in_stable_audio_tools(exported: Path, t5: Path, exp, state) -> None:
    """stable-audio-tools 0.0.19's `create_model_from_config` + `load_state_dict(strict=True)` on the export;
    the 8-step ping-pong (CFG 1) from jaxstage's noise on jaxstage's levels, written in torch against SAT's
    own forward and VAE decode (tests/tools/export/sao_reference.py), gives jaxstage's audio."""
    from sat_torch import require_reference

    require_reference()  # skips here without stable-audio-tools (fails under CI)
    import sao_reference as ref

    from jaxstage.diffusion import objectives, schedules
    from jaxstage.inference.sampling import Generator

    sat_model = ref.load_sat_checkpoint(exported, t5)  # strict: raises on a missing or extra key
    ref.t5_in_float32(sat_model)  # SAT casts T5 to float16; jaxstage runs it in float32
    prompts, seed, seconds_total = ["a dog barks", "rain and wind"], 5, 1.0
    ours = Generator(exp)(state.ema_params, state.codec_stats, prompts, sampler="pingpong", steps=8, cfg_scale=1.0,
                          seed=seed, seconds_total=seconds_total)
    config = json.loads((exported / "model_config.json").read_text())
    x_T, sampler_key = ref.jax_initial_noise(seed, len(prompts), ref.latent_frames(config), config["model"]["io_channels"])
    levels = np.asarray(schedules.for_objective(objectives.make_objective("rf"), 8))
    conditioning = ref.sat_conditioning(sat_model, prompts, None, seconds_total)
    latents = ref.torch_sample(sat_model, x_T, levels, "rf", conditioning, 1.0, "pingpong",
                               ref.jax_pingpong_noise(sampler_key, x_T.shape))
    theirs = ref.sat_decode_mono(sat_model, latents)
    err = float(np.abs(np.asarray(ours, np.float64) - theirs).max())
    print(f"ARC export in stable-audio-tools vs jaxstage, ping-pong 8 steps, CFG 1: audio max abs {err:.2e}")
    assert np.abs(theirs).max() > 1e-2 and ours.shape == theirs.shape
    assert err <= 1e-3, f"ARC export in stable-audio-tools vs jaxstage, ping-pong 8 steps: audio max abs {err:.2e}"
