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
import numpy as np

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


# ----------------------------------------------------------------------------- XLA:CPU formulation
# Heads-first arrays [B, K, M, D] (K: kv heads; a group's G query heads stacked along M = G·T). Every
# product below is a dot_general with the two batch dimensions leading and one contracting dimension,
# written so that XLA:CPU never contracts the leading (row) axis of a large operand: that "TN" form
# (pᵀ·dO, dSᵀ·q) runs ~2x slower there than the plain forms, so it is computed as the small product
# (dOᵀ·p, [D, S]) and its result transposed.

def _dot_nt(a: jax.Array, b: jax.Array) -> jax.Array:
    """[B, K, M, D] x [B, K, N, D] -> [B, K, M, N] (float32), a·bᵀ."""
    return jax.lax.dot_general(a, b, (((3,), (3,)), ((0, 1), (0, 1))), preferred_element_type=jnp.float32)


def _dot_nn(a: jax.Array, b: jax.Array) -> jax.Array:
    """[B, K, M, N] x [B, K, N, D] -> [B, K, M, D] (float32), a·b."""
    return jax.lax.dot_general(a, b, (((3,), (2,)), ((0, 1), (0, 1))), preferred_element_type=jnp.float32)


def _dot_tn(a: jax.Array, b: jax.Array) -> jax.Array:
    """[B, K, M, N] x [B, K, M, D] -> [B, K, N, D] (float32), aᵀ·b computed as (bᵀ·a)ᵀ."""
    bt_a = jax.lax.dot_general(b, a, (((2,), (2,)), ((0, 1), (0, 1))), preferred_element_type=jnp.float32)
    return jnp.swapaxes(bt_a, 2, 3)


def _large_negative() -> jax.Array:
    return jnp.asarray(-0.7 * float(jnp.finfo(jnp.float32).max), jnp.float32)  # as jax.nn's XLA path


def _heads_first_forward(q, k, v, valid):
    """q [B, K, M, Dh], k and v [B, K, S, Dh], valid [B, 1, 1, S] bool or None -> (out [B, K, M, Dh] in
    q's dtype, exp(logits - rowmax) [B, K, M, S] float32, its row sums [B, K, M, 1])."""
    logits = _dot_nt(q, k) * jnp.float32(q.shape[-1] ** -0.5)
    if valid is not None:
        logits = jnp.where(valid, logits, _large_negative())
    e = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
    rowsum = jnp.sum(e, axis=-1, keepdims=True)
    out = _dot_nn(e.astype(v.dtype), v) / rowsum  # normalise the [M, Dh] output, not the [M, S] weights
    return out.astype(q.dtype), e, rowsum


@jax.custom_vjp
def _heads_first_attention(q, k, v, valid):
    return _heads_first_forward(q, k, v, valid)[0]


def _heads_first_fwd(q, k, v, valid):
    out, e, rowsum = _heads_first_forward(q, k, v, valid)
    return out, (q, k, v, valid, out, e, rowsum)


def _heads_first_bwd(residuals, d_out):
    q, k, v, valid, out, e, rowsum = residuals
    p = e / rowsum
    dp = _dot_nt(d_out, v)
    dv = _dot_tn(p.astype(d_out.dtype), d_out)
    delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
    ds = p * (dp - delta) * jnp.float32(q.shape[-1] ** -0.5)
    if valid is not None:  # masked logits get no gradient (matters only for a row with no valid key)
        ds = jnp.where(valid, ds, 0.0)
    dq = _dot_nn(ds.astype(k.dtype), k)
    dk = _dot_tn(ds.astype(q.dtype), q)
    d_valid = None if valid is None else np.zeros(valid.shape, jax.dtypes.float0)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), d_valid


_heads_first_attention.defvjp(_heads_first_fwd, _heads_first_bwd)


def cpu_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None) -> jax.Array:
    """The same attention as `jax.nn.dot_product_attention` (float32 logits and softmax with the row
    maximum subtracted, masked logits at jax's large negative value, so a row with no valid key
    averages all values as there), laid out for XLA:CPU: heads first, each kv head's query group
    stacked along the rows, and a `custom_vjp` whose backward is four well-shaped products
    (flash-attention's dS = P ∘ (dP − rowsum(dO ∘ O))) instead of autodiff's transposes."""
    b, t, n, dh = q.shape
    kv_heads = k.shape[2]
    g = n // kv_heads
    qh = q.reshape(b, t, kv_heads, g, dh).transpose(0, 2, 3, 1, 4).reshape(b, kv_heads, g * t, dh)
    kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, S, Dh]
    valid = None if mask is None else mask[:, None, None, :]  # [B, 1, 1, S]
    out = _heads_first_attention(qh, kh, vh, valid)  # [B, K, G·T, Dh]
    return out.reshape(b, kv_heads, g, t, dh).transpose(0, 3, 1, 2, 4).reshape(b, t, n, dh)


def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None) -> jax.Array:
    """XLA's attention (any backend).

    On the CPU backend (``jax.default_backend() == "cpu"``) this is :func:`cpu_attention`: XLA:CPU
    runs `jax.nn.dot_product_attention`'s formulation (einsums in the [B, T, N, Dh] layout, autodiff
    backward with products that contract the row axis) at ~3x torch's fused SDPA time. Measured on
    this project's 2-core CPU VM (shared, medians of interleaved runs, forward + backward of q, k, v,
    8 x 257 tokens x 4 heads x 64): ~40 ms against ~90-120 ms for `jax.nn.dot_product_attention`
    (docs/benchmarks.md). Elsewhere (GPU, TPU) it is `jax.nn.dot_product_attention(implementation=
    "xla")` unchanged: XLA's GPU/TPU compilers pick their own layouts, and no accelerator was lent to
    measure the CPU formulation there.
    """
    if jax.default_backend() == "cpu":
        return cpu_attention(q, k, v, mask)
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

