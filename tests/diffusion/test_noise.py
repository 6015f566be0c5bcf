"""Training noise-level distributions: statistics, array parameters without recompiles, the floor."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstage.diffusion.noise import sample_levels
from jaxstage.diffusion.objectives import EDM, RectifiedFlow, VCosine

N = 100_000  # every test draws N levels so jax.random's compiled programs are shared
# Sampling error of a mean/std estimate from 1e5 draws with std ≤ 1.2 is ≤ 0.004; 0.02 is > 5σ.
TOL = 0.02


def _logit(t):
    return np.log(t) - np.log1p(-t)


def _logit_jnp(t):
    return jnp.log(t) - jnp.log1p(-t)


def test_lognormal_edm_matches_params():
    params = {"p_mean": jnp.float32(-1.2), "p_std": jnp.float32(1.2)}
    log_sigma = np.log(np.asarray(sample_levels(jax.random.key(0), N, EDM(), "lognormal", params)))
    assert abs(log_sigma.mean() + 1.2) < TOL and abs(log_sigma.std() - 1.2) < TOL


def test_lognormal_maps_through_edm_sigma_for_time_objectives():
    params = {"p_mean": jnp.float32(0.5), "p_std": jnp.float32(0.8)}
    t = sample_levels(jax.random.key(1), N, VCosine(), "lognormal", params)
    log_sigma = np.log(np.asarray(VCosine().edm_sigma(t)))
    assert abs(log_sigma.mean() - 0.5) < TOL and abs(log_sigma.std() - 0.8) < TOL


def test_logit_normal_rf_matches_params():
    params = {"loc": jnp.float32(0.8), "scale": jnp.float32(1.0)}
    logit = _logit(np.asarray(sample_levels(jax.random.key(2), N, RectifiedFlow(), "logit_normal", params), np.float64))
    assert abs(logit.mean() - 0.8) < TOL and abs(logit.std() - 1.0) < TOL


def test_logsnr_uniform_covers_range_for_each_objective():
    params = {"logsnr_min": jnp.float32(-6.0), "logsnr_max": jnp.float32(4.0)}
    for obj in (EDM(), VCosine(), RectifiedFlow()):
        levels = sample_levels(jax.random.key(3), N, obj, "logsnr_uniform", params, t_eps=1e-6)
        logsnr = -2.0 * np.log(np.asarray(obj.edm_sigma(levels), np.float64))
        assert logsnr.min() > -6.01 and logsnr.max() < 4.01
        assert abs(logsnr.mean() + 1.0) < 0.05 and abs(logsnr.std() - 10 / math.sqrt(12)) < 0.05


def test_uniform_ranges():
    log_sigma = np.log(np.asarray(sample_levels(jax.random.key(4), N, EDM(), "uniform", {})))
    lo, hi = math.log(0.002), math.log(80.0)
    assert log_sigma.min() >= lo - 1e-4 and log_sigma.max() <= hi + 1e-4
    assert abs(log_sigma.mean() - (lo + hi) / 2) < 0.05
    t = np.asarray(sample_levels(jax.random.key(5), N, RectifiedFlow(), "uniform", {}, t_eps=0.01))
    assert t.min() >= 0.01 and t.max() <= 0.99 and abs(t.mean() - 0.5) < 0.01


def test_time_levels_are_clamped_to_t_eps():
    params = {"loc": jnp.float32(30.0), "scale": jnp.float32(1.0)}
    t = sample_levels(jax.random.key(6), N, RectifiedFlow(), "logit_normal", params, t_eps=1e-3)
    assert float(t.min()) == pytest.approx(1 - 1e-3)


def test_uniform_floor_fraction():
    # Log-normal far above sigma_max (σ ≈ e⁶ ≈ 403 > 80): every σ ≤ 80 came from the floor.
    params = {"p_mean": jnp.float32(6.0), "p_std": jnp.float32(0.01)}
    sigma = sample_levels(jax.random.key(7), N, EDM(), "lognormal", params, jnp.float32(0.3))
    assert abs(float(jnp.mean(sigma <= 80.0)) - 0.3) < 0.01  # std of the fraction ≈ 0.0015
    none = sample_levels(jax.random.key(7), N, EDM(), "lognormal", params, 0.0)
    assert float(jnp.mean(none <= 80.0)) == 0.0


def test_moving_params_inside_jit_does_not_recompile():
    traces = []

    @jax.jit
    def draw(key, params, uniform_prob):
        traces.append(1)
        levels = sample_levels(key, 4096, RectifiedFlow(), "logit_normal", params, uniform_prob)
        return jnp.mean(_logit_jnp(levels))

    means = []
    for i, loc in enumerate([0.8, 0.2, -0.4]):
        params = {"loc": jnp.float32(loc), "scale": jnp.float32(1.0)}
        means.append(float(draw(jax.random.key(i), params, jnp.float32(0.1 * i))))
    assert len(traces) == 1
    assert means[0] > means[1] > means[2]  # the location really moved


def test_validation():
    with pytest.raises(ValueError, match=r"'gamma'.*logit_normal"):
        sample_levels(jax.random.key(0), 4, EDM(), "gamma", {})
    with pytest.raises(ValueError, match="p_std"):
        sample_levels(jax.random.key(0), 4, EDM(), "lognormal", {"p_mean": 0.0})
