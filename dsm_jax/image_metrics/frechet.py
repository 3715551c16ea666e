"""The Fréchet distance between Gaussians fitted to two feature sets (FID with our
classifier's features in place of Inception's)."""
from __future__ import annotations

import numpy as np

from dsm_jax import validation


def gaussian_stats(features):
    """Mean ``(d,)`` and covariance ``(d, d)`` (unbiased, float64) of ``features`` ``(n, d)``."""
    features = validation.check_matrix("features", features, min_rows=2)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(c):
    """Symmetric square root of a PSD matrix via eigh; tiny negative eigenvalues (rounding)
    are clipped to 0 so the result is real."""
    w, v = np.linalg.eigh(0.5 * (c + c.T))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """‖μ₁ − μ₂‖² + tr(C₁ + C₂ − 2 (C₁^½ C₂ C₁^½)^½), the 2-Wasserstein distance² between
    two Gaussians.

    Computed in float64 with symmetric eigendecompositions only: C₁^½ C₂ C₁^½ is symmetric
    PSD, so the trace of its square root is the sum of the square roots of its eigenvalues
    (clipped at 0). A general ``sqrtm`` of the non-symmetric C₁C₂ returns spurious complex
    parts when the covariances are near-singular. Not clipped at 0: identical inputs give
    ~±1e-12 (rounding), and a clearly negative value would reveal a bug rather than hide it.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"`mu1` and `mu2` must be vectors of the same length, got {mu1.shape} and {mu2.shape}.")
    d = mu1.shape[0]
    for name, c in (("cov1", cov1), ("cov2", cov2)):
        if c.shape != (d, d):
            raise ValueError(f"`{name}` must have shape ({d}, {d}) to match the means, got {c.shape}.")
    for name, a in (("mu1", mu1), ("mu2", mu2), ("cov1", cov1), ("cov2", cov2)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"`{name}` has NaN/inf entries.")
    s1 = _psd_sqrt(cov1)
    m = s1 @ cov2 @ s1
    tr_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (m + m.T)), 0.0, None)))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * tr_sqrt)


def fd(features_a, features_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(n_a, d)``, ``(n_b, d)``."""
    if np.ndim(features_a) == np.ndim(features_b) == 2 and np.shape(features_a)[1] != np.shape(features_b)[1]:
        raise ValueError(
            f"`features_a` and `features_b` must have the same width d (the same feature extractor), "
            f"got {np.shape(features_a)} and {np.shape(features_b)}.")
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b))
