"""Ahead-of-time memory check: compile the train step for a config's mesh and model without
initializing weights, reading data or running a step, and report the memory each device needs.

The state is abstract (shapes, dtypes and shardings from `restore_target`), so a 1B-parameter
model costs nothing but compile time. Figures per device:

- state: parameters, EMA and optimizer moments as sharded by the mesh rules (exact for any backend);
- XLA's `compiled.memory_analysis()`: arguments (state + batch), outputs, aliased (donated state
  reused for the new state), temporaries (activations, gradients, workspace) and generated code;
- peak: the larger of XLA's own peak figure (where the backend reports one) and
  arguments + outputs - aliased + temporaries (the CPU backend's peak figure leaves temporaries out).

Temporaries depend on the compiler: compiled for fake CPU devices (`--devices N`) they are the CPU
compiler's, a stand-in for an accelerator's (its fusion and scheduling differ); compile on the target
machine for its own figure. The CPU compiler normally expands the optimization barriers that
`jax.checkpoint` relies on, after which CSE merges the recomputation back into the forward pass and
`model.remat` saves nothing; `--devices` therefore compiles with `CPU_KEEP_REMAT_FLAG` (measured on a
toy 8-layer attention stack: 304 MiB of temporaries without remat, 304 MiB with remat by default,
56 MiB with remat and the flag).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field

import jax

from jaxstage.config import Config

GIB = 1 << 30
# keeps the CPU compiler from expanding jax.checkpoint's optimization barriers (pass cse_barrier_expander)
CPU_KEEP_REMAT_FLAG = "--xla_disable_hlo_passes=cse_barrier_expander"


@dataclass
class MemoryReport:
    """What one AOT compile of the train step needs per device (bytes)."""

    config: str
    platform: str
    num_devices: int
    mesh: dict[str, int]
    batch_size: int
    parameters: int  # trainable parameters of the whole model (not per device)
    state: dict[str, int]  # per device: params, ema, optimizer, other
    arguments: int
    outputs: int
    aliased: int
    temporaries: int
    generated_code: int
    peak: int  # max(xla_peak, arguments + outputs - aliased + temporaries)
    xla_peak: int  # the backend's own peak figure (0: not reported)
    compile_seconds: float
    device_memory: int | None = None  # the limit compared against (--device-memory), if given
    host_temporaries: int = 0  # temporaries in host memory (model.remat=offload on an accelerator)
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool | None:
        return None if self.device_memory is None else self.peak <= self.device_memory

    def to_json(self) -> dict:
        return {**asdict(self), "fits": self.fits}

    def lines(self) -> list[str]:
        """The human-readable report."""
        def gib(n: int) -> str:
            return f"{n / GIB:.2f} GiB" if n >= GIB // 10 else f"{n / (1 << 20):.2f} MiB"

        state_total = sum(self.state.values())
        out = [
            f"{self.config}: {self.parameters / 1e6:.1f}M parameters, global batch {self.batch_size}, "
            f"mesh {self.mesh} on {self.num_devices} {self.platform} device(s); compiled in {self.compile_seconds:.1f}s",
            f"  state per device   {gib(state_total)} (params {gib(self.state['params'])}, EMA {gib(self.state['ema'])}, "
            f"optimizer {gib(self.state['optimizer'])}, other {gib(self.state['other'])})",
            f"  XLA per device     arguments {gib(self.arguments)}, outputs {gib(self.outputs)}, "
            f"aliased {gib(self.aliased)}, temporaries {gib(self.temporaries)}, code {gib(self.generated_code)}"
            + (f"; host temporaries {gib(self.host_temporaries)}" if self.host_temporaries else ""),
            f"  peak per device    {gib(self.peak)} (the larger of arguments + outputs - aliased + temporaries and "
            f"XLA's peak figure {gib(self.xla_peak) if self.xla_peak else 'n/a'})",
        ]
        if self.device_memory is not None:
            verdict = "fits" if self.fits else "DOES NOT FIT"
            out.append(f"  device memory      {gib(self.device_memory)}: {verdict} "
                       f"({100 * self.peak / self.device_memory:.0f}% used)")
        out += [f"  note: {n}" for n in self.notes]
        return out


def sharded_bytes(tree) -> int:
    """Bytes one device holds of a tree of sharded ShapeDtypeStructs (the largest shard per leaf)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += math.prod(shape) * leaf.dtype.itemsize
    return total


