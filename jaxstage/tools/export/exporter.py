"""`jaxstage export`: a run's DiT as a stable-audio-tools checkpoint (model.safetensors + model_config.json).

The checkpoint is restored onto the run's mesh (any sharding), gathered to the host, mapped through
`key_map` and written by process 0. What is exported: the diffusion transformer (parameters and its
two buffer kinds, rotary `inv_freq` and LayerNorm `beta`); for a T5-conditioned run on an Oobleck
latent codec (Stable Audio Open's layout, e.g. an imported SAO model) the whole model: also the number
conditioners (`conditioner.conditioners.*`), the pretransform (`pretransform.model.*`, the codec's
autoencoder) and `model.conditioning` / `model.pretransform` in the config. What is not: jaxstage's
learned text encoder, the SR cutoff embedding, the REPA projector, codec normalization statistics
(they have no stable-audio-tools module; a whole model needs the identity, as an imported one has);
`model_config.json` keeps the full jaxstage config under "jaxstage".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
from jax.sharding import Mesh

from jaxstage.config import ConfigError
from jaxstage.inference.load import load_run
from jaxstage.run.workdir import read_run_config
from jaxstage.tools.export import key_map, safetensors_io
from jaxstage.tools.export.checkpoint_files import read_source
from jaxstage.tools.export.sat_config import check_exportable, dit_dims, to_sat_config

PRETRANSFORM_PREFIX = "pretransform.model."
DTYPES = {"fp32": np.dtype(np.float32), "bf16": np.dtype(ml_dtypes.bfloat16), "fp16": np.dtype(np.float16)}
SOURCE_BUFFERS = "sat_buffers.safetensors"  # written by `jaxstage import`: the source's buffers verbatim
BUFFER_RTOL = 1e-6  # a source buffer must equal jaxstage's own value to this relative tolerance


@dataclass
class ExportResult:
    files: list[Path]
    step: int
    num_tensors: int
    num_bytes: int


def gather_to_host(tree):
    """Numpy copy of a (possibly sharded, possibly multi-process) pytree of jax arrays."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
    return jax.tree.map(np.asarray, jax.device_get(tree))


def source_buffers(workdir: Path, buffers: dict) -> dict:
    """The DiT buffers to export: jaxstage's, or (imported runs) the source checkpoint's own bits.

    Buffers are constants jaxstage recomputes (rotary frequencies can differ from torch's by one ulp);
    an imported run keeps the source's values in `sat_buffers.safetensors` so import -> export is
    bit for bit. Each stored value must match jaxstage's to BUFFER_RTOL, else it is ignored loudly.
    """
    path = workdir / SOURCE_BUFFERS
    if not path.is_file():
        return buffers
    stored = safetensors_io.read_file(path)
    out = {}
    for p, value in key_map.flatten(buffers).items():
        key = key_map.torch_key(p)
        candidate = stored.get(key)
        if candidate is None or candidate.shape != value.shape or not np.allclose(
                candidate, value, rtol=BUFFER_RTOL, atol=0):
            raise ConfigError(f"{path}: buffer {key} missing or different from jaxstage's value; delete the file "
                              f"to export jaxstage's own buffers")
        out[p] = candidate.astype(value.dtype)
    return key_map.unflatten(out, buffers)


def whole_model(cfg) -> bool:
    """Whether a run exports as a whole stable-audio-tools model (T5-conditioned, on an Oobleck latent
    codec: Stable Audio Open's layout) rather than as its DiT alone."""
    return cfg.codec.kind == "oobleck" and cfg.text.kind in ("t5", "precomputed")


