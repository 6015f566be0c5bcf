"""Low-band replacement, the optional SR post-processing (SPEC §4): keep the input's own low band.

The model regenerates the whole spectrum, including the band the input already has. Replacement
takes the STFT of both signals and, per example, uses the input's complex bins below its cutoff and
the model's above it, with a linear cross-fade over ``transition_hz`` just below the cutoff (where the
simulated low-pass filters already roll off), then inverts. Pure jax.numpy: it runs inside the
compiled SR sampler with the cutoff as a traced per-example value.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage.models.codecs import istft, stft


def input_weight(cutoff_hz: jax.Array, freqs: np.ndarray, transition_hz: float) -> jax.Array:
    """[B, F] weight of the input's bins: 1 below ``cutoff - transition``, 0 at and above the cutoff,
    linear in between (a hard switch at the cutoff when ``transition_hz = 0``)."""
    cutoff = jnp.asarray(cutoff_hz, jnp.float32)[:, None]
    f = jnp.asarray(freqs, jnp.float32)[None, :]
    if transition_hz <= 0:
        return (f < cutoff).astype(jnp.float32)
    return jnp.clip((cutoff - f) / transition_hz, 0.0, 1.0)


def replace_low_band(estimate: jax.Array, low: jax.Array, cutoff_hz: jax.Array, sample_rate: int, *,
                     n_fft: int = 1024, hop_length: int | None = None, transition_hz: float = 200.0) -> jax.Array:
    """``estimate`` [B, N] with its band below ``cutoff_hz`` [B] (Hz) taken from ``low`` [B, N]; [B, N] out.

    STFT: centered Hann, ``n_fft`` with hop ``n_fft // 4`` by default (the same transform as the
    codecs; exact inverse for an unmodified spectrum).
    """
    if estimate.shape != low.shape or estimate.ndim != 2:
        raise ValueError(f"estimate and low must both be [B, N], got {estimate.shape} and {low.shape}")
    num_samples = estimate.shape[-1]
    if num_samples <= n_fft // 2:
        raise ValueError(f"replace_low_band needs clips longer than n_fft / 2 = {n_fft // 2} samples, "
                         f"got {num_samples}")
    hop = hop_length or n_fft // 4
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    w = input_weight(cutoff_hz, freqs, transition_hz)[:, None, :]  # [B, 1, F]
    spec = w * stft(low, n_fft, hop) + (1.0 - w) * stft(estimate, n_fft, hop)
    return istft(spec, n_fft, hop, num_samples)
