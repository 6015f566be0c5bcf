"""Load a local transformers T5 directory into `T5Encoder`, its tokenizer, and a batched jitted text encoder.

    loaded = load_t5("path/to/t5-base")                 # config.json + model.safetensors (or pytorch_model.bin)
    hidden = t5_forward_jit(loaded.graphdef, loaded.params, ids, mask)   # weights are a jit argument
    encoder = T5TextEncoder("path/to/t5-base", max_length=128)
    emb, mask = encoder(["a dog barks", "rain"])        # float32 [2, 128, 768] zeroed on padding, bool [2, 128]

Weights are read with safetensors' numpy API (no torch); `pytorch_model.bin` needs torch. A
`T5EncoderModel` checkpoint and a full `T5Model` / `T5ForConditionalGeneration` one both load: the
encoder keys and `shared.weight` are used, decoder / lm_head keys are ignored and listed in
`LoadedT5.ignored_keys`. The tokenizer needs transformers (no torch). Nothing touches the network.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxstage.models.t5 import T5Config, T5Encoder

_RENAME = {"kernel": "weight", "embedding": "weight"}
_EMBEDDING_KEYS = ("shared.weight", "encoder.embed_tokens.weight")  # tied in transformers: either one
SUPPORTED_MODEL_TYPES = ("t5",)
SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN = "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"
# The transformers config keys `T5Config` reads (a missing key takes transformers' default).
CONFIG_KEYS = tuple(f for f in T5Config.__dataclass_fields__ if f != "dtype")


class LoadedT5(NamedTuple):
    """A converted checkpoint: `nnx.merge(graphdef, params)` is the `T5Encoder`."""

    graphdef: nnx.GraphDef
    params: nnx.State
    config: T5Config
    weight_files: tuple[Path, ...]
    ignored_keys: tuple[str, ...]  # decoder / lm_head keys of a full encoder-decoder checkpoint


# ----------------------------------------------------------------------------- config and weights
def _model_dir(model_dir: str | os.PathLike) -> Path:
    path = Path(model_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such T5 model directory")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path / 'config.json'}: missing (a transformers T5 directory has one)")
    return path


def config_from_dict(hf_config: Mapping[str, Any], dtype: Any = jnp.float32) -> T5Config:
    """transformers `config.json` contents -> `T5Config` (ValueError naming an unsupported key and value)."""
    model_type = hf_config.get("model_type", "t5")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"model_type={model_type!r} not supported (one of {SUPPORTED_MODEL_TYPES})")
    defaults = T5Config()
    fields = {k: hf_config.get(k, getattr(defaults, k)) for k in CONFIG_KEYS}
    if fields["feed_forward_proj"] is None:
        fields["feed_forward_proj"] = defaults.feed_forward_proj
    return T5Config(**fields, dtype=jnp.dtype(dtype).name)


def read_t5_config(model_dir: str | os.PathLike, dtype: Any = jnp.float32) -> T5Config:
    """`model_dir/config.json` -> `T5Config` for the given compute dtype."""
    path = _model_dir(model_dir) / "config.json"
    try:
        return config_from_dict(json.loads(path.read_text()), dtype)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def weight_files(model_dir: str | os.PathLike) -> tuple[Path, ...]:
    """The checkpoint files: model.safetensors, its sharded index's files, or pytorch_model.bin."""
    path = _model_dir(model_dir)
    if (path / SAFETENSORS).is_file():
        return (path / SAFETENSORS,)
    if (path / SAFETENSORS_INDEX).is_file():
        shards = sorted(set(json.loads((path / SAFETENSORS_INDEX).read_text())["weight_map"].values()))
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise FileNotFoundError(f"{path / missing[0]}: missing (listed in {SAFETENSORS_INDEX})")
        return tuple(path / s for s in shards)
    if (path / TORCH_BIN).is_file():
        return (path / TORCH_BIN,)
    raise FileNotFoundError(f"{path}: no {SAFETENSORS}, {SAFETENSORS_INDEX} or {TORCH_BIN}")


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    out = {}
    with safe_open(str(path), framework="numpy") as f:
        bf16 = [k for k in f.keys() if f.get_slice(k).get_dtype() == "BF16"]  # numpy has no bfloat16
        out.update({k: f.get_tensor(k) for k in f.keys() if k not in bf16})
    if bf16:
        with safe_open(str(path), framework="flax") as f:
            out.update({k: np.asarray(f.get_tensor(k), np.float32) for k in bf16})
    return out


