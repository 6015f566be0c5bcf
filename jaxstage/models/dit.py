"""Stable Audio family diffusion transformer (stable-audio-tools 0.0.19 `DiffusionTransformer`,
`transformer_type="continuous_transformer"`, `timestep_cond_type="global"`, `patch_size=1`).

Forward pass, channels-last:
  x [B, T, io] (+ input_concat [B, T, c]) -> `preprocess_conv(x) + x` (1x1, zero-init)
  -> `transformer.project_in` -> [global token,] x -> `depth` blocks (rotary self-attention,
  cross-attention to `to_cond_embed(cross_tokens)`, SwiGLU feed-forward; adaLN when
  `global_cond_type="adaLN"`) -> `transformer.project_out` -> drop the prepended token
  -> `postprocess_conv(h) + h` (1x1, zero-init).
The global embedding is `to_timestep_embed(FourierFeatures(t)) [+ to_global_embed(global_cond)]`;
"prepend" prepends it as one token, "adaLN" feeds it to `transformer.global_cond_embedder`
([B, 6D]) and each block's `to_scale_shift_gate`.

Init mirrors the reference: attention `to_out` and feed-forward output zero-init
(`zero_init_output`, the reference's `zero_init_branch_outputs`), so every block is the identity at
init and `out = project_out(project_in(x))` there (not zero); the 1x1 convs are zero-init residuals;
`to_scale_shift_gate ~ N(0, 1/D)`; other linears use torch's U(+-1/sqrt(fan_in)).

State paths <-> torch keys: `jaxstage/tools/export/key_map.py` (join the path with "." and rename
`kernel` to `weight`, reversing its axes). Buffers (`inv_freq`, LayerNorm `beta`) are
`transformer.Buffer` variables. Sharding metadata: see `jaxstage/models/transformer.py`
(`out_sharding` logical names "embed", "heads", "mlp", None).

Deviations from 0.0.19:
- `cross_mask` is applied when `use_cross_mask` (the default; 0.0.19 drops `cross_attn_cond_mask`:
  `use_cross_mask=False`, `model.cross_attn_mask=false`, gives its behaviour); a fully masked row
  yields a zero cross-attention output.
- Layer norms, softmax, rotary and Fourier features run in float32 (equal in fp32).
- Not ported: `timestep_cond_type="input_concat"`, `patch_size > 1`,
  `project_global_cond=False`, memory tokens, conformer, layer scale, qk_norm "dyt",
  differential attention, CFG inside the model (see `diffusion/samplers.py`).
- `hidden` strips the prepended token (the reference's `exit_layer_ix` output keeps it).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from jaxstage.models.attention import Implementation
from jaxstage.models.transformer import LAYER_NORM_EPS, ContinuousTransformer, FlatConv1x1, layer_norm, mlp, sequential

GlobalCondType = Literal["prepend", "adaLN"]


@struct.dataclass
class DiTOutput:
    """`out` [B, T, io]; `hidden` [B, T, D] of block `hidden_layer` or None;
    `block_summaries` [B, depth, D] per-block token means (float32)."""

    out: jax.Array
    hidden: jax.Array | None
    block_summaries: jax.Array


class FourierFeatures(nnx.Module):
    """`f = 2*pi * x @ weight.T`, return `cat[cos f, sin f]`; weight [out // 2, in] ~ N(0, std^2)."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs, std: float = 1.0,
                 param_dtype=jnp.float32):
        if out_features % 2:
            raise ValueError(f"out_features must be even, got {out_features}")
        shape = (out_features // 2, in_features)
        self.weight = nnx.Param(jax.random.normal(rngs.params(), shape, param_dtype) * std)

    def __call__(self, x: jax.Array) -> jax.Array:
        f = 2 * jnp.pi * x.astype(jnp.float32) @ self.weight[...].astype(jnp.float32).T
        return jnp.concatenate([jnp.cos(f), jnp.sin(f)], axis=-1)


def _conv1x1(dim: int, *, rngs: nnx.Rngs, dtype, param_dtype) -> nnx.Conv:
    """Zero-init bias-free 1x1 conv (kernel [1, in, out] <-> torch Conv1d weight [out, in, 1])."""
    return FlatConv1x1(dim, dim, kernel_size=(1,), use_bias=False, kernel_init=nnx.initializers.zeros_init(),
                       dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def _nearest_resize(x: jax.Array, length: int) -> jax.Array:
    """torch `F.interpolate(mode="nearest")` along axis 1: src = floor(dst * in / out)."""
    src = np.floor(np.arange(length) * (x.shape[1] / length)).astype(np.int32)
    return x[:, np.minimum(src, x.shape[1] - 1)]


def _token_mean(h: jax.Array, normalize: bool) -> jax.Array:
    """[B, T, D] -> [B, D] float32 mean over tokens, optionally of affine-free layer-normed tokens."""
    h = layer_norm(h, LAYER_NORM_EPS) if normalize else h.astype(jnp.float32)
    return h.mean(axis=1)


class DiffusionTransformer(nnx.Module):
    """1-D DiT of the Stable Audio family; see the module docstring."""

    def __init__(self, *, io_channels: int, embed_dim: int, depth: int, num_heads: int,
                 cond_token_dim: int, global_cond_dim: int = 0, input_concat_dim: int = 0,
                 prepend_cond_dim: int = 0, use_cross_mask: bool = True, project_cond_tokens: bool = True,
                 global_cond_type: GlobalCondType = "prepend",
                 qk_norm: bool | str = False, ff_mult: float = 4, timestep_features_dim: int = 256,
                 zero_init_output: bool = True, remat: str | bool = "none", rngs: nnx.Rngs,
                 dtype=jnp.float32, param_dtype=jnp.float32, attention: Implementation = "xla"):
        if global_cond_type not in ("prepend", "adaLN"):
            raise ValueError(f"global_cond_type must be prepend or adaLN, got {global_cond_type!r}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} not divisible by num_heads {num_heads}")
        qk = ("ln" if qk_norm else "none") if isinstance(qk_norm, bool) else qk_norm  # True -> "ln"
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.dtype = dtype
        self.cond_token_dim = cond_token_dim
        self.global_cond_dim = global_cond_dim
        self.input_concat_dim = input_concat_dim
        self.prepend_cond_dim = prepend_cond_dim
        self.use_cross_mask = use_cross_mask
        self.global_cond_type = global_cond_type

        self.timestep_features = FourierFeatures(1, timestep_features_dim, rngs=rngs, param_dtype=param_dtype)
        self.to_timestep_embed = mlp(timestep_features_dim, embed_dim, embed_dim, bias=True,
                                     in_axes=(None, "embed"), **kw)
        cond_embed_dim = None
        if cond_token_dim > 0:
            cond_embed_dim = embed_dim if project_cond_tokens else cond_token_dim
            out_axis = "embed" if cond_embed_dim == embed_dim else None
            self.to_cond_embed = mlp(cond_token_dim, cond_embed_dim, cond_embed_dim, bias=False,
                                     in_axes=(None, out_axis), **kw)
        if global_cond_dim > 0:
            self.to_global_embed = mlp(global_cond_dim, embed_dim, embed_dim, bias=False, in_axes=(None, "embed"), **kw)
        if prepend_cond_dim > 0:
            self.to_prepend_embed = mlp(prepend_cond_dim, embed_dim, embed_dim, bias=False, in_axes=(None, "embed"), **kw)
        dim_in = io_channels + input_concat_dim
        self.transformer = ContinuousTransformer(
            embed_dim, depth, dim_in=dim_in, dim_out=io_channels, dim_heads=embed_dim // num_heads,
            cross_attend=cond_token_dim > 0, cond_token_dim=cond_embed_dim,
            adaln=global_cond_type == "adaLN", qk_norm=qk, ff_mult=ff_mult,
            zero_init_output=zero_init_output, remat=remat, attention=attention, **kw)
        self.preprocess_conv = _conv1x1(dim_in, **kw)
        self.postprocess_conv = _conv1x1(io_channels, **kw)

    def _check_inputs(self, cross_tokens, cross_mask, global_cond, input_concat, prepend_cond) -> None:
        if (prepend_cond is None) != (self.prepend_cond_dim == 0):
            raise ValueError(f"prepend_cond must be given iff prepend_cond_dim > 0 "
                             f"(prepend_cond_dim={self.prepend_cond_dim})")
        if cross_tokens is not None and self.cond_token_dim == 0:
            raise ValueError("cross_tokens given but cond_token_dim == 0")
        if cross_mask is not None and cross_tokens is None:
            raise ValueError("cross_mask given without cross_tokens")
        if global_cond is not None and self.global_cond_dim == 0:
            raise ValueError("global_cond given but global_cond_dim == 0")
        if (input_concat is None) != (self.input_concat_dim == 0):
            raise ValueError(f"input_concat must be given iff input_concat_dim > 0 "
                             f"(input_concat_dim={self.input_concat_dim})")

    def __call__(self, x: jax.Array, t: jax.Array, *, cross_tokens: jax.Array | None = None,
                 cross_mask: jax.Array | None = None, global_cond: jax.Array | None = None,
                 input_concat: jax.Array | None = None, prepend_cond: jax.Array | None = None,
                 hidden_layer: int | None = None, normalize_summaries: bool = False) -> DiTOutput:
        """x [B, T, io]; t [B] (fed straight to the Fourier features, e.g. EDM c_noise);
        cross_tokens [B, L, cond_token_dim]; cross_mask [B, L] bool (True = keep);
        global_cond [B, global_cond_dim]; input_concat [B, T', input_concat_dim] (resized to T,
        nearest); prepend_cond [B, P, prepend_cond_dim] (projected, then prepended before the global
        token; like 0.0.19 no prepend mask is applied); hidden_layer: 0-based block index (negative
        counts from the end);
        normalize_summaries: layer-norm each token (no affine) before the per-block mean.
        """
        self._check_inputs(cross_tokens, cross_mask, global_cond, input_concat, prepend_cond)
        if not self.use_cross_mask:  # stable-audio-tools 0.0.19: padded tokens are attended to
            cross_mask = None
        depth = len(self.transformer.layers)
        if hidden_layer is not None and not -depth <= hidden_layer < depth:
            raise ValueError(f"hidden_layer {hidden_layer} out of range for depth {depth}")
        x = x.astype(self.dtype)
        if input_concat is not None:
            if input_concat.shape[1] != x.shape[1]:
                input_concat = _nearest_resize(input_concat, x.shape[1])
            x = jnp.concatenate([x, input_concat.astype(self.dtype)], axis=-1)
        context = None
        if cross_tokens is not None:
            context = sequential(self.to_cond_embed, cross_tokens.astype(self.dtype))
        features = self.timestep_features(t[:, None]).astype(self.dtype)
        embed = sequential(self.to_timestep_embed, features)
        if global_cond is not None:
            embed = sequential(self.to_global_embed, global_cond.astype(self.dtype)) + embed

        prepend = embed[:, None, :] if self.global_cond_type == "prepend" else None
        if prepend_cond is not None:
            tokens = sequential(self.to_prepend_embed, prepend_cond.astype(self.dtype))
            prepend = tokens if prepend is None else jnp.concatenate([tokens, prepend], axis=1)
        n_prepend = 0 if prepend is None else prepend.shape[1]
        x = self.preprocess_conv(x) + x
        h, hidden = self.transformer(
            x, prepend=prepend, context=context, context_mask=cross_mask,
            global_cond=embed if self.global_cond_type == "adaLN" else None)
        h = h[:, n_prepend:]
        out = (self.postprocess_conv(h) + h).astype(jnp.float32)  # the loss and the samplers run in float32

        tokens = [hb[:, n_prepend:] for hb in hidden]
        summaries = jnp.stack([_token_mean(a, normalize_summaries) for a in tokens], axis=1)
        return DiTOutput(out=out, hidden=None if hidden_layer is None else tokens[hidden_layer],
                         block_summaries=summaries)


# ----------------------------------------------------------------------------- helpers
def block_weight_matrices(model: DiffusionTransformer, *, include_cross: bool = True) -> list[list[jax.Array]]:
    """Per block: the 2-D kernels [in, out] of attention and feed-forward, in the order
    self_attn.to_qkv, self_attn.to_out, [cross_attn.to_q, .to_kv, .to_out], ff.ff.0.proj, ff.ff.2.
    Zero-initialised kernels (to_out, ff.ff.2) are exactly zero at init: normalize with an eps."""
    blocks = []
    for blk in model.transformer.layers:
        layers = [blk.self_attn.to_qkv, blk.self_attn.to_out]
        if include_cross and blk.cross_attend:
            layers += [blk.cross_attn.to_q, blk.cross_attn.to_kv, blk.cross_attn.to_out]
        layers += [blk.ff.ff[0].proj, blk.ff.ff[2]]
        blocks.append([layer.kernel.get_value() for layer in layers])
    return blocks


def count_params(model: nnx.Module) -> int:
    """Number of trainable (`nnx.Param`) scalars; buffers are excluded."""
    return sum(int(a.size) for a in jax.tree.leaves(nnx.state(model, nnx.Param)))
