"""Stable Audio Open as a jaxstage run (issue 20, acceptance 1-3) against stable-audio-tools 0.0.19 itself.

The reference models are SAO-shaped (SAO 1.0's structure at reduced sizes, and SAO Small's: see
`sao_reference.sao_model_config`), built by SAT's own `create_model_from_config` with random, seeded
weights (init-constant ones perturbed) and saved as SAT ships them. The SAT side samples with
`sao_reference.torch_sample`: jaxstage's Euler / ping-pong loop written in torch against the SAT model's
own forward (SAT's `generate_diffusion_cond` cannot start from jaxstage's noise, and its v sampler is
k-diffusion, not installed); for rectified flow that loop is first checked against SAT's own
`sample_rf`. SAT's T5 runs in float32 for the parity figures (`sao_reference.t5_in_float32`; SAT's
float16 T5 alone moves the embeddings by ~2e-3). jaxstage audio is mono: it is compared with the mean
of the two channels SAT's VAE decodes.

    acceptance 1: test_import_uses_every_tensor (reduced; the exact SAO 1.0 / Small shapes: bench/sao_parity.py)
    acceptance 2: test_sampling_parity (latents and audio, CFG 1 and 3), test_sampling_parity_rectified_flow
    acceptance 3: test_export_loads_strict_and_samples_the_same_audio, test_import_export_is_bit_exact
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

from sat_torch import require_reference

import sao_reference as ref

TOL = 1e-3
PROMPTS = ["a dog barks in the rain", "loud siren and engine noise"]
SECONDS_START, SECONDS_TOTAL = 3.0, 20.0
STEPS = 4


@pytest.fixture(scope="module", autouse=True)
def _reference():
    require_reference()
    pytest.importorskip("transformers")
    ref.load_sat()


def _build(tmp: Path, kind: str, seed: int) -> types.SimpleNamespace:
    """T5 dir, SAT model (its T5 in float32) and its checkpoint in both formats."""
    config = ref.sao_model_config(kind)
    t5_dir = ref.save_reduced_t5(tmp / "t5")
    model = ref.build_sat_model(config, t5_dir, seed=seed)
    ref.t5_in_float32(model)
    src = ref.save_sat_checkpoint(model, config, tmp / "sat")
    src_ckpt = ref.save_sat_checkpoint(model, config, tmp / "sat_ckpt", fmt="ckpt")
    objective = "v" if config["model"]["diffusion"]["diffusion_objective"] == "v" else "rf"
    return types.SimpleNamespace(config=config, t5_dir=t5_dir, model=model, src=src, src_ckpt=src_ckpt,
                                 objective=objective, tmp=tmp)


def _imported(sat: types.SimpleNamespace) -> types.SimpleNamespace:
    """``sat`` with ``run`` (its safetensors checkpoint imported into a jaxstage run directory) and that
    run loaded for sampling: ``cfg``, ``exp``, ``state``."""
    from jaxstage.tools.export.importer import import_checkpoint

    run = sat.tmp / "run"
    import_checkpoint(sat.src, run, t5_dir=sat.t5_dir)
    cfg, exp, state = _load(run)
    return types.SimpleNamespace(**vars(sat), run=run, cfg=cfg, exp=exp, state=state)


@pytest.fixture(scope="module")
def sat_reduced(tmp_path_factory) -> types.SimpleNamespace:
    return _build(tmp_path_factory.mktemp("sao_reduced"), "reduced", seed=0)


@pytest.fixture(scope="module")
def sat_small(tmp_path_factory) -> types.SimpleNamespace:
    return _build(tmp_path_factory.mktemp("sao_small_reduced"), "reduced_small", seed=1)


@pytest.fixture(scope="module")
def sao(sat_reduced) -> types.SimpleNamespace:
    return _imported(sat_reduced)


@pytest.fixture(scope="module")
def sao_small(sat_small) -> types.SimpleNamespace:
    return _imported(sat_small)


def _load(run: Path):
    from jaxstage.inference.load import load_run
    from jaxstage.run.workdir import read_run_config

    workdir, cfg = read_run_config(run)
    exp, state = load_run(cfg, workdir)
    return cfg, exp, state


def jax_latents(exp, state, prompts, *, sampler: str, steps: int, cfg_scale: float, seed: int,
                interval: tuple[float, float] | None = None) -> np.ndarray:
    """jaxstage's latents before decoding, computed as `inference.sampling.make_generate_fn` does
    (same noise and sampler keys, CFG batched through `samplers.cfg_batched` on the run's
    ``sample.cfg_interval`` unless ``interval`` is given), channels-first [B, C, T]."""
    import jax
    import jax.numpy as jnp

    from jaxstage.config import guidance_rule
    from jaxstage.diffusion import samplers, schedules
    from jaxstage.inference.sampling import Generator
    from jaxstage.models.codecs import denormalize
    from jaxstage.models.conditioning import null_condition

    generator = Generator(exp)
    text, mask = generator.encode_prompts(prompts)
    numbers = exp.default_numbers(len(prompts), SECONDS_START, SECONDS_TOTAL)
    numbers = {k: jnp.asarray(v, jnp.float32) for k, v in numbers.items()}
    objective = exp.objective
    levels = schedules.for_objective(objective, steps)
    model = exp.model(state.ema_params)
    cond = model.encode_condition(jnp.asarray(text), jnp.asarray(mask), numbers)

    def denoise_with(x, level, cond):
        x_in, c_noise = objective.model_input(x, level)
        return objective.denoise(model.denoise(x_in, c_noise, cond).out, x, level)

    if cfg_scale != 1.0:
        denoise = samplers.cfg_batched(denoise_with, cond, null_condition(cond), objective, cfg_scale,
                                       interval or tuple(exp.cfg.sample.cfg_interval), guidance_rule(exp.cfg.sample))
    else:
        def denoise(x, level):
            return denoise_with(x, level, cond)

    noise_key, sampler_key = jax.random.split(jax.random.PRNGKey(seed))
    frames = exp.codec.num_frames(exp.cfg.num_samples)
    x_T = jax.random.normal(noise_key, (len(prompts), frames, exp.io_channels), jnp.float32)
    x0 = samplers.sample(sampler, denoise, objective, levels, x_T, sampler_key)
    return np.asarray(denormalize(x0, state.codec_stats)).transpose(0, 2, 1)


def sat_latents(sao, model, *, sampler: str, steps: int, cfg_scale: float, seed: int) -> np.ndarray:
    """The SAT model sampled by `sao_reference.torch_sample` from jaxstage's noise on jaxstage's levels."""
    from jaxstage.diffusion import objectives, schedules

    channels = sao.config["model"]["io_channels"]
    x_T, sampler_key = ref.jax_initial_noise(seed, len(PROMPTS), ref.latent_frames(sao.config), channels)
    objective = objectives.make_objective(sao.objective)
    levels = np.asarray(schedules.for_objective(objective, steps))
    conditioning = ref.sat_conditioning(model, PROMPTS, SECONDS_START, SECONDS_TOTAL)
    noise = ref.jax_pingpong_noise(sampler_key, x_T.shape) if sampler == "pingpong" else None
    return ref.torch_sample(model, x_T, levels, sao.objective, conditioning, cfg_scale, sampler, noise)


def _max_err(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ----------------------------------------------------------------------------- the reference itself


def test_reference_loop_equals_sat_sample_rf(sat_small):
    """`torch_sample` (jaxstage's Euler on jaxstage's rf levels) reproduces SAT's own `sample_rf` Euler."""
    from jaxstage.diffusion import objectives, schedules

    x_T, _ = ref.jax_initial_noise(5, len(PROMPTS), ref.latent_frames(sat_small.config), 8)
    conditioning = ref.sat_conditioning(sat_small.model, PROMPTS, None, SECONDS_TOTAL)
    levels = np.asarray(schedules.for_objective(objectives.RectifiedFlow(), STEPS))
    ours = ref.torch_sample(sat_small.model, x_T, levels, "rf", conditioning, cfg_scale=3.0)
    theirs = ref.sat_sample_rf(sat_small.model, x_T, STEPS, conditioning, cfg_scale=3.0)
    err = _max_err(ours, theirs)
    print(f"torch_sample vs SAT sample_rf (rf euler, {STEPS} steps, CFG 3): max abs {err:.2e}")
    assert np.abs(theirs).max() > 0.1
    assert err <= 1e-5


