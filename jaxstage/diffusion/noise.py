"""Training noise-level distributions with array parameters.

The distribution name and the objective are static; its parameters are jax arrays, so the regime
can move them inside one compiled train step without recompiling (SPEC §2, §3.4).

Distributions and their ``params`` keys:

- ``"lognormal"``: ``ln σ̃ ~ N(p_mean, p_std)``, mapped to the objective's level (EDM: σ = σ̃).
- ``"logit_normal"``: ``t = sigmoid(loc + scale·n)``. For time objectives (v, rf) t is the level;
  for EDM t is read as rectified-flow time, ``σ = t/(1 − t) = exp(loc + scale·n)``.
- ``"uniform"`` (no params): time objectives ``t ~ U(t_eps, 1 − t_eps)``; EDM
  ``ln σ ~ U(ln sigma_min, ln sigma_max)``.
- ``"logsnr_uniform"``: ``logSNR = ln(a²/s²) ~ U(logsnr_min, logsnr_max)``, i.e.
  ``σ̃ = exp(−logSNR/2)``, mapped to the objective's level.

Uniform floor: with probability ``uniform_prob`` (an array or float) a level is replaced by a draw
from ``"uniform"``. Time levels are clamped to ``[t_eps, 1 − t_eps]`` so that neither a(t) nor
s(t) is exactly 0 during training; EDM σ is not clamped (the log-normal tails are kept).
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from jaxstage.diffusion.objectives import Objective

DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "lognormal": ("p_mean", "p_std"),
    "logit_normal": ("loc", "scale"),
    "uniform": (),
    "logsnr_uniform": ("logsnr_min", "logsnr_max"),
}


def _check(dist: str, params: Mapping[str, jax.Array]) -> None:
    if dist not in DISTRIBUTIONS:
        raise ValueError(f"unknown noise distribution {dist!r}; choose one of {sorted(DISTRIBUTIONS)}")
    missing = [k for k in DISTRIBUTIONS[dist] if k not in params]
    if missing:
        raise ValueError(f"noise distribution {dist!r} needs params {missing}; got {sorted(params)}")


def uniform_levels(key: jax.Array, batch_size: int, objective: Objective, *, t_eps: float = 1e-4,
                   sigma_min: float = 0.002, sigma_max: float = 80.0) -> jax.Array:
    """The uniform draw: t ~ U(t_eps, 1 − t_eps), or ln σ ~ U(ln sigma_min, ln sigma_max) for EDM."""
    u = jax.random.uniform(key, (batch_size,), jnp.float32)
    if objective.level_kind == "sigma":
        lo, hi = jnp.log(sigma_min), jnp.log(sigma_max)
        return jnp.exp(lo + (hi - lo) * u)
    return t_eps + (1.0 - 2.0 * t_eps) * u


def _draw(key, batch_size, objective, dist, params, **ranges) -> jax.Array:
    if dist == "uniform":
        return uniform_levels(key, batch_size, objective, **ranges)
    if dist == "logsnr_uniform":
        u = jax.random.uniform(key, (batch_size,), jnp.float32)
        lo, hi = params["logsnr_min"], params["logsnr_max"]
        return objective.level_from_edm_sigma(jnp.exp(-0.5 * (lo + (hi - lo) * u)))
    n = jax.random.normal(key, (batch_size,), jnp.float32)
    if dist == "lognormal":
        return objective.level_from_edm_sigma(jnp.exp(params["p_mean"] + params["p_std"] * n))
    logit = params["loc"] + params["scale"] * n  # logit_normal
    return jnp.exp(logit) if objective.level_kind == "sigma" else jax.nn.sigmoid(logit)


def sample_levels(key: jax.Array, batch_size: int, objective: Objective, dist: str, params: Mapping[str, jax.Array],
                  uniform_prob: jax.Array | float = 0.0, *, t_eps: float = 1e-4, sigma_min: float = 0.002,
                  sigma_max: float = 80.0) -> jax.Array:
    """Draw ``[batch_size]`` training levels in the objective's units (σ for EDM, t otherwise).

    ``batch_size``, ``objective``, ``dist`` and the keyword ranges are static; ``params`` values
    and ``uniform_prob`` may be traced arrays.
    """
    _check(dist, params)
    k_main, k_floor, k_pick = jax.random.split(key, 3)
    ranges = dict(t_eps=t_eps, sigma_min=sigma_min, sigma_max=sigma_max)
    levels = _draw(k_main, batch_size, objective, dist, params, **ranges)
    floor = uniform_levels(k_floor, batch_size, objective, **ranges)
    use_floor = jax.random.uniform(k_pick, (batch_size,)) < uniform_prob
    levels = jnp.where(use_floor, floor, levels)
    if objective.level_kind == "time":
        levels = jnp.clip(levels, t_eps, 1.0 - t_eps)
    return levels

