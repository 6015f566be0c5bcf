"""The T5 text encoder in Flax NNX, matching transformers 5 `T5EncoderModel.forward` (encoder stack only).

Inference only (dropout ignored). Module and attribute names mirror transformers, so a flattened NNX
state path maps to a transformers state-dict key mechanically (see `convert_t5.torch_key`): join the
path with "." and rename `kernel`/`embedding` to `weight` (kernels are `nnx.Linear` [in, out] <- torch
[out, in], transposed). `shared` is the token embedding (transformers ties `encoder.embed_tokens` to it).

Layout (T5 v1.0 / t5-base and the v1.1 gated variant, as the config's `feed_forward_proj` says): token
embedding; `num_layers` blocks of [RMS norm -> self-attention without 1/sqrt(d) scaling, plus the
relative position bias computed by the first block only and reused by every block, plus the padding
mask as an additive bias] and [RMS norm -> feed-forward: `act(wi x) -> wo` or `act(wi_0 x) * wi_1 x -> wo`];
a final RMS norm. No biases anywhere.

Compute dtype (`T5Config.dtype`, float32 by default): matmul inputs and weights in that dtype with
float32 accumulation and float32 outputs; the residual stream, RMS norms, position bias, softmax and the
activation are float32. In float16 every matmul input is clipped to the finite float16 range before the
cast (T5 v1.0 is known to overflow in the feed-forward of later layers; transformers clamps its float16
residual stream instead, here the residual stream stays float32), so the output stays finite.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

_GELU_TANH = functools.partial(jax.nn.gelu, approximate=True)
# transformers ACT2FN names that the feed-forward may use (`feed_forward_proj` = "[gated-]<name>").
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu, "gelu": functools.partial(jax.nn.gelu, approximate=False), "gelu_new": _GELU_TANH,
    "gelu_pytorch_tanh": _GELU_TANH, "silu": jax.nn.silu, "swish": jax.nn.silu}
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class T5Config:
    """The transformers `T5Config` fields the encoder forward depends on (same names and defaults),
    plus the compute `dtype` ("float32", "bfloat16" or "float16")."""

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"
    dtype: str = "float32"

    def __post_init__(self):
        act = self.feed_forward_proj.split("-")
        if len(act) > 2 or (len(act) == 2 and act[0] != "gated") or act[-1] not in ACTIVATIONS:
            raise ValueError(f"feed_forward_proj={self.feed_forward_proj!r} not supported "
                             f"(one of {sorted(ACTIVATIONS)}, optionally 'gated-' before it)")
        if self.dtype not in COMPUTE_DTYPES:
            raise ValueError(f"dtype={self.dtype!r} not supported (one of {COMPUTE_DTYPES})")
        for key in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                    "relative_attention_num_buckets", "relative_attention_max_distance"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key}={getattr(self, key)!r} must be a positive integer")

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def dense_act_fn(self) -> str:
        """transformers' activation name: "gated-gelu" means the tanh approximation ("gelu_new")."""
        return "gelu_new" if self.feed_forward_proj == "gated-gelu" else self.feed_forward_proj.split("-")[-1]


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bidirectional `T5Attention._relative_position_bucket(key - query)` [L, L] int32 (float32 log, as torch)."""
    rel = np.arange(length)[None, :] - np.arange(length)[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).astype(np.int64) * half
    rel = np.abs(rel)
    max_exact = half // 2
    with np.errstate(divide="ignore"):  # log(0) on the is_small branch, discarded by the where
        large = np.log(rel.astype(np.float32) / np.float32(max_exact))
    large = large / np.float32(math.log(max_distance / max_exact)) * np.float32(half - max_exact)
    large = max_exact + np.nan_to_num(large, neginf=0.0).astype(np.int64)  # truncation, as torch .long()
    large = np.minimum(large, half - 1)
    return (buckets + np.where(rel < max_exact, rel, large)).astype(np.int32)


def _linear(d_in: int, d_out: int, cfg: T5Config, rngs: nnx.Rngs) -> nnx.Linear:
    """Bias-free Linear: inputs/weights in the compute dtype, float32 accumulation and output."""
    dtype = jnp.dtype(cfg.dtype)
    precision = jax.lax.Precision.HIGHEST if dtype == jnp.float32 else None  # no TF32 in the fp32 path
    return nnx.Linear(d_in, d_out, use_bias=False, dtype=dtype, param_dtype=dtype, precision=precision,
                      preferred_element_type=jnp.float32, promote_dtype=_promote_to_compute, rngs=rngs)


def _to_compute(x: jax.Array, dtype: Any) -> jax.Array:
    """float32 activation -> compute dtype; float16 is clipped to its finite range first (no inf)."""
    if dtype == jnp.float16:
        limit = float(jnp.finfo(jnp.float16).max)
        x = jnp.clip(x, -limit, limit)
    return x.astype(dtype)


def _promote_to_compute(args: tuple, *, dtype: Any = None, inexact: bool = True) -> tuple:
    """`nnx.Linear`'s dtype promotion, through `_to_compute` (inputs and kernel to the compute dtype)."""
    return tuple(None if a is None else _to_compute(jnp.asarray(a), dtype) for a in args)


