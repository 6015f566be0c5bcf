"""Low-band simulation: stop-band attenuation, pass-band flatness, zero phase, lengths, random draws."""

import numpy as np
import pytest
from scipy import signal

from jaxstage.data.lowpass import IIR_METHODS, METHODS, draw_low_band, simulate_low_band

SR = 16000
CUTOFF = 3000.0
NOISE = np.random.default_rng(0).standard_normal(SR).astype(np.float32)  # 1 s white noise

# method: (stop edge / cutoff, max stop-band gain dB, pass edge / cutoff, max pass-band deviation dB),
# for orders >= 6 (measured at 48 kHz / 6 kHz, order 6: cheby1 -41 dB at 1.3x, butter -32, ellip -66,
# bessel -42 at 2x; stft_cut < -100 dB above 1.1x; resample_cut < -90 dB above 1.0x).
SPECS = {
    "cheby1": (1.3, -30.0, 0.9, 0.5),
    "butter": (1.3, -25.0, 0.8, 1.0),
    "bessel": (2.0, -30.0, 0.4, 1.0),  # gentle roll-off: -6 dB at the cutoff, -1.3 dB at half of it
    "ellip": (1.3, -50.0, 0.9, 0.5),
    "stft_cut": (1.1, -60.0, 0.9, 0.1),
    "resample_cut": (1.02, -60.0, 0.85, 0.1),
}


def _gain_db(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Output/input power ratio per frequency (same noise in, so this is |H|^2 of the whole chain)."""
    f, pxx = signal.welch(NOISE.astype(np.float64), SR, nperseg=2048)
    _, pyy = signal.welch(y.astype(np.float64), SR, nperseg=2048)
    return f, 10 * np.log10(pyy / pxx)


@pytest.mark.parametrize("method", METHODS)
def test_stop_band_attenuated_and_pass_band_flat(method):
    stop, stop_db, edge, flat_db = SPECS[method]
    for order in (6, 10) if method in IIR_METHODS else (None,):
        y = simulate_low_band(NOISE, SR, CUTOFF, method, order or 2)
        f, gain = _gain_db(y)
        assert gain[f >= stop * CUTOFF].max() <= stop_db, (method, order)
        passband = gain[(f > 50) & (f <= edge * CUTOFF)]
        assert np.abs(passband).max() <= flat_db, (method, order, passband.min(), passband.max())


@pytest.mark.parametrize("method", IIR_METHODS)
def test_low_order_still_low_pass(method):
    f, gain = _gain_db(simulate_low_band(NOISE, SR, CUTOFF, method, 2))
    assert gain[f >= 2.5 * CUTOFF].max() <= -10.0
    assert np.abs(gain[(f > 50) & (f <= 0.25 * CUTOFF)]).max() <= 1.0


@pytest.mark.parametrize("method", METHODS)
def test_zero_phase_length_and_dtype(method):
    n = SR // 2 + 7  # odd length
    t = np.arange(n) / SR
    sine = np.sin(2 * np.pi * 250.0 * t).astype(np.float32)  # 64-sample period, far below the cutoff
    y = simulate_low_band(sine, SR, CUTOFF, method, 8)
    assert y.shape == sine.shape and y.dtype == np.float32
    core = slice(2000, n - 2000)  # away from the edges' transients
    lags = np.arange(-20, 21)
    xcorr = [np.dot(sine[core], np.roll(y, -lag)[core]) for lag in lags]
    assert lags[int(np.argmax(xcorr))] == 0
    np.testing.assert_allclose(y[core], sine[core], atol=0.05 if method == "bessel" else 0.02)


def test_batched_input_matches_rows():
    audio = np.stack([NOISE[:4001], -0.5 * NOISE[:4001]])
    for method in ("cheby1", "stft_cut", "resample_cut"):
        out = simulate_low_band(audio, SR, CUTOFF, method, 6)
        assert out.shape == audio.shape
        np.testing.assert_allclose(out[1], simulate_low_band(audio[1], SR, CUTOFF, method, 6), atol=1e-6)


def test_argument_errors():
    with pytest.raises(ValueError, match="cutoff_hz must be in"):
        simulate_low_band(NOISE, SR, 8000.0, "butter", 4)
    with pytest.raises(ValueError, match="cutoff_hz must be in"):
        simulate_low_band(NOISE, SR, 0.0, "stft_cut")
    with pytest.raises(ValueError, match=r"order must be .* got 11"):
        simulate_low_band(NOISE, SR, CUTOFF, "cheby1", 11)
    with pytest.raises(ValueError, match="unknown low-pass method 'cheby2'.*cheby1, butter"):
        simulate_low_band(NOISE, SR, CUTOFF, "cheby2", 4)
    with pytest.raises(ValueError, match="cutoff_range"):
        draw_low_band(NOISE, SR, (1000, 9000), rng=0)


def test_draw_low_band_range_and_determinism():
    audio = NOISE[:2000]
    draws = [draw_low_band(audio, SR, (1000, 6000), METHODS, range(2, 11), np.random.default_rng(s))
             for s in range(24)]
    cutoffs = [d[1] for d in draws]
    assert all(1000 <= c <= 6000 for c in cutoffs) and len(set(cutoffs)) == len(cutoffs)
    assert {d[2] for d in draws} <= set(METHODS) and len({d[2] for d in draws}) >= 4
    for low, _, method, order in draws:
        assert low.shape == audio.shape
        assert (2 <= order <= 10) if method in IIR_METHODS else order == 0
    again = draw_low_band(audio, SR, (1000, 6000), METHODS, range(2, 11), np.random.default_rng(5))
    np.testing.assert_array_equal(again[0], draws[5][0])
    assert again[1:] == draws[5][1:]
    low, cutoff, method, order = draw_low_band(audio, SR, (2500, 2500), ("ellip",), (7,), rng=1)
    assert (cutoff, method, order) == (2500.0, "ellip", 7)
    np.testing.assert_array_equal(low, simulate_low_band(audio, SR, 2500.0, "ellip", 7))
