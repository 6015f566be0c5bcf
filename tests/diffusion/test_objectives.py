"""Objectives: EDM preconditioning numbers, v/rf targets, round trips and the σ̃ mapping."""

import math

import jax
import numpy as np
import pytest

from jaxstage.diffusion.objectives import EDM, RectifiedFlow, VCosine, make_objective

# σ: (c_skip, c_out, c_in, c_noise, λ) for σ_data = 0.5, worked by hand:
# c_skip = .25/(σ²+.25), c_out = .5σ/√(σ²+.25), c_in = 1/√(σ²+.25), c_noise = ln σ / 4,
# λ = (σ²+.25)/(.25σ²).
EDM_TABLE = {
    0.5: (0.5, 0.35355339, 1.41421356, -0.17328680, 8.0),
    1.0: (0.2, 0.44721360, 0.89442719, 0.0, 5.0),
    2.0: (0.05882353, 0.48507125, 0.48507125, 0.17328680, 4.25),
}


def test_edm_preconditioning_matches_hand_values():
    edm = EDM(sigma_data=0.5)
    sigma = np.array(sorted(EDM_TABLE), np.float32)
    got = np.stack([*edm.preconditioning(sigma), edm.loss_weight(sigma)], axis=1)
    np.testing.assert_allclose(got, np.array([EDM_TABLE[k] for k in sorted(EDM_TABLE)]), rtol=1e-6, atol=1e-7)


def test_edm_model_input_denoise_and_loss():
    edm = EDM()
    sigma = np.array([0.5, 1.0, 2.0], np.float32)
    x_t = np.ones((3, 2, 4), np.float32)
    x0 = np.zeros_like(x_t)
    c_skip = np.array([0.5, 0.2, 0.05882353], np.float32)[:, None, None]  # from EDM_TABLE
    c_out = np.array([0.35355339, 0.44721360, 0.48507125], np.float32)[:, None, None]
    # Loss: pick F so that D − x0 = 0.1 everywhere; loss = λ·0.01 = [0.08, 0.05, 0.0425].
    model_output = (0.1 - c_skip * x_t) / c_out

    @jax.jit
    def evaluate(x_t, sigma, model_output):
        scaled, c_noise = edm.model_input(x_t, sigma)
        return scaled, c_noise, edm.denoise(2 * x_t, x_t, sigma), edm.loss(model_output, x_t, x0, x0, sigma)

    scaled, c_noise, denoised, loss = evaluate(x_t, sigma, model_output)
    np.testing.assert_allclose(scaled[:, 0, 0], [1.41421356, 0.89442719, 0.48507125], rtol=1e-6)
    np.testing.assert_allclose(c_noise, [-0.1732868, 0.0, 0.1732868], rtol=1e-6, atol=1e-7)
    # D = c_skip·x + c_out·F with F = 2 at σ = 1: 0.2 + 0.4472136·2.
    np.testing.assert_allclose(denoised[1], 1.0944272, rtol=1e-6)
    np.testing.assert_allclose(loss, [0.08, 0.05, 0.0425], rtol=1e-5)


def _evaluate_time_objective(obj, x0, eps, t, velocity_offset):
    """(x_t, target, x̂0 from the exact target, loss with the target off by velocity_offset)."""

    @jax.jit
    def evaluate(x0, eps, t):
        x_t = obj.add_noise(x0, eps, t)
        target = obj.target(x0, eps, t)
        return x_t, target, obj.denoise(target, x_t, t), obj.loss(target + velocity_offset, x_t, x0, eps, t)

    return evaluate(x0, eps, t)


