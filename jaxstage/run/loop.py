"""The host loop shared by every trainer: it feeds batches, fetches metrics one log step late,
saves checkpoints, writes samples, evaluations and logs, and stops cleanly on a signal. It never
computes training math (that is all in the trainer's compiled step).

Sections: run directory → experiment → input → state (restore or init) → compile → loop →
final checkpoint → samples, end-of-run checks and the report.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxstage import config as config_lib
from jaxstage import distributed, parallel
from jaxstage.config import ConfigError
from jaxstage.data.pipeline import BatchStream
from jaxstage.run import checkpoint as ckpt_lib
from jaxstage.run.logging import RunLogger
from jaxstage.run.non_finite import SKIPS_KEY, NonFiniteGuard, first_non_finite, init_skips
from jaxstage.run.signals import StopFlag
from jaxstage.run.trainer import RunResult, Trainer, TrainingError
from jaxstage.run.workdir import enable_compilation_cache, prepare_workdir


def run(trainer: Trainer, workdir: str | Path | None = None) -> RunResult:
    """Run ``trainer`` into ``workdir`` (default ``train.workdir``), resuming if it has checkpoints."""
    cfg = trainer.cfg
    enable_compilation_cache(cfg.train.compilation_cache)
    workdir = Path(workdir or cfg.train.workdir)
    prepare_workdir(cfg, workdir, trainer.kind)
    is_main = jax.process_index() == 0

    # ---- experiment, input
    trainer.build()
    stream = BatchStream(cfg, jax.process_index(), jax.process_count())
    ckpt = ckpt_lib.Checkpointer(workdir / "checkpoints", keep=cfg.train.ckpt_keep,
                                 async_save=cfg.train.async_checkpoint)
    logger = RunLogger(workdir, enabled=is_main, progress_bar=cfg.train.progress_bar, headline=trainer.headline,
                       peak_level=None if cfg.sample.raw_levels else cfg.sample.peak_level)

    # ---- state: restore or init, then compile the step once
    state, start_step = restore_or_init(trainer, ckpt, stream, workdir, logger)
    logger.info(f"{trainer.title} on mesh {dict(trainer.mesh.shape)} on {jax.device_count()} "
                f"{jax.devices()[0].platform} device(s); "
                f"{'resuming at step ' + str(start_step) if start_step else 'starting fresh'}")
    step_fn = trainer.compile(state)
    logger.info(f"{trainer.title} step compiled in {step_fn.compile_seconds:.1f}s; {step_fn.memory_analysis()}")
    distributed.barrier(f"{trainer.kind}_step_compiled")  # processes enter the first collective together
    outputs = trainer.outputs() or RunOutputs(cfg, trainer.sampling_model)  # a trainer may supply its own
    config_dict = config_lib.to_dict(cfg)

    # ---- loop
    total = cfg.train.steps
    guard = step_fn.guard
    pending: tuple[int, dict[str, jax.Array]] | None = None
    last_fetch = (start_step, time.perf_counter())
    stopped_by = None
    step = start_step
    logger.start_progress(start_step, total)
    with StopFlag(multi_process=jax.process_count() > 1) as stop:
        try:
            while step < total:
                # Between log fetches nothing moves between host and device implicitly: the batch is an
                # explicit transfer and metrics stay on device until the next log step.
                with jax.transfer_guard("disallow"):
                    batch = parallel.global_batch(next(stream), trainer.batch_sharding)
                    state, metrics = step_fn(state, batch)
                step += 1
                if step % cfg.train.log_every == 0 or step == total:
                    if pending is not None:
                        last_fetch = write_metrics(logger, pending, last_fetch, guard)
                    pending = (step, metrics)
                logger.advance(step)
                if cfg.sample.every and step % cfg.sample.every == 0 and step < total:
                    outputs.sample(logger, state, step)
                if cfg.eval.every and step % cfg.eval.every == 0:
                    logger.eval_metrics(step, outputs.evaluate(state))
                if stop.stop_at(step):
                    stopped_by = stop.signal_name
                    break
                if step % cfg.train.ckpt_every == 0:
                    if pending is not None:  # its row is written before the checkpoint that a resume starts after
                        last_fetch, pending = write_metrics(logger, pending, last_fetch, guard), None
                    save_checkpoint(ckpt, step, state, stream, config_dict, guard)
            if pending is not None:
                write_metrics(logger, pending, last_fetch, guard)
            save_checkpoint(ckpt, step, state, stream, config_dict, guard, force=True)
        except NonFiniteStop as err:  # finish any save in flight, then name the newest finished checkpoint
            logger.close_progress()
            ckpt.wait()
            newest = ckpt.latest_step()
            ckpt.close()
            logger.close()
            raise TrainingError(f"{err}; newest finished checkpoint: "
                                f"{ckpt.directory / str(newest) if newest is not None else 'none'}") from None
        ckpt.wait()
    logger.close_progress()

    result = RunResult(workdir=workdir, final_step=step, stopped_by=stopped_by, compile_count=step_fn.trace_count)
    if stopped_by:
        logger.info(f"stopped by {stopped_by} at step {step}; checkpoint saved in {ckpt.directory}")
    elif start_step < total:
        outputs.sample(logger, state, step)
        outputs.final_checks(logger, state, workdir, result)
    ckpt.close()
    logger.close()
    if is_main:
        from jaxstage.run.report import write_report

        logger.info(f"wrote {write_report(workdir)}")
    return result


def restore_or_init(trainer: Trainer, ckpt: ckpt_lib.Checkpointer, stream: BatchStream, workdir: Path,
                    logger: RunLogger) -> tuple[Any, int]:
    """Restore the newest checkpoint (state + data position), or the trainer's fresh state."""
    step, chosen = ckpt.latest_step(), trainer.cfg.train.resume_step
    if chosen:
        if chosen not in ckpt.all_steps():
            raise ConfigError(f"train.resume_step={chosen}: {ckpt.directory} has no finished checkpoint at that step "
                              f"(finished: {ckpt.all_steps() or 'none'})")
        step = chosen
    if step is None:
        logger.resume_at(0)  # rows of an attempt killed before its first checkpoint move aside
        return trainer.fresh_state(workdir, logger), 0
    if trainer.init_from_key and config_lib.get_value(trainer.cfg, trainer.init_from_key):
        logger.info(f"resuming {ckpt.directory} at step {step}: {trainer.init_from_key} is read only by a fresh run")
    state, data_position = ckpt.restore(step, trainer.restore_target(), added_fields={"skips": init_skips()})
    stream.set_state(data_position)
    if int(state.step) != step:
        raise TrainingError(f"checkpoint {ckpt.directory / str(step)} holds step {int(state.step)}, expected {step}")
    if newer := ckpt.set_aside_after(step):
        logger.info(f"resuming from step {step}: newer checkpoints {newer} moved to {workdir / 'checkpoints_set_aside'}")
    logger.resume_at(step)
    return state, step


