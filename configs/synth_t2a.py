"""Offline default: text-to-audio on procedural synthetic clips (8 kHz, 1 s), compressed-STFT codec.

Run:  jaxstage train                      (same as: jaxstage train --config configs/synth_t2a.py)
Tiny: jaxstage train --config configs/synth_t2a.py --set train.steps=50 --workdir runs/tiny
"""

from jaxstage.config import Config


def get_config() -> Config:
    cfg = Config(name="synth_t2a")
    cfg.train.workdir = "runs/synth_t2a"
    return cfg
