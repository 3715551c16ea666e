"""Image-quality metrics for Fashion-MNIST without Inception weights.

No pretrained Inception network can be downloaded here, so the project trains its own small
CNN classifier (:class:`Classifier`, :func:`train_classifier`; deterministic for a seed,
checkpointed with orbax) and measures sample quality on its features:

* :func:`fd` — the Fréchet distance between Gaussians fitted to the classifier's penultimate
  features of two image sets (FID with our classifier in place of Inception);
* :func:`inception_score` — exp(E_x KL(p(y|x) ‖ p(y))) with our classifier's p(y|x).

FD estimated from ``n`` samples is biased upward (the sample covariance of a finite set is
noisy, and the noise adds to the trace term), so a number is only meaningful beside a floor
computed with the *same* ``n``: :func:`fd_report` reports the FD of a random training subset
of the same size against the test set (``fd_floor``) and of a full-covariance Gaussian fitted
to the training pixels (``fd_gaussian_baseline``), the bar any generative model must clear.

Images are float32 ``(n, H, W, C)`` in ``[0, 1]`` with H, W multiples of 8 (Fashion-MNIST
zero-padded from 28 to 32 by default, CIFAR-10 as it is), one shape per classifier (read off its
params by :func:`params_image_shape`), and labels int ``(n,)`` in ``0..9``.

One job a module: :mod:`~dsm_jax.image_metrics.classifier` (the network and its forward
passes), :mod:`~dsm_jax.image_metrics.train` (training and caching it),
:mod:`~dsm_jax.image_metrics.frechet`, :mod:`~dsm_jax.image_metrics.inception`, and
:mod:`~dsm_jax.image_metrics.report` (the Gaussian baseline, :func:`fd_report`, and
:func:`make_sample_scorer`, its FD and class coverage alone, for monitors that score often).
"""
from dsm_jax.image_metrics.classifier import (
    IMAGE_SHAPE,
    N_CLASSES,
    Classifier,
    accuracy,
    classifier_features,
    classifier_logits,
    init_classifier,
    params_image_shape,
)
from dsm_jax.image_metrics.frechet import fd, frechet_distance, gaussian_stats
from dsm_jax.image_metrics.inception import inception_score
from dsm_jax.image_metrics.report import SampleScorer, fd_report, gaussian_baseline_sampler, make_sample_scorer
from dsm_jax.image_metrics.train import DEFAULT_LEARNING_RATE, DEFAULT_STEPS, cached_classifier, train_classifier

__all__ = [
    "Classifier",
    "train_classifier",
    "cached_classifier",
    "init_classifier",
    "params_image_shape",
    "classifier_logits",
    "classifier_features",
    "accuracy",
    "gaussian_stats",
    "frechet_distance",
    "fd",
    "inception_score",
    "gaussian_baseline_sampler",
    "fd_report",
    "make_sample_scorer",
    "SampleScorer",
    "DEFAULT_STEPS",
    "DEFAULT_LEARNING_RATE",
]
