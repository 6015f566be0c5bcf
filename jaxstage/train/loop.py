"""The host training loop: it feeds batches, fetches metrics one log step late, saves checkpoints,
writes samples and logs. It never computes training math (that is all in the compiled step).

Sections: run directory → mesh and experiment → input → state (restore or init) → compile →
loop → final checkpoint, samples and attribute check.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage import config as config_lib
from jaxstage import distributed, parallel
from jaxstage.config import Config, ConfigError
from jaxstage.data.pipeline import BatchStream, held_out_batch, make_source, num_training, sr_held_out_batch
from jaxstage.run import checkpoint as ckpt_lib
from jaxstage.run.logging import RunLogger
from jaxstage.train.recipe import MonitorBatch, build_monitor
from jaxstage.eval.periodic import PeriodicEval
from jaxstage.inference.sampling import Generator
from jaxstage.eval.sr_report import sr_final_eval, write_sr_samples
from jaxstage.inference.sr_sampling import SRGenerator
from jaxstage.train.state import (
    Experiment, TrainState, abstract_state, build_experiment, fit_codec_stats, init_state, state_shardings,
)
from jaxstage.train.step import CompiledStep, compile_train_step
from jaxstage.eval.run_outputs import attribute_check, write_samples

# Keys that may differ when an existing run directory is resumed: cadence, length, sampling, and
# the mesh (checkpoints restore onto any mesh).
RESUMABLE_CHANGES = {
    "mesh.data", "mesh.fsdp", "mesh.tensor", "mesh.rules", "model.remat",
    "train.steps", "train.log_every", "train.ckpt_every", "train.progress_bar", "train.async_checkpoint",
    "train.compilation_cache", "train.init_from", "arc.init_from", "sample.every", "sample.num", "sample.final_eval_prompts", "sample.sampler",
    "sample.steps", "sample.cfg_scale", "sample.cfg_interval", "sample.seed", "eval.every", "eval.num",
}


class TrainingError(RuntimeError):
    """The run cannot continue (non-finite loss, inconsistent resume, ...)."""


def enable_compilation_cache(path: str) -> None:
    """Persistent XLA compilation cache (a repeat compile is ~5× faster)."""
    if path:
        jax.config.update("jax_compilation_cache_dir", str(Path(path).expanduser()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def prepare_workdir(cfg: Config, workdir: Path) -> None:
    """Create the run directory; on resume, refuse a config that changes more than cadence/length."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "samples").mkdir(exist_ok=True)
    saved = workdir / "config.json"
    if saved.exists():
        old = _flatten(config_lib.to_dict(config_lib.load_json(saved)))
        new = _flatten(config_lib.to_dict(cfg))
        changed = sorted(k for k in new if old.get(k) != new[k] and k not in RESUMABLE_CHANGES)
        if changed:
            key = changed[0]
            raise ConfigError(f"{saved}: run directory was made with {key}={old.get(key)!r}, now {new[key]!r} "
                              f"({len(changed)} key(s) differ); use a new --workdir")
    if jax.process_index() == 0:
        config_lib.save_json(cfg, saved)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = json.dumps(v)
    return out


class StopFlag:
    """Turns SIGTERM/SIGINT into a request to checkpoint and exit at a step boundary.

    Single process: the next step boundary. Multi-process: every process must stop at the same step
    (the checkpoint save is collective), so the signal goes through JAX's preemption service, which
    tells every process of a SIGTERM received by any one and agrees on the step
    (``multihost_utils.reached_preemption_sync_point``). Its handler owns SIGTERM; a SIGINT is
    re-raised as SIGTERM to reach it.
    """

    def __init__(self, multi_process: bool = False):
        self.multi_process = multi_process
        self.signal_name: str | None = None
        self._previous = {}

    def __enter__(self) -> "StopFlag":
        signals = (signal.SIGINT,) if self.multi_process else (signal.SIGTERM, signal.SIGINT)
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C aborts immediately
        self.signal_name = signal.Signals(signum).name
        if self.multi_process:
            os.kill(os.getpid(), signal.SIGTERM)  # to the preemption service, which tells the others

    def stop_at(self, step: int) -> bool:
        """Whether to checkpoint and stop after ``step`` (called by every process at every step)."""
        if not self.multi_process:
            return self.signal_name is not None
        from jax.experimental import multihost_utils

        if multihost_utils.reached_preemption_sync_point(step):
            self.signal_name = self.signal_name or "SIGTERM"
            return True
        return False

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class RunResult:
    """What a finished (or stopped) run reports back."""

    workdir: Path
    final_step: int
    stopped_by: str | None
    compile_count: int
    attribute_accuracy: dict[str, float] | None = None
    sr_eval: dict | None = None  # task=sr: the held-out LSD report (sr_eval.json)


