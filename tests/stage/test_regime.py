"""Progress p from the monitor discrepancy (SPEC §3.2): curve shapes, monotonicity, noise, warm-up,
modes, one trace.

Every curve runs through ``update_progress`` under one ``jax.lax.scan`` per config, and the
adaptive curves share one vmapped compile (module fixture).
"""

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstage.stage.regime import (
    ProgressConfig,
    ProgressState,
    first_active_step,
    init_progress,
    progress_at_step,
    ring_slope,
    update_progress,
)

EVENTS = 200  # monitor events per curve
EVERY = 100  # steps between monitor events
NOISE_SIGMA = 0.02
NOISE_SEEDS = (0, 1, 2, 3, 4)
STEPS = np.arange(EVENTS, dtype=np.int32) * EVERY
CFG = ProgressConfig()
ATOL = 1e-6  # float32 slack on the per-event Δ_max bound


def floor_curve(k: np.ndarray) -> np.ndarray:
    """Exponential decay towards a floor of 0.3 (time constant 15 events)."""
    return 0.3 + 0.7 * np.exp(-k / 15.0)


def curves() -> dict[str, np.ndarray]:
    k = np.arange(EVENTS, dtype=np.float64)
    out = {"floor": floor_curve(k), "flat": np.full(EVENTS, 0.5), "linear": 1.0 - 0.004 * k}
    for seed in NOISE_SEEDS:
        noise = np.random.default_rng(seed).normal(0.0, NOISE_SIGMA, EVENTS)
        out[f"noisy{seed}"] = floor_curve(k) + noise
    return {name: c.astype(np.float32) for name, c in out.items()}


def run_curve(cfg: ProgressConfig, values: jax.Array, steps: jax.Array) -> ProgressState:
    """The state after every event of one curve (stacked along axis 0)."""

    def event(state, xs):
        state = update_progress(state, xs[0], xs[1], cfg)
        return state, state

    _, states = jax.lax.scan(event, init_progress(cfg), (values, steps))
    return states


run_curve_jit = jax.jit(run_curve, static_argnames="cfg")
run_many = jax.jit(jax.vmap(run_curve, in_axes=(None, 0, None)), static_argnames="cfg")


@pytest.fixture(scope="module")
def trajectories() -> dict[str, np.ndarray]:
    """p after every event, per curve, default config (one compile for all curves)."""
    named = curves()
    states = run_many(CFG, jnp.asarray(np.stack(list(named.values()))), jnp.asarray(STEPS))
    p = np.asarray(states.progress)
    return {name: p[i] for i, name in enumerate(named)}


def test_floor_curve_moves_p_from_zero_to_one_after_its_knee(trajectories):
    p = trajectories["floor"]
    # Measured: p ≈ 0 for events 0–11, 0.07 at 20, 0.35 at 30, 0.78 at 50, 0.99 at 100, 1.0 at 199.
    assert p[:10].max() < 0.05, p[:10]
    assert p[20] < 0.5 < p[50], (p[20], p[50])  # rises after the knee, not before
    assert p[-1] > 0.8, p[-1]


def test_flat_curve_ends_near_one(trajectories):
    # ρ = 0 on a flat curve; ρ_ref is floored at ρ_min > 0, so ρ/ρ_ref = 0 and p_raw = 1.
    p = trajectories["flat"]
    assert p[-1] > 0.9, p[-1]
    w = CFG.window
    np.testing.assert_allclose(p[w - 1: w + 4], CFG.max_delta * np.arange(1, 6), atol=ATOL)


def test_still_falling_linear_curve_keeps_p_low(trajectories):
    # D falls by a constant amount, so the relative rate ρ = 0.004/D̃ keeps growing: ρ = ρ_ref.
    assert trajectories["linear"].max() < 0.3, trajectories["linear"].max()


def test_p_is_monotone_and_rate_limited_on_every_curve(trajectories):
    for name, p in trajectories.items():
        step_up = np.diff(np.concatenate([[0.0], p]))
        assert step_up.min() >= 0.0, name
        assert step_up.max() <= CFG.max_delta + ATOL, name
        assert 0.0 <= p.min() and p.max() <= 1.0, name