def test_v_cosine_target_and_reconstruction():
    v = VCosine()
    # t = 1/3: a = cos(π/6) = 0.8660254, s = 0.5; x0 = 1, eps = 2.
    t = np.array([1 / 3], np.float32)
    x0, eps = np.ones((1, 3), np.float32), np.full((1, 3), 2.0, np.float32)
    x_t, target, x0_hat, loss = _evaluate_time_objective(v, x0, eps, t, 0.1)
    np.testing.assert_allclose(x_t, 1.8660254, rtol=1e-6)  # 0.8660254 + 1
    np.testing.assert_allclose(target, 1.2320508, rtol=1e-6)  # 1.7320508 − 0.5
    np.testing.assert_allclose(x0_hat, 1.0, rtol=1e-6)
    np.testing.assert_allclose(loss, [0.01], rtol=1e-4)
    scaled, c_noise = v.model_input(x_t, t)
    assert scaled is x_t and float(c_noise[0]) == pytest.approx(1 / 3)


def test_rectified_flow_target_and_reconstruction():
    t = np.array([0.25, 0.75], np.float32)
    x0, eps = np.ones((2, 3), np.float32), np.full((2, 3), 2.0, np.float32)
    x_t, target, x0_hat, loss = _evaluate_time_objective(RectifiedFlow(), x0, eps, t, 0.2)
    np.testing.assert_allclose(x_t[:, 0], [1.25, 1.75])  # (1−t)·1 + t·2
    np.testing.assert_allclose(target, 1.0)  # eps − x0
    np.testing.assert_allclose(x0_hat, 1.0)  # x_t − t·v
    np.testing.assert_allclose(loss, [0.04, 0.04], rtol=1e-5)


@pytest.mark.parametrize("name", ["edm", "v", "rf"])
def test_add_noise_denoise_round_trip_with_perfect_model(name):
    obj = make_objective(name)
    rng = np.random.default_rng(0)
    x0, eps = rng.normal(size=(2, 3, 2, 5)).astype(np.float32)
    level = np.array([0.3, 1.5, 20.0] if name == "edm" else [0.1, 0.5, 0.9], np.float32)

    @jax.jit
    def round_trip(x0, eps, level):
        x_t = obj.add_noise(x0, eps, level)
        if name == "edm":
            c_skip, c_out, _, _ = obj.preconditioning(level[:, None, None])
            perfect = (x0 - c_skip * x_t) / c_out
        else:
            perfect = obj.target(x0, eps, level)
        a, _ = obj.alpha_sigma(level[:, None, None])
        sigma_tilde = obj.edm_sigma(level)[:, None, None]
        return obj.denoise(perfect, x_t, level), obj.loss(perfect, x_t, x0, eps, level), x_t / a, x0 + sigma_tilde * eps

    x0_hat, loss, x_tilde, expected_x_tilde = round_trip(x0, eps, level)
    np.testing.assert_allclose(x0_hat, x0, atol=2e-5)
    np.testing.assert_allclose(loss, 0.0, atol=1e-8)
    np.testing.assert_allclose(x_tilde, expected_x_tilde, rtol=1e-5, atol=1e-5)  # x̃ = x0 + σ̃·eps


@pytest.mark.parametrize("name, expected_sigma", [("v", math.tan(math.pi / 8)), ("rf", 1 / 3)])
def test_edm_sigma_mapping_and_endpoints(name, expected_sigma):
    obj = make_objective(name)
    t = np.array([0.0, 0.25, 0.5, 1.0], np.float32)

    @jax.jit
    def evaluate(t):
        sigma = obj.edm_sigma(t)
        return sigma, obj.level_from_edm_sigma(sigma), *obj.alpha_sigma(t)

    sigma, t_back, a, s = map(np.asarray, evaluate(t))
    np.testing.assert_allclose(sigma, [0.0, expected_sigma, 1.0, math.inf], rtol=1e-6)
    np.testing.assert_allclose(t_back, t, atol=1e-6)
    assert a[[0, 3]].tolist() == [1.0, 0.0] and s[[0, 3]].tolist() == [0.0, 1.0]  # exact ends


def test_objectives_are_hashable_and_registry_rejects_unknown():
    assert hash(EDM()) == hash(EDM()) and EDM(0.5) == make_objective("edm", sigma_data=0.5)
    assert {VCosine(), VCosine(), RectifiedFlow()} == {VCosine(), RectifiedFlow()}
    with pytest.raises(ValueError, match=r"'ddpm'.*\['edm', 'rf', 'v'\]"):
        make_objective("ddpm")
