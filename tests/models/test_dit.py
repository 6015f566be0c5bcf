"""DiffusionTransformer: shapes, init, masking, hidden states, jit, torch key names, sharding.

Compiles dominate on CPU, so test models get host-side (numpy) random parameters through
`nnx.eval_shape` + `nnx.merge`, inputs are numpy, and each config compiles its forward once.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxstage.models.dit import (
    DiffusionTransformer,
    _nearest_resize,
    block_weight_matrices,
    count_params,
)
from jaxstage.tools.export import key_map
from jaxstage.models.transformer import Buffer

B, T, L = 2, 12, 5
IO, EMBED, DEPTH, HEADS, COND, GLOBAL, CONCAT = 4, 64, 2, 2, 16, 8, 3  # dim_heads = 32
HIDDEN = 0  # block whose output the forward helper returns as `hidden`

FULL_P = dict(global_cond_type="prepend", global_cond_dim=GLOBAL, input_concat_dim=CONCAT,
              qk_norm=True)
FULL_A = dict(global_cond_type="adaLN", global_cond_dim=GLOBAL, input_concat_dim=CONCAT,
              qk_norm="l2")
GQA = dict(global_cond_type="adaLN", cond_token_dim=2 * COND, project_cond_tokens=False)  # 1 kv head
PLAIN = dict(cond_token_dim=0)


def config(**overrides) -> dict:
    kw = dict(io_channels=IO, embed_dim=EMBED, depth=DEPTH, num_heads=HEADS, cond_token_dim=COND)
    return {**kw, **overrides}


def make(seed: int = 0, scale: float = 0.2, **overrides) -> DiffusionTransformer:
    """A model with N(0, scale^2) parameters drawn on the host (no init compile) and real buffers."""
    kw = config(**overrides)
    abstract = nnx.eval_shape(lambda: DiffusionTransformer(**kw, rngs=nnx.Rngs(0)))
    graphdef, params, buffers = nnx.split(abstract, nnx.Param, Buffer)
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda s: (scale * rng.normal(size=s.shape)).astype(s.dtype), params)

    def buffer(path, var):
        if path[-1] == "inv_freq":  # rotary dim max(dim_heads // 2, 32)
            rot = 2 * var.shape[0]
            return var.replace(1.0 / 10000 ** (np.arange(0, rot, 2, dtype=np.float32) / rot))
        return var.replace(np.zeros(var.shape, var.dtype))  # LayerNorm beta

    buffers = nnx.from_flat_state([(p, buffer(p, v)) for p, v in nnx.to_flat_state(buffers)])
    return nnx.merge(graphdef, params, buffers)


def inputs(seed: int = 0, *, cond: int = COND) -> dict:
    rng = np.random.default_rng(100 + seed)
    n = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    return dict(
        x=n(B, T, IO), t=n(B),
        cross_tokens=n(B, L, cond),
        cross_mask=np.arange(L)[None, :] < np.array([[3], [L]]),  # sample 0: 2 padded tokens
        global_cond=n(B, GLOBAL), input_concat=n(B, T, CONCAT),
    )


@functools.partial(jax.jit, static_argnums=0, static_argnames="normalize")
def _forward(graphdef, state, x, t, conds, normalize=False):
    model = nnx.merge(graphdef, state)
    return model(x, t, **conds, hidden_layer=HIDDEN, normalize_summaries=normalize)


def conds_for(model: DiffusionTransformer, d: dict, **replace) -> dict:
    """The conditioning kwargs this model accepts, taken from `d` (with replacements)."""
    d = {**d, **replace}
    out = {}
    if model.cond_token_dim:
        out.update(cross_tokens=d["cross_tokens"], cross_mask=d["cross_mask"])
    if model.global_cond_dim:
        out["global_cond"] = d["global_cond"]
    if model.input_concat_dim:
        out["input_concat"] = d["input_concat"]
    return out


def forward(model, d, normalize=False, **replace):
    graphdef, state = nnx.split(model)
    return _forward(graphdef, state, d["x"], d["t"], conds_for(model, d, **replace),
                    normalize=normalize)


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("cfg", [FULL_P, FULL_A, GQA, PLAIN], ids=["prepend", "adaLN", "gqa", "plain"])
def test_shapes_every_conditioning(cfg):
    model = make(**cfg)
    d = inputs(cond=model.cond_token_dim or COND)
    o = forward(model, d)
    assert o.out.shape == (B, T, IO)
    assert o.hidden.shape == (B, T, EMBED)
    assert o.block_summaries.shape == (B, DEPTH, EMBED)
    assert np.isfinite(np.asarray(o.out)).all()


def test_reference_init_blocks_are_identity():
    """Reference init (adaLN config, every conditioning): zero-init branch outputs and 1x1 convs
    make out = project_out(project_in(x)) at init, independent of t and conditioning; the output
    itself is not zero (project_out has torch's default init)."""
    kw = config(**FULL_A)
    rbg = jax.random.key(0, impl="rbg")  # same init code, a PRNG that compiles ~4x faster on CPU
    model = nnx.jit(lambda: DiffusionTransformer(**kw, rngs=nnx.Rngs(rbg)))()
    d = inputs()
    o = forward(model, d)
    tf = model.transformer
    w_in, w_out = (np.asarray(m.kernel[...]) for m in (tf.project_in, tf.project_out))
    close(o.out, np.concatenate([d["x"], d["input_concat"]], -1) @ w_in @ w_out)
    assert np.abs(np.asarray(o.out)).max() > 0

    blk = tf.layers[0]
    for zero in (blk.self_attn.to_out, blk.cross_attn.to_out, blk.ff.ff[2], model.preprocess_conv):
        assert not np.asarray(zero.kernel[...]).any()
    bound = (IO + CONCAT) ** -0.5  # torch Linear default U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert np.abs(np.asarray(w_in)).max() <= bound
    assert 0.5 < np.asarray(blk.to_scale_shift_gate[...]).std() * EMBED**0.5 < 1.5
    np.testing.assert_allclose(np.asarray(tf.rotary_pos_emb.inv_freq[...]),
                               1.0 / 10000 ** (np.arange(0, 32, 2) / 32), rtol=1e-6)
    assert key_map.rule_for(("to_q", "kernel")).to_torch(np.asarray(blk.cross_attn.to_q.kernel[...])).shape == (EMBED, EMBED)


@functools.partial(jax.jit, static_argnums=0)
def _manual(graphdef, state, d):
    """Prepend-config forward written out step by step; returns (out, block outputs)."""
    model = nnx.merge(graphdef, state)
    tf = model.transformer
    seq = lambda layers, a: functools.reduce(lambda h, f: f(h), layers, a)  # noqa: E731
    embed = seq(model.to_timestep_embed, model.timestep_features(d["t"][:, None]))
    embed = embed + seq(model.to_global_embed, d["global_cond"])
    context = seq(model.to_cond_embed, d["cross_tokens"])
    x = jnp.concatenate([d["x"], d["input_concat"]], -1)
    h = tf.project_in(model.preprocess_conv(x) + x)
    h = jnp.concatenate([embed[:, None], h], axis=1)
    rotary = tf.rotary_pos_emb(T + 1)
    hiddens = []
    for block in tf.layers:
        h = block(h, rotary=rotary, context=context, context_mask=d["cross_mask"])
        hiddens.append(h[:, 1:])
    out = tf.project_out(h)[:, 1:]
    return model.postprocess_conv(out) + out, hiddens


def test_hidden_layer_and_summaries_match_manual_forward():
    model = make(**FULL_P)
    d = inputs()
    o = forward(model, d)
    out, hiddens = _manual(*nnx.split(model), d)
    close(o.out, out)
    close(o.hidden, hiddens[HIDDEN])
    close(o.block_summaries, np.stack([np.asarray(h).mean(1) for h in hiddens], axis=1))
    assert not np.allclose(hiddens[0], hiddens[1])


def test_normalized_summaries_are_means_of_token_layer_norms():
    model = make(**PLAIN)
    d = inputs()
    h = np.asarray(forward(model, d).hidden)
    o = forward(model, d, normalize=True)
    ln = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
    close(o.block_summaries[:, HIDDEN], ln.mean(1), tol=1e-4)


@pytest.mark.parametrize("cfg", [FULL_P, FULL_A], ids=["prepend", "adaLN"])
def test_padded_text_tokens_do_not_matter(cfg):
    model = make(**cfg)
    d = inputs()
    noise = 10 * np.random.default_rng(9).normal(size=d["cross_tokens"].shape).astype(np.float32)
    changed = np.where(d["cross_mask"][..., None], d["cross_tokens"], noise)
    a = forward(model, d)
    close(a.out, forward(model, d, cross_tokens=changed).out)
    all_valid = np.ones_like(d["cross_mask"])  # with every token valid the change is seen
    seen = forward(model, d, cross_tokens=changed, cross_mask=all_valid)
    assert not np.allclose(a.out[0], seen.out[0], atol=1e-4)
    close(a.out[1], seen.out[1])  # sample 1 had no padding


def test_fully_masked_row_is_finite_and_ignores_text():
    model = make(**FULL_P)
    d = inputs()
    mask = d["cross_mask"].copy()
    mask[0] = False
    a = forward(model, d, cross_mask=mask)
    b = forward(model, d, cross_mask=mask, cross_tokens=0 * d["cross_tokens"])
    assert np.isfinite(np.asarray(a.out)).all()
    close(a.out[0], b.out[0])


def test_rotary_makes_self_attention_position_aware():
    """Blocks see positions only through rotary: a time-reversed input is not a reversed output."""
    model = make(**PLAIN)
    d = inputs()
    a = forward(model, d).out
    b = forward(model, {**d, "x": d["x"][:, ::-1].copy()}).out[:, ::-1]
    assert not np.allclose(a, b, atol=1e-4)


def test_nearest_resize_matches_torch_rule():
    x = np.arange(2 * 5).reshape(1, 5, 2).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(_nearest_resize(x, 10)), np.repeat(x, 2, axis=1))
    idx = np.floor(np.arange(3) * 5 / 3).astype(int)  # torch nearest: floor(dst * in / out)
    np.testing.assert_array_equal(np.asarray(_nearest_resize(x, 3)), x[:, idx])


