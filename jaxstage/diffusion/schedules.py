"""Sampling schedules: ``N + 1`` levels from the noise end down to the clean end (level 0)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxstage.diffusion.objectives import Objective, RectifiedFlow


def karras(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> jax.Array:
    """Karras et al. (2022) ρ-schedule: n σ's from sigma_max to sigma_min, then 0 appended."""
    if n < 1:
        raise ValueError(f"karras schedule needs n >= 1 steps, got {n}")
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    ramp = [i / max(n - 1, 1) for i in range(n)]
    sigmas = [(hi + r * (lo - hi)) ** rho for r in ramp]  # float64 in Python: fp32-exact ends
    return jnp.asarray(sigmas + [0.0], jnp.float32)


def logsnr_linear(n: int, lo: float = -6.0, hi: float = 2.0) -> jax.Array:
    """Rectified-flow times ``t = sigmoid(−linspace(lo, hi, n + 1))`` with t₀ = 1 and t_N = 0.

    σ̃ = t/(1 − t) = exp(−linspace), so the last noisy level is σ̃ = exp(−hi + (hi − lo)/n)
    (≈ 0.15 at n = 64 with the defaults): ODE samplers end with one large denoising jump, which
    returns a posterior mean. Raise ``hi`` for a smaller last level.
    """
    if n < 1:
        raise ValueError(f"logsnr_linear schedule needs n >= 1 steps, got {n}")
    logsnr = [lo + (hi - lo) * i / n for i in range(1, n)]
    return jnp.asarray([1.0] + [1.0 / (1.0 + math.exp(v)) for v in logsnr] + [0.0], jnp.float32)


SCHEDULES = {"karras": karras, "logsnr_linear": logsnr_linear}


def for_objective(objective: Objective, n: int, schedule: str | None = None, **kwargs) -> jax.Array:
    """Levels for ``objective`` in its own units.

    Default: ``karras`` (in σ) for EDM and ``logsnr_linear`` for the time objectives. Either
    schedule works for any objective: karras σ's are EDM σ̃ values and logsnr_linear gives RF
    times; both are mapped through σ̃ to the objective's level (so v and rf see the same SNRs;
    RF t = 1 maps to σ̃ = ∞, i.e. v-cosine t = 1). kwargs go to the schedule function.
    """
    if schedule is None:
        schedule = "karras" if objective.level_kind == "sigma" else "logsnr_linear"
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {sorted(SCHEDULES)}")
    levels = SCHEDULES[schedule](n, **kwargs)
    if schedule == "logsnr_linear" and isinstance(objective, RectifiedFlow):
        return levels  # already rf times: skip the round trip through σ̃
    edm_sigma = levels if schedule == "karras" else RectifiedFlow().edm_sigma(levels)
    return objective.level_from_edm_sigma(edm_sigma).astype(jnp.float32)
