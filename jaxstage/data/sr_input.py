"""Read a low-band file for super-resolution: decode, downmix, bring it to the model's rate, find its cutoff.

A file below the model's rate (e.g. 8 kHz for a 16 kHz model) is resampled up and its cutoff is its
own Nyquist frequency unless given. A file already at the model's rate needs the cutoff given (its
bandwidth cannot be read from the header). A file above the model's rate is refused: the run
generates at its own rate. Every problem is an :class:`SRInputError` whose one-line message names
the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxstage.data.audio_io import BadAudio, decode, resample, to_mono, validate


class SRInputError(ValueError):
    """A low-band input that cannot be super-resolved (the message names the file)."""


@dataclass
class LowBandInput:
    """A decoded input at the model's rate: ``audio`` float32 [N], ``cutoff_hz``, the file's own rate."""

    path: Path
    audio: np.ndarray
    cutoff_hz: float
    file_rate: int
    warning: str | None = None  # e.g. a cutoff outside the trained range


def load_low_band(path: str | Path, model_rate: int, cutoff_hz: float | None = None,
                  trained_range: tuple[float, float] | None = None) -> LowBandInput:
    """Decode ``path`` for a model generating at ``model_rate``; ``cutoff_hz``: the input's bandwidth
    (default: the file's Nyquist frequency when its rate is below ``model_rate``)."""
    path = Path(path)
    try:
        data, rate, total_frames = decode(path)
        validate(data, rate, total_frames, min_seconds=0.0)  # empty, NaN/Inf or silent
    except BadAudio as err:
        raise SRInputError(f"{path}: {err.reason}") from None
    if rate > model_rate:
        raise SRInputError(f"{path}: sample rate {rate} Hz is above the model's {model_rate} Hz (the run "
                           f"generates {model_rate} Hz audio; give a band-limited file at or below that rate)")
    if cutoff_hz is None:
        if rate == model_rate:
            raise SRInputError(f"{path}: already at the model's rate {model_rate} Hz, so its bandwidth is unknown; "
                               f"pass --cutoff HZ")
        cutoff_hz = rate / 2
    cutoff_hz = float(cutoff_hz)
    if not 0 < cutoff_hz <= rate / 2 or cutoff_hz >= model_rate / 2:
        raise SRInputError(f"{path}: cutoff {cutoff_hz:g} Hz must be in (0, {rate / 2:g}] (the file's Nyquist) "
                           f"and below the model's Nyquist {model_rate / 2:g} Hz")
    audio = resample(to_mono(data), rate, model_rate)
    warning = None
    if trained_range is not None and not trained_range[0] <= cutoff_hz <= trained_range[1]:
        warning = (f"{path}: cutoff {cutoff_hz:g} Hz is outside the trained range "
                   f"[{trained_range[0]:g}, {trained_range[1]:g}] Hz; expect lower quality")
    return LowBandInput(path=path, audio=audio.astype(np.float32), cutoff_hz=cutoff_hz, file_rate=rate,
                        warning=warning)