class T5LayerNorm(nnx.Module):
    """RMS norm: x / sqrt(mean(x^2) + eps) * weight, in float32 (no mean subtraction, no bias)."""

    def __init__(self, dim: int, eps: float):
        self.weight = nnx.Param(jnp.ones((dim,), jnp.float32))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        variance = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        return self.weight[...] * (x * jax.lax.rsqrt(variance + self.eps))


class T5Attention(nnx.Module):
    """Multi-head self-attention, unscaled scores plus (position bias + key padding bias)."""

    def __init__(self, cfg: T5Config, *, has_relative_attention_bias: bool, rngs: nnx.Rngs):
        inner = cfg.num_heads * cfg.d_kv
        self.num_heads, self.d_kv, self.dtype = cfg.num_heads, cfg.d_kv, jnp.dtype(cfg.dtype)
        self.q, self.k, self.v = (_linear(cfg.d_model, inner, cfg, rngs) for _ in range(3))
        self.o = _linear(inner, cfg.d_model, cfg, rngs)
        self.num_buckets = cfg.relative_attention_num_buckets
        self.max_distance = cfg.relative_attention_max_distance
        self.relative_attention_bias = (nnx.Embed(self.num_buckets, cfg.num_heads, rngs=rngs)
                                        if has_relative_attention_bias else None)

    def compute_bias(self, length: int) -> jax.Array:
        """Relative position bias [H, L, L] float32 (first block only)."""
        buckets = relative_position_buckets(length, self.num_buckets, self.max_distance)
        return jnp.transpose(self.relative_attention_bias(jnp.asarray(buckets)), (2, 0, 1))

    def __call__(self, x: jax.Array, key_bias: jax.Array,
                 position_bias: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        b, t, _ = x.shape
        heads = lambda y: _to_compute(y.reshape(b, t, self.num_heads, self.d_kv), self.dtype)
        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        if position_bias is None:
            position_bias = self.compute_bias(t)
        precision = jax.lax.Precision.HIGHEST if self.dtype == jnp.float32 else None
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=precision, preferred_element_type=jnp.float32)
        weights = jax.nn.softmax(scores + position_bias[None] + key_bias, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(self.dtype), v, precision=precision,
                         preferred_element_type=jnp.float32)
        return self.o(out.reshape(b, t, -1)), position_bias


