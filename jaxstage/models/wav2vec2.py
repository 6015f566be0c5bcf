"""wav2vec2 / HuBERT / WavLM speech encoders in Flax NNX, matching transformers 5 `*Model.forward`.

Inference only (no dropout, layer drop or SpecAugment masking), float32, channels-last (`[B, T, C]`).
Module and attribute names mirror the transformers modules, so a flattened NNX state path maps to a
transformers state-dict key mechanically (see `convert_wav2vec2.torch_key`): join the path with
"." and rename `kernel`/`scale`/`embedding` to `weight` (kernels transposed by reversing their axes:
`nnx.Linear` [in, out] <- torch [out, in]; `nnx.Conv` [K, in/groups, out] <- torch [out, in/groups, K]),
`mean`/`var` to `running_mean`/`running_var`. The weight-normed positional convolution is stored as a
plain folded kernel (w = g * v / ||v||, the norm over every axis but the kernel-position axis).

Variants (all selected by `Wav2Vec2EncoderConfig`):
- feature extractor `feat_extract_norm="group"` (GroupNorm with one group per channel on the first
  conv only) or `"layer"` (LayerNorm over channels after every conv), `conv_bias`;
- post-LN encoder (`do_stable_layer_norm=False`: LayerNorm after the positional embedding and after
  each residual branch) or pre-LN (`True`: LayerNorm before each branch, one final LayerNorm);
- WavLM attention: a bucketed relative position bias computed by the first layer and shared by all,
  scaled per head and position by a gate computed from the layer input (`gru_rel_pos`);
- HuBERT: optional feature-projection LayerNorm (`feat_proj_layer_norm`) and a BatchNorm in place of
  the weight norm on the positional conv (`conv_pos_batch_norm`).

`hidden_states` follows transformers 5 (`output_hidden_states=True`): the input of the first layer
followed by each layer's output (`num_hidden_layers + 1` arrays). Post-LN: the last one equals
`last_hidden_state`. Pre-LN: the last one is the raw last-layer output and `last_hidden_state` is
that after the encoder's final LayerNorm.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ModelType = Literal["wav2vec2", "hubert", "wavlm"]
CONV_NORM_EPS = 1e-5  # torch nn.LayerNorm / nn.GroupNorm / nn.BatchNorm1d default in the conv stack

_GELU_TANH = functools.partial(jax.nn.gelu, approximate=True)
_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False), "gelu_new": _GELU_TANH, "gelu_pytorch_tanh": _GELU_TANH,
    "relu": jax.nn.relu, "silu": jax.nn.silu, "swish": jax.nn.silu, "tanh": jnp.tanh}


@dataclasses.dataclass(frozen=True)
class Wav2Vec2EncoderConfig:
    """The transformers config fields the encoder forward depends on (same names and defaults)."""

    model_type: ModelType = "wav2vec2"
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    feat_extract_norm: Literal["group", "layer"] = "group"
    feat_extract_activation: str = "gelu"
    conv_dim: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    do_stable_layer_norm: bool = False
    feat_proj_layer_norm: bool = True  # HuBERT option; always True for wav2vec2 / WavLM
    conv_pos_batch_norm: bool = False  # HuBERT option
    num_buckets: int = 320  # WavLM
    max_bucket_distance: int = 800  # WavLM

    def __post_init__(self):
        if self.feat_extract_norm not in ("group", "layer"):
            raise ValueError(f"feat_extract_norm must be 'group' or 'layer': {self.feat_extract_norm!r}")
        if not len(self.conv_dim) == len(self.conv_stride) == len(self.conv_kernel):
            raise ValueError("conv_dim, conv_stride and conv_kernel must have the same length")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        for act in (self.hidden_act, self.feat_extract_activation):
            if act not in _ACTIVATIONS:
                raise ValueError(f"unsupported activation {act!r}; known: {sorted(_ACTIVATIONS)}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


class EncoderOutput(NamedTuple):
    """`last_hidden_state` [B, T, D]; `hidden_states` tuple of L+1 [B, T, D]; `extract_features`
    [B, T, conv_dim[-1]] (conv features after the projection LayerNorm, as transformers returns)."""

    last_hidden_state: jax.Array
    hidden_states: tuple[jax.Array, ...]
    extract_features: jax.Array


# ----------------------------------------------------------------------------- helpers
def _layer_norm(dim: int, eps: float, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """torch-equivalent LayerNorm (two-pass variance, as torch computes it)."""
    return nnx.LayerNorm(dim, epsilon=eps, use_fast_variance=False, rngs=rngs)


def conv_output_lengths(lengths: jax.Array, cfg: Wav2Vec2EncoderConfig) -> jax.Array:
    """Frames produced from `lengths` samples (transformers `_get_feat_extract_output_lengths`)."""
    for k, s in zip(cfg.conv_kernel, cfg.conv_stride):
        lengths = (lengths - k) // s + 1
    return lengths


def frame_mask(attention_mask: jax.Array, num_frames: int, cfg: Wav2Vec2EncoderConfig) -> jax.Array:
    """Sample mask [B, L] (1 = real audio) -> frame mask [B, num_frames] bool (first n frames True)."""
    lengths = conv_output_lengths(attention_mask.astype(jnp.int32).sum(-1), cfg)
    return jnp.arange(num_frames)[None, :] < lengths[:, None]


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """WavLM `_relative_positions_bucket(memory - context)` [T, T] int32, in float32 like torch."""
    rel = np.arange(length)[None, :] - np.arange(length)[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).astype(np.int64) * half
    rel = np.abs(rel)
    max_exact = half // 2
    with np.errstate(divide="ignore"):  # log(0) on the is_small branch, discarded by the where
        large = np.log(rel.astype(np.float32) / np.float32(max_exact))
    large = large / np.float32(math.log(max_distance / max_exact))
    large = large * np.float32(half - max_exact)
    large = np.nan_to_num(np.float32(max_exact) + large, neginf=0.0).astype(np.int64)
    large = np.minimum(large, half - 1)
    return (buckets + np.where(rel < max_exact, rel, large)).astype(np.int32)


# ----------------------------------------------------------------------------- feature extractor
class ConvLayer(nnx.Module):
    """Conv1d (VALID, strided) + optional GroupNorm("group", per channel) / LayerNorm("layer") + act."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, norm: str | None,
                 cfg: Wav2Vec2EncoderConfig, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(c_in, c_out, kernel_size=(kernel,), strides=(stride,), padding="VALID",
                             use_bias=cfg.conv_bias, rngs=rngs)
        if norm == "group":
            self.layer_norm = nnx.GroupNorm(c_out, num_groups=c_out, epsilon=CONV_NORM_EPS,
                                            use_fast_variance=False, rngs=rngs)
        elif norm == "layer":
            self.layer_norm = _layer_norm(c_out, CONV_NORM_EPS, rngs)
        else:
            self.layer_norm = None
        self.act_name = cfg.feat_extract_activation

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv(x)
        if self.layer_norm is not None:  # GroupNorm: over time per channel; LayerNorm: over channels
            x = self.layer_norm(x)
        return _ACTIVATIONS[self.act_name](x)


