"""grain input pipeline: per-process shards of a fixed global order, host batches of numpy arrays.

Global batch ``k`` is always the set of shuffled examples ``[k·B, (k+1)·B)``; process ``p`` of ``P``
reads only the ones whose position is ``≡ p (mod P)``. The iterator position (grain's JSON state)
is saved in every checkpoint beside the train state.
"""

from __future__ import annotations

from typing import Any, Iterator

import grain
import numpy as np

from jaxstage.config import Config
from jaxstage.data.synthetic import SyntheticT2ASource
from jaxstage.models.text import HashTokenizer


class TokenizeCaption(grain.transforms.Map):
    """Example dict -> the arrays the train step consumes (captions become token ids)."""

    def __init__(self, vocab_size: int, max_length: int):
        self.tokenizer = HashTokenizer(vocab_size)
        self.max_length = max_length

    def map(self, element: dict[str, Any]) -> dict[str, np.ndarray]:
        ids, mask = self.tokenizer([element["caption"]], self.max_length)
        return {"audio": element["audio"].astype(np.float32), "text_ids": ids[0], "text_mask": mask[0]}


def make_source(cfg: Config) -> SyntheticT2ASource:
    """The random-access data source named by ``data.source``."""
    if cfg.data.source != "synthetic":
        raise ValueError(f"data.source={cfg.data.source!r} is not supported")
    return SyntheticT2ASource(
        seed=cfg.data.seed, num_examples=cfg.data.num_examples, sample_rate=cfg.data.sample_rate,
        num_samples=cfg.num_samples, mix_prob=cfg.data.mix_prob,
    )


def make_dataset(cfg: Config, process_index: int, process_count: int) -> grain.IterDataset:
    """This process's infinite stream of local batches (global batch / process_count examples)."""
    if cfg.train.batch_size % process_count:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} is not divisible by {process_count} processes")
    local_batch = cfg.train.batch_size // process_count
    ds = (
        grain.MapDataset.source(make_source(cfg))
        .shuffle(seed=cfg.data.seed)
        .repeat(None)
        .slice(slice(process_index, None, process_count))
        .map(TokenizeCaption(cfg.text.vocab_size, cfg.data.text_max_length))
        .batch(local_batch, drop_remainder=True)
    )
    options = grain.ReadOptions(num_threads=cfg.data.prefetch_threads, prefetch_buffer_size=cfg.data.prefetch_buffer)
    return ds.to_iter_dataset(options)


class BatchStream:
    """An iterator over local batches whose position can be saved and restored as JSON."""

    def __init__(self, cfg: Config, process_index: int, process_count: int):
        self._iter = iter(make_dataset(cfg, process_index, process_count))

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._iter)

    def get_state(self) -> dict[str, Any]:
        """JSON-serializable position (grain's iterator state)."""
        return self._iter.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from a position saved by :meth:`get_state`."""
        self._iter.set_state(state)
