"""Low-band replacement: input bins below the cutoff, output bins above, exact where nothing changes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstage.models.band_replace import input_weight, replace_low_band

SR = 16000
N = 8000


def _tone(freq: float, amp: float) -> np.ndarray:
    t = np.arange(N) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _amplitude(x: np.ndarray, freq: float) -> float:
    """Amplitude of a bin-centred tone from the middle half (away from the STFT edges)."""
    mid = x[N // 4: 3 * N // 4]
    spec = np.abs(np.fft.rfft(mid)) * 2 / mid.size
    return float(spec[int(round(freq * mid.size / SR))])


def test_low_band_from_input_high_band_from_estimate_per_example_cutoff():
    # estimate: 1 kHz at 0.5 and 6 kHz at 0.3; input: 1 kHz at 0.2 and 5 kHz at 0.4 (above the cutoff: ignored)
    est = _tone(1000, 0.5) + _tone(6000, 0.3)
    low = _tone(1000, 0.2) + _tone(5000, 0.4)
    out = np.asarray(replace_low_band(jnp.stack([est, est]), jnp.stack([low, low]), jnp.array([3000.0, 7000.0]),
                                      SR, n_fft=512, transition_hz=200.0))
    assert _amplitude(out[0], 1000) == pytest.approx(0.2, abs=2e-3)
    assert _amplitude(out[0], 6000) == pytest.approx(0.3, abs=2e-3)
    assert _amplitude(out[0], 5000) < 2e-3
    # cutoff 7 kHz: the 5 kHz and 1 kHz tones come from the input, 6 kHz (input has none) vanishes
    assert _amplitude(out[1], 1000) == pytest.approx(0.2, abs=2e-3)
    assert _amplitude(out[1], 5000) == pytest.approx(0.4, abs=2e-3)
    assert _amplitude(out[1], 6000) < 2e-3


def test_identical_signals_are_reconstructed_exactly():
    x = np.random.default_rng(0).normal(size=(2, N)).astype(np.float32) * 0.1
    out = replace_low_band(jnp.asarray(x), jnp.asarray(x), jnp.array([2000.0, 4000.0]), SR, n_fft=1024)
    np.testing.assert_allclose(np.asarray(out), x, atol=1e-5)


def test_weight_ramp_and_hard_switch():
    freqs = np.array([0.0, 2700.0, 2900.0, 3000.0, 3500.0])
    ramp = np.asarray(input_weight(jnp.array([3000.0]), freqs, 200.0))[0]
    np.testing.assert_allclose(ramp, [1.0, 1.0, 0.5, 0.0, 0.0], atol=1e-6)
    hard = np.asarray(input_weight(jnp.array([3000.0]), freqs, 0.0))[0]
    np.testing.assert_array_equal(hard, [1, 1, 1, 0, 0])


def test_jits_with_traced_cutoff_and_rejects_bad_shapes():
    fn = jax.jit(lambda e, l, c: replace_low_band(e, l, c, SR, n_fft=256))
    x = jnp.zeros((1, 1000))
    assert fn(x, x, jnp.array([1234.0])).shape == (1, 1000)
    with pytest.raises(ValueError, match="both be \\[B, N\\]"):
        replace_low_band(jnp.zeros((1, 100)), jnp.zeros((1, 99)), jnp.array([1.0]), SR)
    with pytest.raises(ValueError, match="longer than n_fft"):
        replace_low_band(jnp.zeros((1, 100)), jnp.zeros((1, 100)), jnp.array([1.0]), SR, n_fft=512)
