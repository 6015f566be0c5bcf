"""Random access over a prepared directory (`jaxstage prepare` output, format in `records.py`).

`PreparedSource(directory, cfg)` reads `dataset.json`, checks it against the config (sample rate,
clip length, the features that `text.kind` / `guidance.ssl` need, shard counts) and serves decoded
example dicts from all ArrayRecord shards by global index. It is a grain random-access source:
`__len__`, `__getitem__`, picklable (the ArrayRecord readers open lazily in each worker).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grain.sources import ArrayRecordDataSource

from jaxstage.config import Config, ConfigError
from jaxstage.data.records import DATASET_JSON, decode_record, read_dataset_json


@dataclass(frozen=True)
class PreparedSpec:
    """What training needs to know of a prepared directory, read once from dataset.json."""

    directory: Path
    count: int
    sample_rate: int
    num_samples: int
    shards: tuple[tuple[str, int], ...]  # (file name, record count)
    features: dict[str, tuple[tuple[int, ...], str]]  # key -> (shape, dtype)
    autoencoder: dict[str, Any] | None = None  # prepare --autoencoder: what encoded the latents (sha256, ...)
    # prepare --max-seconds: samples stored per record (> num_samples: training draws a random crop)
    record_samples: int = 0

    @property
    def cropped(self) -> bool:
        """Whether records are longer than a training clip (training crops them at random offsets)."""
        return self.record_samples > self.num_samples

    def shape(self, key: str) -> tuple[int, ...]:
        """Per-example shape of ``key``; ConfigError naming dataset.json if it was not prepared."""
        if key not in self.features:
            raise ConfigError(f"{self.directory / DATASET_JSON}: features has no {key!r} "
                              f"(prepared with: {', '.join(sorted(self.features)) or 'none'})")
        return self.features[key][0]


def _field(meta: dict[str, Any], key: str, path: Path) -> Any:
    if key not in meta:
        raise ConfigError(f"{path}: missing key {key!r}")
    return meta[key]


def read_spec(directory: str | Path) -> PreparedSpec:
    """Parse dataset.json into a PreparedSpec; one-line errors name the file and the key."""
    directory = Path(directory)
    path = directory / DATASET_JSON
    meta = read_dataset_json(directory)
    try:
        shards = tuple((str(s["file"]), int(s["count"])) for s in _field(meta, "shards", path))
        features = {str(k): (tuple(int(n) for n in v["shape"]), str(v["dtype"]))
                    for k, v in _field(meta, "features", path).items()}
        spec = PreparedSpec(directory=directory, count=int(_field(meta, "count", path)),
                            sample_rate=int(_field(meta, "sample_rate", path)),
                            num_samples=int(_field(meta, "num_samples", path)), shards=shards, features=features,
                            autoencoder=(meta.get("encoders") or {}).get("autoencoder"),
                            record_samples=int(meta.get("record_samples", 0)))
    except (TypeError, KeyError, ValueError, AttributeError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{path}: malformed shards/features entry ({type(err).__name__}: {err})") from None
    if sum(n for _, n in shards) != spec.count:
        raise ConfigError(f"{path}: count={spec.count} but the shards hold {sum(n for _, n in shards)} records")
    if spec.count < 1:
        raise ConfigError(f"{path}: count={spec.count}, the dataset is empty")
    for name, _ in shards:
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{path}: shard {name!r} does not exist in {directory}")
    return spec


def check_spec(spec: PreparedSpec, cfg: Config) -> None:
    """Raise ConfigError (naming dataset.json and the key) where the data cannot serve ``cfg``."""
    path = spec.directory / DATASET_JSON
    if spec.sample_rate != cfg.data.sample_rate:
        raise ConfigError(f"{path}: sample_rate={spec.sample_rate} but data.sample_rate={cfg.data.sample_rate}")
    if spec.num_samples != cfg.num_samples:
        raise ConfigError(f"{path}: num_samples={spec.num_samples} but data.sample_rate * data.clip_seconds="
                          f"{cfg.num_samples}")
    stored = max(spec.record_samples, spec.num_samples)
    if spec.shape("audio") != (stored,):
        raise ConfigError(f"{path}: features.audio.shape={list(spec.shape('audio'))}, expected [{stored}]")
    if cfg.text.kind == "precomputed":
        emb, mask = spec.shape("text_emb"), spec.shape("text_mask")
        if len(emb) != 2 or mask != emb[:1]:
            raise ConfigError(f"{path}: features.text_emb.shape={list(emb)} / text_mask.shape={list(mask)} "
                              f"must be [L, D] / [L]")
    if cfg.guidance.ssl == "precomputed" and len(spec.shape("ssl")) != 2:
        raise ConfigError(f"{path}: features.ssl.shape={list(spec.shape('ssl'))} must be [frames, dim]")
    if cfg.data.latents:
        _check_latents(spec, cfg, path)
    held_out = cfg.regime.monitor_size
    if spec.count <= held_out:
        raise ConfigError(f"{path}: count={spec.count} leaves no training records after holding out "
                          f"regime.monitor_size={held_out}")


def _check_latents(spec: PreparedSpec, cfg: Config, path: Path) -> None:
    """data.latents: the records hold latents of exactly ``codec.autoencoder`` (same SHA-256)."""
    from jaxstage.tools.export.autoencoder import autoencoder_sha256

    shape = spec.shape("latents")
    if len(shape) != 2:
        raise ConfigError(f"{path}: features.latents.shape={list(shape)} must be [frames, latent_dim]")
    made_with = (spec.autoencoder or {}).get("sha256")
    if made_with is None:
        raise ConfigError(f"{path}: encoders.autoencoder is missing (not prepared with --autoencoder)")
    expected = cfg.codec.autoencoder_sha256 or autoencoder_sha256(cfg.codec.autoencoder)
    if made_with != expected:
        raise ConfigError(f"{path}: latents were encoded by an autoencoder with SHA-256 {made_with[:16]}..., "
                          f"codec.autoencoder={cfg.codec.autoencoder} has {expected[:16]}...")


class PreparedSource:
    """Decoded examples of every shard of a prepared directory, by global index (shard order)."""

    def __init__(self, directory: str | Path, cfg: Config | None = None):
        self.spec = read_spec(directory)
        if cfg is not None:
            check_spec(self.spec, cfg)
        self._records = ArrayRecordDataSource([str(self.spec.directory / name) for name, _ in self.spec.shards])
        if len(self._records) != self.spec.count:
            raise ConfigError(f"{self.spec.directory / DATASET_JSON}: count={self.spec.count} but the shards "
                              f"hold {len(self._records)} records")

    def __len__(self) -> int:
        return self.spec.count

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -self.spec.count <= index < self.spec.count:
            raise IndexError(f"record {index} out of range for {self.spec.count} records")
        return decode_record(self._records[index % self.spec.count])

    def __repr__(self) -> str:
        return f"PreparedSource({str(self.spec.directory)!r}, count={self.spec.count})"
