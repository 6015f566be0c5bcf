"""One step function compiled ahead of time for fixed state/batch shapes and shardings (every trainer),
its non-finite updates skipped by a :class:`~jaxstage.run.non_finite.NonFiniteGuard`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import jax
from jax.sharding import Mesh, NamedSharding

from jaxstage import parallel
from jaxstage.run.checkpoint import abstract_target
from jaxstage.run.non_finite import NonFiniteGuard


@dataclass
class CompiledStep:
    """``step(state, batch) -> (state, metrics)``, compiled once; ``frozen`` (e.g. a frozen SSL
    encoder's weights) is passed as a further argument on every call, never donated or saved."""

    compiled: Any
    compile_seconds: float
    trace_count: int
    guard: NonFiniteGuard
    frozen: tuple = ()

    def __call__(self, state: Any, batch: dict[str, jax.Array]) -> tuple[Any, dict[str, jax.Array]]:
        return self.compiled(state, batch, *self.frozen)

    def memory_analysis(self) -> str:
        """Human-readable per-device memory figures of the compiled step."""
        try:
            m = self.compiled.memory_analysis()
        except Exception as err:  # some backends do not implement it
            return f"memory analysis unavailable: {err}"
        if m is None:
            return "memory analysis unavailable"
        mib = 1 << 20
        return (f"per device: arguments {m.argument_size_in_bytes / mib:.1f} MiB, outputs {m.output_size_in_bytes / mib:.1f} MiB, "
                f"temporaries {m.temp_size_in_bytes / mib:.1f} MiB, generated code {m.generated_code_size_in_bytes / mib:.1f} MiB")


def compile_step(step_fn: Callable, state_like: Any, state_shardings: Any, abstract_batch: Any, mesh: Mesh,
                 batch_sharding: NamedSharding, guard: NonFiniteGuard, frozen: tuple = ()) -> CompiledStep:
    """Compile ``step_fn(state, batch, *frozen)``, wrapped by ``guard`` (an update whose watched metrics
    are not finite is skipped), once, ahead of time.

    jit boundary: in/out shardings are the state's (parameters by the logical rules, the rest
    replicated) and the batch split over the batch mesh axes; ``frozen`` is replicated; metrics come
    back replicated. The state is donated, so parameters and optimizer moments update in place. An
    AOT-compiled step cannot silently retrace: a shape or sharding change raises instead.
    """
    traces = {"n": 0}
    guarded = guard.wrap(step_fn)

    def counted(state, batch, *frozen_args):
        traces["n"] += 1  # runs once per trace, never per step
        return guarded(state, batch, *frozen_args)

    rep = parallel.replicated(mesh)
    abstract = abstract_target(state_like, state_shardings)
    frozen_abstract = tuple(abstract_target(f, jax.tree.map(lambda _: rep, f)) for f in frozen)
    in_shardings = (state_shardings, batch_sharding, *(jax.tree.map(lambda _: rep, f) for f in frozen))
    jitted = jax.jit(counted, in_shardings=in_shardings, out_shardings=(state_shardings, rep), donate_argnums=0)
    start = time.perf_counter()
    with jax.set_mesh(mesh):
        compiled = jitted.lower(abstract, abstract_batch, *frozen_abstract).compile()
    return CompiledStep(compiled, time.perf_counter() - start, traces["n"], guard, tuple(frozen))
