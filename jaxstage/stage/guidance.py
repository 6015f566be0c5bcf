"""Mechanism 1: decayed SSL guidance (SPEC §3.3).

REPA-style alignment of the projected block-ℓ hidden state to SSL targets y:
`L_align = 1 − mean_tokens cos(h_ψ(H_ℓ), y)`, weight `λ_ssl(p) = λ₀·(1 − p)^γ`, exactly 0 for
p ≥ p_off. *(ours)* The projector always trains with the full λ₀ (so D stays measurable after the
decay); only the gradient into the backbone is scaled by g = λ_ssl/λ₀, through the stop-gradient
mix `H' = sg(H) + g·(H − sg(H))` (forward value unchanged).

Pure math: imports only jax, flax and `jaxstage.diffusion`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jaxstage.diffusion.objectives import per_example_mean

Axes = tuple[str | None, str | None]
# Logical axis names of the three kernels (column-, row-, then replicated-output parallel).
PROJECTOR_AXES: tuple[Axes, Axes, Axes] = (("embed", "mlp"), ("mlp", "embed"), ("embed", None))


@dataclasses.dataclass(unsafe_hash=True)
class AlignmentConfig:
    """λ₀, γ, p_off of λ_ssl(p); `layer`: align the output of block `layer` (1-based, as REPA's
    encoder_depth; -1 = depth // 3, at least 1); `hidden`: projector width; `eps`: cosine eps.
    Hashed by value; not frozen, as the app's ``guidance.*`` section extends it."""

    lambda0: float = 0.5
    gamma: float = 1.0
    p_off: float = 0.9
    layer: int = -1
    hidden: int = 2048
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if not self.lambda0 > 0:
            raise ValueError(f"lambda0 must be > 0, got {self.lambda0}")
        if not self.gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {self.gamma}")
        if not 0 <= self.p_off <= 1:
            raise ValueError(f"p_off must be in [0, 1], got {self.p_off}")
        if not (self.layer == -1 or self.layer >= 1):
            raise ValueError(f"layer must be -1 (depth // 3) or >= 1, got {self.layer}")
        if not self.hidden >= 1:
            raise ValueError(f"hidden must be >= 1, got {self.hidden}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")

    def hidden_layer(self, depth: int) -> int:
        """0-based block index for the DiT's `hidden_layer` argument."""
        blocks = max(depth // 3, 1) if self.layer == -1 else self.layer
        if blocks > depth:
            raise ValueError(f"layer {self.layer} exceeds the backbone depth {depth}")
        return blocks - 1


class Projector(nnx.Module):
    """h_ψ: MLP in_dim -> hidden -> hidden -> out_dim with SiLU, applied tokenwise.

    Inputs [..., in_dim] are flattened to 2-D before the matmuls (XLA:CPU computes the backward of
    a 3-D dot_general ~2x slower; free on accelerators).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 2048, *, rngs: nnx.Rngs,
                 axes: tuple[Axes, Axes, Axes] = PROJECTOR_AXES, kernel_init=nnx.initializers.lecun_normal(),
                 dtype=jnp.float32, param_dtype=jnp.float32):
        dims = (in_dim, hidden, hidden, out_dim)
        self.layers = nnx.List([
            nnx.Linear(d_in, d_out, rngs=rngs, dtype=dtype, param_dtype=param_dtype,
                       kernel_init=nnx.with_partitioning(kernel_init, ax, eager_sharding=False))
            for d_in, d_out, ax in zip(dims[:-1], dims[1:], axes)
        ])

    def __call__(self, h: jax.Array) -> jax.Array:
        lead = h.shape[:-1]
        x = h.reshape(-1, h.shape[-1])
        for layer in self.layers[:-1]:
            x = jax.nn.silu(layer(x))
        x = self.layers[-1](x)
        return x.reshape(*lead, x.shape[-1])


def _unit(x: jax.Array, eps: float) -> jax.Array:
    """x / sqrt(|x|² + eps) over the last axis: finite value and gradient at x = 0."""
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def token_cosine(a: jax.Array, b: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Eps-safe cosine over the last axis: [..., d] x [..., d] -> [...] (float32)."""
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    return jnp.sum(_unit(a, eps) * _unit(b, eps), axis=-1)


def per_example_alignment(projected: jax.Array, targets: jax.Array, eps: float = 1e-8,
                          mask: jax.Array | None = None) -> jax.Array:
    """1 − mean_tokens cos: [B, T, d] x [B, T, d] -> [B]. Targets carry no gradient. ``mask`` [B, T]
    (1 = real token, 0 = padding): the mean over the real tokens only (0 gradient at padding)."""
    if projected.shape != targets.shape:
        raise ValueError(f"projected {projected.shape} and targets {targets.shape} must have the same shape")
    return 1.0 - per_example_mean(token_cosine(projected, jax.lax.stop_gradient(targets), eps), mask)


def alignment_loss(projected: jax.Array, targets: jax.Array, eps: float = 1e-8,
                   mask: jax.Array | None = None) -> jax.Array:
    """L_align = 1 − mean_tokens cos(projected, targets), averaged over the batch: a scalar in [0, 2]."""
    return per_example_alignment(projected, targets, eps, mask).mean()


def ssl_weight(p: jax.Array | float, lambda0: float = 0.5, gamma: float = 1.0, p_off: float = 0.9) -> jax.Array:
    """λ_ssl(p) = λ₀·(1 − p)^γ (p clipped to [0, 1]), exactly 0 when p ≥ p_off."""
    p = jnp.asarray(p, jnp.float32)
    decayed = lambda0 * (1.0 - jnp.clip(p, 0.0, 1.0)) ** gamma
    return jnp.where(p >= p_off, 0.0, decayed).astype(jnp.float32)


def route_gradient(hidden: jax.Array, g: jax.Array | float) -> jax.Array:
    """sg(h) + g·(h − sg(h)): the same value as h; the gradient flowing into h is scaled by g."""
    frozen = jax.lax.stop_gradient(hidden)
    return frozen + jnp.asarray(g, hidden.dtype) * (hidden - frozen)


def guided_alignment(hidden: jax.Array, projector_fn: Callable[[jax.Array], jax.Array], targets: jax.Array,
                     p: jax.Array | float, cfg: AlignmentConfig = AlignmentConfig(),
                     mask: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """λ₀·L_align(h_ψ(route_gradient(H, λ_ssl(p)/λ₀)), y) and its metrics.

    Gradients: projector ∝ λ₀ at every p; backbone ∝ λ_ssl(p) (0 for p ≥ p_off). Metrics:
    `loss_align` (raw L_align, the alignment D on this batch), `ssl_weight` (λ_ssl),
    `ssl_backbone_scale` (g). ``mask`` [B, T]: average over the real tokens only.
    """
    lam = ssl_weight(p, cfg.lambda0, cfg.gamma, cfg.p_off)
    g = lam / cfg.lambda0
    raw = alignment_loss(projector_fn(route_gradient(hidden, g)), targets, cfg.eps, mask)
    metrics = {"loss_align": raw, "ssl_weight": lam, "ssl_backbone_scale": g}
    return cfg.lambda0 * raw, metrics