def check_memory(cfg: Config, device_memory: int | None = None) -> MemoryReport:
    """Compile ``cfg``'s train step on the current devices with ``cfg.mesh`` and report its memory."""
    from jaxstage.train.trainer import restore_target
    from jaxstage.train.state import build_experiment
    from jaxstage.train.step import compile_train_step

    exp = build_experiment(cfg)
    target = restore_target(exp)  # sharded ShapeDtypeStructs: nothing is allocated
    start = time.perf_counter()
    compiled = compile_train_step(exp, target).compiled
    seconds = time.perf_counter() - start
    stats = compiled.memory_analysis()
    platform = jax.devices()[0].platform
    if stats is None:
        raise RuntimeError(f"the {platform} backend gives no memory analysis")
    state = {"params": sharded_bytes(target.params), "ema": sharded_bytes(target.ema_params),
             "optimizer": sharded_bytes(target.opt_state)}
    state["other"] = sharded_bytes(target) - sum(state.values())
    summed = (stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
              + stats.temp_size_in_bytes)
    xla_peak = int(getattr(stats, "peak_memory_in_bytes", 0) or 0)
    notes = []
    if platform == "cpu" and cfg.model.remat != "none" and CPU_KEEP_REMAT_FLAG not in os.environ.get("XLA_FLAGS", ""):
        notes.append(f"model.remat={cfg.model.remat} but XLA_FLAGS lacks {CPU_KEEP_REMAT_FLAG}: the CPU compiler drops the "
                     f"rematerialization, so temporaries are overstated (jaxstage aot-check --devices N sets it)")
    if platform == "cpu" and cfg.model.remat == "offload":
        notes.append("model.remat=offload on cpu: the CPU backend has one memory space, so the activations offloaded "
                     "to pinned host memory stay in temporaries (as if saved); an accelerator keeps them in host memory")
    if platform == "cpu":
        notes.append("compiled for CPU devices: state, arguments and outputs are exact; temporaries are the CPU "
                     "compiler's (an accelerator's fusion and scheduling differ); compile on the target for its figure")
    if exp.ssl_params is not None:
        notes.append("the frozen SSL encoder is a replicated argument of the step (counted in arguments)")
    if exp.codec_params is not None and "audio" in exp.example_spec:
        notes.append("the frozen autoencoder (codec.kind=oobleck) is a replicated argument of the step (counted in "
                     "arguments)")
    elif exp.codec_params is not None:
        notes.append("data.latents: the step reads the stored latents, never the frozen autoencoder, so jit drops "
                     "its weights from the step's arguments (not counted; sampling and evaluation still hold them)")
    return MemoryReport(
        config=cfg.name, platform=platform, num_devices=jax.device_count(), mesh=dict(exp.mesh.shape),
        batch_size=cfg.train.batch_size,
        parameters=sum(math.prod(x.shape) for x in jax.tree.leaves(exp.abstract_params)), state=state,
        arguments=stats.argument_size_in_bytes, outputs=stats.output_size_in_bytes,
        aliased=stats.alias_size_in_bytes, temporaries=stats.temp_size_in_bytes,
        generated_code=stats.generated_code_size_in_bytes,
        peak=max(xla_peak, summed), xla_peak=xla_peak,
        compile_seconds=seconds, device_memory=device_memory, notes=notes,
        host_temporaries=int(getattr(stats, "host_temp_size_in_bytes", 0) or 0),
    )
