"""Stable Audio Open-shaped checkpoints at toy sizes, written tensor by tensor without
stable-audio-tools (its own modules build them in sao_reference.py): a DiT, number conditioners and an
Oobleck pretransform in stable-audio-tools' keys, with SAO's conditioning config and routing.

    t5 = save_wide_t5(tmp / "t5", d_model=512)          # tokenizer + a 1-layer random T5 (t5-small's width)
    sat = sao_like_config(512)                           # SAO 1.0's structure; sao_like_config(512, small=True): SAO Small's
    src = write_sao_like_checkpoint(tmp / "sao", sat)    # model.safetensors + model_config.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from jaxstage.models.oobleck import OobleckConfig, OobleckVAE, torch_state
from jaxstage.tools.export import key_map, safetensors_io
from jaxstage.tools.export.autoencoder import sat_autoencoder_config
from jaxstage.tools.export.sat_conditioning import numbers_to_torch

VAE = OobleckConfig(audio_channels=2, channels=4, c_mults=(1, 2), strides=(4, 4), latent_dim=8)  # hop 16
SR, FRAMES = 8000, 16
T5_NAMES = {512: "t5-small", 768: "t5-base"}


def sao_like_config(cond_dim: int, *, small: bool = False, frames: int = FRAMES) -> dict:
    """SAO 1.0's model_config.json structure at toy sizes; ``small``: SAO Small's (rectified flow,
    seconds_total only, qk_norm ln)."""
    numbers = ["seconds_total"] if small else ["seconds_start", "seconds_total"]
    configs = [{"id": "prompt", "type": "t5", "config": {"t5_model_name": T5_NAMES[cond_dim], "max_length": 8}}]
    configs += [{"id": cid, "type": "number", "config": {"min_val": 0, "max_val": 256 if small else 512}}
                for cid in numbers]
    dit = {"io_channels": VAE.latent_dim, "embed_dim": 64, "depth": 2, "num_heads": 2, "cond_token_dim": cond_dim,
           "global_cond_dim": len(numbers) * cond_dim, "project_cond_tokens": True,
           "transformer_type": "continuous_transformer"}
    if small:
        dit["attn_kwargs"] = {"qk_norm": "ln"}
    return {
        "model_type": "diffusion_cond", "sample_size": frames * VAE.hop, "sample_rate": SR, "audio_channels": 2,
        "model": {
            "pretransform": {"type": "autoencoder", "iterate_batch": True, "config": sat_autoencoder_config(VAE)},
            "conditioning": {"configs": configs, "cond_dim": cond_dim},
            "diffusion": {"cross_attention_cond_ids": ["prompt", *numbers], "global_cond_ids": numbers,
                          "type": "dit", "diffusion_objective": "rectified_flow" if small else "v", "config": dit},
            "io_channels": VAE.latent_dim},
        "training": {"learning_rate": 5e-5},
    }


def save_wide_t5(directory: Path, d_model: int = 512) -> Path:
    """A 1-layer random T5 ``d_model`` wide (with tests/data/hf_tiny.py's word-level tokenizer)."""
    import torch
    from transformers import T5Config, T5EncoderModel

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "data"))
    from hf_tiny import save_tiny_t5

    directory = save_tiny_t5(directory)  # its tokenizer; the model is replaced
    config = T5Config(vocab_size=64, d_model=d_model, d_kv=32, d_ff=64, num_layers=1, num_heads=2,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    T5EncoderModel(config).save_pretrained(directory)
    return directory


def write_sao_like_checkpoint(out: Path, sat: dict, seed: int = 3) -> Path:
    """model.safetensors + model_config.json for ``sat``: random weights, every tensor perturbed (the
    DiT's zero-initialized outputs too, so the model is not the identity)."""
    from jaxstage.config import Config
    from jaxstage.models.denoiser import Denoiser
    from jaxstage.tools.export.sat_conditioning import apply_conditioning, parse_conditioning
    from jaxstage.tools.export.sat_config import parse_sat_config

    parsed = parse_sat_config(sat)["dit"]
    cfg = Config()
    apply_conditioning(cfg, parse_conditioning(sat), "unused")
    cfg.text.kind, cfg.text.encoder_dir = "precomputed", ""
    for name in ("embed_dim", "depth", "num_heads", "project_cond_tokens", "qk_norm"):
        setattr(cfg.model, name, parsed[name])
    model = Denoiser(cfg, VAE.latent_dim, text_dim=parsed["cond_token_dim"], rngs=nnx.Rngs(seed))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda a: np.asarray(a) + 0.05 * rng.standard_normal(a.shape).astype(np.float32), params)
    buffers = nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.Param)))["dit"]
    tensors = key_map.to_torch_state(params["dit"], buffers)
    tensors.update(numbers_to_torch(params["numbers"]))
    vae_state = torch_state(OobleckVAE(VAE, nnx.Rngs(seed + 1)))
    tensors.update({f"pretransform.model.{k}": np.asarray(v, np.float32) for k, v in vae_state.items()})
    safetensors_io.write_checkpoint(out, tensors, metadata={"format": "pt"}, show_progress=False)
    (out / "model_config.json").write_text(json.dumps(sat))
    return out
