"""Image data and classifier scoring, shared by the image experiments: Fashion-MNIST by default
or any prepared TFDS image set (``data.dataset``), the models' input shape, the FD classifier
cached per data set, and the scorers of a sample set (the monitors' quick one and the full FD
report)."""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable

import numpy as np

from dsm_jax import data, image_metrics
from dsm_jax.config import field

OFF = dict(resume=False)
PAD_TO = 32  # MDSM zero-pads 28×28 sets to 32×32 so its nets halve cleanly; larger images keep their size
REFUSED = {  # data sets refused up front, and why (docs/datasets.md)
    "celeb_a": "its 218x178 images need MDSM's crop-and-resize to 64x64, which is not implemented, and it has no "
               "class labels for the FD classifier",
}


@dataclasses.dataclass(frozen=True)
class ImageData:
    """Where the images and the FD classifier come from, and how samples are scored."""
    # fashion_mnist (default), mnist, cifar10, or any prepared TFDS image set with labels 0..9 (docs/datasets.md)
    dataset: str = field("fashion_mnist", added=True)
    data_dir: str | None = field(None, legacy_none="", **OFF)   # IDX files (None: Debian's /usr/share/datasets/fashion-mnist)
    cache_dir: str | None = field(None, legacy_none="", **OFF)  # prepared TFDS data (None: $DSM_JAX_TFDS_DIR or ~/.cache/dsm_jax)
    classifier_dir: str = field("runs/classifier", **OFF)       # FD classifiers' checkpoints (one per set), shared by runs
    train_limit: int | None = field(None, legacy_none=0)        # only the first N training images (None: all)
    test_limit: int | None = field(None, legacy_none=0, **OFF)  # only the first N test images (None: all; smoke only)
    classifier_steps: int = field(3000, **OFF)
    fd_n: int = field(1000, **OFF)


def check_image_data(d: ImageData) -> None:
    """Refuse a data set the image experiments cannot run on, before anything loads."""
    if not isinstance(d.dataset, str) or not d.dataset:
        raise ValueError(f"`data.dataset` must be a data set name, got {d.dataset!r}; fix it with "
                         "--set data.dataset=fashion_mnist.")
    if d.dataset in REFUSED:
        raise ValueError(f"`data.dataset` {d.dataset!r} is refused: {REFUSED[d.dataset]}. Use fashion_mnist, mnist, "
                         "cifar10 or another prepared TFDS image set of at most 32x32 pixels with labels 0..9.")


def _pad_to(raw_shape) -> int | None:
    return PAD_TO if max(raw_shape[:2]) <= PAD_TO else None


@functools.lru_cache(maxsize=None)
def _raw_shape(name: str, data_dir, cache_dir) -> tuple[int, ...]:
    return data.image_shape(name, data_dir=data_dir, cache_dir=cache_dir)


def image_shape(d: ImageData) -> tuple[int, int, int]:
    """The models' input shape (H, W, C) for ``d.dataset``: (32, 32, 1) for Fashion-MNIST and
    MNIST (padded), (32, 32, 3) for CIFAR-10; known sets need no data, others are read from
    their first image (:func:`dsm_jax.data.image_shape`)."""
    raw = _raw_shape(d.dataset, d.data_dir, d.cache_dir)
    return data.padded_shape(raw, _pad_to(raw))


def classifier_root(d: ImageData) -> str:
    """Where ``d.dataset``'s FD classifiers are cached: one directory per data set (Fashion-MNIST
    keeps ``classifier_dir`` itself, where earlier runs cached theirs), so a classifier trained
    on one set is never reused for another."""
    return d.classifier_dir if d.dataset == "fashion_mnist" else os.path.join(d.classifier_dir, d.dataset)


def load_images(d: ImageData):
    """``(x_train, y_train, x_test, y_test)`` of ``d.dataset``, checked to be (n, *image_shape(d))
    images in [0, 1] with class labels (the FD classifier needs them)."""
    check_image_data(d)
    shape, raw = image_shape(d), _raw_shape(d.dataset, d.data_dir, d.cache_dir)
    where = dict(data_dir=d.data_dir, cache_dir=d.cache_dir, pad_to=_pad_to(raw))
    x_train, y_train = data.load_arrays(d.dataset, "train", limit=d.train_limit, **where)
    x_test, y_test = data.load_arrays(d.dataset, "test", limit=d.test_limit, **where)
    data.check_images("x_train", x_train, shape)
    data.check_images("x_test", x_test, shape)
    if min(y_train.min(), y_test.min()) < 0:
        raise ValueError(f"`data.dataset` {d.dataset!r} has no 'label' feature; the FD classifier trains on class "
                         "labels 0..9, so pick a labelled image set.")
    return x_train, y_train, x_test, y_test


load_fashion = load_images  # its name before other data sets


@dataclasses.dataclass(frozen=True)
class Images:
    """The data set and its classifier, loaded once by :func:`images`; :meth:`score` gives a
    sample set's FD report (floor, Gaussian baseline, IS analogue, class coverage)."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    clf_params: dict
    clf_info: dict
    fd_n: int

    def score(self, samples, key) -> dict:
        # Scored as displayed: clipped to the data range [0, 1] (the chains themselves never clip).
        return image_metrics.fd_report(self.clf_params, samples, self.x_train, self.x_test,
                                       n=min(self.fd_n, len(samples)), key=key, clip_samples=True,
                                       test_labels=self.y_test)


def images(d: ImageData, seed: int, progress: bool) -> Images:
    """``d.dataset`` and the metric's classifier trained on it, once, and cached under
    :func:`classifier_root` (shared by every image experiment)."""
    x_train, y_train, x_test, y_test = load_images(d)
    clf_params, clf_info = image_metrics.cached_classifier(
        x_train, y_train, x_test, y_test, root=classifier_root(d), steps=d.classifier_steps, seed=seed,
        progress=progress)
    return Images(x_train, y_train, x_test, y_test, clf_params, clf_info, d.fd_n)


MONITOR_FIELDS = ("fd", "classes_under", "class_min", "class_kl")  # what a monitor's record scores


def sample_scorer(clf_params, x_test, y_test) -> Callable:
    """``score(samples) -> {fd, classes_under, class_min, class_kl}``
    (:func:`dsm_jax.image_metrics.make_sample_scorer`, the monitor's fields): the FD of the
    samples clipped to [0, 1], as :meth:`Images.score` scores them, against the test set's
    classifier features, and their class coverage against ``y_test`` — the same numbers as
    :meth:`Images.score`'s ``fd`` and coverage fields, without its floor, baselines and
    training-set features (~40 s), so training monitors can call it often. ``None`` when a
    sample is non-finite."""
    scorer = image_metrics.make_sample_scorer(clf_params, x_test, y_test)

    def score(samples):
        scores = scorer(samples)
        return None if scores is None else {k: scores[k] for k in MONITOR_FIELDS}

    return score