def _read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as err:
        raise ImportError(f'{path}: reading {TORCH_BIN} needs torch: pip install -e ".[torch]" ({err})') from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.detach().float().numpy() for k, v in state.items()}


def read_state_dict(files: tuple[Path, ...]) -> dict[str, np.ndarray]:
    """All tensors of the checkpoint files, by transformers key (numpy)."""
    state: dict[str, np.ndarray] = {}
    for path in files:
        state.update(_read_torch_bin(path) if path.name.endswith(".bin") else _read_safetensors(path))
    return state


def sha256_of(files: tuple[Path, ...]) -> str:
    """sha256 of one weights file; for shards, of the concatenation of the per-file hex digests."""
    digests = []
    for path in files:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digests.append(h.hexdigest())
    return digests[0] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()


# ----------------------------------------------------------------------------- conversion
def torch_key(path: tuple) -> tuple[str, bool]:
    """NNX state path -> (transformers state-dict key, whether to transpose the array)."""
    *parents, leaf = (str(getattr(p, "key", p)) for p in path)
    return ".".join([*parents, _RENAME.get(leaf, leaf)]), leaf == "kernel"


def abstract_t5(cfg: T5Config) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, abstract state) of `T5Encoder(cfg)` without allocating weights."""
    return nnx.split(nnx.eval_shape(lambda: T5Encoder(cfg, rngs=nnx.Rngs(0))))


def _is_encoder_key(key: str) -> bool:
    return key.startswith("encoder.") or key in _EMBEDDING_KEYS


def params_from_state_dict(state_dict: Mapping[str, Any], cfg: T5Config,
                           source: str = "state dict") -> tuple[nnx.State, tuple[str, ...]]:
    """transformers T5 state dict -> (`T5Encoder` params in their dtypes, ignored non-encoder keys).

    One-line errors naming `source` and the key: a missing key, an encoder key the config has no place
    for, a shape mismatch.
    """
    sd = dict(state_dict)
    embedding = next((k for k in _EMBEDDING_KEYS if k in sd), None)
    if embedding is None:
        raise KeyError(f"{source}: missing 'shared.weight' (or 'encoder.embed_tokens.weight')")
    sd["shared.weight"] = sd[embedding]
    _, state = abstract_t5(cfg)
    used = {"shared.weight", "encoder.embed_tokens.weight"}

    def convert(path, abstract):
        key, transpose = torch_key(path)
        if key not in sd:
            raise KeyError(f"{source}: missing '{key}'")
        used.add(key)
        value = np.asarray(sd[key] if not hasattr(sd[key], "detach") else sd[key].detach().float().numpy())
        expected = abstract.shape[::-1] if transpose else abstract.shape  # in the checkpoint's layout
        if value.shape != expected:
            raise ValueError(f"{source}: '{key}' has shape {value.shape}, the config expects {expected}")
        return jnp.asarray((value.T if transpose else value).astype(np.float32), dtype=abstract.dtype)

    params = jax.tree_util.tree_map_with_path(convert, nnx.to_pure_dict(state))
    extra = sorted(k for k in sd if _is_encoder_key(k) and k not in used)
    if extra:
        raise ValueError(f"{source}: unexpected encoder key '{extra[0]}' ({len(extra)} in all; "
                         f"num_layers={cfg.num_layers}, feed_forward_proj={cfg.feed_forward_proj!r})")
    nnx.replace_by_pure_dict(state, params)
    return state, tuple(sorted(k for k in sd if not _is_encoder_key(k)))


def load_t5(model_dir: str | os.PathLike, dtype: Any = jnp.float32) -> LoadedT5:
    """A local transformers T5 directory -> `LoadedT5` (matmul weights stored in `dtype`, norms float32)."""
    cfg = read_t5_config(model_dir, dtype)
    files = weight_files(model_dir)
    source = str(files[0]) if len(files) == 1 else f"{files[0].parent} (sharded)"
    params, ignored = params_from_state_dict(read_state_dict(files), cfg, source)
    graphdef, _ = abstract_t5(cfg)
    return LoadedT5(graphdef, params, cfg, files, ignored)


def t5_forward(graphdef: nnx.GraphDef, params: nnx.State, ids: jax.Array, mask: jax.Array) -> jax.Array:
    """Pure forward (usable inside any jit): ids int32 [B, L], mask bool [B, L] -> float32 [B, L, D]."""
    return nnx.merge(graphdef, params)(ids, mask)


# jit boundary: graphdef is static (hashable, one per config); params are traced, so one compilation
# serves any weights of that config and no weight is baked into the executable as a constant.
t5_forward_jit = jax.jit(t5_forward, static_argnums=0)



# ----------------------------------------------------------------------------- tokenizer and text encoder
def load_t5_tokenizer(model_dir: str | os.PathLike) -> Any:
    """The tokenizer saved in `model_dir` (transformers `AutoTokenizer`, local files only)."""
    path = _model_dir(model_dir)
    try:
        import transformers
    except ImportError as err:
        raise ImportError(f'the T5 tokenizer needs transformers: pip install -e ".[torch]" ({err})') from None
    return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def tokenize(tokenizer: Any, captions: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Captions -> (ids int32 [B, max_length], mask bool [B, max_length]), padded to and truncated at
    `max_length` as stable-audio-tools' T5Conditioner does."""
    tokens = tokenizer(list(captions), padding="max_length", truncation=True, max_length=int(max_length),
                       return_tensors="np")
    return tokens["input_ids"].astype(np.int32), tokens["attention_mask"].astype(bool)


