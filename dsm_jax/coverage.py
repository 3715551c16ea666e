"""Mode coverage: does a sampler or generator put mass on every part of the data?

A KL or a Fréchet distance can look fine while a model drops a mode or piles its samples
on one; these read the split directly.

* :func:`toy_coverage`: the share of samples each mixture component of a 2-D toy receives
  (its nearest component: a Gaussian mode, ring, spiral arm or square) and the fraction off
  the data's support (more than ``off_support_z`` standard deviations of ``p̂_σ`` from every
  component's skeleton; see :class:`dsm_jax.toy.Toy2D`).
* :func:`class_coverage`: the histogram of classes a classifier assigns to generated images,
  its KL to a reference histogram (the test set's) and the classes that get almost nothing.
"""
from __future__ import annotations

import numpy as np

from dsm_jax.toy import Toy2D

__all__ = ["toy_coverage", "class_coverage"]


def _finite_points(name, x) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim != 2 or x.shape[1] != 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (n, 2) with n >= 1, got {x.shape}.")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(f"{name} holds {int(bad.sum())} non-finite rows of {len(x)} (first at {int(np.argmax(bad))}); "
                         f"drop them or fix the sampler before measuring coverage.")
    return x


def toy_coverage(toy: Toy2D, samples, sigma, off_support_z: float = 3.0) -> dict:
    """Coverage of ``toy``'s components by ``samples`` (clean samples, as for ``sample_kl``).

    Returns ``mode_weights`` (share of all samples nearest to each component; uniform is
    ``1 / toy.n_components`` each), ``mode_weight_min`` / ``mode_weight_max`` (the extreme
    shares times the number of components: 1 is uniform, 0 a dropped mode) and
    ``off_support`` (fraction of samples further than ``off_support_z`` standard deviations
    from every component). For exact samples of ``p̂_σ`` of ``eight_gaussians`` the
    off-support fraction is ``exp(−z²/2)`` (0.011 at z = 3); for clean samples it is lower.
    """
    samples = _finite_points("samples", samples)
    if not (isinstance(off_support_z, (int, float)) and off_support_z > 0):
        raise ValueError(f"off_support_z must be a number > 0 (standard deviations), got {off_support_z!r}.")
    index, z = toy.nearest_component(samples, sigma)
    index, z = np.asarray(index), np.asarray(z)
    weights = np.bincount(index, minlength=toy.n_components) / len(index)
    return {
        "mode_weights": [float(w) for w in weights],
        "mode_weight_min": float(weights.min() * toy.n_components),
        "mode_weight_max": float(weights.max() * toy.n_components),
        "off_support": float(np.mean(z > off_support_z)),
    }


def _labels(name, labels, n_classes) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be a non-empty 1-D array of integer class labels, got dtype "
                         f"{labels.dtype} and shape {labels.shape} (argmax the classifier's logits first).")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"{name} must hold labels in [0, {n_classes}), got range [{labels.min()}, {labels.max()}]; "
                         f"pass the right n_classes.")
    return labels


def class_coverage(labels, reference_labels, n_classes: int = 10, min_fraction: float = 0.02) -> dict:
    """Class split of generated samples (``labels``: a classifier's predicted class per sample)
    against ``reference_labels`` (e.g. the test set's true labels).

    Returns ``class_histogram`` (share of samples per class), ``class_kl`` = KL(generated ‖
    reference) in nats (0 for the same split; log n_classes for all samples in one class
    under a uniform reference), ``classes_under`` (how many classes get less than
    ``min_fraction`` of the samples), ``class_min`` (the smallest share) and ``min_fraction``.
    """
    if not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}.")
    if not (isinstance(min_fraction, (int, float)) and 0 <= min_fraction < 1):
        raise ValueError(f"min_fraction must be in [0, 1), got {min_fraction!r}.")
    hist = np.bincount(_labels("labels", labels, n_classes), minlength=n_classes) / len(labels)
    ref = np.bincount(_labels("reference_labels", reference_labels, n_classes), minlength=n_classes)
    ref = ref / ref.sum()
    if np.any((hist > 0) & (ref == 0)):
        missing = [int(c) for c in np.flatnonzero((hist > 0) & (ref == 0))]
        raise ValueError(f"reference_labels has no sample of classes {missing} that labels has: the KL is infinite; "
                         f"use a reference holding every class (the test set).")
    nz = hist > 0
    return {
        "class_histogram": [float(h) for h in hist],
        "class_kl": float(np.sum(hist[nz] * np.log(hist[nz] / ref[nz]))),
        "classes_under": int(np.sum(hist < min_fraction)),
        "class_min": float(hist.min()),
        "min_fraction": float(min_fraction),
    }
