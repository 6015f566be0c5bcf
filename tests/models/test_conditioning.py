"""Conditioners routed by id: parity with stable-audio-tools 0.0.19's own NumberConditioner and its
conditioned wrapper's assembly, the CFG null semantics, training dropout, and the config rules."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxstage.config import Config, ConfigError, load_config, validate
from jaxstage.models.conditioning import (
    Condition, NumberConditioner, Routing, drop_condition, null_condition, route,
)

SAO_ROUTING = Routing(cross_attention_ids=("prompt", "seconds_start", "seconds_total"),
                      global_ids=("seconds_start", "seconds_total"))


def _sat():
    torch = pytest.importorskip("torch")
    from jaxstage.tools.export.sat_reference import load_conditioning_classes

    try:
        number_cls, wrapper_cls = load_conditioning_classes()
    except ImportError as err:
        pytest.skip(str(err))
    return torch, number_cls, wrapper_cls


def _number_from_torch(module, dim: int, low: float, high: float) -> NumberConditioner:
    """A JAX NumberConditioner carrying the torch one's weights (the importer's mapping)."""
    ours = NumberConditioner(dim, low, high, rngs=nnx.Rngs(0))
    state = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    ours.weights.set_value(jnp.asarray(state["embedder.embedding.0.weights"]))
    ours.linear.kernel.set_value(jnp.asarray(state["embedder.embedding.1.weight"].T))
    ours.linear.bias.set_value(jnp.asarray(state["embedder.embedding.1.bias"]))
    return ours


def test_number_conditioner_matches_stable_audio_tools():
    torch, number_cls, _ = _sat()
    torch.manual_seed(0)
    theirs = number_cls(output_dim=24, min_val=0, max_val=512).eval()
    ours = _number_from_torch(theirs, 24, 0, 512)
    values = [0.0, 3.5, 47.55, 511.9, 600.0, -2.0]  # out-of-range values are clamped by both
    with torch.no_grad():
        expected, expected_mask = theirs(values, device="cpu")
    got, mask = ours(jnp.asarray(values, jnp.float32))
    assert got.shape == (6, 1, 24) and mask.shape == (6, 1)
    err = float(np.max(np.abs(np.asarray(got) - expected.numpy())))
    assert err <= 1e-5, err
    np.testing.assert_array_equal(np.asarray(mask), expected_mask.numpy().astype(bool))


def test_routing_matches_the_conditioned_wrapper_assembly():
    """SAO 1.0's routing (prompt + two numbers in cross-attention, the numbers as the global condition)
    and a prepend routing, assembled by stable-audio-tools' own get_conditioning_inputs."""
    torch, number_cls, wrapper_cls = _sat()
    torch.manual_seed(1)
    dim, batch, length = 16, 3, 5
    start = number_cls(output_dim=dim, min_val=0, max_val=512).eval()
    total = number_cls(output_dim=dim, min_val=0, max_val=512).eval()
    prompt = torch.randn(batch, length, dim)
    prompt_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    starts, totals = [0.0, 2.0, 30.0], [10.0, 47.5, 300.0]
    with torch.no_grad():
        tensors = {"prompt": (prompt * prompt_mask[..., None], prompt_mask),
                   "seconds_start": start(starts, device="cpu"), "seconds_total": total(totals, device="cpu")}
    ours_outputs = {
        "prompt": (jnp.asarray(tensors["prompt"][0].numpy()), jnp.asarray(prompt_mask.numpy())),
        "seconds_start": _number_from_torch(start, dim, 0, 512)(jnp.asarray(starts)),
        "seconds_total": _number_from_torch(total, dim, 0, 512)(jnp.asarray(totals)),
    }
    for routing in (SAO_ROUTING, Routing(cross_attention_ids=("prompt",), prepend_ids=("seconds_total",),
                                         global_ids=("seconds_start",))):
        wrapper = types.SimpleNamespace(cross_attn_cond_ids=list(routing.cross_attention_ids),
                                        global_cond_ids=list(routing.global_ids), input_concat_ids=[],
                                        prepend_cond_ids=list(routing.prepend_ids))
        expected = wrapper_cls.get_conditioning_inputs(wrapper, tensors)
        got = route(ours_outputs, routing)
        pairs = [(got.cross, expected["cross_attn_cond"]), (got.global_cond, expected["global_cond"])]
        if routing.prepend_ids:
            pairs.append((got.prepend, expected["prepend_cond"]))
        for ours, theirs in pairs:
            assert ours.shape == tuple(theirs.shape)
            err = float(np.max(np.abs(np.asarray(ours) - theirs.numpy())))
            assert err <= 1e-5, err
        np.testing.assert_array_equal(np.asarray(got.cross_mask), expected["cross_attn_mask"].numpy().astype(bool))
    assert route(ours_outputs, SAO_ROUTING).cross.shape == (batch, length + 2, dim)
    assert route(ours_outputs, SAO_ROUTING).global_cond.shape == (batch, 2 * dim)


