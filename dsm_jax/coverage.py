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

from dsm_jax import validation
from dsm_jax.toy import Toy2D

__all__ = ["toy_coverage", "class_coverage"]


def toy_coverage(toy: Toy2D, samples, sigma, off_support_z: float = 3.0) -> dict:
    """Coverage of ``toy``'s components by ``samples`` (clean samples, as for ``sample_kl``).

    Returns ``mode_weights`` (share of all samples nearest to each component; uniform is
    ``1 / toy.n_components`` each), ``mode_weight_min`` / ``mode_weight_max`` (the extreme
    shares times the number of components: 1 is uniform, 0 a dropped mode) and
    ``off_support`` (fraction of samples further than ``off_support_z`` standard deviations
    from every component). For exact samples of ``p̂_σ`` of ``eight_gaussians`` the
    off-support fraction is ``exp(−z²/2)`` (0.011 at z = 3); for clean samples it is lower.
    """
    validation.check_instance("toy", toy, Toy2D, "from dsm_jax.toy.get_toy(name)")
    samples = validation.check_points_2d("samples", np.asarray(samples), finite=True)
    if not validation.is_real_number(off_support_z) or not 0 < off_support_z < np.inf:
        raise ValueError(f"`off_support_z` must be a finite number > 0 (standard deviations), got {off_support_z!r}.")
    index, z = toy.nearest_component(samples, sigma)
    index, z = np.asarray(index), np.asarray(z)
    weights = np.bincount(index, minlength=toy.n_components) / len(index)
    return {
        "mode_weights": [float(w) for w in weights],
        "mode_weight_min": float(weights.min() * toy.n_components),
        "mode_weight_max": float(weights.max() * toy.n_components),
        "off_support": float(np.mean(z > off_support_z)),
    }


def class_coverage(labels, reference_labels, n_classes: int = 10, min_fraction: float = 0.02) -> dict:
    """Class split of generated samples (``labels``: a classifier's predicted class per sample)
    against ``reference_labels`` (e.g. the test set's true labels).

    Returns ``class_histogram`` (share of samples per class), ``class_kl`` = KL(generated ‖
    reference) in nats (0 for the same split; log n_classes for all samples in one class
    under a uniform reference), ``classes_under`` (how many classes get less than
    ``min_fraction`` of the samples), ``class_min`` (the smallest share) and ``min_fraction``.
    """
    n_classes = validation.check_positive_int("n_classes", n_classes, minimum=2)
    if not validation.is_real_number(min_fraction) or not 0 <= min_fraction < 1:
        raise ValueError(f"`min_fraction` must be a number in [0, 1), got {min_fraction!r}.")
    hist = np.bincount(validation.check_class_labels("labels", labels, n_classes), minlength=n_classes) / len(labels)
    ref = np.bincount(validation.check_class_labels("reference_labels", reference_labels, n_classes), minlength=n_classes)
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
