"""A clip embedding that needs no weights, for the always-available Fréchet distance (FD-spectral).

Per clip: the log-mel spectrogram (Hann STFT of ``n_fft`` ≈ 64 ms, hop n_fft/4, ``n_mels`` bands
from 0 to Nyquist, log10 of power + 1e-8), summarized by its mean and standard deviation over frames:
[2 · n_mels] values that capture the spectral balance and its variation over time. It is a crude
stand-in for a learned audio embedding (VGGish, PANNs, CLAP) and its FD values are not comparable
with published FAD numbers; it is here so that every run can be scored offline. Pure numpy.
"""

from __future__ import annotations

import numpy as np

from jaxstage.models.codecs import hann_window, mel_filterbank

N_MELS = 64
LOG_FLOOR = 1e-8


def spectral_embedding(audio: np.ndarray, sample_rate: int, n_mels: int = N_MELS) -> np.ndarray:
    """[N] or [B, N] audio -> [2·n_mels] or [B, 2·n_mels] float64 (mean and std of log-mel over frames)."""
    x = np.asarray(audio, np.float64)
    single = x.ndim == 1
    x = np.atleast_2d(x)
    n_fft = int(2 ** np.round(np.log2(0.064 * sample_rate)))  # the power of two nearest 64 ms (log scale)
    hop = n_fft // 4
    if x.shape[-1] < n_fft:
        x = np.pad(x, ((0, 0), (0, n_fft - x.shape[-1])))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=-1)[:, ::hop]
    power = np.abs(np.fft.rfft(frames * hann_window(n_fft), axis=-1)) ** 2  # [B, T, F]
    mel = power @ mel_filterbank(sample_rate, n_fft, n_mels, 0.0, sample_rate / 2).astype(np.float64).T
    logmel = np.log10(mel + LOG_FLOOR)
    out = np.concatenate([logmel.mean(axis=1), logmel.std(axis=1)], axis=-1)
    return out[0] if single else out
