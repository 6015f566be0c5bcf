"""Diffusion objectives: the noising path, the model's input scaling and the training loss.

Every path is ``x_t = a(level)·x0 + s(level)·eps``. Three objectives share one interface:

- ``EDM``: level = σ; a = 1, s = σ; Karras et al. (2022) preconditioning; the network output F
  gives ``D = c_skip·x + c_out·F``; loss ``λ(σ)·‖D − x0‖²``.
- ``VCosine``: level = t ∈ [0, 1]; a = cos(πt/2), s = sin(πt/2); the network predicts
  ``v = a·eps − s·x0``; ``x̂0 = a·x_t − s·v̂``.
- ``RectifiedFlow``: level = t ∈ [0, 1] (t = 1 is pure noise); a = 1 − t, s = t; the network
  predicts ``v = eps − x0``; ``x̂0 = x_t − t·v̂``.

All objectives map to EDM σ̃-space with ``x̃ = x/a`` and ``σ̃ = s/a`` (``x̃ = x0 + σ̃·eps``), which
is where the samplers are written. Levels broadcast over ``[B, ...]``: a level of shape ``[B]``
is expanded with trailing unit axes to the rank of x.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Literal, Union

import jax
import jax.numpy as jnp

LevelKind = Literal["sigma", "time"]


def expand_to(level: jax.Array, x: jax.Array) -> jax.Array:
    """Reshape ``level`` (scalar or ``[B]``) so it broadcasts against ``x`` of shape ``[B, ...]``."""
    level = jnp.asarray(level)
    return level.reshape(level.shape + (1,) * (x.ndim - level.ndim))


def per_example_mean(values: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean over every axis but the first: ``[B, ...] -> [B]``. With ``mask`` ``[B, T]`` (1 = real frame,
    0 = padding) the mean over the real frames of axis 1 (and all of any later axes) only: padded
    frames get weight and gradient exactly 0; an example without a real frame gives 0."""
    axes = tuple(range(1, values.ndim))
    if mask is None:
        return jnp.mean(values, axis=axes)
    weight = jnp.broadcast_to(expand_to(mask, values), values.shape).astype(values.dtype)
    return jnp.sum(values * weight, axis=axes) / jnp.maximum(jnp.sum(weight, axis=axes), 1.0)


def _time_from_ratio(ratio: jax.Array) -> jax.Array:
    """t = ratio / (1 + ratio) with ratio = ∞ mapped to exactly 1 (no inf/inf)."""
    ratio = jnp.asarray(ratio)
    is_inf = jnp.isinf(ratio)
    finite = jnp.where(is_inf, 0.0, ratio)
    return jnp.where(is_inf, 1.0, finite / (1.0 + finite))


