"""`prepare --autoencoder`: the records carry the latent codec's own latents and their frame mask, and
a train step on them (``data.latents=true``) runs no encoder; with audio input it does (so the count
below can fail). A dataset made with another autoencoder is refused by its SHA-256."""

from pathlib import Path

import jax
import numpy as np
import pytest
import soundfile as sf
from flax import nnx

from jaxstage import parallel
from jaxstage.config import ConfigError, load_config
from jaxstage.data.latent_encoder import AutoencoderEncoder
from jaxstage.data.prepare import prepare
from jaxstage.models import oobleck
from jaxstage.tools.export.autoencoder import save_autoencoder

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny_t2a.py")
SR, SECONDS, COUNT = 8000, 0.25, 10
VAE = oobleck.OobleckConfig(audio_channels=1, channels=4, c_mults=(1, 2), strides=(4, 4), latent_dim=8)  # hop 16


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("latents")
    ae = save_autoencoder(oobleck.OobleckVAE(VAE, nnx.Rngs(0)), work / "ae", SR)
    rng = np.random.default_rng(0)
    lines = ["path,caption"]
    for i in range(COUNT):
        seconds = SECONDS if i % 3 else SECONDS * 0.6  # every third clip is padded
        sf.write(work / f"c{i}.wav", (0.2 * rng.standard_normal(int(seconds * SR))).astype(np.float32), SR)
        lines.append(f"c{i}.wav,a noise number {i}")
    (work / "m.csv").write_text("\n".join(lines) + "\n")
    encoder = AutoencoderEncoder(ae, SR, int(SR * SECONDS), batch_size=4)
    prepare(work / "m.csv", work / "out", sample_rate=SR, clip_seconds=SECONDS, batch_size=4, progress=False,
            autoencoder=encoder, min_seconds=0.1)
    return ae, work / "out"


def config(ae: Path, out: Path, *extra: str):
    return load_config(TINY, ["data.source=prepared", f"data.path={out}", "codec.kind=oobleck",
                              f"codec.autoencoder={ae}", "regime.monitor_size=4", "codec.stats_examples=4",
                              "train.batch_size=8", *extra])


def test_records_hold_the_codecs_latents(prepared):
    from jaxstage.data.prepared import PreparedSource
    from jaxstage.inference.model import latent_codec_from_config

    ae, out = prepared
    cfg = config(ae, out, "data.latents=true")
    source = PreparedSource(out, cfg)
    codec, params = latent_codec_from_config(cfg)
    first, padded = source[1], source[0]
    assert first["latents"].shape == (125, 8) and first["latent_mask"].all()
    np.testing.assert_allclose(first["latents"], codec.bind(params).encode(first["audio"][None])[0], atol=1e-5)
    real = int(padded["audio_mask"].sum())
    assert padded["latent_mask"].sum() == -(-real // 16)  # frames whose first sample is real
    assert source.spec.autoencoder["sha256"] == AutoencoderEncoder(ae, SR, int(SR * SECONDS)).sha256


def _encoder_traces(cfg, monkeypatch) -> tuple[int, dict]:
    """(encoder calls while compiling the train step, one step's metrics)."""
    from jaxstage.data.pipeline import BatchStream
    from jaxstage.train.state import build_experiment
    from jaxstage.train.step import compile_train_step
    from jaxstage.train.trainer import fresh_state

    exp = build_experiment(cfg)
    state = fresh_state(exp)  # codec statistics and monitor: outside the step
    calls = {"n": 0}
    original = oobleck.OobleckEncoder.__call__

    def counted(self, audio):
        calls["n"] += 1
        return original(self, audio)

    monkeypatch.setattr(oobleck.OobleckEncoder, "__call__", counted)
    step = compile_train_step(exp, state)
    batch = parallel.global_batch(next(BatchStream(cfg, 0, 1)), exp.batch_sharding)
    _, metrics = step(state, batch)
    monkeypatch.undo()
    return calls["n"], {"keys": sorted(batch), "loss": float(metrics["loss"])}


def test_step_on_latents_runs_no_encoder(prepared, monkeypatch):
    ae, out = prepared
    traces, info = _encoder_traces(config(ae, out, "data.latents=true"), monkeypatch)
    assert traces == 0 and "audio" not in info["keys"] and "latents" in info["keys"] and np.isfinite(info["loss"])
    traces, info = _encoder_traces(config(ae, out), monkeypatch)  # the same data encoded in the step
    assert traces == 1 and "audio" in info["keys"]


def test_latents_of_another_autoencoder_are_refused(prepared, tmp_path):
    ae, out = prepared
    other = save_autoencoder(oobleck.OobleckVAE(VAE, nnx.Rngs(1)), tmp_path / "other", SR)
    from jaxstage.data.pipeline import example_spec

    with pytest.raises(ConfigError, match="latents were encoded by an autoencoder with SHA-256"):
        example_spec(config(other, out, "data.latents=true"))
    with pytest.raises(ValueError, match="not a multiple of the autoencoder's 16 samples"):
        AutoencoderEncoder(ae, SR, 2001)
