"""Super-resolution metrics (SPEC §4): LSD, LSD-HF, LSD-LF and SI-SDR, in numpy and in JAX.

LSD follows the NVSR/AudioSR toolkit (ssr_eval `AudioMetrics`): hop = int(sr/100),
n_fft = int(2048/(44100/sr)) (2048 at 44.1 kHz, 2229 at 48 kHz, 743 at 16 kHz), magnitude STFT with a
periodic hann window, centred frames, and per frame

    sqrt(mean_bins(log10(S_ref**2 / (S_est + 1e-12)**2 + 1e-12)**2)),

averaged over frames (EPS = 1e-12 on the magnitude and inside the log, as SPEC and the toolkit write it).
Centre padding is `reflect`, librosa's default before 0.10 and so what the published NVSR/AudioSR
numbers used (librosa >= 0.10 pads with zeros; `pad_mode="constant"` gives that); it changes only
the first and last frame or two.

LSD-LF / LSD-HF restrict the mean over bins to bins `0..k` / `k+1..n_fft//2`, where
k = floor(input_sr/2 / (sr/2) * (n_fft//2)) is the bin of the input's Nyquist frequency.

SI-SDR: both signals zero-mean, alpha = <est, ref>/||ref||^2, 10*log10(||alpha ref||^2/||est - alpha ref||^2).
An exact (scaled) match is capped at 200 dB by a relative noise floor; a silent estimate gives -inf.

Lengths: signals that differ by at most `tolerance` samples are both cut to the shorter length (the
toolkit cuts the end too and asserts a difference < 100); a larger difference is a ValueError.
Default tolerance: sr // 100 samples (10 ms, one LSD hop) where the sample rate is known, else 0.

Numpy functions (`*_np`, float64, one file or a batch [..., N]) raise ValueError on a silent
reference for SI-SDR; the JAX functions (float32, jitted, [B, N] or [N], sample rates static) return
NaN there instead, since a traced value cannot raise.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

EPS = 1e-12  # ssr_eval's EPS: added to the estimate's magnitude and inside the log
SI_SDR_FLOOR = 1e-20  # relative noise-energy floor: SI-SDR is at most 200 dB
SILENT_RMS = 1e-10  # a zero-mean reference with RMS at or below this is silent (SI-SDR undefined)
METRICS = ("lsd", "lsd_hf", "lsd_lf", "si_sdr")  # what evaluate_pair returns, in this order
PAD_MODE = "reflect"


# ---------------------------------------------------------------- shared (numpy or jax.numpy as xp)


def stft_params(sr: int) -> tuple[int, int]:
    """(n_fft, hop) of the toolkit's LSD STFT at sample rate `sr`."""
    if sr <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    return int(2048 / (44100 / sr)), int(sr / 100)


