"""Reconstruction losses of stable-audio-tools' autoencoder training, in ``jax.numpy``.

stable-audio-tools 0.0.19 trains Oobleck with its copy of auraloss (``training/losses/auraloss.py``):
per resolution, ``w_sc · spectral convergence + w_log_mag · mean|log |X| − log |Y|| + w_lin_mag ·
mean||X| − |Y||``, with ``|X| = sqrt(max(re² + im², eps))`` of a centred, reflect-padded, periodic-Hann
STFT; the multi-resolution loss averages the resolutions; stereo audio adds the sum-and-difference
form ``(w_sum · L(L + R) + w_diff · L(L − R)) / 2``. Its default resolutions are FFT sizes 2048 … 32
with 75% overlap (``DEFAULT_RESOLUTIONS``). Not implemented: A-weighting (``perceptual_weighting``),
mel/chroma scales, windows shorter than the FFT.
Audio is channels-last ``[B, N, C]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxstage.models.codecs import stft

DEFAULT_RESOLUTIONS = tuple((s, s // 4) for s in (2048, 1024, 512, 256, 128, 64, 32))  # (fft size, hop)


def stft_magnitude(audio: jax.Array, fft_size: int, hop: int, eps: float = 1e-8) -> jax.Array:
    """``sqrt(max(|STFT|², eps))`` of every channel: [B, N, C] -> [B·C, frames, fft_size // 2 + 1]."""
    mono = jnp.moveaxis(audio, -1, 1).reshape(-1, audio.shape[1])
    spec = stft(mono, fft_size, hop)
    return jnp.sqrt(jnp.maximum(jnp.square(spec.real) + jnp.square(spec.imag), eps))


def stft_loss(estimate: jax.Array, target: jax.Array, fft_size: int, hop: int, w_sc: float = 1.0,
              w_log_mag: float = 1.0, w_lin_mag: float = 0.0, eps: float = 1e-8) -> jax.Array:
    """One resolution: spectral convergence ``‖|Y| − |X|‖_F / ‖|Y|‖_F`` averaged over signals, plus the
    mean L1 distances of the log and linear magnitudes."""
    x, y = stft_magnitude(estimate, fft_size, hop, eps), stft_magnitude(target, fft_size, hop, eps)
    convergence = jnp.mean(jnp.linalg.norm(y - x, axis=(1, 2)) / jnp.linalg.norm(y, axis=(1, 2)))
    log_mag = jnp.mean(jnp.abs(jnp.log(x) - jnp.log(y)))
    lin_mag = jnp.mean(jnp.abs(x - y))
    return w_sc * convergence + w_log_mag * log_mag + w_lin_mag * lin_mag


def multi_resolution_stft_loss(estimate: jax.Array, target: jax.Array,
                               resolutions: tuple[tuple[int, int], ...] = DEFAULT_RESOLUTIONS, **weights) -> jax.Array:
    """The mean of ``stft_loss`` over ``resolutions`` ((fft size, hop) pairs)."""
    losses = [stft_loss(estimate, target, fft_size, hop, **weights) for fft_size, hop in resolutions]
    return sum(losses) / len(losses)


def sum_and_difference_stft_loss(estimate: jax.Array, target: jax.Array,
                                 resolutions: tuple[tuple[int, int], ...] = DEFAULT_RESOLUTIONS, w_sum: float = 1.0,
                                 w_diff: float = 1.0, **weights) -> jax.Array:
    """Stereo ``[B, N, 2]``: ``(w_sum · L(left + right) + w_diff · L(left − right)) / 2`` with L the
    multi-resolution STFT loss."""
    if estimate.shape[-1] != 2:
        raise ValueError(f"the sum-and-difference loss needs stereo audio, got {estimate.shape[-1]} channel(s)")

    def side(sign: float) -> jax.Array:
        return multi_resolution_stft_loss(estimate[..., :1] + sign * estimate[..., 1:],
                                          target[..., :1] + sign * target[..., 1:], resolutions, **weights)

    return (w_sum * side(1.0) + w_diff * side(-1.0)) / 2