class RunOutputs:
    """Samples, periodic evaluation and end-of-run checks of a run, by task: text-to-audio
    (``Generator``; the attribute check on synthetic data) or super-resolution (``SRGenerator``;
    the held-out LSD report)."""

    def __init__(self, cfg: config_lib.Config, model: Any):
        from jaxstage.eval.periodic import PeriodicEval

        self.cfg = cfg
        if cfg.task == "sr":
            from jaxstage.inference.sr_sampling import SRGenerator

            self.generator = SRGenerator(model, batch_size=min(cfg.train.batch_size, 16))
        else:
            from jaxstage.inference.sampling import Generator

            self.generator = Generator(model)
        self.evaluate = PeriodicEval(cfg, self.generator)

    def sample(self, logger: RunLogger, state: Any, step: int) -> None:
        """EMA samples of held-out prompts (or clips) into samples/ and TensorBoard."""
        if self.cfg.task == "sr":
            from jaxstage.eval.sr_report import write_sr_samples as write
        else:
            from jaxstage.eval.run_outputs import write_samples as write
        write(logger, self.generator, state, self.cfg, step)

    def final_checks(self, logger: RunLogger, state: Any, workdir: Path, result: RunResult) -> None:
        """End of a finished run: the SR held-out report or the synthetic attribute check."""
        cfg = self.cfg
        if not cfg.sample.final_eval_prompts:
            return
        if cfg.task == "sr":
            from jaxstage.eval.sr_report import sr_final_eval

            result.sr_eval = sr_final_eval(logger, self.generator, state, cfg, workdir)
        elif cfg.data.source == "synthetic":
            from jaxstage.eval.run_outputs import attribute_check

            result.attribute_accuracy = attribute_check(logger, self.generator, state, cfg, workdir)
        else:
            logger.info(f"sample.final_eval_prompts={cfg.sample.final_eval_prompts}: the attribute check judges "
                        f"synthetic prompts only; skipped for data.source={cfg.data.source}")


class NonFiniteStop(RuntimeError):
    """Too many consecutive non-finite steps, or a state that is not finite at a save."""


def write_metrics(logger: RunLogger, pending: tuple[int, dict[str, jax.Array]], last_fetch: tuple[int, float],
                  guard: NonFiniteGuard):
    """Fetch one log step's metrics (explicit device_get), add throughput, log them; stop the run
    (after logging the row) once more than ``train.max_skipped_steps`` consecutive steps were skipped."""
    step, device_metrics = pending
    fetched = jax.device_get(device_metrics)
    skips = fetched.pop(SKIPS_KEY)
    values = {k: _json_value(v) for k, v in fetched.items()}
    now = time.perf_counter()
    prev_step, prev_time = last_fetch
    values["steps_per_s"] = (step - prev_step) / max(now - prev_time, 1e-9)
    logger.metrics(step, values)
    if line := guard.stop_line(skips):
        raise NonFiniteStop(line)
    return step, now


def save_checkpoint(ckpt: ckpt_lib.Checkpointer, step: int, state: Any, stream: BatchStream,
                    config_dict: dict[str, Any], guard: NonFiniteGuard, force: bool = False) -> None:
    """Save ``state`` at ``step`` unless the skip limit was passed or a state value is not finite
    (checked on device; then the save is refused with one line)."""
    if line := guard.stop_line(jax.device_get(state.skips)):
        raise NonFiniteStop(line)
    if bad := first_non_finite(state):
        raise NonFiniteStop(f"refusing to save step {step}: state{bad} is not finite")
    ckpt.save(step, state, stream.get_state(), config_dict, force=force)


def _json_value(value):
    """A fetched metric as JSON: scalars as float (NaN as None), arrays as lists."""
    array = np.asarray(value)
    if array.ndim == 0:
        number = float(array)
        return number if math.isfinite(number) else None
    if array.dtype.kind in "iu":
        return array.tolist()
    return [float(x) if math.isfinite(float(x)) else None for x in array.ravel()]
