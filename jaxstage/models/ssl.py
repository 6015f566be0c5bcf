"""SSL target features y = φ(x₀) for the alignment loss and the discrepancy D (SPEC §3.1).

`SpectralSSL` is the `spectral` source: a **fixed spectral stand-in, not an SSL model**. It has no
weights and learned nothing; it stacks multi-resolution log-mel and MFCC features so that the
alignment machinery (projector, cosine loss, monitor D) can run offline when no pretrained encoder
exists. Results obtained with it say nothing about alignment to real SSL representations.

Interface for all sources: targets are frame features `[B, T_ssl, d_ssl]`, resampled to the
backbone's token rate with `resample_frames` (linear interpolation, first and last frames aligned).
Precomputed targets arrive in the batch as `batch["ssl_targets"]` `[B, T_pre, d_ssl]` and are
resampled the same way (`ssl_targets`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage.models.codecs import mel_filterbank, stft


@functools.lru_cache(maxsize=None)
def dct_matrix(n_in: int, n_out: int, first: int = 1) -> np.ndarray:
    """Orthonormal DCT-II rows `first .. first + n_out - 1` as an [n_in, n_out] matrix (x @ D)."""
    m = np.arange(n_in)[:, None] + 0.5
    k = np.arange(first, first + n_out)[None, :]
    scale = np.where(k == 0, np.sqrt(1.0 / n_in), np.sqrt(2.0 / n_in))
    return (scale * np.cos(np.pi * k * m / n_in)).astype(np.float32)


def resample_frames(features: jax.Array, num_tokens: int) -> jax.Array:
    """Linear interpolation along time: [B, T_src, d] -> [B, num_tokens, d].

    First and last frames map onto first and last tokens (centered STFT frames and backbone tokens
    both span the clip end to end), so a linear ramp is reproduced exactly; T_src == num_tokens is
    the identity.
    """
    t_src = features.shape[1]
    if t_src == num_tokens:
        return features
    step = (t_src - 1) / max(num_tokens - 1, 1)
    pos = jnp.arange(num_tokens, dtype=jnp.float32) * step
    lo = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, t_src - 1)
    hi = jnp.minimum(lo + 1, t_src - 1)
    w = (pos - lo.astype(jnp.float32))[None, :, None].astype(features.dtype)
    return jnp.take(features, lo, axis=1) * (1 - w) + jnp.take(features, hi, axis=1) * w


def _normalize_group(x: jax.Array, num_groups: int, eps: float) -> jax.Array:
    """Center over the last axis and scale to L2 norm 1/sqrt(num_groups) (zero frames stay 0)."""
    x = x - x.mean(axis=-1, keepdims=True)
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)
    return x / (norm * np.sqrt(num_groups))


@dataclasses.dataclass(frozen=True)
class SpectralSSL:
    """Fixed multi-resolution log-mel + MFCC frames: audio [B, N] -> [B, T, dim]; a stand-in, no weights.

    Per resolution (n_fft, hop): log(max(mel(|STFT|^power), log_floor)) [n_mels] and MFCC c1..c_n_mfcc
    (orthonormal DCT-II of the log-mel; c0, the level, is dropped). Every resolution is resampled to
    the frame grid of `resolutions[0]` and the groups are concatenated [lm_0, mfcc_0, lm_1, ...].

    Per-frame standardization: each of the 2·R groups is centered over its features and scaled to
    L2 norm 1/sqrt(2R), so a frame has unit norm and every group weighs the same under a cosine.
    Centering makes the features gain-invariant (up to the log floor); silent frames are 0.
    """

    sample_rate: int = 16000
    resolutions: tuple[tuple[int, int], ...] = ((256, 64), (512, 128), (1024, 256))
    n_mels: int = 40
    n_mfcc: int = 13
    log_floor: float = 1e-5
    power: float = 2.0
    f_min: float = 0.0
    f_max: float | None = None
    norm_eps: float = 1e-8
    pad_mode: str = "reflect"

    def __post_init__(self) -> None:
        if not self.resolutions:
            raise ValueError("resolutions must name at least one (n_fft, hop)")
        for n_fft, hop in self.resolutions:
            if n_fft < 2 or not 0 < hop <= n_fft:
                raise ValueError(f"resolutions: need n_fft >= 2 and 0 < hop <= n_fft, got ({n_fft}, {hop})")
        if not 1 <= self.n_mfcc < self.n_mels:
            raise ValueError(f"n_mfcc must be in [1, n_mels), got {self.n_mfcc} with n_mels={self.n_mels}")
        for name in ("log_floor", "power", "norm_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.f_min < self._f_max <= self.sample_rate / 2.0:
            raise ValueError(f"need 0 <= f_min < f_max <= {self.sample_rate / 2.0}, got {self.f_min}, {self._f_max}")

    @property
    def _f_max(self) -> float:
        return self.sample_rate / 2.0 if self.f_max is None else float(self.f_max)

    @property
    def dim(self) -> int:
        """d_ssl = len(resolutions) * (n_mels + n_mfcc)."""
        return len(self.resolutions) * (self.n_mels + self.n_mfcc)

    def num_frames(self, num_samples: int) -> int:
        """T: the centered-STFT frame count of resolutions[0]."""
        return 1 + num_samples // self.resolutions[0][1]

    def _groups(self, audio: jax.Array, n_fft: int, hop: int) -> tuple[jax.Array, jax.Array]:
        """Log-mel [B, T_r, n_mels] and MFCC [B, T_r, n_mfcc] at one resolution."""
        mag = jnp.abs(stft(audio, n_fft, hop, self.pad_mode)) ** self.power
        fb = mel_filterbank(self.sample_rate, n_fft, self.n_mels, float(self.f_min), self._f_max)
        # log(max(mel, floor)) up to the constant log(floor), which centering removes; silence is exactly 0
        log_mel = jnp.log(jnp.maximum(mag @ fb.T, self.log_floor) / self.log_floor)
        return log_mel, log_mel @ dct_matrix(self.n_mels, self.n_mfcc)

    def features(self, audio: jax.Array) -> jax.Array:
        """[B, N] -> [B, T, dim], float32, per-frame standardized (see the class docstring)."""
        audio = audio.astype(jnp.float32)
        num_frames = self.num_frames(audio.shape[-1])
        num_groups = 2 * len(self.resolutions)
        groups = []
        for n_fft, hop in self.resolutions:  # static, small
            for g in self._groups(audio, n_fft, hop):
                groups.append(_normalize_group(resample_frames(g, num_frames), num_groups, self.norm_eps))
        return jnp.concatenate(groups, axis=-1)


def ssl_targets(batch: Mapping[str, jax.Array], num_tokens: int) -> jax.Array:
    """Precomputed targets ``batch["ssl_targets"]`` resampled to [B, num_tokens, d_ssl], without gradient
    (φ computed in the step goes through ``train.recipe.ssl_targets``)."""
    if "ssl_targets" not in batch:
        raise ValueError("no SSL targets: the batch has no 'ssl_targets' (precomputed targets come with prepared data)")
    return jax.lax.stop_gradient(resample_frames(jnp.asarray(batch["ssl_targets"], jnp.float32), num_tokens))
