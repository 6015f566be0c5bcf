"""Convert transformers `Wav2Vec2Model` / `HubertModel` / `WavLMModel` weights to `Wav2Vec2Encoder`.

torch and transformers are optional (`pip install -e ".[torch]"`) and imported inside functions;
`params_from_torch` itself only needs array-likes (torch CPU tensors or numpy arrays).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx

from jaxstage.models.wav2vec2 import Wav2Vec2Encoder, Wav2Vec2EncoderConfig

SUPPORTED_MODEL_TYPES = ("wav2vec2", "hubert", "wavlm")
_RENAME = {"kernel": "weight", "scale": "weight", "embedding": "weight",
           "mean": "running_mean", "var": "running_var"}
_POS_CONV = "encoder.pos_conv_embed.conv.weight"
_ANCHOR = "feature_projection.projection.weight"  # present in every supported state dict


def config_from_transformers(hf_config: Any) -> Wav2Vec2EncoderConfig:
    """A transformers `Wav2Vec2Config` / `HubertConfig` / `WavLMConfig` -> `Wav2Vec2EncoderConfig`."""
    model_type = hf_config.model_type
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"model_type {model_type!r} not supported (one of {SUPPORTED_MODEL_TYPES})")
    if getattr(hf_config, "add_adapter", False) or getattr(hf_config, "adapter_attn_dim", None):
        raise NotImplementedError("wav2vec2 adapters (add_adapter / adapter_attn_dim) are not ported")
    defaults = Wav2Vec2EncoderConfig()
    names = Wav2Vec2EncoderConfig.__dataclass_fields__
    fields = {f: getattr(hf_config, f, getattr(defaults, f)) for f in names}
    for f in ("conv_dim", "conv_stride", "conv_kernel"):
        fields[f] = tuple(int(v) for v in fields[f])
    fields["model_type"] = model_type
    if model_type != "hubert":  # options that exist only in HubertConfig
        fields["feat_proj_layer_norm"], fields["conv_pos_batch_norm"] = True, False
    return Wav2Vec2EncoderConfig(**fields)


def _numpy(t: Any) -> np.ndarray:
    """torch tensor / array-like -> float32 numpy array."""
    if hasattr(t, "detach"):
        t = t.detach().cpu().float().numpy()
    return np.asarray(t, dtype=np.float32)


def fold_weight_norm(g: np.ndarray, v: np.ndarray, dim: int = 2) -> np.ndarray:
    """torch weight norm w = g * v / ||v||, the norm over every axis except `dim` (transformers: 2)."""
    axes = tuple(a for a in range(v.ndim) if a != dim)
    v64 = v.astype(np.float64)
    norm = np.sqrt(np.sum(v64 * v64, axis=axes, keepdims=True))
    return (g.astype(np.float64) * v64 / norm).astype(np.float32)


def _strip_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop a task-head prefix such as "wav2vec2." / "hubert." / "wavlm." (ForCTC etc.)."""
    anchors = [k for k in state_dict if k.endswith(_ANCHOR)]
    if not anchors:
        raise KeyError(f"no '{_ANCHOR}' in the state dict: not a wav2vec2-family encoder")
    prefix = min(anchors, key=len)[: -len(_ANCHOR)]
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _pos_conv_weight(sd: Mapping[str, Any]) -> np.ndarray:
    """The positional conv weight, folding its weight-norm parametrization (new or legacy keys)."""
    base = _POS_CONV[: -len("weight")]
    if _POS_CONV in sd:  # HuBERT conv_pos_batch_norm: a plain conv
        return _numpy(sd[_POS_CONV])
    for g, v in (("parametrizations.weight.original0", "parametrizations.weight.original1"),
                 ("weight_g", "weight_v")):
        if base + g in sd:
            return fold_weight_norm(_numpy(sd[base + g]), _numpy(sd[base + v]), dim=2)
    raise KeyError(f"missing positional conv weight ({_POS_CONV} or its weight-norm parametrization)")


def torch_key(path: tuple) -> tuple[str, bool]:
    """NNX state path -> (transformers state-dict key, whether to reverse the array's axes)."""
    *parents, leaf = (str(getattr(p, "key", p)) for p in path)
    return ".".join([*parents, _RENAME.get(leaf, leaf)]), leaf == "kernel"


def _abstract_state(cfg: Wav2Vec2EncoderConfig) -> tuple[nnx.GraphDef, nnx.State]:
    return nnx.split(nnx.eval_shape(lambda: Wav2Vec2Encoder(cfg, rngs=nnx.Rngs(0))))


def params_from_torch(state_dict: Mapping[str, Any], cfg: Wav2Vec2EncoderConfig) -> dict:
    """transformers state dict -> nested pure dict for `nnx.replace_by_pure_dict` (float32 numpy)."""
    sd = _strip_prefix(state_dict)
    _, state = _abstract_state(cfg)

    def convert(path, abstract):
        key, transpose = torch_key(path)
        if key == _POS_CONV:
            value = _pos_conv_weight(sd)
        elif key in sd:
            value = _numpy(sd[key])
        else:
            raise KeyError(f"missing '{key}' in the state dict")
        if transpose:
            value = np.transpose(value)
        if value.shape != abstract.shape:
            raise ValueError(f"'{key}': shape {value.shape} != expected {abstract.shape}")
        return value

    return jax.tree_util.tree_map_with_path(convert, nnx.to_pure_dict(state))


def from_torch_model(hf_model: Any) -> Wav2Vec2Encoder:
    """A loaded transformers `Wav2Vec2Model` / `HubertModel` / `WavLMModel` (or task model) -> JAX."""
    cfg = config_from_transformers(hf_model.config)
    graphdef, state = _abstract_state(cfg)
    nnx.replace_by_pure_dict(state, jax.tree.map(jax.numpy.asarray, params_from_torch(hf_model.state_dict(), cfg)))
    return nnx.merge(graphdef, state)


def load_encoder(model_dir: str | os.PathLike) -> Wav2Vec2Encoder:
    """Load a saved transformers model directory (no network) as a `Wav2Vec2Encoder`."""
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError as e:
        raise ImportError(f'wav2vec2 conversion needs the torch extra: pip install -e ".[torch]" ({e})') from e
    hf_model = transformers.AutoModel.from_pretrained(os.fspath(model_dir), local_files_only=True)
    return from_torch_model(hf_model)
