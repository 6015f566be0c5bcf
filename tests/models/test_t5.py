"""T5 encoder port: parity with transformers' T5EncoderModel, checkpoint loading, errors, tokenizer,
the jitted text encoder, and weights passed to jit as arguments (not baked-in constants)."""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax
import jax.numpy as jnp
from safetensors.numpy import load_file, save_file
from t5_tiny import TINY_T5, random_t5, save_t5

from jaxstage.models import convert_t5
from jaxstage.models.convert_t5 import (
    T5TextEncoder,
    load_t5,
    load_t5_tokenizer,
    read_t5_config,
    t5_forward_jit,
    tokenize,
)
from jaxstage.models.t5 import relative_position_buckets

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from hf_tiny import T5_DIM, save_tiny_t5

TOL = 1e-4
LENGTH = 40  # > 2 * max_distance (20): the log buckets and the clipped last bucket are used


def _batch(length: int = LENGTH, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """3 sequences: full, padded after 25 tokens, padded after 5 (pad id 0 where masked)."""
    ids = np.random.default_rng(seed).integers(2, TINY_T5["vocab_size"], (3, length)).astype(np.int32)
    mask = np.ones((3, length), bool)
    mask[1, 25:] = False
    mask[2, 5:] = False
    return np.where(mask, ids, 0).astype(np.int32), mask


def _reference(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long())
    return out.last_hidden_state.float().numpy()


def _jax(loaded, ids, mask) -> np.ndarray:
    return np.asarray(t5_forward_jit(loaded.graphdef, loaded.params, jnp.asarray(ids), jnp.asarray(mask)))


@pytest.mark.parametrize("ff", ["relu", "gated-gelu", "gated-silu"])
def test_matches_transformers_with_padding(tmp_path, ff):
    model = random_t5(ff)
    loaded = load_t5(save_t5(model, tmp_path / "t5"))
    ids, mask = _batch()
    out, ref = _jax(loaded, ids, mask), _reference(model, ids, mask)
    assert out.shape == ref.shape == (3, LENGTH, TINY_T5["d_model"]) and out.dtype == np.float32
    err = float(np.abs(out - ref)[mask].max())
    assert err <= TOL, f"{ff}: max abs error {err:.2e} on real tokens"
    assert np.isfinite(out).all()
    assert not np.allclose(out[1, 25:], 0.0)  # padding is not zeroed inside the module (the caller does it)


@pytest.mark.parametrize("buckets,distance", [(32, 128), (8, 20)])
def test_relative_position_buckets_match_transformers(buckets, distance):
    length = 300
    pos = torch.arange(length)
    ref = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket(
        pos[None, :] - pos[:, None], bidirectional=True, num_buckets=buckets, max_distance=distance)
    np.testing.assert_array_equal(relative_position_buckets(length, buckets, distance), ref.numpy())


def test_pytorch_bin_loads_same_weights(tmp_path):
    model = random_t5("gated-gelu")
    safe = load_t5(save_t5(model, tmp_path / "safe"))
    binary = load_t5(save_t5(model, tmp_path / "bin", torch_bin=True))
    assert binary.weight_files[0].name == "pytorch_model.bin"
    for a, b in zip(jax.tree.leaves(safe.params), jax.tree.leaves(binary.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_full_encoder_decoder_checkpoint_loads(tmp_path):
    full_dir = save_t5(random_t5("relu", full=True), tmp_path / "full")
    loaded = load_t5(full_dir)
    assert loaded.ignored_keys and all(k.startswith(("decoder.", "lm_head.")) for k in loaded.ignored_keys)
    reference = transformers.T5EncoderModel.from_pretrained(full_dir, local_files_only=True).eval()
    ids, mask = _batch()
    assert float(np.abs(_jax(loaded, ids, mask) - _reference(reference, ids, mask))[mask].max()) <= TOL


def _edit_checkpoint(directory: Path, drop: str | None = None, add: dict | None = None) -> None:
    sd = load_file(directory / "model.safetensors")
    if drop:
        del sd[drop]
    sd.update(add or {})
    save_file(sd, directory / "model.safetensors")


def _one_line_error(exc_type, fn, *needles: str) -> str:
    with pytest.raises(exc_type) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


def test_errors_name_the_file_or_key(tmp_path):
    _one_line_error(FileNotFoundError, lambda: load_t5(tmp_path / "nowhere"), "nowhere")
    (tmp_path / "empty").mkdir()
    _one_line_error(FileNotFoundError, lambda: load_t5(tmp_path / "empty"), "config.json")

    directory = save_t5(random_t5("relu"), tmp_path / "t5")
    key = "encoder.block.2.layer.1.DenseReluDense.wo.weight"
    _edit_checkpoint(directory, drop=key)
    _one_line_error(KeyError, lambda: load_t5(directory), key, "model.safetensors")

    directory = save_t5(random_t5("relu"), tmp_path / "extra")
    _edit_checkpoint(directory, add={"encoder.block.3.layer.0.layer_norm.weight": np.ones(32, np.float32)})
    _one_line_error(ValueError, lambda: load_t5(directory), "encoder.block.3.layer.0.layer_norm.weight")

    (directory / "model.safetensors").unlink()
    _one_line_error(FileNotFoundError, lambda: load_t5(directory), "model.safetensors", "pytorch_model.bin")


def test_config_errors_name_the_key(tmp_path):
    for key, value in [("feed_forward_proj", "gated-mish"), ("feed_forward_proj", "relu-gated"),
                       ("model_type", "umt5")]:
        directory = save_t5(random_t5("relu"), tmp_path / f"{key}_{value}")
        data = json.loads((directory / "config.json").read_text())
        data[key] = value
        (directory / "config.json").write_text(json.dumps(data))
        _one_line_error(ValueError, lambda d=directory: read_t5_config(d), key, value)


def test_shape_mismatch_names_the_key(tmp_path):
    directory = save_t5(random_t5("relu"), tmp_path / "t5")
    data = json.loads((directory / "config.json").read_text())
    data["d_ff"] = 64
    (directory / "config.json").write_text(json.dumps(data))
    _one_line_error(ValueError, lambda: load_t5(directory), "encoder.block.0.layer.1.DenseReluDense.wi.weight",
                    "(48, 32)")


def test_tokenizer_pads_and_truncates(tmp_path):
    directory = save_tiny_t5(tmp_path / "t5")
    tokenizer = load_t5_tokenizer(directory)
    captions = ["a dog barks", "rain " * 20, ""]
    ids, mask = tokenize(tokenizer, captions, max_length=8)
    assert ids.shape == mask.shape == (3, 8) and ids.dtype == np.int32 and mask.dtype == bool
    assert mask.sum(-1).tolist() == [3, 8, 0]
    assert (ids[~mask] == tokenizer.pad_token_id).all()
    assert ids[0, :3].tolist() == tokenizer("a dog barks")["input_ids"][:3]


def test_text_encoder_matches_transformers_and_zeroes_padding(tmp_path):
    directory = save_tiny_t5(tmp_path / "t5")
    encoder = T5TextEncoder(directory, max_length=12)
    emb, mask = encoder(["a dog barks loud", "rain and wind and water"])
    assert emb.shape == (2, 12, T5_DIM) and emb.dtype == np.float32 and mask.dtype == bool
    assert mask.sum(-1).tolist() == [4, 5]
    assert (emb[~mask] == 0).all()
    reference = transformers.T5EncoderModel.from_pretrained(directory, local_files_only=True).eval()
    ref = _reference(reference, *encoder.tokenize(["a dog barks loud", "rain and wind and water"]))
    assert float(np.abs(emb - ref * mask[..., None]).max()) <= TOL
    info = encoder.describe()
    expected_sha = hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    assert info["weights_sha256"] == expected_sha
    assert (info["dim"], info["max_length"], info["dtype"]) == (T5_DIM, 12, "float32")


def test_weights_are_jit_arguments_not_constants(tmp_path, monkeypatch):
    a = load_t5(save_t5(random_t5("relu", seed=1), tmp_path / "a"))
    b = load_t5(save_t5(random_t5("relu", seed=2), tmp_path / "b"))
    ids, mask = _batch()
    lowered_a = t5_forward_jit.lower(a.graphdef, a.params, ids, mask).as_text()
    lowered_b = t5_forward_jit.lower(b.graphdef, b.params, ids, mask).as_text()
    assert lowered_a == lowered_b  # different weights, same program: no weight is a constant in it
    # the text encoder's jitted function traces once for two models of one config and one batch shape
    traces = []
    original = convert_t5.t5_forward
    monkeypatch.setattr(convert_t5, "t5_forward", lambda *args: traces.append(1) or original(*args))
    shape_ids, shape_mask = _batch(length=17)  # a shape no other test uses: a fresh cache entry
    out_a = convert_t5._masked_embeddings_jit(a.graphdef, a.params, shape_ids, shape_mask)
    out_b = convert_t5._masked_embeddings_jit(b.graphdef, b.params, shape_ids, shape_mask)
    assert len(traces) == 1 and not np.allclose(out_a, out_b)


@pytest.mark.parametrize("dtype,rel_tol", [(jnp.bfloat16, 0.05), (jnp.float16, 0.01)])
def test_half_precision_is_close_and_finite(tmp_path, dtype, rel_tol):
    directory = save_t5(random_t5("gated-gelu"), tmp_path / "t5")
    full, half = load_t5(directory), load_t5(directory, dtype=dtype)
    assert half.params["shared"]["embedding"][...].dtype == dtype
    assert half.params["encoder"]["final_layer_norm"]["weight"][...].dtype == jnp.float32
    ids, mask = _batch()
    ref, out = _jax(full, ids, mask), _jax(half, ids, mask)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert float(np.abs(out - ref)[mask].max() / np.abs(ref).max()) <= rel_tol


def test_only_the_first_block_has_a_relative_position_bias():
    """As transformers: blocks after the first reuse the first block's bias."""
    loaded_cfg = convert_t5.config_from_dict({**TINY_T5, "feed_forward_proj": "relu"})
    _, state = convert_t5.abstract_t5(loaded_cfg)
    blocks = state["encoder"]["block"]
    assert "relative_attention_bias" in blocks[0]["layer"][0]["SelfAttention"]
    assert all("relative_attention_bias" not in blocks[i]["layer"][0]["SelfAttention"] for i in (1, 2))


def test_float16_feed_forward_overflow_is_clipped_not_inf(tmp_path):
    """A feed-forward activation beyond the float16 range (T5 v1.0's known fp16 failure) stays finite."""
    model = random_t5("relu")
    sublayer = model.encoder.block[2].layer[1]
    with torch.no_grad():
        sublayer.layer_norm.weight.mul_(1e5)  # float32 in both ports; scales wi's output
    seen = []
    sublayer.DenseReluDense.wi.register_forward_hook(lambda m, i, o: seen.append(float(o.abs().max())))
    ids, mask = _batch()
    ref = _reference(model, ids, mask)
    assert seen[0] > float(np.finfo(np.float16).max)  # the activation overflows float16
    directory = save_t5(model, tmp_path / "t5")
    half = _jax(load_t5(directory, dtype=jnp.float16), ids, mask)
    assert np.isfinite(half).all()
    assert float(np.abs(_jax(load_t5(directory), ids, mask) - ref)[mask].max()) <= TOL * np.abs(ref).max()


def test_sharded_and_bfloat16_safetensors_load(tmp_path):
    model = random_t5("relu")
    reference = load_t5(save_t5(model, tmp_path / "single"))
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    sharded = load_t5(tmp_path / "sharded")
    assert len(sharded.weight_files) > 1
    for a, b in zip(jax.tree.leaves(reference.params), jax.tree.leaves(sharded.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    bf16 = load_t5(tmp_path / "bf16")
    for a, b in zip(jax.tree.leaves(reference.params), jax.tree.leaves(bf16.params)):
        assert b.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-2, atol=1e-2)