def restore_or_init(exp: Experiment, ckpt: ckpt_lib.Checkpointer, stream: BatchStream,
                    logger: RunLogger | None = None) -> tuple[TrainState, int]:
    """Restore the newest checkpoint (state + data position), or initialize a fresh state
    (from ``train.init_from``'s weights when set)."""
    step = ckpt.latest_step()
    if step is None:
        if exp.cfg.train.init_from:
            state, note = state_from_run(exp, exp.cfg.train.init_from)
            if logger is not None:
                logger.info(note)
            return state, 0
        return fresh_state(exp), 0
    if exp.cfg.train.init_from and logger is not None:
        logger.info(f"resuming {ckpt.directory} at step {step}: train.init_from is read only by a fresh run")
    state, data_position = ckpt.restore(step, restore_target(exp))
    stream.set_state(data_position)
    if int(state.step) != step:
        raise TrainingError(f"checkpoint {ckpt.directory / str(step)} holds step {int(state.step)}, expected {step}")
    return state, step


def fresh_state(exp: Experiment) -> TrainState:
    """A newly initialized train state: codec normalization fitted, monitor batch built."""
    stats = fit_codec_stats(exp, _stats_audio(exp.cfg))
    return init_state(exp, stats, make_monitor(exp, stats))


def state_from_run(exp: Experiment, init_from: str) -> tuple[TrainState, str]:
    """A fresh state whose weights (and codec statistics, same codec only) come from another run's
    newest checkpoint; returns it with a log line saying what was copied."""
    from jaxstage.train.init_from import merge_params, same_codec, source_run
    from jaxstage.inference.load import load_run

    path, source_cfg = source_run(init_from)
    _, source = load_run(source_cfg, path, mesh=exp.mesh)
    reuse_stats = same_codec(exp.cfg, source_cfg)
    stats = source.codec_stats if reuse_stats else fit_codec_stats(exp, _stats_audio(exp.cfg))
    state = init_state(exp, stats, make_monitor(exp, stats))
    params, copied, kept = merge_params(state.params, source.params, source_name=init_from)
    ema, _, _ = merge_params(state.ema_params, source.ema_params, source_name=init_from)
    # jit boundary of the next step: the copied weights must sit on this run's parameter shardings
    state = state.replace(params=jax.device_put(params, exp.param_shardings),
                          ema_params=jax.device_put(ema, exp.param_shardings))
    note = (f"initialized from {path} (step {int(source.step)}): weights of {', '.join(copied)}"
            f"{'; fresh: ' + ', '.join(kept) if kept else ''}; codec statistics "
            f"{'copied' if reuse_stats else 'refitted (codec differs)'}")
    return state, note


def restore_target(exp: Experiment):
    """Sharded abstract train state for restoring onto ``exp``'s mesh (no data rendered)."""
    stats, monitor = jax.eval_shape(lambda: _abstract_stats_and_monitor(exp))
    return ckpt_lib.abstract_target(abstract_state(exp, stats, monitor), state_shardings(exp, stats, monitor))


def _abstract_stats_and_monitor(exp: Experiment):
    cfg = exp.cfg
    m = cfg.regime.monitor_size
    batch = {k: jnp.zeros((m, *shape), dtype) for k, (shape, dtype) in exp.example_spec.items()}
    stats = fit_codec_stats(exp, batch["audio"][:1])
    return stats, build_monitor(cfg, exp.recipe, exp.codec, exp.objective, stats, batch["audio"],
                                batch[exp.text_key], batch["text_mask"], batch.get("ssl_targets"),
                                ssl_params=exp.ssl_params, low_audio=batch.get("low"), cutoff=batch.get("cutoff"))


