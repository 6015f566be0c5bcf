"""Fine-tune Stable Audio Open Small with the stage-adaptive recipe, on latents prepared with its own
Oobleck VAE, sharded over a pod (data x fsdp). ARC post-training of the result: docs/arc.md.

Everything the imported run fixes is SAO Small's model_config.json (../shared/SAO.md; reconstructed
from third-party copies): 44.1 kHz, 524288-sample clips = 256 latent frames of 64 channels (2048x,
the same VAE as SAO 1.0), T5-base embeddings [64, 768] (precomputed: the frozen T5 never runs in the
step), one `seconds_total` number conditioner (0..256) in cross-attention (after the prompt) and as
the global condition (768), the DiT (1024 wide, 16 blocks, 8 heads, LayerNorm on queries and keys,
cond tokens projected to 1024, global condition prepended), rectified flow. Cross-attention attends to
padded T5 tokens as stable-audio-tools 0.0.19 does (model.cross_attn_mask=false).

1. Import the downloaded checkpoint as a run; its autoencoder becomes runs/sao_small_imported/autoencoder:

   jaxstage import --src models/stable-audio-open-small --out runs/sao_small_imported --t5 models/t5-base

2. Prepare the data (once; resumable): 44.1 kHz clips of 524288 samples, the VAE's latents, T5-base
   states of the captions (64 tokens, run in JAX) and HuBERT states (layers 6-7) as alignment targets:

   jaxstage prepare --manifest data/my_audio/train.csv --out data/sao_small_prepared --sample-rate 44100 \\
       --clip-seconds 11.888616780045352 --autoencoder runs/sao_small_imported/autoencoder \\
       --text-encoder models/t5-base --text-max-length 64 \\
       --ssl-encoder models/hubert-base-ls960 --ssl-layers 6,7

3. Check memory on the target mesh (8 fake CPU devices; no weights read):

   jaxstage aot-check --config configs/sao_small_finetune.py --devices 8 --set mesh.data=1 --set mesh.fsdp=8 \\
       --set train.batch_size=8 --device-memory 80GiB

   (docs/scaling.md has the figures; bench/sao_memory.py builds the data/autoencoder stand-ins it needs.)

4. Fine-tune, then (optionally) post-train it into an 8-step ping-pong sampler with ARC:

   jaxstage train --config configs/sao_small_finetune.py --workdir runs/sao_small_finetune

The pod this is sized for: 64 GPUs (8 hosts x 8), mesh.fsdp=8 within a host, mesh.data=-1 across
hosts, train.batch_size=256 (4 clips per GPU: a clip is a quarter of SAO 1.0's tokens). Blocks are
rematerialized (model.remat). Optimizer as configs/sao_finetune.py (SAO's AdamW: lr 5e-5, betas
0.9/0.999, weight decay 1e-3, flat after warm-up; EMA 0.9999).

Where it differs from stable-audio-tools: the stage-adaptive recipe (REPA alignment to the HuBERT
targets with a decaying weight, the moving logit-normal level location, the gated structure
regularizer), fp32 throughout, warm-up + flat instead of InverseLR.
"""

import importlib.util
from pathlib import Path

from jaxstage.config import Config

_spec = importlib.util.spec_from_file_location("sao_finetune", Path(__file__).with_name("sao_finetune.py"))
_sao = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sao)

SAMPLE_RATE = 44100
SAMPLE_SIZE = 524288  # SAO Small's sample_size: 256 latent frames at 2048 samples each


def get_config() -> Config:
    """configs/sao_finetune.py with SAO Small's shapes, conditioning, objective and sizing."""
    cfg = _sao.get_config()
    cfg.name = "sao_small_finetune"
    cfg.data.path = "data/sao_small_prepared"  # placeholder: your prepared folder
    cfg.data.sample_rate = SAMPLE_RATE
    cfg.data.clip_seconds = SAMPLE_SIZE / SAMPLE_RATE
    # T5-base states [64, 768] from the records (text.kind=precomputed, as SAO 1.0's)
    # ---- SAO Small's conditioning, routed by id (docs/conditioning.md)
    cfg.conditioning.numbers = (("seconds_total", 0.0, 256.0),)
    cfg.conditioning.cross_attention_ids = ("prompt", "seconds_total")
    cfg.conditioning.global_ids = ("seconds_total",)
    cfg.codec.autoencoder = "runs/sao_small_imported/autoencoder"  # placeholder: the imported run's autoencoder/
    # ---- the DiT: SAO Small's
    cfg.model.embed_dim = 1024
    cfg.model.depth = 16
    cfg.model.num_heads = 8
    cfg.model.qk_norm = True  # "ln": LayerNorm over each head's queries and keys
    # cond tokens projected to the DiT's width (stable-audio-tools' default; SAO Small's config does not
    # turn it off): unprojected 768-wide context would give 6 KV heads of 128 for 8 query heads, which
    # neither stable-audio-tools nor jaxstage can attend with
    cfg.model.project_cond_tokens = True
    cfg.diffusion.objective = "rf"
    # ---- training: start from the import, sized for 64 GPUs (4 clips per GPU)
    cfg.train.init_from = "runs/sao_small_imported"  # placeholder: the `jaxstage import` run
    cfg.train.batch_size = 256
    cfg.train.workdir = "runs/sao_small_finetune"
    # ---- sampling during training (the pre-trained, not yet ARC post-trained, flow model)
    cfg.sample.sampler = "euler"
    cfg.sample.steps = 50
    cfg.regime.monitor_size = 32
    return cfg
