"""Device mesh, logical-axis rules and shardings.

Parameters are annotated with logical axis names (``embed``, ``mlp``, ``heads``, ``vocab``) by the
models; ``MeshConfig.rules`` maps each logical name to zero or more mesh axes (``data``, ``fsdp``,
``tensor``). A dimension whose size does not divide by its mesh axes is replicated instead, so tiny
models still run on big meshes.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from jaxstage.config import MeshConfig

MESH_AXES = ("data", "fsdp", "tensor")


def mesh_shape(cfg: MeshConfig, num_devices: int) -> tuple[int, int, int]:
    """Resolve -1 in the mesh config against the device count; error if it does not fit."""
    sizes = [cfg.data, cfg.fsdp, cfg.tensor]
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"mesh: {num_devices} devices are not divisible by the fixed axes {sizes}")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(f"mesh: data×fsdp×tensor = {sizes} does not use all {num_devices} devices")
    return tuple(sizes)


def make_mesh(cfg: MeshConfig, devices: list | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh with Auto axis types (Explicit breaks Flax layers under FSDP/TP)."""
    devices = list(jax.devices()) if devices is None else list(devices)
    shape = mesh_shape(cfg, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def rules_dict(rules: tuple[tuple[str, str], ...]) -> dict[str, tuple[str, ...]]:
    """Config rules ``(("embed", "fsdp"), ("batch", "data,fsdp"))`` -> name -> mesh axes."""
    return {name: tuple(a for a in axes.split(",") if a) for name, axes in rules}


def logical_to_mesh_spec(logical: P, shape: tuple[int, ...], mesh: Mesh, rules: dict[str, tuple[str, ...]]) -> P:
    """Translate one logical PartitionSpec to mesh axes, replicating non-divisible dimensions."""
    used: set[str] = set()
    out = []
    for dim, name in zip(shape, tuple(logical) + (None,) * (len(shape) - len(logical))):
        axes = tuple(a for a in rules.get(name, ()) if a not in used) if name is not None else ()
        size = math.prod(mesh.shape[a] for a in axes)
        if not axes or size == 1 or dim % size:
            out.append(None)
            continue
        used.update(axes)
        out.append(axes[0] if len(axes) == 1 else axes)
    return P(*out)


def state_shardings(mesh: Mesh, abstract_state: nnx.State, rules: dict[str, tuple[str, ...]]) -> Any:
    """NamedShardings for an nnx.State of parameters, as a pure dict tree matching ``to_pure_dict``."""
    specs = nnx.to_pure_dict(nnx.get_partition_spec(abstract_state))
    shapes = nnx.to_pure_dict(abstract_state)
    return jax.tree.map(
        lambda spec, leaf: NamedSharding(mesh, logical_to_mesh_spec(spec, leaf.shape, mesh, rules)),
        specs, shapes, is_leaf=lambda x: isinstance(x, P),
    )


def batch_sharding(mesh: Mesh, rules: dict[str, tuple[str, ...]]) -> NamedSharding:
    """Leading (batch) dimension split over the ``batch`` rule's mesh axes."""
    axes = rules.get("batch", ("data", "fsdp"))
    return NamedSharding(mesh, P(axes if len(axes) > 1 else (axes[0] if axes else None)))


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated sharding."""
    return NamedSharding(mesh, P())


def batch_divisor(mesh: Mesh, rules: dict[str, tuple[str, ...]]) -> int:
    """How many ways the global batch is split."""
    return math.prod(mesh.shape[a] for a in rules.get("batch", ("data", "fsdp")))


def global_batch(local: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assemble global arrays from this process's slice of the batch (explicit transfer)."""
    count = jax.process_count()
    # The one intended host-to-device transfer of a step: allowed even inside the training loop's
    # transfer_guard("disallow") (multi-process, make_array_from_process_local_data counts as implicit).
    with jax.transfer_guard_host_to_device("allow"):
        return {
            k: jax.make_array_from_process_local_data(sharding, v, (v.shape[0] * count,) + v.shape[1:])
            for k, v in local.items()
        }
