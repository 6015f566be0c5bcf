"""The conditioned denoiser network: conditioners routed by id + DiT, assembled from the config.

Conditioners (``models/conditioning.py``): the text conditioner, id ``prompt``, and one
``NumberConditioner`` per ``conditioning.numbers`` entry, routed to cross-attention, the global
condition or prepended tokens by ``conditioning.*_ids``.

``text.kind=learned``: hash-token ids go through the small learned TextEncoder (width text.width).
``text.kind=precomputed`` / ``t5``: the embeddings [B, L, text_dim] (precomputed, or computed by the
frozen T5 before the model) pass through unchanged; the DiT's ``to_cond_embed`` (a learned projection,
with ``model.project_cond_tokens``) maps them to its width. Number conditioners output ``text_dim``
(the learned encoder's ``text.width``) wide tokens, as stable-audio-tools' output_dim = cond_dim.

``task=sr``: the normalized codec features of the low band [B, T, C] are concatenated to the noisy
input as extra channels (the DiT's ``input_concat``), and the cutoff, as ``cutoff / (sample_rate / 2)``
through learned Fourier features (``sr.cutoff_features`` wide), is the DiT's global condition
(added to the timestep embedding; after the routed global conditions when there are any). Text
cross-attention stays (on the empty caption).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxstage.config import Config
from jaxstage.models.attention import resolve as resolve_attention
from jaxstage.models.conditioning import (
    PROMPT_ID, Condition, NumberConditioner, Routing, drop_condition, route,
)
from jaxstage.models.dit import DiffusionTransformer, DiTOutput, FourierFeatures
from jaxstage.models.text import make_text_conditioner
from jaxstage.precision import compute_dtype
from jaxstage.stage.guidance import Projector


class Denoiser(nnx.Module):
    """Conditioners routed by id -> a Stable Audio family DiT (+ the REPA projector)."""

    def __init__(self, cfg: Config, io_channels: int, *, ssl_dim: int = 0, text_dim: int = 0, rngs: nnx.Rngs):
        """``text_dim``: width of precomputed (or T5) text embeddings (required unless text.kind=learned)."""
        if cfg.text.kind != "learned":
            if text_dim <= 0:
                raise ValueError(f"text.kind={cfg.text.kind} needs the embedding width, got text_dim={text_dim}")
            self.text = make_text_conditioner("precomputed", width=text_dim)
            cond_dim = text_dim
        else:
            self.text = make_text_conditioner(
                "learned", width=cfg.text.width, vocab_size=cfg.text.vocab_size, depth=cfg.text.depth,
                num_heads=cfg.text.num_heads, max_length=cfg.data.text_max_length, rngs=rngs,
            )
            cond_dim = cfg.text.width
        c = cfg.conditioning
        self.routing = Routing(cross_attention_ids=c.cross_attention_ids, global_ids=c.global_ids,
                               prepend_ids=c.prepend_ids)
        self.dropout = tuple(c.dropout)
        self.cond_dropout = cfg.diffusion.cond_dropout
        # built after the text encoder, so that runs without numbers initialize exactly as before
        self.numbers = nnx.Dict({cid: NumberConditioner(cond_dim, low, high, rngs=rngs)
                                 for cid, low, high in c.numbers}) if c.numbers else None
        self.sr = cfg.task == "sr"
        self.nyquist = cfg.data.sample_rate / 2
        cutoff_dim = cfg.sr.cutoff_features if self.sr else 0
        self.cutoff_features = FourierFeatures(1, cutoff_dim, rngs=rngs) if self.sr else None
        # precision.compute (fp32 master weights either way) and the attention kernel for this backend
        dtype = compute_dtype(cfg.precision.compute)
        attention = resolve_attention(cfg.model.attention, platform=jax.default_backend(), dtype=dtype,
                                      head_dim=cfg.model.embed_dim // cfg.model.num_heads)
        self.dit = DiffusionTransformer(
            io_channels=io_channels, embed_dim=cfg.model.embed_dim, depth=cfg.model.depth,
            num_heads=cfg.model.num_heads, cond_token_dim=cond_dim,
            project_cond_tokens=cfg.model.project_cond_tokens,
            global_cond_type=cfg.model.global_cond_type, qk_norm=cfg.model.qk_norm,
            ff_mult=cfg.model.ff_mult, timestep_features_dim=cfg.model.timestep_features_dim,
            global_cond_dim=len(c.global_ids) * cond_dim + cutoff_dim, input_concat_dim=io_channels if self.sr else 0,
            prepend_cond_dim=cond_dim if c.prepend_ids else 0, use_cross_mask=cfg.model.cross_attn_mask,
            remat=cfg.model.remat, rngs=rngs, dtype=dtype, attention=attention,
        )
        # Mechanism 1's projector h_ψ (SPEC §3.3), present only when alignment is on.
        self.projector = (Projector(cfg.model.embed_dim, ssl_dim, cfg.guidance.hidden, rngs=rngs)
                          if ssl_dim else None)

    @property
    def number_ids(self) -> tuple[str, ...]:
        """The number conditioners' ids (each reads the batch key of that name)."""
        return () if self.numbers is None else tuple(self.numbers.keys())

    def encode_condition(self, text: jax.Array, text_mask: jax.Array, numbers: dict[str, jax.Array] | None = None,
                         keep: dict[str, jax.Array] | None = None) -> Condition:
        """Run every conditioner and route the outputs by id.

        text: token ids [B, L] (learned) or embeddings [B, L, D]; numbers: id -> values [B] for each
        number conditioner; keep: id -> [B] 0/1, per-conditioner training dropout (0 zeroes that
        conditioner's output for the example).
        """
        outputs = {PROMPT_ID: self.text(text, text_mask)}
        for cid in self.number_ids:
            if numbers is None or cid not in numbers:
                raise ValueError(f"the number conditioner {cid!r} needs its values (batch key {cid!r})")
            outputs[cid] = self.numbers[cid](numbers[cid])
        for cid, k in (keep or {}).items():
            embeddings, mask = outputs[cid]
            outputs[cid] = (embeddings * k[:, None, None].astype(embeddings.dtype), mask)
        return route(outputs, self.routing)

    def sr_condition(self, low: jax.Array | None, cutoff: jax.Array | None
                     ) -> tuple[jax.Array | None, jax.Array | None]:
        """(input_concat, cutoff features) of the DiT: SR needs ``low`` [B, T, C] (normalized codec
        features of the low band) and ``cutoff`` [B] in Hz; T2A takes neither."""
        if not self.sr:
            if low is not None or cutoff is not None:
                raise ValueError("low/cutoff given but the model was built for task=t2a")
            return None, None
        if low is None or cutoff is None:
            raise ValueError("task=sr needs the low-band features and the cutoff")
        normalized = cutoff.astype(jnp.float32) / self.nyquist
        return low, self.cutoff_features(normalized[:, None])

    def denoise(
        self, x: jax.Array, c_noise: jax.Array, cond: Condition, *,
        low: jax.Array | None = None, cutoff: jax.Array | None = None,
        hidden_layer: int | None = None, normalize_summaries: bool = False,
    ) -> DiTOutput:
        """One DiT forward on an already-encoded condition (task=sr: plus the low band and cutoff)."""
        input_concat, cutoff_cond = self.sr_condition(low, cutoff)
        global_cond = cond.global_cond
        if cutoff_cond is not None:
            global_cond = cutoff_cond if global_cond is None else jnp.concatenate([global_cond, cutoff_cond], -1)
        return self.dit(x, c_noise, cross_tokens=cond.cross, cross_mask=cond.cross_mask, global_cond=global_cond,
                        input_concat=input_concat, prepend_cond=cond.prepend, hidden_layer=hidden_layer,
                        normalize_summaries=normalize_summaries)

    def __call__(self, x: jax.Array, c_noise: jax.Array, text: jax.Array, text_mask: jax.Array,
                 keep_cond: jax.Array | None = None, *, numbers: dict[str, jax.Array] | None = None,
                 drop_key: jax.Array | None = None, low: jax.Array | None = None,
                 cutoff: jax.Array | None = None, hidden_layer: int | None = None,
                 normalize_summaries: bool = False) -> DiTOutput:
        """Full forward. Training dropout: ``keep_cond`` [B] (0/1) nulls the cross-attention condition
        of dropped examples (prepend tokens: an independent draw from ``drop_key``), and
        ``conditioning.dropout`` nulls single conditioners (draws from ``drop_key``); the global
        and SR conditions are never dropped."""
        keep = prepend_keep = None
        if keep_cond is not None and (self.dropout or self.routing.prepend_ids):
            if drop_key is None:
                raise ValueError("conditioning.dropout / prepend conditions need drop_key for their draws")
            batch = keep_cond.shape[0]
            keep = {cid: jax.random.bernoulli(jax.random.fold_in(drop_key, i + 1), 1.0 - p, (batch,))
                    for i, (cid, p) in enumerate(self.dropout)}
            if self.routing.prepend_ids:
                prepend_keep = jax.random.bernoulli(jax.random.fold_in(drop_key, 0), 1.0 - self.cond_dropout, (batch,))
        cond = self.encode_condition(text, text_mask, numbers, keep)
        if keep_cond is not None:
            cond = drop_condition(cond, keep_cond, prepend_keep)
        return self.denoise(x, c_noise, cond, low=low, cutoff=cutoff, hidden_layer=hidden_layer,
                            normalize_summaries=normalize_summaries)
