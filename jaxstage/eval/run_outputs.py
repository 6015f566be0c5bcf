"""What a text-to-audio run writes beside its checkpoints: EMA samples during and at the end of the
run, and the end-of-run attribute check (``attributes.json``). The SR counterparts are in
``jaxstage.eval.sr_report``."""

from __future__ import annotations

import json
from pathlib import Path

import jax

from jaxstage.config import Config
from jaxstage.data.pipeline import held_out_batch
from jaxstage.inference.sampling import Generator
from jaxstage.run.logging import RunLogger


def write_samples(logger: RunLogger, generator: Generator, state, cfg: Config, step: int) -> None:
    """Generate ``sample.num`` clips from held-out prompts with the EMA weights; WAV + TensorBoard.

    Synthetic data: prompts from ``sample.seed``. Prepared data: the captions of the last
    ``sample.num`` records (held out when ``sample.num <= regime.monitor_size``), conditioned on the
    records' own text (precomputed embeddings, or the hash-tokenized caption).
    """
    if cfg.data.source == "prepared":
        batch, prompts = held_out_batch(cfg, cfg.sample.num)
        audio = generator.from_text(state.ema_params, state.codec_stats, batch[generator.exp.text_key], batch["text_mask"],
                                    seed=cfg.sample.seed + step)
        logger.audio(step, prompts, audio, cfg.data.sample_rate)
        return
    from jaxstage.data.synthetic import prompt_set

    prompts = [p for p, _ in prompt_set(cfg.sample.seed, cfg.sample.num)]
    audio = generator(state.ema_params, state.codec_stats, prompts, seed=cfg.sample.seed + step)
    logger.audio(step, prompts, audio, cfg.data.sample_rate)


def attribute_check(logger: RunLogger, generator: Generator, state, cfg: Config, workdir: Path
                    ) -> dict[str, float]:
    """Judge generated audio against held-out prompts by signal analysis; write attributes.json."""
    from jaxstage.data.synthetic import prompt_set
    from jaxstage.eval.attributes import analyze, attribute_accuracy, chance_levels

    prompts = prompt_set(cfg.sample.seed + 1, cfg.sample.final_eval_prompts)
    predicted, truth = [], []
    chunk = max(1, cfg.sample.num * 8)
    for i in range(0, len(prompts), chunk):
        part = prompts[i:i + chunk]
        audio = generator(state.ema_params, state.codec_stats, [p for p, _ in part], seed=cfg.sample.seed + i)
        predicted += [analyze(a, cfg.data.sample_rate) for a in audio]
        truth += [attrs for _, attrs in part]
    accuracy = attribute_accuracy(predicted, truth)
    report = {"step": int(state.step), "num_prompts": len(prompts), "sampler": cfg.sample.sampler,
              "steps": cfg.sample.steps, "cfg_scale": cfg.sample.cfg_scale,
              "accuracy": accuracy, "chance": chance_levels()}
    if jax.process_index() == 0:
        (workdir / "attributes.json").write_text(json.dumps(report, indent=2))
    logger.info("attribute accuracy of generated audio: " + ", ".join(
        f"{k} {v:.2f} (chance {report['chance'][k]:.2f})" for k, v in accuracy.items()))
    return accuracy
