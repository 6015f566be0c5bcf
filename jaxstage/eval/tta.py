"""Text-to-audio evaluation: generate for a prompt set (:mod:`jaxstage.eval.held_out`) and score it.

Metrics (SPEC §4): attribute accuracy (synthetic), FD on the weight-free spectral embedding
(``fd_spectral``), and, given local model directories, FD / KL (both directions, named) / Inception
Score on an AST AudioSet classifier and CLAP score plus FD on CLAP audio embeddings.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxstage.config import Config
from jaxstage.eval.classifier_metrics import clap_score, inception_score, paired_kl
from jaxstage.eval.frechet import frechet_distance_of
from jaxstage.eval.held_out import PromptSet
from jaxstage.eval.spectral_embedding import spectral_embedding
from jaxstage.inference.sampling import Generator


def generate(generator: Generator, params: Any, stats: Any, prompts: PromptSet, *, chunk: int = 32,
             sampler: str | None = None, steps: int | None = None, cfg_scale: float | None = None,
             seed: int = 0) -> np.ndarray:
    """Audio [n, N] for the prompt set, in fixed-size chunks (the last padded) so one executable serves."""
    n = len(prompts.captions)
    chunk = max(1, min(chunk, n))
    out = []
    for start in range(0, n, chunk):
        idx = np.arange(start, start + chunk) % n if start + chunk > n else np.arange(start, start + chunk)
        kwargs = dict(sampler=sampler, steps=steps, cfg_scale=cfg_scale, seed=seed + start)
        if prompts.text is not None:
            audio = generator.from_text(params, stats, prompts.text[idx], prompts.text_mask[idx], **kwargs)
        else:
            audio = generator(params, stats, [prompts.captions[i] for i in idx], **kwargs)
        out.append(audio[: min(chunk, n - start)])
    return np.concatenate(out)


def score(cfg: Config, prompts: PromptSet, audio: np.ndarray, *, ast: Any = None, clap: Any = None) -> dict[str, Any]:
    """All metrics available for this prompt set and these optional models."""
    sr = cfg.data.sample_rate
    metrics: dict[str, Any] = {}
    if prompts.attributes is not None:
        from jaxstage.eval.attributes import analyze, attribute_accuracy

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
