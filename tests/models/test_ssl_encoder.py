"""The JAX SSL encoder source: FFT resampling, and agreement with `jaxstage prepare`'s PyTorch path."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstage.models.ssl_encoder import resample_fft, standardize

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))


def test_resample_fft_reproduces_a_band_limited_tone():
    n, rate = 800, 8000
    t = np.arange(n) / rate
    tone = np.sin(2 * np.pi * 500 * t).astype(np.float32)  # 50 periods: periodic over the clip
    up = np.asarray(resample_fft(jnp.asarray(tone[None]), rate, 16000))[0]
    t2 = np.arange(2 * n) / 16000
    np.testing.assert_allclose(up, np.sin(2 * np.pi * 500 * t2), atol=1e-4)
    back = np.asarray(resample_fft(jnp.asarray(up[None]), 16000, rate))[0]
    np.testing.assert_allclose(back, tone, atol=1e-4)
    assert resample_fft(jnp.asarray(tone[None]), rate, rate) is not None


def test_standardize_gives_zero_mean_unit_variance():
    x = jnp.asarray(np.random.default_rng(0).normal(3.0, 2.0, (2, 1000)).astype(np.float32))
    y = np.asarray(standardize(x))
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(-1), 1, atol=1e-3)


def test_neural_ssl_matches_the_prepare_encoder(tmp_path):
    """On-the-fly targets (JAX, in the step) equal the precomputed ones (PyTorch, in prepare)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from hf_tiny import HUBERT_DIM, save_tiny_hubert

    from jaxstage.data.encoders import HFAudioEncoder
    from jaxstage.models.ssl_encoder import load_neural_ssl

    model_dir = save_tiny_hubert(tmp_path / "hubert")
    audio = np.random.default_rng(1).normal(0, 0.1, (2, 1600)).astype(np.float32)
    reference = HFAudioEncoder(model_dir, layers=(1, 2), sample_rate=16000)(audio)
    ssl, params = load_neural_ssl(model_dir, layers=(1, 2), data_rate=16000)
    assert ssl.dim == HUBERT_DIM
    ours = np.asarray(jax.jit(ssl.features)(params, jnp.asarray(audio)))
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, atol=1e-4)
    with pytest.raises(ValueError, match="ssl_layers"):
        load_neural_ssl(model_dir, layers=(5,), data_rate=16000)
