"""Generated audio above full scale is never silently clipped: every WAV writer scales a clip that
peaks above 1.0 down to ``sample.peak_level`` and reports the peak; raw levels only when asked."""

import numpy as np
import soundfile as sf

from jaxstage.data.audio_io import fit_full_scale
from jaxstage.inference.wav_files import write_wav_atomic
from jaxstage.run.logging import RunLogger


def _loud(n: int = 8000, peak: float = 1.7) -> np.ndarray:
    t = np.arange(n) / 8000
    return (peak * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _longest_clipped_run(audio: np.ndarray) -> int:
    """Longest run of consecutive samples at 16-bit full scale."""
    at_limit = np.abs(audio) >= 32767 / 32768
    best = run = 0
    for hit in at_limit:
        run = run + 1 if hit else 0
        best = max(best, run)
    return best


def test_fit_full_scale_scales_only_clips_above_full_scale():
    quiet = _loud(peak=0.5)
    same, peak = fit_full_scale(quiet, 0.98)
    assert same is quiet and abs(peak - 0.5) < 1e-3
    scaled, peak = fit_full_scale(_loud(), 0.98)
    assert abs(peak - 1.7) < 1e-3 and abs(np.max(np.abs(scaled)) - 0.98) < 1e-6
    np.testing.assert_allclose(scaled, _loud() * (0.98 / peak), rtol=1e-6)  # a gain, not a limiter
    raw, _ = fit_full_scale(_loud(), None)
    assert raw is not None and np.max(np.abs(raw)) > 1.0


def test_wav_files_are_scaled_unless_raw_levels(tmp_path):
    peak = write_wav_atomic(tmp_path / "a.wav", _loud(), 8000, 0.98)
    audio, _ = sf.read(tmp_path / "a.wav")
    assert abs(peak - 1.7) < 1e-3 and _longest_clipped_run(audio) == 0 and abs(np.max(np.abs(audio)) - 0.98) < 1e-3
    write_wav_atomic(tmp_path / "raw.wav", _loud(), 8000, None)
    raw, _ = sf.read(tmp_path / "raw.wav")
    assert _longest_clipped_run(raw) > 10  # what the old writer did to every loud clip


def test_run_samples_are_scaled_and_the_peak_reported(tmp_path, capsys):
    (tmp_path / "samples").mkdir()
    logger = RunLogger(tmp_path, progress_bar=False, peak_level=0.98)
    paths = logger.audio(5, ["loud", "quiet"], np.stack([_loud(), _loud(peak=0.3)]), 8000)
    logger.close()
    loud, _ = sf.read(paths[0])
    quiet, _ = sf.read(paths[1])
    assert _longest_clipped_run(loud) == 0 and abs(np.max(np.abs(quiet)) - 0.3) < 1e-3
    assert "1 of 2 peak above full scale (max 1.70); scaled to 0.98" in capsys.readouterr().err
