"""Structure-aware regularization over transformer blocks (SPEC §3.5, *ours*).

Pure math: jax, jax.numpy and flax only; every function is jit-able with static shapes (depth and
the number of groups G are static Python ints; S, progress and step may be traced).

1. Block signature ``w_b`` (`block_signatures`): the concatenation of block b's weight matrices,
   each flattened and divided by its safe Frobenius norm ``sqrt(‖m‖² + eps²)`` (zero-initialised
   kernels stay exactly zero, and the gradient there is finite).
2. ``S = cos(w_b, w_c)`` (`similarity`), cosine with the same safe norm.
3. `contiguous_partition`: blocks 0..depth−1 into G contiguous non-empty groups maximizing

       score = Σ_g (1/|g|) Σ_{b,c ∈ g} S_bc = Σ_b mean_{c ∈ g(b)} S_bc,

   the sum over blocks of each block's mean similarity to its own group, diagonal included.
   For unit signatures this is ``depth − Σ_g Σ_{b∈g} ‖w_b − w̄_g‖²``: k-means in signature space
   under a contiguity constraint, so it is not degenerate the way a plain sum of per-group means
   is (singletons would score a perfect 1 each). Solved exactly by dynamic programming over the
   (static) depth axis; ties go to the earliest group start.
4. Gate (`update_structure`): a check is *stable* when the partition is unchanged and
   ``‖S − S_prev‖_F / ‖S_prev‖_F < delta``; the first check never is. Consecutive stable checks are
   counted; the regularizer switches on when the count reaches `patience` and progress
   ``p ≥ p_struct``, and stays on (``step_on`` records the step).
5. Weight (`structure_weight`): ``λ_s · min(1, (step − step_on)/ramp_steps) · p`` when on, else 0.

Regularizers: `decorrelation_loss` (groups learn distinct features, after DiverseDiT) and the
ablation `anchoring_loss` (weight-space pull of each block's signature to its group mean).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import struct

KINDS = ("decorrelation", "anchoring")
DEFAULT_EPS = 1e-8


# ----------------------------------------------------------------------------- config and state


@dataclass(unsafe_hash=True)
class StructureConfig:
    """Gate and regularizer constants (hashed by value: pass as a static jit argument; not frozen, as
    the app's ``struct.*`` section extends it).

    `freeze_groups`: once on, keep the partition found at the switch (the regularizer's groups do
    not move under it); the check keeps measuring stability against that partition.
    """

    num_groups: int = 3
    delta: float = 0.02
    patience: int = 3  # P_stable
    p_struct: float = 0.3
    weight: float = 0.1  # λ_s
    ramp_steps: int = 5000
    kind: str = "decorrelation"
    eps: float = DEFAULT_EPS
    freeze_groups: bool = True

    def __post_init__(self) -> None:
        checks = (
            ("num_groups", self.num_groups >= 1, ">= 1"),
            ("delta", self.delta > 0, "> 0"),
            ("patience", self.patience >= 1, ">= 1"),
            ("p_struct", 0.0 <= self.p_struct <= 1.0, "in [0, 1]"),
            ("weight", self.weight >= 0, ">= 0"),
            ("ramp_steps", self.ramp_steps >= 0, ">= 0"),
            ("kind", self.kind in KINDS, f"one of {', '.join(KINDS)}"),
            ("eps", self.eps > 0, "> 0"),
        )
        for name, ok, need in checks:
            if not ok:
                raise ValueError(f"StructureConfig.{name}={getattr(self, name)!r} must be {need}")


@struct.dataclass
class StructureState:
    """`group_ids` [depth] int32; `prev_sim` [depth, depth] S of the last check; `stable_count`
    consecutive stable checks; `on` gate; `step_on` step the gate switched on (0 while off);
    `checks` number of checks done."""

    group_ids: jax.Array
    prev_sim: jax.Array
    stable_count: jax.Array
    on: jax.Array
    step_on: jax.Array
    checks: jax.Array


def _check_groups(depth: int, num_groups: int) -> None:
    if not 1 <= num_groups <= depth:
        raise ValueError(f"num_groups={num_groups} must be in [1, depth={depth}]")


def even_groups(depth: int, num_groups: int) -> jax.Array:
    """[depth] int32 ids of the near-even contiguous split (the placeholder before any check)."""
    _check_groups(depth, num_groups)
    return (jnp.arange(depth) * num_groups // depth).astype(jnp.int32)


def init_structure(depth: int, cfg: StructureConfig) -> StructureState:
    """Gate off, no checks yet, an even placeholder partition."""
    return StructureState(group_ids=even_groups(depth, cfg.num_groups), prev_sim=jnp.zeros((depth, depth), jnp.float32),
                          stable_count=jnp.zeros((), jnp.int32), on=jnp.zeros((), jnp.bool_),
                          step_on=jnp.zeros((), jnp.int32), checks=jnp.zeros((), jnp.int32))


# ----------------------------------------------------------------------------- signatures


def _safe_norm(x: jax.Array, eps: float, axis=None, keepdims: bool = False) -> jax.Array:
    """sqrt(Σx² + eps²): finite value and gradient at x = 0."""
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=keepdims) + eps**2)


def block_signatures(weight_matrices: Sequence[Sequence[jax.Array]], eps: float = DEFAULT_EPS) -> jax.Array:
    """[depth, P] float32: per block, its matrices flattened, each over its safe Frobenius norm."""
    shapes = [tuple(m.shape for m in block) for block in weight_matrices]
    if not shapes or any(s != shapes[0] for s in shapes):
        raise ValueError(f"blocks must have identical matrix shapes, got {shapes[:2]}...")
    rows = []
    for block in weight_matrices:
        parts = [m.astype(jnp.float32).reshape(-1) for m in block]
        rows.append(jnp.concatenate([p / _safe_norm(p, eps) for p in parts]))
    return jnp.stack(rows)


def similarity(signatures: jax.Array, eps: float = DEFAULT_EPS) -> jax.Array:
    """[depth, depth] cosine similarity of the rows of `signatures` (zero rows give 0)."""
    unit = signatures / _safe_norm(signatures, eps, axis=-1, keepdims=True)
    return unit @ unit.T


# ----------------------------------------------------------------------------- partition


def _segment_scores(S: jax.Array) -> jax.Array:
    """[n+1, n+1]: entry (i, j) = (1/(j−i)) Σ_{a,b ∈ [i, j)} S_ab for i < j, −inf otherwise."""
    n = S.shape[0]
    cut = jnp.arange(n + 1)
    blocks = jnp.arange(n)
    inside = ((cut[:, None, None] <= blocks) & (blocks < cut[None, :, None])).astype(S.dtype)
    total = jnp.einsum("ija,ab,ijb->ij", inside, S, inside)
    size = (cut[None, :] - cut[:, None]).astype(S.dtype)
    return jnp.where(size > 0, total / jnp.maximum(size, 1), -jnp.inf)


def contiguous_partition(S: jax.Array, num_groups: int) -> tuple[jax.Array, jax.Array]:
    """Exact DP: ([depth] int32 group ids, 0..G−1 in block order; scalar score). See module doc.

    f_k[j] = best score of blocks [0, j) in k groups = max_i f_{k−1}[i] + seg(i, j); the argmax
    tables are backtracked from j = depth with traced indices (G static steps).
    """
    depth = S.shape[0]
    _check_groups(depth, num_groups)
    seg = _segment_scores(jax.lax.stop_gradient(S).astype(jnp.float32))
    best = jnp.full((depth + 1,), -jnp.inf).at[0].set(0.0)  # f_0: zero groups cover zero blocks
    choices = []
    for _ in range(num_groups):
        cand = best[:, None] + seg  # [i, j]
        choices.append(jnp.argmax(cand, axis=0))  # first max: earliest start
        best = jnp.max(cand, axis=0)
    end = jnp.asarray(depth)
    ids = jnp.zeros((depth,), jnp.int32)
    for arg in reversed(choices[1:]):  # group starts s_{G−1}, ..., s_1 (s_0 = 0)
        start = arg[end]
        ids = ids + (jnp.arange(depth) >= start).astype(jnp.int32)
        end = start
    return ids, best[depth]


# ----------------------------------------------------------------------------- gate and weight


def relative_change(S: jax.Array, prev: jax.Array, eps: float = DEFAULT_EPS) -> jax.Array:
    """‖S − prev‖_F / ‖prev‖_F (denominator floored at eps)."""
    return jnp.linalg.norm(S - prev) / jnp.maximum(jnp.linalg.norm(prev), eps)


def update_structure(state: StructureState, S: jax.Array, progress: jax.Array, step: jax.Array,
                     cfg: StructureConfig) -> StructureState:
    """One structure check with similarity S at regime progress p and train step `step`."""
    S = jax.lax.stop_gradient(S).astype(jnp.float32)
    fresh, _ = contiguous_partition(S, cfg.num_groups)
    same = jnp.all(fresh == state.group_ids)
    ids = jnp.where(state.on, state.group_ids, fresh) if cfg.freeze_groups else fresh
    small = relative_change(S, state.prev_sim, cfg.eps) < cfg.delta
    stable = (state.checks > 0) & same & small
    count = jnp.where(stable, state.stable_count + 1, 0).astype(jnp.int32)
    switch = ~state.on & (count >= cfg.patience) & (progress >= cfg.p_struct)
    return StructureState(group_ids=ids.astype(jnp.int32), prev_sim=S, stable_count=count, on=state.on | switch,
                          step_on=jnp.where(switch, step, state.step_on).astype(jnp.int32), checks=state.checks + 1)


def structure_weight(state: StructureState, progress: jax.Array, step: jax.Array,
                     cfg: StructureConfig) -> jax.Array:
    """λ_s · min(1, (step − step_on)/ramp_steps) · p when on, else 0 (ramp_steps = 0: no ramp)."""
    elapsed = (step - state.step_on).astype(jnp.float32)
    ramp = jnp.clip(elapsed / cfg.ramp_steps, 0.0, 1.0) if cfg.ramp_steps > 0 else 1.0
    return jnp.where(state.on, cfg.weight * ramp * progress, 0.0).astype(jnp.float32)


# ----------------------------------------------------------------------------- regularizers


def _group_onehot(group_ids: jax.Array, num_groups: int) -> jax.Array:
    """[depth, G] float32 membership mask."""
    return (group_ids[:, None] == jnp.arange(num_groups)[None, :]).astype(jnp.float32)


def decorrelation_loss(summaries: jax.Array, group_ids: jax.Array, num_groups: int, *,
                       eps: float = DEFAULT_EPS) -> jax.Array:
    """mean_{g<h} mean_n cos²(z_{g,n}, z_{h,n}); z_g = mean of group g's block summaries.

    summaries [B, depth, D]: per-block token means of layer-normed hidden states
    (`DiffusionTransformer(..., normalize_summaries=True).block_summaries`). An empty group has
    z = 0 and contributes cos = 0 (contiguous partitions have none). G = 1 gives 0.
    """
    if num_groups < 2:
        return jnp.zeros((), jnp.float32)
    onehot = _group_onehot(group_ids, num_groups)
    size = jnp.maximum(onehot.sum(0), 1.0)
    z = jnp.einsum("bld,lg->bgd", summaries.astype(jnp.float32), onehot) / size[None, :, None]
    unit = z / _safe_norm(z, eps, axis=-1, keepdims=True)
    cos2 = jnp.square(jnp.einsum("bgd,bhd->bgh", unit, unit)).mean(0)  # [G, G]
    pairs = jnp.triu(jnp.ones((num_groups, num_groups), jnp.float32), k=1)
    return jnp.sum(cos2 * pairs) / pairs.sum()


def anchoring_loss(signatures: jax.Array, group_ids: jax.Array, num_groups: int) -> jax.Array:
    """Σ_g Σ_{b∈g} ‖w_b − w̄_g‖² / |g| on `block_signatures` rows (per-matrix normalized weights).

    Differentiable into the weights through `block_signatures`; note the normalization's
    gradient scales as 1/‖m‖, large for kernels still near their zero init.
    """
    onehot = _group_onehot(group_ids, num_groups)
    size = jnp.maximum(onehot.sum(0), 1.0)
    w = signatures.astype(jnp.float32)
    center = onehot @ ((onehot.T @ w) / size[:, None])  # [depth, P]: each block's group mean
    sq = jnp.sum(jnp.square(w - center), axis=-1)
    return jnp.sum(sq / (onehot @ size))
