"""Fréchet distance: closed forms, rank-deficient covariances, symmetry."""

import numpy as np
import pytest

from jaxstage.eval.frechet import frechet_distance, frechet_distance_of, gaussian_fit


def test_closed_form_for_diagonal_covariances():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.0])  # the last one singular
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)  # 5 + 1 + 1 + 9
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    assert expected == pytest.approx(16.0)


def test_closed_form_for_non_commuting_full_covariances():
    # 1-D projections: FD(N(0, s1), N(0, s2)) in 2-D with s2 = R s1 R^T: tr s1 + tr s2 - 2 tr sqrt(...)
    rng = np.random.default_rng(0)
    m = rng.normal(size=(4, 4))
    s1 = m @ m.T
    assert frechet_distance(np.zeros(4), s1, np.zeros(4), s1) == pytest.approx(0.0, abs=1e-8)
    s2 = 4.0 * s1  # sqrt(s1^½ 4 s1 s1^½) = 2 s1 -> FD = tr s1 + 4 tr s1 - 4 tr s1 = tr s1
    assert frechet_distance(np.zeros(4), s1, np.zeros(4), s2) == pytest.approx(np.trace(s1), rel=1e-8)


def test_rank_deficient_fits_are_finite_and_zero_on_identical_sets():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 64))  # 5 embeddings in 64 dims: rank-4 covariance
    y = rng.normal(size=(6, 64)) + 0.5
    assert frechet_distance_of(x, x) == pytest.approx(0.0, abs=1e-8)
    d_xy, d_yx = frechet_distance_of(x, y), frechet_distance_of(y, x)
    assert np.isfinite(d_xy) and d_xy > 0 and d_xy == pytest.approx(d_yx, rel=1e-6)
    mu, sigma = gaussian_fit(x)
    assert mu.shape == (64,) and sigma.shape == (64, 64) and np.linalg.matrix_rank(sigma) == 4


def test_bad_inputs():
    with pytest.raises(ValueError, match="n >= 2"):
        gaussian_fit(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="NaN"):
        gaussian_fit(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
