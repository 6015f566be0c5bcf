"""Weight-free audio codecs: audio [B, N] float32 <-> features [B, T, C] (channels-last, T = frames).
(The latent codec over a frozen autoencoder is ``models.latent_codec``; it shares this interface
once bound to its weights.)

- `StftCodec`: compressed complex STFT, real and imaginary parts as channels; exactly invertible.
- `MelCodec`: log-mel spectrogram, inverted by mel pseudo-inverse + fast Griffin-Lim.
- `CodecStats` + `fit_stats` / `normalize` / `denormalize`: data-derived feature normalization.

Codecs are frozen dataclasses of static hyperparameters: hashable, so they can be closed over in
`jax.jit` or passed as static arguments. All encode/decode functions are pure and jit-able.
``codec.bind(params)`` is the codec ready to use: a weight-free codec has no weights
(``params=None``) and returns itself; ``encode``'s ``key`` (a latent codec's sampling) is unused.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Union

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

# ------------------------------------- STFT primitives (static shapes; window and overlap-add normalization in numpy)


@functools.lru_cache(maxsize=None)
def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window (as scipy.signal.get_window('hann') / torch.hann_window)."""
    n = np.arange(n_fft)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)).astype(np.float32)


def stft_num_frames(num_samples: int, n_fft: int, hop_length: int) -> int:
    """Frames of a centered STFT (padding n_fft // 2 on both sides)."""
    pad = n_fft // 2
    return 1 + (num_samples + 2 * pad - n_fft) // hop_length


def stft(audio: jax.Array, n_fft: int, hop_length: int, pad_mode: str = "reflect") -> jax.Array:
    """Centered, Hann-windowed STFT: [B, N] real -> [B, T, n_fft // 2 + 1] complex."""
    pad = n_fft // 2
    padded = jnp.pad(audio, ((0, 0), (pad, pad)), mode=pad_mode)
    num_frames = stft_num_frames(audio.shape[-1], n_fft, hop_length)
    idx = hop_length * np.arange(num_frames)[:, None] + np.arange(n_fft)[None, :]
    frames = padded[:, idx] * hann_window(n_fft)  # [B, T, n_fft]
    return jnp.fft.rfft(frames, n=n_fft, axis=-1)


@functools.lru_cache(maxsize=None)
def _window_square_sum(num_frames: int, n_fft: int, hop_length: int, min_value: float) -> np.ndarray:
    """Overlap-added squared window, with near-zero entries replaced by 1 (no division blow-up)."""
    length = (num_frames - 1) * hop_length + n_fft
    wss = np.zeros(length, np.float64)
    w2 = hann_window(n_fft).astype(np.float64) ** 2
    for t in range(num_frames):
        wss[t * hop_length : t * hop_length + n_fft] += w2
    return np.where(wss > min_value, wss, 1.0).astype(np.float32)


