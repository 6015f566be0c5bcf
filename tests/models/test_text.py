"""Text conditioning: hash tokenizer, learned encoder (padding invariance, jit), precomputed pass-through."""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxstage.models.text import HashTokenizer, PrecomputedText, TextEncoder, make_text_conditioner

VOCAB, WIDTH, DEPTH, HEADS, MAX_LEN = 101, 32, 2, 4, 12


def _new_encoder(key: jax.Array) -> TextEncoder:
    return TextEncoder(VOCAB, WIDTH, DEPTH, HEADS, MAX_LEN, rngs=nnx.Rngs(key))


@pytest.fixture(scope="module")
def encoder_parts():
    """(graphdef, params, rest) of one encoder, initialized under jit (eager init compiles op by op)."""
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: _new_encoder(jax.random.key(0))))
    params, rest = jax.jit(lambda key: nnx.split(_new_encoder(key), nnx.Param, ...)[1:])(jax.random.key(0))
    return graphdef, params, rest


@jax.jit
def _apply(parts, ids, mask):
    """-> (tokens, mask, d sum(tokens^2) / d params): forward and gradient share one compilation."""
    graphdef, params, rest = parts

    def loss(params):
        tokens, out_mask = nnx.merge(graphdef, params, rest)(ids, mask)
        return jnp.sum(tokens**2), (tokens, out_mask)

    grads, (tokens, out_mask) = jax.grad(loss, has_aux=True)(params)
    return tokens, out_mask, grads


def test_tokenizer_ids_padding_truncation():
    tok = HashTokenizer(VOCAB)
    ids, mask = tok(["A low Square-tone, and fast hits!", "", "one two three four five"], max_length=4)
    assert ids.dtype == np.int32 and mask.dtype == np.bool_ and ids.shape == mask.shape == (3, 4)
    expected = [1] + [2 + zlib.crc32(w.encode()) % (VOCAB - 2) for w in ("a", "low", "square")]
    assert ids[0].tolist() == expected  # lowercased, split on punctuation, truncated after BOS + 3 words
    assert ids[1].tolist() == [1, 0, 0, 0] and mask[1].tolist() == [True, False, False, False]
    assert mask[2].all() and np.array_equal(mask, ids != 0)
    assert ids[:, 1:][mask[:, 1:]].min() >= 2 and ids.max() < VOCAB
    # Same word -> same id regardless of case/punctuation.
    assert tok(["Hits"], 2)[0][0, 1] == tok(["hits."], 2)[0][0, 1] == tok(["fast hits"], 3)[0][0, 2]


def test_tokenizer_golden_ids():
    """Pinned values: crc32 ids are identical in every process (Python's `hash` is salted per process)."""
    assert HashTokenizer(101)(["rising chirp with slow pulses"], 8)[0].tolist() == [[1, 70, 98, 55, 21, 68, 0, 0]]
    ids, _ = HashTokenizer(32000)(["Rising chirp, with SLOW pulses"], 8)
    assert ids.tolist() == [[1, 13660, 5099, 15874, 7959, 26213, 0, 0]]


def test_tokenizer_rejects_bad_args():
    with pytest.raises(ValueError):
        HashTokenizer(2)
    with pytest.raises(ValueError):
        HashTokenizer(VOCAB)(["x"], 0)


def test_encoder_shape_and_padding_invariance(encoder_parts):
    tok = HashTokenizer(VOCAB)
    ids, mask = tok(["a low square tone", "fast hits and a falling chirp in noise"], MAX_LEN)
    out, out_mask, _ = _apply(encoder_parts, jnp.asarray(ids), jnp.asarray(mask))
    out = np.asarray(out)
    assert out.shape == (2, MAX_LEN, WIDTH) and out.dtype == jnp.float32
    assert np.array_equal(np.asarray(out_mask), mask)
    assert np.isfinite(np.asarray(out)).all()
    assert np.abs(out[~mask]).max() == 0.0  # pad positions zeroed
    assert np.abs(out[mask]).mean() > 0.1

    # Different ids at padding positions must not change real-token outputs.
    noisy = np.where(mask, ids, np.random.default_rng(0).integers(2, VOCAB, ids.shape)).astype(np.int32)
    out2, _, _ = _apply(encoder_parts, jnp.asarray(noisy), jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(out2)[mask], out[mask], atol=1e-5)

    # ...while changing a real token does change the other real outputs (attention mixes tokens).
    changed = ids.copy()
    changed[0, 1] = (ids[0, 1] + 1 - 2) % (VOCAB - 2) + 2
    out3, _, _ = _apply(encoder_parts, jnp.asarray(changed), jnp.asarray(mask))
    assert np.abs(np.asarray(out3)[0, 2] - out[0, 2]).max() > 1e-4


def test_encoder_trainable_under_jit(encoder_parts):
    ids, mask = HashTokenizer(VOCAB)(["pink noise fade in", "a sine"], MAX_LEN)
    _, _, grads = _apply(encoder_parts, jnp.asarray(ids), jnp.asarray(mask))
    leaves = jax.tree.leaves(grads)
    assert len(leaves) == len(jax.tree.leaves(encoder_parts[1]))
    assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
    pos_grad = np.asarray(grads["pos"][...])
    valid_positions = mask.any(axis=0)
    assert np.abs(pos_grad[valid_positions]).sum() > 0  # learned positions of real tokens get gradient
    assert np.abs(pos_grad[~valid_positions]).sum() == 0  # padding positions are cut off from the output


def test_encoder_rejects_too_long(encoder_parts):
    with pytest.raises(ValueError, match="max_length"):
        _apply(encoder_parts, jnp.ones((1, MAX_LEN + 1), jnp.int32), jnp.ones((1, MAX_LEN + 1), bool))


def test_precomputed_and_factory():
    emb = np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float16)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    cond = make_text_conditioner("precomputed", width=16)
    assert isinstance(cond, PrecomputedText) and not jax.tree.leaves(nnx.state(cond, nnx.Param))
    out, out_mask = cond(jnp.asarray(emb), jnp.asarray(mask))
    assert out.dtype == jnp.float32 and out_mask.dtype == jnp.bool_
    np.testing.assert_array_equal(np.asarray(out), emb.astype(np.float32))
    with pytest.raises(ValueError, match="width"):
        cond(jnp.zeros((1, 5, 8)), jnp.ones((1, 5), bool))

    learned = nnx.eval_shape(  # abstract: no eager initialization
        lambda: make_text_conditioner(
            "learned", width=WIDTH, vocab_size=VOCAB, depth=1, num_heads=HEADS, max_length=MAX_LEN, rngs=nnx.Rngs(0)
        )
    )
    assert isinstance(learned, TextEncoder) and len(learned.layers) == 1
    with pytest.raises(ValueError, match=r"'t5'.*learned.*precomputed"):
        make_text_conditioner("t5", width=WIDTH)
