"""Samplers and classifier-free guidance.

Every sampler is written once in EDM σ̃-space (``x̃ = x/a``, ``σ̃ = s/a``, ``x̃ = x0 + σ̃·eps``)
but carries the state ``x`` in the objective's own space, so that σ̃ = ∞ (v/rf at t = 1, a = 0)
never has to be formed. Each step evaluates ``D = denoise_fn(x, level)`` and the implied noise
``ε̂ = (x − a·D)/s = (x̃ − D)/σ̃`` (finite whenever s > 0, i.e. on every level but the last), and
an Euler step in σ̃ is then ``x̃' = D + σ̃'·ε̂``, i.e. ``x' = a'·D + s'·ε̂`` (DDIM).

Endpoints:
- start: ``x = s(level₀)·x_T`` (σ_max·x_T for EDM, exactly x_T for v/rf at t = 1). At σ̃₀ = ∞ the
  first step is the exact σ̃₀ → ∞ limit of the Euler step, which stays first order: Heun skips its
  correction there (NFE 2N − 2 instead of 2N − 1) and DPM-Solver++(2M) is first order on it anyway.
- end: the last level is the clean end (σ̃ = 0, so s = 0 and a = 1 for all three objectives):
  the last step returns ``x = D`` and no ε̂ is ever computed at it.

``denoise_fn(x, level) -> x̂0`` receives ``level`` of shape ``[B]`` and already includes any
conditioning and guidance. Samplers are jitted with ``denoise_fn`` and ``objective`` static: reuse
the same ``denoise_fn`` object to reuse the compilation, and for a real model call the sampler
inside your own ``jax.jit`` with the parameters as a traced argument closed over by denoise_fn.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxstage.diffusion.guidance_rules import CFG, GuidanceRule, combine
from jaxstage.diffusion.objectives import Objective, expand_to

DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]


class _Steps(NamedTuple):
    """Per-step quantities for steps i = 0 .. N−1 (each ``[N]``): from level i to level i+1."""

    index: jax.Array
    level: jax.Array
    next_level: jax.Array
    a: jax.Array
    s: jax.Array
    next_a: jax.Array
    next_s: jax.Array
    sigma: jax.Array  # σ̃_i, may be +inf at i = 0
    next_sigma: jax.Array


def _steps(objective: Objective, levels: jax.Array) -> _Steps:
    levels = jnp.asarray(levels, jnp.float32)
    if levels.ndim != 1 or levels.shape[0] < 2:
        raise ValueError(f"levels must be a 1-D schedule of N+1 >= 2 values, got shape {levels.shape}")
    a, s = objective.alpha_sigma(levels)
    sigma = objective.edm_sigma(levels)
    n = levels.shape[0] - 1
    return _Steps(index=jnp.arange(n), level=levels[:-1], next_level=levels[1:], a=a[:-1], s=s[:-1],
                  next_a=a[1:], next_s=s[1:], sigma=sigma[:-1], next_sigma=sigma[1:])


def _denoise(denoise_fn: DenoiseFn, x: jax.Array, level: jax.Array) -> jax.Array:
    return denoise_fn(x, jnp.full((x.shape[0],), level, jnp.float32))


def _initial(steps: _Steps, x_T: jax.Array) -> jax.Array:
    return steps.s[0] * x_T


def _jit(fn):
    return jax.jit(fn, static_argnames=("denoise_fn", "objective"))


@_jit
def euler(denoise_fn: DenoiseFn, objective: Objective, levels: jax.Array, x_T: jax.Array, key=None) -> jax.Array:
    """Euler on the probability-flow ODE in σ̃ (= DDIM). NFE = N. ``key`` is unused."""
    del key
    tab = _steps(objective, levels)

    def body(x, step: _Steps):
        denoised = _denoise(denoise_fn, x, step.level)
        eps = (x - step.a * denoised) / step.s
        return step.next_a * denoised + step.next_s * eps, None

    x, _ = lax.scan(body, _initial(tab, x_T), tab)
    return x


@functools.partial(jax.jit, static_argnames=("denoise_fn", "objective", "s_churn", "s_tmin", "s_tmax", "s_noise"))
def heun(denoise_fn: DenoiseFn, objective: Objective, levels: jax.Array, x_T: jax.Array, key: jax.Array | None = None,
         s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0) -> jax.Array:
    """EDM Algorithm 2: Heun with a second-order correction on every step except the last
    (to σ̃ = 0) and a first step from σ̃ = ∞. NFE = 2N − 1 for a finite σ̃₀.

    Churn (``s_churn > 0``, needs ``key``): where ``s_tmin <= σ̃_i <= s_tmax`` the level is first
    raised to ``σ̂ = σ̃_i·(1 + γ)``, ``γ = min(s_churn/N, √2 − 1)``, by adding noise of std
    ``s_noise·√(σ̂² − σ̃_i²)`` in σ̃-space.
    """
    tab = _steps(objective, levels)
    n = tab.level.shape[0]
    churn = s_churn > 0.0
    if churn and key is None:
        raise ValueError("heun with s_churn > 0 needs a PRNG key")
    gamma_max = min(s_churn / n, math.sqrt(2.0) - 1.0)

    def body(x, step: _Steps):
        level, a, s, sigma = step.level, step.a, step.s, step.sigma
        if churn:
            in_window = (sigma >= s_tmin) & (sigma <= s_tmax) & jnp.isfinite(sigma)
            gamma = jnp.where(in_window, gamma_max, 0.0)
            sigma_hat = sigma * (1.0 + gamma)
            level_hat = jnp.where(gamma > 0, objective.level_from_edm_sigma(sigma_hat), level)
            a_hat, s_hat = objective.alpha_sigma(level_hat)
            noise = jax.random.normal(jax.random.fold_in(key, step.index), x.shape, x.dtype)
            extra_std = s_noise * jnp.sqrt(jnp.maximum(sigma_hat**2 - sigma**2, 0.0))
            x_churned = a_hat * (x / jnp.where(gamma > 0, a, 1.0) + extra_std * noise)
            x = jnp.where(gamma > 0, x_churned, x)
            level, a, s, sigma = level_hat, a_hat, s_hat, sigma_hat

        denoised = _denoise(denoise_fn, x, level)
        eps = (x - a * denoised) / s
        x_next = step.next_a * denoised + step.next_s * eps

        def correct(x_euler):
            denoised2 = _denoise(denoise_fn, x_euler, step.next_level)
            eps2 = (x_euler - step.next_a * denoised2) / step.next_s
            return x_euler + step.next_a * (step.next_sigma - sigma) * 0.5 * (eps2 - eps)

        second_order = (step.next_s > 0) & jnp.isfinite(sigma)
        return lax.cond(second_order, correct, lambda x_euler: x_euler, x_next), None

    x, _ = lax.scan(body, _initial(tab, x_T), tab)
    return x


@_jit
def dpmpp_2m(denoise_fn: DenoiseFn, objective: Objective, levels: jax.Array, x_T: jax.Array, key=None) -> jax.Array:
    """DPM-Solver++(2M), data-prediction form with λ = −ln σ̃. NFE = N. ``key`` is unused.

    First order on the first step, on the last step (to σ̃ = 0) and after a step from σ̃ = ∞.
    """
    del key
    tab = _steps(objective, levels)
    all_sigma = jnp.concatenate([tab.sigma, tab.next_sigma[-1:]])
    h = jnp.log(all_sigma[:-1]) - jnp.log(all_sigma[1:])  # λ_{i+1} − λ_i; inf at σ̃ = ∞ or 0
    h_prev = jnp.concatenate([jnp.full((1,), jnp.inf), h[:-1]])
    second_order = jnp.isfinite(h) & jnp.isfinite(h_prev)
    coef = jnp.where(second_order, h / (2.0 * jnp.where(second_order, h_prev, 1.0)), 0.0)  # 1/(2r)
    finite = jnp.isfinite(tab.sigma)
    ratio = jnp.where(finite, tab.next_sigma / jnp.where(finite, tab.sigma, 1.0), 0.0)  # σ̃'/σ̃

    def body(carry, inputs):
        x, denoised_prev = carry
        step, c, r = inputs
        denoised = _denoise(denoise_fn, x, step.level)
        eps = (x - step.a * denoised) / step.s
        denoised_d = denoised + c * (denoised - denoised_prev)
        # x̃' = r·x̃ + (1 − r)·D_d with x̃ = D + σ̃·ε̂, written without forming x̃.
        x_next = step.next_a * (denoised_d + r * (denoised - denoised_d)) + step.next_s * eps
        return (x_next, denoised), None

    x0 = _initial(tab, x_T)
    (x, _), _ = lax.scan(body, (x0, jnp.zeros_like(x0)), (tab, coef, ratio))
    return x


@_jit
def pingpong(denoise_fn: DenoiseFn, objective: Objective, levels: jax.Array, x_T: jax.Array, key=None) -> jax.Array:
    """Ping-pong: ``x̂0 = D(x, level_i)``; ``x ← a(level_{i+1})·x̂0 + s(level_{i+1})·ε_fresh``.

    Exact in distribution at any step count when D returns a posterior *sample* (a few-step
    generator such as an ARC-post-trained model). With an MMSE denoiser (the posterior mean) the
    mean is right but the variance shrinks. NFE = N. Needs ``key``.
    """
    if key is None:
        raise ValueError("pingpong needs a PRNG key for its fresh noise")
    tab = _steps(objective, levels)

    def body(x, step: _Steps):
        denoised = _denoise(denoise_fn, x, step.level)
        noise = jax.random.normal(jax.random.fold_in(key, step.index), x.shape, x.dtype)
        return step.next_a * denoised + step.next_s * noise, None

    x, _ = lax.scan(body, _initial(tab, x_T), tab)
    return x


SAMPLERS: dict[str, Callable[..., jax.Array]] = {"euler": euler, "heun": heun, "dpmpp_2m": dpmpp_2m,
                                                  "pingpong": pingpong}


def sample(name: str, denoise_fn: DenoiseFn, objective: Objective, levels: jax.Array, x_T: jax.Array,
           key: jax.Array | None = None, **options: Any) -> jax.Array:
    """Run the sampler ``name`` from unit-Gaussian ``x_T`` down the schedule ``levels``."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name](denoise_fn, objective, levels, x_T, key, **options)


