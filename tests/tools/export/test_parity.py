"""Output parity: jaxstage DiT vs stable-audio-tools' own PyTorch DiffusionTransformer loaded from the
key map with strict=True, on random weights (every parameter non-zero, including the zero-init ones)."""

import jax
import numpy as np
import pytest
from flax import nnx

from jaxstage.tools.export import key_map
from jaxstage.tools.export.sat_config import dit_config
from jaxstage.tools.export.sat_reference import build_wrapped_dit
from jaxstage.models.dit import DiffusionTransformer
from jaxstage.models.transformer import Buffer
from sat_torch import require_reference, torch_forward

B, T, L = 2, 11, 5
IO = 6

CASES = {
    # cross-attention on/off, prepend vs adaLN, qk-norm none/ln/l2, optional global and input-concat
    "cross_prepend": dict(embed_dim=64, depth=2, num_heads=2, cond_token_dim=24),
    "nocross_adaln": dict(embed_dim=64, depth=2, num_heads=2, cond_token_dim=0, global_cond_type="adaLN"),
    "cross_adaln_qkln_global": dict(embed_dim=128, depth=2, num_heads=2, cond_token_dim=16, global_cond_dim=8,
                                    global_cond_type="adaLN", qk_norm="ln", ff_mult=2),
    "cross_prepend_qkl2_concat_noproj": dict(embed_dim=64, depth=3, num_heads=2, cond_token_dim=32,
                                             project_cond_tokens=False, qk_norm="l2", input_concat_dim=IO,
                                             global_cond_dim=4),
}


def _qk_name(qk) -> str:
    return {True: "ln", False: "none"}.get(qk, qk)


def _random_like(rng, path, a):
    """Trained-looking weights: kernels N(0, 1/fan_in), LayerNorm gains near 1, other leaves N(0, 0.3^2)."""
    name = str(path[-1].key)
    if name == "kernel":
        std = a.shape[-2] ** -0.5
    elif name in ("gamma", "weight") and len(a.shape) == 1:
        return (1 + 0.1 * rng.normal(size=a.shape)).astype(np.float32)
    else:
        std = 1.0 if name == "weight" else 0.3  # Fourier features ~ N(0, 1) as in the reference
    return (std * rng.normal(size=a.shape)).astype(np.float32)


def random_dit(seed: int, **kw):
    """(model, params pure dict, buffers pure dict): random non-zero parameters everywhere, real buffers."""
    model = DiffusionTransformer(io_channels=IO, rngs=nnx.Rngs(seed), **kw)
    state = nnx.state(model, nnx.Param)
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map_with_path(lambda p, a: _random_like(rng, p, a), nnx.to_pure_dict(state))
    nnx.replace_by_pure_dict(state, params)
    nnx.update(model, state)
    buffers = nnx.state(model, Buffer)
    return model, params, nnx.to_pure_dict(buffers)


@pytest.mark.parametrize("name", list(CASES))
def test_torch_reference_reproduces_jax_output(name):
    torch, _ = require_reference()
    kw = CASES[name]
    model, params, buffers = random_dit(3, **kw)
    dims = {"io_channels": IO, "input_concat_dim": kw.get("input_concat_dim", 0),
            "cond_token_dim": kw["cond_token_dim"], "global_cond_dim": kw.get("global_cond_dim", 0)}
    sat = {"model": {"diffusion": {"diffusion_objective": "rectified_flow", "config": dit_config(
        dims, embed_dim=kw["embed_dim"], depth=kw["depth"], num_heads=kw["num_heads"],
        project_cond_tokens=kw.get("project_cond_tokens", True), global_cond_type=kw.get("global_cond_type", "prepend"),
        qk_norm=_qk_name(kw.get("qk_norm", False)), ff_mult=kw.get("ff_mult", 4))}}}
    wrapper = build_wrapped_dit(sat)
    state = {k: torch.from_numpy(v) for k, v in key_map.to_torch_state(params, buffers).items()}
    result = wrapper.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    rng = np.random.default_rng(7)
    x = rng.normal(size=(B, T, IO)).astype(np.float32)
    t = np.array([0.13, 0.87], np.float32)
    cross = rng.normal(size=(B, L, kw["cond_token_dim"])).astype(np.float32) if kw["cond_token_dim"] else None
    glob = rng.normal(size=(B, dims["global_cond_dim"])).astype(np.float32) if dims["global_cond_dim"] else None
    concat = rng.normal(size=(B, T, IO)).astype(np.float32) if dims["input_concat_dim"] else None
    ours = np.asarray(model(x, t, cross_tokens=cross, global_cond=glob, input_concat=concat).out)
    theirs = torch_forward(torch, wrapper.model.model, x, t, cross=cross, global_cond=glob, concat=concat)
    assert theirs.shape == ours.shape == (B, T, IO)
    assert np.abs(ours).max() > 1e-2  # a real signal, not two zeros
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)


def test_key_map_round_trip_and_named_errors():
    model, params, buffers = random_dit(0, **CASES["cross_adaln_qkln_global"])
    state = key_map.to_torch_state(params, buffers)
    assert all(k.startswith("model.model.") for k in state)
    assert state["model.model.transformer.layers.0.self_attn.to_qkv.weight"].shape == (3 * 128, 128)
    assert state["model.model.preprocess_conv.weight"].shape == (IO, IO, 1)
    back_params, back_buffers = key_map.from_torch_state(state, params, buffers)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back_params)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(buffers), jax.tree.leaves(back_buffers)):
        np.testing.assert_array_equal(a, b)

    extra = {**state, "conditioner.conditioners.prompt.proj.weight": np.zeros(3)}  # other parts are ignored
    key_map.from_torch_state(extra, params, buffers)
    missing = dict(state)
    del missing["model.model.transformer.layers.1.ff.ff.2.bias"]
    with pytest.raises(key_map.KeyMapError, match=r"missing key model\.model\.transformer\.layers\.1\.ff\.ff\.2\.bias"):
        key_map.from_torch_state(missing, params, buffers)
    unexpected = {**state, "model.model.transformer.memory_tokens": np.zeros((4, 128), np.float32)}
    with pytest.raises(key_map.KeyMapError, match=r"unexpected key model\.model\.transformer\.memory_tokens"):
        key_map.from_torch_state(unexpected, params, buffers)
    wrong = {**state, "model.model.transformer.project_in.weight": np.zeros((128, IO + 1), np.float32)}
    with pytest.raises(key_map.KeyMapError, match=r"project_in\.weight has shape \[128, 7\].*expects \[128, 6\]"):
        key_map.from_torch_state(wrong, params, buffers)
