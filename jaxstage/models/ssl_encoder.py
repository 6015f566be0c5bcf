"""SSL targets from a real encoder inside the compiled step: the JAX wav2vec2/HuBERT/WavLM port.

`NeuralSSL` is the `encoder` source of `guidance.ssl`: audio [B, N] at the data rate -> frame
features [B, frames, dim], the chosen hidden-state layers averaged (as `jaxstage prepare
--ssl-layers` does with the PyTorch model, so precomputed and on-the-fly targets agree). Its weights
are frozen: they travel as a separate, non-donated argument of the compiled step, never in the
optimizer or the checkpoint.

    ssl, params = load_neural_ssl("models/hubert-base", layers=(6, 7), data_rate=16000)
    feats = jax.jit(ssl.features)(params, audio)        # [B, frames, 768]
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

DEFAULT_ENCODER_RATE = 16000


def resample_fft(audio: jax.Array, rate_in: int, rate_out: int) -> jax.Array:
    """Band-limited resampling of fixed-length clips by zero-padding/truncating the spectrum.

    [B, N] -> [B, round(N · rate_out / rate_in)]; exact for signals band-limited below both
    Nyquist rates and periodic over the clip (edges ring slightly otherwise, like any FFT resampler).
    """
    if rate_in == rate_out:
        return audio
    n_in = audio.shape[-1]
    n_out = int(round(n_in * rate_out / rate_in))
    # irfft with n=n_out truncates or zero-pads the spectrum to n_out // 2 + 1 bins
    return jnp.fft.irfft(jnp.fft.rfft(audio, axis=-1), n=n_out, axis=-1) * (n_out / n_in)


def standardize(audio: jax.Array, eps: float = 1e-7) -> jax.Array:
    """Zero mean, unit variance per clip (wav2vec2 feature extractors' `do_normalize`)."""
    mean = audio.mean(-1, keepdims=True)
    var = jnp.square(audio - mean).mean(-1, keepdims=True)
    return (audio - mean) * jax.lax.rsqrt(var + eps)


@dataclasses.dataclass(frozen=True)
class NeuralSSL:
    """A frozen wav2vec2-family encoder as an SSL target source (weights passed to `features`)."""

    graphdef: Any  # nnx.GraphDef of the Wav2Vec2Encoder
    layers: tuple[int, ...]  # hidden_states indices averaged (0 = input to the first layer)
    data_rate: int
    encoder_rate: int
    normalize: bool
    dim: int

    def features(self, params: Any, audio: jax.Array) -> jax.Array:
        """[B, N] at data_rate -> [B, frames, dim] float32 (no gradient)."""
        audio = audio.astype(jnp.float32)
        if self.normalize:
            audio = standardize(audio)
        audio = resample_fft(audio, self.data_rate, self.encoder_rate)
        model = nnx.merge(self.graphdef, params)
        hidden = model(audio).hidden_states
        return jax.lax.stop_gradient(jnp.mean(jnp.stack([hidden[k] for k in self.layers]), axis=0))


def _extractor_settings(model_dir: str | os.PathLike) -> tuple[int, bool]:
    """(sampling_rate, do_normalize) from a saved preprocessor_config.json, else (16000, False)."""
    path = os.path.join(os.fspath(model_dir), "preprocessor_config.json")
    if not os.path.isfile(path):
        return DEFAULT_ENCODER_RATE, False
    with open(path) as f:
        config = json.load(f)
    return int(config.get("sampling_rate", DEFAULT_ENCODER_RATE)), bool(config.get("do_normalize", False))


def load_neural_ssl(model_dir: str | os.PathLike, layers: tuple[int, ...], data_rate: int) -> tuple[NeuralSSL, Any]:
    """Load a transformers wav2vec2/HuBERT/WavLM directory as (NeuralSSL, frozen params)."""
    from jaxstage.models.convert_wav2vec2 import load_encoder

    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"guidance.ssl_encoder_dir={os.fspath(model_dir)!r} is not a directory")
    model = load_encoder(model_dir)
    num_layers = model.cfg.num_hidden_layers
    layers = tuple(int(k) for k in layers)
    bad = [k for k in layers if not 0 <= k <= num_layers]
    if not layers or bad:
        raise ValueError(f"guidance.ssl_layers={layers}: each must be in 0..{num_layers} for {os.fspath(model_dir)}")
    rate, normalize = _extractor_settings(model_dir)
    graphdef, params = nnx.split(model)
    return NeuralSSL(graphdef=graphdef, layers=layers, data_rate=int(data_rate), encoder_rate=rate,
                     normalize=normalize, dim=model.cfg.hidden_size), params
