"""load_audio: decoding, downmix, resampling, crop/pad masks, and every BadAudio reason."""

import os

import numpy as np
import pytest
import soundfile as sf

from jaxstage.data.audio_io import BadAudio, fit_length, load_audio, to_mono

SR = 8000


def tone(seconds, rate, freq=440.0, amp=0.3, channels=1):
    t = np.arange(int(round(seconds * rate))) / rate
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return x if channels == 1 else np.stack([x * (c + 1) / channels for c in range(channels)], 1)


def dominant_hz(x, rate):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spectrum) * rate / len(x)


def test_fit_length_crops_and_pads():
    audio, mask = fit_length(np.arange(5, dtype=np.float32), 8)
    assert audio.tolist() == [0, 1, 2, 3, 4, 0, 0, 0] and mask.tolist() == [True] * 5 + [False] * 3
    audio, mask = fit_length(np.ones((2, 10), np.float32), 4)
    assert audio.shape == (2, 4) and mask.all()
    assert to_mono(np.array([[1.0, 3.0]], np.float32)).tolist() == [2.0]


def test_same_rate_is_exact_and_padded(tmp_path):
    x = tone(0.7, SR)
    sf.write(tmp_path / "a.wav", x, SR, subtype="FLOAT")
    audio, mask = load_audio(tmp_path / "a.wav", SR, SR)
    assert audio.dtype == np.float32 and audio.shape == (SR,) and mask.dtype == bool
    np.testing.assert_array_equal(audio[:5600], x)
    assert mask.sum() == 5600 and not audio[5600:].any()


def test_96k_stereo_resampled_and_downmixed(tmp_path):
    sf.write(tmp_path / "hi.flac", tone(1.5, 96000, channels=2), 96000)
    audio, mask = load_audio(tmp_path / "hi.flac", SR, SR)
    assert mask.all() and abs(dominant_hz(audio, SR) - 440) < 5
    assert abs(np.abs(audio[100:-100]).max() - 0.225) < 0.01  # channel amplitudes 0.15 and 0.3, averaged
    stereo, mask = load_audio(tmp_path / "hi.flac", SR, SR, mono=False)
    assert stereo.shape == (2, SR) and mask.all()


@pytest.mark.parametrize("fmt,subtype,ext", [("MP3", None, "mp3"), ("OGG", "OPUS", "opus"), ("OGG", "VORBIS", "ogg")])
def test_compressed_formats(tmp_path, fmt, subtype, ext):
    path = tmp_path / f"a.{ext}"
    sf.write(path, tone(1.5, 16000), 16000, format=fmt, subtype=subtype)
    audio, mask = load_audio(path, SR, SR)
    assert mask.all() and abs(dominant_hz(audio, SR) - 440) < 5


def write_bytes(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name,make,reason", [
    ("corrupt.wav", lambda p: write_bytes(p, os.urandom(4000)), "unreadable or corrupt"),
    ("empty.wav", lambda p: write_bytes(p, b""), "empty file"),
    ("zero.wav", lambda p: sf.write(p, np.zeros(0, np.float32), SR), "empty (0 samples)"),
    ("short.wav", lambda p: sf.write(p, tone(0.1, SR), SR), "too short (0.10 s < 0.50 s)"),
    ("nan.wav", lambda p: sf.write(p, np.where(np.arange(SR) == 9, np.nan, tone(1, SR)), SR, subtype="FLOAT"),
     "NaN/Inf"),
    ("silent.wav", lambda p: sf.write(p, tone(1, SR) * 1e-6, SR, subtype="FLOAT"), "silent"),
    ("noise.xyz", lambda p: write_bytes(p, os.urandom(4000)), "unsupported format '.xyz'"),
    ("missing.wav", lambda p: None, "file not found"),
])
def test_bad_audio_reasons(tmp_path, name, make, reason):
    make(tmp_path / name)
    with pytest.raises(BadAudio) as info:
        load_audio(tmp_path / name, SR, SR)
    assert reason in info.value.reason and str(tmp_path) not in info.value.reason


def test_min_seconds_is_configurable(tmp_path):
    sf.write(tmp_path / "short.wav", tone(0.1, SR), SR)
    audio, mask = load_audio(tmp_path / "short.wav", SR, SR, min_seconds=0.05)
    assert mask.sum() == 800


def test_resample_matches_librosa():
    librosa = pytest.importorskip("librosa")
    from jaxstage.data.audio_io import resample, resample_type

    x = np.random.default_rng(0).standard_normal((2, 4001)).astype(np.float32)
    for rate, target in [(96000, 8000), (8000, 16000), (44100, 16000)]:
        ours = resample(x, rate, target)
        theirs = librosa.resample(x, orig_sr=rate, target_sr=target, res_type=resample_type(), axis=-1)
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
        np.testing.assert_allclose(resample(x[0], rate, target), theirs[0], atol=1e-6)
