"""Samplers on Gaussian data, where the exact denoiser and the exact ODE solution are known.

x0 ~ N(μ, S²) per dimension. In σ̃-space the exact denoiser is D(x̃; σ̃) = μ + S²/(S²+σ̃²)(x̃ − μ);
in the objective's own space (x = a·x̃) that is μ + a·S²/(a²S² + s²)(x − a·μ), which stays finite at
a = 0 (t = 1). The probability-flow ODE keeps z = (x̃ − μ)/√(S²+σ̃²) fixed, so a deterministic
sampler started from x = s₀·x_T must end at μ + S·(s₀·x_T − a₀·μ)/√(a₀²S² + s₀²).

Tolerances: 4000 × 4 = 16,000 samples give a standard error of 0.0024 on the mean (S = 0.3) and
0.011 on var/S²; |mean − μ| < 0.02 and |var/S² − 1| < 0.08 leave room for the solver's own error
at the step counts below (measured: at most ≈ 0.035 on var/S² for these schedules).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstage.diffusion.objectives import EDM, RectifiedFlow, VCosine, expand_to
from jaxstage.diffusion.samplers import (
    cfg_batched,
    heun,
    pingpong,
    sample,
)
from jaxstage.diffusion.schedules import for_objective, karras

MU, STD = 0.7, 0.3
OBJECTIVES = {"edm": EDM(), "v": VCosine(), "rf": RectifiedFlow()}
# Steps per deterministic sampler: Euler is first order, Heun and DPM-Solver++(2M) second order.
STEPS = {"euler": 256, "heun": 64, "dpmpp_2m": 64, "pingpong": 8}
# Max per-sample distance to the exact ODE solution at those step counts (measured ≈ 1.4e-2,
# 7.5e-3, 5.7e-3). A first-order method at 64 steps errs by ≈ 5.6e-2, so the Heun and DPM++
# tolerances also check that they are second order.
ODE_TOL = {"euler": 0.03, "heun": 0.02, "dpmpp_2m": 0.015}
# Unit noise from numpy: jax's PRNG costs seconds of XLA compile per new program on CPU.
X_T = np.random.default_rng(0).standard_normal((4000, 4)).astype(np.float32)
CALLS = {name: [] for name in OBJECTIVES}  # executed denoiser calls, via jax.debug.callback


def gaussian_denoiser(objective, mean=MU, std=STD):
    """The exact E[x0 | x] (the MMSE denoiser) for x0 ~ N(mean, std²)."""

    def denoise(x, level):
        a, s = objective.alpha_sigma(expand_to(level, x))
        return mean + a * std**2 / (a**2 * std**2 + s**2) * (x - a * mean)

    return denoise


def _counting(denoise, calls):
    def counted(x, level):
        jax.debug.callback(lambda: calls.append(1))
        return denoise(x, level)

    return counted


DENOISERS = {name: _counting(gaussian_denoiser(obj), CALLS[name]) for name, obj in OBJECTIVES.items()}


def posterior_sampler(objective, levels, std=STD):
    """A sample of p(x0 | x) instead of its mean, with fresh (numpy) noise for each level."""
    mmse = gaussian_denoiser(objective, std=std)
    noise = jnp.asarray(np.random.default_rng(7).standard_normal((levels.shape[0],) + X_T.shape), jnp.float32)

    def denoise(x, level):
        a, s = objective.alpha_sigma(expand_to(level, x))
        posterior_var = std**2 * s**2 / (a**2 * std**2 + s**2)
        step = jnp.argmin(jnp.abs(levels - level[0]))
        return mmse(x, level) + jnp.sqrt(posterior_var) * noise[step]

    return denoise


def schedule(name, n, kind=None):
    """Default schedules, but v/rf use logsnr_linear with hi = 8 so that the last noisy level is
    small against S (see test_default_logsnr_schedule_ends_with_a_large_final_jump)."""
    obj = OBJECTIVES[name]
    if kind is None and name != "edm":
        return for_objective(obj, n, hi=8.0)
    return for_objective(obj, n, kind)


@functools.lru_cache(maxsize=None)
def run(sampler, objective, kind=None):
    """Samples from X_T, cached: v and rf share σ̃ on logsnr_linear, rf and edm on karras."""
    levels = schedule(objective, STEPS[sampler], kind)
    return np.asarray(sample(sampler, DENOISERS[objective], OBJECTIVES[objective], levels, X_T, jax.random.key(3)))


def exact_ode_end(objective, levels, x_T):
    a, s = map(float, objective.alpha_sigma(levels[0]))
    return MU + STD * (s * x_T - a * MU) / math.sqrt(a**2 * STD**2 + s**2)


def assert_gaussian_stats(x, mean=MU, var=STD**2, mean_tol=0.02, var_tol=0.08):
    x = np.asarray(x, np.float64)
    assert abs(x.mean() - mean) < mean_tol, x.mean()
    assert abs(x.var() / var - 1) < var_tol, x.var() / var


@pytest.mark.parametrize("objective", list(OBJECTIVES))
@pytest.mark.parametrize("sampler", list(ODE_TOL))
def test_ode_samplers_reach_the_data_distribution(sampler, objective):
    obj, levels = OBJECTIVES[objective], schedule(objective, STEPS[sampler])
    x = run(sampler, objective)
    assert_gaussian_stats(x)
    assert np.max(np.abs(x - exact_ode_end(obj, levels, X_T))) < ODE_TOL[sampler]


@pytest.mark.parametrize("sampler", list(ODE_TOL))
def test_samplers_are_objective_invariant_on_a_shared_sigma_schedule(sampler):
    """Same σ̃ schedule + exact denoisers ⇒ the same samples, whatever the objective."""
    np.testing.assert_allclose(run(sampler, "rf", "karras"), run(sampler, "edm"), atol=2e-4)
    np.testing.assert_allclose(run(sampler, "v"), run(sampler, "rf"), atol=2e-4)


@pytest.mark.parametrize("sampler, objective, nfe", [
    ("heun", "edm", 2 * 64 - 1),  # no correction on the last step (to σ̃ = 0)
    ("heun", "rf", 2 * 64 - 2),  # ... nor on the first from σ̃ = ∞ (t₀ = 1)
    ("euler", "v", 256),
    ("dpmpp_2m", "edm", 64),
    ("pingpong", "edm", 8),
])
def test_function_evaluations(sampler, objective, nfe):
    run(sampler, objective)  # compiled already (or now)
    CALLS[objective].clear()
    levels = schedule(objective, STEPS[sampler])
    jax.block_until_ready(sample(sampler, DENOISERS[objective], OBJECTIVES[objective], levels, X_T, jax.random.key(3)))
    jax.effects_barrier()
    assert len(CALLS[objective]) == nfe


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_pingpong_is_exact_with_a_posterior_sampling_denoiser(objective):
    obj = OBJECTIVES[objective]
    levels = for_objective(obj, 3)
    x = pingpong(posterior_sampler(obj, levels), obj, levels, X_T, jax.random.key(1))
    assert_gaussian_stats(x)


def test_pingpong_with_mmse_denoiser_keeps_mean_and_shrinks_variance_as_predicted():
    """x̃' = D + σ̃'·ξ with D = μ + c·(x̃ − μ), c = S²/(S²+σ̃²): Var(D) = c²·(Var(D_prev) + σ̃²)."""
    sigmas = [float(v) for v in karras(STEPS["pingpong"])]
    var = 0.0  # Var(D) before the first step; at σ̃₀ = 80 the c²·σ̃₀² term is 1.3e-10
    for sigma in sigmas[:-1]:
        c = STD**2 / (STD**2 + sigma**2)
        var = c**2 * (var + sigma**2)
    assert_gaussian_stats(run("pingpong", "edm"), var=var)
    assert var < 0.9 * STD**2  # the shrink is real at this schedule


def test_default_logsnr_schedule_ends_with_a_large_final_jump():
    """Default logsnr_linear(−6, 2): the last noisy level has σ̃ = e^(−2 + 8/N) (0.15 at N = 64),
    so an ODE sampler's last step returns a posterior mean and the variance comes out low (by
    ≈ S²/(S²+σ̃²) ≈ 0.8 with S = 0.3). Documented behaviour of that schedule, not a solver bug."""
    obj = OBJECTIVES["rf"]
    levels = for_objective(obj, 64)
    assert float(obj.edm_sigma(levels[-2])) == pytest.approx(math.exp(-1.875), rel=1e-5)
    x = np.asarray(sample("heun", DENOISERS["rf"], obj, levels, X_T))
    assert 0.7 < x.var() / STD**2 < 0.85


def test_heun_with_churn_still_samples_the_data():
    """Churn γ = 20/128 on every level in [0.05, 50]; its extra discretization bias on var/S² is
    ≈ +0.02 at 128 steps (≈ +0.05 at 64), inside the tolerance."""
    obj, levels = OBJECTIVES["rf"], schedule("rf", 128)
    x = heun(DENOISERS["rf"], obj, levels, X_T, jax.random.key(2), s_churn=20.0, s_tmin=0.05, s_tmax=50.0)
    assert_gaussian_stats(x)
    assert np.max(np.abs(np.asarray(x) - exact_ode_end(obj, levels, X_T))) > 0.1  # churn did act
    with pytest.raises(ValueError, match="key"):
        heun(DENOISERS["rf"], obj, levels, X_T, None, s_churn=1.0)


def test_sampler_inside_jit_with_traced_model_parameters():
    traces = []

    @jax.jit
    def generate(mean, x_T):
        traces.append(1)
        return sample("dpmpp_2m", gaussian_denoiser(EDM(), mean=mean), EDM(), schedule("edm", 32), x_T)

    for mean in (0.7, -0.5):
        assert abs(np.asarray(generate(np.float32(mean), X_T)).mean() - mean) < 0.02
    assert len(traces) == 1


def test_registry_rejects_unknown_and_pingpong_needs_key():
    with pytest.raises(ValueError, match=r"'ddim'.*\['dpmpp_2m', 'euler', 'heun', 'pingpong'\]"):
        sample("ddim", DENOISERS["edm"], EDM(), schedule("edm", 4), X_T)
    with pytest.raises(ValueError, match="key"):
        sample("pingpong", DENOISERS["edm"], EDM(), schedule("edm", 4), X_T)


# --- classifier-free guidance and condition dropout --------------------------------------

MU_COND, MU_UNCOND = 0.7, -0.2


def cfg_denoiser(denoise_cond, denoise_uncond, objective, scale, interval=(0.0, math.inf)):
    """Reference CFG with two model calls per NFE: ``D_u + scale·(D_c − D_u)`` where the level's EDM σ̃
    lies in ``interval`` (inclusive), else ``D_c`` (what ``cfg_batched`` computes in one call)."""

    def denoise(x, level):
        d_cond, d_uncond = denoise_cond(x, level), denoise_uncond(x, level)
        sigma = objective.edm_sigma(level)
        inside = expand_to((sigma >= interval[0]) & (sigma <= interval[1]), d_cond)
        return jnp.where(inside, d_uncond + scale * (d_cond - d_uncond), d_cond)

    return denoise


def _cond_uncond(obj):
    return gaussian_denoiser(obj, mean=MU_COND), gaussian_denoiser(obj, mean=MU_UNCOND)


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_cfg_combination_scale_one_and_interval(objective):
    obj = OBJECTIVES[objective]
    d_cond, d_uncond = _cond_uncond(obj)
    level = for_objective(obj, 8)[1:7]  # six distinct noisy levels, high to low
    sigma = np.asarray(obj.edm_sigma(level))
    interval = (float(sigma[4]), float(sigma[1]))  # examples 1..4 inside, 0 and 5 outside

    @jax.jit
    def evaluate(x, level):
        unit = cfg_denoiser(d_cond, d_uncond, obj, 1.0)(x, level)
        guided = cfg_denoiser(d_cond, d_uncond, obj, 3.0, interval)(x, level)
        return d_cond(x, level), d_uncond(x, level), unit, guided

    d_c, d_u, unit, guided = map(np.asarray, evaluate(X_T[:6], level))
    np.testing.assert_allclose(unit, d_c, atol=1e-6)
    np.testing.assert_allclose(guided[1:5], (d_u + 3.0 * (d_c - d_u))[1:5], atol=1e-5)
    np.testing.assert_allclose(guided[[0, 5]], d_c[[0, 5]], atol=1e-6)
    assert not np.allclose(guided[1:5], d_c[1:5], atol=1e-2)


def test_cfg_batched_matches_two_calls_and_uses_one():
    obj = EDM()
    calls = []

    def denoise_with(x, level, mean):  # conditioning: a per-example data mean [B]
        calls.append(x.shape[0])
        return gaussian_denoiser(obj, mean=expand_to(mean, x))(x, level)

    batch = 8
    cond, uncond = np.full((batch,), MU_COND, np.float32), np.full((batch,), MU_UNCOND, np.float32)
    level = np.linspace(0.1, 5.0, batch, dtype=np.float32)
    d_cond, d_uncond = _cond_uncond(obj)

    @jax.jit
    def evaluate(x, level):
        expected = cfg_denoiser(d_cond, d_uncond, obj, 2.5, (0.5, 3.0))(x, level)
        return expected, cfg_batched(denoise_with, cond, uncond, obj, 2.5, (0.5, 3.0))(x, level)

    expected, got = evaluate(X_T[:batch], level)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert calls == [2 * batch]


def test_cfg_inside_a_sampler_moves_the_mean():
    """Gaussian cond/uncond with equal S: the guided denoiser is the Gaussian one with mean
    μ_u + w·(μ_c − μ_u), so samples land there (w = 2 → 1.6)."""
    obj = RectifiedFlow()
    guided = cfg_denoiser(*_cond_uncond(obj), obj, 2.0)
    x = sample("dpmpp_2m", guided, obj, schedule("rf", 64), X_T)
    assert_gaussian_stats(x, mean=MU_UNCOND + 2.0 * (MU_COND - MU_UNCOND))

