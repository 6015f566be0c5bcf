"""The conditioned denoiser network: text conditioner + DiT, assembled from the config.

``text.kind=learned``: hash-token ids go through the small learned TextEncoder (width text.width).
``text.kind=precomputed``: the batch's embeddings [B, L, text_dim] pass through unchanged; the DiT's
``to_cond_embed`` (a learned projection, with ``model.project_cond_tokens``) maps them to its width.

``task=sr``: the normalized codec features of the low band [B, T, C] are concatenated to the noisy
input as extra channels (the DiT's ``input_concat``), and the cutoff, as ``cutoff / (sample_rate / 2)``
through learned Fourier features (``sr.cutoff_features`` wide), is the DiT's global condition
(added to the timestep embedding). Text cross-attention stays (on the empty caption).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxstage.config import Config
from jaxstage.models.dit import DiffusionTransformer, DiTOutput, FourierFeatures
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
        self.sr = cfg.task == "sr"
        self.nyquist = cfg.data.sample_rate / 2
        global_cond_dim = cfg.sr.cutoff_features if self.sr else 0
        self.cutoff_features = FourierFeatures(1, global_cond_dim, rngs=rngs) if self.sr else None
        self.dit = DiffusionTransformer(
            io_channels=io_channels, embed_dim=cfg.model.embed_dim, depth=cfg.model.depth,
            num_heads=cfg.model.num_heads, cond_token_dim=cond_dim,
            project_cond_tokens=cfg.model.project_cond_tokens,
            global_cond_type=cfg.model.global_cond_type, qk_norm=cfg.model.qk_norm,
            ff_mult=cfg.model.ff_mult, timestep_features_dim=cfg.model.timestep_features_dim,
            global_cond_dim=global_cond_dim, input_concat_dim=io_channels if self.sr else 0,
            remat=cfg.model.remat, rngs=rngs,
        )
        # Mechanism 1's projector h_ψ (SPEC §3.3), present only when alignment is on.
        self.projector = (Projector(cfg.model.embed_dim, ssl_dim, cfg.guidance.hidden, rngs=rngs)
                          if ssl_dim else None)

    def encode_text(self, text: jax.Array, text_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Token ids [B, L] (learned) or precomputed embeddings [B, L, D] -> (tokens [B, L, D'], mask [B, L])."""
        return self.text(text, text_mask)

    def sr_condition(self, low: jax.Array | None, cutoff: jax.Array | None
                     ) -> tuple[jax.Array | None, jax.Array | None]:
        """(input_concat, global_cond) of the DiT: SR needs ``low`` [B, T, C] (normalized codec features
        of the low band) and ``cutoff`` [B] in Hz; T2A takes neither."""
        if not self.sr:
            if low is not None or cutoff is not None:
                raise ValueError("low/cutoff given but the model was built for task=t2a")
            return None, None
        if low is None or cutoff is None:
            raise ValueError("task=sr needs the low-band features and the cutoff")
        normalized = cutoff.astype(jnp.float32) / self.nyquist
        return low, self.cutoff_features(normalized[:, None])

    def denoise(
        self, x: jax.Array, c_noise: jax.Array, tokens: jax.Array, mask: jax.Array, *,
        low: jax.Array | None = None, cutoff: jax.Array | None = None,
        hidden_layer: int | None = None, normalize_summaries: bool = False,
    ) -> DiTOutput:
        """One DiT forward on already-encoded text tokens (task=sr: plus the low band and cutoff)."""
        input_concat, global_cond = self.sr_condition(low, cutoff)
        return self.dit(x, c_noise, cross_tokens=tokens, cross_mask=mask, global_cond=global_cond,
                        input_concat=input_concat, hidden_layer=hidden_layer,
                        normalize_summaries=normalize_summaries)

    def __call__(self, x: jax.Array, c_noise: jax.Array, text: jax.Array, text_mask: jax.Array,
                 keep_cond: jax.Array | None = None, *, low: jax.Array | None = None,
                 cutoff: jax.Array | None = None, hidden_layer: int | None = None,
                 normalize_summaries: bool = False) -> DiTOutput:
        """Full forward; ``keep_cond`` [B] (0/1) zeroes the text condition of dropped examples
        (the SR condition is never dropped)."""
        tokens, mask = self.encode_text(text, text_mask)
        if keep_cond is not None:
            tokens = tokens * keep_cond[:, None, None].astype(tokens.dtype)
        return self.denoise(x, c_noise, tokens, mask, low=low, cutoff=cutoff, hidden_layer=hidden_layer,
                            normalize_summaries=normalize_summaries)


def null_tokens(tokens: jax.Array) -> jax.Array:
    """The unconditional (dropped) text condition: zero embeddings, mask unchanged."""
    return jnp.zeros_like(tokens)
