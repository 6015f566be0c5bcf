"""Scaled dot-product attention with a selectable kernel: XLA, cuDNN fused attention, Pallas splash.

Layout as `jax.nn.dot_product_attention`: q [B, T, N, Dh], k and v [B, S, K, Dh] (K divides N:
grouped heads, q head n reads kv head n // (N / K), torch `repeat_interleave`); the optional key mask
[B, S] is True for keys to attend to. A query row with no valid key returns zeros (not NaN).

Kernels (``model.attention``; :func:`resolve` picks one for ``auto`` and refuses an impossible one):

- ``xla``: `jax.nn.dot_product_attention(implementation="xla")`, any backend, any dtype;
- ``cudnn``: cuDNN's fused flash attention (NVIDIA GPU, bf16/fp16, head size a multiple of 8 up to
  128). The key mask goes in as sequence lengths (the kernel has no boolean mask): valid keys are
  moved to the front first (attention is invariant to the order of keys; cross-attention has no
  rotary), so any mask, not only a padded suffix, is honoured. The lowered HLO holds the custom call
  ``__cudnn$fmha...`` (:func:`uses_cudnn`).
- ``splash``: the Pallas TPU splash kernel (TPU; head size a multiple of 128). Sequences are padded to
  its block size and the padding (and the key mask) goes in as segment ids. ``interpret=True`` runs
  the kernel in Pallas' interpreter on any backend (tests).

Softmax and the logits are float32 in every kernel; the output has q's dtype.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp

Implementation = Literal["xla", "cudnn", "splash"]
CHOICES = ("auto", "xla", "cudnn", "splash")
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
CUDNN_MAX_HEAD_DIM = 128
SPLASH_BLOCK = 128  # the splash kernel's block size (q and kv); sequences are padded to a multiple
SPLASH_HEAD_MULTIPLE = 128


class AttentionUnavailable(ValueError):
    """An explicit ``model.attention`` that the backend, dtype or shapes cannot honour."""


def _cudnn_problem(platform: str, dtype, head_dim: int) -> str | None:
    if platform not in ("gpu", "cuda"):
        return f"needs an NVIDIA GPU (this backend: {platform})"
    if jnp.dtype(dtype) not in [jnp.dtype(d) for d in CUDNN_DTYPES]:
        return f"needs bfloat16 or float16 compute (precision.compute gives {jnp.dtype(dtype).name})"
    if head_dim % 8 or head_dim > CUDNN_MAX_HEAD_DIM:
        return f"needs a head size that is a multiple of 8 up to {CUDNN_MAX_HEAD_DIM} (got {head_dim})"
    return None


def _splash_problem(platform: str, head_dim: int) -> str | None:
    if platform != "tpu":
        return f"needs a TPU (this backend: {platform})"
    if head_dim % SPLASH_HEAD_MULTIPLE:
        return f"needs a head size that is a multiple of {SPLASH_HEAD_MULTIPLE} (got {head_dim})"
    return None


def resolve(choice: str, *, platform: str, dtype, head_dim: int) -> Implementation:
    """The kernel for ``model.attention=choice`` on ``platform`` (jax.default_backend()) at this compute
    dtype and head size. ``auto``: cuDNN on an NVIDIA GPU when allowed, splash on a TPU when allowed,
    XLA otherwise. An explicit kernel that cannot run raises :class:`AttentionUnavailable` (one line)."""
    if choice == "auto":
        if _cudnn_problem(platform, dtype, head_dim) is None:
            return "cudnn"
        if _splash_problem(platform, head_dim) is None:
            return "splash"
        return "xla"
    if choice == "xla":
        return "xla"
    problem = {"cudnn": lambda: _cudnn_problem(platform, dtype, head_dim),
               "splash": lambda: _splash_problem(platform, head_dim)}.get(choice)
    if problem is None:
        raise AttentionUnavailable(f"model.attention={choice!r} is not one of {', '.join(CHOICES)}")
    if (why := problem()) is not None:
        raise AttentionUnavailable(f"model.attention={choice} {why}; use model.attention=auto or xla")
    return choice  # type: ignore[return-value]


def pack_valid_keys(k: jax.Array, v: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Move each example's valid keys (``mask`` [B, S] True) to the front, in order: (k, v, lengths
    [B] int32), so that a kernel taking key sequence lengths honours any key mask."""
    order = jnp.argsort(~mask, axis=1, stable=True)  # valid first, each group in its original order
    take = functools.partial(jnp.take_along_axis, indices=order[:, :, None, None], axis=1)
    return take(k), take(v), mask.sum(axis=1).astype(jnp.int32)


