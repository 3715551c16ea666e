"""Fashion-MNIST as a local TFDS builder over the IDX files (no download, no TensorFlow).

Features are ``tfds.features.Tensor``/``ClassLabel`` (``tfds.features.Image`` would import
TF) and files ``array_record``, read with ``as_data_source()``. This is the one module of
:mod:`dsm_jax.data` that imports ``tensorflow_datasets`` at import time; the others import
it only when a data set is loaded.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from dsm_jax.data.idx import FASHION_MNIST_CLASSES, find_idx_files, read_idx_pair


def _default_cache_dir() -> Path:
    return Path(
        os.path.expanduser(
            os.environ.get("DSM_JAX_TFDS_DIR", "~/.cache/dsm_jax/tensorflow_datasets")
        )
    )


def _resolve_cache_dir(cache_dir) -> Path:
    return Path(os.path.expanduser(os.fspath(cache_dir))) if cache_dir else _default_cache_dir()


class FashionMnistIdx(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST prepared from local IDX files (no download, no TensorFlow).

    ``idx_dir`` (default :data:`DEFAULT_IDX_DIR`) is read only by
    ``download_and_prepare``; once prepared, the cache is read without the IDX files.
    The cache is keyed by name and version only, so a different ``idx_dir`` needs a
    different ``data_dir`` (cache).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Prepared from the IDX files of Debian's dataset-fashion-mnist."}
    # tfds locates a builder's source (only to find a checksums file, which a builder
    # without downloads does not have) through the `importlib_resources` backport, an
    # undeclared tfds dependency; None is tfds' own value for builders without a file.
    code_path = None

    def __init__(self, *, idx_dir=None, **kwargs):
        self._idx_dir = idx_dir
        # array_record is what gives random access through as_data_source() without TF.
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Fashion-MNIST (Xiao et al. 2017), 28x28 grey-scale, 10 classes.",
            features=tfds.features.FeaturesDict(
                {
                    # Tensor, not Image: Image encodes PNGs with TensorFlow.
                    "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=FASHION_MNIST_CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
            # Keep the IDX order (tfds would shuffle by key hash), so example i of the
            # data source is record i of the IDX files.
            disable_shuffling=True,
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the files are local; nothing to download
        files = find_idx_files(self._idx_dir)
        return {split: self._generate_examples(*paths) for split, paths in files.items()}

    def _generate_examples(self, images_path, labels_path):
        images, labels = read_idx_pair(images_path, labels_path)
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": image[:, :, None], "label": int(label)}


def _prepare_local(idx_dir, cache_dir) -> FashionMnistIdx:
    """The builder over ``cache_dir``, preparing it from the IDX files the first time."""
    builder = FashionMnistIdx(idx_dir=idx_dir, data_dir=os.fspath(cache_dir))
    if builder.is_prepared():
        return builder
    find_idx_files(idx_dir)  # fail early with the install hint, not inside tfds
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                try_download_gcs=False,  # no network at run time
                compute_stats=tfds.download.ComputeStatsMode.SKIP,
            )
        )
    except OSError:
        # Two processes preparing the same cache (pytest -n 2): each writes a private
        # temporary directory and the slower one's final rename fails. Its data is
        # identical, so use the winner's.
        builder = FashionMnistIdx(idx_dir=idx_dir, data_dir=os.fspath(cache_dir))
        if not builder.is_prepared():
            raise
    return builder
