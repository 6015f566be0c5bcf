"""Speech-like SR source: determinism, level, full-band spectrum, harmonicity, voiced/unvoiced/silent mix."""

import dataclasses

import numpy as np
import pytest
from scipy import signal

from jaxstage.data.synthetic_speech import (
    DEFAULT_SETTINGS,
    SpeechSettings,
    SyntheticSpeechSource,
    synthesize,
)

SR = 16000


def _band_fraction(audio: np.ndarray, sr: int, lo: float, hi: float) -> float:
    power = np.abs(np.fft.rfft(audio.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(audio.size, 1.0 / sr)
    return float(power[(freqs >= lo) & (freqs < hi)].sum() / power.sum())


def _autocorr_peak(x: np.ndarray, lo: int, hi: int) -> tuple[float, int]:
    """Max of the (biased, energy-normalized) autocorrelation over lags [lo, hi] and its lag."""
    x = x - x.mean()
    r = np.fft.irfft(np.abs(np.fft.rfft(x, 2 * x.size)) ** 2)[: hi + 1] / max(np.sum(x * x), 1e-12)
    lag = lo + int(np.argmax(r[lo:hi + 1]))
    return float(r[lag]), lag


def _voiced_frames(utt, sr: int, frame_s: float = 0.04):
    """Frames that are fully voiced (envelope > 0.5) and free of noise events."""
    n = int(frame_s * sr)
    for start in range(0, utt.audio.size - n, n):
        seg = slice(start, start + n)
        if utt.voicing[seg].min() > 0.5 and utt.frication[seg].max() == 0.0:
            yield seg


def test_deterministic_per_seed_and_index():
    a = SyntheticSpeechSource(3, 10, SR, SR)
    b = SyntheticSpeechSource(3, 10, SR, SR)
    np.testing.assert_array_equal(a[4]["audio"], b[4]["audio"])
    np.testing.assert_array_equal(a[4]["audio"], a[4]["audio"])  # random access, no hidden state
    assert not np.allclose(a[4]["audio"], a[5]["audio"])
    assert not np.allclose(a[4]["audio"], SyntheticSpeechSource(4, 10, SR, SR)[4]["audio"])
    np.testing.assert_array_equal(synthesize(np.random.default_rng([3, 4]), SR, SR).audio, a[4]["audio"])


def test_source_protocol():
    src = SyntheticSpeechSource(0, 3, SR, 4000)
    assert len(src) == 3
    ex = src[2]
    assert set(ex) == {"audio", "caption", "seconds_start", "seconds_total"} and ex["caption"] == ""
    assert ex["seconds_start"] == 0.0 and ex["seconds_total"] == 4000 / SR
    assert ex["audio"].dtype == np.float32 and ex["audio"].shape == (4000,)
    with pytest.raises(IndexError):
        src[3]


@pytest.mark.parametrize("sr", [16000, 24000, 48000])
def test_level_and_rates(sr):
    for index in range(3):
        audio = SyntheticSpeechSource(1, 3, sr, sr)[index]["audio"]
        assert audio.shape == (sr,) and audio.dtype == np.float32 and np.all(np.isfinite(audio))
        assert np.max(np.abs(audio)) == pytest.approx(DEFAULT_SETTINGS.peak_level, abs=1e-6)
    quiet = dataclasses.replace(DEFAULT_SETTINGS, peak_level=0.3)
    audio = synthesize(np.random.default_rng(0), sr, sr // 2, quiet).audio
    assert np.max(np.abs(audio)) == pytest.approx(0.3, abs=1e-6)


def test_short_clip_is_finite():
    audio = synthesize(np.random.default_rng(0), SR, 100).audio
    assert audio.shape == (100,) and np.all(np.isfinite(audio)) and np.max(np.abs(audio)) <= 1.0


def test_substantial_high_band_energy():
    fractions = [_band_fraction(SyntheticSpeechSource(2, 6, SR, SR)[i]["audio"], SR, 4000, 8000) for i in range(6)]
    assert np.mean(fractions) >= 0.01
    assert min(fractions) >= 0.002
    # Full band at 48 kHz: energy keeps going above 8 kHz (voicing/breath and fricatives).
    audio48 = SyntheticSpeechSource(2, 1, 48000, 48000)[0]["audio"]
    assert _band_fraction(audio48, 48000, 8000, 24000) >= 0.001


@pytest.mark.parametrize("sr", [16000, 24000, 48000])
def test_voiced_frames_are_harmonic_at_f0(sr):
    """Autocorrelation peaks at the true pitch period (f0 range), in the signal and in the 4 kHz+ envelope."""
    lo_hz, hi_hz = DEFAULT_SETTINGS.f0_range_hz
    lo, hi = int(sr / hi_hz), int(np.ceil(sr / lo_hz))
    sos = signal.butter(8, 4000, "highpass", fs=sr, output="sos")
    peaks, errors, hf_errors = [], [], []
    for index in range(4):
        utt = synthesize(np.random.default_rng([11, index]), sr, sr)
        audio = utt.audio.astype(np.float64)
        hf_envelope = np.abs(signal.hilbert(signal.sosfilt(sos, audio)))
        for seg in _voiced_frames(utt, sr):
            f0 = np.mean(utt.f0_hz[seg])
            assert lo_hz <= f0 <= hi_hz
            peak, lag = _autocorr_peak(audio[seg], lo, hi)
            peaks.append(peak)
            errors.append(abs(sr / lag / f0 - 1))
            hf_errors.append(abs(sr / _autocorr_peak(hf_envelope[seg], lo, hi)[1] / f0 - 1))
    assert len(peaks) >= 5
    assert np.median(peaks) > 0.5
    assert np.mean(np.asarray(errors) < 0.1) >= 0.8
    # The high band is pitch-synchronous, hence predictable from the low band.
    assert np.mean(np.asarray(hf_errors) < 0.1) >= 0.7


def test_has_voiced_unvoiced_and_silent_frames():
    """Signal-only classes: silent (40 dB below the loudest frame), voiced (periodic), unvoiced (noisy, high ZCR)."""
    counts = np.zeros(3, int)
    n = int(0.02 * SR)
    for index in range(3):
        audio = SyntheticSpeechSource(5, 3, SR, SR)[index]["audio"].astype(np.float64)
        frames = audio[: audio.size // n * n].reshape(-1, n)
        rms = np.sqrt(np.mean(frames**2, axis=1))
        zcr = np.mean(np.abs(np.diff(np.sign(frames), axis=1)) > 0, axis=1)
        loud = rms > 0.05 * rms.max()
        periodic = np.array([_autocorr_peak(f, SR // 300, SR // 80)[0] for f in frames]) > 0.5
        counts += [np.sum(rms < 0.01 * rms.max()), np.sum(loud & periodic), np.sum(loud & ~periodic & (zcr > 0.3))]
    silent, voiced, unvoiced = counts
    assert silent >= 3 and voiced >= 10 and unvoiced >= 3, counts


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_SETTINGS.peak_level = 1.0
    assert isinstance(DEFAULT_SETTINGS, SpeechSettings)