def _whole_model_parts(cfg, exp, state, sat_config: dict, ema: bool) -> tuple[dict[str, np.ndarray], dict]:
    """The number conditioners' and the pretransform's tensors, and the config with ``model.conditioning``
    and ``model.pretransform``. The codec statistics must be the identity (stable-audio-tools feeds the
    DiT raw latents): an imported model's are."""
    from jaxstage.tools.export.sat_conditioning import conditioning_block, numbers_to_torch

    stats = gather_to_host(state.codec_stats)
    if not (np.all(stats.mean == 0) and np.all(stats.std == 1)):
        raise ConfigError("codec statistics are not the identity (mean 0, std 1): stable-audio-tools feeds its DiT "
                          "raw latents, so this run's normalization has no place in its checkpoint")
    tensors: dict[str, np.ndarray] = {}
    params = state.ema_params if ema else state.params
    if "numbers" in params:
        tensors.update(numbers_to_torch(gather_to_host(params["numbers"])))
    ae_tensors, ae_config, _, _ = read_source(cfg.codec.autoencoder)  # an autoencoder dir is SAT's layout
    tensors.update({PRETRANSFORM_PREFIX + k: v for k, v in ae_tensors.items()})
    text_length = exp.example_spec["text_emb"][0][0] if "text_emb" in exp.example_spec else cfg.data.text_max_length
    conditioning, routing = conditioning_block(cfg, exp.text_dim, text_length)
    model = sat_config["model"]
    model["conditioning"] = conditioning
    scale = float((ae_config.get("jaxstage") or {}).get("scale", 1.0))
    model["pretransform"] = {"type": "autoencoder", "config": ae_config["model"],
                             **({"scale": scale} if scale != 1.0 else {})}
    diffusion = model["diffusion"]
    for key in ("cross_attention_cond_ids", "global_cond_ids", "prepend_cond_ids"):
        diffusion.pop(key, None)
    diffusion.update(routing)
    sat_config["audio_channels"] = int(ae_config.get("audio_channels", 1))
    return tensors, sat_config


def export_run(workdir: str | Path, out: str | Path, *, step: int | None = None, ema: bool = False,
               dtype: str = "fp32", max_shard_bytes: int = 5 * 2**30, mesh: Mesh | None = None,
               show_progress: bool = True) -> ExportResult:
    """Export ``workdir``'s checkpoint (newest, or ``step``) into ``out``.

    ``dtype`` casts the parameters (buffers stay float32); ``mesh`` overrides the run's mesh for the
    restore (e.g. one device). Raises ConfigError for models stable-audio-tools cannot represent
    (EDM objective, timestep features other than 256), before any checkpoint is read.
    """
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: choose from {', '.join(DTYPES)}")
    workdir, cfg = read_run_config(workdir)
    check_exportable(cfg)
    exp, state = load_run(cfg, workdir, step=step, mesh=mesh)
    params = gather_to_host((state.ema_params if ema else state.params)["dit"])
    buffers = source_buffers(workdir, gather_to_host(exp.buffers["dit"]))
    tensors = key_map.to_torch_state(params, buffers)
    buffer_keys = {key_map.torch_key(p) for p in key_map.flatten(buffers)}
    tensors = {k: v if k in buffer_keys else v.astype(DTYPES[dtype]) for k, v in tensors.items()}
    sat_config = to_sat_config(cfg, dit_dims(params))
    if whole_model(cfg):  # + the conditioners and the pretransform: stable-audio-tools' whole model
        extra, sat_config = _whole_model_parts(cfg, exp, state, sat_config, ema)
        tensors.update({k: v.astype(DTYPES[dtype]) for k, v in extra.items()})
    result_step = int(state.step)
    files: list[Path] = []
    if jax.process_index() == 0:
        metadata = {"format": "pt", "producer": "jaxstage", "jaxstage_step": str(result_step),
                    "weights": "ema" if ema else "params", "dtype": dtype}
        files = safetensors_io.write_checkpoint(out, tensors, metadata=metadata, max_shard_bytes=max_shard_bytes,
                                                show_progress=show_progress)
        config_path = Path(out) / "model_config.json"
        safetensors_io.write_text_atomic(config_path, json.dumps(sat_config, indent=2))
        files.append(config_path)
    return ExportResult(files=files, step=result_step, num_tensors=len(tensors),
                        num_bytes=sum(a.nbytes for a in tensors.values()))
