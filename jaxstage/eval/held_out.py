"""The held-out prompts and clips that run samples and every evaluation use, chosen here only.

Text-to-audio:
- samples written during a run (:func:`sample_prompts`): synthetic data, ``prompt_set(sample.seed, n)``;
  prepared data, the last ``n`` records (held out when ``n <= regime.monitor_size``), conditioned on
  their own text (precomputed embeddings or the hash-tokenized caption);
- evaluation (:func:`held_out_prompts`: periodic ``eval_*``, the end-of-run attribute check,
  ``jaxstage eval --task tta``, bench/): synthetic data, the single-source prompts of
  ``prompt_examples(sample.seed + 1, n)`` with reference clips rendered from their attributes (the
  first ``eval.num`` of them are the periodic set); prepared data, the held-out tail records (their
  text and audio as references); or a prompts file (one prompt per line, no references).

Super-resolution (:func:`sr_clips`): :func:`jaxstage.data.pipeline.sr_held_out_batch` at offset
``regime.monitor_size`` (speech-like source: never read by training and disjoint from the monitor's
clips); prepared data, the held-out tail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxstage.config import Config
from jaxstage.data.pipeline import held_out_batch, held_out_count, sr_held_out_batch


class PromptSet:
    """Captions, optional references [n, N], optional attribute dicts, the encoded text condition
    (prepared data) and ``source``, a description of where the prompts come from."""

    def __init__(self, captions: list[str], references: np.ndarray | None = None,
                 attributes: list[dict] | None = None, text: np.ndarray | None = None,
                 text_mask: np.ndarray | None = None, source: str = ""):
        self.captions, self.references, self.attributes = captions, references, attributes
        self.text, self.text_mask, self.source = text, text_mask, source


def read_prompts_file(path: str | Path) -> list[str]:
    """Non-empty, stripped lines of a UTF-8 text file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prompts file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise ValueError(f"{path}: no prompts (one per line expected)")
    return prompts


def _prepared_records(cfg: Config, n: int) -> PromptSet:
    batch, captions = held_out_batch(cfg, n)
    key = "text_emb" if cfg.text.kind == "precomputed" else "text_ids"
    return PromptSet(captions, batch["audio"], text=batch[key], text_mask=batch["text_mask"],
                     source="held-out records")


def held_out_prompts(cfg: Config, n: int, prompts_file: str | Path | None = None) -> PromptSet:
    """The first ``n`` evaluation prompts of ``cfg`` (see the module docstring)."""
    if n < 1:
        raise ValueError(f"need at least one prompt, got n={n}")
    if prompts_file is not None:
        return PromptSet(read_prompts_file(prompts_file)[:n], source=str(prompts_file))
    if cfg.data.source == "prepared":
        return _prepared_records(cfg, min(n, held_out_count(cfg)))
    from jaxstage.data.synthetic import prompt_examples

    seed = cfg.sample.seed + 1
    examples = prompt_examples(seed, n, cfg.data.sample_rate, cfg.num_samples, mix_prob=0.0)
    return PromptSet([e["caption"] for e in examples], np.stack([e["audio"] for e in examples]),
                     [e["attributes"] for e in examples], source=f"synthetic held-out, seed {seed}")


def sample_prompts(cfg: Config, n: int) -> PromptSet:
    """The ``n`` prompts of the samples a run writes (see the module docstring)."""
    if cfg.data.source == "prepared":
        return _prepared_records(cfg, n)
    from jaxstage.data.synthetic import prompt_set

    return PromptSet([p for p, _ in prompt_set(cfg.sample.seed, n)], source=f"synthetic, seed {cfg.sample.seed}")


def sr_clips(cfg: Config, count: int) -> dict[str, np.ndarray]:
    """``count`` held-out SR clips (``audio``, ``low``, ``cutoff``, ...; prepared data: at most the tail)."""
    if cfg.data.source == "prepared":
        return sr_held_out_batch(cfg, min(count, held_out_count(cfg)))
    return sr_held_out_batch(cfg, count, offset=cfg.regime.monitor_size)