def test_saved_checkpoints_load_strict_in_sat(sat_reduced):
    """Both saved formats load back into SAT with strict=True and hold the model's exact tensors."""
    expected = sat_reduced.model.state_dict()
    for src in (sat_reduced.src, sat_reduced.src_ckpt):
        loaded = ref.load_sat_checkpoint(src, sat_reduced.t5_dir).state_dict()
        assert loaded.keys() == expected.keys()
        for key, value in expected.items():
            assert bool((loaded[key] == value).all()), key


# ----------------------------------------------------------------------------- acceptance 1


@pytest.mark.parametrize("fmt", ["safetensors", "ckpt"])
def test_import_uses_every_tensor(sao, tmp_path, fmt):
    """import.json: every tensor of the SAT checkpoint used, none left over; the run's config follows SAT's."""
    if fmt == "safetensors":
        run = sao.run
    else:
        from jaxstage.tools.export.importer import import_checkpoint

        run = tmp_path / "run"
        import_checkpoint(sao.src_ckpt, run, t5_dir=sao.t5_dir)
    report = json.loads((run / "import.json").read_text())
    assert report["unused_tensors"] == []
    assert report["used_tensors"] == len(sao.model.state_dict())
    assert report["fresh"] == []  # every jaxstage parameter came from the checkpoint

    cfg, exp, state = (sao.cfg, sao.exp, sao.state) if fmt == "safetensors" else _load(run)
    assert cfg.text.kind == "t5" and Path(cfg.text.encoder_dir) == Path(sao.t5_dir)
    assert cfg.data.text_max_length == ref.REDUCED_MAX_LENGTH
    assert list(cfg.conditioning.cross_attention_ids) == ["prompt", "seconds_start", "seconds_total"]
    assert list(cfg.conditioning.global_ids) == ["seconds_start", "seconds_total"]
    assert cfg.model.cross_attn_mask is False
    assert cfg.codec.kind == "oobleck" and Path(cfg.codec.autoencoder) == run / "autoencoder"
    assert cfg.diffusion.objective == "v"
    assert cfg.data.sample_rate == sao.config["sample_rate"] and cfg.num_samples == sao.config["sample_size"]
    # identity normalization: the run's latents are SAT's latents
    stats = {"mean": np.asarray(state.codec_stats.mean), "std": np.asarray(state.codec_stats.std)}
    print("codec_stats:", {k: (v.shape, float(v.min()), float(v.max())) for k, v in stats.items()})
    assert np.all(stats["mean"] == 0.0) and np.all(stats["std"] == 1.0)


