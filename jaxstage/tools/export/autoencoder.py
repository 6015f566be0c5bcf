"""Oobleck autoencoder directories: import from stable-audio-tools, export back, load.

A jaxstage autoencoder directory is stable-audio-tools' own layout, so exporting is writing the
same files again: ``model_config.json`` (``model_type: autoencoder``: encoder and decoder
``oobleck``, bottleneck ``vae``) plus ``model.safetensors`` with the ``encoder.*``/``decoder.*``
keys. ``jaxstage`` in the config records the pretransform ``scale`` (latents are divided by it) and
where the weights came from. Import reads a stable-audio-tools autoencoder (``model_config.json`` +
``.safetensors``/``.ckpt``) or the ``pretransform.model.*`` part of a full diffusion checkpoint.

    jaxstage import-autoencoder --src SAT_DIR_OR_FILE --out AE_DIR [--config model_config.json]
    jaxstage export-autoencoder --src AE_DIR --out SAT_DIR
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from jaxstage.config import ConfigError
from jaxstage.models.oobleck import OobleckConfig, OobleckVAE, load_torch_state, matching_torch_state
from jaxstage.tools.export import safetensors_io
from jaxstage.tools.export.checkpoint_files import read_source

# stable-audio-tools 0.0.19's OobleckEncoder/OobleckDecoder defaults (a config key left out means these)
SAT_DEFAULTS = {"channels": 128, "c_mults": [1, 2, 4, 8], "strides": [2, 4, 8, 8], "use_snake": False,
                "antialias_activation": False, "use_nearest_upsample": False, "final_tanh": True}


def oobleck_config(sat: dict[str, Any], source: str) -> tuple[OobleckConfig, str, dict[str, Any]]:
    """(OobleckConfig, the state-dict prefix, the stable-audio-tools autoencoder config) of a
    ``model_type: autoencoder`` config or a diffusion config's autoencoder pretransform. Anything
    jaxstage does not implement is one line naming it."""
    model = sat.get("model") or {}
    if sat.get("model_type") == "autoencoder":
        ae, prefix, scale = model, "", (sat.get("jaxstage") or {}).get("scale", 1.0)
    elif (model.get("pretransform") or {}).get("type") == "autoencoder":
        pretransform = model["pretransform"]
        ae, prefix, scale = pretransform["config"], "pretransform.model.", pretransform.get("scale", 1.0)
    else:
        raise ConfigError(f"{source}: model_type {sat.get('model_type')!r} has no autoencoder (need model_type "
                          f"autoencoder, or a diffusion model with an autoencoder pretransform)")
    parts = {}
    for part in ("encoder", "decoder"):
        spec = ae.get(part) or {}
        if spec.get("type") != "oobleck":
            raise ConfigError(f"{source}: {part} type {spec.get('type')!r}: jaxstage implements oobleck only")
        parts[part] = {**SAT_DEFAULTS, **spec.get("config", {})}
        if parts[part]["antialias_activation"]:
            raise ConfigError(f"{source}: {part}.antialias_activation=true: anti-aliased activations are not "
                              f"implemented in jaxstage")
    if (ae.get("bottleneck") or {}).get("type") != "vae":
        raise ConfigError(f"{source}: bottleneck {(ae.get('bottleneck') or {}).get('type')!r}: jaxstage implements "
                          f"the vae bottleneck only")
    # stable-audio-tools reads soft_clip from the decoder's entry (beside its config) and a nested
    # pretransform from the autoencoder's
    for key, value in (("decoder.soft_clip", (ae.get("decoder") or {}).get("soft_clip")),
                       ("pretransform", ae.get("pretransform"))):
        if value:
            raise ConfigError(f"{source}: autoencoder {key} is not implemented in jaxstage")
    enc, dec = parts["encoder"], parts["decoder"]
    for key in ("channels", "c_mults", "strides", "use_snake"):
        if enc[key] != dec[key]:
            raise ConfigError(f"{source}: encoder.{key}={enc[key]} differs from decoder.{key}={dec[key]}")
    cfg = OobleckConfig(audio_channels=enc.get("in_channels", 2), channels=enc["channels"],
                        c_mults=tuple(enc["c_mults"]), strides=tuple(enc["strides"]),
                        latent_dim=dec.get("latent_dim", 32), use_snake=enc["use_snake"], final_tanh=dec["final_tanh"],
                        use_nearest_upsample=dec["use_nearest_upsample"])
    checks = {"encoder.latent_dim": (enc.get("latent_dim", 32), 2 * cfg.latent_dim),
              "decoder.out_channels": (dec.get("out_channels", 2), cfg.audio_channels),
              "latent_dim": (ae.get("latent_dim", cfg.latent_dim), cfg.latent_dim),
              "downsampling_ratio": (ae.get("downsampling_ratio", cfg.hop), cfg.hop)}
    for key, (value, expected) in checks.items():
        if value != expected:
            raise ConfigError(f"{source}: {key}={value} does not fit the VAE (expected {expected})")
    return cfg, prefix, {"sample_rate": sat.get("sample_rate"), "scale": float(scale), "model": ae}


def _abstract_vae(cfg: OobleckConfig) -> OobleckVAE:
    return nnx.eval_shape(lambda: OobleckVAE(cfg, nnx.Rngs(0)))


def _write(out: Path, cfg: OobleckConfig, info: dict[str, Any], tensors: dict[str, np.ndarray], source: str) -> None:
    config = {"model_type": "autoencoder", "sample_rate": info["sample_rate"], "audio_channels": cfg.audio_channels,
              "model": info["model"], "jaxstage": {"scale": info["scale"], "source": source}}
    safetensors_io.write_checkpoint(out, tensors, metadata={"source": source}, show_progress=False)
    safetensors_io.write_text_atomic(out / "model_config.json", json.dumps(config, indent=2))


def sat_autoencoder_config(cfg: OobleckConfig) -> dict[str, Any]:
    """stable-audio-tools' ``model`` block of an autoencoder config for ``cfg`` (Oobleck + VAE)."""
    shape = {"channels": cfg.channels, "c_mults": list(cfg.c_mults), "strides": list(cfg.strides),
             "use_snake": cfg.use_snake}
    return {"encoder": {"type": "oobleck", "config": {"in_channels": cfg.audio_channels, "latent_dim": 2 * cfg.latent_dim,
                                                      **shape}},
            "decoder": {"type": "oobleck", "config": {"out_channels": cfg.audio_channels, "latent_dim": cfg.latent_dim,
                                                      "final_tanh": cfg.final_tanh,
                                                      "use_nearest_upsample": cfg.use_nearest_upsample, **shape}},
            "bottleneck": {"type": "vae"}, "latent_dim": cfg.latent_dim, "downsampling_ratio": cfg.hop,
            "io_channels": cfg.audio_channels}


