"""Offline audio super-resolution: stage-adaptive training on procedural speech-like clips (16 kHz, 1 s).

Task ``sr``: the model generates the full-band clip conditioned on its low band, simulated per
example in the input pipeline (cutoff ~ U[2, 6] kHz; cheby1/butter/bessel/ellip of order 2-10 or an
STFT hard cut; drawn from (data.seed, example index), so resume is deterministic). The low band,
encoded and normalized by the same codec, enters the DiT as extra input channels; the cutoff, as
cutoff / 8 kHz through learned Fourier features, as its global condition. Text conditioning stays
on the source's empty caption.

The codec is `stft` (compressed complex STFT, exactly invertible), so a later low-band replacement
and the SR metrics work on exact spectra; n_fft 512 / hop 256 keeps 63 tokens per clip, the token
count of configs/synth_t2a.py.

The recipe is configs/synth_t2a.py's (SPEC §3): p from the alignment discrepancy on a fixed monitor
batch (held-out speech clips with their low bands) every 50 steps; decayed spectral SSL guidance
(λ0 = 0.5); the level location moving with p; the gated structure regularizer.

Run:  jaxstage train --config configs/synth_sr.py

Sized after configs/synth_t2a.py (batch 32, a 96-wide 4-block DiT) but 1200 steps, not 1800: the
speech-like renderer costs ~12 ms per 16 kHz clip, so on a 2-core CPU the input pipeline caps the run
near 2-2.5 steps/s (synth_t2a: ~3), and 1200 steps take about 10 minutes. Samples and the
text-to-audio attribute check are not written for task=sr (SR sampling is a later step).
"""

from jaxstage.config import Config


def get_config() -> Config:
    cfg = Config(name="synth_sr")
    cfg.task = "sr"
    cfg.data.source = "synthetic_speech"
    cfg.data.sample_rate = 16000
    cfg.data.clip_seconds = 1.0
    cfg.sr.cutoff_min_hz = 2000.0
    cfg.sr.cutoff_max_hz = 6000.0
    cfg.codec.kind = "stft"
    cfg.codec.n_fft = 512
    cfg.codec.hop_length = 256
    cfg.model.embed_dim = 96
    cfg.model.num_heads = 3  # head dim 32 (stable-audio-tools' rotary needs >= 32)
    cfg.model.depth = 4
    cfg.train.steps = 1200
    cfg.train.batch_size = 32
    cfg.train.workdir = "runs/synth_sr"
    cfg.sample.every = 0  # text-to-audio samples only; not used for task=sr
    cfg.sample.final_eval_prompts = 0
    # ---- the stage-adaptive recipe
    cfg.regime.mode = "adaptive"
    cfg.regime.every = 50
    cfg.guidance.lambda0 = 0.5
    cfg.guidance.hidden = 128
    cfg.timesteps.adaptive = True
    cfg.struct.enabled = True
    cfg.struct.every = 50
    cfg.struct.ramp_steps = 200  # synth_t2a's 300 over 1800 steps, scaled to 1200
    return cfg
