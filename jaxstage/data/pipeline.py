"""grain input pipeline: per-process shards of a fixed global order, host batches of numpy arrays.

Global batch ``k`` is always the set of shuffled examples ``[k·B, (k+1)·B)``; process ``p`` of ``P``
reads only the ones whose position is ``≡ p (mod P)``. The iterator position (grain's JSON state)
is saved in every checkpoint beside the train state.

Prepared data (``data.source=prepared``): the last ``regime.monitor_size`` records of the directory
are held out of training (the regime's monitor batch and the periodic sample prompts read them);
training shuffles the records before them. The batch keys follow the config: ``text_ids`` (hash
tokens of the caption, ``text.kind=learned``) or ``text_emb`` (``text.kind=precomputed``), with
``text_mask``; ``ssl_targets`` only with ``guidance.ssl=precomputed``. ``audio_mask`` is not used.
"""

from __future__ import annotations

from typing import Any, Iterator

import grain
import numpy as np

from jaxstage.config import Config
from jaxstage.data.prepared import PreparedSource, check_spec, read_spec
from jaxstage.data.synthetic import SyntheticT2ASource
from jaxstage.models.text import HashTokenizer

ExampleSpec = dict[str, tuple[tuple[int, ...], np.dtype]]  # batch key -> (per-example shape, dtype)


class TokenizeCaption(grain.transforms.Map):
    """Synthetic example dict -> the arrays the train step consumes (captions become token ids)."""

    def __init__(self, vocab_size: int, max_length: int):
        self.tokenizer = HashTokenizer(vocab_size)
        self.max_length = max_length

    def map(self, element: dict[str, Any]) -> dict[str, np.ndarray]:
        ids, mask = self.tokenizer([element["caption"]], self.max_length)
        return {"audio": element["audio"].astype(np.float32), "text_ids": ids[0], "text_mask": mask[0]}


class PreparedExample(grain.transforms.Map):
    """Decoded prepared record -> the train step's arrays, the keys chosen by the config."""

    def __init__(self, cfg: Config):
        self.precomputed_text = cfg.text.kind == "precomputed"
        self.precomputed_ssl = cfg.guidance.ssl == "precomputed"
        self.tokenize = TokenizeCaption(cfg.text.vocab_size, cfg.data.text_max_length)

    def map(self, element: dict[str, Any]) -> dict[str, np.ndarray]:
        if self.precomputed_text:
            out = {"audio": element["audio"].astype(np.float32),
                   "text_emb": element["text_emb"].astype(np.float32),
                   "text_mask": element["text_mask"].astype(bool)}
        else:
            out = self.tokenize.map(element)
        if self.precomputed_ssl:
            out["ssl_targets"] = element["ssl"].astype(np.float32)
        return out


def make_source(cfg: Config) -> SyntheticT2ASource | PreparedSource:
    """The whole random-access data source named by ``data.source`` (held-out records included)."""
    if cfg.data.source == "prepared":
        return PreparedSource(cfg.data.path, cfg)
    if cfg.data.source != "synthetic":
        raise ValueError(f"data.source={cfg.data.source!r} is not supported")
    return SyntheticT2ASource(
        seed=cfg.data.seed, num_examples=cfg.data.num_examples, sample_rate=cfg.data.sample_rate,
        num_samples=cfg.num_samples, mix_prob=cfg.data.mix_prob,
    )


def held_out_count(cfg: Config) -> int:
    """Records at the end of a prepared directory kept out of training (0 for synthetic data)."""
    return cfg.regime.monitor_size if cfg.data.source == "prepared" else 0


def num_training(cfg: Config, source) -> int:
    """How many leading records of ``source`` training reads."""
    return len(source) - held_out_count(cfg)


def example_transform(cfg: Config) -> grain.transforms.Map:
    """The per-example map from a source element to the train step's arrays."""
    if cfg.data.source == "prepared":
        return PreparedExample(cfg)
    return TokenizeCaption(cfg.text.vocab_size, cfg.data.text_max_length)


def example_spec(cfg: Config) -> ExampleSpec:
    """Per-example shapes and dtypes of the batch keys (prepared: read from dataset.json once)."""
    spec: ExampleSpec = {"audio": ((cfg.num_samples,), np.dtype(np.float32))}
    prepared = None
    if cfg.data.source == "prepared":
        prepared = read_spec(cfg.data.path)
        check_spec(prepared, cfg)
    if cfg.text.kind == "precomputed":
        spec["text_emb"] = (prepared.shape("text_emb"), np.dtype(np.float32))
        spec["text_mask"] = (prepared.shape("text_mask"), np.dtype(bool))
    else:
        spec["text_ids"] = ((cfg.data.text_max_length,), np.dtype(np.int32))
        spec["text_mask"] = ((cfg.data.text_max_length,), np.dtype(bool))
    if cfg.guidance.ssl == "precomputed":
        spec["ssl_targets"] = (prepared.shape("ssl"), np.dtype(np.float32))
    return spec


def held_out_batch(cfg: Config, count: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """The last ``count`` records of a prepared directory as one host batch, and their captions."""
    if cfg.data.source != "prepared":
        raise ValueError(f"held-out records exist only for data.source=prepared, not {cfg.data.source!r}")
    source = make_source(cfg)
    if count > len(source):
        raise ValueError(f"{cfg.data.path}: {count} held-out records requested, the dataset has {len(source)}")
    records = [source[i] for i in range(len(source) - count, len(source))]
    transform = example_transform(cfg)
    examples = [transform.map(r) for r in records]
    batch = {key: np.stack([e[key] for e in examples]) for key in examples[0]}
    return batch, [str(r.get("caption", "")) for r in records]


def make_dataset(cfg: Config, process_index: int, process_count: int) -> grain.IterDataset:
    """This process's infinite stream of local batches (global batch / process_count examples)."""
    if cfg.train.batch_size % process_count:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} is not divisible by {process_count} processes")
    local_batch = cfg.train.batch_size // process_count
    source = make_source(cfg)
    ds = grain.MapDataset.source(source)
    if held_out_count(cfg):
        ds = ds[: num_training(cfg, source)]  # the held-out tail never reaches training
    ds = (
        ds.shuffle(seed=cfg.data.seed)
        .repeat(None)
        .slice(slice(process_index, None, process_count))
        .map(example_transform(cfg))
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
