"""Text-to-audio evaluation: generate for a prompt set (:mod:`jaxstage.eval.held_out`), score it, and
evaluate a saved run (:func:`evaluate_run`).

Metrics (SPEC §4): attribute accuracy (synthetic), FD on the weight-free spectral embedding
(``fd_spectral``), and, given local model directories, FD / KL (both directions, named) / Inception
Score on an AST AudioSet classifier and CLAP score plus FD on CLAP audio embeddings.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from jaxstage.config import Config, guidance_rule
from jaxstage.eval import hf_audio_models as hf
from jaxstage.eval.attributes import analyze, attribute_accuracy
from jaxstage.eval.classifier_metrics import clap_score, inception_score, paired_kl
from jaxstage.eval.frechet import frechet_distance_of
from jaxstage.eval.held_out import PromptSet, held_out_prompts
from jaxstage.eval.spectral_embedding import spectral_embedding
from jaxstage.inference.load import load_run
from jaxstage.inference.sampling import Generator


def generate(generator: Generator, params: Any, stats: Any, prompts: PromptSet, *, chunk: int = 32,
             sampler: str | None = None, steps: int | None = None, cfg_scale: float | None = None,
             seed: int = 0) -> np.ndarray:
    """Audio [n, N] for the prompt set, in fixed-size chunks (the last padded) so one executable serves."""
    n = len(prompts.captions)
    chunk = max(1, min(chunk, n))
    out = []
    for start in range(0, n, chunk):
        idx = np.arange(start, start + chunk) % n  # the last chunk wraps around to the first prompts
        kwargs = dict(sampler=sampler, steps=steps, cfg_scale=cfg_scale, seed=seed + start)
        captions = [prompts.captions[i] for i in idx]
        if prompts.text is None and prompts.numbers is None:  # free text at the default timing
            audio = generator(params, stats, captions, **kwargs)
        else:  # the records' encoded text (or the captions encoded now) and their timing
            text, mask = ((prompts.text[idx], prompts.text_mask[idx]) if prompts.text is not None
                          else generator.encode_prompts(captions))
            numbers = None if prompts.numbers is None else {k: v[idx] for k, v in prompts.numbers.items()}
            audio = generator.from_text(params, stats, text, mask, numbers=numbers, **kwargs)
        out.append(audio[: min(chunk, n - start)])
    return np.concatenate(out)


def score(cfg: Config, prompts: PromptSet, audio: np.ndarray, *, ast: Any = None, clap: Any = None) -> dict[str, Any]:
    """All metrics available for this prompt set and these optional models."""
    sr = cfg.data.sample_rate
    metrics: dict[str, Any] = {}
    if prompts.attributes is not None:
        predicted = [analyze(a, sr) for a in audio]
        metrics["attribute_accuracy"] = attribute_accuracy(predicted, prompts.attributes)
    refs = prompts.references
    if refs is not None and len(audio) >= 2:
        metrics["fd_spectral"] = frechet_distance_of(spectral_embedding(refs, sr), spectral_embedding(audio, sr))
    if ast is not None:
        gen = ast(audio, sr)
        metrics["is_ast"] = inception_score(gen["probs"])
        if refs is not None:
            ref = ast(refs, sr)
            metrics.update(paired_kl(ref["probs"], gen["probs"]))
            metrics["is_ast_reference"] = inception_score(ref["probs"])
            metrics["fd_ast"] = frechet_distance_of(ref["embedding"], gen["embedding"])
    if clap is not None:
        text = clap.text_embeddings(prompts.captions)
        gen_emb = clap.audio_embeddings(audio, sr)
        metrics["clap_score"] = float(np.mean(clap_score(text, gen_emb)))
        if refs is not None:
            ref_emb = clap.audio_embeddings(refs, sr)
            metrics["clap_score_reference"] = float(np.mean(clap_score(text, ref_emb)))
            metrics["fd_clap"] = frechet_distance_of(ref_emb, gen_emb)
    return metrics


def evaluate_run(workdir: str | Path, cfg: Config, *, n: int | None = None, prompts_file: str | None = None,
                 ast_dir: str | None = None, clap_dir: str | None = None, sampler: str | None = None,
                 steps: int | None = None, cfg_scale: float | None = None, seed: int = 0, step: int | None = None,
                 out: str | Path | None = None) -> tuple[dict[str, Any], Path]:
    """``jaxstage eval --task tta``: :func:`score` of a saved run's EMA weights on ``n`` held-out prompts
    (default ``sample.final_eval_prompts`` or 90) or a prompts file -> (report, ``out`` or
    WORKDIR/tta_eval.json). Sampler overrides are arguments, never written into ``cfg``."""
    workdir = Path(workdir)
    if cfg.task != "t2a":
        raise ValueError(f"{workdir} is task={cfg.task}; --task tta needs a text-to-audio run")
    n = (cfg.sample.final_eval_prompts or 90) if n is None else n
    prompts = held_out_prompts(cfg, n, prompts_file)  # a bad prompts file fails before any model loads
    if prompts_file and cfg.text.kind != "learned":
        raise ValueError(f"--prompts: {workdir} conditions on precomputed text embeddings; free text needs its encoder")
    ast, clap = (hf.ASTClassifier(ast_dir) if ast_dir else None), (hf.CLAPModel(clap_dir) if clap_dir else None)
    exp, state = load_run(cfg, workdir, step=step)
    s = cfg.sample
    sampler, steps = sampler or s.sampler, steps or s.steps
    scale = s.cfg_scale if cfg_scale is None else cfg_scale
    audio = generate(Generator(exp), state.ema_params, state.codec_stats, prompts, sampler=sampler, steps=steps,
                     cfg_scale=scale, seed=seed)
    report = {"step": int(state.step), "count": len(prompts.captions), "sampler": sampler, "steps": steps,
              "cfg_scale": scale, "guidance": dataclasses.asdict(guidance_rule(s)), "prompts": prompts.source, "ast": ast_dir, "clap": clap_dir,
              "metrics": score(cfg, prompts, audio, ast=ast, clap=clap)}
    out = Path(out or workdir / "tta_eval.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return report, out
