"""The Inception score protocol, with our classifier's logits."""
from __future__ import annotations

import numpy as np

from dsm_jax import validation


def inception_score(logits, n_splits: int = 10):
    """``(mean, std)`` over ``n_splits`` equal splits of exp(E_x KL(p(y|x) ‖ p(y))), p(y) the
    split's mean prediction (the standard IS protocol, with our classifier's logits).

    1 for predictions that ignore the image; the number of classes (10) for confident
    predictions spread evenly over the classes.
    """
    logits = validation.check_matrix("logits", logits)
    n_splits = validation.check_count("n_splits", n_splits, len(logits), "rows of `logits` (each split needs one)")
    log_p = logits - _logsumexp(logits, axis=1)  # float64 log-softmax
    scores = []
    for part in np.array_split(log_p, n_splits):
        log_py = _logsumexp(part, axis=0) - np.log(len(part))  # log of the split's marginal
        kl = np.sum(np.exp(part) * (part - log_py), axis=1)
        scores.append(np.exp(np.mean(kl)))
    return float(np.mean(scores)), float(np.std(scores))


def _logsumexp(a, axis):
    m = np.max(a, axis=axis, keepdims=True)
    return m + np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True))
