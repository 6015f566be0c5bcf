"""Orbax checkpoints: state + data position round trip, restore onto a different mesh."""

import jax
import numpy as np

from jaxstage import parallel
from jaxstage.config import MeshConfig, load_config
from jaxstage.train.checkpoint import Checkpointer, abstract_target
from jaxstage.train.loop import _stats_audio
from jaxstage.train.state import abstract_state, build_experiment, fit_codec_stats, init_state, state_shardings


def make(mesh_cfg: MeshConfig):
    cfg = load_config("configs/tiny_t2a.py")
    cfg.mesh = mesh_cfg
    exp = build_experiment(cfg, parallel.make_mesh(mesh_cfg))
    return exp, fit_codec_stats(exp, _stats_audio(cfg))


def test_restore_onto_a_different_mesh(tmp_path):
    exp_a, stats = make(MeshConfig(data=8, fsdp=1, tensor=1))
    state = init_state(exp_a, stats)
    state = state.replace(regime=state.regime.replace(progress=state.regime.progress + 0.25))
    ckpt = Checkpointer(tmp_path, keep=2, async_save=True)
    ckpt.save(7, state, {"next_index": 7}, {"name": "tiny"})
    ckpt.wait()

    exp_b, _ = make(MeshConfig(data=2, fsdp=2, tensor=2))
    shardings = state_shardings(exp_b, stats)
    restored, position = Checkpointer(tmp_path, keep=2, async_save=False).restore(
        7, abstract_target(abstract_state(exp_b, stats), shardings))
    assert position == {"next_index": 7}
    assert float(restored.regime.progress) == 0.25
    for want, got, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(restored),
                                   jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        assert got.sharding.is_equivalent_to(sharding, got.ndim)
    assert any(not x.sharding.is_fully_replicated for x in jax.tree.leaves(restored.params))
