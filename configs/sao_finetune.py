"""Fine-tune Stable Audio Open 1.0 with the stage-adaptive recipe, on latents prepared with its own
Oobleck VAE, sharded over a pod (data x fsdp).

Everything the imported run fixes is SAO 1.0's model_config.json (../shared/SAO.md): 44.1 kHz,
2097152-sample clips = 1024 latent frames of 64 channels (2048x), T5-base embeddings [128, 768]
(precomputed: the frozen T5 never runs in the step), `seconds_start` / `seconds_total` number
conditioners (0..512) in cross-attention (after the prompt) and concatenated as the global condition
(1536 = 2 x 768), the DiT (1536 wide, 24 blocks, 24 heads, cond tokens unprojected, global condition
prepended, no qk norm), the v objective. Cross-attention attends to padded T5 tokens as
stable-audio-tools 0.0.19 does (model.cross_attn_mask=false), so the imported weights see what they
were trained on.

1. Import the downloaded checkpoint (model_config.json + model.safetensors) as a run; its
   autoencoder becomes runs/sao_imported/autoencoder:

   jaxstage import --src models/stable-audio-open-1.0 --out runs/sao_imported --t5 models/t5-base

2. Prepare the data (once; resumable): 44.1 kHz clips of 2097152 samples, the VAE's latents, T5-base
   states of the captions (128 tokens, run in JAX) and HuBERT states (layers 6-7) as alignment targets:

   jaxstage prepare --manifest data/my_audio/train.csv --out data/sao_prepared --sample-rate 44100 \\
       --clip-seconds 47.55446712018141 --autoencoder runs/sao_imported/autoencoder \\
       --text-encoder models/t5-base --text-max-length 128 \\
       --ssl-encoder models/hubert-base-ls960 --ssl-layers 6,7

   (longer files: add --max-seconds S to train on a random 47.55 s crop per epoch.)

3. Check memory on the target mesh before paying for it (8 fake CPU devices; no weights read):

   jaxstage aot-check --config configs/sao_finetune.py --devices 8 --set mesh.data=1 --set mesh.fsdp=8 \\
       --set train.batch_size=8 --device-memory 80GiB

   (docs/scaling.md has the figures; bench/sao_memory.py builds the data/autoencoder stand-ins it needs.)

4. Fine-tune (one process per host; launch/* for clusters):

   jaxstage train --config configs/sao_finetune.py --workdir runs/sao_finetune

The pod this is sized for: 64 GPUs (8 hosts x 8), mesh.fsdp=8 within a host (the state sharded over
its NVLink domain), mesh.data=-1 across hosts (8 replicas), train.batch_size=128 (2 clips per GPU).
Blocks are rematerialized (model.remat); without it the per-device activations do not fit
(docs/scaling.md). The optimizer is SAO's AdamW (lr 5e-5, betas 0.9/0.999, weight decay 1e-3) with
the learning rate held flat after warm-up (end_lr_ratio 1: SAO's InverseLR with inv_gamma 1e6
decays by under 5% over 100k steps); EMA 0.9999 as SAO's training wrapper.

Where it differs from stable-audio-tools' fine-tuning: the stage-adaptive recipe (REPA alignment to
the HuBERT targets with a decaying weight, the moving logit-normal level location, the gated
structure regularizer; SAO 0.0.19 draws t uniformly), fp32 throughout (SAO: 16-mixed), and
warm-up + flat instead of InverseLR.
"""

from jaxstage.config import Config

SAMPLE_RATE = 44100
SAMPLE_SIZE = 2097152  # SAO 1.0's sample_size: 1024 latent frames at 2048 samples each


def get_config() -> Config:
    cfg = Config(name="sao_finetune")
    # ---- data: `jaxstage prepare --autoencoder` latents of the imported VAE
    cfg.data.source = "prepared"
    cfg.data.path = "data/sao_prepared"  # placeholder: your prepared folder
    cfg.data.latents = True
    cfg.data.sample_rate = SAMPLE_RATE
    cfg.data.clip_seconds = SAMPLE_SIZE / SAMPLE_RATE
    cfg.data.prefetch_threads = 8
    cfg.data.prefetch_buffer = 32
    cfg.text.kind = "precomputed"  # T5-base states [128, 768] from the records
    # ---- SAO 1.0's conditioning, routed by id (docs/conditioning.md)
    cfg.conditioning.numbers = (("seconds_start", 0.0, 512.0), ("seconds_total", 0.0, 512.0))
    cfg.conditioning.cross_attention_ids = ("prompt", "seconds_start", "seconds_total")
    cfg.conditioning.global_ids = ("seconds_start", "seconds_total")
    cfg.model.cross_attn_mask = False  # stable-audio-tools 0.0.19 attends to padded T5 tokens
    # ---- codec: the imported run's Oobleck VAE (frozen; latents as they are, pretransform scale 1)
    cfg.codec.kind = "oobleck"
    cfg.codec.autoencoder = "runs/sao_imported/autoencoder"  # placeholder: the imported run's autoencoder/
    cfg.codec.stats_examples = 64
    # ---- the DiT: SAO 1.0's
    cfg.model.embed_dim = 1536
    cfg.model.depth = 24
    cfg.model.num_heads = 24
    cfg.model.ff_mult = 4
    cfg.model.qk_norm = False
    cfg.model.global_cond_type = "prepend"
    cfg.model.timestep_features_dim = 256
    cfg.model.project_cond_tokens = False  # cond_token_dim 768 used as is by cross-attention
    cfg.model.remat = "full"  # rematerialization policy (docs/scaling.md)
    cfg.diffusion.objective = "v"
    cfg.diffusion.cond_dropout = 0.1  # SAO's cfg_dropout_prob
    # ---- training: start from the import, sized for 64 GPUs
    cfg.train.init_from = "runs/sao_imported"  # placeholder: the `jaxstage import` run
    cfg.train.batch_size = 128
    cfg.train.steps = 50_000
    cfg.train.log_every = 100
    cfg.train.ckpt_every = 2000
    cfg.train.workdir = "runs/sao_finetune"
    cfg.optim.lr = 5e-5
    cfg.optim.b1 = 0.9
    cfg.optim.b2 = 0.999
    cfg.optim.weight_decay = 1e-3
    cfg.optim.warmup_steps = 500
    cfg.optim.end_lr_ratio = 1.0
    cfg.optim.ema_decay = 0.9999
    cfg.mesh.data = -1  # replicas across hosts
    cfg.mesh.fsdp = 8  # state sharded over the 8 GPUs of a host
    # ---- sampling during training (SAO's usual CFG scale; DPM++ 2M standing in for its 3M SDE)
    cfg.sample.sampler = "dpmpp_2m"
    cfg.sample.steps = 100
    cfg.sample.cfg_scale = 7.0
    cfg.sample.every = 5000
    cfg.sample.num = 4
    cfg.sample.final_eval_prompts = 0  # the attribute check judges synthetic prompts only
    # ---- the stage-adaptive recipe (configs/audiocaps_t2a.py's, at this scale)
    cfg.regime.mode = "adaptive"
    cfg.regime.every = 500
    cfg.regime.monitor_size = 16
    cfg.guidance.lambda0 = 0.5
    cfg.guidance.hidden = 2048  # REPA projector width
    cfg.guidance.ssl = "precomputed"  # HuBERT frames from the records, resampled to the token rate
    cfg.timesteps.adaptive = True
    cfg.struct.enabled = True
    cfg.struct.every = 500
    cfg.struct.ramp_steps = 5000
    return cfg
