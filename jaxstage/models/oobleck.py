"""The Oobleck autoencoder of Stable Audio (stable-audio-tools 0.0.19) in Flax NNX, layer for layer.

Audio is channels-last ``[B, N, audio_channels]`` and latents ``[B, T, latent_dim]`` (jaxstage's
codec layout); weights keep PyTorch's layouts and names so a stable-audio-tools state dict maps onto
this module by its keys alone (``encoder.layers.1.layers.0.layers.1.weight_g`` is
``encoder.layers[1].layers[0].layers[1].weight_g``): weight-normalized convolutions with ``weight_g``
and ``weight_v`` kept as parameters (``torch.nn.utils.weight_norm``, dim 0), SnakeBeta with log-scale
``alpha``/``beta``, residual units with dilations 1, 3, 9, strided and transposed convolutions, the
nearest-upsample and ``final_tanh`` options, and the VAE bottleneck (mean and softplus scale).
Options stable-audio-tools has and jaxstage does not (anti-aliased activations, other bottlenecks)
are refused by ``OobleckConfig`` with one line naming them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx


@dataclass(frozen=True)
class OobleckConfig:
    """The shape of an Oobleck VAE (stable-audio-tools' encoder/decoder ``config`` keys)."""

    audio_channels: int = 2
    channels: int = 128
    c_mults: tuple[int, ...] = (1, 2, 4, 8, 16)
    strides: tuple[int, ...] = (2, 4, 4, 8, 8)
    latent_dim: int = 64  # the bottleneck's output; the encoder emits twice as many (mean and scale)
    use_snake: bool = True  # SnakeBeta activations (else ELU)
    final_tanh: bool = False
    use_nearest_upsample: bool = False

    def __post_init__(self) -> None:
        if len(self.c_mults) != len(self.strides):
            raise ValueError(f"oobleck: c_mults {self.c_mults} and strides {self.strides} differ in length")
        if min(self.strides, default=1) < 1 or min(self.c_mults, default=1) < 1 or self.channels < 1:
            raise ValueError(f"oobleck: channels, c_mults and strides must be >= 1 ({self})")

    @property
    def hop(self) -> int:
        """Audio samples per latent frame (2048 for Stable Audio Open)."""
        return math.prod(self.strides)


# ------------------------------------------------------------------ weight-normalized convolutions


def _uniform(key: jax.Array, shape: tuple[int, ...], bound: float) -> jax.Array:
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def _weight_norm(g: jax.Array, v: jax.Array) -> jax.Array:
    """``torch.nn.utils.weight_norm`` (dim 0): ``v · g / ‖v‖`` with the norm over all axes but the first."""
    return v * (g / jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2), keepdims=True)))


def _conv(x: jax.Array, kernel_oiw: jax.Array, stride: int = 1, padding: tuple[int, int] = (0, 0),
          dilation: int = 1, lhs_dilation: int = 1) -> jax.Array:
    """Cross-correlation of ``x`` [B, T, C_in] with a PyTorch-layout kernel [C_out, C_in, K]."""
    return jax.lax.conv_general_dilated(x, kernel_oiw, window_strides=(stride,), padding=[padding],
                                        lhs_dilation=(lhs_dilation,), rhs_dilation=(dilation,),
                                        dimension_numbers=("NWC", "OIW", "NWC"))


