"""The host loop of ARC post-training (`jaxstage posttrain`): the main trainer's loop with the
ARC state and step. It feeds batches, fetches metrics one log step late, checkpoints (state +
data position + config, resumable exactly like training), stops on SIGTERM/SIGINT at a step
boundary, and at the end writes samples with the post-trained sampler (`sample.*`: ping-pong, 8
steps, no CFG in configs/synth_t2a_arc.py) and, on synthetic data, the attribute check.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax

from jaxstage import config as config_lib
from jaxstage import distributed, parallel
from jaxstage.config import Config, ConfigError
from jaxstage.data.pipeline import BatchStream
from jaxstage.posttrain.state import ARCExperiment, ARCState, arc_restore_target, build_arc_experiment, init_arc_state
from jaxstage.posttrain.step import compile_arc_step
from jaxstage.run import checkpoint as ckpt_lib
from jaxstage.run.logging import RunLogger
from jaxstage.eval.run_outputs import attribute_check, write_samples
from jaxstage.train.loop import (
    RunResult, StopFlag, TrainingError, _write_metrics, enable_compilation_cache, prepare_workdir,
)
from jaxstage.inference.sampling import Generator

MARKER = "posttrain.json"  # in a post-training run directory: where its generator came from


def is_posttrain_run(workdir: str | Path) -> bool:
    """Whether ``workdir`` was made by `jaxstage posttrain` (its checkpoints hold an ARCState)."""
    return (Path(workdir) / MARKER).is_file()


def initial_state(ax: ARCExperiment, init_from: str, workdir: Path, logger: RunLogger) -> ARCState:
    """The ARC state from the pretrained run's newest checkpoint (its EMA weights and codec statistics)."""
    from jaxstage.train.init_from import _first_difference, _shapes, source_run
    from jaxstage.inference.load import load_run

    if not init_from:
        raise ConfigError("ARC post-training needs the pretrained run: --init-from RUN_DIR (or arc.init_from)")
    path, source_cfg = source_run(init_from, "--init-from")
    if is_posttrain_run(path):
        raise ConfigError(f"--init-from {path} is itself a post-training run; give the pretrained run")
    _, pretrained = load_run(source_cfg, path, mesh=ax.mesh)
    if _shapes(pretrained.ema_params) != _shapes(ax.gen.abstract_params):
        raise ConfigError(f"--init-from {path}: its model differs from this config's "
                          f"({_first_difference(ax.gen.abstract_params, pretrained.ema_params)}); start from the "
                          f"pretrained run's own config")
    state = init_arc_state(ax, pretrained.ema_params, pretrained.codec_stats)
    source = {"init_from": str(path.resolve()), "source_step": int(pretrained.step),
              "disc_depth": ax.cfg.arc.disc_depth}
    if jax.process_index() == 0:
        (workdir / MARKER).write_text(json.dumps(source, indent=2))
    logger.info(f"post-training {path} (step {source['source_step']}, EMA weights): generator = its denoiser, "
                f"discriminator = its first {ax.cfg.arc.disc_depth} DiT block(s) + a conv head")
    return state


def posttrain(cfg: Config, workdir: str | Path | None = None, init_from: str | None = None) -> RunResult:
    """ARC-post-train ``cfg.arc.init_from`` (or ``init_from``) into ``workdir``; resumes from its checkpoints."""
    if init_from:
        cfg.arc.init_from = init_from
    enable_compilation_cache(cfg.train.compilation_cache)
    workdir = Path(workdir or cfg.train.workdir)
    if distributed.complete_checkpoints(workdir / "checkpoints") and not is_posttrain_run(workdir):
        raise ConfigError(f"{workdir} holds checkpoints of a training run, not a post-training run; "
                          f"use a new --workdir")
    prepare_workdir(cfg, workdir)
    is_main = jax.process_index() == 0

    ax = build_arc_experiment(cfg)
    stream = BatchStream(cfg, jax.process_index(), jax.process_count())
    ckpt = ckpt_lib.Checkpointer(workdir / "checkpoints", keep=cfg.train.ckpt_keep,
                                 async_save=cfg.train.async_checkpoint)
    logger = RunLogger(workdir, enabled=is_main, progress_bar=cfg.train.progress_bar)

    start_step = ckpt.latest_step()
    if start_step is None:
        state, start_step = initial_state(ax, cfg.arc.init_from, workdir, logger), 0
    else:
        state, data_position = ckpt.restore(start_step, arc_restore_target(ax))
        stream.set_state(data_position)
        if int(state.step) != start_step:
            raise TrainingError(f"checkpoint {ckpt.directory / str(start_step)} holds step {int(state.step)}")
    logger.info(f"ARC post-training on mesh {dict(ax.mesh.shape)}; "
                f"{'resuming at step ' + str(start_step) if start_step else 'starting fresh'}")
    step_fn = compile_arc_step(ax, state)
    logger.info(f"ARC step compiled in {step_fn.compile_seconds:.1f}s")
    distributed.barrier("arc_step_compiled")  # processes enter the first collective together
    generator = Generator(ax.gen)
    config_dict = config_lib.to_dict(cfg)

    total = cfg.train.steps
    pending = None
    last_fetch = (start_step, time.perf_counter())
    stopped_by = None
    step = start_step
    logger.start_progress(start_step, total)
    with StopFlag(multi_process=jax.process_count() > 1) as stop:
        while step < total:
            # as in training: the batch is the one explicit transfer; metrics stay on device
            with jax.transfer_guard("disallow"):
                batch = parallel.global_batch(next(stream), ax.gen.batch_sharding)
                state, metrics = step_fn(state, batch)
            step += 1
            if step % cfg.train.log_every == 0 or step == total:
                if pending is not None:
                    last_fetch = _write_metrics(logger, pending, last_fetch, finite_key="loss_g")
                pending = (step, metrics)
            logger.advance(step)
            if cfg.sample.every and step % cfg.sample.every == 0 and step < total:
                write_samples(logger, generator, state, cfg, step)
            if stop.stop_at(step):
                stopped_by = stop.signal_name
                break
            if step % cfg.train.ckpt_every == 0:
                ckpt.save(step, state, stream.get_state(), config_dict)
        if pending is not None:
            _write_metrics(logger, pending, last_fetch, finite_key="loss_g")
        ckpt.save(step, state, stream.get_state(), config_dict, force=True)
        ckpt.wait()
    logger.close_progress()

    result = RunResult(workdir=workdir, final_step=step, stopped_by=stopped_by, compile_count=step_fn.trace_count)
    if stopped_by:
        logger.info(f"stopped by {stopped_by} at step {step}; checkpoint saved in {ckpt.directory}")
    elif start_step < total:
        write_samples(logger, generator, state, cfg, step)
        if cfg.sample.final_eval_prompts and cfg.data.source == "synthetic":
            result.attribute_accuracy = attribute_check(logger, generator, state, cfg, workdir)
    ckpt.close()
    logger.close()
    return result
