"""Stable Audio Open's conditioning in stable-audio-tools 0.0.19's layout, both ways.

- ``model.conditioning`` (``cond_dim`` and ``configs``: a ``t5`` conditioner of id ``prompt`` and
  ``number`` conditioners) plus the DiT's routing ids -> :class:`SATConditioning` -> jaxstage's
  ``text.*`` / ``conditioning.*`` fields; and back (:func:`conditioning_block`).
- Number-conditioner weights: ``conditioner.conditioners.<id>.embedder.embedding.0.weights`` (the
  learned frequencies) and ``.embedding.1.{weight,bias}`` (the Linear, [out, in] in torch) <-> the
  Denoiser's ``numbers.<id>.{weights, linear.kernel, linear.bias}`` (:func:`numbers_from_torch`,
  :func:`numbers_to_torch`). The T5 weights are not in a stable-audio-tools checkpoint (its T5
  conditioner keeps the model out of the state dict); jaxstage reads them from a local T5 directory.

Anything jaxstage cannot honour is one ConfigError naming the dotted key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxstage.config import Config, ConfigError

CONDITIONER_PREFIX = "conditioner.conditioners."
# stable-audio-tools 0.0.19's T5Conditioner.T5_MODEL_DIMS (the names its config accepts)
T5_MODEL_DIMS = {"t5-small": 512, "t5-base": 768, "t5-large": 1024, "t5-3b": 1024, "t5-11b": 1024,
                 "google/t5-v1_1-xl": 2048, "google/t5-v1_1-xxl": 4096, "google/flan-t5-small": 512,
                 "google/flan-t5-base": 768, "google/flan-t5-large": 1024, "google/flan-t5-3b": 1024,
                 "google/flan-t5-11b": 1024, "google/flan-t5-xl": 2048, "google/flan-t5-xxl": 4096}
T5_DEFAULTS = {"t5_model_name": "t5-base", "max_length": 128, "enable_grad": False, "project_out": False}
NUMBER_DEFAULTS = {"min_val": 0.0, "max_val": 1.0}
ROUTING_KEYS = {"cross_attention_cond_ids": "cross_attention_ids", "global_cond_ids": "global_ids",
                "prepend_cond_ids": "prepend_ids"}


@dataclass(frozen=True)
class SATConditioning:
    """What a stable-audio-tools conditioning config says, in jaxstage's terms."""

    cond_dim: int
    t5_name: str
    t5_max_length: int
    numbers: tuple[tuple[str, float, float], ...]
    cross_attention_ids: tuple[str, ...]
    global_ids: tuple[str, ...]
    prepend_ids: tuple[str, ...]


def parse_conditioning(sat: dict[str, Any]) -> SATConditioning | None:
    """The conditioning of a diffusion_cond config, or None when it has no ``model.conditioning``."""
    model = sat.get("model") or {}
    block = model.get("conditioning")
    if not block:
        return None
    where = "model.conditioning"
    for key in block:
        if key not in ("configs", "cond_dim"):
            raise ConfigError(f"{where}.{key}: not supported by jaxstage (configs and cond_dim only)")
    cond_dim = block.get("cond_dim")
    if isinstance(cond_dim, bool) or not isinstance(cond_dim, int) or cond_dim <= 0:
        raise ConfigError(f"{where}.cond_dim={cond_dim!r} must be a positive integer")
    t5, numbers = None, []
    for i, entry in enumerate(block.get("configs") or []):
        here = f"{where}.configs[{i}]"
        cid, kind, conf = entry.get("id"), entry.get("type"), dict(entry.get("config") or {})
        if kind == "t5":
            t5 = _t5(cid, conf, cond_dim, here, t5)
        elif kind == "number":
            numbers.append(_number(cid, conf, here))
        else:
            raise ConfigError(f"{here}.type={kind!r}: jaxstage implements the t5 and number conditioners")
    if t5 is None:
        raise ConfigError(f"{where}.configs: no t5 conditioner (jaxstage's text conditioner 'prompt' is required)")
    diffusion = model.get("diffusion") or {}
    if diffusion.get("input_concat_ids"):
        raise ConfigError(f"model.diffusion.input_concat_ids={diffusion['input_concat_ids']}: not supported "
                          f"(jaxstage's input concatenation is super-resolution's low band)")
    routing = {ours: tuple(diffusion.get(theirs) or ()) for theirs, ours in ROUTING_KEYS.items()}
    return SATConditioning(cond_dim=cond_dim, t5_name=t5[0], t5_max_length=t5[1], numbers=tuple(numbers), **routing)


def _t5(cid, conf: dict, cond_dim: int, here: str, previous) -> tuple[str, int]:
    if previous is not None:
        raise ConfigError(f"{here}: a second t5 conditioner (jaxstage has one text conditioner)")
    if cid != "prompt":
        raise ConfigError(f"{here}.id={cid!r}: jaxstage's text conditioner has id 'prompt'")
    unknown = sorted(set(conf) - set(T5_DEFAULTS))
    if unknown:
        raise ConfigError(f"{here}.config.{unknown[0]}: not supported by jaxstage")
    conf = {**T5_DEFAULTS, **conf}
    for key in ("enable_grad", "project_out"):
        if conf[key]:
            raise ConfigError(f"{here}.config.{key}=true: jaxstage runs a frozen T5 without an output projection")
    name = conf["t5_model_name"]
    if T5_MODEL_DIMS.get(name) != cond_dim:
        raise ConfigError(f"{here}.config.t5_model_name={name!r} ({T5_MODEL_DIMS.get(name, 'unknown')} wide) must "
                          f"match model.conditioning.cond_dim={cond_dim} (stable-audio-tools would add a projection)")
    return name, int(conf["max_length"])


