"""SR metrics: LSD (toolkit STFT, exact scale law, HF/LF split, hand-computed case), SI-SDR, numpy vs JAX."""

import math

import librosa
import numpy as np
import pytest

from jaxstage.eval import sr_metrics as m

SR = 16000
INPUT_SR = 8000
RNG = np.random.default_rng(0)
REF = RNG.standard_normal((3, SR // 2))  # 0.5 s white noise, three rows
EST = 0.8 * REF + 0.3 * RNG.standard_normal(REF.shape)


def evaluate_batch(ref, est, sr, input_sr):
    """JAX counterpart of `evaluate_pair` over [B, N] (or [N]): lsd, lsd_hf, lsd_lf, si_sdr."""
    tolerance = sr // 100
    return {**m.lsd_bands(ref, est, sr, input_sr, tolerance=tolerance),
            "si_sdr": m.si_sdr(ref, est, tolerance=tolerance)}


def test_stft_matches_librosa_and_toolkit_sizes():
    assert [m.stft_params(r) for r in (16000, 44100, 48000)] == [(743, 160), (2048, 441), (2229, 480)]
    assert m.cutoff_bin(48000, 16000) == 371 and m.cutoff_bin(SR, INPUT_SR) == 185
    x = REF[0, :4001]
    for sr in (16000, 48000):
        n_fft, hop = m.stft_params(sr)
        for pad_mode in ("reflect", "constant"):
            ours = m._magnitude(x, n_fft, hop, np, pad_mode)
            theirs = np.abs(librosa.stft(x, n_fft=n_fft, hop_length=hop, pad_mode=pad_mode)).T
            np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-9)


def test_identical_signals_have_zero_lsd():
    out = m.lsd_bands_np(REF[0], REF[0], SR, INPUT_SR)
    assert max(abs(v) for v in out.values()) < 1e-9
    assert float(m.lsd_bands(REF[0], REF[0], SR)["lsd"]) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("a", [0.5, 2.0, 10.0])
def test_scaled_signal_lsd_is_twice_log_gain_in_every_frame(a):
    expected = abs(2 * math.log10(a))
    per_frame = np.sqrt(np.mean(m._log_distance(REF[0], a * REF[0], SR, np, "reflect"), axis=-1))
    np.testing.assert_allclose(per_frame, expected, rtol=1e-9)
    assert m.lsd_bands_np(REF[0], a * REF[0], SR)["lsd"] == pytest.approx(expected, rel=1e-9)
    assert float(m.lsd_bands(REF[0], a * REF[0], SR)["lsd"]) == pytest.approx(expected, rel=1e-4)


def test_si_sdr_scale_invariance_and_known_snr():
    x = REF[0]
    for a in (3.0, 0.01, -2.0):
        assert m.si_sdr_np(x, a * x) > 100 and float(m.si_sdr(x, a * x)) > 100
    noise = RNG.standard_normal(x.shape)
    noise -= noise.mean()
    for snr in (0.0, 10.0, 30.0):
        scaled = noise * np.sqrt(np.sum((x - x.mean()) ** 2) / np.sum(noise**2) / 10 ** (snr / 10))
        assert m.si_sdr_np(x, x + scaled) == pytest.approx(snr, abs=0.2)
        assert float(m.si_sdr(x, x + scaled)) == pytest.approx(snr, abs=0.2)


def test_silent_reference():
    for silent in (np.zeros(SR // 2), np.full(SR // 2, 0.3)):  # a constant is silent once zero-mean
        with pytest.raises(ValueError, match="silent reference"):
            m.si_sdr_np(silent, REF[0])
        with pytest.raises(ValueError, match="silent reference"):
            m.evaluate_pair(silent, REF[0], SR, INPUT_SR)
    assert np.isnan(float(m.si_sdr(np.zeros(SR // 2), REF[0])))


def test_hf_lf_split():
    ref = REF[0]
    spectrum = np.fft.rfft(ref)
    spectrum[np.fft.rfftfreq(ref.size, 1 / SR) > INPUT_SR / 2] = 0  # exact below the cutoff, zero above
    est = np.fft.irfft(spectrum, ref.size)
    out = m.evaluate_pair(ref, est, SR, INPUT_SR)
    assert out["lsd_lf"] < 0.05 and out["lsd_hf"] > 5 and out["lsd_lf"] < out["lsd"] < out["lsd_hf"]
    jax_out = evaluate_batch(ref, est, SR, INPUT_SR)
    assert float(jax_out["lsd_lf"]) < 0.05 and float(jax_out["lsd_hf"]) > 5


def test_numpy_and_jax_agree():
    ref, est = REF[:, :-3], EST[:, :-3]
    expected = {k: np.array([m.evaluate_pair(r, e, SR, INPUT_SR)[k] for r, e in zip(ref, est)])
                for k in ("lsd", "lsd_hf", "lsd_lf", "si_sdr")}
    got = evaluate_batch(ref, est, SR, INPUT_SR)
    assert set(got) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(np.asarray(got[key]), value, rtol=1e-4, err_msg=key)
    batched_np = m.lsd_bands_np(ref, est, SR, INPUT_SR)
    np.testing.assert_allclose(batched_np["lsd_hf"], expected["lsd_hf"], rtol=1e-12)
    one = m.lsd_bands(ref[1], est[1], SR, INPUT_SR)
    assert float(one["lsd_hf"]) == pytest.approx(expected["lsd_hf"][1], rel=1e-4)
    assert float(one["lsd_lf"]) == pytest.approx(expected["lsd_lf"][1], rel=1e-4)


def test_length_mismatch_policy():
    ref, est = REF[0], EST[0]
    trimmed = m.evaluate_pair(ref, est[: ref.size - SR // 100], SR, INPUT_SR)  # default tolerance: sr // 100
    assert trimmed == m.evaluate_pair(ref[: ref.size - SR // 100], est[: ref.size - SR // 100], SR, INPUT_SR)
    assert m.lsd_bands_np(ref[:-5], est, SR)["lsd"] == m.lsd_bands_np(ref[:-5], est[:-5], SR)["lsd"]
    with pytest.raises(ValueError, match=f"reference {ref.size} vs estimate {ref.size - 161}"):
        m.evaluate_pair(ref, est[:-161], SR, INPUT_SR)
    with pytest.raises(ValueError, match="length mismatch"):
        m.lsd_bands(ref, est[:-161], SR)["lsd"]
    with pytest.raises(ValueError, match="length mismatch"):
        m.si_sdr_np(ref, est[:-1])  # SI-SDR alone: no tolerance by default
    assert m.si_sdr_np(ref, est[:-8], tolerance=8) == m.si_sdr_np(ref[:-8], est[:-8])


def _hand_lsd(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """Toolkit LSD with explicit loops: reflect padding, periodic hann, DFT, per-frame RMS of log ratios."""
    n_fft, hop = int(2048 / (44100 / sr)), int(sr / 100)
    half = n_fft // 2

    def magnitudes(x):
        padded = [x[half - i] for i in range(half)] + list(x) + [x[len(x) - 2 - i] for i in range(half)]
        window = [0.5 - 0.5 * math.cos(2 * math.pi * i / n_fft) for i in range(n_fft)]
        frames = []
        for start in range(0, len(padded) - n_fft + 1, hop):
            seg = np.array([padded[start + i] * window[i] for i in range(n_fft)])
            t = np.arange(n_fft)
            frames.append([abs(np.sum(seg * np.exp(-2j * np.pi * k * t / n_fft))) for k in range(half + 1)])
        return frames

    frame_values = []
    for s_ref, s_est in zip(magnitudes(ref), magnitudes(est)):
        terms = [math.log10(r**2 / (e + 1e-12) ** 2 + 1e-12) ** 2 for r, e in zip(s_ref, s_est)]
        frame_values.append(math.sqrt(sum(terms) / len(terms)))
    return sum(frame_values) / len(frame_values)


def test_hand_computed_tiny_case():
    sr = 8000
    t = np.arange(sr // 10) / sr  # 0.1 s: n_fft 371, hop 80, 10 frames
    ref = np.sin(2 * np.pi * 440 * t) + 0.1 * RNG.standard_normal(t.size)
    est = 0.7 * np.sin(2 * np.pi * 440 * t + 0.3) + 0.1 * RNG.standard_normal(t.size)
    expected = _hand_lsd(ref, est, sr)
    assert m.lsd_bands_np(ref, est, sr)["lsd"] == pytest.approx(expected, rel=1e-9)
    assert float(m.lsd_bands(ref, est, sr)["lsd"]) == pytest.approx(expected, rel=1e-4)
