"""Evaluate a saved run directory (``jaxstage eval --workdir``): load a checkpoint, generate for the
held-out prompts or clips (:mod:`jaxstage.eval.held_out`), score, write the JSON report.

Kept apart from the in-training reports (:mod:`jaxstage.eval.run_outputs`, ``sr_report``,
``periodic``) because it loads checkpoints: the training loops import those, and loading imports
the loops. Sampler overrides are arguments; the run's config is never changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jaxstage.config import Config


def _write(report: dict[str, Any], out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return out


def evaluate_tta(workdir: str | Path, cfg: Config, *, n: int | None = None, prompts_file: str | None = None,
                 ast_dir: str | None = None, clap_dir: str | None = None, sampler: str | None = None,
                 steps: int | None = None, cfg_scale: float | None = None, seed: int = 0, step: int | None = None,
                 out: str | Path | None = None) -> tuple[dict[str, Any], Path]:
    """Text-to-audio metrics (:mod:`jaxstage.eval.tta`) of the EMA model on ``n`` held-out prompts
    (default ``sample.final_eval_prompts``, or 90) or a prompts file; AST/CLAP from local model
    directories. Written to ``out`` (default ``WORKDIR/tta_eval.json``); returns (report, path)."""
    workdir = Path(workdir)
    if cfg.task != "t2a":
        raise ValueError(f"{workdir} is task={cfg.task}; --task tta needs a text-to-audio run")
    from jaxstage.eval.held_out import held_out_prompts
    from jaxstage.eval.tta import generate, score

    n = (cfg.sample.final_eval_prompts or 90) if n is None else n
    prompts = held_out_prompts(cfg, n, prompts_file)  # a bad prompts file fails before any model loads
    if prompts_file and cfg.text.kind != "learned":
        raise ValueError(f"--prompts: {workdir} conditions on precomputed text embeddings; free text needs its encoder")
    ast = clap = None
    if ast_dir:
        from jaxstage.eval.hf_audio_models import ASTClassifier

        ast = ASTClassifier(ast_dir)
    if clap_dir:
        from jaxstage.eval.hf_audio_models import CLAPModel

        clap = CLAPModel(clap_dir)
    from jaxstage.inference.load import load_run
    from jaxstage.inference.sampling import Generator

    exp, state = load_run(cfg, workdir, step=step)
    s = cfg.sample
    sampler, steps = sampler or s.sampler, steps or s.steps
    scale = s.cfg_scale if cfg_scale is None else cfg_scale
    audio = generate(Generator(exp), state.ema_params, state.codec_stats, prompts, sampler=sampler, steps=steps,
                     cfg_scale=scale, seed=seed)
    report = {"step": int(state.step), "count": len(prompts.captions), "sampler": sampler, "steps": steps,
              "cfg_scale": scale, "prompts": prompts.source, "ast": ast_dir, "clap": clap_dir,
              "metrics": score(cfg, prompts, audio, ast=ast, clap=clap)}
    return report, _write(report, out or workdir / "tta_eval.json")


def evaluate_sr(workdir: str | Path, cfg: Config, *, n: int | None = None, sampler: str | None = None,
                steps: int | None = None, step: int | None = None, out: str | Path | None = None
                ) -> tuple[dict[str, Any], Path]:
    """:func:`jaxstage.eval.sr_report.sr_eval` of a super-resolution run on ``n`` held-out clips
    (default ``sample.final_eval_prompts``), written to ``out`` (default ``WORKDIR/sr_eval.json``);
    returns (report, path)."""
    workdir = Path(workdir)
    if cfg.task != "sr":
        raise ValueError(f"{workdir} is task={cfg.task}; --task sr --workdir needs a super-resolution run")
    count = cfg.sample.final_eval_prompts if n is None else n
    if count < 1:
        raise ValueError(f"--n {count}: need at least one held-out clip")
    from jaxstage.eval.sr_report import sr_eval
    from jaxstage.inference.load import load_run
    from jaxstage.inference.sr_sampling import SRGenerator

    exp, state = load_run(cfg, workdir, step=step)
    generator = SRGenerator(exp, batch_size=min(cfg.train.batch_size, 16))
    report = sr_eval(generator, state, cfg, count, sampler=sampler, steps=steps)
    return report, _write(report, out or workdir / "sr_eval.json")