# --- classifier-free guidance -------------------------------------------------------------

UNBOUNDED_SIGMA = 1e9  # a CFG interval's upper bound at or above this is no bound (σ̃ = ∞ included)


def cfg_batched(denoise_with: Callable[[jax.Array, jax.Array, Any], jax.Array], cond: Any, uncond: Any,
                objective: Objective, scale: jax.Array | float,
                interval: tuple[float, float] = (0.0, math.inf), rule: GuidanceRule = CFG) -> DenoiseFn:
    """``D = combine(D_c, D_u, scale, rule)`` (plain CFG: ``D_u + scale·(D_c − D_u)``; APG and CFG
    rescale: :mod:`jaxstage.diffusion.guidance_rules`) where the level's EDM σ̃ lies in ``interval``
    (inclusive), else ``D = D_c``. The interval is in σ̃ units for every objective (rf: σ̃ = t/(1 − t);
    v: σ̃ = tan(πt/2)). An upper bound ≥ ``UNBOUNDED_SIGMA`` (the config default 1e9) has no limit:
    the pure-noise level (σ̃ = ∞, v/rf at t = 1) is guided too, as stable-audio-tools guides every
    level. One model call per NFE, on a doubled batch.

    ``denoise_with(x, level, conditioning) -> x̂0``; ``cond`` and ``uncond`` are pytrees with a
    leading batch axis, concatenated as ``[cond; uncond]``.
    """
    both = jax.tree.map(lambda c, u: jnp.concatenate([c, u], axis=0), cond, uncond)

    def denoise(x: jax.Array, level: jax.Array) -> jax.Array:
        batch = x.shape[0]
        level = jnp.broadcast_to(jnp.asarray(level, jnp.float32), (batch,))
        out = denoise_with(jnp.concatenate([x, x], 0), jnp.concatenate([level, level], 0), both)
        d_cond, d_uncond = out[:batch], out[batch:]
        sigma = objective.edm_sigma(level)
        below = sigma <= interval[1] if interval[1] < UNBOUNDED_SIGMA else jnp.ones_like(sigma, bool)
        inside = expand_to((sigma >= interval[0]) & below, d_cond)
        return jnp.where(inside, combine(d_cond, d_uncond, scale, rule), d_cond)

    return denoise

