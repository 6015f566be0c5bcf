"""The conditioned denoiser network: text conditioner + DiT, assembled from the config.

``text.kind=learned``: hash-token ids go through the small learned TextEncoder (width text.width).
``text.kind=precomputed``: the batch's embeddings [B, L, text_dim] pass through unchanged; the DiT's
``to_cond_embed`` (a learned projection, with ``model.project_cond_tokens``) maps them to its width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxstage.config import Config
from jaxstage.models.dit import DiffusionTransformer, DiTOutput
from jaxstage.models.text import make_text_conditioner
from jaxstage.stage.guidance import Projector


class Denoiser(nnx.Module):
    """Text tokens -> cross-attention conditioning of a Stable Audio family DiT (+ the REPA projector)."""

    def __init__(self, cfg: Config, io_channels: int, *, ssl_dim: int = 0, text_dim: int = 0, rngs: nnx.Rngs):
        """``text_dim``: width of precomputed text embeddings (required with text.kind=precomputed)."""
        if cfg.text.kind == "precomputed":
            if text_dim <= 0:
                raise ValueError(f"text.kind=precomputed needs the embedding width, got text_dim={text_dim}")
            self.text = make_text_conditioner("precomputed", width=text_dim)
            cond_dim = text_dim
        else:
            self.text = make_text_conditioner(
                "learned", width=cfg.text.width, vocab_size=cfg.text.vocab_size, depth=cfg.text.depth,
                num_heads=cfg.text.num_heads, max_length=cfg.data.text_max_length, rngs=rngs,
            )
            cond_dim = cfg.text.width
        self.dit = DiffusionTransformer(
            io_channels=io_channels, embed_dim=cfg.model.embed_dim, depth=cfg.model.depth,
            num_heads=cfg.model.num_heads, cond_token_dim=cond_dim,
            project_cond_tokens=cfg.model.project_cond_tokens,
            global_cond_type=cfg.model.global_cond_type, qk_norm=cfg.model.qk_norm,
            ff_mult=cfg.model.ff_mult, timestep_features_dim=cfg.model.timestep_features_dim,
            rngs=rngs,
        )
        # Mechanism 1's projector h_ψ (SPEC §3.3), present only when alignment is on.
        self.projector = (Projector(cfg.model.embed_dim, ssl_dim, cfg.guidance.hidden, rngs=rngs)
                          if ssl_dim else None)

    def encode_text(self, text: jax.Array, text_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Token ids [B, L] (learned) or precomputed embeddings [B, L, D] -> (tokens [B, L, D'], mask [B, L])."""
        return self.text(text, text_mask)

    def denoise(
        self, x: jax.Array, c_noise: jax.Array, tokens: jax.Array, mask: jax.Array, *,
        hidden_layer: int | None = None, normalize_summaries: bool = False,
    ) -> DiTOutput:
        """One DiT forward on already-encoded text tokens."""
        return self.dit(x, c_noise, cross_tokens=tokens, cross_mask=mask, hidden_layer=hidden_layer,
                        normalize_summaries=normalize_summaries)

    def __call__(self, x: jax.Array, c_noise: jax.Array, text: jax.Array, text_mask: jax.Array,
                 keep_cond: jax.Array | None = None, *, hidden_layer: int | None = None,
                 normalize_summaries: bool = False) -> DiTOutput:
        """Full forward; ``keep_cond`` [B] (0/1) zeroes the text condition of dropped examples."""
        tokens, mask = self.encode_text(text, text_mask)
        if keep_cond is not None:
            tokens = tokens * keep_cond[:, None, None].astype(tokens.dtype)
        return self.denoise(x, c_noise, tokens, mask, hidden_layer=hidden_layer,
                            normalize_summaries=normalize_summaries)


def null_tokens(tokens: jax.Array) -> jax.Array:
    """The unconditional (dropped) text condition: zero embeddings, mask unchanged."""
    return jnp.zeros_like(tokens)