def make_monitor(exp: Experiment, stats) -> MonitorBatch | None:
    """The fixed monitor batch from held-out clips.

    Synthetic data: clips rendered from ``regime.monitor_seed`` (disjoint from training's seeds).
    Prepared data: the last ``regime.monitor_size`` records of the directory, which training never
    reads (see ``jaxstage.data.pipeline``), with their precomputed text and SSL targets when used.
    SR (task=sr): the speech-like clips at the indices just past ``data.num_examples`` (never read
    by training), with their low bands and cutoffs.
    """
    cfg = exp.cfg
    if not exp.recipe.monitor_enabled:
        return None
    if cfg.task == "sr":
        batch = sr_held_out_batch(cfg, cfg.regime.monitor_size)
        return build_monitor(cfg, exp.recipe, exp.codec, exp.objective, stats, batch["audio"],
                             batch[exp.text_key], batch["text_mask"], ssl_params=exp.ssl_params,
                             low_audio=batch["low"], cutoff=batch["cutoff"])
    if cfg.data.source == "prepared":
        batch, _ = held_out_batch(cfg, cfg.regime.monitor_size)
        return build_monitor(cfg, exp.recipe, exp.codec, exp.objective, stats, batch["audio"],
                             batch[exp.text_key], batch["text_mask"], batch.get("ssl_targets"),
                             ssl_params=exp.ssl_params)
    from jaxstage.data.synthetic import prompt_examples
    from jaxstage.models.text import HashTokenizer

    examples = prompt_examples(cfg.regime.monitor_seed, cfg.regime.monitor_size, cfg.data.sample_rate,
                               cfg.num_samples, mix_prob=cfg.data.mix_prob)
    audio = np.stack([e["audio"] for e in examples]).astype(np.float32)
    ids, mask = HashTokenizer(cfg.text.vocab_size)([e["caption"] for e in examples], cfg.data.text_max_length)
    return build_monitor(cfg, exp.recipe, exp.codec, exp.objective, stats, audio, ids, mask,
                         ssl_params=exp.ssl_params)


def _stats_audio(cfg: Config) -> np.ndarray:
    """The first ``codec.stats_examples`` training clips of the data source (fixed, order-independent)."""
    source = make_source(cfg)
    n = min(cfg.codec.stats_examples, num_training(cfg, source))
    return np.stack([source[i]["audio"] for i in range(n)])


