"""`train.init_from`: start a fresh run from another run's weights (a jaxstage run or an import).

The new run keeps its own optimizer, step 0 and regime; it takes the source's parameters (raw and
EMA) for every top-level part of the denoiser whose structure and shapes match, and the source's
codec statistics when the codec is configured the same way. The DiT must match exactly (an error
names the first differing key); parts present in only one run (e.g. a REPA projector the source
never had) stay freshly initialized and are listed in the log.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxstage.config import Config, ConfigError, get_value
from jaxstage.run.workdir import read_run_config
from jaxstage.tools.export.key_map import flatten

REQUIRED_PARTS = ("dit",)
CODEC_KEYS = ("codec.kind", "codec.n_fft", "codec.hop_length", "codec.compress", "codec.scale", "codec.n_mels",
              "codec.f_min", "codec.f_max", "codec.per_channel_stats", "data.sample_rate",
              "codec.autoencoder_sha256", "codec.latent")


def shapes(tree) -> dict[tuple[str, ...], tuple]:
    return {p: (tuple(np.shape(v)), str(getattr(v, "dtype", ""))) for p, v in flatten(tree).items()}


def merge_params(fresh: dict, source: dict, *, source_name: str) -> tuple[dict, list[str], list[str]]:
    """(params with matching parts taken from ``source``, parts copied, parts kept fresh)."""
    merged, copied, kept = dict(fresh), [], []
    for part, value in fresh.items():
        theirs = source.get(part)
        same = theirs is not None and shapes(theirs) == shapes(value)
        if part in REQUIRED_PARTS and not same:
            raise ConfigError(f"train.init_from={source_name}: its {part} differs from this config's "
                              f"({first_difference(value, theirs)})")
        if same:
            merged[part] = theirs
            copied.append(part)
        else:
            kept.append(part)
    return merged, copied, kept


def first_difference(ours: dict, theirs: dict | None) -> str:
    if theirs is None:
        return "absent in the source"
    a, b = shapes(ours), shapes(theirs)
    for path in sorted(set(a) | set(b)):
        if a.get(path) != b.get(path):
            return f"{'.'.join(path)}: here {a.get(path, 'absent')}, source {b.get(path, 'absent')}"
    return "no difference"


def same_codec(cfg: Config, source: Config) -> bool:
    return all(get_value(cfg, k) == get_value(source, k) for k in CODEC_KEYS)


def source_run(init_from: str, name: str = "train.init_from") -> tuple[Path, Config]:
    """(directory, config) of the run named by ``name`` (a config key or flag); one-line errors otherwise."""
    return read_run_config(init_from, f"{name}={init_from}")
