"""Non-finite steps, for every trainer: skipped inside the compiled step, stopped by the host loop.

Inside the step (no host round-trip): when a watched metric (the loss, a gradient norm) is not
finite, the whole new state is replaced by the old one except the step counter, so parameters,
optimizer moments, EMA and regime keep their values while the step (and, on the host, the data
position) advance. ``SkipCount`` in the state counts the skips; the metrics get ``skipped_steps``.
Once more than ``train.max_skipped_steps`` consecutive steps were skipped the count records that
step and metric, and the host loop stops the run at its next metrics fetch or save, whichever is
first. Before every save the host also checks, on device, that the state is finite (an update can
overflow although its loss and gradient were finite).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp

SKIPS_KEY = "_skips"  # the metrics entry carrying the SkipCount to the host (never logged)


@flax.struct.dataclass
class SkipCount:
    """Skipped steps of a run; scalars in the train state (replicated)."""

    total: jax.Array  # steps skipped since step 0 (logged as ``skipped_steps``)
    consecutive: jax.Array  # the current run of skipped steps
    stop_step: jax.Array  # the step at which the consecutive skips first exceeded the limit; -1: not yet
    stop_metric: jax.Array  # index (into the watched metrics) of the first non-finite one then; -1: not yet


def init_skips() -> SkipCount:
    """No step skipped yet (four distinct buffers: a donated state must not alias one twice)."""
    return SkipCount(total=jnp.zeros((), jnp.int32), consecutive=jnp.zeros((), jnp.int32),
                     stop_step=jnp.full((), -1, jnp.int32), stop_metric=jnp.full((), -1, jnp.int32))


@dataclass(frozen=True)
class NonFiniteGuard:
    """Which metrics must stay finite for an update to be applied, and how many consecutive skips
    (``train.max_skipped_steps``) the run tolerates before it stops."""

    watched: tuple[str, ...]
    max_skipped: int

    def wrap(self, step_fn: Callable) -> Callable:
        """``step_fn(state, batch, *frozen)`` whose update is skipped when a watched metric is not finite.
        The state must have a ``skips`` field (a :class:`SkipCount`)."""

        def guarded(state: Any, batch: Any, *frozen: Any) -> tuple[Any, dict[str, jax.Array]]:
            new_state, metrics = step_fn(state, batch, *frozen)
            finite = jnp.stack([jnp.all(jnp.isfinite(metrics[k])) for k in self.watched])
            ok = jnp.all(finite)
            kept = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
            skips = state.skips
            consecutive = jnp.where(ok, 0, skips.consecutive + 1)
            exceeded = (consecutive > self.max_skipped) & (skips.stop_step < 0)
            skips = SkipCount(
                total=skips.total + (~ok).astype(jnp.int32), consecutive=consecutive,
                stop_step=jnp.where(exceeded, new_state.step, skips.stop_step),
                stop_metric=jnp.where(exceeded, jnp.argmin(finite).astype(jnp.int32), skips.stop_metric),
            )
            metrics = {**metrics, "skipped_steps": skips.total, SKIPS_KEY: skips}
            return kept.replace(step=new_state.step, skips=skips), metrics

        return guarded

    def stop_line(self, skips: SkipCount) -> str | None:
        """The one line that stops the run (fetched ``skips``), or None while within the limit."""
        if int(skips.stop_step) < 0:
            return None
        return (f"{self.watched[int(skips.stop_metric)]} is not finite at step {int(skips.stop_step)}: "
                f"{self.max_skipped + 1} consecutive steps skipped (train.max_skipped_steps={self.max_skipped})")


@jax.jit
def _finite_leaves(state: Any) -> list[jax.Array]:
    """One boolean per leaf of ``state``: all its values finite (integer leaves are always finite)."""
    return [jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.ones((), bool)
            for x in jax.tree.leaves(state)]


def first_non_finite(state: Any) -> str | None:
    """The path of the first state leaf holding a NaN or inf (checked on device), or None."""
    finite = jax.device_get(_finite_leaves(state))
    for (path, _), ok in zip(jax.tree_util.tree_flatten_with_path(state)[0], finite):
        if not ok:
            return jax.tree_util.keystr(path)
    return None
