"""The ARC discriminator (SPEC §5.3): a copy of the pretrained denoiser truncated after
``arc.disc_depth`` DiT blocks, plus a small convolutional head that scores every time position.

It sees what the pretrained model sees (re-noised features at a noise level, text tokens) and
starts from the pretrained weights: text encoder, DiT input layers and the first blocks. The head
(conv k -> SiLU -> conv 1) is new. Scores are ``[B, T]``, one per token.
"""

from __future__ import annotations

import copy
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxstage.config import Config, ConfigError
from jaxstage.tools.export.key_map import flatten, unflatten
from jaxstage.models.denoiser import Denoiser


def discriminator_config(cfg: Config) -> Config:
    """The pretrained config with the DiT cut to ``arc.disc_depth`` blocks."""
    depth = cfg.arc.disc_depth
    if not 1 <= depth <= cfg.model.depth:
        raise ConfigError(f"arc.disc_depth={depth} must be in [1, model.depth={cfg.model.depth}]")
    out = copy.deepcopy(cfg)
    out.model.depth = depth
    return out


class ScoreHead(nnx.Module):
    """Per-position scores from hidden tokens: Conv1d(k) -> SiLU -> Conv1d(1)."""

    def __init__(self, width: int, hidden: int, kernel: int, *, rngs: nnx.Rngs):
        self.conv_in = nnx.Conv(width, hidden, kernel_size=(kernel,), padding="SAME", rngs=rngs)
        self.conv_out = nnx.Conv(hidden, 1, kernel_size=(1,), rngs=rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return self.conv_out(jax.nn.silu(self.conv_in(tokens)))[..., 0]


class Discriminator(nnx.Module):
    """Truncated pretrained denoiser + score head: ``(x, c_noise, text, mask) -> scores [B, T]``."""

    def __init__(self, cfg: Config, io_channels: int, *, text_dim: int = 0, rngs: nnx.Rngs):
        self.backbone = Denoiser(discriminator_config(cfg), io_channels, text_dim=text_dim, rngs=rngs)
        self.head = ScoreHead(cfg.model.embed_dim, cfg.arc.head_hidden, cfg.arc.head_kernel, rngs=rngs)

    def __call__(self, x: jax.Array, c_noise: jax.Array, text: jax.Array, text_mask: jax.Array,
                 numbers: dict[str, jax.Array] | None = None) -> jax.Array:
        hidden = self.backbone(x, c_noise, text, text_mask, numbers=numbers, hidden_layer=-1).hidden  # [B, T, width]
        return self.head(hidden.astype(jnp.float32))


def from_pretrained(disc_params: dict, pretrained: dict) -> dict:
    """Discriminator parameters whose backbone is the pretrained denoiser's (first blocks only);
    the head keeps its fresh initialization. Every backbone parameter must exist in the pretrained
    tree with the same shape (an error names the first that does not)."""
    source = flatten(pretrained)
    flat = flatten(disc_params)
    out: dict[tuple, Any] = {}
    for path, value in flat.items():
        if path[0] != "backbone":
            out[path] = value
            continue
        theirs = source.get(path[1:])
        if theirs is None or tuple(theirs.shape) != tuple(value.shape):
            found = "missing" if theirs is None else f"shape {tuple(theirs.shape)}"
            raise ConfigError(f"discriminator parameter {'.'.join(path)} {tuple(value.shape)}: "
                              f"the pretrained run has it {found}")
        out[path] = theirs
    return unflatten(out, disc_params)