def save_autoencoder(vae: OobleckVAE, out: str | Path, sample_rate: int, scale: float = 1.0,
                     source: str = "jaxstage") -> Path:
    """Write ``vae`` (e.g. one jaxstage trained) as a jaxstage autoencoder directory ``out``."""
    from jaxstage.models.oobleck import torch_state

    tensors = {k: np.asarray(v, np.float32) for k, v in torch_state(vae).items()}
    info = {"sample_rate": int(sample_rate), "scale": float(scale), "model": sat_autoencoder_config(vae.cfg)}
    _write(Path(out), vae.cfg, info, tensors, source)
    return Path(out)


def import_autoencoder(src: str | Path, out: str | Path, config_path: str | Path | None = None) -> dict[str, Any]:
    """Write a jaxstage autoencoder directory at ``out`` from a stable-audio-tools checkpoint (or export
    one again: the layouts are the same); returns a report."""
    return autoencoder_from_tensors(*read_source(src, config_path), out)


def autoencoder_from_tensors(tensors: dict[str, np.ndarray], sat: dict[str, Any], weights: Path, config_file: Path,
                             out: str | Path) -> dict[str, Any]:
    """:func:`import_autoencoder` of a checkpoint already read (``checkpoint_files.read_source``'s result)."""
    cfg, prefix, info = oobleck_config(sat, str(config_file))
    weights_of_vae = matching_torch_state(_abstract_vae(cfg), tensors, prefix, source=str(weights))
    ours = {key[len(prefix):]: value for key, value in weights_of_vae.items()}
    out = Path(out)
    _write(out, cfg, info, ours, str(Path(weights).resolve()))
    return {"source": str(weights), "prefix": prefix, "tensors": len(ours),
            "parameters": int(sum(v.size for v in ours.values())), "hop": cfg.hop, "latent_dim": cfg.latent_dim,
            "sample_rate": info["sample_rate"], "scale": info["scale"], "out": str(out)}


export_autoencoder = import_autoencoder  # a jaxstage autoencoder directory is stable-audio-tools' layout


def load_autoencoder(directory: str | Path) -> tuple[OobleckVAE, dict[str, Any]]:
    """The VAE of a jaxstage autoencoder directory (weights loaded) and its info (sample rate, scale,
    ``sha256`` of its weights: what a run records to refuse a different autoencoder)."""
    tensors, sat, weights, config_file = read_source(directory)
    cfg, prefix, info = oobleck_config(sat, str(config_file))
    vae = OobleckVAE(cfg, nnx.Rngs(0))
    load_torch_state(vae, tensors, prefix, source=str(weights))
    return vae, {**info, "config": cfg, "sha256": _weights_hash(Path(weights))}


def autoencoder_sha256(directory: str | Path) -> str:
    """The SHA-256 that ``load_autoencoder`` reports for a jaxstage autoencoder directory, without
    reading the weights into memory."""
    directory = Path(directory)
    for name in (safetensors_io.INDEX_NAME, safetensors_io.SINGLE_NAME):
        if (directory / name).is_file():
            return _weights_hash(directory / name)
    raise FileNotFoundError(f"{directory}: no {safetensors_io.SINGLE_NAME} or {safetensors_io.INDEX_NAME} "
                            f"(not a jaxstage autoencoder directory: `jaxstage import-autoencoder` makes one)")


def _weights_hash(weights: Path) -> str:
    shards = sorted(weights.parent.glob("model-*-of-*.safetensors")) if weights.name.endswith(".json") else []
    return content_hash(*(shards or [weights]))


def content_hash(*paths: str | Path) -> str:
    """SHA-256 of the weights files, in order (read in 4 MiB blocks); a sharded checkpoint hashes its shards."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()
