"""How a guided sampler combines the conditional and unconditional denoised predictions.

Three rules, all on denoised predictions ``x̂0`` (``D_c``, ``D_u``) with a leading batch axis
(channels-last ``[B, T, C]`` in jaxstage); per-example statistics reduce over every non-batch axis:

- ``cfg``: plain classifier-free guidance, ``D = D_u + w (D_c − D_u)``.
- ``rescale`` (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed",
  §3.4): ``D_cfg`` as above, ``D_rescaled = D_cfg · std(D_c) / std(D_cfg)``,
  ``D = φ D_rescaled + (1 − φ) D_cfg``. jaxstage rescales the *denoised prediction* with the std
  per example over all non-batch axes (as Lin et al.'s Algorithm 2 and diffusers'
  ``rescale_noise_cfg``; their unbiased std cancels in the ratio). stable-audio-tools 0.0.19's
  ``scale_phi`` instead rescales its raw model output (the v / noise prediction) with the std over
  channels per time step: the two do not give the same numbers.
- ``apg`` (Sadat et al. 2024, "Eliminating oversaturation and artifacts of high guidance scales in
  diffusion models", arXiv:2410.02416, Algorithm 1): ``Δ = D_c − D_u``; with a norm threshold
  ``r > 0``, ``Δ ← Δ · min(1, r / ‖Δ‖)``; ``Δ_∥ = (⟨Δ, D_c⟩ / ⟨D_c, D_c⟩) D_c``, ``Δ_⊥ = Δ − Δ_∥``;
  ``D = D_c + (w − 1)(Δ_⊥ + η Δ_∥)``. The paper's momentum (a running average of ``Δ`` carried
  across sampler steps) is not implemented: jaxstage's samplers call a stateless
  ``denoise_fn(x, level)`` inside ``lax.scan``, so there is no state to carry it in. The projection
  is computed in float32 (the reference code uses float64).

At ``w = 1`` every rule returns ``D_c``. Pure jax.numpy: no I/O, no config.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

KINDS = ("cfg", "rescale", "apg")


@dataclass(frozen=True)
class GuidanceRule:
    """A guidance rule and its options; frozen, so hashable and usable as a jit static argument.

    ``rescale_phi`` (φ in [0, 1]) is read by ``rescale``; ``apg_eta`` (η ≥ 0, the weight kept on the
    update's component parallel to ``D_c``) and ``apg_norm_threshold`` (r ≥ 0; 0 = no cap on ‖Δ‖) by
    ``apg``."""

    kind: str = "cfg"
    rescale_phi: float = 0.7
    apg_eta: float = 0.0
    apg_norm_threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"guidance kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not 0.0 <= self.rescale_phi <= 1.0:
            raise ValueError(f"rescale_phi={self.rescale_phi!r} must be in [0, 1]")
        if self.apg_eta < 0 or self.apg_norm_threshold < 0:
            raise ValueError(f"apg_eta={self.apg_eta!r}, apg_norm_threshold={self.apg_norm_threshold!r} must be >= 0")


CFG = GuidanceRule("cfg")


def _per_example(x: jax.Array, reduce) -> jax.Array:
    """``reduce`` over every non-batch axis, kept as size-1 axes (broadcasts against ``x``)."""
    return reduce(x, axis=tuple(range(1, x.ndim)), keepdims=True)


def _safe_ratio(num: jax.Array, den: jax.Array, where_zero: float) -> jax.Array:
    """``num / den``, and ``where_zero`` where ``den`` is 0 (no inf or nan, also under autodiff)."""
    zero = den == 0
    return jnp.where(zero, where_zero, num / jnp.where(zero, 1.0, den))


def cfg(d_cond: jax.Array, d_uncond: jax.Array, scale: jax.Array | float) -> jax.Array:
    """``D_u + w (D_c − D_u)``."""
    return d_uncond + scale * (d_cond - d_uncond)


def rescale(d_cond: jax.Array, d_uncond: jax.Array, scale: jax.Array | float, phi: float) -> jax.Array:
    """CFG whose per-example std is pulled toward ``std(D_c)`` by the fraction ``phi`` (Lin et al.)."""
    guided = cfg(d_cond, d_uncond, scale)
    ratio = _safe_ratio(_per_example(d_cond, jnp.std), _per_example(guided, jnp.std), 1.0)
    return phi * (guided * ratio) + (1.0 - phi) * guided


def apg(d_cond: jax.Array, d_uncond: jax.Array, scale: jax.Array | float, eta: float,
        norm_threshold: float) -> jax.Array:
    """Adaptive projected guidance without momentum (Sadat et al., Algorithm 1)."""
    delta = d_cond - d_uncond
    if norm_threshold > 0:
        norm = jnp.sqrt(_per_example(jnp.square(delta), jnp.sum))
        delta = delta * jnp.minimum(1.0, _safe_ratio(jnp.asarray(norm_threshold, delta.dtype), norm, 1.0))
    coeff = _safe_ratio(_per_example(delta * d_cond, jnp.sum), _per_example(jnp.square(d_cond), jnp.sum), 0.0)
    parallel = coeff * d_cond
    orthogonal = delta - parallel
    return d_cond + (scale - 1.0) * (orthogonal + eta * parallel)


def combine(d_cond: jax.Array, d_uncond: jax.Array, scale: jax.Array | float, rule: GuidanceRule = CFG) -> jax.Array:
    """The guided prediction ``D`` of ``rule`` from ``D_c`` and ``D_u`` ([B, ...]) at guidance scale
    ``scale`` (a scalar), computed in float32 and returned in ``d_cond``'s dtype (use inside jit;
    ``rule`` is static)."""
    dtype = d_cond.dtype
    d_cond, d_uncond = d_cond.astype(jnp.float32), d_uncond.astype(jnp.float32)
    scale = jnp.asarray(scale, jnp.float32)
    if rule.kind == "cfg":
        out = cfg(d_cond, d_uncond, scale)
    elif rule.kind == "rescale":
        out = rescale(d_cond, d_uncond, scale, rule.rescale_phi)
    else:
        out = apg(d_cond, d_uncond, scale, rule.apg_eta, rule.apg_norm_threshold)
    return out.astype(dtype)
