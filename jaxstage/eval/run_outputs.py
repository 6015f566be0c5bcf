"""What a text-to-audio run writes beside its checkpoints: EMA samples during and at the end of the
run, and the end-of-run attribute check (``attributes.json``). Prompts: :mod:`jaxstage.eval.held_out`;
the SR counterparts are in ``jaxstage.eval.sr_report``."""

from __future__ import annotations

import json
from pathlib import Path

import jax

from jaxstage.config import Config
from jaxstage.eval.attributes import chance_levels
from jaxstage.eval.held_out import held_out_prompts, sample_prompts
from jaxstage.eval.tta import generate, score
from jaxstage.inference.sampling import Generator
from jaxstage.run.logging import RunLogger


def write_samples(logger: RunLogger, generator: Generator, state, cfg: Config, step: int) -> None:
    """Generate ``sample.num`` clips from the sample prompts with the EMA weights; WAV + TensorBoard."""
    prompts = sample_prompts(cfg, cfg.sample.num)
    audio = generate(generator, state.ema_params, state.codec_stats, prompts, chunk=len(prompts.captions),
                     seed=cfg.sample.seed + step)
    logger.audio(step, prompts.captions, audio, cfg.data.sample_rate)


def attribute_check(logger: RunLogger, generator: Generator, state, cfg: Config, workdir: Path) -> dict[str, float]:
    """Attribute accuracy of the EMA model on ``sample.final_eval_prompts`` held-out prompts (synthetic
    data), judged by signal analysis; written to ``attributes.json``."""
    prompts = held_out_prompts(cfg, cfg.sample.final_eval_prompts)
    audio = generate(generator, state.ema_params, state.codec_stats, prompts, chunk=max(1, cfg.sample.num * 8),
                     seed=cfg.sample.seed)
    accuracy = score(cfg, prompts, audio)["attribute_accuracy"]
    report = {"step": int(state.step), "num_prompts": len(prompts.captions), "sampler": cfg.sample.sampler,
              "steps": cfg.sample.steps, "cfg_scale": cfg.sample.cfg_scale,
              "accuracy": accuracy, "chance": chance_levels()}
    if jax.process_index() == 0:
        (workdir / "attributes.json").write_text(json.dumps(report, indent=2))
    logger.info("attribute accuracy of generated audio: " + ", ".join(
        f"{k} {v:.2f} (chance {report['chance'][k]:.2f})" for k, v in accuracy.items()))
    return accuracy
