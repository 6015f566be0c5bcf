"""Stage-adaptive speech super-resolution on VCTK 0.92 at 48 kHz (SPEC §4, the NVSR/AudioSR setting).

1. Prepare the standard split (once each; resumable): training speakers = all but the test speakers
   p360 p361 p362 p363 p364 p374 p376 s5 and the excluded p280 p315; `*_mic1.flac` files, mono, 48 kHz,
   the first 2 s of each utterance (shorter ones zero-padded, the mask kept in the records):

   jaxstage prepare --manifest data/VCTK-Corpus-0.92 --kind vctk_train --out data/vctk_train \\
       --sample-rate 48000 --clip-seconds 2
   jaxstage prepare --manifest data/VCTK-Corpus-0.92 --kind vctk_test --out data/vctk_test \\
       --sample-rate 48000 --clip-seconds 2

2. Train:  jaxstage train --config configs/vctk_sr.py --workdir runs/vctk_sr

   The low band is simulated per example in the input pipeline: cutoff ~ U[2, 16] kHz, Chebyshev I /
   Butterworth / Bessel / elliptic of order 2-10 or an STFT hard cut (SPEC §4). The last
   `regime.monitor_size` training records are held out: the monitor batch, the periodic SR samples and
   the end-of-run LSD check (sr_eval.json) use them.

3. Test speakers: write their low band at a fixed input rate (e.g. 8 kHz), super-resolve, score:

   jaxstage sample --workdir runs/vctk_sr --input data/vctk_test_8k --out runs/vctk_sr/test_out
   jaxstage eval --task sr --ref data/vctk_test_48k --est runs/vctk_sr/test_out --input-sr 8000

   (NVSR's published LSD on VCTK, 44.1 kHz evaluation: 0.98 from 4 kHz input, 0.91 from 8 kHz, 0.79
   from 16 kHz; SPEC §4.)

The codec is the exactly invertible compressed STFT (n_fft 2048, hop 1024: 94 tokens per 2 s clip,
2050 channels, and as many again for the low band); the DiT is 768 wide and 16 deep. SSL guidance
uses the spectral stand-in, which needs no weights; with a local HuBERT/WavLM converted for the
in-step encoder, set guidance.ssl=encoder and guidance.ssl_encoder_dir (resampled to its 16 kHz
inside the step). Sizes are a starting point for a GPU/TPU pod, not a tuned recipe: nothing in this
file has been trained (no VCTK on the development machine).
"""

from jaxstage.config import Config


def get_config() -> Config:
    cfg = Config(name="vctk_sr")
    cfg.task = "sr"
    # ---- data: a `jaxstage prepare --kind vctk_train` folder at 48 kHz
    cfg.data.source = "prepared"
    cfg.data.path = "data/vctk_train"
    cfg.data.sample_rate = 48000
    cfg.data.clip_seconds = 2.0
    cfg.data.prefetch_threads = 8
    cfg.data.prefetch_buffer = 64
    cfg.sr.cutoff_min_hz = 2000.0
    cfg.sr.cutoff_max_hz = 16000.0
    cfg.sr.replace_low_band = True
    cfg.sr.replace_n_fft = 2048
    cfg.sr.window_overlap_seconds = 0.25
    # ---- codec and model
    cfg.codec.kind = "stft"
    cfg.codec.n_fft = 2048
    cfg.codec.hop_length = 1024
    cfg.codec.stats_examples = 512
    cfg.model.embed_dim = 768
    cfg.model.num_heads = 12
    cfg.model.depth = 16
    cfg.train.steps = 200_000
    cfg.train.batch_size = 64
    cfg.train.ckpt_every = 5000
    cfg.train.log_every = 100
    cfg.train.workdir = "runs/vctk_sr"
    cfg.optim.lr = 3e-4
    cfg.optim.warmup_steps = 2000
    cfg.optim.ema_decay = 0.999
    cfg.sample.every = 10_000
    cfg.sample.steps = 50
    cfg.sample.cfg_scale = 1.0  # SR samples without classifier-free guidance
    cfg.sample.final_eval_prompts = 64  # held-out clips scored by LSD at the end (<= regime.monitor_size)
    # ---- the stage-adaptive recipe
    cfg.regime.mode = "adaptive"
    cfg.regime.every = 250
    cfg.regime.monitor_size = 64
    cfg.guidance.lambda0 = 0.5
    cfg.guidance.hidden = 768
    cfg.timesteps.adaptive = True
    cfg.struct.enabled = True
    cfg.struct.every = 500
    cfg.struct.ramp_steps = 5000
    return cfg
