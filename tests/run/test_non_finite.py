"""Non-finite steps (``jaxstage.run.non_finite``), injected: a NaN batch, a learning rate raised until
the loss is not finite, an update that overflows the weights. The compiled step skips the update
(the state keeps its values, only the step advances), ``metrics.jsonl`` counts the skips, the run
stops after ``train.max_skipped_steps`` consecutive ones with one line naming the step, the metric and
the newest finished checkpoint, and no checkpoint is ever written with non-finite values."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstage import parallel
from jaxstage.config import load_config
from jaxstage.data.pipeline import BatchStream
from jaxstage.inference.load import load_run
from jaxstage.run import loop
from jaxstage.run.trainer import TrainingError
from jaxstage.train.state import build_experiment
from jaxstage.train.step import compile_train_step
from jaxstage.train.trainer import fresh_state, train

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny_t2a.py")
SETS = ["train.log_every=1", "train.ckpt_every=2", "train.ckpt_keep=10", "train.progress_bar=false",
        "codec.stats_examples=4"]


def _rows(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _nan_batches(monkeypatch, steps: set[int]) -> None:
    """The run's stream yields audio full of NaN for the batches of ``steps`` (1-based)."""

    class Poisoned(BatchStream):
        served = 0  # a fresh run: batch n feeds step n

        def __next__(self):
            batch = super().__next__()
            self.served += 1
            if self.served in steps:
                batch = {**batch, "audio": np.full_like(batch["audio"], np.nan)}
            return batch

    monkeypatch.setattr(loop, "BatchStream", Poisoned)


def _assert_finite_weights(workdir: Path, cfg) -> None:
    _, weights = load_run(cfg, workdir)
    for leaf in jax.tree.leaves((weights.params, weights.ema_params)):
        assert np.isfinite(np.asarray(leaf)).all()


def test_skipped_step_keeps_the_state(tmp_path):
    """A NaN batch: parameters, optimizer moments, EMA and regime keep their values; the step and
    the skip counters advance; the next finite batch updates again and resets the consecutive count."""
    cfg = load_config(TINY, SETS + ["regime.mode=adaptive", "regime.every=1", "regime.monitor_size=4",
                                 "guidance.lambda0=0.5", "guidance.hidden=16"])
    exp = build_experiment(cfg, parallel.make_mesh(cfg.mesh, jax.devices()[:1]))
    state = fresh_state(exp)
    step = compile_train_step(exp, state)
    stream = BatchStream(cfg, 0, 1)
    state, _ = step(state, parallel.global_batch(next(stream), exp.batch_sharding))
    before = jax.device_get(state)
    poisoned = {**next(stream), "audio": np.full((cfg.train.batch_size, cfg.num_samples), np.nan, np.float32)}
    state, metrics = step(state, parallel.global_batch(poisoned, exp.batch_sharding))
    after = jax.device_get(state)
    assert not np.isfinite(metrics["loss"]) and int(metrics["skipped_steps"]) == 1
    assert int(after.step) == int(before.step) + 1
    assert (int(after.skips.total), int(after.skips.consecutive), int(after.skips.stop_step)) == (1, 1, -1)
    for field in ("params", "opt_state", "ema_params", "regime", "codec_stats", "rng"):
        for x, y in zip(jax.tree.leaves(getattr(before, field)), jax.tree.leaves(getattr(after, field))):
            np.testing.assert_array_equal(x, y, err_msg=field)
    state, metrics = step(state, parallel.global_batch(next(stream), exp.batch_sharding))
    assert np.isfinite(metrics["loss"]) and int(metrics["skipped_steps"]) == 1
    assert int(state.skips.consecutive) == 0
    changed = jax.tree.leaves(jax.device_get(state.params))
    assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(after.params), changed))


def test_consecutive_nan_batches_stop_with_the_named_line(tmp_path, monkeypatch):
    """Three NaN batches in a row with max_skipped_steps=2: stopped at step 7 naming the loss and the
    newest finished checkpoint (step 6, saved while within the limit), whose weights are finite."""
    _nan_batches(monkeypatch, {5, 6, 7})
    cfg = load_config(TINY, SETS + ["train.steps=12", "train.max_skipped_steps=2"])
    workdir = tmp_path / "run"
    with pytest.raises(TrainingError) as info:
        train(cfg, workdir)
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith("loss is not finite at step 7: 3 consecutive steps skipped (train.max_skipped_steps=2)")
    assert line.endswith(f"newest finished checkpoint: {(workdir / 'checkpoints' / '6').resolve()}")
    rows = {r["step"]: r for r in _rows(workdir)}
    assert [rows[s]["skipped_steps"] for s in range(1, 8)] == [0, 0, 0, 0, 1, 2, 3]
    assert all(rows[s]["loss"] is None for s in (5, 6, 7)) and rows[4]["loss"] is not None
    assert max(rows) <= 8  # stopped at the first metrics fetch after step 7
    _assert_finite_weights(workdir, cfg)