class T5LayerSelfAttention(nnx.Module):
    """x + SelfAttention(layer_norm(x))."""

    def __init__(self, cfg: T5Config, *, has_relative_attention_bias: bool, rngs: nnx.Rngs):
        self.SelfAttention = T5Attention(cfg, has_relative_attention_bias=has_relative_attention_bias, rngs=rngs)
        self.layer_norm = T5LayerNorm(cfg.d_model, cfg.layer_norm_epsilon)

    def __call__(self, x: jax.Array, key_bias: jax.Array,
                 position_bias: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        attn, position_bias = self.SelfAttention(self.layer_norm(x), key_bias, position_bias)
        return x + attn, position_bias


class T5DenseActDense(nnx.Module):
    """wo(act(wi x)) (T5 v1.0)."""

    def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
        self.wi = _linear(cfg.d_model, cfg.d_ff, cfg, rngs)
        self.wo = _linear(cfg.d_ff, cfg.d_model, cfg, rngs)
        self.act_name = cfg.dense_act_fn

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.wo(ACTIVATIONS[self.act_name](self.wi(x)))


class T5DenseGatedActDense(nnx.Module):
    """wo(act(wi_0 x) * wi_1 x) (T5 v1.1: gelu_new)."""

    def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
        self.wi_0 = _linear(cfg.d_model, cfg.d_ff, cfg, rngs)
        self.wi_1 = _linear(cfg.d_model, cfg.d_ff, cfg, rngs)
        self.wo = _linear(cfg.d_ff, cfg.d_model, cfg, rngs)
        self.act_name = cfg.dense_act_fn

    def __call__(self, x: jax.Array) -> jax.Array:
        hidden = ACTIVATIONS[self.act_name](self.wi_0(x)) * self.wi_1(x)
        return self.wo(hidden)


class T5LayerFF(nnx.Module):
    """x + DenseReluDense(layer_norm(x)) (transformers keeps the name for the gated variant too)."""

    def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
        dense = T5DenseGatedActDense if cfg.is_gated else T5DenseActDense
        self.DenseReluDense = dense(cfg, rngs=rngs)
        self.layer_norm = T5LayerNorm(cfg.d_model, cfg.layer_norm_epsilon)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.DenseReluDense(self.layer_norm(x))


class T5Block(nnx.Module):
    """`layer` = [self-attention sublayer, feed-forward sublayer]."""

    def __init__(self, cfg: T5Config, *, has_relative_attention_bias: bool, rngs: nnx.Rngs):
        self.layer = nnx.List([
            T5LayerSelfAttention(cfg, has_relative_attention_bias=has_relative_attention_bias, rngs=rngs),
            T5LayerFF(cfg, rngs=rngs)])

    def __call__(self, x: jax.Array, key_bias: jax.Array,
                 position_bias: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        x, position_bias = self.layer[0](x, key_bias, position_bias)
        return self.layer[1](x), position_bias


class T5Stack(nnx.Module):
    """Blocks (the first one computes the shared position bias) + final RMS norm."""

    def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
        self.block = nnx.List([T5Block(cfg, has_relative_attention_bias=(i == 0), rngs=rngs)
                               for i in range(cfg.num_layers)])
        self.final_layer_norm = T5LayerNorm(cfg.d_model, cfg.layer_norm_epsilon)

    def __call__(self, x: jax.Array, key_bias: jax.Array) -> jax.Array:
        position_bias = None
        for block in self.block:
            x, position_bias = block(x, key_bias, position_bias)
        return self.final_layer_norm(x)


class T5Encoder(nnx.Module):
    """`T5EncoderModel` forward: ids int32 [B, L], mask bool [B, L] (True = real token) ->
    last_hidden_state float32 [B, L, d_model].

    Padded positions are masked as attention keys only; their outputs are finite but not zeroed (the
    caller multiplies by the mask, as stable-audio-tools' T5Conditioner does). Pure and jit-able: split
    it and `jax.jit` a function of (graphdef, state, ids, mask) (see `convert_t5.t5_forward`).
    """

    def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
        self.cfg = cfg
        dtype = jnp.dtype(cfg.dtype)
        self.shared = nnx.Embed(cfg.vocab_size, cfg.d_model, dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.encoder = T5Stack(cfg, rngs=rngs)

    def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
        x = self.shared(ids.astype(jnp.int32)).astype(jnp.float32)
        key_bias = jnp.where(mask.astype(bool), 0.0, jnp.finfo(jnp.float32).min)[:, None, None, :]
        return self.encoder(x, key_bias)