def test_noise_does_not_make_p_jump(trajectories):
    clean = trajectories["floor"]
    for seed in NOISE_SEEDS:
        p = trajectories[f"noisy{seed}"]
        assert np.diff(p).max() <= CFG.max_delta + ATOL, seed
        assert np.abs(p - clean).mean() < 0.15, (seed, np.abs(p - clean).mean())
        assert p[:10].max() < 0.2, (seed, p[:10])


def test_warmup_holds_p_until_buffer_full_and_warmup_step():
    flat = jnp.full((EVENTS,), 0.5, jnp.float32)
    w = CFG.window
    p = np.asarray(run_curve_jit(CFG, flat, jnp.asarray(STEPS)).progress)
    assert np.all(p[: w - 1] == 0.0) and p[w - 1] > 0.0  # buffer full at event W−1
    warm = replace(CFG, warmup_steps=20 * EVERY)
    p = np.asarray(run_curve_jit(warm, flat, jnp.asarray(STEPS)).progress)
    assert np.all(p[:20] == 0.0) and p[20] > 0.0  # step 20·EVERY reached at event 20


def test_first_active_step_is_where_a_flat_curve_first_moves_p():
    # Events at steps every, 2·every, …: p on a flat curve first leaves 0 at first_active_step.
    every = 50
    steps = jnp.arange(1, EVENTS + 1, dtype=jnp.int32) * every
    flat = jnp.full((EVENTS,), 0.5, jnp.float32)
    for cfg in (CFG, replace(CFG, window=4), replace(CFG, window=16), replace(CFG, warmup_steps=1_020)):
        p = np.asarray(run_curve_jit(cfg, flat, steps).progress)
        first = int(np.asarray(steps)[np.argmax(p > 0.0)])
        assert first == first_active_step(cfg, every), (cfg.window, cfg.warmup_steps)
    assert first_active_step(replace(CFG, warmup_steps=1_020), every) == 1_050  # warm-up rounds up to an event
    # On a falling curve ρ_ref = ρ at the first full event, so p moves one event later at the earliest.
    falling = jnp.asarray(floor_curve(np.arange(EVENTS)), jnp.float32)
    p = np.asarray(run_curve_jit(CFG, falling, steps).progress)
    assert int(np.asarray(steps)[np.argmax(p > 0.0)]) >= first_active_step(CFG, every) + every
    with pytest.raises(ValueError, match="every"):
        first_active_step(CFG, 0)


def test_p_stays_exactly_zero_at_the_event_that_sets_the_reference_rate():
    # At the first full event ρ_ref = ρ, so p_raw = 1 - ρ/ρ_ref must be 0 exactly; compiled, x / x can
    # come out one ulp below 1 and p would leave 0 by ~6e-8 (a start reported one event early).
    rng = np.random.default_rng(0)
    k = np.arange(20)
    taus = rng.uniform(3.0, 40.0, (256, 1))
    curves = (0.3 + 0.7 * np.exp(-k / taus) + rng.normal(0.0, 0.01, (256, 20))).astype(np.float32)
    states = run_many(CFG, jnp.asarray(curves), jnp.arange(1, 21, dtype=jnp.int32) * 50)
    fill = CFG.window - 1
    rate, ref = np.asarray(states.rate[:, fill]), np.asarray(states.ref_rate[:, fill])
    at_ref = rate >= ref
    assert at_ref.sum() > 100  # most falling curves set ρ_ref from ρ there
    assert np.all(np.asarray(states.progress[:, fill])[at_ref] == 0.0)


def test_ring_buffer_slope_is_chronological_after_wraparound():
    # No smoothing (β = 0): D̃ = D, so on a line the OLS slope is exact at every event ≥ 1,
    # including after the ring wraps (a wrong order would give a wrong slope).
    cfg = replace(CFG, beta=0.0)
    line = 1.0 - 0.01 * np.arange(30, dtype=np.float32)
    states = run_curve_jit(cfg, jnp.asarray(line), jnp.arange(30, dtype=jnp.int32))
    slope = np.asarray(states.slope)
    assert slope[0] == 0.0
    np.testing.assert_allclose(slope[1:], -0.01, rtol=1e-3)
    np.testing.assert_allclose(np.asarray(states.rate)[1:], 0.01 / line[1:], rtol=1e-3)
    # Direct check on a hand-filled ring: W = 4, 6 pushes of 0..5 → slots hold [4, 5, 2, 3].
    assert float(ring_slope(jnp.asarray([4.0, 5.0, 2.0, 3.0]), jnp.asarray(6, jnp.int32))) == pytest.approx(1.0)