def train(cfg: Config, workdir: str | Path | None = None) -> RunResult:
    """Train ``cfg`` into ``workdir`` (default ``cfg.train.workdir``), resuming if it has checkpoints."""
    enable_compilation_cache(cfg.train.compilation_cache)
    workdir = Path(workdir or cfg.train.workdir)
    prepare_workdir(cfg, workdir)
    is_main = jax.process_index() == 0

    # ---- mesh, experiment, input
    exp = build_experiment(cfg)
    stream = BatchStream(cfg, jax.process_index(), jax.process_count())
    ckpt = ckpt_lib.Checkpointer(workdir / "checkpoints", keep=cfg.train.ckpt_keep,
                                 async_save=cfg.train.async_checkpoint)
    logger = RunLogger(workdir, enabled=is_main, progress_bar=cfg.train.progress_bar)

    # ---- state: restore or init, then compile the step once
    state, start_step = restore_or_init(exp, ckpt, stream, logger)
    logger.info(f"mesh {dict(exp.mesh.shape)} on {jax.device_count()} {jax.devices()[0].platform} device(s); "
                f"{'resuming at step ' + str(start_step) if start_step else 'starting fresh'}")
    step_fn = compile_train_step(exp, state)
    logger.info(f"train step compiled in {step_fn.compile_seconds:.1f}s; {step_fn.memory_analysis()}")
    distributed.barrier("train_step_compiled")  # processes enter the first collective together
    if cfg.task == "sr":
        generator = SRGenerator(exp, batch_size=min(cfg.train.batch_size, 16))
        sample_fn = write_sr_samples
    else:
        generator = Generator(exp)
        sample_fn = write_samples
    evaluate = PeriodicEval(cfg, generator)
    config_dict = config_lib.to_dict(cfg)

    def save(step: int, force: bool = False) -> None:
        ckpt.save(step, state, stream.get_state(), config_dict, force=force)

    # ---- loop
    total = cfg.train.steps
    pending: tuple[int, dict[str, jax.Array]] | None = None
    last_fetch = (start_step, time.perf_counter())
    stopped_by = None
    step = start_step
    logger.start_progress(start_step, total)
    with StopFlag(multi_process=jax.process_count() > 1) as stop:
        while step < total:
            # Between log fetches nothing moves between host and device implicitly: the batch is an
            # explicit transfer and metrics stay on device until the next log step.
            with jax.transfer_guard("disallow"):
                batch = parallel.global_batch(next(stream), exp.batch_sharding)
                state, metrics = step_fn(state, batch)
            step += 1
            if step % cfg.train.log_every == 0 or step == total:
                if pending is not None:
                    last_fetch = _write_metrics(logger, pending, last_fetch)
                pending = (step, metrics)
            logger.advance(step)
            if cfg.sample.every and step % cfg.sample.every == 0 and step < total:
                sample_fn(logger, generator, state, cfg, step)
            if cfg.eval.every and step % cfg.eval.every == 0:
                logger.eval_metrics(step, evaluate(state))
            if stop.stop_at(step):
                stopped_by = stop.signal_name
                break
            if step % cfg.train.ckpt_every == 0:
                save(step)
        if pending is not None:
            _write_metrics(logger, pending, last_fetch)
        save(step, force=True)
        ckpt.wait()
    logger.close_progress()

    result = RunResult(workdir=workdir, final_step=step, stopped_by=stopped_by, compile_count=step_fn.trace_count)
    if stopped_by:
        logger.info(f"stopped by {stopped_by} at step {step}; checkpoint saved in {ckpt.directory}")
    elif start_step < total:
        sample_fn(logger, generator, state, cfg, step)
        if cfg.sample.final_eval_prompts and cfg.task == "sr":
            result.sr_eval = sr_final_eval(logger, generator, state, cfg, workdir)
        elif cfg.sample.final_eval_prompts and cfg.data.source == "synthetic":
            result.attribute_accuracy = attribute_check(logger, generator, state, cfg, workdir)
        elif cfg.sample.final_eval_prompts:
            logger.info(f"sample.final_eval_prompts={cfg.sample.final_eval_prompts}: the attribute check judges "
                        f"synthetic prompts only; skipped for data.source={cfg.data.source}")
    ckpt.close()
    logger.close()
    if is_main:
        from jaxstage.run.report import write_report

        logger.info(f"wrote {write_report(workdir)}")
    return result


def _write_metrics(logger: RunLogger, pending: tuple[int, dict[str, jax.Array]], last_fetch: tuple[int, float],
                   finite_key: str = "loss"):
    """Fetch one log step's metrics (explicit device_get), add throughput, log them; a non-finite
    ``finite_key`` stops the run."""
    step, device_metrics = pending
    values = {k: _json_value(v) for k, v in jax.device_get(device_metrics).items()}
    now = time.perf_counter()
    prev_step, prev_time = last_fetch
    values["steps_per_s"] = (step - prev_step) / max(now - prev_time, 1e-9)
    if values[finite_key] is None:
        raise TrainingError(f"{finite_key} is not finite at step {step}; stopping (last checkpoint kept)")
    logger.metrics(step, values)
    return step, now


def _json_value(value):
    """A fetched metric as JSON: scalars as float (NaN as None), arrays as lists."""
    array = np.asarray(value)
    if array.ndim == 0:
        number = float(array)
        return number if math.isfinite(number) else None
    if array.dtype.kind in "iu":
        return array.tolist()
    return [float(x) if math.isfinite(float(x)) else None for x in array.ravel()]
