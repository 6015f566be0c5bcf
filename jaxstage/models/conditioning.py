"""Conditioning routed by id, as stable-audio-tools 0.0.19's conditioned diffusion wrapper does it.

Every conditioner maps its inputs to ``(embeddings [B, L, D], mask [B, L] bool)``:
- the text conditioner, id ``prompt`` (``models/text.py``: the learned encoder over hash tokens, or
  precomputed embeddings such as T5's), L tokens;
- a :class:`NumberConditioner` per number id (``conditioning.numbers``, e.g. ``seconds_start``,
  ``seconds_total``), one token: clamp to [min, max], normalize to [0, 1], learned Fourier features,
  linear (stable-audio-tools' ``NumberConditioner`` + ``NumberEmbedder``).

:func:`route` assembles them for the DiT (``get_conditioning_inputs``):
- ``cross_attention_ids``: concatenated along the token axis -> cross-attention tokens and mask;
- ``global_ids``: concatenated along channels ([B, 1, D] each -> [B, len(ids) * D]) -> the global
  condition (added to the timestep embedding);
- ``prepend_ids``: concatenated along the token axis -> tokens prepended to the DiT's input sequence.

Classifier-free guidance nulls the cross-attention and prepend conditions (zeros, masks kept) and
never the global one (:func:`null_condition`), as stable-audio-tools' DiT does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx, struct

from jaxstage.models.transformer import _torch_uniform

PROMPT_ID = "prompt"  # the text conditioner's id (stable-audio-tools' name for it)
NUMBER_FEATURES = 256  # stable-audio-tools' NumberEmbedder(dim=256): 128 learned frequencies


@struct.dataclass
class Condition:
    """The DiT's conditioning after routing; a field is None when no id routes to it."""

    cross: jax.Array | None = None  # [B, L, D] cross-attention tokens
    cross_mask: jax.Array | None = None  # [B, L] bool, True = real token
    global_cond: jax.Array | None = None  # [B, G]
    prepend: jax.Array | None = None  # [B, P, D] tokens prepended to the sequence
    prepend_mask: jax.Array | None = None  # [B, P] bool


@dataclass(frozen=True)
class Routing:
    """Which conditioner ids feed which DiT input (static)."""

    cross_attention_ids: tuple[str, ...] = (PROMPT_ID,)
    global_ids: tuple[str, ...] = ()
    prepend_ids: tuple[str, ...] = ()

    @property
    def used_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.cross_attention_ids + self.global_ids + self.prepend_ids))


class NumberConditioner(nnx.Module):
    """A float per example -> one token [B, 1, D] (stable-audio-tools' ``NumberConditioner``).

    ``x = (clamp(v, min, max) - min) / (max - min)``; ``f = 2π x w`` with learned ``w`` [features/2]
    (randn init); ``out = Linear(cat[x, sin f, cos f])``. Paths mirror the torch keys
    ``embedder.embedding.0.weights`` and ``embedder.embedding.1.{weight,bias}``.
    """

    def __init__(self, output_dim: int, min_val: float, max_val: float, *, features: int = NUMBER_FEATURES,
                 rngs: nnx.Rngs):
        if not max_val > min_val:
            raise ValueError(f"number conditioner needs max_val > min_val, got [{min_val}, {max_val}]")
        if features % 2:
            raise ValueError(f"features must be even, got {features}")
        self.min_val = float(min_val)
        self.max_val = float(max_val)
        self.weights = nnx.Param(jax.random.normal(rngs.params(), (features // 2,), jnp.float32))
        init = _torch_uniform(features + 1)  # torch nn.Linear's default init
        self.linear = nnx.Linear(features + 1, output_dim, kernel_init=init, bias_init=init, rngs=rngs)

    def __call__(self, values: jax.Array) -> tuple[jax.Array, jax.Array]:
        """values [B] -> (embeddings float32 [B, 1, D], mask [B, 1] all True)."""
        x = jnp.clip(jnp.asarray(values, jnp.float32), self.min_val, self.max_val)
        x = (x - self.min_val) / (self.max_val - self.min_val)
        freqs = x[:, None] * self.weights[...][None, :] * 2 * math.pi
        features = jnp.concatenate([x[:, None], jnp.sin(freqs), jnp.cos(freqs)], axis=-1)
        out = self.linear(features)[:, None, :].astype(jnp.float32)
        return out, jnp.ones(out.shape[:2], bool)


def _concat(parts: list[jax.Array], axis: int) -> jax.Array:
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=axis)


def route(outputs: dict[str, tuple[jax.Array, jax.Array]], routing: Routing) -> Condition:
    """Assemble the conditioners' outputs by id (see the module docstring); a missing id is a KeyError
    naming it."""
    def get(cid: str) -> tuple[jax.Array, jax.Array]:
        if cid not in outputs:
            raise KeyError(f"no conditioner with id {cid!r} (have {sorted(outputs)})")
        return outputs[cid]

    cond = {}
    if routing.cross_attention_ids:
        pairs = [get(i) for i in routing.cross_attention_ids]
        cond["cross"] = _concat([e for e, _ in pairs], 1)
        cond["cross_mask"] = _concat([m.astype(bool) for _, m in pairs], 1)
    if routing.global_ids:
        embeddings = [get(i)[0] for i in routing.global_ids]
        for cid, e in zip(routing.global_ids, embeddings):
            if e.shape[1] != 1:
                raise ValueError(f"global condition {cid!r} has {e.shape[1]} tokens; a global condition is one "
                                 f"token per example (a number conditioner)")
        cond["global_cond"] = _concat([e[:, 0] for e in embeddings], -1)
    if routing.prepend_ids:
        pairs = [get(i) for i in routing.prepend_ids]
        cond["prepend"] = _concat([e for e, _ in pairs], 1)
        cond["prepend_mask"] = _concat([m.astype(bool) for _, m in pairs], 1)
    return Condition(**cond)


def _scaled(x: jax.Array | None, keep: jax.Array) -> jax.Array | None:
    return None if x is None else x * keep.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)


def drop_condition(cond: Condition, keep_cross: jax.Array, keep_prepend: jax.Array | None = None) -> Condition:
    """Training dropout of the condition (stable-audio-tools' ``cfg_dropout_prob``): examples with
    ``keep_cross`` = 0 get zero cross-attention tokens, those with ``keep_prepend`` = 0 (default: the
    same draw) zero prepend tokens; masks and the global condition are kept."""
    keep_prepend = keep_cross if keep_prepend is None else keep_prepend
    return cond.replace(cross=_scaled(cond.cross, keep_cross), prepend=_scaled(cond.prepend, keep_prepend))


def null_condition(cond: Condition) -> Condition:
    """The unconditional branch of CFG: zero cross-attention and prepend tokens, masks unchanged, the
    global condition kept (stable-audio-tools 0.0.19's DiT)."""
    zeros = lambda x: None if x is None else jnp.zeros_like(x)  # noqa: E731
    return cond.replace(cross=zeros(cond.cross), prepend=zeros(cond.prepend))
