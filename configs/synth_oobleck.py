"""Offline default: an Oobleck VAE trained on the procedural synthetic clips (8 kHz, 1.024 s = 8192
samples), the latent codec's autoencoder (configs/synth_t2a_latent.py reads runs/synth_oobleck/autoencoder).

Run:  jaxstage train --config configs/synth_oobleck.py --workdir runs/synth_oobleck

Shape (configs/synth_t2a_latent.py relies on the clip length and hop): mono, strides (2, 4, 4, 4) =
128 samples per latent, 64 latent frames of 16 channels per clip, c_mults (1, 2, 4, 8) on 16
channels, SnakeBeta. Losses: multi-resolution STFT (FFT 1024 ... 32, 75 % overlap) + 1e-4 KL,
stable-audio-tools' weights; the decoder sees the bottleneck mean in training (latent_noise 0: with
stable-audio-tools' full posterior noise a 10-minute run reconstructs far worse, docs/latent.md);
the adversarial discriminator is off (`--set autoencoder.disc_enabled=true` turns it on). Sized to
finish in about 10 minutes on a 2-core CPU; docs/latent.md has the measured time and the
reconstruction figures against the mel and stft codecs.
At the end the run writes runs/synth_oobleck/autoencoder/ (EMA weights, stable-audio-tools layout)
and reconstruction_eval.json (the VAE against the stft and mel codecs' round trips).
"""

from jaxstage.config import Config


def get_config() -> Config:
    cfg = Config(name="synth_oobleck", task="autoencoder")
    cfg.data.sample_rate = 8000
    cfg.data.clip_seconds = 1.024  # 8192 samples = 64 latent frames
    a = cfg.autoencoder
    a.channels = 16
    a.c_mults = (1, 2, 4, 8)
    a.strides = (2, 4, 4, 4)
    a.latent_dim = 16
    a.use_snake = True
    # the comparison codecs of reconstruction_eval.json: synth_t2a's settings (mel: 80 bands of a
    # 512-point STFT, hop 128; stft: the same STFT, exactly invertible)
    cfg.codec.n_fft = 512
    cfg.codec.n_mels = 80
    a.latent_noise = 0.0  # the decoder sees the bottleneck mean (docs/latent.md: 200-step runs, 1.0 vs 0.0)
    cfg.optim.lr = 2e-3  # stable-audio-tools uses 1.5e-4 for runs of 100k+ steps; this one is short
    cfg.optim.b1, cfg.optim.b2 = 0.9, 0.99
    cfg.optim.warmup_steps = 50
    cfg.optim.weight_decay = 1e-3
    cfg.optim.ema_decay = 0.99
    cfg.train.steps = 2400
    cfg.train.batch_size = 4
    cfg.train.log_every = 50
    cfg.train.ckpt_every = 800
    cfg.train.workdir = "runs/synth_oobleck"
    cfg.sample.every = 800
    cfg.sample.num = 4
    cfg.sample.final_eval_prompts = 90  # held-out clips of the reconstruction report
    return cfg
