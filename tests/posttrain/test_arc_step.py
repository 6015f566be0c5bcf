"""The ARC experiment and step: discriminator = the pretrained DiT's first blocks + a new head; one
compiled step updates both players and the generator EMA; sharded like the main step (an
8-device data x fsdp mesh gives the single-device metrics)."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstage import parallel
from jaxstage.config import ConfigError, load_config
from jaxstage.data.pipeline import BatchStream
from jaxstage.tools.export.key_map import flatten
from jaxstage.posttrain.state import build_arc_experiment, init_arc_state
from jaxstage.posttrain.step import compile_arc_step
from jaxstage.train.trainer import fresh_state

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny_t2a.py")
SETTINGS = ["arc.disc_depth=1", "codec.stats_examples=4", "arc.gen_lr=1e-3", "arc.disc_lr=1e-3",
            "arc.warmup_steps=1", "arc.ema_decay=0.9", "arc.r1_weight=0.1"]


def _trained_like(params):
    """Fresh weights plus small noise: no zero-initialized layer left to block the gradients (as in a
    trained model)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(5), len(leaves))
    return jax.tree.unflatten(treedef, [x + 0.02 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])


def run_steps(mesh_settings: list[str], n: int = 2, devices: int = 8):
    cfg = load_config(TINY, SETTINGS + mesh_settings)
    ax = build_arc_experiment(cfg, parallel.make_mesh(cfg.mesh, jax.devices()[:devices]))
    pretrained = fresh_state(ax.gen)
    weights = _trained_like(pretrained.ema_params)
    start = init_arc_state(ax, weights, pretrained.codec_stats)
    host_start = jax.device_get(start)
    step = compile_arc_step(ax, start)
    stream = BatchStream(cfg, 0, 1)
    state, history = start, []
    for _ in range(n):
        state, metrics = step(state, parallel.global_batch(next(stream), ax.gen.batch_sharding))
        history.append(jax.device_get(metrics))
    return ax, jax.device_get(weights), host_start, state, history, step


@pytest.fixture(scope="module")
def single():
    return run_steps(["mesh.data=1"], n=2, devices=1)


def test_discriminator_starts_as_the_pretrained_first_blocks(single):
    ax, pretrained, start, _, _, _ = single
    disc, gen = flatten(start.disc_params), flatten(pretrained)
    backbone = {path[1:]: v for path, v in disc.items() if path[0] == "backbone"}
    assert {p[3] for p in backbone if p[:3] == ("dit", "transformer", "layers")} == {"0"}  # disc_depth=1
    for path, value in backbone.items():
        np.testing.assert_array_equal(value, gen[path], err_msg=".".join(path))
    assert {p[1] for p in disc if p[0] == "head"} == {"conv_in", "conv_out"}
    for path, value in flatten(start.params).items():  # the generator is the pretrained EMA model
        np.testing.assert_array_equal(value, gen[path])


def test_one_step_updates_both_players_and_the_ema(single):
    ax, _, start, state, history, step = single
    assert step.trace_count == 1
    assert int(state.step) == 2
    end = jax.device_get(state)
    for name in ("params", "disc_params"):
        moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(getattr(start, name)),
                                                          jax.tree.leaves(getattr(end, name)))]
        assert sum(moved) > len(moved) // 2, name
    # EMA: between the start and the raw generator, closer to the start (decay 0.9)
    for e0, e, p in zip(jax.tree.leaves(start.ema_params), jax.tree.leaves(end.ema_params),
                        jax.tree.leaves(end.params)):
        assert np.all(np.abs(e - e0) <= np.abs(p - e0) + 1e-7)
    for metrics in history:
        for key in ("loss_g", "loss_d", "loss_c", "loss_r1", "grad_norm_g", "grad_norm_d"):
            assert np.isfinite(metrics[key]), key
        assert metrics["grad_norm_g"] > 0 and metrics["grad_norm_d"] > 0
        assert 0.0 <= metrics["d_accuracy"] <= 1.0


def test_sharded_step_matches_single_device(single):
    _, _, _, _, expected, _ = single
    ax, _, _, state, got, _ = run_steps(["mesh.data=4", "mesh.fsdp=2"], n=2)
    assert dict(ax.mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
    sharded = [x for x in jax.tree.leaves(state.disc_params) if len(x.sharding.device_set) == 8
               and not x.sharding.is_fully_replicated]
    assert sharded, "no discriminator parameter is sharded over the fsdp axis"
    for g, e in zip(got, expected):
        for key in e.keys() - {"_skips"}:  # the skip counters (zero here) are compared in the next test
            np.testing.assert_allclose(g[key], e[key], rtol=2e-4, atol=1e-6, err_msg=key)


def test_non_finite_step_is_skipped(single):
    """ARC gets the shared loop's non-finite guard: a NaN batch leaves both players, both optimizers
    and the EMA as they were; the step and ``skipped_steps`` advance."""
    ax, _, _, state, history, step = single
    assert [int(m["skipped_steps"]) for m in history] == [0, 0]
    before = jax.device_get(state)
    batch = next(BatchStream(ax.cfg, 0, 1))
    batch["audio"] = np.full_like(batch["audio"], np.nan)
    after, metrics = step(jax.tree.map(jnp.copy, state), parallel.global_batch(batch, ax.gen.batch_sharding))
    after = jax.device_get(after)
    assert int(metrics["skipped_steps"]) == 1 and int(after.step) == int(before.step) + 1
    for name in ("params", "opt_state", "ema_params", "disc_params", "disc_opt_state"):
        for x, y in zip(jax.tree.leaves(getattr(before, name)), jax.tree.leaves(getattr(after, name))):
            np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.parametrize("override, message", [
    (["arc.disc_depth=3"], "arc.disc_depth=3 must be in [1, model.depth=2]"),
    (["diffusion.objective=v"], "diffusion.objective=v: ARC post-trains a rectified-flow model"),
    (["train.batch_size=1", "mesh.data=1"], "train.batch_size=1"),
])
def test_bad_arc_configs_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_arc_experiment(load_config(TINY, override))
