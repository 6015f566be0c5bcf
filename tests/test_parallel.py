"""Mesh construction and logical-to-mesh axis rules."""

import jax
import pytest
from jax.sharding import PartitionSpec as P

from jaxstage import parallel
from jaxstage.config import MeshConfig

RULES = parallel.rules_dict(MeshConfig().rules)


def test_mesh_shape_fills_minus_one():
    assert parallel.mesh_shape(MeshConfig(data=-1, fsdp=2, tensor=1), 8) == (4, 2, 1)
    with pytest.raises(ValueError, match="does not use all 8 devices"):
        parallel.mesh_shape(MeshConfig(data=2, fsdp=2, tensor=1), 8)
    with pytest.raises(ValueError, match="not divisible"):
        parallel.mesh_shape(MeshConfig(data=-1, fsdp=3, tensor=1), 8)


def test_mesh_has_auto_axes():
    mesh = parallel.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_logical_rules_and_divisibility_fallback():
    mesh = parallel.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    assert parallel.logical_to_mesh_spec(P("embed", "mlp"), (64, 256), mesh, RULES) == P("fsdp", "tensor")
    # 3 is not divisible by fsdp=2: that dimension is replicated
    assert parallel.logical_to_mesh_spec(P("embed", "mlp"), (3, 256), mesh, RULES) == P(None, "tensor")
    # a mesh axis is used at most once per array
    assert parallel.logical_to_mesh_spec(P("mlp", "heads"), (8, 8), mesh, RULES) == P("tensor", None)
    assert parallel.batch_divisor(mesh, RULES) == 4