def _masked_embeddings(graphdef: nnx.GraphDef, params: nnx.State, ids: jax.Array, mask: jax.Array) -> jax.Array:
    """last_hidden_state * mask (padded positions zeroed, as stable-audio-tools)."""
    return t5_forward(graphdef, params, ids, mask) * mask[..., None]


# jit boundary: one compilation per (config, batch shape); the weights are an argument, not constants.
_masked_embeddings_jit = jax.jit(_masked_embeddings, static_argnums=0)


class T5TextEncoder:
    """Captions -> (embeddings float32 [B, max_length, d_model] zeroed on padding, mask bool [B, max_length]).

    The JAX counterpart of `jaxstage.data.encoders.HFTextEncoder` for T5 (same `TextEncoder` protocol:
    `__call__(captions)` and `describe()`), running on the default JAX device.
    """

    def __init__(self, model_dir: str | os.PathLike, max_length: int = 128, dtype: Any = jnp.float32):
        self.model_dir = _model_dir(model_dir)
        self.max_length = int(max_length)
        if self.max_length < 1:
            raise ValueError(f"max_length={max_length!r} must be a positive integer")
        self.loaded = load_t5(self.model_dir, dtype)
        self.tokenizer = load_t5_tokenizer(self.model_dir)
        self.dim = self.loaded.config.d_model
        self._sha256: str | None = None  # computed on the first describe()

    def tokenize(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return tokenize(self.tokenizer, captions, self.max_length)

    def __call__(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids, mask = self.tokenize(captions)
        emb = _masked_embeddings_jit(self.loaded.graphdef, self.loaded.params, ids, mask)
        return np.asarray(emb, np.float32), mask

    def describe(self) -> dict[str, Any]:
        if self._sha256 is None:
            self._sha256 = sha256_of(self.loaded.weight_files)
        return {"model_dir": str(self.model_dir), "model_type": "t5", "encoder": "jax",
                "weights_sha256": self._sha256,
                "weight_files": [p.name for p in self.loaded.weight_files],
                "ignored_keys": len(self.loaded.ignored_keys), "dim": self.dim,
                "max_length": self.max_length, "dtype": self.loaded.config.dtype}