class WNConv1d(nnx.Module):
    """``weight_norm(nn.Conv1d)``: ``weight_v`` [out, in, k], ``weight_g`` [out, 1, 1], ``bias`` [out].
    ``padding`` is symmetric, or ``"same"`` (PyTorch's: the extra sample of an even kernel on the right)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, *, stride: int = 1, padding: int | str = 0,
                 dilation: int = 1, bias: bool = True, rngs: nnx.Rngs):
        bound = 1.0 / math.sqrt(c_in * kernel)  # PyTorch's default Conv1d initialization range
        v = _uniform(rngs.params(), (c_out, c_in, kernel), bound)
        self.weight_v = nnx.Param(v)
        self.weight_g = nnx.Param(jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2), keepdims=True)))
        self.bias = nnx.Param(_uniform(rngs.params(), (c_out,), bound)) if bias else None
        total = dilation * (kernel - 1)
        self.padding = (total // 2, total - total // 2) if padding == "same" else (padding, padding)
        self.stride, self.dilation = stride, dilation

    def __call__(self, x: jax.Array) -> jax.Array:
        y = _conv(x, _weight_norm(self.weight_g[...], self.weight_v[...]), self.stride, self.padding, self.dilation)
        return y if self.bias is None else y + self.bias[...]


class WNConvTranspose1d(nnx.Module):
    """``weight_norm(nn.ConvTranspose1d)``: ``weight_v`` [in, out, k], ``weight_g`` [in, 1, 1] (the
    norm is per input channel), ``bias`` [out]; output length ``(T − 1)·stride − 2·padding + k``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, *, stride: int, padding: int, rngs: nnx.Rngs):
        bound = 1.0 / math.sqrt(c_out * kernel)  # PyTorch initializes from weight.size(1) * k
        v = _uniform(rngs.params(), (c_in, c_out, kernel), bound)
        self.weight_v = nnx.Param(v)
        self.weight_g = nnx.Param(jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2), keepdims=True)))
        self.bias = nnx.Param(_uniform(rngs.params(), (c_out,), bound))
        self.stride, self.padding, self.kernel = stride, padding, kernel

    def __call__(self, x: jax.Array) -> jax.Array:
        # a transposed convolution is the convolution of the stride-dilated input with the flipped,
        # in/out-swapped kernel, padded by k − 1 − padding on each side
        kernel = jnp.flip(_weight_norm(self.weight_g[...], self.weight_v[...]), axis=2).transpose(1, 0, 2)
        pad = self.kernel - 1 - self.padding
        return _conv(x, kernel, padding=(pad, pad), lhs_dilation=self.stride) + self.bias[...]


# ------------------------------------------------------------------ activations and blocks


