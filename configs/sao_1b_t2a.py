"""A Stable Audio Open-size DiT (about 1.06B parameters in the DiT) for planning pod runs.

The DiT has Stable Audio Open 1.0's shape: width 1536, 24 blocks, 24 heads, 64 input channels,
1024 tokens per clip, 768-wide text tokens used unprojected by cross-attention. jaxstage has no
latent autoencoder, so the 64 channels x 1024 tokens come from a 64-band mel codec (44.1 kHz,
hop 512: 11.9 s clips); the text tokens come from a small learned encoder (SAO uses a frozen T5-base).
Blocks are rematerialized (`model.remat`) and everything is fp32.

Check memory before paying for a pod (compiles the train step for 8 fake devices; no weights, no data):

    jaxstage aot-check --config configs/sao_1b_t2a.py --devices 8 --set mesh.data=1 --set mesh.fsdp=8 \\
        --device-memory 80GiB

Train (synthetic data, offline; on a pod launch with launch/*):

    jaxstage train --config configs/sao_1b_t2a.py --workdir runs/sao_1b_t2a

See docs/scaling.md for the mesh choice and the measured figures.
"""

from jaxstage.config import Config


def get_config() -> Config:
    cfg = Config(name="sao_1b_t2a")
    # ---- data and codec: 64 channels x 1024 tokens, SAO's latent shape
    cfg.data.sample_rate = 44100
    cfg.data.clip_seconds = 1024 * 512 / 44100  # 11.89 s: exactly 1024 frames at hop 512
    cfg.data.text_max_length = 64
    cfg.codec.kind = "mel"
    cfg.codec.n_fft = 2048
    cfg.codec.hop_length = 512
    cfg.codec.n_mels = 64
    cfg.codec.stats_examples = 64
    # ---- text: 768-wide tokens (SAO's T5-base width), fed to cross-attention unprojected
    cfg.text.width = 768
    cfg.text.depth = 2
    cfg.text.num_heads = 12
    cfg.text.vocab_size = 8192
    # ---- the DiT: Stable Audio Open 1.0's
    cfg.model.embed_dim = 1536
    cfg.model.depth = 24
    cfg.model.num_heads = 24
    cfg.model.ff_mult = 4
    cfg.model.project_cond_tokens = False
    cfg.model.remat = "full"  # rematerialization policy (docs/scaling.md)
    # ---- training
    cfg.train.batch_size = 32
    cfg.train.steps = 100_000
    cfg.train.log_every = 100
    cfg.train.ckpt_every = 2000
    cfg.train.workdir = "runs/sao_1b_t2a"
    cfg.optim.warmup_steps = 1000
    cfg.mesh.data = 1
    cfg.mesh.fsdp = -1  # FSDP over every device (see docs/scaling.md)
    cfg.sample.every = 10_000
    cfg.sample.num = 4
    # ---- the stage-adaptive recipe (configs/synth_t2a.py's, at this scale)
    cfg.regime.mode = "adaptive"
    cfg.regime.every = 500
    cfg.regime.monitor_size = 16
    cfg.guidance.lambda0 = 0.5
    cfg.guidance.hidden = 2048  # REPA's projector width
    cfg.timesteps.adaptive = True
    cfg.struct.enabled = True
    cfg.struct.every = 500
    return cfg
