"""Orbax checkpoints: state + data position round trip, restore onto a different mesh."""

import jax
import numpy as np

from jaxstage import parallel
from jaxstage.config import MeshConfig, load_config
from jaxstage.run.checkpoint import Checkpointer
from jaxstage.train.trainer import fresh_state, restore_target
from jaxstage.train.state import build_experiment


def make(mesh_cfg: MeshConfig):
    cfg = load_config("configs/tiny_t2a.py")
    cfg.mesh = mesh_cfg
    return build_experiment(cfg, parallel.make_mesh(mesh_cfg))


def test_restore_onto_a_different_mesh(tmp_path):
    exp_a = make(MeshConfig(data=8, fsdp=1, tensor=1))
    state = fresh_state(exp_a)
    progress = state.regime.progress
    state = state.replace(regime=state.regime.replace(progress=progress.replace(progress=progress.progress + 0.25)))
    ckpt = Checkpointer(tmp_path, keep=2, async_save=True)
    ckpt.save(7, state, {"next_index": 7}, {"name": "tiny"})
    ckpt.wait()

    exp_b = make(MeshConfig(data=2, fsdp=2, tensor=2))
    target = restore_target(exp_b)
    shardings = jax.tree.map(lambda t: t.sharding, target)
    restored, position = Checkpointer(tmp_path, keep=2, async_save=False).restore(7, target)
    assert position == {"next_index": 7}
    assert float(restored.regime.progress.progress) == 0.25
    for want, got, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(restored),
                                   jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        assert got.sharding.is_equivalent_to(sharding, got.ndim)
    assert any(not x.sharding.is_fully_replicated for x in jax.tree.leaves(restored.params))


def test_checkpoint_from_before_a_state_field_existed_resumes(tmp_path):
    """A checkpoint written before ``skips`` was part of the state (issue 17) restores with the
    field's initial value, sharded like the target, and can be saved again by the same manager."""
    from jaxstage.run.non_finite import init_skips

    exp = make(MeshConfig(data=8, fsdp=1, tensor=1))
    state = fresh_state(exp)
    old = {f: getattr(state, f) for f in ("step", "params", "opt_state", "ema_params", "rng", "regime",
                                          "codec_stats", "monitor")}  # the state's fields before issue 17
    ckpt = Checkpointer(tmp_path, keep=3, async_save=False)
    ckpt.save(5, old, {"next_index": 5}, {})
    ckpt.wait()
    resumed = Checkpointer(tmp_path, keep=3, async_save=False)
    restored, position = resumed.restore(5, restore_target(exp), added_fields={"skips": init_skips()})
    assert position == {"next_index": 5}
    np.testing.assert_array_equal(restored.params["dit"]["postprocess_conv"]["kernel"],
                                  state.params["dit"]["postprocess_conv"]["kernel"])
    assert (int(restored.skips.total), int(restored.skips.stop_step)) == (0, -1)
    assert restored.skips.total.sharding.is_fully_replicated and len(restored.skips.total.sharding.device_set) == 8
    resumed.save(6, restored.replace(step=restored.step + 1), {"next_index": 6}, {})
    resumed.wait()
    assert resumed.all_steps() == [5, 6]
