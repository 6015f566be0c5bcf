"""Stage-adaptive text-to-audio on AudioCaps, conditioned like Stable Audio Open: T5-base text
embeddings and the `seconds_start` / `seconds_total` timing conditioners (SAO's routing: all three in
cross-attention, the two numbers as the global condition), HuBERT SSL targets precomputed.

1. Prepare (once; resumable): 16 kHz mono, 10 s clips, T5 encoder states (run in JAX) as the text
   condition, each file's timing, and HuBERT hidden states (layers 6-7 averaged) as the alignment
   targets, written to data/audiocaps_prepared:

   jaxstage prepare --manifest data/audiocaps/train.csv --kind audiocaps --audio-dir data/audiocaps/audio \\
       --out data/audiocaps_prepared --sample-rate 16000 --clip-seconds 10 --text-max-length 128 \\
       --text-encoder models/t5-base --ssl-encoder models/hubert-base-ls960 --ssl-layers 6,7

2. Train:  jaxstage train --config configs/audiocaps_t2a.py --workdir runs/audiocaps_t2a
   (another prepared folder: --set data.path=DIR; its dataset.json must say 16000 Hz and 160000 samples)

The recipe is configs/synth_t2a.py's (SPEC §3): p from the alignment discrepancy on a fixed monitor
batch, decayed REPA guidance, the moving level location and the gated structure regularizer, here
with the records' precomputed targets instead of the spectral stand-in. The last
`regime.monitor_size` records of the prepared folder are held out: the monitor batch and the
periodic samples (their captions and T5 embeddings) use them, training never sees them. Free-text
prompts run the same T5 in-process (the directory dataset.json names, or text.encoder_dir):

   jaxstage sample --workdir runs/audiocaps_t2a --prompt "a dog barks in the rain" --seconds-total 10 --out dog.wav
"""

from jaxstage.config import Config


def get_config() -> Config:
    cfg = Config(name="audiocaps_t2a")
    # ---- data: a `jaxstage prepare` folder
    cfg.data.source = "prepared"
    cfg.data.path = "data/audiocaps_prepared"
    cfg.data.sample_rate = 16000
    cfg.data.clip_seconds = 10.0
    cfg.data.prefetch_threads = 8
    cfg.data.prefetch_buffer = 64
    cfg.text.kind = "precomputed"  # T5 states [L, 768] from the records, projected by the DiT's to_cond_embed
    # ---- Stable Audio Open's conditioning (docs/conditioning.md): number conditioners for the timing,
    # routed by id like SAO 1.0's model_config.json; cross-attention ignores padded T5 tokens (SAO
    # 0.0.19 attends to them: model.cross_attn_mask=false)
    cfg.conditioning.numbers = (("seconds_start", 0.0, 512.0), ("seconds_total", 0.0, 512.0))
    cfg.conditioning.cross_attention_ids = ("prompt", "seconds_start", "seconds_total")
    cfg.conditioning.global_ids = ("seconds_start", "seconds_total")
    cfg.guidance.ssl = "precomputed"  # HuBERT frames from the records, resampled to the token rate
    # ---- codec and model
    cfg.codec.kind = "mel"
    cfg.codec.n_fft = 1024
    cfg.codec.hop_length = 256  # 626 tokens per 10 s clip
    cfg.codec.n_mels = 128
    cfg.codec.stats_examples = 512
    cfg.model.embed_dim = 512
    cfg.model.num_heads = 8
    cfg.model.depth = 12
    cfg.train.steps = 200_000
    cfg.train.batch_size = 64
    cfg.train.ckpt_every = 5000
    cfg.train.log_every = 100
    cfg.train.workdir = "runs/audiocaps_t2a"
    cfg.optim.lr = 3e-4
    cfg.optim.warmup_steps = 2000
    cfg.optim.ema_decay = 0.999
    cfg.sample.every = 10_000
    cfg.sample.steps = 64
    cfg.sample.final_eval_prompts = 0  # the attribute check judges synthetic prompts only
    # ---- the stage-adaptive recipe
    cfg.regime.mode = "adaptive"
    cfg.regime.every = 250
    cfg.regime.monitor_size = 64
    cfg.guidance.lambda0 = 0.5
    cfg.guidance.hidden = 1024
    cfg.timesteps.adaptive = True
    cfg.struct.enabled = True
    cfg.struct.every = 500
    cfg.struct.ramp_steps = 5000
    return cfg
