"""Tiny variant of the synthetic text-to-audio run: compiles and trains in seconds (tests, smoke runs).

Run:  jaxstage train --config configs/tiny_t2a.py --workdir runs/tiny
"""

from jaxstage.config import Config


def get_config() -> Config:
    cfg = Config(name="tiny_t2a")
    cfg.data.clip_seconds = 0.25
    cfg.data.num_examples = 4096
    cfg.codec.n_fft = 128
    cfg.codec.hop_length = 64
    cfg.codec.stats_examples = 32
    cfg.text.width = 32
    cfg.text.depth = 1
    cfg.text.num_heads = 2
    cfg.text.vocab_size = 512
    cfg.model.embed_dim = 64
    cfg.model.depth = 2
    cfg.model.num_heads = 2
    cfg.model.timestep_features_dim = 32
    cfg.train.batch_size = 8
    cfg.train.steps = 40
    cfg.train.log_every = 10
    cfg.train.ckpt_every = 20
    cfg.train.workdir = "runs/tiny_t2a"
    cfg.optim.warmup_steps = 5
    cfg.sample.steps = 4
    cfg.sample.num = 2
    cfg.sample.every = 0
    cfg.sample.final_eval_prompts = 0
    return cfg
