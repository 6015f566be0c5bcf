"""Fréchet distance between Gaussian fits of two embedding sets (FD / FAD), numerically stable.

    FD = |μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^½ Σ₂ Σ₁^½)^½

The trace term is computed from eigenvalues of the symmetric PSD matrix Σ₁^½ Σ₂ Σ₁^½ (float64,
negative round-off clipped to 0) rather than with ``scipy.linalg.sqrtm(Σ₁ Σ₂)``, which goes complex
or NaN when the covariances are singular, as they are whenever there are fewer embeddings than
dimensions. Pure numpy.
"""

from __future__ import annotations

import numpy as np


def gaussian_fit(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean [d], covariance [d, d]) of ``embeddings`` [n, d] (unbiased, n >= 2)."""
    x = np.asarray(embeddings, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need embeddings [n >= 2, d], got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings contain NaN/Inf")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh((matrix + matrix.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """FD between N(mu1, sigma1) and N(mu2, sigma2); >= 0 up to round-off."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ValueError(f"shape mismatch: means {mu1.shape} / {mu2.shape}, covariances {s1.shape} / {s2.shape}")
    root = _psd_sqrt(s1)
    middle = root @ s2 @ root
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt, 0.0))


def frechet_distance_of(real: np.ndarray, generated: np.ndarray) -> float:
    """FD between the Gaussian fits of two embedding sets [n, d] and [m, d]."""
    return frechet_distance(*gaussian_fit(real), *gaussian_fit(generated))