@dataclasses.dataclass(frozen=True)
class EDM:
    """EDM preconditioning (Karras et al. 2022). Level = σ; ``c_noise = ¼·ln σ``."""

    sigma_data: float = 0.5
    name: ClassVar[str] = "edm"
    level_kind: ClassVar[LevelKind] = "sigma"

    def alpha_sigma(self, level: jax.Array) -> tuple[jax.Array, jax.Array]:
        sigma = jnp.asarray(level)
        return jnp.ones_like(sigma), sigma

    def edm_sigma(self, level: jax.Array) -> jax.Array:
        return jnp.asarray(level)

    def level_from_edm_sigma(self, edm_sigma: jax.Array) -> jax.Array:
        return jnp.asarray(edm_sigma)

    def preconditioning(self, sigma: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """``(c_skip, c_out, c_in, c_noise)`` at σ (same shape as σ)."""
        sigma = jnp.asarray(sigma)
        sd2 = self.sigma_data**2
        total = sigma**2 + sd2
        c_skip = sd2 / total
        c_out = sigma * self.sigma_data / jnp.sqrt(total)
        c_in = 1.0 / jnp.sqrt(total)
        c_noise = 0.25 * jnp.log(sigma)
        return c_skip, c_out, c_in, c_noise

    def loss_weight(self, sigma: jax.Array) -> jax.Array:
        """λ(σ) = (σ² + σd²)/(σ·σd)²; note λ·c_out² = 1."""
        sigma = jnp.asarray(sigma)
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def add_noise(self, x0: jax.Array, eps: jax.Array, level: jax.Array) -> jax.Array:
        return x0 + expand_to(level, x0) * eps

    def model_input(self, x_t: jax.Array, level: jax.Array) -> tuple[jax.Array, jax.Array]:
        _, _, c_in, c_noise = self.preconditioning(level)
        return expand_to(c_in, x_t) * x_t, c_noise

    def denoise(self, model_output: jax.Array, x_t: jax.Array, level: jax.Array) -> jax.Array:
        c_skip, c_out, _, _ = self.preconditioning(expand_to(level, x_t))
        return c_skip * x_t + c_out * model_output

    def loss(self, model_output, x_t, x0, eps, level, mask=None) -> jax.Array:
        """Per-example ``λ(σ)·mean((D − x0)²)``, shape ``[B]`` (``mask``: see :func:`per_example_mean`)."""
        del eps
        denoised = self.denoise(model_output, x_t, level)
        return self.loss_weight(level) * per_example_mean((denoised - x0) ** 2, mask)


class _TimeObjective:
    """Shared parts of the t ∈ [0, 1] objectives: ``c_in = 1``, ``c_noise = t``, MSE on v."""

    level_kind: ClassVar[LevelKind] = "time"

    def alpha_sigma(self, level: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError

    def edm_sigma(self, level: jax.Array) -> jax.Array:
        a, s = self.alpha_sigma(level)
        return s / a  # a = 0 at t = 1 gives +inf (no exception in jax)

    def add_noise(self, x0: jax.Array, eps: jax.Array, level: jax.Array) -> jax.Array:
        a, s = self.alpha_sigma(expand_to(level, x0))
        return a * x0 + s * eps

    def model_input(self, x_t: jax.Array, level: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The network sees x_t unscaled and ``c_noise = t`` (a timestep in [0, 1])."""
        return x_t, jnp.asarray(level)

    def target(self, x0: jax.Array, eps: jax.Array, level: jax.Array) -> jax.Array:
        raise NotImplementedError

    def loss(self, model_output, x_t, x0, eps, level, mask=None) -> jax.Array:
        """Per-example plain MSE on the velocity target, shape ``[B]`` (``mask``: see :func:`per_example_mean`)."""
        del x_t
        return per_example_mean((model_output - self.target(x0, eps, level)) ** 2, mask)


@dataclasses.dataclass(frozen=True)
class VCosine(_TimeObjective):
    """v-prediction on the cosine path: a = cos(πt/2), s = sin(πt/2), v = a·eps − s·x0.

    a is computed as sin(π(1 − t)/2) so that a(1) is exactly 0 in floating point
    (cos(π/2) rounds to −4e-8 in fp32). σ̃ = tan(πt/2).
    """

    name: ClassVar[str] = "v"

    def alpha_sigma(self, level: jax.Array) -> tuple[jax.Array, jax.Array]:
        t = jnp.asarray(level)
        half_pi = 0.5 * math.pi
        return jnp.sin(half_pi * (1.0 - t)), jnp.sin(half_pi * t)

    def level_from_edm_sigma(self, edm_sigma: jax.Array) -> jax.Array:
        edm_sigma = jnp.asarray(edm_sigma)
        t = jnp.clip(jnp.arctan(edm_sigma) * (2.0 / math.pi), 0.0, 1.0)
        return jnp.where(jnp.isposinf(edm_sigma), 1.0, t)

    def target(self, x0: jax.Array, eps: jax.Array, level: jax.Array) -> jax.Array:
        a, s = self.alpha_sigma(expand_to(level, x0))
        return a * eps - s * x0

    def denoise(self, model_output: jax.Array, x_t: jax.Array, level: jax.Array) -> jax.Array:
        a, s = self.alpha_sigma(expand_to(level, x_t))
        return a * x_t - s * model_output


@dataclasses.dataclass(frozen=True)
class RectifiedFlow(_TimeObjective):
    """Rectified flow: a = 1 − t, s = t (t = 1 is noise), v = eps − x0, σ̃ = t/(1 − t)."""

    name: ClassVar[str] = "rf"

    def alpha_sigma(self, level: jax.Array) -> tuple[jax.Array, jax.Array]:
        t = jnp.asarray(level)
        return 1.0 - t, t

    def level_from_edm_sigma(self, edm_sigma: jax.Array) -> jax.Array:
        return _time_from_ratio(edm_sigma)

    def target(self, x0: jax.Array, eps: jax.Array, level: jax.Array) -> jax.Array:
        del level
        return eps - x0

    def denoise(self, model_output: jax.Array, x_t: jax.Array, level: jax.Array) -> jax.Array:
        return x_t - expand_to(level, x_t) * model_output


Objective = Union[EDM, VCosine, RectifiedFlow]

OBJECTIVES: dict[str, type] = {"edm": EDM, "v": VCosine, "rf": RectifiedFlow}


def make_objective(name: str, **kwargs) -> Objective:
    """Build an objective by name (``"edm"``, ``"v"``, ``"rf"``); kwargs go to its constructor."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[name](**kwargs)
