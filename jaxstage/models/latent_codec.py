"""The latent codec (``codec.kind=oobleck``): audio <-> the latents of a frozen Oobleck VAE.

``OobleckCodec`` holds only static hyperparameters (hashable, like the weight-free codecs); the VAE
weights are an explicit argument: ``codec.bind(params)`` gives an object with the weight-free codecs'
interface (``encode(audio) -> [B, T, latent_dim]``, ``decode(features, num_samples)``,
``num_frames``, ``hop_length``, ``channels``). Inside a compiled step the weights arrive as a
replicated, non-donated argument, so they are never captured as constants, optimized or saved.

- jaxstage audio is mono ``[B, N]``: it is tiled to the VAE's ``audio_channels`` on the way in and
  the decoded channels are averaged on the way out.
- encode gives the bottleneck mean (``latent="mean"``) or, given a PRNG key, a sample
  ``mean + stdev · noise`` (``latent="sample"``), divided by the pretransform ``scale``; decode
  multiplies by it.
- Sequences longer than ``chunk_frames`` latents are encoded/decoded in overlapping chunks exactly as
  stable-audio-tools does (``oobleck.chunked``: memory bounded by one chunk); ``chunk_frames=0``
  never chunks.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxstage.models.oobleck import OobleckConfig, OobleckVAE, chunked, vae_moments

LATENT_MODES = ("mean", "sample")


@functools.lru_cache(maxsize=None)
def vae_graph(cfg: OobleckConfig) -> nnx.GraphDef:
    """The VAE's graph (no weights allocated); ``nnx.merge(vae_graph(cfg), params)`` is the module."""
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: OobleckVAE(cfg, nnx.Rngs(0))), nnx.Param)
    return graphdef


def vae_params(vae: OobleckVAE) -> dict[str, Any]:
    """The VAE's weights as the nested dict the codec binds (``encoder``/``decoder`` subtrees)."""
    return nnx.to_pure_dict(nnx.state(vae, nnx.Param))


@dataclasses.dataclass(frozen=True)
class OobleckCodec:
    """Static description of a latent codec over an Oobleck VAE (see the module docstring)."""

    vae: OobleckConfig
    sample_rate: int
    scale: float = 1.0
    latent: str = "mean"
    chunk_frames: int = 128
    chunk_overlap: int = 32

    def __post_init__(self) -> None:
        if self.latent not in LATENT_MODES:
            raise ValueError(f"latent={self.latent!r} is not one of {', '.join(LATENT_MODES)}")
        if not self.scale > 0:
            raise ValueError(f"the pretransform scale must be > 0, got {self.scale}")
        if self.chunk_frames and not 0 <= self.chunk_overlap < self.chunk_frames:
            raise ValueError(f"chunked coding needs 0 <= overlap < chunk, got {self.chunk_overlap}, {self.chunk_frames}")

    @property
    def channels(self) -> int:
        return self.vae.latent_dim

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame; frame t covers samples [t·hop, (t + 1)·hop)."""
        return self.vae.hop

    def num_frames(self, num_samples: int) -> int:
        if num_samples % self.hop_length:
            raise ValueError(f"{num_samples} samples is not a multiple of the autoencoder's {self.hop_length} "
                             f"samples per latent")
        return num_samples // self.hop_length

    def bind(self, params: Any) -> BoundOobleckCodec:
        """The codec with its VAE weights (arrays or tracers), ready to encode/decode."""
        if params is None:
            raise ValueError("codec.kind=oobleck needs the autoencoder's weights (codec.autoencoder)")
        return BoundOobleckCodec(self, params)


@dataclasses.dataclass(frozen=True, eq=False)
class BoundOobleckCodec:
    """An ``OobleckCodec`` with its weights: the codec interface of ``models.codecs``."""

    codec: OobleckCodec
    params: Any

    @property
    def channels(self) -> int:
        return self.codec.channels

    @property
    def hop_length(self) -> int:
        return self.codec.hop_length

    def num_frames(self, num_samples: int) -> int:
        return self.codec.num_frames(num_samples)

    def _vae(self) -> OobleckVAE:
        return nnx.merge(vae_graph(self.codec.vae), self.params)

    def _chunked(self, fn, x: jax.Array, frames: int, in_per_frame: int, out_per_frame: int) -> jax.Array:
        c = self.codec
        if not c.chunk_frames:
            return fn(x)
        return chunked(fn, x, frames, in_per_frame, out_per_frame, c.chunk_frames, c.chunk_overlap)

    def encode(self, audio: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """[B, N] mono -> latents [B, N // hop, latent_dim] / scale (a sample when ``latent="sample"``
        and ``key`` is given, else the mean)."""
        c, vae = self.codec, self._vae()
        frames = c.num_frames(audio.shape[-1])
        x = jnp.repeat(audio.astype(jnp.float32)[..., None], c.vae.audio_channels, axis=-1)
        mean, stdev = vae_moments(self._chunked(vae.encoder, x, frames, c.hop_length, 1))
        if c.latent == "sample" and key is not None:
            mean = mean + stdev * jax.random.normal(key, mean.shape, mean.dtype)
        return mean / c.scale

    def decode(self, features: jax.Array, num_samples: int) -> jax.Array:
        """Latents [B, T, latent_dim] -> mono audio [B, num_samples] (channels averaged)."""
        c, vae = self.codec, self._vae()
        frames = features.shape[1]
        audio = self._chunked(vae.decoder, features.astype(jnp.float32) * c.scale, frames, 1, c.hop_length)
        audio = jnp.mean(audio, axis=-1)[:, :num_samples]
        short = num_samples - audio.shape[-1]
        return jnp.pad(audio, ((0, 0), (0, short))) if short > 0 else audio


@functools.lru_cache(maxsize=None)
def _jitted_encode(codec: OobleckCodec):
    # jit boundary: the weights are an argument (never baked into the executable as constants)
    return jax.jit(lambda params, audio: codec.bind(params).encode(audio))


def encode_host(codec: Any, audio: Any, batch_size: int = 16) -> jax.Array:
    """Features of host clips [M, N] outside a compiled step (codec statistics, the monitor batch):
    a bound latent codec encodes in jitted batches of ``batch_size`` clips; a weight-free codec in
    one call, as it always has."""
    if not isinstance(codec, BoundOobleckCodec):
        return codec.encode(jnp.asarray(audio))
    fn = _jitted_encode(codec.codec)
    return jnp.concatenate([fn(codec.params, jnp.asarray(audio[i:i + batch_size]))
                            for i in range(0, len(audio), batch_size)])
