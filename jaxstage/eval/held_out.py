"""The held-out prompts and clips that run samples and every evaluation use (chosen here only).

Samples (:func:`sample_prompts`): ``prompt_set(sample.seed, n)``, or the last ``n`` prepared records.
Evaluation (:func:`held_out_prompts`: periodic ``eval_*``, the attribute check, ``jaxstage eval``,
bench/): ``prompt_examples(sample.seed + 1, n)`` with rendered references, the prepared held-out
tail, or a prompts file. SR (:func:`sr_clips`): held-out clips after the monitor's (prepared: the tail).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jaxstage.config import Config
from jaxstage.data.pipeline import held_out_batch, held_out_count, sr_held_out_batch
from jaxstage.data.synthetic import prompt_examples, prompt_set


@dataclasses.dataclass
class PromptSet:
    """Captions, optional references [n, N], attribute dicts, encoded text condition (prepared data),
    and where the prompts come from."""
    captions: list[str]
    references: np.ndarray | None = None
    attributes: list[dict] | None = None
    text: np.ndarray | None = None
    text_mask: np.ndarray | None = None
    source: str = ""
    numbers: dict[str, np.ndarray] | None = None  # held-out records' number-conditioner inputs (id -> [n])


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
    numbers = {cid: batch[cid] for cid, _, _ in cfg.conditioning.numbers} or None
    if cfg.text.kind == "t5":  # captions are encoded by the in-process T5 when generating
        return PromptSet(captions, batch.get("audio"), source="held-out records", numbers=numbers)
    return PromptSet(captions, batch.get("audio"), text=batch[key], text_mask=batch["text_mask"],
                     source="held-out records", numbers=numbers)


def held_out_prompts(cfg: Config, n: int, prompts_file: str | Path | None = None) -> PromptSet:
    """The first ``n`` evaluation prompts of ``cfg`` (see the module docstring)."""
    if n < 1:
        raise ValueError(f"need at least one prompt, got n={n}")
    if prompts_file is not None:
        return PromptSet(read_prompts_file(prompts_file)[:n], source=str(prompts_file))
    if cfg.data.source == "prepared":
        return _prepared_records(cfg, min(n, held_out_count(cfg)))
    seed = cfg.sample.seed + 1
    examples = prompt_examples(seed, n, cfg.data.sample_rate, cfg.num_samples, mix_prob=0.0)
    return PromptSet([e["caption"] for e in examples], np.stack([e["audio"] for e in examples]),
                     [e["attributes"] for e in examples], source=f"synthetic held-out, seed {seed}")


def sample_prompts(cfg: Config, n: int) -> PromptSet:
    """The ``n`` prompts of the samples a run writes (see the module docstring)."""
    if cfg.data.source == "prepared":
        return _prepared_records(cfg, n)
    return PromptSet([p for p, _ in prompt_set(cfg.sample.seed, n)], source=f"synthetic, seed {cfg.sample.seed}")


def sr_clips(cfg: Config, count: int, skip: int = 0) -> dict[str, np.ndarray]:
    """``count`` held-out SR clips (``audio``, ``low``, ``cutoff``, ...; prepared data: at most the tail),
    after the first ``skip`` of them (a disjoint second set: ``skip=count``; synthetic data only)."""
    if cfg.data.source == "prepared":
        if skip:
            raise ValueError(f"{cfg.data.path}: a second held-out SR set (skip={skip}) needs synthetic data")
        return sr_held_out_batch(cfg, min(count, held_out_count(cfg)))
    return sr_held_out_batch(cfg, count, offset=cfg.regime.monitor_size + skip)
