"""The reconstruction losses against stable-audio-tools 0.0.19's own auraloss copy
(``training/losses/auraloss.py``, loaded as a file: its package ``__init__`` needs training extras)."""

import importlib.util
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jaxstage.autoencoder.losses import (  # noqa: E402
    DEFAULT_RESOLUTIONS, multi_resolution_stft_loss, stft_loss, sum_and_difference_stft_loss,
)


def _auraloss():
    spec = importlib.util.find_spec("stable_audio_tools")
    if spec is None:
        pytest.skip("stable-audio-tools is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "training" / "losses" / "auraloss.py"
    module_spec = importlib.util.spec_from_file_location("sat_auraloss", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def signals():
    rng = np.random.default_rng(0)
    target = rng.standard_normal((2, 4096, 2)).astype(np.float32) * 0.3
    estimate = (target + 0.1 * rng.standard_normal(target.shape)).astype(np.float32)
    return estimate, target


def _torch(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1)))


@pytest.mark.parametrize("weights", [dict(), dict(w_sc=0.5, w_log_mag=2.0, w_lin_mag=1.0)])
def test_single_and_multi_resolution_match_auraloss(signals, weights):
    aura = _auraloss()
    estimate, target = signals
    want = aura.STFTLoss(fft_size=512, hop_size=128, win_length=512, **weights)(_torch(estimate), _torch(target))
    got = stft_loss(jnp.asarray(estimate), jnp.asarray(target), 512, 128, **weights)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
    sizes = [f for f, _ in DEFAULT_RESOLUTIONS]
    want = aura.MultiResolutionSTFTLoss(fft_sizes=sizes, hop_sizes=[h for _, h in DEFAULT_RESOLUTIONS],
                                        win_lengths=sizes, **weights)(_torch(estimate), _torch(target))
    got = multi_resolution_stft_loss(jnp.asarray(estimate), jnp.asarray(target), **weights)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)


def test_sum_and_difference_matches_auraloss(signals):
    aura = _auraloss()
    estimate, target = signals
    resolutions = ((1024, 256), (256, 64), (64, 16))
    want = aura.SumAndDifferenceSTFTLoss(fft_sizes=[f for f, _ in resolutions], hop_sizes=[h for _, h in resolutions],
                                         win_lengths=[f for f, _ in resolutions], w_sum=1.0, w_diff=0.5)
    got = sum_and_difference_stft_loss(jnp.asarray(estimate), jnp.asarray(target), resolutions, w_diff=0.5)
    np.testing.assert_allclose(float(got), float(want(_torch(estimate), _torch(target))), rtol=1e-5)
    with pytest.raises(ValueError, match="needs stereo audio, got 1 channel"):
        sum_and_difference_stft_loss(jnp.asarray(estimate[..., :1]), jnp.asarray(target[..., :1]))


def test_identical_audio_has_zero_loss(signals):
    _, target = signals
    assert float(multi_resolution_stft_loss(jnp.asarray(target), jnp.asarray(target))) == 0.0
