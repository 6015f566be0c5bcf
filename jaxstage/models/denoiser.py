"""The conditioned denoiser network: text encoder + DiT, assembled from the config."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxstage.config import Config
from jaxstage.models.dit import DiffusionTransformer, DiTOutput
from jaxstage.models.text import TextEncoder
from jaxstage.stage.guidance import Projector


class Denoiser(nnx.Module):
    """Text tokens -> cross-attention conditioning of a Stable Audio family DiT (+ the REPA projector)."""

    def __init__(self, cfg: Config, io_channels: int, *, ssl_dim: int = 0, rngs: nnx.Rngs):
        self.text = TextEncoder(
            vocab_size=cfg.text.vocab_size, width=cfg.text.width, depth=cfg.text.depth,
            num_heads=cfg.text.num_heads, max_length=cfg.data.text_max_length, rngs=rngs,
        )
        self.dit = DiffusionTransformer(
            io_channels=io_channels, embed_dim=cfg.model.embed_dim, depth=cfg.model.depth,
            num_heads=cfg.model.num_heads, cond_token_dim=cfg.text.width,
            project_cond_tokens=cfg.model.project_cond_tokens,
            global_cond_type=cfg.model.global_cond_type, qk_norm=cfg.model.qk_norm,
            ff_mult=cfg.model.ff_mult, timestep_features_dim=cfg.model.timestep_features_dim,
            rngs=rngs,
        )
        # Mechanism 1's projector h_ψ (SPEC §3.3), present only when alignment is on.
        self.projector = (Projector(cfg.model.embed_dim, ssl_dim, cfg.guidance.hidden, rngs=rngs)
                          if ssl_dim else None)

    def encode_text(self, text_ids: jax.Array, text_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Token ids -> (embeddings [B, L, D], mask [B, L])."""
        return self.text(text_ids, text_mask)

    def denoise(
        self, x: jax.Array, c_noise: jax.Array, tokens: jax.Array, mask: jax.Array, *,
        hidden_layer: int | None = None, normalize_summaries: bool = False,
    ) -> DiTOutput:
        """One DiT forward on already-encoded text tokens."""
        return self.dit(x, c_noise, cross_tokens=tokens, cross_mask=mask, hidden_layer=hidden_layer,
                        normalize_summaries=normalize_summaries)

    def __call__(self, x: jax.Array, c_noise: jax.Array, text_ids: jax.Array, text_mask: jax.Array,
                 keep_cond: jax.Array | None = None, *, hidden_layer: int | None = None,
                 normalize_summaries: bool = False) -> DiTOutput:
        """Full forward; ``keep_cond`` [B] (0/1) zeroes the text condition of dropped examples."""
        tokens, mask = self.encode_text(text_ids, text_mask)
        if keep_cond is not None:
            tokens = tokens * keep_cond[:, None, None].astype(tokens.dtype)
        return self.denoise(x, c_noise, tokens, mask, hidden_layer=hidden_layer,
                            normalize_summaries=normalize_summaries)


def null_tokens(tokens: jax.Array) -> jax.Array:
    """The unconditional (dropped) text condition: zero embeddings, mask unchanged."""
    return jnp.zeros_like(tokens)