def cutoff_bin(sr: int, input_sr: int) -> int:
    """Index of the last LF bin: floor(input Nyquist / output Nyquist * (n_fft // 2))."""
    if not 0 < input_sr <= sr:
        raise ValueError(f"input_sr must be in (0, sr={sr}], got {input_sr}")
    n_fft, _ = stft_params(sr)
    return int(np.floor((input_sr / 2) / (sr / 2) * (n_fft // 2)))


def align_lengths(ref: Any, est: Any, tolerance: int) -> tuple[Any, Any]:
    """Cut both to the shorter length along the last axis if they differ by <= `tolerance` samples."""
    n_ref, n_est = ref.shape[-1], est.shape[-1]
    if abs(n_ref - n_est) > tolerance:
        raise ValueError(f"length mismatch: reference {n_ref} vs estimate {n_est} samples (tolerance {tolerance})")
    n = min(n_ref, n_est)
    return ref[..., :n], est[..., :n]


def _magnitude(x: Any, n_fft: int, hop: int, xp: Any, pad_mode: str) -> Any:
    """[..., N] -> [..., frames, n_fft//2 + 1] magnitude STFT (periodic hann, centred, like librosa)."""
    pad = n_fft // 2
    if x.shape[-1] <= pad and pad_mode == "reflect":
        raise ValueError(f"signal too short for the LSD STFT: {x.shape[-1]} samples <= n_fft/2 = {pad}")
    x = xp.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode=pad_mode)
    frames = 1 + (x.shape[-1] - n_fft) // hop
    index = hop * np.arange(frames)[:, None] + np.arange(n_fft)[None, :]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # scipy get_window("hann", fftbins=True)
    return xp.abs(xp.fft.rfft(x[..., index] * xp.asarray(window, dtype=x.dtype), axis=-1))


def _log_distance(ref: Any, est: Any, sr: int, xp: Any, pad_mode: str) -> Any:
    """Squared log-spectral distance per frame and bin, [..., frames, bins]."""
    n_fft, hop = stft_params(sr)
    s_ref = _magnitude(ref, n_fft, hop, xp, pad_mode)
    s_est = _magnitude(est, n_fft, hop, xp, pad_mode)
    return xp.log10(s_ref**2 / (s_est + EPS) ** 2 + EPS) ** 2


def _reduce(dist: Any, xp: Any) -> Any:
    """Mean over frames of sqrt(mean over bins)."""
    return xp.mean(xp.sqrt(xp.mean(dist, axis=-1)), axis=-1)


def _bands(dist: Any, sr: int, input_sr: int | None, xp: Any) -> dict[str, Any]:
    out = {"lsd": _reduce(dist, xp)}
    if input_sr is not None:
        k = cutoff_bin(sr, input_sr)
        if k + 1 >= dist.shape[-1]:
            raise ValueError(f"input_sr {input_sr} leaves no HF bins at sr {sr}")
        out["lsd_lf"] = _reduce(dist[..., : k + 1], xp)
        out["lsd_hf"] = _reduce(dist[..., k + 1 :], xp)
    return out


def _si_sdr_parts(ref: Any, est: Any, xp: Any) -> tuple[Any, Any, Any]:
    """(10*log10 ratio, zero-mean reference energy, N)."""
    ref = ref - xp.mean(ref, axis=-1, keepdims=True)
    est = est - xp.mean(est, axis=-1, keepdims=True)
    energy = xp.sum(ref * ref, axis=-1, keepdims=True)
    alpha = xp.sum(est * ref, axis=-1, keepdims=True) / xp.maximum(energy, xp.finfo(ref.dtype).tiny)
    target = alpha * ref
    noise = est - target
    signal_energy = xp.sum(target * target, axis=-1)
    # An exact match is capped at 200 dB; a silent (or orthogonal) estimate gives -inf.
    ratio = signal_energy / (xp.sum(noise * noise, axis=-1) + SI_SDR_FLOOR * signal_energy + xp.finfo(ref.dtype).tiny)
    return 10 * xp.log10(ratio), energy[..., 0], ref.shape[-1]


# ---------------------------------------------------------------- numpy (files)


def _np_pair(ref: Any, est: Any, tolerance: int) -> tuple[np.ndarray, np.ndarray]:
    ref, est = np.asarray(ref, np.float64), np.asarray(est, np.float64)
    if ref.shape[:-1] != est.shape[:-1]:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs estimate {est.shape}")
    return align_lengths(ref, est, tolerance)


def _default_tolerance(sr: int, tolerance: int | None) -> int:
    return sr // 100 if tolerance is None else int(tolerance)


def lsd_bands_np(ref: Any, est: Any, sr: int, input_sr: int | None = None, *, tolerance: int | None = None,
                 pad_mode: str = PAD_MODE) -> dict[str, np.ndarray | float]:
    """{'lsd'} (plus 'lsd_lf', 'lsd_hf' given `input_sr`); floats for [N] input, arrays for [..., N]."""
    ref, est = _np_pair(ref, est, _default_tolerance(sr, tolerance))
    out = _bands(_log_distance(ref, est, sr, np, pad_mode), sr, input_sr, np)
    return {k: (float(v) if np.ndim(v) == 0 else v) for k, v in out.items()}


def si_sdr_np(ref: Any, est: Any, *, tolerance: int = 0) -> Any:
    """Scale-invariant SDR in dB; ValueError if the (zero-mean) reference is silent."""
    ref, est = _np_pair(ref, est, tolerance)
    with np.errstate(divide="ignore"):  # log10(0): silent estimate (-inf) or silent reference (raised below)
        value, energy, n = _si_sdr_parts(ref, est, np)
    if np.any(energy <= n * SILENT_RMS**2):
        raise ValueError(f"silent reference (RMS <= {SILENT_RMS:g}): SI-SDR is undefined")
    return float(value) if np.ndim(value) == 0 else value


def evaluate_pair(ref: Any, est: Any, sr: int, input_sr: int, *, tolerance: int | None = None,
                  pad_mode: str = PAD_MODE) -> dict[str, float]:
    """One reference/estimate pair at `sr` (input band-limited at `input_sr`): lsd, lsd_hf, lsd_lf, si_sdr."""
    tolerance = _default_tolerance(sr, tolerance)
    out = lsd_bands_np(ref, est, sr, input_sr, tolerance=tolerance, pad_mode=pad_mode)
    out["si_sdr"] = si_sdr_np(ref, est, tolerance=tolerance)
    return {k: float(out[k]) for k in METRICS}


# ---------------------------------------------------------------- JAX (in-graph evaluation)


def _jax_pair(ref: jax.Array, est: jax.Array, tolerance: int) -> tuple[jax.Array, jax.Array]:
    ref, est = jnp.asarray(ref, jnp.float32), jnp.asarray(est, jnp.float32)
    if ref.ndim not in (1, 2) or ref.shape[:-1] != est.shape[:-1]:
        raise ValueError(f"expected [N] or [B, N] pairs, got reference {ref.shape} vs estimate {est.shape}")
    return align_lengths(ref, est, tolerance)


@partial(jax.jit, static_argnames=("sr", "input_sr", "tolerance", "pad_mode"))
def lsd_bands(ref: jax.Array, est: jax.Array, sr: int, input_sr: int | None = None, tolerance: int | None = None,
              pad_mode: str = PAD_MODE) -> dict[str, jax.Array]:
    """JAX `lsd_bands_np`: {'lsd'} (plus 'lsd_lf', 'lsd_hf' given `input_sr`), shape [B] or []."""
    ref, est = _jax_pair(ref, est, _default_tolerance(sr, tolerance))
    return _bands(_log_distance(ref, est, sr, jnp, pad_mode), sr, input_sr, jnp)


@partial(jax.jit, static_argnames=("tolerance",))
def si_sdr(ref: jax.Array, est: jax.Array, tolerance: int = 0) -> jax.Array:
    """JAX SI-SDR in dB, [B] or []; NaN where the reference is silent."""
    ref, est = _jax_pair(ref, est, tolerance)
    value, energy, n = _si_sdr_parts(ref, est, jnp)
    return jnp.where(energy <= n * SILENT_RMS**2, jnp.nan, value)
