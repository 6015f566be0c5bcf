"""The one table mapping jaxstage DiT parameters onto stable-audio-tools state-dict keys.

jaxstage's `DiffusionTransformer` names its modules after the PyTorch ones
(`jaxstage/models/transformer.py`), so a state path maps to a key mechanically: join the path with
"." and prefix `model.model.` (the conditioned wrapper's `.model` is a `DiTWrapper`, whose `.model`
is the `DiffusionTransformer`). What changes per key is the leaf name and the array layout; that
is all in `RULES` below, first match wins:

    jaxstage path (regex)            torch leaf   transform
    *.kernel                         weight       axes reversed: Linear [in, out] -> [out, in],
                                                  1x1 Conv1d (pre/postprocess_conv) [1, in, out] -> [out, in, 1]
    anything else                    (same)       unchanged: biases, LayerNorm gamma, q/k-norm
                                                  weight/bias, to_scale_shift_gate, Fourier
                                                  weight [out//2, 1]; buffers inv_freq and beta

Fused projections keep their fusion on both sides (`to_qkv` [3D] = q|k|v, `to_kv` [2D] = k|v,
GLU `proj` [2·inner] = value|gate, the adaLN vector = 6 chunks), so no key is split or merged.
Pure numpy: no torch, no jax arrays required.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

PREFIX = "model.model."  # ConditionedDiffusionModelWrapper.model (DiTWrapper).model (DiffusionTransformer)

Path = tuple[str, ...]


class KeyMapError(ValueError):
    """A source state dict that does not match the jaxstage DiT; the message names the key."""


@dataclass(frozen=True)
class Rule:
    """How one family of jaxstage leaves becomes torch tensors (and back)."""

    pattern: str  # regex on the dotted jaxstage path
    torch_leaf: str | None  # replacement for the last path element (None: unchanged)
    to_torch: Callable[[np.ndarray], np.ndarray]
    from_torch: Callable[[np.ndarray], np.ndarray]


def _same(a: np.ndarray) -> np.ndarray:
    return a


RULES: tuple[Rule, ...] = (
    # reversed axes: Linear [in, out] <-> [out, in], 1x1 Conv1d [1, in, out] <-> [out, in, 1]
    Rule(r"\.kernel$", "weight", np.transpose, np.transpose),
    Rule(r".*", None, _same, _same),  # unchanged
)


def rule_for(path: Path) -> Rule:
    """The first rule whose pattern matches the dotted path (the last one matches everything)."""
    return next(rule for rule in RULES if re.search(rule.pattern, ".".join(path)))


def torch_key(path: Path, prefix: str = PREFIX) -> str:
    """jaxstage DiT state path -> stable-audio-tools state-dict key."""
    rule = rule_for(path)
    leaf = path[-1] if rule.torch_leaf is None else rule.torch_leaf
    return prefix + ".".join((*path[:-1], leaf))


def flatten(tree: dict[Any, Any], prefix: Path = ()) -> dict[Path, Any]:
    """Nested dict (NNX pure dict; list indices are int keys) -> {path of str: leaf}."""
    out: dict[Path, Any] = {}
    for key, value in tree.items():
        path = (*prefix, str(key))
        if isinstance(value, dict):
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


def unflatten(flat: dict[Path, Any], like: dict[Any, Any]) -> dict[Any, Any]:
    """Inverse of `flatten`, shaped (and keyed: int list indices) like ``like``."""
    def build(node: dict[Any, Any], prefix: Path) -> dict[Any, Any]:
        return {k: build(v, (*prefix, str(k))) if isinstance(v, dict) else flat[(*prefix, str(k))]
                for k, v in node.items()}
    return build(like, ())


def to_torch_state(params: dict, buffers: dict, *, prefix: str = PREFIX) -> dict[str, np.ndarray]:
    """DiT parameters and buffers (nested pure dicts of arrays) -> {torch key: numpy array}, key order
    as the pure dicts list them (parameters first)."""
    out: dict[str, np.ndarray] = {}
    for path, value in (*flatten(params).items(), *flatten(buffers).items()):
        key = torch_key(path, prefix)
        if key in out:
            raise AssertionError(f"two jaxstage paths map to {key}")
        out[key] = np.ascontiguousarray(rule_for(path).to_torch(np.asarray(value)))
    return out


def from_torch_state(state: dict[str, np.ndarray], params_like: dict, buffers_like: dict, *,
                     prefix: str = PREFIX, source: str = "source") -> tuple[dict, dict]:
    """{torch key: array} -> (params, buffers) nested like the given abstract trees, cast to their dtypes.

    ``state`` may hold other keys (conditioner, pretransform): only ``prefix`` keys are read, and
    every one of them must map to a jaxstage leaf. Raises KeyMapError naming the first missing,
    unexpected or mis-shaped key.
    """
    like = {**flatten(params_like), **flatten(buffers_like)}
    expected = {torch_key(p, prefix): p for p in like}
    present = {k for k in state if k.startswith(prefix)}
    missing = [k for k in expected if k not in present]
    if missing:
        raise KeyMapError(f"{source}: missing key {missing[0]} ({len(missing)} missing; the jaxstage config "
                          f"expects {len(expected)} '{prefix}*' keys)")
    unexpected = sorted(present - set(expected))
    if unexpected:
        raise KeyMapError(f"{source}: unexpected key {unexpected[0]} ({len(unexpected)} not in the jaxstage DiT: "
                          f"an option jaxstage does not support, or a config that does not match the weights)")
    converted: dict[Path, np.ndarray] = {}
    for key, path in expected.items():
        value = np.asarray(state[key])
        array = rule_for(path).from_torch(value)
        want = tuple(like[path].shape)
        if array.shape != want:
            torch_shape = rule_for(path).to_torch(np.zeros(want, np.int8)).shape
            raise KeyMapError(f"{source}: {key} has shape {list(value.shape)}, the jaxstage config expects "
                              f"{list(torch_shape)}")
        if not np.issubdtype(value.dtype, np.floating) and value.dtype.name != "bfloat16":
            raise KeyMapError(f"{source}: {key} has dtype {value.dtype}, expected a floating-point tensor")
        converted[path] = np.ascontiguousarray(array).astype(like[path].dtype)
    return unflatten(converted, params_like), unflatten(converted, buffers_like)
