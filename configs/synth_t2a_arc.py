"""ARC post-training (SPEC §5) of the offline default run: configs/synth_t2a.py's model, data and
codec, trained adversarially into a few-step sampler (ping-pong, 8 steps, no CFG).

Run (after `jaxstage train`, which makes runs/synth_t2a):

    jaxstage posttrain --config configs/synth_t2a_arc.py --init-from runs/synth_t2a --workdir runs/synth_t2a_arc
    jaxstage sample --workdir runs/synth_t2a_arc --prompt "a low square tone with fast pulses" --out sq.wav

The generator starts from the pretrained run's EMA weights; the discriminator is its first
`arc.disc_depth` DiT blocks (and text encoder) plus a conv head. `jaxstage posttrain` reads the
model-defining keys (model.*, text.*, codec.*, data.*, diffusion.objective, and guidance.* only as
far as they add the REPA projector to the model), train.* (steps, batch, cadence), sample.*, mesh.*
and arc.*; it does not read optim.*, regime.*, timesteps.* or struct.* (ARC has its own optimizers
and no regime). Sized for this 2-core CPU; see docs/arc.md for the measured table.
"""

import importlib.util
from pathlib import Path

from jaxstage.config import Config

_spec = importlib.util.spec_from_file_location("synth_t2a", Path(__file__).with_name("synth_t2a.py"))
_pretrained = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pretrained)


def get_config() -> Config:
    cfg = _pretrained.get_config()
    cfg.name = "synth_t2a_arc"
    cfg.train.workdir = "runs/synth_t2a_arc"
    cfg.train.steps = 600
    cfg.train.log_every = 25
    cfg.train.ckpt_every = 200
    cfg.arc.init_from = "runs/synth_t2a"
    cfg.arc.disc_depth = 2  # of the DiT's 4 blocks
    cfg.arc.gen_lr = 3e-5
    cfg.arc.disc_lr = 1e-4
    cfg.arc.warmup_steps = 50
    cfg.arc.ema_decay = 0.995  # SPEC's 0.9999 is for long runs; this one has 600 steps
    # the post-trained sampler: SPEC §5's 8-step ping-pong on the log-SNR schedule, no CFG
    cfg.sample.sampler = "pingpong"
    cfg.sample.steps = 8
    cfg.sample.cfg_scale = 1.0
    cfg.sample.every = 0
    return cfg
