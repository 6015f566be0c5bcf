"""Attention kernels (jaxstage/models/attention.py): selection per platform, refusals, and numerical
agreement of every formulation that runs here (XLA; cuDNN's sequence-length formulation through XLA;
Pallas splash in interpret mode)."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstage.models import attention as attn

# ------------------------------------------------------------------------------- selection


@pytest.mark.parametrize("platform, dtype, head_dim, expected", [
    ("cpu", jnp.bfloat16, 64, "xla"),
    ("cpu", jnp.float32, 128, "xla"),
    ("gpu", jnp.bfloat16, 64, "cudnn"),
    ("cuda", jnp.float16, 128, "cudnn"),
    ("gpu", jnp.float32, 64, "xla"),  # cuDNN's fused kernel needs bf16/fp16
    ("gpu", jnp.bfloat16, 256, "xla"),  # head size past the kernel's limit
    ("gpu", jnp.bfloat16, 60, "xla"),  # not a multiple of 8
    ("tpu", jnp.bfloat16, 128, "splash"),
    ("tpu", jnp.float32, 256, "splash"),
    ("tpu", jnp.bfloat16, 64, "xla"),
])
def test_auto_selection(platform, dtype, head_dim, expected):
    assert attn.resolve("auto", platform=platform, dtype=dtype, head_dim=head_dim) == expected


@pytest.mark.parametrize("choice, platform, dtype, head_dim, words", [
    ("cudnn", "cpu", jnp.bfloat16, 64, "needs an NVIDIA GPU (this backend: cpu)"),
    ("cudnn", "gpu", jnp.float32, 64, "needs bfloat16 or float16 compute"),
    ("cudnn", "gpu", jnp.bfloat16, 256, "head size that is a multiple of 8 up to 128 (got 256)"),
    ("splash", "gpu", jnp.bfloat16, 128, "needs a TPU (this backend: gpu)"),
    ("splash", "tpu", jnp.bfloat16, 64, "multiple of 128 (got 64)"),
])
def test_impossible_choice_is_a_one_line_error(choice, platform, dtype, head_dim, words):
    with pytest.raises(attn.AttentionUnavailable) as err:
        attn.resolve(choice, platform=platform, dtype=dtype, head_dim=head_dim)
    message = str(err.value)
    assert "\n" not in message and words in message and message.startswith(f"model.attention={choice} ")


def test_explicit_choices_that_can_run():
    assert attn.resolve("xla", platform="gpu", dtype=jnp.bfloat16, head_dim=64) == "xla"
    assert attn.resolve("cudnn", platform="gpu", dtype=jnp.bfloat16, head_dim=128) == "cudnn"
    assert attn.resolve("splash", platform="tpu", dtype=jnp.bfloat16, head_dim=128) == "splash"


def test_cli_refuses_cudnn_on_cpu_in_one_line(tmp_path):
    """The train command on this CPU with model.attention=cudnn stops at once with the one-line reason."""
    done = subprocess.run(
        [sys.executable, "-m", "jaxstage.cli", "train", "--config", "configs/tiny_t2a.py", "--workdir",
         str(tmp_path / "run"), "--set", "model.attention=cudnn", "--set", "precision.compute=bfloat16"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "model.attention=cudnn" in line]
    assert len(lines) == 1 and "needs an NVIDIA GPU (this backend: cpu)" in lines[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------------------------- numerics


def _reference(q, k, v, mask):
    """Plain float64 softmax attention with grouped heads; rows without a valid key are zero."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    groups = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    if mask is not None:
        logits = np.where(np.asarray(mask)[:, None, None, :], logits, -np.inf)
    logits = logits - np.max(logits, axis=-1, keepdims=True, initial=-1e300, where=np.isfinite(logits))
    weights = np.exp(logits)
    total = weights.sum(-1, keepdims=True)
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    return np.einsum("bnts,bsnh->btnh", weights, v)


def _inputs(dtype, t=20, s=12, heads=4, kv_heads=2, dh=32):
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    q = jax.random.normal(keys[0], (3, t, heads, dh)).astype(dtype)
    k = jax.random.normal(keys[1], (3, s, kv_heads, dh)).astype(dtype)
    v = jax.random.normal(keys[2], (3, s, kv_heads, dh)).astype(dtype)
    # a padded suffix, a mask with holes (prompt padding, then number tokens: not a prefix), an empty row
    mask = np.zeros((3, s), bool)
    mask[0, :7] = True
    mask[1, [0, 1, 2, 9, 10, 11]] = True
    return q, k, v, jnp.asarray(mask)


FORMULATIONS = {
    "xla": lambda q, k, v, m: attn.attention(q, k, v, m, implementation="xla"),
    "lengths": lambda q, k, v, m: attn._zero_empty_rows(attn.cudnn_attention(q, k, v, m, implementation="xla"), m),
    "splash": lambda q, k, v, m: attn.attention(q, k, v, m, implementation="splash", interpret=True),
}
TOLERANCE = {jnp.float32: 2e-5, jnp.bfloat16: 3e-2}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", ["xla", "lengths", "splash"])
@pytest.mark.parametrize("masked", [True, False], ids=["masked", "unmasked"])
def test_formulations_agree_with_reference(name, dtype, masked):
    q, k, v, mask = _inputs(dtype)
    mask = mask if masked else None
    out = jax.jit(FORMULATIONS[name])(q, k, v, mask)
    assert out.dtype == dtype and out.shape == q.shape
    np.testing.assert_allclose(np.asarray(out, np.float64), _reference(q, k, v, mask), atol=TOLERANCE[dtype],
                               rtol=TOLERANCE[dtype])


@pytest.mark.parametrize("name", ["lengths", "splash"])
def test_gradients_agree_with_xla(name):
    """Forward + backward (what training runs) of each formulation equal XLA's, with the key mask."""
    q, k, v, mask = _inputs(jnp.float32)
    cotangent = jax.random.normal(jax.random.PRNGKey(5), q.shape)

    def grads(fn):
        return jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v, mask) * cotangent), argnums=(0, 1, 2))(q, k, v)

    for got, want in zip(jax.jit(lambda: grads(FORMULATIONS[name]))(), jax.jit(lambda: grads(FORMULATIONS["xla"]))()):
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, atol=5e-5, rtol=5e-5)


def test_pack_valid_keys_keeps_order():
    k = jnp.arange(2 * 5, dtype=jnp.float32).reshape(2, 5, 1, 1)
    mask = jnp.asarray([[False, True, False, True, True], [True, False, False, False, False]])
    packed, _, lengths = attn.pack_valid_keys(k, k, mask)
    assert lengths.tolist() == [3, 1]
    assert packed[0, :3, 0, 0].tolist() == [1.0, 3.0, 4.0] and packed[1, 0, 0, 0] == 5.0


def test_uses_cudnn_reads_the_custom_call():
    assert attn.uses_cudnn('%x = custom-call(...), custom_call_target="__cudnn$fmhaSoftmax"')
    hlo = jax.jit(lambda q: attn.attention(q, q, q)).lower(jnp.ones((1, 4, 2, 8))).as_text()
    assert not attn.uses_cudnn(hlo)
