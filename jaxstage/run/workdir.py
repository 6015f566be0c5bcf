"""The run directory: its config check on resume, and the record of which trainer made it.

``run.json`` names the run kind: the command of the trainer whose state the checkpoints hold
(``train``, ``posttrain``, ...). Loading a run for sampling, evaluation or export dispatches on it
(``jaxstage.inference.load``); a trainer refuses a directory made by another. Directories from
before the record existed: ``posttrain.json`` marks an ARC run, otherwise a pre-training run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax

from jaxstage import config as config_lib
from jaxstage.config import Config, ConfigError

RUN_RECORD = "run.json"
ARC_SOURCE_RECORD = "posttrain.json"  # written by ARC: where its generator came from

# Keys that may differ when an existing run directory is resumed: cadence, length, sampling, the mesh
# (checkpoints restore onto any mesh) and how the step computes (remat, attention kernel, compute dtype:
# the state is float32 whatever precision.compute is).
RESUMABLE_CHANGES = {
    "mesh.data", "mesh.fsdp", "mesh.tensor", "mesh.rules", "model.remat", "model.attention", "precision.compute",
    "train.steps", "train.log_every", "train.ckpt_every", "train.progress_bar", "train.async_checkpoint",
    "train.compilation_cache", "train.init_from", "train.resume_step", "train.max_skipped_steps", "arc.init_from",
    "sample.every", "sample.num", "sample.final_eval_prompts", "sample.sampler",
    "sample.steps", "sample.cfg_scale", "sample.cfg_interval", "sample.seed", "sample.peak_level", "sample.raw_levels",
    "sample.guidance", "sample.cfg_rescale", "sample.apg_eta", "sample.apg_norm_threshold",
    "eval.every", "eval.num",
}


def enable_compilation_cache(path: str) -> None:
    """Persistent XLA compilation cache (a repeat compile is ~5× faster)."""
    if path:
        jax.config.update("jax_compilation_cache_dir", str(Path(path).expanduser()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def run_kind(workdir: str | Path) -> str | None:
    """The kind of run in ``workdir`` (``train``, ``posttrain``, ...), or None where nothing has run yet."""
    workdir = Path(workdir)
    record = workdir / RUN_RECORD
    if record.is_file():
        try:
            return json.loads(record.read_text())["kind"]
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{record}: not a run record ({type(err).__name__}: {err})") from None
    if (workdir / ARC_SOURCE_RECORD).is_file():
        return "posttrain"
    if (workdir / "config.json").is_file():
        return "train"
    return None


def read_run_config(workdir: str | Path, name: str = "") -> tuple[Path, Config]:
    """(run directory, its resolved config); a folder without config.json is one line naming ``name``
    (the flag or key that gave it) or the folder."""
    path = Path(workdir).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{name or path}: no config.json (not a jaxstage run directory)")
    return path, config_lib.load_json(path / "config.json")


def prepare_workdir(cfg: Config, workdir: Path, kind: str = "train") -> None:
    """Create the run directory for a ``kind`` run; on resume, refuse another trainer's directory
    and a config that changes more than cadence/length. codec.kind=oobleck: ``cfg`` first records the
    SHA-256 of its autoencoder, so a resume with different weights at the same path is refused."""
    from jaxstage.inference.model import pin_autoencoder

    pin_autoencoder(cfg)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "samples").mkdir(exist_ok=True)
    existing = run_kind(workdir)
    if existing is not None and existing != kind and (workdir / "checkpoints").is_dir():
        raise ConfigError(f"{workdir} holds checkpoints of a `jaxstage {existing}` run, not a `jaxstage {kind}` "
                          f"run; use a new --workdir")
    saved = workdir / "config.json"
    if saved.exists():
        old = _flatten(config_lib.to_dict(config_lib.load_json(saved)))
        new = _flatten(config_lib.to_dict(cfg))
        changed = sorted(k for k in new if old.get(k) != new[k] and k not in RESUMABLE_CHANGES)
        if changed:
            key = changed[0]
            raise ConfigError(f"{saved}: run directory was made with {key}={old.get(key)!r}, now {new[key]!r} "
                              f"({len(changed)} key(s) differ); use a new --workdir")
    if jax.process_index() == 0:
        config_lib.save_json(cfg, saved)
        (workdir / RUN_RECORD).write_text(json.dumps({"kind": kind}) + "\n")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = json.dumps(v)
    return out
