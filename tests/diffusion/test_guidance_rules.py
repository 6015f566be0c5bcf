"""Guidance rules (cfg, CFG rescale, APG) against numpy re-derivations of the published formulas, and
``cfg_batched`` with each rule against two separate model calls."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstage.diffusion.guidance_rules import CFG, KINDS, GuidanceRule, combine
from jaxstage.diffusion.objectives import EDM, expand_to
from jaxstage.diffusion.samplers import cfg_batched

B, T, C = 4, 16, 3
RNG = np.random.default_rng(0)
D_COND = RNG.normal(0.3, 1.0, (B, T, C)).astype(np.float32)
D_UNCOND = (0.6 * D_COND + RNG.normal(0.0, 0.5, (B, T, C))).astype(np.float32)
RULES = {"cfg": CFG, "rescale": GuidanceRule("rescale", rescale_phi=0.7),
         "apg": GuidanceRule("apg", apg_eta=0.3, apg_norm_threshold=2.0)}


def _flat(a):
    return a.reshape(len(a), -1).astype(np.float64)


def numpy_rescale(d_c, d_u, w, phi):
    """Lin et al. 2024 §3.4 on per-example flattened arrays, float64 (unbiased std, as torch)."""
    d_cfg = d_u + w * (d_c - d_u)
    ratio = _flat(d_c).std(1, ddof=1) / _flat(d_cfg).std(1, ddof=1)
    return phi * d_cfg * ratio[:, None, None] + (1 - phi) * d_cfg


def numpy_apg(d_c, d_u, w, eta, r):
    """Sadat et al. 2024, Algorithm 1 (no momentum), per example in float64."""
    out = []
    for c, u in zip(d_c.astype(np.float64), d_u.astype(np.float64)):
        delta = c - u
        if r > 0:
            delta = delta * min(1.0, r / np.linalg.norm(delta))
        unit = c / np.linalg.norm(c)
        parallel = np.sum(delta * unit) * unit
        out.append(c + (w - 1) * (delta - parallel + eta * parallel))
    return np.stack(out)


def _combine(rule, scale, d_c=D_COND, d_u=D_UNCOND):
    return np.asarray(jax.jit(combine, static_argnums=3)(d_c, d_u, scale, rule))


def test_rules_are_static_arguments():
    assert hash(GuidanceRule("apg", apg_eta=0.5)) == hash(GuidanceRule("apg", apg_eta=0.5))
    assert GuidanceRule("apg", apg_eta=0.5) != GuidanceRule("apg", apg_eta=0.4)
    with pytest.raises(ValueError, match="guidance kind 'pag'"):
        GuidanceRule("pag")
    with pytest.raises(ValueError, match="rescale_phi"):
        GuidanceRule("rescale", rescale_phi=1.5)


def test_cfg_is_the_formula():
    np.testing.assert_allclose(_combine(CFG, 3.0), D_UNCOND + 3.0 * (D_COND - D_UNCOND), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("phi", [0.0, 0.7, 1.0])
def test_rescale_matches_lin_et_al(phi):
    got = _combine(GuidanceRule("rescale", rescale_phi=phi), 3.0)
    np.testing.assert_allclose(got, numpy_rescale(D_COND, D_UNCOND, 3.0, phi), rtol=1e-5, atol=1e-5)


def test_rescale_phi_zero_is_cfg_and_phi_one_matches_the_conditional_std():
    np.testing.assert_allclose(_combine(GuidanceRule("rescale", rescale_phi=0.0), 3.0), _combine(CFG, 3.0),
                               rtol=1e-6, atol=1e-6)
    full = _combine(GuidanceRule("rescale", rescale_phi=1.0), 3.0)
    np.testing.assert_allclose(_flat(full).std(1), _flat(D_COND).std(1), rtol=1e-5)
    assert not np.allclose(_flat(_combine(CFG, 3.0)).std(1), _flat(D_COND).std(1), rtol=1e-2)  # plain CFG does inflate it


@pytest.mark.parametrize("eta,r", [(0.0, 0.0), (0.3, 0.0), (0.0, 2.0), (1.0, 1.0)])
def test_apg_matches_sadat_et_al(eta, r):
    got = _combine(GuidanceRule("apg", apg_eta=eta, apg_norm_threshold=r), 3.0)
    np.testing.assert_allclose(got, numpy_apg(D_COND, D_UNCOND, 3.0, eta, r), rtol=1e-5, atol=1e-5)


def test_apg_eta_one_without_threshold_is_cfg():
    np.testing.assert_allclose(_combine(GuidanceRule("apg", apg_eta=1.0), 3.0), _combine(CFG, 3.0),
                               rtol=1e-5, atol=1e-5)


def test_apg_update_is_orthogonal_to_the_conditional_prediction_at_eta_zero():
    update = _combine(GuidanceRule("apg", apg_eta=0.0), 3.0).astype(np.float64) - D_COND
    dots = np.sum(update * D_COND, axis=(1, 2)) / (np.linalg.norm(update.reshape(B, -1), axis=1)
                                                   * np.linalg.norm(D_COND.reshape(B, -1), axis=1))
    np.testing.assert_allclose(dots, 0.0, atol=1e-5)
    assert np.all(np.linalg.norm(update.reshape(B, -1), axis=1) > 1.0)  # and it is not zero


def test_apg_norm_threshold_caps_the_difference():
    """With η = 1 nothing is projected away, so the update is (w − 1)·Δ_capped: its norm is (w − 1)·r
    where ‖Δ‖ > r and (w − 1)·‖Δ‖ where ‖Δ‖ <= r."""
    norms = np.linalg.norm((D_COND - D_UNCOND).reshape(B, -1), axis=1)
    r = float(np.median(norms))  # half the examples are capped
    update = _combine(GuidanceRule("apg", apg_eta=1.0, apg_norm_threshold=r), 3.0) - D_COND
    np.testing.assert_allclose(np.linalg.norm(update.reshape(B, -1), axis=1), 2.0 * np.minimum(norms, r), rtol=1e-5)
    assert (norms > r).any() and (norms < r).any()


def test_apg_guards_a_zero_conditional_prediction_and_a_zero_difference():
    zeros = np.zeros_like(D_COND)
    rule = GuidanceRule("apg", apg_eta=0.0, apg_norm_threshold=1.0)
    out = _combine(rule, 3.0, zeros, D_UNCOND)  # no parallel direction: Δ_⊥ = Δ (capped)
    assert np.isfinite(out).all()
    same = _combine(rule, 3.0, D_COND, D_COND)  # Δ = 0: nothing to cap, D_c back
    np.testing.assert_allclose(same, D_COND, atol=1e-6)
    flat = _combine(GuidanceRule("rescale", rescale_phi=1.0), 3.0, zeros, zeros)
    np.testing.assert_array_equal(flat, zeros)  # std(D_cfg) = 0: no division by zero


@pytest.mark.parametrize("kind", KINDS)
def test_scale_one_returns_the_conditional_prediction(kind):
    np.testing.assert_allclose(_combine(RULES[kind], 1.0), D_COND, rtol=1e-6, atol=1e-6)


def test_combine_computes_in_float32_and_keeps_the_dtype():
    out = combine(jnp.asarray(D_COND, jnp.bfloat16), jnp.asarray(D_UNCOND, jnp.bfloat16), 3.0, RULES["apg"])
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), _combine(RULES["apg"], 3.0), atol=0.1)


@pytest.mark.parametrize("kind", KINDS)
def test_cfg_batched_with_each_rule_equals_two_calls(kind):
    obj, rule, scale, interval = EDM(), RULES[kind], 2.5, (0.5, 3.0)
    calls = []

    def denoise_with(x, level, shift):  # conditioning: a per-example shift [B]
        calls.append(x.shape[0])
        return 0.8 * x / (1.0 + expand_to(level, x)) + expand_to(shift, x)

    cond, uncond = np.linspace(0.2, 1.0, B, dtype=np.float32), np.full((B,), -0.3, np.float32)
    level = np.asarray([0.1, 1.0, 2.0, 5.0], np.float32)  # first and last outside the interval
    x = RNG.normal(size=(B, T, C)).astype(np.float32)

    @jax.jit
    def evaluate(x, level):
        d_c, d_u = denoise_with(x, level, cond), denoise_with(x, level, uncond)
        expected = jnp.where(expand_to((level >= interval[0]) & (level <= interval[1]), x),
                             combine(d_c, d_u, scale, rule), d_c)
        return d_c, expected, cfg_batched(denoise_with, cond, uncond, obj, scale, interval, rule)(x, level)

    d_c, expected, got = map(np.asarray, evaluate(x, level))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[[0, 3]], d_c[[0, 3]])
    assert not np.allclose(got[1:3], d_c[1:3], atol=1e-2)
    assert calls == [B, B, 2 * B]
