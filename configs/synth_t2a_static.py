"""Static baseline of configs/synth_t2a.py: the same model, data and length, no stage-adaptive mechanism.

Run:  jaxstage train --config configs/synth_t2a_static.py

p stays 0, no SSL alignment, the level distribution stays at diffusion.loc, no structure
regularizer. The ablations of SPEC §3.8 are --set variations of configs/synth_t2a.py (README).
"""

import importlib.util
from pathlib import Path

from jaxstage.config import Config

_spec = importlib.util.spec_from_file_location("synth_t2a", Path(__file__).with_name("synth_t2a.py"))
_adaptive = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_adaptive)


def get_config() -> Config:
    cfg = _adaptive.get_config()
    cfg.name = "synth_t2a_static"
    cfg.train.workdir = "runs/synth_t2a_static"
    cfg.regime.mode = "off"
    cfg.guidance.lambda0 = 0.0
    cfg.timesteps.adaptive = False
    cfg.struct.enabled = False
    return cfg
