"""Decode one audio file into a fixed-length clip with a mask; reject files unfit for training.

`load_audio` decodes with soundfile (librosa/audioread as a fallback), downmixes, resamples (soxr_hq
as librosa does it, or librosa's kaiser_best) and crops or right-pads. A file that cannot be used
raises `BadAudio(reason)` with a short reason (unreadable or corrupt, empty, too short, NaN/Inf,
silent, unsupported format); callers skip it. Only the part of a long file that the clip needs is
decoded. The helpers below `load_audio` are pure array math.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

SILENCE_PEAK = 1e-4
READ_MARGIN_SECONDS = 0.1  # decoded beyond the crop so resampling has no edge effect inside the clip
KNOWN_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".caf",
                    ".w64", ".rf64", ".m4a", ".aac", ".mp4", ".webm", ".wma")


class BadAudio(Exception):
    """An audio file that cannot be used; `reason` is short (e.g. 'too short (0.10 s < 0.50 s)')."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def resample_type() -> str:
    """The best librosa resampler installed: soxr_hq, else kaiser_best (resampy), else polyphase."""
    for module, res_type in (("soxr", "soxr_hq"), ("resampy", "kaiser_best")):
        try:
            __import__(module)
            return res_type
        except ImportError:
            continue
    return "polyphase"


def load_audio(path: str | Path, sample_rate: int, num_samples: int, mono: bool = True,
               min_seconds: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """File -> (audio float32 [num_samples] (or [channels, num_samples] if not mono), mask bool [num_samples]).

    The clip is the file's first `num_samples` at `sample_rate`; `mask` is False on right padding.
    """
    audio, mask, _ = load_audio_timed(path, sample_rate, num_samples, mono=mono, min_seconds=min_seconds)
    return audio, mask


def load_audio_timed(path: str | Path, sample_rate: int, num_samples: int, mono: bool = True,
                     min_seconds: float = 0.5) -> tuple[np.ndarray, np.ndarray, float]:
    """:func:`load_audio` plus the whole file's duration in seconds (its ``seconds_total``)."""
    data, rate, total_frames = decode(path, max_seconds=num_samples / sample_rate + READ_MARGIN_SECONDS)
    validate(data, rate, total_frames, min_seconds)
    signal = to_mono(data) if mono else data.T  # [N] or [C, N]
    signal = resample(signal, rate, sample_rate)
    audio, mask = fit_length(signal, num_samples)
    return audio, mask, total_frames / rate


def decode(path: str | Path, max_seconds: float | None = None) -> tuple[np.ndarray, int, int]:
    """File -> (float32 [frames, channels], rate, total frames in the file); at most `max_seconds` read."""
    path = Path(path)
    if not path.is_file():
        raise BadAudio("file not found")
    if os.path.getsize(path) == 0:
        raise BadAudio("empty file (0 bytes)")
    import soundfile as sf

    try:
        info = sf.info(str(path))
        frames = info.frames
        if max_seconds is not None and frames > 0:
            frames = min(frames, math.ceil(max_seconds * info.samplerate))
        data, rate = sf.read(str(path), frames=frames if frames > 0 else -1, dtype="float32", always_2d=True)
        return data, int(rate), max(int(info.frames), data.shape[0])
    except Exception as sf_err:  # noqa: BLE001 - any decoder failure is a property of the file
        try:
            return _decode_librosa(path)
        except Exception:  # noqa: BLE001
            pass
        if path.suffix.lower() not in KNOWN_EXTENSIONS:
            raise BadAudio(f"unsupported format {path.suffix or '(no extension)'!r}") from None
        raise BadAudio(f"unreadable or corrupt ({_first_line(sf_err)})") from None


def _decode_librosa(path: Path) -> tuple[np.ndarray, int, int]:
    import librosa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data, rate = librosa.load(str(path), sr=None, mono=False, dtype=np.float32)
    data = data[:, None] if data.ndim == 1 else data.T
    return np.ascontiguousarray(data), int(rate), data.shape[0]


def _first_line(err: Exception) -> str:
    """The decoder's message without the "Error opening 'path': " prefix (the path is reported anyway)."""
    lines = str(err).strip().splitlines()
    text = lines[-1] if lines else type(err).__name__
    if text.startswith("Error opening") and "': " in text:
        text = text.split("': ", 1)[1]
    return text.strip().rstrip(".")[:120]


def validate(data: np.ndarray, rate: int, total_frames: int, min_seconds: float) -> None:
    """Raise BadAudio for an empty, non-finite, too short or silent signal [frames, channels]."""
    if data.size == 0 or total_frames == 0:
        raise BadAudio("empty (0 samples)")
    if not np.all(np.isfinite(data)):
        raise BadAudio("contains NaN/Inf")
    seconds = total_frames / rate
    if seconds < min_seconds:
        raise BadAudio(f"too short ({seconds:.2f} s < {min_seconds:.2f} s)")
    peak = float(np.max(np.abs(data)))
    if peak < SILENCE_PEAK:
        raise BadAudio(f"silent (peak {peak:.1e} < {SILENCE_PEAK:.0e})")


def to_mono(data: np.ndarray) -> np.ndarray:
    """[frames, channels] -> [frames] by averaging channels."""
    return data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]


def resample(signal: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Resample along the last axis; float32 out. Same result as `librosa.resample` with
    `resample_type()`: soxr_hq is called directly (librosa's import costs seconds per process)."""
    if rate == target:
        return signal.astype(np.float32, copy=False)
    res_type = resample_type()
    if res_type != "soxr_hq":
        import librosa

        out = librosa.resample(signal, orig_sr=rate, target_sr=target, res_type=res_type, axis=-1)
        return out.astype(np.float32, copy=False)
    import soxr

    length = int(np.ceil(signal.shape[-1] * target / rate))  # librosa's fix=True length
    rows = signal.reshape(-1, signal.shape[-1]).astype(np.float32, copy=False)
    out = [fit_length(soxr.resample(row, rate, target, quality="soxr_hq"), length)[0] for row in rows]
    return np.stack(out).reshape(signal.shape[:-1] + (length,))


def fit_length(signal: np.ndarray, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop or right-pad the last axis to `num_samples`; mask True where the signal is real."""
    length = min(signal.shape[-1], num_samples)
    out = np.zeros(signal.shape[:-1] + (num_samples,), np.float32)
    out[..., :length] = signal[..., :length]
    mask = np.zeros(num_samples, bool)
    mask[:length] = True
    return out, mask


def fit_full_scale(audio: np.ndarray, peak_level: float | None) -> tuple[np.ndarray, float]:
    """(``audio`` scaled down to peak at ``peak_level`` when its peak exceeds full scale (1.0), else
    unchanged; its original peak). ``peak_level=None`` keeps raw levels (16-bit PCM then clips)."""
    peak = float(np.max(np.abs(audio))) if np.size(audio) else 0.0
    if peak_level is None or peak <= 1.0 or not math.isfinite(peak):
        return audio, peak
    return (audio * (peak_level / peak)).astype(audio.dtype), peak
