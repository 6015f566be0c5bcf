"""Decayed SSL guidance: λ_ssl(p), the cosine loss, and gradient routing (projector at λ₀, backbone at λ_ssl)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxstage.stage.guidance import (
    AlignmentConfig,
    Projector,
    alignment_loss,
    guided_alignment,
    route_gradient,
    ssl_weight,
)

CFG = AlignmentConfig(hidden=32)
B, T, D_IN, D_MODEL, D_SSL = 2, 6, 5, 8, 7
P_VALUES = (0.0, 0.3, 0.7, 0.95)


def test_ssl_weight_values():
    p = jnp.array([0.0, 0.25, 0.5, 0.8999, 0.9, 0.95, 1.0])
    got = np.asarray(ssl_weight(p, lambda0=0.5, gamma=1.0, p_off=0.9))
    want = np.array([0.5, 0.375, 0.25, 0.5 * 0.1001, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert got[4] == 0.0  # exactly zero at the p_off boundary
    np.testing.assert_allclose(ssl_weight(0.5, lambda0=1.0, gamma=2.0, p_off=1.0), 0.25, rtol=1e-6)


def test_alignment_loss_reference_values():
    a = jnp.array([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])
    orth = jnp.array([[[0.0, 3.0, 0.0], [0.0, 0.0, 1.0]]])
    assert abs(float(alignment_loss(a, a))) < 1e-6
    assert abs(float(alignment_loss(a, 5.0 * a))) < 1e-6  # scale-invariant
    np.testing.assert_allclose(alignment_loss(a, orth), 1.0, atol=1e-6)
    np.testing.assert_allclose(alignment_loss(a, -a), 2.0, atol=1e-6)


def test_alignment_loss_finite_gradient_at_zero():
    zeros = jnp.zeros((1, 3, 4))
    value, grad = jax.jit(jax.value_and_grad(alignment_loss))(zeros, zeros)
    assert np.isfinite(np.asarray(grad)).all() and np.isfinite(float(value))
    assert np.isfinite(np.asarray(jax.jit(jax.grad(alignment_loss))(zeros, jnp.ones((1, 3, 4))))).all()


def test_route_gradient_keeps_value_scales_gradient():
    h = jnp.arange(6.0).reshape(2, 3) - 2.5
    np.testing.assert_array_equal(jax.jit(route_gradient)(h, 0.0), h)
    grad = jax.jit(jax.grad(lambda x, g: jnp.sum(route_gradient(x, g) ** 2)))(h, 0.25)
    np.testing.assert_allclose(grad, 0.25 * 2 * h, rtol=1e-6)


def _normal(rng: np.random.Generator, shape) -> np.ndarray:
    return (rng.standard_normal(shape) / np.sqrt(shape[0] if len(shape) == 2 else 1)).astype(np.float32)


@pytest.fixture(scope="module")
def projector() -> Projector:
    # Shapes from eval_shape, values from numpy: compiling the PRNG init costs seconds on CPU.
    abstract_module = nnx.eval_shape(lambda: Projector(D_MODEL, D_SSL, hidden=CFG.hidden, rngs=nnx.Rngs(0)))
    graphdef, abstract = nnx.split(abstract_module)
    rng = np.random.default_rng(0)
    return nnx.merge(graphdef, jax.tree.map(lambda a: jnp.asarray(_normal(rng, a.shape)), abstract))


def _setup(projector: Projector):
    graphdef, proj_params = nnx.split(projector)
    rng = np.random.default_rng(1)
    w_backbone = _normal(rng, (D_IN, D_MODEL))
    x = _normal(rng, (B, T, D_IN))
    targets = _normal(rng, (B, T, D_SSL))

    @jax.jit
    def grads(w, proj, p):
        def loss(w, proj):
            hidden = x @ w  # the backbone stand-in
            total, metrics = guided_alignment(hidden, nnx.merge(graphdef, proj), targets, p, CFG)
            return total, metrics

        return jax.grad(loss, argnums=(0, 1), has_aux=True)(w, proj)

    return grads, w_backbone, proj_params


def test_gradient_routing(projector):
    """Acceptance 3: projector gradient independent of p; backbone gradient = (λ_ssl(p)/λ₀)·(p=0 gradient)."""
    grads, w, proj = _setup(projector)
    (gw0, gp0), m0 = grads(w, proj, jnp.float32(0.0))
    assert np.abs(np.asarray(gw0)).max() > 0
    np.testing.assert_allclose(m0["ssl_weight"], CFG.lambda0)
    np.testing.assert_allclose(m0["loss_align"], 1.0, atol=0.5)  # random targets: cos near 0
    for p in P_VALUES[1:]:
        (gw, gp), metrics = grads(w, proj, jnp.float32(p))
        jax.tree.map(np.testing.assert_array_equal, gp, gp0)  # projector: full λ₀ at every p
        np.testing.assert_array_equal(metrics["loss_align"], m0["loss_align"])  # forward unchanged
        ratio = 0.0 if p >= CFG.p_off else (1.0 - p) ** CFG.gamma  # λ_ssl(p)/λ₀, by hand
        if p >= CFG.p_off:
            assert ratio == 0.0 and not np.any(np.asarray(gw))  # exactly zero
        else:
            np.testing.assert_allclose(gw, ratio * gw0, rtol=1e-5, atol=1e-8)
            np.testing.assert_allclose(metrics["ssl_backbone_scale"], ratio, rtol=1e-6)


def test_projector_shapes_and_tokenwise(projector):
    h = _normal(np.random.default_rng(2), (B, T, D_MODEL))
    apply = nnx.jit(lambda module, x: module(x))
    out = apply(projector, h)
    assert out.shape == (B, T, D_SSL)
    np.testing.assert_allclose(out[1, 2], apply(projector, h[1, 2][None])[0], rtol=1e-5, atol=1e-6)
    assert projector.layers[1].kernel.shape == (CFG.hidden, CFG.hidden)


@pytest.mark.parametrize(
    "field, value",
    [("lambda0", 0.0), ("gamma", -1.0), ("p_off", 1.5), ("layer", 0), ("hidden", 0), ("eps", 0.0)],
)
def test_config_validation_names_field(field, value):
    with pytest.raises(ValueError, match=field):
        AlignmentConfig(**{field: value})


def test_hidden_layer_default_depth_third():
    assert AlignmentConfig().hidden_layer(12) == 3  # output of block 4 (REPA's encoder_depth for 12 blocks)
    assert AlignmentConfig().hidden_layer(2) == 0
    assert AlignmentConfig(layer=5).hidden_layer(8) == 4
    with pytest.raises(ValueError, match="layer"):
        AlignmentConfig(layer=9).hidden_layer(8)
