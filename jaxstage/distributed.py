"""Multi-controller JAX start-up: which `jax.distributed.initialize` call this process needs.

`detect(env, ...)` is a pure function of the environment and the command-line flags; the order:

1. explicit flags (`jaxstage train --coordinator HOST:PORT --num-processes N --process-id I`);
2. the same as environment variables `JAXSTAGE_COORDINATOR`, `JAXSTAGE_NUM_PROCESSES`,
   `JAXSTAGE_PROCESS_ID` (what `launch/` scripts export);
3. SLURM (`SLURM_JOB_ID` with more than one task): JAX reads the coordinator, process count and id
   from SLURM itself; jaxstage sets `local_device_ids` so that one task per node sees every GPU of
   its node (JAX's SLURM detection would give it only GPU `SLURM_LOCALID`, i.e. one GPU per node);
   with several tasks per node each drives one GPU: `SLURM_LOCALID` among the node's GPUs, or the one
   GPU SLURM bound it to (`--gpus-per-task=1`: it sees a single GPU, numbered 0);
4. a multi-host TPU VM slice (`TPU_WORKER_HOSTNAMES` with several hosts): JAX detects everything;
5. otherwise None: a single process, nothing to initialize.

When one process dies, the others learn it from a failed collective (CPU/Gloo: at once) or from
its missing heartbeats (``heartbeat_timeout_seconds``); ``failure_message`` is the one line they
print before exiting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

ENV_PREFIX = "JAXSTAGE_"


@dataclass(frozen=True)
class DistributedSpec:
    """Arguments for `jax.distributed.initialize` (None: let JAX detect it) and where they came from."""

    source: str  # flags | env | slurm | tpu
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None

    def kwargs(self) -> dict[str, Any]:
        """The fields that are set (``local_device_ids`` as a list)."""
        out = {k: v for k, v in vars(self).items() if k != "source" and v is not None}
        if self.local_device_ids is not None:
            out["local_device_ids"] = list(self.local_device_ids)
        return out


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    """The integer environment variable ``name``; None when it is unset or empty."""
    value = env.get(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None


def _explicit(coordinator: str | None, num_processes: int | None, process_id: int | None,
              source: str, names: tuple[str, str, str]) -> DistributedSpec | None:
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if not any(given):
        return None
    if not all(given):
        missing = [n for n, g in zip(names, given) if not g]
        raise ValueError(f"multi-process start needs {', '.join(names)} together; missing {', '.join(missing)}")
    if ":" not in coordinator:
        raise ValueError(f"{names[0]}={coordinator!r} must be HOST:PORT")
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(f"{names[2]}={process_id} must be in [0, {names[1]}={num_processes})")
    return DistributedSpec(source, coordinator, num_processes, process_id)


def _slurm_tasks_on_node(env: Mapping[str, str]) -> int | None:
    """Tasks on this node from SLURM_NTASKS_PER_NODE or the first entry of SLURM_TASKS_PER_NODE ('2(x3),1')."""
    direct = _env_int(env, "SLURM_NTASKS_PER_NODE")
    if direct is not None:
        return direct
    match = re.match(r"\s*(\d+)", env.get("SLURM_TASKS_PER_NODE", ""))
    return int(match.group(1)) if match else None


def _visible_gpus(env: Mapping[str, str]) -> int | None:
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return len([d for d in visible.split(",") if d.strip()])
    return _env_int(env, "SLURM_GPUS_ON_NODE")


def _one_gpu_per_task(local_id: int, gpus: int | None, env: Mapping[str, str]) -> tuple[int, ...]:
    """The device id of task ``local_id``'s GPU among the GPUs visible to it: its local id when it
    sees the whole node, 0 when SLURM bound it to one GPU (``--gpus-per-task=1``, ``--gpu-bind``)."""
    if gpus is None or gpus > local_id:
        return (local_id,)
    if gpus == 1:
        return (0,)
    raise ValueError(f"SLURM_LOCALID={local_id} but this task sees {gpus} GPUs (CUDA_VISIBLE_DEVICES="
                     f"{env.get('CUDA_VISIBLE_DEVICES', '')!r}): give each task one GPU or the whole node")


def detect(env: Mapping[str, str], *, coordinator: str | None = None, num_processes: int | None = None,
           process_id: int | None = None) -> DistributedSpec | None:
    """The distributed start-up this process needs (see the module docstring), or None."""
    flags = ("--coordinator", "--num-processes", "--process-id")
    names = tuple(ENV_PREFIX + n for n in ("COORDINATOR", "NUM_PROCESSES", "PROCESS_ID"))
    spec = _explicit(coordinator, num_processes, process_id, "flags", flags) or _explicit(
        env.get(names[0]) or None, _env_int(env, names[1]), _env_int(env, names[2]), "env", names)
    if spec is not None:
        return spec
    ntasks = _env_int(env, "SLURM_NTASKS")
    if env.get("SLURM_JOB_ID") and ntasks is not None and ntasks > 1:
        per_node = _slurm_tasks_on_node(env)
        gpus = _visible_gpus(env)
        local_ids = None
        if per_node == 1 and gpus:
            local_ids = tuple(range(gpus))  # one task drives every GPU of its node
        elif per_node is not None and per_node > 1 and env.get("SLURM_LOCALID") is not None:
            local_ids = _one_gpu_per_task(_env_int(env, "SLURM_LOCALID"), gpus, env)
        return DistributedSpec("slurm", local_device_ids=local_ids)
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if len(hosts) > 1:
        return DistributedSpec("tpu")
    return None


def initialize(spec: DistributedSpec | None, *, heartbeat_timeout_seconds: int = 100,
               initialization_timeout: int = 300) -> None:
    """Call `jax.distributed.initialize` for ``spec`` (no-op for None). Must run before any JAX
    computation or device query in the process."""
    if spec is None:
        return
    import jax

    jax.distributed.initialize(**spec.kwargs(), heartbeat_timeout_seconds=heartbeat_timeout_seconds,
                               initialization_timeout=initialization_timeout)


def complete_checkpoints(directory: Path) -> list[int]:
    """Steps of the finished checkpoints in an Orbax checkpoint folder (an interrupted save stays
    a ``<step>.orbax-checkpoint-tmp*`` folder, which is never restored)."""
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def failure_message(err: BaseException, checkpoint_dir: Path) -> str:
    """One line for a multi-process run that failed in this process: which process, the error's first
    line, the likely cause, and the newest finished checkpoint to resume from."""
    import jax

    first_line = (str(err).strip().splitlines() or [""])[0]
    if len(first_line) > 300:
        first_line = first_line[:297] + "..."
    steps = complete_checkpoints(checkpoint_dir)
    resume = (f"newest finished checkpoint: step {steps[-1]} in {checkpoint_dir}; rerun the same command "
              f"(with any process count) to resume from it" if steps else f"no finished checkpoint in {checkpoint_dir}")
    return (f"process {jax.process_index()} of {jax.process_count()} stopped: {type(err).__name__}: {first_line} "
            f"(in a multi-process run this usually means another process died: see its log); {resume}")


def barrier(name: str, timeout_seconds: int = 600) -> None:
    """Wait until every process reaches ``name`` (no-op in a single process).

    Uses the coordination service's barrier, not a device collective: processes that reach their
    first collective far apart (one compiled slower) would otherwise exceed Gloo's fixed 30 s
    context-initialization timeout on CPU.
    """
    import jax
    from jax._src import distributed as jax_distributed  # the client is not public API

    client = jax_distributed.global_state.client
    if client is None or jax.process_count() == 1:
        return
    client.wait_at_barrier(f"jaxstage_{name}", timeout_in_ms=timeout_seconds * 1000)
