"""Low-band simulation for audio super-resolution (SPEC §4 "SR"), numpy/scipy, for the input pipeline.

Methods (all return audio at the original rate and length, along the last axis):
- `cheby1`, `butter`, `bessel`, `ellip`: IIR low-pass of order 2-10 (scipy, `output="sos"`) applied
  forward and backward (`sosfiltfilt`: zero phase, squared magnitude response). Defaults follow the
  NVSR/AudioSR simulation (ssr_eval `lowpass.py`): cheby1 rp=0.1 dB; ellip rp=0.1 dB, rs=60 dB.
  Bessel is magnitude-normalized by default (-3 dB per pass at the cutoff, like butter, so the
  cutoff condition means the same thing); `bessel_norm="phase"` is scipy's and ssr_eval's default,
  which rolls off far below the cutoff (order 10: -6 dB at half the cutoff after filtfilt).
- `stft_cut`: zero the STFT bins above the cutoff (hann, n_fft=2048, hop n_fft/4) and invert.
- `resample_cut`: resample to 2*cutoff and back with soxr (HQ; a librosa dependency), whose
  anti-alias filter passes ~0.91 of the low Nyquist and stops everything above it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import signal

IIR_METHODS = ("cheby1", "butter", "bessel", "ellip")
METHODS = IIR_METHODS + ("stft_cut", "resample_cut")
DEFAULT_METHODS = IIR_METHODS + ("stft_cut",)  # SPEC §4: the four filters or an STFT hard cut
DEFAULT_ORDERS = tuple(range(2, 11))
MIN_ORDER, MAX_ORDER = 2, 10


def _check_cutoff(cutoff_hz: float, sr: int) -> None:
    if not 0 < cutoff_hz < sr / 2:
        raise ValueError(f"cutoff_hz must be in (0, {sr / 2:g}) for sr={sr}, got {cutoff_hz}")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown low-pass method {method!r}; choose one of {', '.join(METHODS)}")


def _check_order(order: int) -> None:
    if int(order) != order or not MIN_ORDER <= order <= MAX_ORDER:
        raise ValueError(f"order must be an integer in [{MIN_ORDER}, {MAX_ORDER}], got {order}")


def _stft_cut(audio: np.ndarray, sr: int, cutoff_hz: float, n_fft: int) -> np.ndarray:
    """Zero the STFT bins above `cutoff_hz` and invert (hann, 75 % overlap); same length."""
    n = audio.shape[-1]
    kwargs = dict(fs=sr, window="hann", nperseg=n_fft, noverlap=3 * n_fft // 4)
    x = _fit_length(audio, max(n, n_fft))  # scipy would shrink nperseg for shorter input
    freqs, _, spec = signal.stft(x, boundary="zeros", padded=True, axis=-1, **kwargs)
    spec[..., freqs > cutoff_hz, :] = 0
    _, out = signal.istft(spec, boundary=True, time_axis=-1, freq_axis=-2, **kwargs)
    return _fit_length(out, n)


def _resample_cut(audio: np.ndarray, sr: int, cutoff_hz: float) -> np.ndarray:
    """Resample to 2*cutoff_hz and back to `sr` (soxr HQ); same length."""
    import soxr  # librosa's resampler; imported here to keep this module's import light

    n = audio.shape[-1]
    rows = audio.reshape(-1, n).T  # soxr wants [frames, channels]
    low = soxr.resample(rows, sr, 2 * cutoff_hz, quality="HQ")
    back = soxr.resample(low, 2 * cutoff_hz, sr, quality="HQ")
    return _fit_length(back.T, n).reshape(audio.shape)


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Crop or right-pad with zeros along the last axis to `n` samples."""
    if x.shape[-1] >= n:
        return x[..., :n]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])


def simulate_low_band(audio: np.ndarray, sr: int, cutoff_hz: float, method: str = "cheby1", order: int = 8, *,
                      rp: float = 0.1, rs: float = 60.0, bessel_norm: str = "mag", n_fft: int = 2048) -> np.ndarray:
    """Full-band audio [..., N] -> low-band audio [..., N] at `sr`, band-limited at `cutoff_hz`.

    `order` applies to the IIR methods only; `rp`: pass-band ripple dB (cheby1, ellip), `rs`: stop-band
    attenuation dB (ellip), `bessel_norm`: scipy's `norm` for bessel ('mag', 'phase' or 'delay').
    The output keeps a floating input dtype.
    """
    _check_method(method)
    _check_cutoff(cutoff_hz, sr)
    audio = np.asarray(audio)
    if audio.ndim < 1 or audio.shape[-1] == 0:
        raise ValueError(f"audio must be [..., N] with N > 0, got shape {audio.shape}")
    dtype = audio.dtype if np.issubdtype(audio.dtype, np.floating) else np.float32
    x = audio.astype(np.float64)
    if method in IIR_METHODS:
        _check_order(order)
        ftype = f"bessel_{bessel_norm}" if method == "bessel" else method
        sos = signal.iirfilter(int(order), cutoff_hz / (sr / 2), rp=rp, rs=rs, btype="low", ftype=ftype, output="sos")
        out = signal.sosfiltfilt(sos, x, axis=-1)
    elif method == "stft_cut":
        out = _stft_cut(x, sr, cutoff_hz, n_fft)
    else:
        out = _resample_cut(x, sr, cutoff_hz)
    return out.astype(dtype, copy=False)


def draw_low_band(audio: np.ndarray, sr: int, cutoff_range: tuple[float, float],
                  methods: Sequence[str] = DEFAULT_METHODS, orders: Sequence[int] = DEFAULT_ORDERS,
                  rng: np.random.Generator | int | None = None) -> tuple[np.ndarray, float, str, int]:
    """Draw (cutoff ~ U[cutoff_range], method, order) and simulate: (low, cutoff_hz, method, order).

    The order is always drawn (so the random stream does not depend on the method) and reported as 0
    for the methods that have none.
    """
    lo, hi = (float(c) for c in cutoff_range)
    if not 0 < lo <= hi < sr / 2:
        raise ValueError(f"cutoff_range must satisfy 0 < low <= high < {sr / 2:g} for sr={sr}, got {cutoff_range}")
    if len(methods) == 0 or len(orders) == 0:
        raise ValueError(f"methods and orders must be non-empty, got {list(methods)} and {list(orders)}")
    for m in methods:
        _check_method(m)
    for o in orders:
        _check_order(o)
    rng = np.random.default_rng(rng)
    cutoff = float(rng.uniform(lo, hi))
    method = str(methods[int(rng.integers(len(methods)))])
    order = int(orders[int(rng.integers(len(orders)))])
    order = order if method in IIR_METHODS else 0
    low = simulate_low_band(audio, sr, cutoff, method, max(order, MIN_ORDER))
    return low, cutoff, method, order
