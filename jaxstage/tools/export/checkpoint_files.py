"""Reading a stable-audio-tools checkpoint from disk: its ``model_config.json`` and its weights
(``model.safetensors``, sharded safetensors with an index, or a torch ``.ckpt``/``.pt`` state dict)
as numpy arrays by state-dict key. Shared by the DiT importer and the autoencoder directories."""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np

from jaxstage.config import ConfigError
from jaxstage.tools.export import safetensors_io

TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def _torch_state(path: Path) -> dict[str, np.ndarray]:
    """A torch state dict file (`{"state_dict": {...}}` as stable-audio-tools saves, or a bare dict) as numpy."""
    try:
        import torch
    except ImportError as err:
        raise ImportError(f"{path}: reading a torch checkpoint needs torch (pip install -e '.[torch]'): {err}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, truncated files, non-tensor objects
        raise ValueError(f"{path}: not a readable torch state dict ({type(err).__name__}: {err})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a dict of tensors (or {{'state_dict': ...}}), got {type(obj).__name__}")
    out = {}
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            continue
        tensor = tensor.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            out[key] = tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            out[key] = tensor.numpy()
    return out


def read_source(src: str | Path, config_path: str | Path | None = None) -> tuple[dict, dict, Path, Path]:
    """(tensors, stable-audio-tools config, weights path, config path) of ``src``: a directory with
    model_config.json and weights, or a weights file (config beside it or given)."""
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{src}: not found")
    if src.is_dir():
        candidates = [src / safetensors_io.INDEX_NAME, src / safetensors_io.SINGLE_NAME,
                      *(sorted(p for p in src.iterdir() if p.suffix in TORCH_SUFFIXES))]
        weights = next((p for p in candidates if p.is_file()), None)
        if weights is None:
            raise FileNotFoundError(f"{src}: no {safetensors_io.SINGLE_NAME}, {safetensors_io.INDEX_NAME} or "
                                    f"{'/'.join(TORCH_SUFFIXES)} checkpoint")
        folder = src
    else:
        weights, folder = src, src.parent
    config_file = Path(config_path) if config_path else folder / "model_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: no stable-audio-tools model config (give --config FILE)")
    try:
        sat = json.loads(config_file.read_text())
    except ValueError as err:
        raise ConfigError(f"{config_file}: not valid JSON ({err})") from None
    if weights.suffix in TORCH_SUFFIXES:
        tensors = _torch_state(weights)
    else:
        tensors = safetensors_io.read_checkpoint(weights)
    return tensors, sat, weights, config_file