def test_one_nan_batch_within_the_limit_finishes(tmp_path, monkeypatch):
    _nan_batches(monkeypatch, {3})
    cfg = load_config(TINY, SETS + ["train.steps=8", "train.max_skipped_steps=3"])
    result = train(cfg, tmp_path / "run")
    assert result.final_step == 8
    rows = _rows(tmp_path / "run")
    assert [r["skipped_steps"] for r in rows] == [0, 0, 1, 1, 1, 1, 1, 1]
    for row in rows[3:]:
        assert all(row[k] is not None for k in ("loss", "grad_norm", "loss_diff"))


def test_raised_learning_rate_stops_and_keeps_a_finite_checkpoint(tmp_path):
    """optim.lr=1e30: the first update is finite but huge, every later loss is NaN; the run stops after
    max_skipped_steps+1 skips and the newest checkpoint restores with finite weights."""
    cfg = load_config(TINY, SETS + ["train.steps=20", "train.ckpt_every=1", "optim.lr=1e30", "optim.warmup_steps=0",
                                    "train.max_skipped_steps=2"])
    with pytest.raises(TrainingError, match=r"^loss is not finite at step 4: 3 consecutive steps skipped .*"
                                            r"newest finished checkpoint: .*checkpoints/3$"):
        train(cfg, tmp_path / "run")
    _assert_finite_weights(tmp_path / "run", cfg)


def test_save_of_non_finite_weights_is_refused(tmp_path):
    """optim.lr=1e39 overflows the weights to inf while the loss and gradient are still finite: the
    save is refused with one line; nothing is written."""
    cfg = load_config(TINY, SETS + ["train.steps=5", "train.ckpt_every=1", "optim.lr=1e39", "optim.warmup_steps=0"])
    with pytest.raises(TrainingError, match=r"^refusing to save step 1: state\.params\[.*\] is not finite; "
                                            r"newest finished checkpoint: none$"):
        train(cfg, tmp_path / "run")
    assert not list((tmp_path / "run" / "checkpoints").glob("[0-9]*"))


def test_guard_counts_and_names_the_metric():
    """The guard on a toy step: the first non-finite watched metric is the one named."""
    from flax import struct

    from jaxstage.run.non_finite import NonFiniteGuard, init_skips

    @struct.dataclass
    class Toy:
        step: jax.Array
        w: jax.Array
        skips: object

    def toy_step(state, batch):
        w = state.w + batch
        return state.replace(step=state.step + 1, w=w), {"loss": jnp.sum(w), "grad_norm": jnp.sum(batch) * 0}

    guard = NonFiniteGuard(("loss", "grad_norm"), max_skipped=0)
    step = jax.jit(guard.wrap(toy_step))
    state = Toy(step=jnp.zeros((), jnp.int32), w=jnp.ones(2), skips=init_skips())
    state, _ = step(state, jnp.ones(2))
    assert guard.stop_line(state.skips) is None
    state, metrics = step(state, jnp.array([jnp.inf, 0.0]))  # loss inf, grad_norm NaN (inf * 0)
    np.testing.assert_array_equal(state.w, [2.0, 2.0])
    assert guard.stop_line(metrics["_skips"]) == ("loss is not finite at step 2: 1 consecutive steps skipped "
                                                  "(train.max_skipped_steps=0)")


def test_progress_bar_shows_a_skipped_step(tmp_path):
    """A skipped step logs its loss as null; the progress bar shows it as nan instead of failing."""
    from jaxstage.run.logging import RunLogger

    logger = RunLogger(tmp_path, progress_bar=True)
    logger.start_progress(0, 10)
    logger.metrics(1, {"loss": None, "progress": 0.0, "steps_per_s": 1.0, "skipped_steps": 1})
    assert "loss=nan" in str(logger._bar)
    logger.close()
