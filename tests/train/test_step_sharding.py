"""The sharded train step on a fake 8-device mesh matches the single-device step."""

import jax
import numpy as np
import pytest

from jaxstage import parallel
from jaxstage.config import MeshConfig, load_config
from jaxstage.data.pipeline import BatchStream
from jaxstage.train.trainer import fresh_state
from jaxstage.train.state import build_experiment
from jaxstage.train.step import compile_train_step

STEPS = 4


def run_steps(mesh_cfg: MeshConfig, devices):
    cfg = load_config("configs/tiny_t2a.py")
    cfg.mesh = mesh_cfg
    mesh = parallel.make_mesh(cfg.mesh, devices)
    exp = build_experiment(cfg, mesh)
    state = fresh_state(exp)
    step = compile_train_step(exp, state)
    stream = BatchStream(cfg, 0, 1)
    losses = []
    for _ in range(STEPS):
        state, metrics = step(state, parallel.global_batch(next(stream), exp.batch_sharding))
        losses.append(float(metrics["loss"]))
    return np.array(losses), jax.device_get(state.params), state


@pytest.fixture(scope="module")
def single_device():
    return run_steps(MeshConfig(data=1, fsdp=1, tensor=1), jax.devices()[:1])


@pytest.mark.parametrize("shape", [(4, 2, 1), (4, 1, 2), (1, 8, 1)], ids=["data_x_fsdp", "data_x_tensor", "fsdp8"])
def test_sharded_matches_single_device(single_device, shape):
    assert len(jax.devices()) == 8, "tests/conftest.py must provide 8 fake CPU devices"
    ref_losses, ref_params, _ = single_device
    losses, params, state = run_steps(MeshConfig(*shape), jax.devices())
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    ref_flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(ref_params)])
    flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(params)])
    rel = np.linalg.norm(flat - ref_flat) / np.linalg.norm(ref_flat)
    assert rel <= 1e-5, f"relative parameter error {rel:.2e} after {STEPS} steps on mesh {shape}"
    # The mesh is really used: some parameter is split across devices.
    sharded = [x for x in jax.tree.leaves(state.params) if not x.sharding.is_fully_replicated]
    assert sharded, f"no parameter is sharded on mesh {shape}"
