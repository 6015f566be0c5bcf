"""Small random transformers T5 checkpoints for the T5 port's tests (need torch + transformers).

    model = random_t5("gated-gelu")                     # T5EncoderModel in eval mode, weights perturbed
    directory = save_t5(model, tmp_path / "t5")          # config.json + model.safetensors
    directory = save_t5(model, tmp_path / "t5", torch_bin=True)   # config.json + pytorch_model.bin

The config uses 8 buckets and max distance 20 so that sequences of 40 tokens reach the logarithmic
buckets and the clipped last bucket; 3 layers so the first block's position bias is reused.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_T5 = dict(vocab_size=50, d_model=32, d_kv=8, d_ff=48, num_layers=3, num_heads=3,
               relative_attention_num_buckets=8, relative_attention_max_distance=20,
               decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def random_t5(feed_forward_proj: str = "relu", seed: int = 0, full: bool = False, **overrides):
    """A tiny `T5EncoderModel` (or `T5ForConditionalGeneration` if `full`) with every weight perturbed
    (its init sets norms to 1, which would hide a norm-weight conversion mistake)."""
    import torch
    import transformers

    config = transformers.T5Config(**{**TINY_T5, **overrides}, feed_forward_proj=feed_forward_proj)
    torch.manual_seed(seed)
    model_class = transformers.T5ForConditionalGeneration if full else transformers.T5EncoderModel
    model = model_class(config).eval()
    with torch.no_grad():
        for t in model.state_dict().values():
            t.add_(0.1 * torch.randn_like(t))
    return model


def save_t5(model, directory: str | Path, torch_bin: bool = False) -> Path:
    """`save_pretrained` (safetensors), or config.json + a `torch.save`d `pytorch_model.bin`."""
    import torch

    directory = Path(directory)
    if not torch_bin:
        model.save_pretrained(directory)
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(model.config.to_dict()))
    torch.save(model.state_dict(), directory / "pytorch_model.bin")
    return directory
