"""Sampling schedules: endpoints, lengths, monotonicity and the formulas."""

import math

import numpy as np
import pytest

from jaxstage.diffusion.objectives import EDM, RectifiedFlow, VCosine
from jaxstage.diffusion.schedules import for_objective, karras, logsnr_linear


def test_karras_endpoints_length_monotone_and_midpoint():
    sigmas = np.asarray(karras(5))
    assert sigmas.shape == (6,)
    np.testing.assert_allclose(sigmas[[0, 4, 5]], [80.0, 0.002, 0.0], rtol=1e-6)
    assert np.all(np.diff(sigmas) < 0)
    # Midpoint (i/(n−1) = 1/2): ((80^(1/7) + 0.002^(1/7))/2)^7 = 2.5152190.
    assert sigmas[2] == pytest.approx(2.5152190, rel=1e-5)
    assert np.asarray(karras(1)).tolist() == [80.0, 0.0]


def test_logsnr_linear_endpoints_and_interior():
    t = np.asarray(logsnr_linear(4))
    assert t.shape == (5,) and t[0] == 1.0 and t[-1] == 0.0
    assert np.all(np.diff(t) < 0)
    # Interior i = 1, 2: sigmoid(−(−6 + 2i)) = sigmoid(4), sigmoid(2).
    np.testing.assert_allclose(t[1:3], [0.98201379, 0.88079708], rtol=1e-6)


def test_for_objective_picks_and_maps_schedules():
    np.testing.assert_allclose(for_objective(EDM(), 8), karras(8))
    np.testing.assert_array_equal(for_objective(RectifiedFlow(), 8), logsnr_linear(8))
    v_levels = for_objective(VCosine(), 8)
    assert float(v_levels[0]) == 1.0 and float(v_levels[-1]) == 0.0
    # v and rf get the same σ̃ (the same SNRs); finite interior compared.
    np.testing.assert_allclose(
        VCosine().edm_sigma(v_levels)[1:-1], RectifiedFlow().edm_sigma(logsnr_linear(8))[1:-1], rtol=1e-4
    )
    rf_karras = for_objective(RectifiedFlow(), 8, "karras")
    np.testing.assert_allclose(RectifiedFlow().edm_sigma(rf_karras), karras(8), rtol=1e-4)
    assert float(rf_karras[0]) == pytest.approx(80 / 81)
    with pytest.raises(ValueError, match="karras"):
        for_objective(EDM(), 8, "cosine")


def test_rho_changes_spacing_not_endpoints():
    a, b = np.asarray(karras(10, rho=1.0)), np.asarray(karras(10, rho=7.0))
    np.testing.assert_allclose(a[[0, -2, -1]], b[[0, -2, -1]], rtol=1e-6)
    np.testing.assert_allclose(np.diff(a[:-1]), -(80 - 0.002) / 9, rtol=1e-4)  # ρ = 1 is linear
    assert not math.isclose(a[5], b[5])
