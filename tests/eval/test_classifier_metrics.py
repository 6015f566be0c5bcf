"""KL (both directions, named), Inception Score bounds, CLAP score range."""

import numpy as np
import pytest
from scipy.special import softmax

from jaxstage.eval.classifier_metrics import clap_score, inception_score, kl_divergence, paired_kl


def test_kl_hand_computed_direction_and_zero_on_identity():
    p = np.array([[0.5, 0.5]])
    q = np.array([[0.9, 0.1]])
    assert kl_divergence(p, q)[0] == pytest.approx(0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1))
    assert kl_divergence(q, p)[0] == pytest.approx(0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5))
    both = paired_kl(p, q)  # ref = p, gen = q
    assert both["kl_ref_gen"] == pytest.approx(kl_divergence(p, q)[0])
    assert both["kl_gen_ref"] == pytest.approx(kl_divergence(q, p)[0])
    assert both["kl_ref_gen"] != pytest.approx(both["kl_gen_ref"])  # KL is not symmetric
    sym = np.array([[0.3, 0.7], [0.6, 0.4]])
    assert paired_kl(sym, sym) == {"kl_ref_gen": 0.0, "kl_gen_ref": 0.0}
    # swapped arguments swap the two named directions
    swapped = paired_kl(q, p)
    assert swapped["kl_ref_gen"] == pytest.approx(both["kl_gen_ref"])


def test_inception_score_bounds():
    classes = 5
    assert inception_score(np.full((8, classes), 1 / classes)) == pytest.approx(1.0)  # no confidence
    one_hot = np.eye(classes)  # confident and spread evenly over all classes: the upper bound
    assert inception_score(one_hot) == pytest.approx(classes, rel=1e-6)
    assert inception_score(np.tile(one_hot[:1], (4, 1))) == pytest.approx(1.0)  # one class only
    rng = np.random.default_rng(0)
    value = inception_score(softmax(rng.normal(size=(32, classes)) * 3, axis=-1))
    assert 1.0 <= value <= classes


def test_clap_score_range_and_checks():
    t = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    a = np.array([[1.0, 0.0], [-1.0, -1.0], [1.0, 0.0]])
    np.testing.assert_allclose(clap_score(t, a), [1.0, -1.0, 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="zero embedding"):
        clap_score(np.zeros((1, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError, match="probability distributions"):
        kl_divergence(np.array([[0.5, 0.6]]), np.array([[0.5, 0.5]]))
