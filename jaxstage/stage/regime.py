"""The regime variable: progress p ∈ [0, 1] from the monitor's discrepancy D (SPEC §3.2).

p = 0 is semantic acquisition (early), p = 1 refinement (late). ``ProgressState`` is a pytree of
arrays that lives inside the compiled train state and is checkpointed with it; ``ProgressConfig``
holds the static hyperparameters (hashed by value, so it can be a ``static_argnames`` of ``jax.jit``;
not frozen, since the app's ``regime.*`` config section extends it: do not mutate one in use).

``update_progress`` is one monitor event, SPEC §3.2 steps 1–7 (mode ``adaptive``):

1. ``D̃ ← β·D̃ + (1−β)·D`` (D̃ starts at the first D);
2. D̃ is pushed into a ring buffer of the last W events;
3. ``s`` = OLS slope (per event) over the filled part of the buffer, in chronological order;
   ``ρ = −s / max(D̃, ε)``, the relative rate (positive while D falls);
4. ``ρ_ref = max(ρ_ref, ρ, ρ_min)``, updated only once the buffer is full (before that, ρ is
   tracked for logging but ρ_ref stays 0 and p stays 0);
5. ``p_raw = 1 − clip(ρ/ρ_ref, 0, 1)``;
6. ``p ← clip(max(p, min(p_raw, p + Δ_max)), 0, 1)``: monotone, at most Δ_max per event;
7. warm-up: p is left at 0 until the buffer is full and ``step ≥ warmup_steps``.

ρ_min (default 1e-3 per event) is the rate below which the discrepancy counts as flat: a curve that
never falls faster than 0.1 % of its value per event gets ρ_ref = ρ_min and ρ/ρ_ref ≈ 0, so p
climbs to 1. It must sit well below the early relative rate of a real curve (a few % per event)
so that ρ_ref is set by the curve, not by the floor. A rising D (ρ < 0) gives p_raw = 1.

Other modes (static ``cfg.mode``; ablations). They still track D̃, ρ and ρ_ref for logging:

- ``linear``: ``p = clip((step − linear_start)/(linear_end − linear_start), 0, 1)``;
- ``switch_at``: ``p = 1`` once ``step ≥ switch_step``, else 0 (the HASTE-like fixed trigger);
- ``random``: as ``switch_at`` with the switch step drawn once, uniformly in
  ``[random_low, random_high]`` (inclusive), by ``jax.random.randint`` from ``jax.random.key(seed)``
  in ``init_progress``. The drawn step is stored in the state (``switch_step``), so a checkpoint
  carries it and a resumed run switches at the same step even if the PRNG implementation changes;
- ``off``: p stays 0 (static recipe).

The step-scheduled modes (``linear``, ``switch_at``, ``random``) depend on the step, not on
events: ``progress_at_step`` gives their p at any step, so the train step can read p every step
while ``update_progress`` runs only every ``regime.every`` steps. For ``adaptive`` and ``off`` it
returns the stored p.

Pure math: imports only jax, jax.numpy and flax; jit-able with ``step`` and ``discrepancy`` traced.
"""

from __future__ import annotations

from dataclasses import dataclass

import flax
import jax
import jax.numpy as jnp

MODES: tuple[str, ...] = ("adaptive", "linear", "switch_at", "random", "off")
SWITCH_MODES: tuple[str, ...] = ("switch_at", "random")


