"""Structure-aware regularization: exact DP partition, stability gate, weight ramp, regularizers.

Every jitted entry point takes the config as a static argument and S / progress / step / group ids
as traced arrays, so each shape compiles once (checked with a Python trace counter).
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxstage.models.dit import DiffusionTransformer, block_weight_matrices
from jaxstage.stage.structure import (
    StructureConfig,
    StructureState,
    anchoring_loss,
    block_signatures,
    contiguous_partition,
    decorrelation_loss,
    init_structure,
    similarity,
    structure_weight,
    update_structure,
)

CFG = StructureConfig(num_groups=3, delta=0.02, patience=3, p_struct=0.3, weight=0.1, ramp_steps=1000)
DEPTH = 8
SIZES_A, SIZES_B = (2, 3, 3), (3, 3, 2)

partition = jax.jit(contiguous_partition, static_argnums=1)
decorrelation = jax.jit(decorrelation_loss, static_argnums=2)
anchoring = jax.jit(anchoring_loss, static_argnums=2)


# ----------------------------------------------------------------------------- references


def partition_score(S: np.ndarray, ids: np.ndarray) -> float:
    """The DP objective Σ_g (1/|g|) Σ_{b,c∈g} S_bc of a partition given as group ids."""
    return sum(S[np.ix_(ids == g, ids == g)].sum() / (ids == g).sum() for g in np.unique(ids))


def brute_force_partition(S: np.ndarray, num_groups: int) -> list[tuple[float, np.ndarray]]:
    """All contiguous partitions of range(depth) into num_groups non-empty groups, best first."""
    depth = S.shape[0]
    out = []
    for cuts in itertools.combinations(range(1, depth), num_groups - 1):
        ids = np.searchsorted(np.asarray(cuts), np.arange(depth), side="right")
        out.append((partition_score(S, ids), ids))
    return sorted(out, key=lambda t: -t[0])


def blockdiag(sizes, within=0.9, across=0.1, noise=0.0, seed=0) -> np.ndarray:
    ids = np.repeat(np.arange(len(sizes)), sizes)
    S = np.where(ids[:, None] == ids[None, :], within, across)
    if noise:
        n = np.random.default_rng(seed).normal(scale=noise, size=S.shape)
        S = S + (n + n.T) / 2
    np.fill_diagonal(S, 1.0)
    return S.astype(np.float32)


def ids_of(sizes) -> np.ndarray:
    return np.repeat(np.arange(len(sizes)), sizes).astype(np.int32)


def decorrelation_reference(summaries: np.ndarray, ids: np.ndarray, G: int) -> float:
    z = np.stack([summaries[:, ids == g].mean(1) for g in range(G)], 1)  # [B, G, D]
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    vals = [np.mean(np.sum(z[:, g] * z[:, h], -1) ** 2) for g in range(G) for h in range(g + 1, G)]
    return float(np.mean(vals))


# ----------------------------------------------------------------------------- partition


@pytest.mark.parametrize("depth", range(3, 9))
def test_dp_matches_brute_force(depth):
    rng = np.random.default_rng(depth)
    for G in range(1, min(4, depth) + 1):
        for _ in range(4):
            A = rng.normal(size=(depth, depth))
            S = ((A + A.T) / 2).astype(np.float32)
            ids, score = partition(jnp.asarray(S), G)
            ids = np.asarray(ids)
            ranked = brute_force_partition(S.astype(np.float64), G)
            best = ranked[0][0]
            assert ids.dtype == np.int32 and ids[0] == 0 and ids[-1] == G - 1
            assert set(np.diff(ids)) <= {0, 1}, ids  # contiguous, non-empty, ordered
            np.testing.assert_allclose(float(score), best, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(partition_score(S.astype(np.float64), ids), best, rtol=1e-5, atol=1e-5)
            if len(ranked) == 1 or ranked[1][0] < best - 1e-3:  # unique optimum
                np.testing.assert_array_equal(ids, ranked[0][1])


def test_partition_recovers_block_structure():
    sizes = (2, 4, 3)
    ids, _ = partition(jnp.asarray(blockdiag(sizes, noise=0.05)), 3)
    np.testing.assert_array_equal(np.asarray(ids), ids_of(sizes))


def test_partition_rejects_too_many_groups():
    with pytest.raises(ValueError, match="num_groups"):
        contiguous_partition(jnp.eye(3), 4)


# ----------------------------------------------------------------------------- signatures


@functools.lru_cache(maxsize=1)
def tiny_dit_matrices() -> list[list[np.ndarray]]:
    """Real DiT block kernel shapes (abstract model: no init compile), host-random values, with
    the self-attention `to_out` and feed-forward output exactly zero as at init."""
    abstract = nnx.eval_shape(lambda: DiffusionTransformer(
        io_channels=4, embed_dim=32, depth=4, num_heads=1, cond_token_dim=8, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    mats = [[rng.normal(size=m.shape).astype(np.float32) for m in block]
            for block in block_weight_matrices(abstract)]
    for block in mats:  # order: to_qkv, to_out, cross (q, kv, out), ff.0, ff.2
        block[1][:] = 0.0
        block[-1][:] = 0.0
    return mats


def test_signatures_of_dit_blocks():
    mats = tiny_dit_matrices()
    sig = jax.jit(block_signatures, static_argnums=1)(mats, CFG.eps)
    assert sig.shape == (4, sum(m.size for m in mats[0]))
    nonzero = sum(bool(np.any(np.asarray(m))) for m in mats[0])
    np.testing.assert_allclose(np.linalg.norm(np.asarray(sig), axis=1), np.sqrt(nonzero), rtol=1e-5)
    S = np.asarray(similarity(sig, CFG.eps))
    np.testing.assert_allclose(np.diag(S), 1.0, rtol=1e-5)
    np.testing.assert_allclose(S, S.T, atol=1e-6)
    assert np.all(np.abs(S) <= 1 + 1e-5)


def test_signatures_reject_mismatched_blocks():
    with pytest.raises(ValueError, match="identical"):
        block_signatures([[jnp.ones((2, 3))], [jnp.ones((3, 2))]])


def test_anchoring_gradient_finite_at_zero_init():
    mats = tiny_dit_matrices()
    ids = jnp.asarray([0, 0, 1, 2], jnp.int32)
    grads = jax.jit(jax.grad(lambda m: anchoring_loss(block_signatures(m, CFG.eps), ids, 3)))(mats)
    leaves = jax.tree.leaves(grads)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
    assert any(np.any(np.asarray(g)) for g in leaves)


# ----------------------------------------------------------------------------- gate


TRACES = {"check": 0}


@functools.partial(jax.jit, static_argnames="cfg")
def check(state, S, progress, step, cfg=CFG):
    TRACES["check"] += 1
    new = update_structure(state, S, progress, step, cfg)
    return new, structure_weight(new, progress, step, cfg)


def run(cfg, seq, state=None):
    """Feed (S, progress, step) checks; return the list of states after each."""
    state = init_structure(DEPTH, cfg) if state is None else state
    out = []
    for S, p, step in seq:
        state, _ = check(state, jnp.asarray(S), jnp.float32(p), jnp.int32(step), cfg=cfg)
        out.append(state)
    return out


S_A, S_B = blockdiag(SIZES_A), blockdiag(SIZES_B)
CHANGING = [S_A, S_B, S_A, S_B]


def test_gate_switches_on_at_patience_th_stable_check():
    seq = [(S, 0.5, 10 * i) for i, S in enumerate(CHANGING + [S_A] * 4)]
    states = run(CFG, seq)
    counts = [int(s.stable_count) for s in states]
    assert counts == [0, 0, 0, 0, 0, 1, 2, 3]  # the first S_A after S_B is a partition change
    assert [bool(s.on) for s in states] == [False] * 7 + [True]
    assert int(states[-1].step_on) == 70
    np.testing.assert_array_equal(np.asarray(states[-1].group_ids), ids_of(SIZES_A))
    assert int(states[-1].checks) == 8


def test_gate_waits_for_progress():
    ps = [0.5] * 4 + [0.2, 0.2, 0.2, 0.29, 0.3]
    seq = [(S, p, 10 * i) for i, (S, p) in enumerate(zip(CHANGING + [S_A] * 5, ps))]
    states = run(CFG, seq)
    assert [int(s.stable_count) for s in states][-5:] == [0, 1, 2, 3, 4]
    assert [bool(s.on) for s in states] == [False] * 8 + [True]  # on only once p >= p_struct
    assert int(states[-1].step_on) == 80


def test_stability_needs_small_relative_change():
    rng = np.random.default_rng(0)
    small = [S_A * (1 + 0.002 * rng.normal(size=S_A.shape)).astype(np.float32) for _ in range(4)]
    states = run(CFG, [(S, 0.5, i) for i, S in enumerate(small)])
    assert [int(s.stable_count) for s in states] == [0, 1, 2, 3]
    grown = [S_A * 1.05**k for k in range(4)]  # same partition, 5% change per check > delta
    states = run(CFG, [(S, 0.5, i) for i, S in enumerate(grown)])
    assert [int(s.stable_count) for s in states] == [0, 0, 0, 0]
    assert not bool(states[-1].on)


@pytest.mark.parametrize("freeze", [True, False])
def test_gate_stays_on(freeze):
    cfg = StructureConfig(num_groups=3, patience=2, p_struct=0.3, freeze_groups=freeze)
    states = run(cfg, [(S_A, 0.5, i) for i in range(3)])
    assert bool(states[-1].on) and int(states[-1].step_on) == 2
    after = run(cfg, [(S, 0.0, 10 + i) for i, S in enumerate(CHANGING)], state=states[-1])
    assert all(bool(s.on) and int(s.step_on) == 2 for s in after)
    expect = ids_of(SIZES_A if freeze else SIZES_B)  # CHANGING ends with S_B
    np.testing.assert_array_equal(np.asarray(after[-1].group_ids), expect)


def test_first_check_never_stable():
    cfg = StructureConfig(num_groups=2, patience=1, p_struct=0.0)
    S = blockdiag((4, 4))  # its partition equals the even placeholder of init_structure
    state = init_structure(DEPTH, cfg)
    state = state.replace(prev_sim=jnp.asarray(S))  # even with S_prev == S
    np.testing.assert_array_equal(np.asarray(state.group_ids), ids_of((4, 4)))
    (first,) = run(cfg, [(S, 1.0, 0)], state=state)
    assert int(first.stable_count) == 0 and not bool(first.on)


# ----------------------------------------------------------------------------- weight


def on_state(step_on: int) -> StructureState:
    s = init_structure(DEPTH, CFG)
    return s.replace(on=jnp.asarray(True), step_on=jnp.int32(step_on))


@pytest.mark.parametrize("step, ramp", [(100, 0.0), (350, 0.25), (600, 0.5), (1100, 1.0), (9000, 1.0)])
def test_weight_ramp(step, ramp):
    p = 0.6
    w = structure_weight(on_state(100), jnp.float32(p), jnp.int32(step), CFG)
    np.testing.assert_allclose(float(w), CFG.weight * ramp * p, rtol=1e-6, atol=1e-9)


def test_weight_zero_when_off_and_no_ramp():
    off = init_structure(DEPTH, CFG)
    assert float(structure_weight(off, jnp.float32(1.0), jnp.int32(10**6), CFG)) == 0.0
    cfg = StructureConfig(ramp_steps=0, weight=0.2)
    np.testing.assert_allclose(float(structure_weight(on_state(5), jnp.float32(0.5), jnp.int32(5), cfg)), 0.1)


# ----------------------------------------------------------------------------- regularizers


def test_decorrelation_orthogonal_and_identical():
    B, D, sizes = 3, 5, (2, 2, 2)
    ids = jnp.asarray(ids_of(sizes))
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.5, 2.0, size=(B, 6, 1))
    ortho = (np.eye(D)[ids_of(sizes)][None] * scale).astype(np.float32)
    assert float(decorrelation(jnp.asarray(ortho), ids, 3)) < 1e-10
    same = np.repeat(rng.normal(size=(B, 1, D)), 6, axis=1).astype(np.float32)
    np.testing.assert_allclose(float(decorrelation(jnp.asarray(same), ids, 3)), 1.0, rtol=1e-5)
    assert float(decorrelation_loss(jnp.asarray(same), ids, 1)) == 0.0


def test_decorrelation_matches_reference_and_order_within_group():
    sizes = (2, 3, 3)
    ids = ids_of(sizes)
    x = np.random.default_rng(1).normal(size=(4, DEPTH, 6)).astype(np.float32)
    loss = float(decorrelation(jnp.asarray(x), jnp.asarray(ids), 3))
    np.testing.assert_allclose(loss, decorrelation_reference(x, ids, 3), rtol=1e-5)
    perm = np.array([1, 0, 4, 2, 3, 7, 5, 6])  # shuffles blocks within each group only
    assert np.all(ids[perm] == ids)
    np.testing.assert_allclose(float(decorrelation(jnp.asarray(x[:, perm]), jnp.asarray(ids), 3)), loss, rtol=1e-6)
    swapped = np.array([0, 2, 1, 3, 4, 5, 6, 7])  # moves a block across groups: loss changes
    assert abs(float(decorrelation(jnp.asarray(x[:, swapped]), jnp.asarray(ids), 3)) - loss) > 1e-4


def test_decorrelation_gradient_finite():
    ids = jnp.asarray(ids_of(SIZES_A))
    x = np.random.default_rng(2).normal(size=(2, DEPTH, 4)).astype(np.float32)
    x[1, :2] = 0.0  # group 0 of sample 1 has z = 0
    g = jax.jit(jax.grad(decorrelation_loss), static_argnums=2)(jnp.asarray(x), ids, 3)
    assert np.all(np.isfinite(np.asarray(g))) and np.any(np.asarray(g))


def test_anchoring_zero_for_equal_blocks_and_reference():
    ids = ids_of(SIZES_A)
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(3, 10))
    sig = centers[ids].astype(np.float32)
    assert float(anchoring(jnp.asarray(sig), jnp.asarray(ids), 3)) < 1e-10
    sig = sig + rng.normal(size=sig.shape).astype(np.float32)
    ref = sum(((sig[ids == g] - sig[ids == g].mean(0)) ** 2).sum() / (ids == g).sum() for g in range(3))
    np.testing.assert_allclose(float(anchoring(jnp.asarray(sig), jnp.asarray(ids), 3)), ref, rtol=1e-5)


# ----------------------------------------------------------------------------- jit and config


def test_one_compile_for_traced_inputs():
    traces = {"n": 0}

    @jax.jit
    def step_fn(state, S, progress, step, summaries):
        traces["n"] += 1
        state = update_structure(state, S, progress, step, CFG)
        w = structure_weight(state, progress, step, CFG)
        loss, grad = jax.value_and_grad(decorrelation_loss)(summaries, state.group_ids, CFG.num_groups)
        return state, w * loss, grad

    state = init_structure(DEPTH, CFG)
    rng = np.random.default_rng(4)
    for i, S in enumerate(CHANGING + [S_A] * 4):
        x = jnp.asarray(rng.normal(size=(2, DEPTH, 4)), jnp.float32)
        state, wl, grad = step_fn(state, jnp.asarray(S), jnp.float32(0.1 * i), jnp.int32(i), x)
        assert np.isfinite(float(wl)) and np.all(np.isfinite(np.asarray(grad)))
    assert traces["n"] == 1
    assert bool(state.on)  # the traced gate did move: 3 stable checks, progress 0.7 >= 0.3
    before = TRACES["check"]
    run(CFG, [(S_B, 0.9, 1), (S_A, 0.1, 2)])
    run(CFG, [(S_A, 0.4, 3)])
    assert TRACES["check"] - before <= 1  # `check` compiled at most once more for CFG


@pytest.mark.parametrize("field, value", [
    ("num_groups", 0), ("delta", 0.0), ("patience", 0), ("p_struct", 1.5), ("weight", -1.0),
    ("ramp_steps", -1), ("kind", "dispersive"), ("eps", 0.0),
])
def test_config_validation(field, value):
    with pytest.raises(ValueError, match=rf"StructureConfig\.{field}="):
        StructureConfig(**{field: value})