def _zero_empty_rows(out: jax.Array, mask: jax.Array | None) -> jax.Array:
    if mask is None:
        return out
    return jnp.where(jnp.any(mask, axis=-1)[:, None, None, None], out, jnp.zeros((), out.dtype))


def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None) -> jax.Array:
    """XLA's attention (any backend)."""
    bool_mask = None if mask is None else mask[:, None, None, :]  # [B, 1 (heads), 1 (T), S]
    return jax.nn.dot_product_attention(q, k, v, mask=bool_mask, implementation="xla")


def cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None,
                    implementation: str = "cudnn") -> jax.Array:
    """cuDNN fused attention; the key mask as sequence lengths after :func:`pack_valid_keys`.
    (``implementation="xla"`` runs the same length-based formulation through XLA: tests on CPU.)"""
    if mask is None:
        return jax.nn.dot_product_attention(q, k, v, implementation=implementation)
    k, v, lengths = pack_valid_keys(k, v, mask)
    return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths, implementation=implementation)


def _pad_axis1(x: jax.Array, length: int) -> jax.Array:
    return jnp.pad(x, [(0, 0), (0, length - x.shape[1])] + [(0, 0)] * (x.ndim - 2))


def _splash_kernel(num_heads: int, q_len: int, kv_len: int, interpret: bool):
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    # built at each trace (as MaxText does): a kernel cached across traces would hold leaked tracers
    mask = sm.MultiHeadMask([sm.FullMask((q_len, kv_len)) for _ in range(num_heads)])
    block = dict(block_q=SPLASH_BLOCK, block_kv=SPLASH_BLOCK, block_kv_compute=SPLASH_BLOCK)
    sizes = sk.BlockSizes(**block, block_q_dkv=SPLASH_BLOCK, block_kv_dkv=SPLASH_BLOCK,
                          block_kv_dkv_compute=SPLASH_BLOCK, block_q_dq=SPLASH_BLOCK, block_kv_dq=SPLASH_BLOCK)
    return sk.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, *,
                     interpret: bool = False) -> jax.Array:
    """Pallas splash attention (TPU; ``interpret``: the Pallas interpreter, any backend). Sequences are
    padded to a multiple of the block; padded and masked keys get segment 0, which no query has."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk

    b, t, n, dh = q.shape
    s, kv_heads = k.shape[1], k.shape[2]
    if kv_heads != n:  # grouped heads: repeat kv heads as torch repeat_interleave
        k, v = (jnp.repeat(a, n // kv_heads, axis=2) for a in (k, v))
    tp, sp = (-(-length // SPLASH_BLOCK) * SPLASH_BLOCK for length in (t, s))
    valid = jnp.ones((b, s), bool) if mask is None else mask
    kv_segment = _pad_axis1(valid, sp).astype(jnp.int32)  # 1 = attend, 0 = padding or masked
    q_segment = jnp.ones((b, tp), jnp.int32)
    scale = jnp.asarray(dh ** -0.5, q.dtype)
    heads_first = lambda x, length: _pad_axis1(x, length).transpose(0, 2, 1, 3)  # [B, N, L, Dh]
    kernel = _splash_kernel(n, tp, sp, interpret)
    out = jax.vmap(kernel)(heads_first(q * scale, tp), heads_first(k, sp), heads_first(v, sp),
                           segment_ids=sk.SegmentIds(q=q_segment, kv=kv_segment))
    return out.transpose(0, 2, 1, 3)[:, :t].astype(q.dtype)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None, *,
              implementation: Implementation = "xla", interpret: bool = False) -> jax.Array:
    """softmax(q kᵀ / √Dh) v over the valid keys, by the given kernel (see the module docstring)."""
    if implementation == "xla":
        out = xla_attention(q, k, v, mask)
    elif implementation == "cudnn":
        out = cudnn_attention(q, k, v, mask)
    elif implementation == "splash":
        out = splash_attention(q, k, v, mask, interpret=interpret)
    else:
        raise ValueError(f"attention implementation {implementation!r} is not one of xla, cudnn, splash")
    return _zero_empty_rows(out, mask)


def uses_cudnn(hlo_text: str) -> bool:
    """Whether lowered/compiled HLO text calls cuDNN's fused attention."""
    return "__cudnn$fmha" in hlo_text

