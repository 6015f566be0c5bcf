"""ARC losses (SPEC §5): relativistic, contrastive, rolled prompts, approximate R1/R2, one-step x̂0."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstage.posttrain.arc_losses import (
    approx_r1_penalty,
    contrastive_d_loss,
    contrastive_weight_mask,
    generator_one_step_x0,
    relativistic_d_loss,
    relativistic_g_loss,
    renoise,
    roll_prompts,
)


def sp(x: float) -> float:
    """softplus by hand."""
    return math.log1p(math.exp(x))


# --- SPEC §5.4 relativistic losses ---------------------------------------------------------------


def test_relativistic_losses_known_pair():
    real = jnp.array([[1.0, -2.0]], jnp.float32)
    fake = jnp.array([[0.5, 1.0]], jnp.float32)
    # real − fake = [0.5, −3.0]
    want_d = (sp(-0.5) + sp(3.0)) / 2  # (0.474077 + 3.048587) / 2
    want_g = (sp(0.5) + sp(-3.0)) / 2  # (0.974077 + 0.048587) / 2
    assert float(relativistic_d_loss(real, fake)) == pytest.approx(want_d, rel=1e-6)
    assert float(relativistic_g_loss(real, fake)) == pytest.approx(want_g, rel=1e-6)
    assert want_d == pytest.approx(1.761332, abs=1e-6)
    assert want_g == pytest.approx(0.511332, abs=1e-6)


def test_relativistic_losses_at_zero_margin_are_log2():
    s = jnp.array([[0.3, -1.2, 4.0]], jnp.float32)
    assert float(relativistic_d_loss(s, s)) == pytest.approx(math.log(2.0), rel=1e-6)
    assert float(relativistic_g_loss(s, s)) == pytest.approx(math.log(2.0), rel=1e-6)


def test_d_loss_falls_and_g_loss_rises_with_margin():
    fake = jnp.zeros((1, 1), jnp.float32)
    margins = [-4.0, -1.0, -0.1, 0.0, 0.1, 1.0, 4.0]
    d = [float(relativistic_d_loss(jnp.full((1, 1), m, jnp.float32), fake)) for m in margins]
    g = [float(relativistic_g_loss(jnp.full((1, 1), m, jnp.float32), fake)) for m in margins]
    assert all(a > b for a, b in zip(d, d[1:]))
    assert all(a < b for a, b in zip(g, g[1:]))
    for m, dv, gv in zip(margins, d, g):
        assert dv == pytest.approx(sp(-m), rel=1e-5)
        assert gv == pytest.approx(sp(m), rel=1e-5)


def test_g_minus_d_is_mean_margin():
    # softplus(x) − softplus(−x) = x, so L_G − L_D = mean(real − fake).
    rng = np.random.default_rng(0)
    real = rng.normal(size=(3, 5)).astype(np.float32) * 3
    fake = rng.normal(size=(3, 5)).astype(np.float32) * 3
    got = float(relativistic_g_loss(real, fake) - relativistic_d_loss(real, fake))
    assert got == pytest.approx(float(np.mean(real - fake)), abs=1e-5)


def test_relativistic_mask_and_shape_check():
    real = jnp.array([[1.0, -2.0], [0.0, 3.0]], jnp.float32)
    fake = jnp.array([[0.5, 1.0], [1.0, 1.0]], jnp.float32)
    mask = jnp.array([[True, False], [False, True]])
    # kept margins: 0.5 and 2.0
    assert float(relativistic_d_loss(real, fake, mask)) == pytest.approx((sp(-0.5) + sp(-2.0)) / 2, rel=1e-6)
    assert float(relativistic_g_loss(real, fake, mask)) == pytest.approx((sp(0.5) + sp(2.0)) / 2, rel=1e-6)
    assert float(relativistic_d_loss(real, fake, jnp.zeros((2, 2)))) == 0.0
    with pytest.raises(ValueError):
        relativistic_d_loss(real, fake[:, :1])


# --- SPEC §5.5 contrastive loss and rolled prompts ----------------------------------------------


MATCHED = jnp.array([[2.0, 0.0], [1.0, 1.0], [0.0, -1.0]], jnp.float32)
ROLLED = jnp.array([[1.0, 1.0], [-1.0, 3.0], [0.0, 0.0]], jnp.float32)
# matched − rolled = [[1, −1], [2, −2], [0, −1]]
CLIP_LOSS = [(sp(-1.0) + sp(1.0)) / 2, (sp(-2.0) + sp(2.0)) / 2, (sp(0.0) + sp(1.0)) / 2]


def test_contrastive_loss_known_values():
    assert float(contrastive_d_loss(MATCHED, ROLLED)) == pytest.approx(sum(CLIP_LOSS) / 3, rel=1e-6)
    assert sum(CLIP_LOSS) / 3 == pytest.approx(0.981131, abs=1e-6)  # (0.813262 + 1.126928 + 1.003205) / 3


def test_contrastive_loss_weight_drops_duplicate_prompt():
    weight = jnp.array([1.0, 0.0, 1.0], jnp.float32)
    want = (CLIP_LOSS[0] + CLIP_LOSS[2]) / 2
    assert float(contrastive_d_loss(MATCHED, ROLLED, weight)) == pytest.approx(want, rel=1e-6)
    # All clips duplicates: a finite 0 and finite zero gradients, not NaN.
    zeros = jnp.zeros(3, jnp.float32)
    assert float(contrastive_d_loss(MATCHED, ROLLED, zeros)) == 0.0
    grad = jax.grad(lambda m: contrastive_d_loss(m, ROLLED, zeros))(MATCHED)
    np.testing.assert_array_equal(np.asarray(grad), 0.0)


def test_contrastive_loss_time_mask():
    mask = jnp.array([[True, True], [True, False], [False, False]])
    # clip 0: both, clip 1: first only (margin 2), clip 2: empty → left out.
    want = ((sp(-1.0) + sp(1.0)) / 2 + sp(-2.0)) / 2
    assert float(contrastive_d_loss(MATCHED, ROLLED, mask=mask)) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("batch", range(2, 10))
def test_roll_prompts_never_pairs_clip_with_its_own_prompt(batch):
    rng = np.random.default_rng(batch)
    ids = rng.integers(0, 50, size=(batch, 6)).astype(np.int32)
    ids[:, 0] = rng.permutation(batch) + 100  # rows distinct by construction
    assert len({tuple(r) for r in ids}) == batch
    mask = np.ones((batch, 6), bool)
    mask[:, 4:] = rng.random((batch, 2)) < 0.5
    rolled = roll_prompts({"ids": jnp.asarray(ids), "mask": jnp.asarray(mask)})
    rolled_ids, rolled_mask = np.asarray(rolled["ids"]), np.asarray(rolled["mask"])
    for i in range(batch):
        np.testing.assert_array_equal(rolled_ids[i], ids[i - 1])  # clip i gets clip i−1's prompt
        np.testing.assert_array_equal(rolled_mask[i], mask[i - 1])  # ids and mask move together
        assert not np.array_equal(rolled_ids[i], ids[i])
    weights = contrastive_weight_mask(jnp.asarray(ids), jnp.asarray(mask), rolled["ids"], rolled["mask"])
    np.testing.assert_array_equal(np.asarray(weights), np.ones(batch, np.float32))


def test_roll_prompts_rejects_batch_of_one_and_bad_shift():
    with pytest.raises(ValueError, match=r"batch size >= 2 \(got 1\)"):
        roll_prompts({"ids": jnp.zeros((1, 4), jnp.int32), "mask": jnp.ones((1, 4), bool)})
    with pytest.raises(ValueError):
        roll_prompts(jnp.zeros((3, 4)), shift=3)
    with pytest.raises(ValueError):
        roll_prompts({"a": jnp.zeros((3, 4)), "b": jnp.zeros((2, 4))})


def test_contrastive_weight_mask_zero_only_for_same_prompt():
    pad = 0
    ids = jnp.array(
        [
            [5, 6, 7, pad],  # A
            [5, 6, 7, 99],  # A again: the token past the mask is garbage padding
            [8, 9, pad, pad],  # B
            [5, 6, pad, pad],  # C: a prefix of A, shorter mask → different
            [8, 9, 3, 3],  # B again
        ],
        jnp.int32,
    )
    mask = jnp.array(
        [[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]],
        jnp.int32,
    )
    rolled = roll_prompts((ids, mask))
    # clip i vs clip i−1: 0 vs 4 (A/B), 1 vs 0 (A/A), 2 vs 1 (B/A), 3 vs 2 (C/B), 4 vs 3 (B/C)
    got = contrastive_weight_mask(ids, mask, *rolled)
    np.testing.assert_array_equal(np.asarray(got), np.array([1.0, 0.0, 1.0, 1.0, 1.0], np.float32))
    # Rolled by two: 2 vs 0 (B/A), 4 vs 2 (B/B) is a duplicate.
    rolled2 = roll_prompts((ids, mask), shift=2)
    got2 = jax.jit(contrastive_weight_mask)(ids, mask, *rolled2)
    np.testing.assert_array_equal(np.asarray(got2), np.array([1.0, 1.0, 1.0, 1.0, 0.0], np.float32))


# --- SPEC §5.6 approximate R1 / R2 ---------------------------------------------------------------


def test_approx_r1_is_zero_for_constant_scores():
    x = jnp.arange(12, dtype=jnp.float32).reshape(3, 4)
    penalty = approx_r1_penalty(lambda v: jnp.full((v.shape[0], 2), 3.0), x, jax.random.key(0))
    assert float(penalty) == 0.0


def test_approx_r1_linear_scores_with_same_noise():
    key = jax.random.key(7)
    sigma = 0.05
    x = jnp.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]], jnp.float32)
    w = np.array([2.0, -1.0, 0.5], np.float32)
    noise = np.asarray(jax.random.normal(key, x.shape, jnp.float32))
    # D(x + σn) − D(x) = σ·(n @ w) for a linear D, so the penalty is mean((σ·n@w)²).
    want = np.mean([(sigma * sum(noise[b, j] * w[j] for j in range(3))) ** 2 for b in range(2)])
    got = float(approx_r1_penalty(lambda v: v @ jnp.asarray(w), x, key, sigma=sigma))
    assert got == pytest.approx(float(want), rel=1e-4)
    assert got > 0.0


def test_approx_r1_linear_scores_expectation():
    # E[(σ·n@w)²] = σ²·|w|²; 8192 samples: relative std ≈ √(2/8192) ≈ 1.6%.
    sigma = 0.05
    w = jnp.array([2.0, -1.0, 0.5], jnp.float32)  # |w|² = 5.25
    x = jnp.ones((8192, 3), jnp.float32)
    got = float(approx_r1_penalty(lambda v: v @ w, x, jax.random.key(3), sigma=sigma))
    assert got == pytest.approx(sigma**2 * 5.25, rel=0.08)
    got_big = float(approx_r1_penalty(lambda v: v @ w, x, jax.random.key(3), sigma=0.5))
    assert got_big == pytest.approx(0.25 * 5.25, rel=0.08)


# --- SPEC §5.1–5.2 one-step estimate and re-noising ----------------------------------------------


def test_one_step_x0_recovers_x0_for_true_velocity():
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(4, 2, 3)).astype(np.float32)
    eps = rng.normal(size=(4, 2, 3)).astype(np.float32)
    t = np.array([0.0, 0.25, 0.9, 1.0], np.float32)
    x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * eps
    got = np.asarray(generator_one_step_x0(jnp.asarray(x_t), jnp.asarray(t), jnp.asarray(eps - x0)))
    np.testing.assert_allclose(got, x0, atol=1e-6)
    # A wrong velocity moves x̂0 by −t·error per clip (and not at all where t = 0).
    wrong = np.asarray(generator_one_step_x0(jnp.asarray(x_t), jnp.asarray(t), jnp.asarray(eps - x0 + 1.0)))
    np.testing.assert_allclose(wrong - x0, np.broadcast_to(-t[:, None, None], x0.shape), atol=1e-6)


def test_renoise_matches_formula_and_shares_noise():
    x0 = jnp.array([[[1.0, 2.0]], [[-1.0, 0.5]]], jnp.float32)  # [2, 1, 2]
    fake = jnp.array([[[0.0, 2.0]], [[1.0, 0.5]]], jnp.float32)
    noise = jnp.array([[[0.5, -0.5]], [[2.0, 1.0]]], jnp.float32)
    tau = jnp.array([0.2, 0.75], jnp.float32)
    want = np.array(
        [
            [[0.8 * 1.0 + 0.2 * 0.5, 0.8 * 2.0 + 0.2 * -0.5]],
            [[0.25 * -1.0 + 0.75 * 2.0, 0.25 * 0.5 + 0.75 * 1.0]],
        ]
    )
    np.testing.assert_allclose(np.asarray(renoise(x0, noise, tau)), want, atol=1e-6)
    # Same noise for real and fake: the noise cancels, leaving (1 − τ)·(x0 − x̂0).
    diff = np.asarray(renoise(x0, noise, tau) - renoise(fake, noise, tau))
    np.testing.assert_allclose(diff, np.array([[[0.8, 0.0]], [[-0.5, 0.0]]]), atol=1e-6)
