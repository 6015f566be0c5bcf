"""Transformer pieces of the Stable Audio DiT, mirroring stable-audio-tools 0.0.19 `transformer.py`.

Channels-last (`[B, T, D]`). Attribute names follow the PyTorch modules so that a flattened NNX state
path maps to a PyTorch state-dict key mechanically: join the path with "." and rename `kernel` to
`weight`, transposing by reversing its axes (`nnx.Linear` [in, out] -> torch [out, in]; 1x1 conv
[1, in, out] -> torch [out, in, 1]). Every other leaf (`gamma`, `beta`, `weight`, `bias`, `inv_freq`,
`to_scale_shift_gate`) keeps its name and layout. Non-trainable torch buffers are `Buffer`
variables (not `nnx.Param`), so `nnx.Param` filters (optimizer, `count_params`) skip them.

Sharding: kernels carry logical axis names in the variable metadata key `out_sharding` (flax 0.12;
`sharding`/`sharding_names` are deprecated aliases), set with `nnx.with_partitioning(...,
eager_sharding=False)` so building a model needs no mesh. Names: `"embed"` (model width),
`"heads"` (attention q/k/v width, num_heads x dim_heads), `"mlp"` (feed-forward and conditioning-MLP
hidden width) and `None` (small io/conditioning dims, replicated). 1-D parameters are unannotated
(replicated). Map names to mesh axes with `nnx.logical_axis_rules(rules)` + `nnx.get_partition_spec`
/ `nnx.get_named_sharding`, e.g. rules `(("embed", "fsdp"), ("heads", "tensor"), ("mlp", "tensor"))`.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Literal

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from jaxstage.models.attention import Implementation, attention

LAYER_NORM_EPS = 1e-5  # stable-audio-tools LayerNorm default
QK_NORM_EPS = 1e-6  # nn.LayerNorm(dim_heads, eps=1e-6) used for qk_norm="ln"
L2_NORM_EPS = 1e-12  # torch F.normalize default
ROTARY_BASE = 10000.0
ROTARY_MIN_DIM = 32  # ContinuousTransformer: RotaryEmbedding(max(dim_heads // 2, 32))
ADALN_CHUNKS = 6  # scale/shift/gate for self-attention and feed-forward

QKNorm = Literal["none", "ln", "l2"]
Axes = tuple[str | None, ...]


class Buffer(nnx.Variable):
    """A non-trainable torch buffer kept in the state for a one-to-one state-dict mapping."""


# ----------------------------------------------------------------------------- init helpers


def _torch_uniform(fan_in: int):
    """torch nn.Linear/Conv default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = fan_in**-0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class FlatLinear(nnx.Linear):
    """`nnx.Linear` applied to a 2-D view of its input (same parameters and result).

    XLA:CPU computes the weight gradient of a [B, T, D] x [D, F] dot_general about 2x slower than
    that of the equivalent [B·T, D] x [D, F] matmul; flattening costs nothing on accelerators.
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        lead = x.shape[:-1]
        y = super().__call__(x.reshape(-1, x.shape[-1]))
        return y.reshape(*lead, y.shape[-1])


class FlatConv1x1(nnx.Conv):
    """A 1x1 `nnx.Conv` (kernel [1, in, out], torch Conv1d layout) computed as a flat matmul."""

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...][0].astype(self.dtype or x.dtype)
        lead = x.shape[:-1]
        y = x.reshape(-1, x.shape[-1]).astype(kernel.dtype) @ kernel
        return y.reshape(*lead, y.shape[-1])


def linear(d_in: int, d_out: int, *, axes: Axes, rngs: nnx.Rngs, bias: bool = False, zero_init: bool = False,
           dtype=jnp.float32, param_dtype=jnp.float32) -> FlatLinear:
    """An `nnx.Linear` with torch's default (or zero) init and logical axis names on the kernel."""
    init = nnx.initializers.zeros_init() if zero_init else _torch_uniform(d_in)
    return FlatLinear(d_in, d_out, use_bias=bias, kernel_init=nnx.with_partitioning(init, axes, eager_sharding=False),
                      bias_init=init, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


class SiLU(nnx.Module):
    """Parameter-free SiLU, a placeholder keeping torch `nn.Sequential` indices."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.silu(x)


class Identity(nnx.Module):
    """Parameter-free identity, a placeholder keeping torch `nn.Sequential` indices."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return x


def sequential(layers: nnx.List, x: jax.Array) -> jax.Array:
    """Apply an `nnx.List` of modules in order, like torch `nn.Sequential`."""
    for layer in layers:
        x = layer(x)
    return x


def mlp(d_in: int, d_hidden: int, d_out: int, *, bias: bool, in_axes: Axes, rngs: nnx.Rngs,
        dtype=jnp.float32, param_dtype=jnp.float32) -> nnx.List:
    """torch `Sequential(Linear, SiLU, Linear)`: keys `.0.weight`, `.2.weight` (+ biases)."""
    kw = dict(bias=bias, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    return nnx.List([
        linear(d_in, d_hidden, axes=(in_axes[0], "mlp"), **kw),
        SiLU(),
        linear(d_hidden, d_out, axes=("mlp", in_axes[1]), **kw),
    ])


# ----------------------------------------------------------------------------- norms


def layer_norm(x: jax.Array, eps: float) -> jax.Array:
    """Affine-free layer norm over the last axis, computed in float32."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    return (x32 - mean) * jax.lax.rsqrt(var + eps)


class LayerNorm(nnx.Module):
    """stable-audio-tools LayerNorm: learnable `gamma`, zero `beta` buffer, eps 1e-5."""

    def __init__(self, dim: int, *, dtype=jnp.float32, param_dtype=jnp.float32):
        self.gamma = nnx.Param(jnp.ones((dim,), param_dtype))
        self.beta = Buffer(jnp.zeros((dim,), param_dtype))
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        y = layer_norm(x, LAYER_NORM_EPS) * self.gamma[...].astype(jnp.float32) + self.beta[...]
        return y.astype(self.dtype)


class TorchLayerNorm(nnx.Module):
    """torch `nn.LayerNorm(dim, eps)` with `weight` and `bias` (used for qk_norm="ln")."""

    def __init__(self, dim: int, eps: float, *, param_dtype=jnp.float32):
        self.weight = nnx.Param(jnp.ones((dim,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((dim,), param_dtype))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        y = layer_norm(x, self.eps) * self.weight[...].astype(jnp.float32) + self.bias[...]
        return y.astype(x.dtype)


# ----------------------------------------------------------------------------- rotary


class RotaryEmbedding(nnx.Module):
    """Rotary frequencies over the first `dim` channels of each head (GPT-J partial rotary)."""

    def __init__(self, dim: int):
        self.inv_freq = Buffer(1.0 / ROTARY_BASE ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))

    def __call__(self, seq_len: int) -> jax.Array:
        """[seq_len, dim] angles, `cat(freqs, freqs)` as in the reference."""
        t = jnp.arange(seq_len, dtype=jnp.float32)
        freqs = t[:, None] * self.inv_freq[...].astype(jnp.float32)[None, :]
        return jnp.concatenate([freqs, freqs], axis=-1)


def _rotate_half(x: jax.Array) -> jax.Array:
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rotary(x: jax.Array, freqs: jax.Array) -> jax.Array:
    """Rotate the first `freqs.shape[-1]` channels of `x` [B, T, H, Dh] in float32."""
    rot_dim = freqs.shape[-1]
    x32 = x.astype(jnp.float32)
    xr, xp = x32[..., :rot_dim], x32[..., rot_dim:]
    f = freqs[-x.shape[1]:][None, :, None, :]
    xr = xr * jnp.cos(f) + _rotate_half(xr) * jnp.sin(f)
    return jnp.concatenate([xr, xp], axis=-1).astype(x.dtype)


# ----------------------------------------------------------------------------- attention


class Attention(nnx.Module):
    """Multi-head attention: fused `to_qkv` (self) or `to_q` + `to_kv` (cross), `to_out`."""

    def __init__(self, dim: int, dim_heads: int, *, dim_context: int | None = None,
                 qk_norm: QKNorm = "none", zero_init_output: bool = True, rngs: nnx.Rngs,
                 dtype=jnp.float32, param_dtype=jnp.float32, implementation: Implementation = "xla"):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.implementation = implementation  # the resolved kernel (models.attention.resolve)
        self.dim_heads = dim_heads
        self.num_heads = dim // dim_heads
        self.qk_norm = qk_norm
        if dim_context is not None:
            self.kv_heads = dim_context // dim_heads
            if self.kv_heads * dim_heads != dim_context or self.num_heads % self.kv_heads:
                raise ValueError(f"context dim {dim_context} incompatible with {self.num_heads} heads "
                                 f"of {dim_heads}")
            ctx_axis = "embed" if dim_context == dim else None
            self.to_q = linear(dim, dim, axes=("embed", "heads"), **kw)
            self.to_kv = linear(dim_context, 2 * dim_context, axes=(ctx_axis, "heads"), **kw)
        else:
            self.kv_heads = self.num_heads
            self.to_qkv = linear(dim, 3 * dim, axes=("embed", "heads"), **kw)
        self.to_out = linear(dim, dim, axes=("heads", "embed"), zero_init=zero_init_output, **kw)
        if qk_norm == "ln":
            self.q_norm = TorchLayerNorm(dim_heads, QK_NORM_EPS, param_dtype=param_dtype)
            self.k_norm = TorchLayerNorm(dim_heads, QK_NORM_EPS, param_dtype=param_dtype)
        elif qk_norm not in ("none", "l2"):
            raise ValueError(f"qk_norm must be 'none', 'ln' or 'l2', got {qk_norm!r}")

    def _heads(self, x: jax.Array, heads: int) -> jax.Array:
        return x.reshape(*x.shape[:-1], heads, self.dim_heads)

    def __call__(self, x: jax.Array, *, context: jax.Array | None = None,
                 context_mask: jax.Array | None = None,
                 rotary: jax.Array | None = None) -> jax.Array:
        """x [B, T, D]; context [B, L, Dc]; context_mask [B, L] bool; rotary [T, rot_dim]."""
        if context is not None:
            q = self._heads(checkpoint_name(self.to_q(x), "qkv"), self.num_heads)
            k, v = jnp.split(checkpoint_name(self.to_kv(context), "context_kv"), 2, axis=-1)
        else:
            q, k, v = jnp.split(checkpoint_name(self.to_qkv(x), "qkv"), 3, axis=-1)
            q = self._heads(q, self.num_heads)
        k, v = self._heads(k, self.kv_heads), self._heads(v, self.kv_heads)
        if self.qk_norm == "ln":
            q, k = self.q_norm(q), self.k_norm(k)
        elif self.qk_norm == "l2":
            q, k = (t / jnp.maximum(jnp.linalg.norm(t, axis=-1, keepdims=True), L2_NORM_EPS)
                    for t in (q, k))
        if rotary is not None:  # self-attention only: q and k have the same length
            q, k = apply_rotary(q, rotary), apply_rotary(k, rotary)
        # Grouped heads follow torch repeat_interleave: q head n reads kv head n // (H / H_kv); a row with
        # no valid key attends to nothing (zeros, no NaN).
        out = attention(q, k, v, context_mask, implementation=self.implementation)
        # "attn_out": the attention result before `to_out` (see REMAT_POLICIES)
        return self.to_out(checkpoint_name(out.reshape(*out.shape[:-2], -1), "attn_out"))


# ----------------------------------------------------------------------------- feed-forward


class GLU(nnx.Module):
    """`proj` to 2x width, split into (x, gate), return x * SiLU(gate)."""

    def __init__(self, dim_in: int, dim_out: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
                 param_dtype=jnp.float32):
        self.proj = linear(dim_in, 2 * dim_out, axes=("embed", "mlp"), bias=True, rngs=rngs,
                           dtype=dtype, param_dtype=param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x, gate = jnp.split(self.proj(x), 2, axis=-1)
        return checkpoint_name(x * jax.nn.silu(gate), "mlp_hidden")


class FeedForward(nnx.Module):
    """SwiGLU feed-forward: torch keys `ff.0.proj` (GLU) and `ff.2` (output, zero-init)."""

    def __init__(self, dim: int, *, mult: float, zero_init_output: bool, rngs: nnx.Rngs,
                 dtype=jnp.float32, param_dtype=jnp.float32):
        inner = int(dim * mult)
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.ff = nnx.List([
            GLU(dim, inner, **kw),
            Identity(),
            linear(inner, dim, axes=("mlp", "embed"), bias=True, zero_init=zero_init_output, **kw),
            Identity(),
        ])

    def __call__(self, x: jax.Array) -> jax.Array:
        return checkpoint_name(sequential(self.ff, x), "mlp_out")


# ----------------------------------------------------------------------------- blocks


class TransformerBlock(nnx.Module):
    """Pre-norm block: self-attention, optional cross-attention, GLU feed-forward, optional adaLN."""

    def __init__(self, dim: int, dim_heads: int, *, cross_attend: bool, dim_context: int | None,
                 adaln: bool, qk_norm: QKNorm, ff_mult: float, zero_init_output: bool,
                 rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32,
                 attention: Implementation = "xla"):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        norm_kw = dict(dtype=dtype, param_dtype=param_dtype)
        dim_heads = min(dim_heads, dim)
        self.pre_norm = LayerNorm(dim, **norm_kw)
        self.self_attn = Attention(dim, dim_heads, qk_norm=qk_norm, zero_init_output=zero_init_output,
                                   implementation=attention, **kw)
        self.cross_attend = cross_attend
        if cross_attend:
            self.cross_attend_norm = LayerNorm(dim, **norm_kw)
            self.cross_attn = Attention(dim, dim_heads, dim_context=dim_context, qk_norm=qk_norm,
                                        zero_init_output=zero_init_output, implementation=attention, **kw)
        self.ff_norm = LayerNorm(dim, **norm_kw)
        self.ff = FeedForward(dim, mult=ff_mult, zero_init_output=zero_init_output, **kw)
        self.adaln = adaln
        if adaln:  # reference init: randn(6 * dim) / sqrt(dim), not zero
            init = jax.random.normal(rngs.params(), (ADALN_CHUNKS * dim,), param_dtype) * dim**-0.5
            self.to_scale_shift_gate = nnx.Param(init)

    def __call__(self, x: jax.Array, *, rotary: jax.Array | None, context: jax.Array | None = None,
                 context_mask: jax.Array | None = None,
                 global_cond: jax.Array | None = None) -> jax.Array:
        """x [B, T, D]; global_cond [B, 6D] (adaLN, already through `global_cond_embedder`)."""
        cross = context is not None and self.cross_attend
        if self.adaln and global_cond is not None:
            mod = (self.to_scale_shift_gate[...] + global_cond)[:, None, :].astype(x.dtype)
            scale_sa, shift_sa, gate_sa, scale_ff, shift_ff, gate_ff = jnp.split(mod, ADALN_CHUNKS, -1)
            h = self.pre_norm(x) * (1 + scale_sa) + shift_sa
            x = x + self.self_attn(h, rotary=rotary) * jax.nn.sigmoid(1 - gate_sa)
            if cross:
                x = x + self.cross_attn(self.cross_attend_norm(x), context=context,
                                        context_mask=context_mask)
            h = self.ff_norm(x) * (1 + scale_ff) + shift_ff
            return x + self.ff(h) * jax.nn.sigmoid(1 - gate_ff)
        x = x + self.self_attn(self.pre_norm(x), rotary=rotary)
        if cross:
            x = x + self.cross_attn(self.cross_attend_norm(x), context=context,
                                    context_mask=context_mask)
        return x + self.ff(self.ff_norm(x))


def _call_block(block: TransformerBlock, x: jax.Array, rotary, context, context_mask, global_cond):
    return block(x, rotary=rotary, context=context, context_mask=context_mask,
                 global_cond=global_cond)


# Activations tagged with `checkpoint_name` in every block (what the named policies below may keep):
#   "qkv"         self-attention's fused q/k/v projection [B, T, 3D] (cross-attention: its q projection [B, T, D])
#   "context_kv"  cross-attention's k/v projection of the conditioning tokens [B, L, 2 Dc]
#   "attn_out"    the attention result before `to_out` [B, T, D] (self- and cross-attention): saving it spares
#                 the backward pass the probabilities x values product and gives `to_out` its input
#   "mlp_hidden"  the SwiGLU hidden activation x * SiLU(gate) before the output projection [B, T, ff_mult D]
#   "mlp_out"     the feed-forward output [B, T, D]
CHECKPOINT_NAMES = ("qkv", "context_kv", "attn_out", "mlp_hidden", "mlp_out")
ATTENTION_NAMES = ("qkv", "context_kv", "attn_out")

# model.remat -> the `jax.checkpoint` policy each block is wrapped with (None: no checkpoint). Keys must equal
# jaxstage.config.REMAT_POLICIES (config imports no model code; tests/models/test_remat.py checks they agree).
#   none           keep every activation (fastest, most memory)
#   full           keep only the block input; the backward pass reruns the whole block forward
#   dots           keep every matmul output, the [B, H, T, T] attention scores and probabilities x values included
#   dots_no_batch  keep the matmuls without batch dimensions: every projection (qkv, context kv, to_out, MLP)
#                  but not the attention einsums; the backward recomputes norms, rotary, the attention scores and
#                  softmax and the elementwise ops
#   attention_out  keep ATTENTION_NAMES (q/k/v, context k/v, the attention result); the backward recomputes the
#                  norms, the scores and softmax (for attention's own gradient) and the whole feed-forward
#   offload        keep nothing on the device: every CHECKPOINT_NAMES activation is copied to pinned host memory
#                  in the forward pass and back in the backward pass; the backward recomputes the norms, the scores
#                  and softmax and the GLU input projection. The CPU backend has one memory space: there it
#                  compiles and computes the same gradients, with the "offloaded" tensors kept in temporaries.
# Measured per-device memory for each: docs/scaling.md.
REMAT_POLICIES: dict[str, Callable | None] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "attention_out": jax.checkpoint_policies.save_only_these_names(*ATTENTION_NAMES),
    "offload": jax.checkpoint_policies.save_and_offload_only_these_names(
        names_which_can_be_saved=[], names_which_can_be_offloaded=list(CHECKPOINT_NAMES),
        offload_src="device", offload_dst="pinned_host"),
}


def remat_policy_name(remat: str | bool) -> str:
    """A checked `REMAT_POLICIES` key; the booleans of older callers mean full / none."""
    name = {True: "full", False: "none"}.get(remat, remat) if isinstance(remat, bool) else remat
    if name not in REMAT_POLICIES:
        raise ValueError(f"remat={remat!r} is not one of {', '.join(REMAT_POLICIES)}")
    return name


def _call_block_remat(policy: Callable, block: TransformerBlock, *args):
    """`_call_block` under `jax.checkpoint(policy=policy)` (activations the policy does not save are
    recomputed in the backward pass).

    Pure split/merge: `nnx.remat`'s graph mode raises TraceContextError when the model was
    merged inside `jax.grad` (flax 0.12.8); blocks mutate no state, so nothing is lost."""
    graphdef, state = nnx.split(block)
    return jax.checkpoint(lambda s, *a: _call_block(nnx.merge(graphdef, s), *a), policy=policy)(state, *args)


class ContinuousTransformer(nnx.Module):
    """`project_in` -> prepend tokens -> blocks (shared rotary) -> `project_out`.

    `remat` names the rematerialization policy of every block (`REMAT_POLICIES`; True / False mean full / none).
    """

    def __init__(self, dim: int, depth: int, *, dim_in: int, dim_out: int, dim_heads: int,
                 cross_attend: bool, cond_token_dim: int | None, adaln: bool, qk_norm: QKNorm,
                 ff_mult: float, zero_init_output: bool, remat: str | bool, rngs: nnx.Rngs,
                 dtype=jnp.float32, param_dtype=jnp.float32, attention: Implementation = "xla"):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        remat = remat_policy_name(remat)
        rot_dim = max(dim_heads // 2, ROTARY_MIN_DIM)
        if rot_dim > dim_heads:
            raise ValueError(f"dim_heads={dim_heads} < rotary dim {rot_dim}: stable-audio-tools "
                             f"rotates max(dim_heads // 2, {ROTARY_MIN_DIM}) channels per head")
        self.project_in = linear(dim_in, dim, axes=(None, "embed"), **kw)
        self.project_out = linear(dim, dim_out, axes=("embed", None), **kw)
        self.rotary_pos_emb = RotaryEmbedding(rot_dim)
        if adaln:  # global cond [B, dim] -> [B, 6 dim], biased, torch default init
            self.global_cond_embedder = mlp(dim, dim, ADALN_CHUNKS * dim, bias=True, in_axes=("embed", "embed"), **kw)
        self.adaln = adaln
        self.layers = nnx.List([
            TransformerBlock(dim, dim_heads, cross_attend=cross_attend, dim_context=cond_token_dim,
                             adaln=adaln, qk_norm=qk_norm, ff_mult=ff_mult,
                             zero_init_output=zero_init_output, attention=attention, **kw)
            for _ in range(depth)
        ])
        self.remat = remat

    def __call__(self, x: jax.Array, *, prepend: jax.Array | None = None,
                 context: jax.Array | None = None, context_mask: jax.Array | None = None,
                 global_cond: jax.Array | None = None) -> tuple[jax.Array, list[jax.Array]]:
        """x [B, T, dim_in] -> (project_out(h) [B, P+T, dim_out], block outputs [B, P+T, D]).

        Prepended tokens (P of them) stay in both outputs.
        """
        x = self.project_in(x)
        if prepend is not None:
            x = jnp.concatenate([prepend.astype(x.dtype), x], axis=1)
        rotary = self.rotary_pos_emb(x.shape[1])
        if self.adaln and global_cond is not None:
            global_cond = sequential(self.global_cond_embedder, global_cond)
        policy = REMAT_POLICIES[self.remat]
        call = _call_block if self.remat == "none" else partial(_call_block_remat, policy)
        hidden = []
        for block in self.layers:
            x = call(block, x, rotary, context, context_mask, global_cond)
            hidden.append(x)
        return self.project_out(x), hidden