def test_ref_rate_waits_for_full_buffer():
    states = run_curve_jit(CFG, jnp.asarray(floor_curve(np.arange(EVENTS)), jnp.float32), jnp.asarray(STEPS))
    ref = np.asarray(states.ref_rate)
    w = CFG.window
    assert np.all(ref[: w - 1] == 0.0) and ref[w - 1] >= CFG.rho_min
    assert np.all(np.diff(ref[w - 1:]) >= 0.0)
    assert np.asarray(states.rate)[1] > 0.0  # ρ is tracked before the buffer is full


def _mode_trajectory(cfg: ProgressConfig, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p from update_progress per event and from progress_at_step, for a falling curve."""
    values = jnp.asarray(floor_curve(np.arange(len(steps))), jnp.float32)
    states = run_curve_jit(cfg, values, jnp.asarray(steps))
    at = jax.jit(jax.vmap(lambda s: progress_at_step(init_progress(cfg), s, cfg)))(jnp.asarray(steps))
    return np.asarray(states.progress), np.asarray(at)


def test_linear_mode():
    cfg = ProgressConfig(mode="linear", linear_start=1000, linear_end=3000)
    steps = np.arange(0, 5000, 100, dtype=np.int32)
    p, at = _mode_trajectory(cfg, steps)
    expected = np.clip((steps - 1000) / 2000.0, 0.0, 1.0)
    np.testing.assert_allclose(p, expected, atol=ATOL)
    np.testing.assert_allclose(at, expected, atol=ATOL)


def test_switch_at_mode():
    cfg = ProgressConfig(mode="switch_at", switch_step=2500)
    steps = np.arange(0, 5000, 100, dtype=np.int32)
    p, at = _mode_trajectory(cfg, steps)
    np.testing.assert_array_equal(p, (steps >= 2500).astype(np.float32))
    np.testing.assert_array_equal(at, p)


def test_random_mode_is_deterministic_per_seed_and_varies_across_seeds():
    lo, hi = 1000, 9000
    drawn = []
    for seed in range(6):
        cfg = ProgressConfig(mode="random", random_low=lo, random_high=hi, seed=seed)
        switch = int(init_progress(cfg).switch_step)
        assert switch == int(init_progress(cfg).switch_step)
        assert lo <= switch <= hi
        drawn.append(switch)
    assert len(set(drawn)) > 1, drawn
    cfg = ProgressConfig(mode="random", random_low=lo, random_high=hi, seed=0)
    steps = np.arange(0, 10_000, 100, dtype=np.int32)
    p, at = _mode_trajectory(cfg, steps)
    np.testing.assert_array_equal(p, (steps >= drawn[0]).astype(np.float32))
    np.testing.assert_array_equal(at, p)


def test_off_mode_keeps_p_zero_but_tracks_statistics():
    cfg = ProgressConfig(mode="off")
    states = run_curve_jit(cfg, jnp.full((EVENTS,), 0.5, jnp.float32), jnp.asarray(STEPS))
    assert np.all(np.asarray(states.progress) == 0.0)
    assert np.all(np.asarray(states.ref_rate)[CFG.window - 1:] >= cfg.rho_min)
    np.testing.assert_allclose(np.asarray(states.smoothed), 0.5, atol=ATOL)


def test_update_traces_once_for_many_steps_and_values():
    traces = []

    def update(state, d, step):
        traces.append(1)
        return update_progress(state, d, step, CFG)

    update = jax.jit(update)
    state = init_progress(CFG)
    for k, d in enumerate(floor_curve(np.arange(30))):
        state = update(state, jnp.float32(d), jnp.int32(k * EVERY))
    assert len(traces) == 1
    assert int(state.count) == 30


def test_state_is_a_pytree_of_arrays():
    leaves = jax.tree.leaves(init_progress(CFG))
    assert len(leaves) == 8 and all(isinstance(x, jax.Array) for x in leaves)


@pytest.mark.parametrize(
    "field, value",
    [("mode", "cosine"), ("beta", 1.0), ("window", 1), ("eps", 0.0), ("rho_min", 0.0), ("max_delta", 0.0),
     ("warmup_steps", -1), ("linear_end", 0), ("switch_step", -1), ("random_high", 10)],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ProgressConfig(**{field: value})
