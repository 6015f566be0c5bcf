"""Metrics on classifier outputs and joint embeddings (SPEC §4): KL both ways, Inception Score, CLAP score.

- KL is per pair of files (reference i, generated i), over softmax class distributions, then averaged.
  Both directions are reported under explicit names: ``kl_ref_gen`` = KL(ref ‖ gen) (audioldm_eval's
  direction) and ``kl_gen_ref`` = KL(gen ‖ ref) (stable-audio-metrics').
- Inception Score: exp(E_x KL(p(y|x) ‖ p(y))), p(y) the mean prediction; in [1, number of classes].
- CLAP score: cosine similarity of paired text and audio embeddings, in [-1, 1].
Pure numpy, float64.
"""

from __future__ import annotations

import numpy as np

PROB_FLOOR = 1e-10  # probabilities are clipped here before the log (a hard zero would give inf)


def _check_probs(p: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(p, np.float64)
    if p.ndim != 2 or p.shape[0] < 1:
        raise ValueError(f"{name}: expected class probabilities [n, C], got shape {p.shape}")
    if np.any(p < 0) or not np.allclose(p.sum(axis=-1), 1.0, atol=1e-5):
        raise ValueError(f"{name}: rows must be probability distributions (non-negative, summing to 1)")
    return np.clip(p, PROB_FLOOR, 1.0)


def kl_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise KL(p ‖ q) for [n, C] distributions -> [n]."""
    p, q = _check_probs(p, "p"), _check_probs(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"KL needs paired rows of the same classes, got {p.shape} and {q.shape}")
    return np.sum(p * (np.log(p) - np.log(q)), axis=-1)


def paired_kl(ref_probs: np.ndarray, gen_probs: np.ndarray) -> dict[str, float]:
    """Mean KL over file pairs in both directions: {'kl_ref_gen', 'kl_gen_ref'}."""
    return {"kl_ref_gen": float(np.mean(kl_divergence(ref_probs, gen_probs))),
            "kl_gen_ref": float(np.mean(kl_divergence(gen_probs, ref_probs)))}


def inception_score(probs: np.ndarray) -> float:
    """exp(mean_x KL(p(y|x) ‖ p(y))) of [n, C] class distributions."""
    p = _check_probs(probs, "probs")
    marginal = p.mean(axis=0, keepdims=True)
    return float(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(marginal)), axis=-1))))


def clap_score(text_embeddings: np.ndarray, audio_embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of paired rows [n, d] x [n, d] -> [n] in [-1, 1]."""
    t, a = np.asarray(text_embeddings, np.float64), np.asarray(audio_embeddings, np.float64)
    if t.shape != a.shape or t.ndim != 2:
        raise ValueError(f"CLAP score needs paired embeddings [n, d], got {t.shape} and {a.shape}")
    norms = np.linalg.norm(t, axis=-1) * np.linalg.norm(a, axis=-1)
    if np.any(norms == 0):
        raise ValueError("CLAP score: a zero embedding has no direction")
    return np.clip(np.sum(t * a, axis=-1) / norms, -1.0, 1.0)
