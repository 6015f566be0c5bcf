"""Self-adaptive timestep sampling: the level distribution's location follows p; the uniform floor holds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstage.diffusion.noise import sample_levels
from jaxstage.diffusion.objectives import EDM, RectifiedFlow
from jaxstage.stage.timesteps import AdaptiveTimestepConfig, adaptive_level_params, level_location

N = 100_000
# Standard error of a mean over ~9e4 draws with std <= 1.2 is <= 0.004; 0.02 is > 5 sigma.
MEAN_TOL = 0.02
# Binomial std of a fraction near 0.1 over 1e5 draws is ~0.001.
FRACTION_TOL = 0.006
CFG = AdaptiveTimestepConfig()
UNIFORM_PROB = 0.1  # the floor probability ε_u (diffusion.uniform_prob's default)
CASES = [  # objective, dist, scale, level -> location space (logit t | ln σ), endpoints
    (RectifiedFlow(), "logit_normal", 1.0, lambda t: np.log(t) - np.log1p(-t), (CFG.rf_early, CFG.rf_late)),
    (EDM(), "lognormal", 1.2, np.log, (CFG.edm_early, CFG.edm_late)),
]


def test_level_location_endpoints():
    np.testing.assert_allclose(level_location(jnp.array([0.0, 0.5, 1.0]), 0.8, -0.4), [0.8, 0.2, -0.4], atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=["rf_logit_normal", "edm_lognormal"])
def test_location_moves_from_early_to_late_with_floor(case):
    """Acceptance 4. Same key with and without the floor: the draws that differ are the floor's."""
    objective, dist, scale, to_space, (early, late) = case
    for p, want in ((0.0, early), (1.0, late)):
        params = adaptive_level_params(jnp.float32(p), objective.name, dist, scale, CFG)
        key = jax.random.key(int(10 * p) + 1)
        with_floor = np.asarray(sample_levels(key, N, objective, dist, params, UNIFORM_PROB), np.float64)
        main = np.asarray(sample_levels(key, N, objective, dist, params, 0.0), np.float64)
        from_floor = with_floor != main
        assert abs(from_floor.mean() - UNIFORM_PROB) < FRACTION_TOL
        located = to_space(with_floor[~from_floor])
        assert abs(located.mean() - want) < MEAN_TOL, (p, located.mean(), want)
        assert abs(located.std() - scale) < MEAN_TOL


def test_params_keys_per_distribution():
    assert set(adaptive_level_params(0.5, "rf", "lognormal", 1.0, CFG)) == {"p_mean", "p_std"}
    params = adaptive_level_params(0.5, "edm", "logit_normal", 1.0, CFG)
    np.testing.assert_allclose(params["loc"], 0.5 * (CFG.edm_early + CFG.edm_late), rtol=1e-6)


def test_rejects_unknown_dist_and_objective():
    with pytest.raises(ValueError, match="'uniform'"):
        adaptive_level_params(0.0, "rf", "uniform", 1.0, CFG)
    with pytest.raises(ValueError, match="'v'"):
        adaptive_level_params(0.0, "v", "logit_normal", 1.0, CFG)


def test_one_trace_for_many_p():
    traces = []

    @jax.jit
    def draw(p, key):
        traces.append(1)  # runs only while tracing
        params = adaptive_level_params(p, "rf", "logit_normal", 1.0, CFG)
        return params["loc"], sample_levels(key, 64, RectifiedFlow(), "logit_normal", params, UNIFORM_PROB)

    for p in np.linspace(0.0, 1.0, 7, dtype=np.float32):
        loc, levels = draw(jnp.float32(p), jax.random.key(0))
        np.testing.assert_allclose(loc, CFG.rf_early + p * (CFG.rf_late - CFG.rf_early), rtol=1e-6, atol=1e-6)
        assert levels.shape == (64,)
    assert len(traces) == 1