def _overlap_add(frames: jax.Array, hop_length: int) -> jax.Array:
    """[B, T, n_fft] -> [B, (T - 1) * hop + n_fft] by R = ceil(n_fft / hop) shifted adds (no scatter)."""
    batch, num_frames, n_fft = frames.shape
    r = -(-n_fft // hop_length)
    frames = jnp.pad(frames, ((0, 0), (0, 0), (0, r * hop_length - n_fft)))
    chunks = frames.reshape(batch, num_frames, r, hop_length)
    shifted = [jnp.pad(chunks[:, :, k], ((0, 0), (k, r - 1 - k), (0, 0))) for k in range(r)]  # r small, static
    return sum(shifted).reshape(batch, -1)[:, : (num_frames - 1) * hop_length + n_fft]


def istft(
    spec: jax.Array, n_fft: int, hop_length: int, num_samples: int, min_window_sum: float = 1e-10
) -> jax.Array:
    """Inverse of `stft`: weighted overlap-add normalized by the window-square sum -> [B, num_samples]."""
    num_frames = spec.shape[1]
    frames = jnp.fft.irfft(spec, n=n_fft, axis=-1) * hann_window(n_fft)
    audio = _overlap_add(frames, hop_length) / _window_square_sum(num_frames, n_fft, hop_length, min_window_sum)
    pad = n_fft // 2
    audio = audio[:, pad : pad + num_samples]
    short = num_samples - audio.shape[-1]
    return jnp.pad(audio, ((0, 0), (0, short))) if short > 0 else audio


def _safe_magnitude_pow(re: jax.Array, im: jax.Array, exponent: float, eps: float) -> jax.Array:
    """(|z|^2 + eps)^(exponent / 2): finite value and gradient at z = 0."""
    return (re * re + im * im + eps) ** (0.5 * exponent)


def _check_stft_params(n_fft: int, hop_length: int) -> None:
    if n_fft < 2 or not 0 < hop_length < n_fft:
        raise ValueError(f"need n_fft >= 2 and 0 < hop_length < n_fft, got n_fft={n_fft}, hop_length={hop_length}")


# ------------------------------------------------------------------------------------------------------------- codecs


@dataclasses.dataclass(frozen=True)
class StftCodec:
    """Compressed complex STFT: X -> scale * |X|^compress * e^{i angle X}; channels [real..., imag...].

    `eps` keeps the magnitude power differentiable at |X| = 0; it changes reconstructions only for
    bins with |X| below ~sqrt(eps).
    """

    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 128
    compress: float = 0.5
    scale: float = 1.0
    eps: float = 1e-12
    pad_mode: str = "reflect"

    def __post_init__(self) -> None:
        _check_stft_params(self.n_fft, self.hop_length)
        if self.compress <= 0 or self.scale <= 0:
            raise ValueError(f"compress and scale must be > 0, got {self.compress}, {self.scale}")

    @property
    def num_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def channels(self) -> int:
        return 2 * self.num_bins

    def num_frames(self, num_samples: int) -> int:
        return stft_num_frames(num_samples, self.n_fft, self.hop_length)

    def bind(self, params: None = None) -> StftCodec:
        return self

    def encode(self, audio: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """[B, N] -> [B, T, 2 * (n_fft // 2 + 1)]."""
        spec = stft(audio.astype(jnp.float32), self.n_fft, self.hop_length, self.pad_mode)
        re, im = jnp.real(spec), jnp.imag(spec)
        gain = self.scale * _safe_magnitude_pow(re, im, self.compress - 1.0, self.eps)
        return jnp.concatenate([re * gain, im * gain], axis=-1)

    def decode(self, features: jax.Array, num_samples: int) -> jax.Array:
        """[B, T, C] -> [B, num_samples]; exact inverse of `encode`."""
        re, im = jnp.split(features.astype(jnp.float32) / self.scale, 2, axis=-1)
        gain = _safe_magnitude_pow(re, im, 1.0 / self.compress - 1.0, self.eps)
        spec = jax.lax.complex(re * gain, im * gain)
        return istft(spec, self.n_fft, self.hop_length, num_samples)


def _hz_to_mel(hz: np.ndarray, f_break: float = 1000.0, log_step: float = np.log(6.4) / 27.0) -> np.ndarray:
    """Slaney mel scale: linear (3 mels per 200 Hz) below f_break, logarithmic above."""
    hz = np.asarray(hz, np.float64)
    f_sp = 200.0 / 3.0
    mel_break = f_break / f_sp
    return np.where(hz >= f_break, mel_break + np.log(np.maximum(hz, 1e-10) / f_break) / log_step, hz / f_sp)


def _mel_to_hz(mel: np.ndarray, f_break: float = 1000.0, log_step: float = np.log(6.4) / 27.0) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    f_sp = 200.0 / 3.0
    mel_break = f_break / f_sp
    return np.where(mel >= mel_break, f_break * np.exp(log_step * (mel - mel_break)), f_sp * mel)


@functools.lru_cache(maxsize=None)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Slaney-style triangular mel filterbank with area normalization, [n_mels, n_fft // 2 + 1].

    Matches librosa.filters.mel(htk=False, norm='slaney') without importing librosa.
    """
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    mel_freqs = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
    fdiff = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_freqs[2:] - mel_freqs[:-2]))[:, None]
    return weights.astype(np.float32)


@functools.lru_cache(maxsize=None)
def _pinv(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Moore-Penrose pseudo-inverse of the mel filterbank, [n_fft // 2 + 1, n_mels]."""
    fb = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max).astype(np.float64)
    return np.linalg.pinv(fb).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class MelCodec:
    """Log-mel spectrogram log(max(mel(|X|^power), log_floor)); decoded by fast Griffin-Lim.

    Decoding: mel pseudo-inverse (clipped >= 0) gives a linear magnitude, then `griffin_lim_iters`
    iterations of fast Griffin-Lim (Perraudin et al. 2013, `momentum`) from a fixed random phase
    drawn with PRNG key `phase_seed` (deterministic).
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None
    log_floor: float = 1e-5
    griffin_lim_iters: int = 32
    momentum: float = 0.99
    power: float = 1.0
    phase_seed: int = 0
    pad_mode: str = "reflect"

    def __post_init__(self) -> None:
        _check_stft_params(self.n_fft, self.hop_length)
        nyquist = self.sample_rate / 2.0
        if not 0.0 <= self.f_min < self._f_max <= nyquist:
            raise ValueError(f"need 0 <= f_min < f_max <= {nyquist}, got {self.f_min}, {self._f_max}")

    @property
    def _f_max(self) -> float:
        return self.sample_rate / 2.0 if self.f_max is None else float(self.f_max)

    @property
    def channels(self) -> int:
        return self.n_mels

    @property
    def filterbank(self) -> np.ndarray:
        """[n_mels, n_fft // 2 + 1]."""
        return mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, float(self.f_min), self._f_max)

    def num_frames(self, num_samples: int) -> int:
        return stft_num_frames(num_samples, self.n_fft, self.hop_length)

    def bind(self, params: None = None) -> MelCodec:
        return self

    def encode(self, audio: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """[B, N] -> [B, T, n_mels] log-mel."""
        spec = stft(audio.astype(jnp.float32), self.n_fft, self.hop_length, self.pad_mode)
        mag = jnp.abs(spec) ** self.power
        mel = mag @ self.filterbank.T
        return jnp.log(jnp.maximum(mel, self.log_floor))

    def linear_magnitude(self, features: jax.Array) -> jax.Array:
        """[B, T, n_mels] -> [B, T, F] linear STFT magnitude via the filterbank pseudo-inverse."""
        inverse = _pinv(self.sample_rate, self.n_fft, self.n_mels, float(self.f_min), self._f_max)  # [F, n_mels]
        mag = jnp.maximum(jnp.exp(features.astype(jnp.float32)) @ inverse.T, 0.0)
        return mag ** (1.0 / self.power)

    def decode(self, features: jax.Array, num_samples: int) -> jax.Array:
        """[B, T, n_mels] -> [B, num_samples] by Griffin-Lim."""
        mag = self.linear_magnitude(features)
        n_fft, hop = self.n_fft, self.hop_length
        phase = jax.random.uniform(jax.random.key(self.phase_seed), mag.shape, jnp.float32, 0.0, 2.0 * jnp.pi)
        angles = jax.lax.complex(jnp.cos(phase), jnp.sin(phase))
        tiny = jnp.finfo(jnp.float32).tiny
        beta = self.momentum / (1.0 + self.momentum)

        def body(_, carry):
            angles, prev = carry
            audio = istft(mag * angles, n_fft, hop, num_samples)
            rebuilt = stft(audio, n_fft, hop, self.pad_mode)
            new = rebuilt - beta * prev
            return new / (jnp.abs(new) + tiny), rebuilt

        angles, _ = jax.lax.fori_loop(0, self.griffin_lim_iters, body, (angles, jnp.zeros_like(angles)))
        return istft(mag * angles, n_fft, hop, num_samples)


Codec = Union[StftCodec, MelCodec]

CODECS = {"stft": StftCodec, "mel": MelCodec}


def frame_mask(codec: Codec, sample_mask: jax.Array) -> jax.Array:
    """Sample padding mask [B, N] (True = real audio) -> frame mask [B, T] float32 (1 = real frame).

    Frame t (centered STFT) is real when the sample at its window centre, t·hop (the last sample for
    a centre past the end), is real: with right padding, the frames whose centre is in the clip.
    """
    n = sample_mask.shape[-1]
    centres = np.minimum(np.arange(codec.num_frames(n)) * codec.hop_length, n - 1)
    return jnp.asarray(sample_mask)[:, centres].astype(jnp.float32)


def make_codec(kind: str, **kwargs) -> Codec:
    """Build a codec by name: "stft" | "mel"."""
    if kind not in CODECS:
        raise ValueError(f"unknown codec kind {kind!r}; choices: {sorted(CODECS)}")
    return CODECS[kind](**kwargs)


# ----------------------------------------------------------------------------------------- data-derived normalization


@flax.struct.dataclass
class CodecStats:
    """Feature normalization statistics (a pytree of arrays: lives in the train state/checkpoint)."""

    mean: jax.Array  # [C]
    std: jax.Array  # [C]


def fit_stats(codec: Codec, audio_batch: jax.Array, per_channel: bool, min_std: float = 1e-5) -> CodecStats:
    """Mean/std of `codec.encode(audio_batch)` over batch and frames (``codec`` bound to its weights).

    per_channel=False fits one scalar mean and one scalar std, broadcast to [C].
    """
    return stats_of_features(codec.encode(jnp.asarray(audio_batch, jnp.float32)), per_channel, min_std)


def stats_of_features(features: jax.Array, per_channel: bool, min_std: float = 1e-5) -> CodecStats:
    """Mean/std of features [..., C] over every axis but the channels (see :func:`fit_stats`)."""
    flat = features.reshape(-1, features.shape[-1])
    if per_channel:
        mean, std = flat.mean(axis=0), flat.std(axis=0)
    else:
        mean = jnp.full(flat.shape[-1], flat.mean())
        std = jnp.full(flat.shape[-1], flat.std())
    return CodecStats(mean=mean, std=jnp.maximum(std, min_std))


def normalize(features: jax.Array, stats: CodecStats) -> jax.Array:
    return (features - stats.mean) / stats.std


def denormalize(features: jax.Array, stats: CodecStats) -> jax.Array:
    return features * stats.std + stats.mean
