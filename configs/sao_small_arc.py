"""ARC post-training (SPEC §5) of a Stable Audio Open Small fine-tune (or of the imported SAO Small
itself): configs/sao_small_finetune.py's model, data, codec and conditioning, trained adversarially
into an 8-step ping-pong sampler without CFG (SAO Small's own ARC recipe: rectified flow, ping-pong,
CFG 1). ARC runs no T5 in its step: the text comes from the prepared records' T5 embeddings.

    (after `jaxstage train --config configs/sao_small_finetune.py`, which makes runs/sao_small_finetune)
    jaxstage posttrain --config configs/sao_small_arc.py --init-from runs/sao_small_finetune \\
        --workdir runs/sao_small_arc
    jaxstage sample --workdir runs/sao_small_arc --prompt "rain on a tin roof" --seconds-total 10 --out rain.wav
    jaxstage export --workdir runs/sao_small_arc --out exported/sao_small_arc --ema   # loads in stable-audio-tools

The generator starts from the pretrained run's EMA weights; the discriminator is its first
`arc.disc_depth` DiT blocks plus a conv head (docs/arc.md). Tested on a SAO-Small-shaped toy import
in tests/train/test_sao_finetune.py (a few steps, then the export sampled in stable-audio-tools).
"""

import importlib.util
from pathlib import Path

from jaxstage.config import Config

_spec = importlib.util.spec_from_file_location("sao_small_finetune", Path(__file__).with_name("sao_small_finetune.py"))
_pretrained = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pretrained)


def get_config() -> Config:
    cfg = _pretrained.get_config()
    cfg.name = "sao_small_arc"
    cfg.train.workdir = "runs/sao_small_arc"
    cfg.train.init_from = ""  # ARC reads arc.init_from (--init-from)
    cfg.train.steps = 20_000
    cfg.train.ckpt_every = 1000
    cfg.arc.init_from = "runs/sao_small_finetune"
    cfg.arc.disc_depth = 8  # of the DiT's 16 blocks
    cfg.arc.gen_lr = 5e-6
    cfg.arc.disc_lr = 5e-6
    cfg.arc.warmup_steps = 500
    cfg.arc.ema_decay = 0.9999
    # the post-trained sampler: 8-step ping-pong on the log-SNR schedule, no CFG
    cfg.sample.sampler = "pingpong"
    cfg.sample.steps = 8
    cfg.sample.cfg_scale = 1.0
    return cfg