class FeatureEncoder(nnx.Module):
    """The convolutional waveform encoder: [B, L] -> [B, T, conv_dim[-1]]."""

    def __init__(self, cfg: Wav2Vec2EncoderConfig, *, rngs: nnx.Rngs):
        layers = []
        for i, (c, k, s) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride)):
            norm = cfg.feat_extract_norm if (cfg.feat_extract_norm == "layer" or i == 0) else None
            c_in = cfg.conv_dim[i - 1] if i > 0 else 1
            layers.append(ConvLayer(c_in, c, k, s, norm, cfg, rngs=rngs))
        self.conv_layers = nnx.List(layers)

    def __call__(self, wav: jax.Array) -> jax.Array:
        x = wav[..., None]
        for layer in self.conv_layers:
            x = layer(x)
        return x


class FeatureProjection(nnx.Module):
    """(LayerNorm) + Linear to the model width; also returns the normalised conv features."""

    def __init__(self, cfg: Wav2Vec2EncoderConfig, *, rngs: nnx.Rngs):
        c = cfg.conv_dim[-1]
        self.layer_norm = _layer_norm(c, cfg.layer_norm_eps, rngs) if cfg.feat_proj_layer_norm else None
        self.projection = nnx.Linear(c, cfg.hidden_size, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.projection(x), x


class PositionalConvEmbedding(nnx.Module):
    """Grouped "same" Conv1d (even kernels drop the last frame) + activation; optional BatchNorm."""

    def __init__(self, cfg: Wav2Vec2EncoderConfig, *, rngs: nnx.Rngs):
        k, d = cfg.num_conv_pos_embeddings, cfg.hidden_size
        self.batch_norm = (nnx.BatchNorm(d, use_running_average=True, epsilon=CONV_NORM_EPS,
                                         use_fast_variance=False, rngs=rngs)
                           if cfg.conv_pos_batch_norm else None)
        self.conv = nnx.Conv(d, d, kernel_size=(k,), padding=[(k // 2, k // 2)],
                             feature_group_count=cfg.num_conv_pos_embedding_groups, rngs=rngs)
        self.num_pad_remove = 1 if k % 2 == 0 else 0
        self.act_name = cfg.feat_extract_activation

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.batch_norm is not None:
            x = self.batch_norm(x)
        x = self.conv(x)
        if self.num_pad_remove:
            x = x[:, : -self.num_pad_remove]
        return _ACTIVATIONS[self.act_name](x)


# ----------------------------------------------------------------------------- transformer
def _key_bias(mask: jax.Array | None, dtype) -> jax.Array | None:
    """Frame mask [B, T] bool -> additive key bias [B, 1, 1, T] (0 or dtype min)."""
    if mask is None:
        return None
    return jnp.where(mask, 0.0, jnp.finfo(dtype).min).astype(dtype)[:, None, None, :]


class Attention(nnx.Module):
    """Multi-head self-attention; WavLM adds the gated relative position bias."""

    def __init__(self, cfg: Wav2Vec2EncoderConfig, *, has_relative_position_bias: bool, rngs: nnx.Rngs):
        d, h = cfg.hidden_size, cfg.num_attention_heads
        self.num_heads, self.head_dim = h, cfg.head_dim
        self.k_proj, self.v_proj, self.q_proj, self.out_proj = (nnx.Linear(d, d, rngs=rngs) for _ in range(4))
        self.wavlm = cfg.model_type == "wavlm"
        if self.wavlm:
            self.num_buckets, self.max_distance = cfg.num_buckets, cfg.max_bucket_distance
            self.gru_rel_pos_const = nnx.Param(jnp.ones((1, h, 1, 1), jnp.float32))
            self.gru_rel_pos_linear = nnx.Linear(self.head_dim, 8, rngs=rngs)
        self.rel_attn_embed = (nnx.Embed(cfg.num_buckets, h, rngs=rngs)
                               if self.wavlm and has_relative_position_bias else None)

    def compute_bias(self, length: int) -> jax.Array:
        """WavLM relative position bias [H, T, T] (first layer only)."""
        buckets = relative_position_buckets(length, self.num_buckets, self.max_distance)
        return jnp.transpose(self.rel_attn_embed(jnp.asarray(buckets)), (2, 0, 1))

    def _gated_bias(self, x: jax.Array, position_bias: jax.Array) -> jax.Array:
        """Scale the bias per (batch, head, query) by the gate computed from the layer input."""
        b, t, _ = x.shape
        g = x.reshape(b, t, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)  # [B, H, T, hd]
        proj = self.gru_rel_pos_linear(g).reshape(b, self.num_heads, t, 2, 4).sum(-1)
        gate_a, gate_b = jnp.split(jax.nn.sigmoid(proj), 2, axis=-1)  # [B, H, T, 1] each
        gate = gate_a * (gate_b * self.gru_rel_pos_const[...] - 1.0) + 2.0
        return gate * position_bias[None]  # [B, H, T, T]

    def __call__(self, x: jax.Array, key_bias: jax.Array | None = None,
                 position_bias: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None]:
        b, t, _ = x.shape
        heads = lambda y: y.reshape(b, t, self.num_heads, self.head_dim)  # noqa: E731
        q = heads(self.q_proj(x)) * self.head_dim**-0.5
        k, v = heads(self.k_proj(x)), heads(self.v_proj(x))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k)
        if self.wavlm:
            if position_bias is None:
                position_bias = self.compute_bias(t)
            scores = scores + self._gated_bias(x, position_bias)
        if key_bias is not None:
            scores = scores + key_bias
        weights = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, t, -1)
        return self.out_proj(out), position_bias


class FeedForward(nnx.Module):
    """Linear -> activation -> Linear."""

    def __init__(self, cfg: Wav2Vec2EncoderConfig, *, rngs: nnx.Rngs):
        self.intermediate_dense = nnx.Linear(cfg.hidden_size, cfg.intermediate_size, rngs=rngs)
        self.output_dense = nnx.Linear(cfg.intermediate_size, cfg.hidden_size, rngs=rngs)
        self.act_name = cfg.hidden_act

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.output_dense(_ACTIVATIONS[self.act_name](self.intermediate_dense(x)))


class EncoderLayer(nnx.Module):
    """Post-LN (`stable=False`) or pre-LN (`stable=True`) transformer layer."""

    def __init__(self, cfg: Wav2Vec2EncoderConfig, *, has_relative_position_bias: bool, rngs: nnx.Rngs):
        self.attention = Attention(cfg, has_relative_position_bias=has_relative_position_bias, rngs=rngs)
        self.layer_norm = _layer_norm(cfg.hidden_size, cfg.layer_norm_eps, rngs)
        self.feed_forward = FeedForward(cfg, rngs=rngs)
        self.final_layer_norm = _layer_norm(cfg.hidden_size, cfg.layer_norm_eps, rngs)
        self.stable = cfg.do_stable_layer_norm

    def __call__(self, x: jax.Array, key_bias: jax.Array | None,
                 position_bias: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
        if self.stable:
            attn, position_bias = self.attention(self.layer_norm(x), key_bias, position_bias)
            x = x + attn
            return x + self.feed_forward(self.final_layer_norm(x)), position_bias
        attn, position_bias = self.attention(x, key_bias, position_bias)
        x = self.layer_norm(x + attn)
        return self.final_layer_norm(x + self.feed_forward(x)), position_bias


class Encoder(nnx.Module):
    """Positional conv embedding + layers; returns (last_hidden_state, hidden_states)."""

    def __init__(self, cfg: Wav2Vec2EncoderConfig, *, rngs: nnx.Rngs):
        self.pos_conv_embed = PositionalConvEmbedding(cfg, rngs=rngs)
        self.layer_norm = _layer_norm(cfg.hidden_size, cfg.layer_norm_eps, rngs)
        self.layers = nnx.List([
            EncoderLayer(cfg, has_relative_position_bias=(i == 0), rngs=rngs)
            for i in range(cfg.num_hidden_layers)
        ])
        self.stable = cfg.do_stable_layer_norm

    def __call__(self, x: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        if mask is not None:  # padded frames are zeroed before the positional conv
            x = jnp.where(mask[..., None], x, 0.0)
        x = x + self.pos_conv_embed(x)
        if not self.stable:
            x = self.layer_norm(x)
        key_bias = _key_bias(mask, x.dtype)
        hidden_states, position_bias = [x], None
        for layer in self.layers:
            x, position_bias = layer(x, key_bias, position_bias)
            hidden_states.append(x)
        if self.stable:
            x = self.layer_norm(x)
        return x, tuple(hidden_states)


class Wav2Vec2Encoder(nnx.Module):
    """`Wav2Vec2Model` / `HubertModel` / `WavLMModel` forward: waveform [B, L] -> `EncoderOutput`.

    `attention_mask` [B, L] (1 = real sample) is optional: as in transformers, padded frames are
    zeroed before the positional conv and masked as attention keys (the conv stack still sees the
    padding, so "group"-norm checkpoints expect unpadded input). Pure and jit-able: wrap calls in
    `nnx.jit`, or split it and `jax.jit` a function of (graphdef, state, wav) (as `NeuralSSL` does).
    """

    def __init__(self, cfg: Wav2Vec2EncoderConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.feature_extractor = FeatureEncoder(cfg, rngs=rngs)
        self.feature_projection = FeatureProjection(cfg, rngs=rngs)
        self.encoder = Encoder(cfg, rngs=rngs)

    def __call__(self, wav: jax.Array, attention_mask: jax.Array | None = None) -> EncoderOutput:
        features = self.feature_extractor(wav.astype(jnp.float32))
        mask = None if attention_mask is None else frame_mask(attention_mask, features.shape[1], self.cfg)
        x, extract_features = self.feature_projection(features)
        last, hidden_states = self.encoder(x, mask)
        return EncoderOutput(last, hidden_states, extract_features)