def test_null_condition_zeroes_cross_and_prepend_and_keeps_global():
    cond = Condition(cross=jnp.ones((2, 3, 4)), cross_mask=jnp.ones((2, 3), bool), global_cond=jnp.ones((2, 8)),
                     prepend=jnp.ones((2, 1, 4)), prepend_mask=jnp.ones((2, 1), bool))
    null = null_condition(cond)
    assert float(jnp.abs(null.cross).max()) == 0 and float(jnp.abs(null.prepend).max()) == 0
    np.testing.assert_array_equal(null.global_cond, cond.global_cond)
    np.testing.assert_array_equal(null.cross_mask, cond.cross_mask)
    dropped = drop_condition(cond, jnp.asarray([1.0, 0.0]), jnp.asarray([0.0, 1.0]))
    np.testing.assert_array_equal(dropped.cross[:, 0, 0], [1.0, 0.0])
    np.testing.assert_array_equal(dropped.prepend[:, 0, 0], [0.0, 1.0])
    np.testing.assert_array_equal(dropped.global_cond, cond.global_cond)


def test_route_refuses_unknown_ids_and_multi_token_globals():
    outputs = {"prompt": (jnp.ones((2, 3, 4)), jnp.ones((2, 3), bool))}
    with pytest.raises(KeyError, match="seconds_total"):
        route(outputs, Routing(cross_attention_ids=("prompt", "seconds_total")))
    with pytest.raises(ValueError, match="one token"):
        route(outputs, Routing(global_ids=("prompt",)))


def _sao_like(*extra: str) -> Config:
    return load_config("configs/tiny_t2a.py", [
        'conditioning.numbers=[["seconds_start", 0, 512], ["seconds_total", 0, 512]]',
        'conditioning.cross_attention_ids=["prompt", "seconds_start", "seconds_total"]',
        'conditioning.global_ids=["seconds_start", "seconds_total"]', *extra])


@pytest.mark.parametrize("override, message", [
    ('conditioning.global_ids=["seconds_end"]', "no conditioner with id 'seconds_end'"),
    ('conditioning.cross_attention_ids=["seconds_total"]', "must contain 'prompt'"),
    ('conditioning.global_ids=["prompt"]', "cross-attention only"),
    ('conditioning.dropout=[["seconds_total", 1.5]]', "not in \\[0, 1\\]"),
    ('conditioning.numbers=[["seconds_start", 0, 512], ["seconds_total", 512, 0]]', "max_val > min_val"),
    ("text.encoder_dir=/tmp/t5", "text.kind=learned does not use it"),
])
def test_config_refuses_bad_conditioning(override, message):
    with pytest.raises(ConfigError, match=message):
        _sao_like(override)


def test_config_refuses_an_unrouted_number():
    cfg = Config()
    cfg.conditioning.numbers = (("seconds_total", 0.0, 512.0),)
    with pytest.raises(ConfigError, match="'seconds_total' is not routed"):
        validate(cfg)


def test_denoiser_with_numbers_trains_on_the_synthetic_timing():
    """The SAO routing end to end through the Denoiser: the batch's seconds_* change the output, the
    global condition survives CFG's null branch, and a missing number is a one-line error."""
    from jaxstage.inference.model import InferenceModel, inference_parts
    from jaxstage.models.denoiser import Denoiser

    cfg = _sao_like()
    exp = InferenceModel(**inference_parts(cfg))
    params = nnx.to_pure_dict(nnx.state(Denoiser(cfg, exp.io_channels, rngs=nnx.Rngs(0)), nnx.Param))
    leaves, tree = jax.tree.flatten(params)  # perturbed: at init the zero-initialized blocks ignore conditions
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    model = exp.model(params)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, exp.io_channels))
    ids = jnp.ones((2, cfg.data.text_max_length), jnp.int32)
    mask = jnp.ones_like(ids, bool)
    numbers = exp.default_numbers(2)
    assert set(numbers) == {"seconds_start", "seconds_total"}
    np.testing.assert_allclose(numbers["seconds_total"], cfg.data.clip_seconds)
    c = jnp.zeros((2,))
    a = model(x, c, ids, mask, numbers=numbers).out
    b = model(x, c, ids, mask, numbers={**numbers, "seconds_total": numbers["seconds_total"] * 4}).out
    assert float(jnp.abs(a - b).max()) > 0
    cond = model.encode_condition(ids, mask, numbers)
    assert cond.cross.shape[1] == cfg.data.text_max_length + 2 and cond.global_cond.shape == (2, 2 * cfg.text.width)
    assert float(jnp.abs(null_condition(cond).global_cond - cond.global_cond).max()) == 0
    with pytest.raises(ValueError, match="'seconds_start'"):
        model(x, c, ids, mask)
