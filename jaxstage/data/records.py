"""The record format of a prepared dataset: one example as bytes, and the `dataset.json` beside it.

A prepared directory (written by `jaxstage prepare`) holds

    dataset.json          counts, shapes, dtypes, encoders used, shards, skipped files with reasons
    shard-00000.array_record ...   ArrayRecord files; each record is `encode_record(example)`

An example is a flat dict of numpy arrays and strings. The keys written by `prepare`:

    audio        float32 [num_samples]        mono, at dataset.json's sample_rate, cropped or padded
                                              ([record_samples] with `prepare --max-seconds`: training
                                              draws a num_samples crop per epoch)
    audio_mask   bool    [num_samples]        True where `audio` holds real signal (False: padding)
    seconds_start float32 []                  where the stored audio starts in its file (0)
    seconds_total float32 []                  the whole file's duration
    text_emb     float32 [text_len, text_dim] text-encoder hidden states (absent without a text encoder)
    text_mask    bool    [text_len]           True for real tokens
    ssl          float32 [ssl_frames, ssl_dim] SSL targets, chosen layers averaged (absent without one)
    caption      str
    id           str                          stable key of the source item (resume, dedup)

Serialization is an uncompressed `.npz` in memory (`numpy.savez`): self-describing, no pickle
(strings are stored as 0-d unicode arrays), readable without jaxstage.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

FORMAT_VERSION = 1
DATASET_JSON = "dataset.json"


def encode_record(example: Mapping[str, Any]) -> bytes:
    """Example dict (arrays and str) -> bytes."""
    arrays = {key: np.asarray(value) for key, value in example.items()}  # a str becomes a 0-d unicode array
    for key, array in arrays.items():
        if array.dtype == object:
            raise TypeError(f"record key {key!r}: object arrays are not storable")
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def decode_record(data: bytes) -> dict[str, Any]:
    """bytes -> example dict; 0-d string arrays come back as str."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {key: str(value) if value.dtype.kind == "U" and value.ndim == 0 else value
                for key, value in npz.items()}


def read_dataset_json(directory: str | Path) -> dict[str, Any]:
    """Load `dataset.json` of a prepared directory; one-line errors name the file."""
    path = Path(directory) / DATASET_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no dataset.json (run `jaxstage prepare` first)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format version {meta.get('version')!r}, expected {FORMAT_VERSION}")
    return meta