@dataclass(unsafe_hash=True)
class ProgressConfig:
    """Static hyperparameters of the progress variable (SPEC §3.2); hashable."""

    mode: str = "adaptive"
    beta: float = 0.8  # smoothing of D per event
    window: int = 8  # W, ring-buffer length (events) for the OLS slope
    eps: float = 1e-6  # floor of D̃ in ρ = −s / max(D̃, ε)
    rho_min: float = 1e-3  # floor of ρ_ref: relative rate per event that counts as flat
    max_delta: float = 0.05  # Δ_max, largest rise of p per event
    warmup_steps: int = 0  # p stays 0 before this step (adaptive mode)
    linear_start: int = 0  # linear mode: p = 0 at this step ...
    linear_end: int = 10_000  # ... and 1 at this step
    switch_step: int = 5_000  # switch_at mode: p jumps 0 → 1 at this step
    random_low: int = 1_000  # random mode: switch step drawn uniformly in [random_low, random_high]
    random_high: int = 9_000
    seed: int = 0  # random mode: seed of the switch-step draw

    def __post_init__(self) -> None:
        checks = (
            ("mode", self.mode in MODES, f"must be one of {MODES}, got {self.mode!r}"),
            ("beta", 0.0 <= self.beta < 1.0, f"must be in [0, 1), got {self.beta}"),
            ("window", self.window >= 2, f"must be >= 2, got {self.window}"),
            ("eps", self.eps > 0.0, f"must be > 0, got {self.eps}"),
            ("rho_min", self.rho_min > 0.0, f"must be > 0, got {self.rho_min}"),
            ("max_delta", 0.0 < self.max_delta <= 1.0, f"must be in (0, 1], got {self.max_delta}"),
            ("warmup_steps", self.warmup_steps >= 0, f"must be >= 0, got {self.warmup_steps}"),
            ("linear_start", self.linear_start >= 0, f"must be >= 0, got {self.linear_start}"),
            ("linear_end", self.linear_end > self.linear_start,
             f"must be > linear_start ({self.linear_start}), got {self.linear_end}"),
            ("switch_step", self.switch_step >= 0, f"must be >= 0, got {self.switch_step}"),
            ("random_low", self.random_low >= 0, f"must be >= 0, got {self.random_low}"),
            ("random_high", self.random_high >= self.random_low,
             f"must be >= random_low ({self.random_low}), got {self.random_high}"),
        )
        for name, ok, why in checks:
            if not ok:
                raise ValueError(f"ProgressConfig.{name} {why}")


@flax.struct.dataclass
class ProgressState:
    """Progress p and the monitor statistics behind it; every field is an array."""

    progress: jax.Array  # p ∈ [0, 1], f32 scalar
    smoothed: jax.Array  # D̃, f32 scalar
    buffer: jax.Array  # [W] f32 ring buffer of the last W values of D̃
    count: jax.Array  # int32, monitor events seen (the next write goes to slot count % W)
    rate: jax.Array  # ρ of the last event, f32
    ref_rate: jax.Array  # ρ_ref, f32 (0 until the buffer is full)
    slope: jax.Array  # s of the last event (per event), f32
    switch_step: jax.Array  # int32, step of the 0 → 1 jump (switch modes; -1 otherwise)


def random_switch_step(cfg: ProgressConfig) -> jax.Array:
    """The random mode's switch step: uniform in [random_low, random_high], from key(seed)."""
    key = jax.random.key(cfg.seed)
    return jax.random.randint(key, (), cfg.random_low, cfg.random_high + 1, dtype=jnp.int32)


def _switch_step(cfg: ProgressConfig) -> jax.Array:
    if cfg.mode == "random":
        return random_switch_step(cfg)
    if cfg.mode == "switch_at":
        return jnp.asarray(cfg.switch_step, jnp.int32)
    return jnp.asarray(-1, jnp.int32)


def init_progress(cfg: ProgressConfig) -> ProgressState:
    """State before the first monitor event: p = 0, empty buffer."""
    zero = jnp.zeros((), jnp.float32)
    return ProgressState(
        progress=zero, smoothed=zero, buffer=jnp.zeros((cfg.window,), jnp.float32),
        count=jnp.zeros((), jnp.int32), rate=zero, ref_rate=zero, slope=zero,
        switch_step=_switch_step(cfg),
    )


