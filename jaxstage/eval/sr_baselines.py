"""Reference points for super-resolution scores that need no model (numpy/scipy, pure).

An SR model should beat the unprocessed input, but on LSD that is a low bar: the input's empty
high band scores a huge log distance however crude the fill. :func:`oracle_noise_fill` is a
stronger yardstick: the input plus random-phase noise above the cutoff whose magnitude in every
bin is the *reference's own* time-averaged magnitude, scaled to the reference's high-band energy
(an oracle spectral envelope and level, with no time structure). A model that beats it on LSD-HF
has learned more than the average spectrum's level.
"""

from __future__ import annotations

import numpy as np
from scipy import signal


def oracle_noise_fill(reference: np.ndarray, low: np.ndarray, cutoff_hz: float, sample_rate: int, *,
                      n_fft: int = 512, seed: int = 0) -> np.ndarray:
    """``low`` [N] plus noise above ``cutoff_hz`` shaped like ``reference``'s average spectrum; [N] float32."""
    reference, low = np.asarray(reference, np.float64), np.asarray(low, np.float64)
    if reference.shape != low.shape or reference.ndim != 1:
        raise ValueError(f"reference and low must be the same [N], got {reference.shape} and {low.shape}")
    kwargs = dict(fs=sample_rate, window="hann", nperseg=n_fft, noverlap=3 * n_fft // 4)
    freqs, _, spec = signal.stft(reference, **kwargs)
    envelope = np.sqrt(np.mean(np.abs(spec) ** 2, axis=-1))  # [F] RMS magnitude over frames
    phase = np.exp(2j * np.pi * np.random.default_rng(seed).random(spec.shape))
    band = freqs > cutoff_hz
    _, noise = signal.istft((envelope * band)[:, None] * phase, **kwargs)
    # overlap-add of random-phase frames loses power: rescale to the reference's high-band energy
    _, _, realized = signal.stft(noise[: reference.size], **kwargs)
    target = np.sum(np.abs(spec[band]) ** 2)
    got = np.sum(np.abs(realized[band]) ** 2)
    noise = noise * np.sqrt(target / got) if got > 0 else noise
    out = low.copy()
    n = min(out.size, noise.size)
    out[:n] += noise[:n]
    return out.astype(np.float32)