class SnakeBeta(nnx.Module):
    """``x + 1/(e^β + 1e-9) · sin²(e^α · x)`` per channel; ``alpha``, ``beta`` [C] start at 0 (log scale)."""

    def __init__(self, channels: int):
        self.alpha = nnx.Param(jnp.zeros((channels,), jnp.float32))
        self.beta = nnx.Param(jnp.zeros((channels,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        alpha, beta = jnp.exp(self.alpha[...]), jnp.exp(self.beta[...])
        return x + 1.0 / (beta + 1e-9) * jnp.square(jnp.sin(x * alpha))


class Elementwise(nnx.Module):
    """A parameterless layer (ELU, tanh, identity, nearest upsampling) holding its index in a sequence."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fn(x)


def _activation(cfg: OobleckConfig, channels: int) -> nnx.Module:
    return SnakeBeta(channels) if cfg.use_snake else Elementwise(jax.nn.elu)


def _sequential(layers: nnx.List, x: jax.Array) -> jax.Array:
    for layer in layers:
        x = _sequential(layer, x) if isinstance(layer, nnx.List) else layer(x)
    return x


class ResidualUnit(nnx.Module):
    """``x + conv1(act(conv7_dilated(act(x))))`` (the channel count is unchanged)."""

    def __init__(self, cfg: OobleckConfig, channels: int, dilation: int, rngs: nnx.Rngs):
        self.layers = nnx.List([
            _activation(cfg, channels),
            WNConv1d(channels, channels, 7, dilation=dilation, padding=3 * dilation, rngs=rngs),
            _activation(cfg, channels),
            WNConv1d(channels, channels, 1, rngs=rngs),
        ])

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + _sequential(self.layers, x)


class EncoderBlock(nnx.Module):
    """Residual units (dilations 1, 3, 9), activation, strided convolution (kernel 2s) down by ``stride``."""

    def __init__(self, cfg: OobleckConfig, c_in: int, c_out: int, stride: int, rngs: nnx.Rngs):
        self.layers = nnx.List([
            *(ResidualUnit(cfg, c_in, d, rngs) for d in (1, 3, 9)), _activation(cfg, c_in),
            WNConv1d(c_in, c_out, 2 * stride, stride=stride, padding=math.ceil(stride / 2), rngs=rngs),
        ])

    def __call__(self, x: jax.Array) -> jax.Array:
        return _sequential(self.layers, x)


class DecoderBlock(nnx.Module):
    """Activation, up by ``stride`` (transposed convolution, or nearest repeat + convolution), residual units."""

    def __init__(self, cfg: OobleckConfig, c_in: int, c_out: int, stride: int, rngs: nnx.Rngs):
        if cfg.use_nearest_upsample:
            upsample = nnx.List([Elementwise(lambda x: jnp.repeat(x, stride, axis=1)),
                                 WNConv1d(c_in, c_out, 2 * stride, padding="same", bias=False, rngs=rngs)])
        else:
            upsample = WNConvTranspose1d(c_in, c_out, 2 * stride, stride=stride, padding=math.ceil(stride / 2),
                                         rngs=rngs)
        self.layers = nnx.List([_activation(cfg, c_in), upsample,
                                *(ResidualUnit(cfg, c_out, d, rngs) for d in (1, 3, 9))])

    def __call__(self, x: jax.Array) -> jax.Array:
        return _sequential(self.layers, x)


class OobleckEncoder(nnx.Module):
    """Audio [B, N, audio_channels] -> [B, N / hop, 2·latent_dim] (the VAE's mean and scale)."""

    def __init__(self, cfg: OobleckConfig, rngs: nnx.Rngs):
        widths = [cfg.channels * m for m in (1, *cfg.c_mults)]
        self.layers = nnx.List([
            WNConv1d(cfg.audio_channels, widths[0], 7, padding=3, rngs=rngs),
            *(EncoderBlock(cfg, widths[i], widths[i + 1], s, rngs) for i, s in enumerate(cfg.strides)),
            _activation(cfg, widths[-1]),
            WNConv1d(widths[-1], 2 * cfg.latent_dim, 3, padding=1, rngs=rngs),
        ])

    def __call__(self, audio: jax.Array) -> jax.Array:
        return _sequential(self.layers, audio)


class OobleckDecoder(nnx.Module):
    """Latents [B, T, latent_dim] -> audio [B, T·hop, audio_channels]."""

    def __init__(self, cfg: OobleckConfig, rngs: nnx.Rngs):
        widths = [cfg.channels * m for m in (1, *cfg.c_mults)]
        depth = len(cfg.strides)
        self.layers = nnx.List([
            WNConv1d(cfg.latent_dim, widths[-1], 7, padding=3, rngs=rngs),
            *(DecoderBlock(cfg, widths[i], widths[i - 1], cfg.strides[i - 1], rngs) for i in range(depth, 0, -1)),
            _activation(cfg, widths[0]),
            WNConv1d(widths[0], cfg.audio_channels, 7, padding=3, bias=False, rngs=rngs),
            Elementwise(jnp.tanh if cfg.final_tanh else (lambda x: x)),
        ])

    def __call__(self, latents: jax.Array) -> jax.Array:
        return _sequential(self.layers, latents)


def vae_moments(encoded: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The VAE bottleneck's (mean, stdev) from the encoder output: the first half of the channels is
    the mean, ``softplus(second half) + 1e-4`` the standard deviation."""
    mean, scale = jnp.split(encoded, 2, axis=-1)
    return mean, jax.nn.softplus(scale) + 1e-4


def vae_kl(mean: jax.Array, stdev: jax.Array) -> jax.Array:
    """stable-audio-tools' KL term: ``(mean² + var − log var − 1)`` summed over channels, mean elsewhere."""
    var = jnp.square(stdev)
    return jnp.mean(jnp.sum(jnp.square(mean) + var - jnp.log(var) - 1.0, axis=-1))


class OobleckVAE(nnx.Module):
    """Encoder, VAE bottleneck and decoder; parameter paths ``encoder.layers...``, ``decoder.layers...``
    as in a stable-audio-tools autoencoder checkpoint."""

    def __init__(self, cfg: OobleckConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        self.encoder = OobleckEncoder(cfg, rngs)
        self.decoder = OobleckDecoder(cfg, rngs)

    def encode(self, audio: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """Latents of ``audio``: the bottleneck mean, or with ``key`` a sample ``mean + stdev·noise``."""
        mean, stdev = vae_moments(self.encoder(audio))
        return mean if key is None else mean + stdev * jax.random.normal(key, mean.shape, mean.dtype)

    def decode(self, latents: jax.Array) -> jax.Array:
        return self.decoder(latents)


# ------------------------------------------------------------------ chunked encode / decode


def chunk_plan(frames: int, chunk: int = 128, overlap: int = 32) -> list[tuple[int, int, int]]:
    """stable-audio-tools' chunking of ``frames`` latent frames (``encode_audio``/``decode_audio``):
    chunks of ``chunk`` frames every ``chunk − overlap``, the last one anchored to the end; each keeps
    its frames ``[keep_from, keep_to)`` (``overlap // 2`` trimmed at inner edges). Returns
    ``(start, keep_from, keep_to)`` per chunk, in order (a later chunk overwrites an earlier one)."""
    if not 0 <= overlap < chunk:
        raise ValueError(f"chunked coding needs 0 <= overlap < chunk, got overlap {overlap}, chunk {chunk}")
    starts = list(range(0, frames - chunk + 1, chunk - overlap))
    if starts[-1] + chunk != frames:
        starts.append(frames - chunk)
    trim = overlap // 2
    return [(s, trim if i else 0, chunk - trim if i < len(starts) - 1 else chunk) for i, s in enumerate(starts)]


def chunked(fn, x: jax.Array, frames: int, in_per_frame: int, out_per_frame: int, chunk: int = 128,
            overlap: int = 32) -> jax.Array:
    """``fn`` (encode or decode) over ``x`` [B, frames·in_per_frame, C] in overlapping chunks (see
    ``chunk_plan``), one chunk at a time (``lax.map``: memory bounded by one chunk), pasted into
    [B, frames·out_per_frame, C_out]. ``frames <= chunk`` runs ``fn`` once on the whole input."""
    if frames <= chunk:
        return fn(x)
    plan = chunk_plan(frames, chunk, overlap)
    pieces = jax.lax.map(fn, jnp.stack([x[:, s * in_per_frame:(s + chunk) * in_per_frame] for s, _, _ in plan]))
    out = jnp.zeros((x.shape[0], frames * out_per_frame, pieces.shape[-1]), pieces.dtype)
    for piece, (start, keep_from, keep_to) in zip(pieces, plan):
        kept = piece[:, keep_from * out_per_frame:keep_to * out_per_frame]
        out = out.at[:, (start + keep_from) * out_per_frame:(start + keep_to) * out_per_frame].set(kept)
    return out


# ------------------------------------------------------------------ stable-audio-tools state dicts


def _flat(tree: dict, prefix: str = "") -> dict[str, jax.Array]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(_flat(value, name + ".") if isinstance(value, dict) else {name: value})
    return out


def torch_state(vae: OobleckVAE, prefix: str = "") -> dict[str, jax.Array]:
    """The VAE's weights under stable-audio-tools' state-dict keys (``prefix``: e.g. ``pretransform.model.``
    inside a full diffusion checkpoint)."""
    return _flat(nnx.to_pure_dict(nnx.state(vae, nnx.Param)), prefix)


def matching_torch_state(vae: OobleckVAE, tensors: dict, prefix: str = "", source: str = "the checkpoint") -> dict:
    """The entries of ``tensors`` (a stable-audio-tools state dict) that are ``vae``'s weights, by key;
    a missing, unexpected (under ``encoder.``/``decoder.``) or differently shaped weight is one line
    naming the key. ``vae`` may be abstract (``nnx.eval_shape``)."""
    ours = torch_state(vae, prefix)
    theirs = {k: v for k, v in tensors.items() if k.startswith((prefix + "encoder.", prefix + "decoder."))}
    for key in sorted(ours.keys() ^ theirs.keys()):
        what = "has no weight" if key in ours else "has a weight this Oobleck configuration does not"
        raise ValueError(f"{source} {what} {key!r} (check the autoencoder config)")
    for key, value in ours.items():
        if tuple(theirs[key].shape) != tuple(value.shape):
            raise ValueError(f"{source}: {key!r} has shape {tuple(theirs[key].shape)}, "
                             f"this config {tuple(value.shape)}")
    return theirs


def load_torch_state(vae: OobleckVAE, tensors: dict, prefix: str = "", source: str = "the checkpoint") -> None:
    """Put a stable-audio-tools autoencoder state dict (arrays by key) into ``vae`` in place (checked
    by ``matching_torch_state``)."""
    leaves = {k: jnp.asarray(v, jnp.float32) for k, v in matching_torch_state(vae, tensors, prefix, source).items()}
    state = nnx.state(vae, nnx.Param)

    def fill(tree: dict, path: str) -> dict:
        return {k: fill(v, f"{path}{k}.") if isinstance(v, dict) else leaves[f"{path}{k}"] for k, v in tree.items()}

    nnx.replace_by_pure_dict(state, fill(nnx.to_pure_dict(state), prefix))
    nnx.update(vae, state)
