"""The latent codec (``codec.kind=oobleck``): encode/decode against the VAE itself, the config checks
that name their key, and a tiny latent run end to end: the autoencoder is a frozen, non-donated
argument of the compiled step, config.json records its SHA-256, and a resume or a sampler refuses
a different autoencoder at the same path.

Autoencoder directories are written here from small random Oobleck VAEs (``save_autoencoder``).
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxstage.config import ConfigError, load_config
from jaxstage.models.latent_codec import OobleckCodec, encode_host, vae_params
from jaxstage.models.oobleck import OobleckConfig, OobleckVAE, chunked, vae_moments
from jaxstage.tools.export.autoencoder import load_autoencoder, save_autoencoder

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny_t2a.py")
SMALL = OobleckConfig(audio_channels=2, channels=4, c_mults=(1, 2), strides=(4, 4), latent_dim=8)  # hop 16


def write_vae(directory: Path, seed: int, cfg: OobleckConfig = SMALL, sample_rate: int = 8000,
              scale: float = 1.0) -> Path:
    return save_autoencoder(OobleckVAE(cfg, nnx.Rngs(seed)), directory, sample_rate, scale=scale)


@pytest.fixture(scope="module")
def ae_dir(tmp_path_factory) -> Path:
    return write_vae(tmp_path_factory.mktemp("ae") / "ae", seed=0, scale=1.5)


def test_encode_decode_match_the_vae(ae_dir):
    vae, info = load_autoencoder(ae_dir)
    codec = OobleckCodec(vae=info["config"], sample_rate=8000, scale=info["scale"]).bind(vae_params(vae))
    audio = 0.3 * jax.random.normal(jax.random.PRNGKey(1), (2, 320))
    latents = codec.encode(audio)
    assert latents.shape == (2, 20, 8) and codec.num_frames(320) == 20
    stereo = jnp.stack([audio, audio], axis=-1)  # mono is tiled to the VAE's two channels
    mean, _ = vae_moments(vae.encoder(stereo))
    np.testing.assert_allclose(latents, mean / 1.5, rtol=1e-5, atol=1e-6)
    decoded = codec.decode(latents, 320)
    np.testing.assert_allclose(decoded, vae.decoder(mean).mean(axis=-1), rtol=1e-5, atol=1e-6)
    # a sample differs from the mean by stdev-scaled noise; without a key the mean is returned
    sampler = OobleckCodec(vae=info["config"], sample_rate=8000, scale=1.5, latent="sample").bind(vae_params(vae))
    assert not np.allclose(sampler.encode(audio, jax.random.PRNGKey(0)), latents)
    np.testing.assert_allclose(sampler.encode(audio), latents, rtol=1e-6)
    np.testing.assert_allclose(encode_host(codec, np.asarray(audio), batch_size=1), latents, rtol=1e-5, atol=1e-6)


def test_long_sequences_are_coded_in_chunks(ae_dir):
    vae, info = load_autoencoder(ae_dir)
    codec = OobleckCodec(vae=info["config"], sample_rate=8000, chunk_frames=16, chunk_overlap=4).bind(vae_params(vae))
    latents = jax.random.normal(jax.random.PRNGKey(2), (1, 50, 8))
    expected = chunked(vae.decoder, latents, 50, 1, 16, chunk=16, overlap=4).mean(axis=-1)
    np.testing.assert_allclose(codec.decode(latents, 800), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="not a multiple of the autoencoder's 16 samples"):
        codec.num_frames(801)


def latent_config(ae: Path, *extra: str):
    return load_config(TINY, ["codec.kind=oobleck", f"codec.autoencoder={ae}", "codec.per_channel_stats=true",
                              "train.steps=4", "train.log_every=2", "train.ckpt_every=2", "codec.stats_examples=8",
                              *extra])


def test_config_checks_name_the_key(tmp_path, ae_dir):
    from jaxstage.inference.model import latent_codec_from_config

    with pytest.raises(ConfigError, match="codec.kind=oobleck needs codec.autoencoder"):
        load_config(TINY, ["codec.kind=oobleck"])
    with pytest.raises(ConfigError, match="codec.autoencoder is set but only codec.kind=oobleck"):
        load_config(TINY, [f"codec.autoencoder={ae_dir}"])
    with pytest.raises(ConfigError, match="data.latents=true reads pre-encoded records"):
        latent_config(ae_dir, "data.latents=true")
    with pytest.raises(ConfigError, match="works at 8000 Hz, data.sample_rate=16000"):
        latent_codec_from_config(latent_config(ae_dir, "data.sample_rate=16000"))
    with pytest.raises(ConfigError, match="data.clip_seconds=0.2501: 2001 samples is not a multiple"):
        latent_codec_from_config(latent_config(ae_dir, "data.clip_seconds=0.2501"))
    with pytest.raises(ConfigError, match="a different autoencoder"):
        latent_codec_from_config(latent_config(ae_dir, "codec.autoencoder_sha256=" + "0" * 64))
    with pytest.raises(ConfigError, match="codec.autoencoder=.*missing: no such directory"):
        latent_codec_from_config(latent_config(tmp_path / "missing"))


def test_latent_run_end_to_end(tmp_path):
    """Train 4 steps on latents, resume refusal, sampling refusal: the autoencoder is pinned by hash."""
    import json

    from jaxstage.inference.load import load_run
    from jaxstage.run.workdir import read_run_config
    from jaxstage.train.state import build_experiment
    from jaxstage.train.step import compile_train_step
    from jaxstage.train.trainer import fresh_state, train

    ae = write_vae(tmp_path / "ae", seed=3)
    cfg = latent_config(ae)
    exp = build_experiment(cfg)
    state = fresh_state(exp)
    assert state.codec_stats.mean.shape == (8,)
    step = compile_train_step(exp, state)
    # the frozen autoencoder is the step's third argument, replicated and not donated
    (frozen,) = step.frozen
    assert set(frozen) == {"codec"} and jax.tree.leaves(frozen["codec"])[0].sharding.is_fully_replicated
    from jaxstage.data.pipeline import BatchStream
    from jaxstage import parallel

    batch = parallel.global_batch(next(BatchStream(cfg, 0, 1)), exp.batch_sharding)
    state, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"]))
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(frozen["codec"]))
    assert step.trace_count == 1

    workdir = tmp_path / "run"
    result = train(latent_config(ae, "sample.final_eval_prompts=2"), workdir)
    assert result.final_step == 4 and set(result.attribute_accuracy) >= {"source"}  # the attribute check ran
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["codec"]["autoencoder_sha256"] == load_autoencoder(ae)[1]["sha256"]
    assert saved["codec"]["autoencoder"] == str(ae.resolve())
    _, run_cfg = read_run_config(workdir)
    model, weights = load_run(run_cfg, workdir)
    from jaxstage.inference.sampling import Generator

    audio = Generator(model)(weights.ema_params, weights.codec_stats, ["a low hum"], steps=2)
    assert audio.shape == (1, cfg.num_samples) and np.isfinite(audio).all()

    # ARC post-training of the latent run: its step takes the frozen autoencoder as an argument too
    from jaxstage.posttrain.trainer import posttrain

    arc = ["arc.disc_depth=1", "train.steps=2", "train.log_every=1", "sample.sampler=pingpong", "sample.steps=2",
           "sample.cfg_scale=1.0", "sample.final_eval_prompts=0"]
    arc_result = posttrain(latent_config(ae, *arc), tmp_path / "arc", init_from=str(workdir))
    assert arc_result.final_step == 2 and arc_result.compile_count == 1

    write_vae(ae, seed=4)  # a different autoencoder at the same path
    with pytest.raises(ConfigError, match="codec.autoencoder_sha256"):
        train(latent_config(ae, "train.steps=6"), workdir)
    with pytest.raises(ConfigError, match="a different autoencoder"):
        load_run(run_cfg, workdir)


def test_sr_in_latent_space(tmp_path):
    """task=sr with the latent codec: the low band is encoded by the same autoencoder (in the step and
    in the sampler), and the end-of-run SR report runs on decoded audio."""
    from jaxstage.train.trainer import train

    ae = write_vae(tmp_path / "ae", seed=5)
    cfg = latent_config(ae, "task=sr", "data.source=synthetic_speech", "sample.cfg_scale=1.0", "train.steps=2",
                        "sample.final_eval_prompts=2", "regime.monitor_size=4", "eval.num=2")
    result = train(cfg, tmp_path / "sr")
    assert result.final_step == 2 and result.sr_eval is not None