# ----------------------------------------------------------------------------- jit and grads


@functools.partial(jax.jit, static_argnums=0)
def _grads(graphdef, params, rest, d):
    """Gradients w.r.t. the parameters and the text tokens, through split/merge under jit."""
    def loss(params, tokens):
        m = nnx.merge(graphdef, params, rest)
        o = m(d["x"], d["t"], **conds_for(m, d, cross_tokens=tokens), hidden_layer=HIDDEN)
        return jnp.sum(o.out**2) + jnp.sum(o.hidden**2)
    return jax.grad(loss, argnums=(0, 1))(params, d["cross_tokens"])


def test_grads_finite_with_masked_row_under_remat():
    d = inputs()
    d["cross_mask"][0] = False  # a fully masked row must not give NaN gradients
    g_params, g_tokens = _grads(*nnx.split(make(**FULL_P, remat=True), nnx.Param, ...), d)
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(g_params))
    assert np.abs(np.asarray(g_params["transformer"]["layers"][1]["ff"]["ff"][2]["kernel"][...])).max() > 0
    assert not np.asarray(g_tokens[0]).any()  # masked text gets no gradient
    assert np.asarray(g_tokens[1]).any()


# ----------------------------------------------------------------------------- names, sharding


def _block_keys(i: int, *, adaln: bool, qk: bool) -> set[str]:
    p = f"transformer.layers.{i}."
    keys = ["pre_norm.gamma", "pre_norm.beta", "self_attn.to_qkv.weight", "self_attn.to_out.weight",
            "cross_attend_norm.gamma", "cross_attend_norm.beta", "cross_attn.to_q.weight",
            "cross_attn.to_kv.weight", "cross_attn.to_out.weight",
            "ff_norm.gamma", "ff_norm.beta", "ff.ff.0.proj.weight", "ff.ff.0.proj.bias",
            "ff.ff.2.weight", "ff.ff.2.bias"]
    if qk:
        keys += [f"{a}.{n}_norm.{w}" for a in ("self_attn", "cross_attn") for n in "qk"
                 for w in ("weight", "bias")]
    if adaln:
        keys.append("to_scale_shift_gate")
    return {p + k for k in keys}


