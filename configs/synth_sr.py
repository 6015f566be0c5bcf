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
near 1.6-2 steps/s (synth_t2a: ~3), and 1200 steps take about 12 minutes.

At the end the run super-resolves 64 held-out clips (never trained on, not the monitor's) and writes
sr_eval.json: LSD / LSD-HF / LSD-LF / SI-SDR of the raw output, of the output with its band below the
cutoff replaced by the input's, and of the unprocessed input. `jaxstage sample --workdir runs/synth_sr
--input LOW.wav --out HIGH.wav` super-resolves a file of any length (replacement on by default here).
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
    cfg.sample.every = 0  # SR samples (input / output / reference WAVs) only at the end
    cfg.sample.cfg_scale = 1.0  # SR samples without classifier-free guidance
    cfg.sample.final_eval_prompts = 64  # held-out clips scored by LSD at the end (sr_eval.json)
    cfg.sr.replace_low_band = True  # jaxstage sample: keep the input's own band below the cutoff
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
