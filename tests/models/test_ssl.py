"""The spectral SSL stand-in: shapes, determinism, per-frame standardization, sine vs noise; frame resampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstage.models.ssl import SpectralSSL, dct_matrix, resample_frames, ssl_targets

SR = 8000
NUM_SAMPLES = 8000
ENCODER = SpectralSSL(sample_rate=SR)
# Cosine between clip-mean features: sine 440 Hz vs white noise measured -0.07, vs a 1 kHz sine -0.09.
DISTINCT_MAX_COS = 0.5
# Frames of a stationary sine away from the clip edges are near-identical (measured 1.0000).
STATIONARY_MIN_COS = 0.99
EDGE_FRAMES = 10

_features = jax.jit(lambda enc, audio: enc.features(audio), static_argnums=0)


def _sine_and_noise() -> np.ndarray:
    """[3, N]: a 440 Hz sine, white noise, a 1 kHz sine."""
    t = np.arange(NUM_SAMPLES) / SR
    noise = 0.3 * np.random.default_rng(0).standard_normal(NUM_SAMPLES)
    sine = lambda hz: 0.5 * np.sin(2 * np.pi * hz * t)
    return np.stack([sine(440.0), noise, sine(1000.0)]).astype(np.float32)


def _cos(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_features_shape_finite_deterministic_unit_norm():
    audio = _sine_and_noise()
    feats = np.asarray(_features(ENCODER, audio))
    assert feats.shape == (3, ENCODER.num_frames(NUM_SAMPLES), ENCODER.dim)
    assert ENCODER.dim == 3 * (40 + 13) and feats.shape[1] == 1 + NUM_SAMPLES // 64
    assert np.isfinite(feats).all()
    np.testing.assert_array_equal(feats, np.asarray(_features(ENCODER, audio)))
    np.testing.assert_allclose(np.linalg.norm(feats, axis=-1), 1.0, atol=1e-3)  # per-frame standardized


def test_gain_invariant_and_silence_finite():
    noise = _sine_and_noise()[1:2]  # a pure sine has bins at the log floor, where gain matters
    np.testing.assert_allclose(_features(ENCODER, 0.5 * noise), _features(ENCODER, noise), atol=2e-3)
    silent = np.asarray(_features(ENCODER, np.zeros((1, NUM_SAMPLES), np.float32)))
    assert np.isfinite(silent).all() and np.abs(silent).max() < 1e-3


def test_distinguishes_sine_from_noise_and_other_sine():
    feats = np.asarray(_features(ENCODER, _sine_and_noise()))
    sine, noise, sine_1k = feats.mean(axis=1)
    assert _cos(sine, noise) < DISTINCT_MAX_COS and _cos(sine, sine_1k) < DISTINCT_MAX_COS
    inner = feats[0, EDGE_FRAMES:-EDGE_FRAMES]
    assert min(_cos(inner[0], frame) for frame in inner) > STATIONARY_MIN_COS


def test_dct_matrix_orthonormal_columns():
    d = dct_matrix(16, 15)
    np.testing.assert_allclose(d.T @ d, np.eye(15), atol=1e-5)
    np.testing.assert_allclose(d.sum(axis=0), 0.0, atol=1e-5)  # c0 (the constant) is excluded


@pytest.mark.parametrize("t_src, num_tokens", [(11, 37), (40, 9), (5, 2)])
def test_resample_frames_preserves_linear_ramp(t_src, num_tokens):
    ramp = lambda n: np.linspace(-1.0, 3.0, n, dtype=np.float32)[None, :, None] * np.array([1.0, -2.0], np.float32)
    out = resample_frames(jnp.asarray(ramp(t_src)), num_tokens)
    assert out.shape == (1, num_tokens, 2)
    np.testing.assert_allclose(out, ramp(num_tokens), atol=1e-5)


def test_resample_frames_identity_and_targets_from_batch():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 9, 3)), jnp.float32)
    assert resample_frames(x, 9) is x
    np.testing.assert_allclose(ssl_targets({"ssl_targets": x}, 17), resample_frames(x, 17))
    with pytest.raises(ValueError, match="ssl_targets"):
        ssl_targets({"audio": x[:, :, 0]}, 17)


def test_config_validation():
    with pytest.raises(ValueError, match="n_mfcc"):
        SpectralSSL(n_mels=13, n_mfcc=13)
    with pytest.raises(ValueError, match="resolutions"):
        SpectralSSL(resolutions=((256, 0),))