# ----------------------------------------------------------------------------- acceptance 2


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_sampling_parity(sao, cfg_scale):
    """Same noise, Euler, 4 steps, timing conditions set: latents and decoded (mono) audio within 1e-3."""
    from jaxstage.inference.sampling import Generator

    exp, state = sao.exp, sao.state
    seed = 7
    lat_jax = jax_latents(exp, state, PROMPTS, sampler="euler", steps=STEPS, cfg_scale=cfg_scale, seed=seed)
    lat_sat = sat_latents(sao, sao.model, sampler="euler", steps=STEPS, cfg_scale=cfg_scale, seed=seed)
    audio_jax = Generator(exp)(state.ema_params, state.codec_stats, PROMPTS, sampler="euler", steps=STEPS,
                               cfg_scale=cfg_scale, seed=seed, seconds_start=SECONDS_START,
                               seconds_total=SECONDS_TOTAL)
    audio_sat = ref.sat_decode_mono(sao.model, lat_sat)
    lat_err, audio_err = _max_err(lat_jax, lat_sat), _max_err(audio_jax, audio_sat)
    print(f"SAO reduced, v, euler {STEPS} steps, CFG {cfg_scale:g}: latents max abs {lat_err:.2e} "
          f"(|latents| max {np.abs(lat_sat).max():.2f}), audio max abs {audio_err:.2e} "
          f"(|audio| max {np.abs(audio_sat).max():.3f})")
    assert np.abs(lat_sat).max() > 0.1 and np.abs(audio_sat).max() > 1e-2  # not a trivially zero output
    assert lat_err <= TOL and audio_err <= TOL