def ring_slope(buffer: jax.Array, count: jax.Array) -> jax.Array:
    """OLS slope (per event) over the filled part of a ring buffer after ``count`` pushes.

    Slot i holds event ``last − ((last − i) mod W)`` with ``last = count − 1``; slots whose event
    would be negative are still empty and masked out. Fewer than two values give slope 0.
    """
    window = buffer.shape[0]
    last = count - 1
    event = last - jnp.mod(last - jnp.arange(window, dtype=count.dtype), window)
    mask = (event >= 0).astype(jnp.float32)
    x = (event - last).astype(jnp.float32)  # ≤ 0: event age, newest at 0
    n = jnp.maximum(mask.sum(), 1.0)
    x_c = x - (mask * x).sum() / n
    y_c = buffer - (mask * buffer).sum() / n
    sxx = (mask * x_c * x_c).sum()
    sxy = (mask * x_c * y_c).sum()
    return jnp.where(sxx > 0.0, sxy / jnp.where(sxx > 0.0, sxx, 1.0), 0.0)


def first_active_step(cfg: ProgressConfig, every: int) -> int:
    """The first step at which adaptive p can leave 0, with monitor events at ``every``, 2·``every``, ….

    That is the first event with a full buffer (event W) at or after ``warmup_steps``. A flat D reaches
    it (ρ = 0 < ρ_min); on a falling D, ρ_ref is set to ρ at event W itself, so p_raw = 0 there and p
    can leave 0 one event later at the earliest. Host-side arithmetic on static config values.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    first_event = max(cfg.window, -(-cfg.warmup_steps // every))  # ceil(warmup / every)
    return first_event * every


def progress_at_step(state: ProgressState, step: jax.Array, cfg: ProgressConfig) -> jax.Array:
    """p at ``step``: the schedule for linear/switch modes, the stored p for adaptive/off."""
    step = jnp.asarray(step)
    if cfg.mode == "linear":
        span = float(cfg.linear_end - cfg.linear_start)
        frac = (step.astype(jnp.float32) - cfg.linear_start) / span
        return jnp.clip(frac, 0.0, 1.0)
    if cfg.mode in SWITCH_MODES:
        return (step >= state.switch_step).astype(jnp.float32)
    return state.progress


def _adaptive_progress(
    state: ProgressState, rate: jax.Array, ref_rate: jax.Array, active: jax.Array, cfg: ProgressConfig
) -> jax.Array:
    """SPEC §3.2 steps 5–7: raw progress, monotone rate-limited update, warm-up hold."""
    ref = jnp.maximum(ref_rate, cfg.rho_min)
    # rate ≥ ref gives p_raw = 0 exactly: XLA may lower x / x to x · (1/x), one ulp below 1, which
    # would move p by ~6e-8 at the event that sets ρ_ref (and report a start one event early).
    p_raw = jnp.where(rate >= ref, 0.0, 1.0 - jnp.clip(rate / ref, 0.0, 1.0))
    p = state.progress
    p_new = jnp.clip(jnp.maximum(p, jnp.minimum(p_raw, p + cfg.max_delta)), 0.0, 1.0)
    return jnp.where(active, p_new, p)


def update_progress(
    state: ProgressState, discrepancy: jax.Array, step: jax.Array, cfg: ProgressConfig
) -> ProgressState:
    """One monitor event with discrepancy D at ``step`` (SPEC §3.2 steps 1–7, or the mode's p)."""
    d = jnp.asarray(discrepancy, jnp.float32)
    first = state.count == 0
    smoothed = jnp.where(first, d, cfg.beta * state.smoothed + (1.0 - cfg.beta) * d)
    buffer = state.buffer.at[jnp.mod(state.count, cfg.window)].set(smoothed)
    count = state.count + 1
    slope = ring_slope(buffer, count)
    rate = -slope / jnp.maximum(smoothed, cfg.eps)
    full = count >= cfg.window
    ref_rate = jnp.where(full, jnp.maximum(jnp.maximum(state.ref_rate, rate), cfg.rho_min), state.ref_rate)
    if cfg.mode == "adaptive":
        active = full & (jnp.asarray(step) >= cfg.warmup_steps)
        progress = _adaptive_progress(state, rate, ref_rate, active, cfg)
    else:
        progress = progress_at_step(state, step, cfg)
    return state.replace(
        progress=jnp.asarray(progress, jnp.float32), smoothed=smoothed, buffer=buffer, count=count,
        rate=rate, ref_rate=ref_rate, slope=slope,
    )
