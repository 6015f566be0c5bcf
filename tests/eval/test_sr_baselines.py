"""The oracle noise fill: the input's band untouched, the reference's high-band level added."""

import numpy as np
import pytest

from jaxstage.eval.sr_baselines import oracle_noise_fill

SR = 16000


def _band_power(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / SR)
    return float(spec[(freqs >= lo) & (freqs < hi)].sum())


def test_fills_the_high_band_at_the_reference_level_and_keeps_the_low_band():
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    reference = 0.3 * np.sin(2 * np.pi * 500 * t) + 0.05 * rng.normal(size=SR)
    low = 0.3 * np.sin(2 * np.pi * 500 * t)  # the ideal low band of `reference` below 4 kHz, roughly
    out = oracle_noise_fill(reference, low, 4000.0, SR)
    assert out.shape == low.shape and out.dtype == np.float32
    ratio = _band_power(out, 4200, SR / 2) / _band_power(reference, 4200, SR / 2)
    assert 0.5 < ratio < 2.0
    assert _band_power(out - low, 0, 3800) < 0.02 * _band_power(out - low, 4200, SR / 2)
    np.testing.assert_array_equal(out, oracle_noise_fill(reference, low, 4000.0, SR))  # seeded
    with pytest.raises(ValueError, match="same \\[N\\]"):
        oracle_noise_fill(reference, low[:-1], 4000.0, SR)
