"""Latent diffusion offline: the stage-adaptive DiT of configs/synth_t2a.py on the latents of the
Oobleck VAE that configs/synth_oobleck.py trains (8 kHz, 1.024 s clips = 64 latent frames of 16
channels), instead of log-mel frames decoded by Griffin-Lim.

Run (the autoencoder first, about 12 minutes on a 2-core CPU; then this one, about 7.5 minutes):
    jaxstage train --config configs/synth_oobleck.py --workdir runs/synth_oobleck
    jaxstage train --config configs/synth_t2a_latent.py
    jaxstage sample --workdir runs/synth_t2a_latent --prompt "a continuous low-pitched square wave" --out sq.wav

The latents are encoded in the step (the frozen autoencoder is a replicated, non-donated argument of
the compiled step); with `jaxstage prepare --autoencoder` data, `--set data.source=prepared
--set data.path=DIR --set data.latents=true` trains on stored latents and runs no encoder.
config.json records the autoencoder's SHA-256: a resume or a sampler refuses a different one.
docs/latent.md has the measured time and attribute accuracy next to the mel default's.
"""

import importlib.util
from pathlib import Path

from jaxstage.config import Config

_spec = importlib.util.spec_from_file_location("synth_t2a", Path(__file__).with_name("synth_t2a.py"))
_default = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_default)


def get_config() -> Config:
    cfg = _default.get_config()  # the same DiT, recipe and batch as the mel default
    cfg.name = "synth_t2a_latent"
    # the mel default's wall time on a 2-core CPU (7.5 min for its 1800 steps): encoding every batch
    # with the VAE makes a step ~1.7x slower, so the same time buys 1050 steps (docs/latent.md)
    cfg.train.steps = 1050
    cfg.train.workdir = "runs/synth_t2a_latent"
    cfg.data.clip_seconds = 1.024  # 8192 samples: whole latents (128 samples each)
    cfg.codec.kind = "oobleck"
    cfg.codec.autoencoder = "runs/synth_oobleck/autoencoder"
    cfg.codec.per_channel_stats = True  # latent channels differ in scale; each is normalized on its own
    cfg.codec.n_mels = 64  # not read by the latent codec: back to the default so no mel-only key is set
    # codec.n_fft / hop_length (512 / 128) stay: the spectral SSL stand-in derives its STFTs from them
    return cfg
