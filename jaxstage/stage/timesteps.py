"""Mechanism 2: self-adaptive timestep sampling (SPEC §3.4).

The location of the training noise-level distribution moves linearly with progress p:
`μ(p) = early + p·(late − early)`, from noisier levels (coarse, semantic structure) at p = 0 to
cleaner ones (fine detail) at p = 1. The result is the params dict of
`jaxstage.diffusion.noise.sample_levels`, as arrays, so p may be traced (one compilation).

The endpoints belong to the objective, the keys to the distribution:
- RF: endpoints in logit t. `logit_normal` → {loc, scale}; `lognormal` → {p_mean, p_std}
  (for RF ln σ̃ = ln(t/(1 − t)) = logit t, the same space).
- EDM: endpoints in ln σ. `lognormal` → {p_mean, p_std}; `logit_normal` → {loc, scale}
  (noise.py reads logit_normal as σ = exp(loc + scale·n) for EDM, the same space).
Other objectives (e.g. "v") have no SPEC endpoints and are rejected.

The uniform floor (`uniform_prob`) is passed to `sample_levels` separately.

Pure math: imports only jax.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

PARAM_KEYS: dict[str, tuple[str, str]] = {"logit_normal": ("loc", "scale"), "lognormal": ("p_mean", "p_std")}


def level_location(p: jax.Array | float, early: jax.Array | float, late: jax.Array | float) -> jax.Array:
    """early + p·(late − early), float32."""
    p = jnp.asarray(p, jnp.float32)
    return early + p * (jnp.asarray(late, jnp.float32) - early)


@dataclasses.dataclass(unsafe_hash=True)
class AdaptiveTimestepConfig:
    """Endpoints of the location (RF: logit t; EDM: ln σ). Hashed by value; not frozen, as the app's
    ``timesteps.*`` section extends it."""

    rf_early: float = 0.8  # logit-normal location at p = 0 (v and rf)
    rf_late: float = -0.4
    edm_early: float = -0.4  # lognormal P_mean at p = 0 (edm)
    edm_late: float = -1.2

    def endpoints(self, objective_name: str) -> tuple[float, float]:
        """(early, late) for "rf" or "edm"."""
        table = {"rf": (self.rf_early, self.rf_late), "edm": (self.edm_early, self.edm_late)}
        if objective_name not in table:
            raise ValueError(f"adaptive timesteps have endpoints for {sorted(table)} only, "
                             f"got objective {objective_name!r}")
        return table[objective_name]


def adaptive_level_params(p: jax.Array | float, objective_name: str, dist: str, scale: jax.Array | float,
                          cfg: AdaptiveTimestepConfig = AdaptiveTimestepConfig()) -> dict[str, jax.Array]:
    """`sample_levels` params at progress p: {loc: μ(p), scale} or {p_mean: P(p), p_std: scale}."""
    if dist not in PARAM_KEYS:
        raise ValueError(f"adaptive timesteps need a distribution with a location {sorted(PARAM_KEYS)}, got {dist!r}")
    early, late = cfg.endpoints(objective_name)
    loc_key, scale_key = PARAM_KEYS[dist]
    return {loc_key: level_location(p, early, late), scale_key: jnp.asarray(scale, jnp.float32)}