# torch shapes, written by hand from stable-audio-tools 0.0.19 (dit.py, transformer.py, blocks.py).
TOP_KEYS = {
    "timestep_features.weight": (128, 1),
    "to_timestep_embed.0.weight": (EMBED, 256), "to_timestep_embed.0.bias": (EMBED,),
    "to_timestep_embed.2.weight": (EMBED, EMBED), "to_timestep_embed.2.bias": (EMBED,),
    "to_cond_embed.0.weight": (EMBED, COND), "to_cond_embed.2.weight": (EMBED, EMBED),
    "to_global_embed.0.weight": (EMBED, GLOBAL), "to_global_embed.2.weight": (EMBED, EMBED),
    "preprocess_conv.weight": (IO + CONCAT, IO + CONCAT, 1),
    "postprocess_conv.weight": (IO, IO, 1),
    "transformer.project_in.weight": (EMBED, IO + CONCAT),
    "transformer.project_out.weight": (IO, EMBED),
    "transformer.rotary_pos_emb.inv_freq": (16,),  # RotaryEmbedding(max(32 // 2, 32))
}
ADALN_KEYS = {
    "transformer.global_cond_embedder.0.weight": (EMBED, EMBED),
    "transformer.global_cond_embedder.0.bias": (EMBED,),
    "transformer.global_cond_embedder.2.weight": (6 * EMBED, EMBED),
    "transformer.global_cond_embedder.2.bias": (6 * EMBED,),
}
BLOCK_SHAPES = {
    "self_attn.to_qkv.weight": (3 * EMBED, EMBED), "cross_attn.to_kv.weight": (2 * EMBED, EMBED),
    "ff.ff.0.proj.weight": (2 * 4 * EMBED, EMBED), "ff.ff.2.weight": (EMBED, 4 * EMBED),
    "to_scale_shift_gate": (6 * EMBED,), "self_attn.q_norm.weight": (EMBED // HEADS,),
}


def _abstract(**cfg):
    kw = config(**cfg)
    return nnx.eval_shape(lambda: DiffusionTransformer(**kw, rngs=nnx.Rngs(0)))


def torch_key(path) -> str:
    return key_map.torch_key(tuple(str(p) for p in path), prefix="")


@pytest.mark.parametrize("cfg", [FULL_P, {**FULL_A, "qk_norm": "ln"}], ids=["prepend", "adaLN"])
def test_state_paths_match_torch_keys(cfg):
    adaln = cfg["global_cond_type"] == "adaLN"
    model = _abstract(**cfg)
    flat = {torch_key(p): (v.shape[::-1] if p[-1] == "kernel" else v.shape)
            for p, v in nnx.to_flat_state(nnx.state(model))}
    expected = {**TOP_KEYS, **(ADALN_KEYS if adaln else {})}
    block_keys = set().union(*(_block_keys(i, adaln=adaln, qk=True) for i in range(DEPTH)))
    assert set(flat) == set(expected) | block_keys
    for k, shape in expected.items():
        assert flat[k] == shape, k
    for k, shape in BLOCK_SHAPES.items():
        if f"transformer.layers.1.{k}" in flat:
            assert flat[f"transformer.layers.1.{k}"] == shape, k
    buffers = {torch_key(p) for p, _ in nnx.to_flat_state(nnx.state(model, Buffer))}
    assert buffers == {k for k in flat if k.endswith((".beta", ".inv_freq"))}


def test_sharding_metadata_and_rules():
    model = _abstract(**FULL_A)
    blk = model.transformer.layers[0]
    assert blk.self_attn.to_qkv.kernel.get_metadata()["out_sharding"] == ("embed", "heads")
    assert blk.ff.ff[2].kernel.get_metadata()["out_sharding"] == ("mlp", "embed")
    rules = (("embed", "fsdp"), ("heads", "tensor"), ("mlp", "tensor"))
    with nnx.logical_axis_rules(rules):
        specs = nnx.get_partition_spec(nnx.state(model))
    flat = {torch_key(p): v.get_value() for p, v in nnx.to_flat_state(specs)}
    P = jax.sharding.PartitionSpec
    assert flat["transformer.layers.0.self_attn.to_out.weight"] == P("tensor", "fsdp")
    assert flat["transformer.layers.0.ff.ff.0.proj.weight"] == P("fsdp", "tensor")
    assert flat["transformer.global_cond_embedder.2.weight"] == P("tensor", "fsdp")
    assert flat["transformer.project_in.weight"] == P(None, "fsdp")
    assert flat["transformer.layers.0.pre_norm.gamma"] == P()
    assert flat["preprocess_conv.weight"] == P()


def test_block_weight_matrices_and_count():
    model = _abstract(**PLAIN)
    assert [len(m) for m in block_weight_matrices(model)] == [4] * DEPTH  # no cross-attention
    model = _abstract(**FULL_P)
    mats = block_weight_matrices(model)
    assert [len(m) for m in mats] == [7] * DEPTH
    assert mats[0][0].shape == (EMBED, 3 * EMBED) and mats[0][-1].shape == (4 * EMBED, EMBED)
    assert len(block_weight_matrices(model, include_cross=False)[0]) == 4
    shapes = {**TOP_KEYS, **{f"transformer.layers.{i}.{k}": s for i in range(DEPTH)
                             for k, s in BLOCK_SHAPES.items() if "scale_shift" not in k}}
    n = count_params(model)
    assert n == sum(int(np.prod(a.shape)) for a in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n > sum(int(np.prod(s)) for k, s in shapes.items() if "inv_freq" not in k)


def test_bad_inputs_raise():
    model = make(**PLAIN)
    d = inputs()
    with pytest.raises(ValueError):
        model(d["x"], d["t"], cross_tokens=d["cross_tokens"])
    with pytest.raises(ValueError):
        model(d["x"], d["t"], global_cond=d["global_cond"])
    with pytest.raises(ValueError):
        model(d["x"], d["t"], hidden_layer=DEPTH)
    with pytest.raises(ValueError):
        _abstract(embed_dim=32)  # dim_heads 16 < rotary dim 32: stable-audio-tools fails too
    with pytest.raises(ValueError):
        _abstract(global_cond_type="film")