def test_guidance_applies_at_the_pure_noise_level(sao):
    """SAT's DiT applies CFG at every level, t = 1 included (its interval (0, 1) in sin(πt/2) holds 1);
    one Euler step from pure noise at CFG 0 (= the unconditional branch alone) exposes a sampler that
    skips guidance there. jaxstage's interval is in σ̃, which is +inf at t = 1: the imported run's
    ``sample.cfg_interval`` must include it (the default hi of 1e9 does not)."""
    exp, state = sao.exp, sao.state
    lat_jax = jax_latents(exp, state, PROMPTS, sampler="euler", steps=1, cfg_scale=0.0, seed=7)
    lat_sat = sat_latents(sao, sao.model, sampler="euler", steps=1, cfg_scale=0.0, seed=7)
    everywhere = jax_latents(exp, state, PROMPTS, sampler="euler", steps=1, cfg_scale=0.0, seed=7,
                             interval=(0.0, float("inf")))
    err, err_everywhere = _max_err(lat_jax, lat_sat), _max_err(everywhere, lat_sat)
    print(f"1 step from noise, CFG 0: run's cfg_interval {tuple(exp.cfg.sample.cfg_interval)} max abs {err:.2e}; "
          f"interval (0, inf) max abs {err_everywhere:.2e}")
    assert err_everywhere <= TOL
    assert err <= TOL


@pytest.mark.parametrize("sampler", ["euler", "pingpong"])
def test_sampling_parity_rectified_flow(sao_small, sampler):
    """SAO Small's structure (rectified flow, qk layer norm, seconds_total only): latents within 1e-3."""
    exp, state = sao_small.exp, sao_small.state
    assert exp.cfg.diffusion.objective == "rf"
    lat_jax = jax_latents(exp, state, PROMPTS, sampler=sampler, steps=STEPS, cfg_scale=1.0, seed=3)
    lat_sat = sat_latents(sao_small, sao_small.model, sampler=sampler, steps=STEPS, cfg_scale=1.0, seed=3)
    err = _max_err(lat_jax, lat_sat)
    print(f"SAO Small reduced, rf, {sampler} {STEPS} steps, CFG 1: latents max abs {err:.2e}")
    assert np.abs(lat_sat).max() > 0.1
    assert err <= TOL


# ----------------------------------------------------------------------------- acceptance 3


@pytest.fixture(scope="module")
def exported(sao, tmp_path_factory) -> Path:
    from jaxstage import cli

    out = tmp_path_factory.mktemp("sao_export") / "sat"
    assert cli.main(["export", "--workdir", str(sao.run), "--out", str(out)]) == 0
    return out


def test_export_loads_strict_and_samples_the_same_audio(sao, exported):
    """export -> SAT `create_model_from_config` + `load_state_dict(strict=True)` -> its samples equal jaxstage's."""
    from jaxstage.inference.sampling import Generator

    sat_model = ref.load_sat_checkpoint(exported, sao.t5_dir)  # strict: raises on a missing or extra key
    ref.t5_in_float32(sat_model)
    exp, state = sao.exp, sao.state
    seed, cfg_scale = 11, 3.0
    audio_jax = Generator(exp)(state.ema_params, state.codec_stats, PROMPTS, sampler="euler", steps=STEPS,
                               cfg_scale=cfg_scale, seed=seed, seconds_start=SECONDS_START,
                               seconds_total=SECONDS_TOTAL)
    lat_sat = sat_latents(sao, sat_model, sampler="euler", steps=STEPS, cfg_scale=cfg_scale, seed=seed)
    audio_sat = ref.sat_decode_mono(sat_model, lat_sat)
    err = _max_err(audio_jax, audio_sat)
    print(f"exported model in SAT vs jaxstage, euler {STEPS} steps, CFG {cfg_scale:g}: audio max abs {err:.2e}")
    assert np.abs(audio_sat).max() > 1e-2
    assert err <= TOL


def test_import_export_is_bit_exact(sao, exported):
    """import -> export returns every tensor of the SAT checkpoint bit for bit (same keys, dtypes, shapes)."""
    source = ref.state_dict_numpy(sao.src / "model.safetensors")
    files = sorted(exported.glob("model*.safetensors"))
    back: dict[str, np.ndarray] = {}
    for path in files:
        back.update(ref.state_dict_numpy(path))
    assert sorted(back) == sorted(source), sorted(set(back) ^ set(source))[:10]
    differing = [k for k, v in source.items()
                 if back[k].dtype != v.dtype or back[k].shape != v.shape or back[k].tobytes() != v.tobytes()]
    assert differing == []
    config = json.loads((exported / "model_config.json").read_text())
    assert config["model"]["diffusion"]["diffusion_objective"] == "v"