def _number(cid, conf: dict, here: str) -> tuple[str, float, float]:
    unknown = sorted(set(conf) - set(NUMBER_DEFAULTS))
    if unknown:
        raise ConfigError(f"{here}.config.{unknown[0]}: not supported by jaxstage")
    if not isinstance(cid, str) or not cid.isidentifier() or cid == "prompt":
        raise ConfigError(f"{here}.id={cid!r}: a number conditioner's id must be an identifier other than 'prompt'")
    conf = {**NUMBER_DEFAULTS, **conf}
    return cid, float(conf["min_val"]), float(conf["max_val"])


def apply_conditioning(cfg: Config, cond: SATConditioning, t5_dir: str) -> None:
    """Set ``cfg``'s text conditioner (a frozen T5 from ``t5_dir``) and ``conditioning.*`` from ``cond``;
    cross-attention attends to padded tokens as stable-audio-tools 0.0.19 does."""
    cfg.text.kind = "t5"
    cfg.text.encoder_dir = t5_dir
    cfg.data.text_max_length = cond.t5_max_length
    cfg.conditioning.numbers = cond.numbers
    cfg.conditioning.cross_attention_ids = cond.cross_attention_ids
    cfg.conditioning.global_ids = cond.global_ids
    cfg.conditioning.prepend_ids = cond.prepend_ids
    cfg.model.cross_attn_mask = False


def conditioning_block(cfg: Config, cond_dim: int, max_length: int) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """(``model.conditioning``, the routing id lists) of a run for stable-audio-tools: a t5 conditioner
    (its ``t5_model_name`` the stable-audio-tools name of the run's T5 width) and the numbers."""
    names = [name for name, dim in T5_MODEL_DIMS.items() if dim == cond_dim]
    if not names:
        raise ConfigError(f"text conditioner width {cond_dim}: stable-audio-tools has no T5 of that width "
                          f"({sorted(set(T5_MODEL_DIMS.values()))})")
    configs = [{"id": "prompt", "type": "t5",
                "config": {"t5_model_name": names[0], "max_length": int(max_length)}}]
    configs += [{"id": cid, "type": "number", "config": {"min_val": low, "max_val": high}}
                for cid, low, high in cfg.conditioning.numbers]
    c = cfg.conditioning
    routing = {theirs: list(getattr(c, ours)) for theirs, ours in ROUTING_KEYS.items() if getattr(c, ours)}
    return {"configs": configs, "cond_dim": cond_dim}, routing


def _keys(cid: str) -> dict[tuple[str, ...], str]:
    base = f"{CONDITIONER_PREFIX}{cid}.embedder.embedding."
    return {("weights",): base + "0.weights", ("linear", "kernel"): base + "1.weight",
            ("linear", "bias"): base + "1.bias"}


def numbers_to_torch(numbers: dict[str, Any]) -> dict[str, np.ndarray]:
    """The Denoiser's ``numbers`` params -> {stable-audio-tools key: array} (Linear kernels transposed)."""
    out = {}
    for cid, params in numbers.items():
        for path, key in _keys(cid).items():
            value = np.asarray(params[path[0]] if len(path) == 1 else params[path[0]][path[1]])
            out[key] = np.ascontiguousarray(value.T if path[-1] == "kernel" else value)
    return out


def numbers_from_torch(tensors: dict[str, np.ndarray], like: dict[str, Any], source: str) -> dict[str, Any]:
    """{key: array} -> the Denoiser's ``numbers`` params shaped like ``like`` (its abstract tree); a
    missing or mis-shaped key is one error naming it."""
    from jaxstage.tools.export.key_map import KeyMapError

    out: dict[str, Any] = {}
    for cid, params in like.items():
        entry: dict[str, Any] = {"linear": {}}
        for path, key in _keys(cid).items():
            if key not in tensors:
                raise KeyMapError(f"{source}: missing key {key} (number conditioner {cid!r})")
            value = np.asarray(tensors[key])
            value = value.T if path[-1] == "kernel" else value
            want = params[path[0]] if len(path) == 1 else params[path[0]][path[1]]
            if tuple(value.shape) != tuple(want.shape):
                raise KeyMapError(f"{source}: {key} has shape {list(tensors[key].shape)}, the config expects "
                                  f"{list(want.shape[::-1] if path[-1] == 'kernel' else want.shape)}")
            value = np.ascontiguousarray(value).astype(want.dtype)
            if len(path) == 1:
                entry[path[0]] = value
            else:
                entry[path[0]][path[1]] = value
        out[cid] = entry
    return out


def number_keys(ids: list[str]) -> set[str]:
    """Every stable-audio-tools key of the number conditioners ``ids``."""
    return {key for cid in ids for key in _keys(cid).values()}
