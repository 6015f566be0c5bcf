"""The XLA:CPU attention formulation (`models.attention.cpu_attention`, what `xla_attention` runs on the
CPU backend) against `jax.nn.dot_product_attention`: values and gradients of q, k and v, with key
masks, a row with no valid key, grouped heads, float32 and bfloat16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstage.models.attention import attention, cpu_attention, xla_attention

# (batch, queries, keys, q heads, kv heads, head size, masked)
CASES = {
    "self": (2, 9, 9, 4, 4, 8, False),
    "cross_masked": (3, 8, 5, 4, 4, 8, True),
    "grouped_masked": (3, 7, 6, 6, 2, 8, True),
    "grouped_one_kv_head": (2, 5, 5, 4, 1, 16, False),
}
TOLERANCE = {jnp.float32: 2e-5, jnp.bfloat16: 3e-2}  # relative to the largest reference magnitude


def _inputs(case, dtype):
    b, t, s, n, kh, dh, masked = CASES[case]
    rng = np.random.default_rng(sum(map(ord, case)))
    q, k, v = (jnp.asarray(rng.standard_normal(shape), dtype)
               for shape in [(b, t, n, dh), (b, s, kh, dh), (b, s, kh, dh)])
    mask = None
    if masked:
        m = rng.random((b, s)) < 0.6
        m[0] = False  # example 0: no valid key at all
        m[1, 0] = True
        mask = jnp.asarray(m)
    return q, k, v, mask


def _reference(q, k, v, mask):
    return jax.nn.dot_product_attention(q, k, v, mask=None if mask is None else mask[:, None, None, :],
                                        implementation="xla")


def _values_and_grads(fn, q, k, v, mask, zero_empty: bool):
    weights = jnp.asarray(np.random.default_rng(1).standard_normal(q.shape), jnp.float32)

    def loss(q, k, v):
        out = fn(q, k, v, mask)
        if zero_empty and mask is not None:
            out = jnp.where(jnp.any(mask, -1)[:, None, None, None], out, 0)
        return jnp.sum(out.astype(jnp.float32) * weights), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    return out, grads


def _close(got, want, dtype, what):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert np.all(np.isfinite(got)), f"{what}: not finite"
    scale = max(float(np.max(np.abs(want))), 1e-6)
    err = float(np.max(np.abs(got - want))) / scale
    assert err < TOLERANCE[dtype], f"{what}: relative error {err:.2e}"


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("zero_empty", [True, False], ids=["caller_zeroes_empty_rows", "raw"])
def test_cpu_attention_matches_jax_values_and_grads(case, dtype, zero_empty):
    q, k, v, mask = _inputs(case, dtype)
    out, grads = _values_and_grads(cpu_attention, q, k, v, mask, zero_empty)
    want_out, want_grads = _values_and_grads(_reference, q, k, v, mask, zero_empty)
    assert out.dtype == q.dtype and out.shape == q.shape
    _close(out, want_out, dtype, "output")
    for name, g, w, x in zip("qkv", grads, want_grads, (q, k, v)):
        assert g.dtype == x.dtype and g.shape == x.shape
        _close(g, w, dtype, f"d{name}")


def test_empty_rows_are_zero_with_zero_gradient_through_attention():
    q, k, v, mask = _inputs("grouped_masked", jnp.float32)

    def loss(q, k, v):
        out = attention(q, k, v, mask, implementation="xla")
        return jnp.sum(out ** 2), out

    (_, out), (dq, dk, dv) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    assert not np.any(np.asarray(out[0])) and not np.any(np.asarray(dq[0]))  # example 0 has no valid key
    assert not np.any(np.asarray(dk[0])) and not np.any(np.asarray(dv[0]))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in (dq, dk, dv))


def test_xla_attention_uses_the_cpu_formulation_on_cpu():
    q, k, v, mask = _inputs("cross_masked", jnp.float32)
    got = jax.jit(xla_attention)(q, k, v, mask)
    assert jax.default_backend() == "cpu"
    np.testing.assert_array_equal(np.asarray(got), np.asarray(jax.jit(cpu_attention)(q, k, v, mask)))
