"""Loading a split: a random-access data source, or the whole split in memory as arrays.

``tensorflow_datasets`` is imported only here, when a data set is actually loaded, so that
``import dsm_jax.data`` (the batch iterator, the IDX reader) stays light. Without it (an
offline accelerator machine may lack it), Fashion-MNIST and MNIST still load, straight from
their IDX files into memory; catalogue names then say that tensorflow-datasets is needed.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dsm_jax import validation
from dsm_jax.data.idx import _IDX_STEMS, read_idx_split
from dsm_jax.data.images import check_pad_to, to_model_input

# Names served by the local IDX builder rather than the TFDS catalogue.
_LOCAL_NAMES = ("fashion_mnist", "fashion_mnist_idx")
# Names that load from IDX files into memory when tensorflow-datasets is absent.
_IDX_NAMES = (*_LOCAL_NAMES, "mnist")

# (H, W, C) of the stored images of catalogue sets the experiments know, so a model can be
# built before (or without) reading the data; other names are read from their first image.
KNOWN_IMAGE_SHAPES = {
    "fashion_mnist": (28, 28, 1),
    "fashion_mnist_idx": (28, 28, 1),
    "mnist": (28, 28, 1),
    "cifar10": (32, 32, 3),
    "celeb_a": (218, 178, 3),
}


def _tfds():
    """The ``tensorflow_datasets`` module, or None when it cannot be imported."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return None
    return tfds


def check_source_name(name, split) -> None:
    """``name``/``split`` strings; the local Fashion-MNIST builder has splits train and test."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"`name` must be a data set name such as 'fashion_mnist', got {name!r}.")
    if not isinstance(split, str) or not split:
        raise TypeError(f"`split` must be a split name such as 'train' or 'test', got {split!r}.")
    if name in _LOCAL_NAMES and split not in _IDX_STEMS:
        raise ValueError(f"`split` {split!r} is not a split of {name!r}; choose one of {sorted(_IDX_STEMS)}.")


def _catalogue_source(tfds, name: str, split: str, cache_dir):
    """A prepared TFDS catalogue data set; never downloads.

    ``tfds.data_source`` (which ``tfds.testing.mock_data`` mocks) is tried in each
    candidate directory; when it fails, the builder tells whether the data was simply
    absent (a clear ``FileNotFoundError``) or something else went wrong (re-raised).
    """
    from dsm_jax.data.tfds_builder import _resolve_cache_dir

    dirs = [_resolve_cache_dir(cache_dir)]
    if cache_dir is None:  # also where `tfds build` puts data by default
        dirs.append(Path(tfds.core.constants.get_default_data_dir()))
    causes = []
    for directory in dirs:
        try:
            return tfds.data_source(
                name, split=split, data_dir=os.fspath(directory), download=False
            )
        except tfds.core.registered.DatasetNotFoundError as e:
            raise ValueError(
                f"{name!r} is neither 'fashion_mnist' nor a TFDS catalogue data set."
            ) from e
        except Exception as e:  # noqa: BLE001 - classified just below
            if tfds.builder(name, data_dir=os.fspath(directory)).is_prepared():
                raise
            causes.append(f"{directory} ({type(e).__name__})")
    raise FileNotFoundError(
        f"TFDS data set {name!r} (split {split!r}) is not prepared in any of: "
        f"{'; '.join(causes)}. Nothing is downloaded at run time: prepare it where you "
        f"have network with `tfds build {name} --file_format=array_record --data_dir DIR` "
        "and pass cache_dir=DIR (or set DSM_JAX_TFDS_DIR)."
    )


class ArraySource:
    """A split held in memory, served like a TFDS data source: ``len``, ``[i]`` and
    ``__getitems__`` give ``{"image": uint8 (H, W, C), "label": int}`` records."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i]}

    def __getitems__(self, keys) -> list[dict]:
        return [self[i] for i in keys]


def load_split(name: str = "fashion_mnist", split: str = "train", *, data_dir=None, cache_dir=None):
    """A random-access data source (``len``, ``[i]``, ``__getitems__``) of numpy examples.

    ``fashion_mnist``: the local IDX builder, prepared into ``cache_dir`` (default
    ``$DSM_JAX_TFDS_DIR`` or ``~/.cache/dsm_jax/tensorflow_datasets``) from the IDX files
    in ``data_dir`` (default :data:`DEFAULT_IDX_DIR`) on first use. Other names: the TFDS
    catalogue, already prepared as array_record in ``cache_dir`` (or, when ``cache_dir`` is
    not given, also TFDS's default directory); ``data_dir`` is unused for them.

    Without tensorflow-datasets, ``fashion_mnist`` and ``mnist`` (``data_dir`` required) are
    read from their IDX files into an in-memory :class:`ArraySource` (same records, same
    order); any other name raises ``ImportError`` saying tensorflow-datasets is needed.
    """
    check_source_name(name, split)
    tfds = _tfds()
    if tfds is None:
        if name not in _IDX_NAMES:
            raise ImportError(
                f"Data set {name!r} comes from the TFDS catalogue, which needs tensorflow-datasets "
                "(not importable here): `pip install tensorflow-datasets` and prepare it with `tfds build "
                f"{name} --file_format=array_record`. Without it only {list(_IDX_NAMES)} load, from IDX files.")
        if split not in _IDX_STEMS:
            raise ValueError(f"`split` {split!r} is not a split of {name!r}'s IDX files; choose one of "
                             f"{sorted(_IDX_STEMS)}.")
        return ArraySource(*read_idx_split(split, data_dir, "mnist" if name == "mnist" else "fashion_mnist"))
    if name in _LOCAL_NAMES:
        from dsm_jax.data.tfds_builder import _prepare_local, _resolve_cache_dir

        return _prepare_local(data_dir, _resolve_cache_dir(cache_dir)).as_data_source(split=split)
    return _catalogue_source(tfds, name, split, cache_dir)


def image_shape(name: str = "fashion_mnist", *, data_dir=None, cache_dir=None) -> tuple[int, ...]:
    """The stored (H, W, C) of ``name``'s images: from :data:`KNOWN_IMAGE_SHAPES` without
    reading anything, else from the first training image (the set must be prepared)."""
    check_source_name(name, "train")
    if name in KNOWN_IMAGE_SHAPES:
        return KNOWN_IMAGE_SHAPES[name]
    shape = np.shape(load_split(name, "train", data_dir=data_dir, cache_dir=cache_dir)[0]["image"])
    return tuple(int(d) for d in shape) if len(shape) == 3 else (*map(int, shape), 1)


def _read_records(source, keys: list[int]) -> list:
    """``source.__getitems__(keys)``: one call per chunk, so array_record reads in bulk.

    Falls back to one ``source[i]`` per key for sources without a working
    ``__getitems__`` (tfds 4.9's ``mock_data`` installs one that raises TypeError).
    """
    try:
        return list(source.__getitems__(keys))
    except (AttributeError, TypeError):
        return [source[i] for i in keys]


def load_arrays(
    name: str = "fashion_mnist",
    split: str = "train",
    *,
    data_dir=None,
    cache_dir=None,
    pad_to: int | None = 32,
    limit: int | None = None,
    chunk_size: int = 8192,
) -> tuple[np.ndarray, np.ndarray]:
    """A whole split in memory: images float32 (n, pad_to, pad_to, C) in [0, 1], labels int32 (n,).

    ``limit`` keeps the first ``limit`` examples. Labels are -1 for data sets without a
    ``label`` feature. See :func:`load_split` for ``name``, ``data_dir``, ``cache_dir``.
    """
    check_pad_to(pad_to)  # checked now, not after reading the whole split
    if limit is not None:
        validation.check_positive_int("limit", limit)
    validation.check_positive_int("chunk_size", chunk_size)
    source = load_split(name, split, data_dir=data_dir, cache_dir=cache_dir)
    n = len(source) if limit is None else min(int(limit), len(source))
    if n <= 0:
        raise ValueError(f"{name!r} split {split!r} has no examples (limit={limit!r}).")
    first = np.asarray(source[0]["image"])
    raw = np.empty((n, *first.shape), first.dtype)  # filled in place: no per-chunk copies
    labels = np.full((n,), -1, np.int32)
    for start in range(0, n, chunk_size):
        records = _read_records(source, list(range(start, min(start + chunk_size, n))))
        for i, record in enumerate(records, start):
            raw[i] = record["image"]
            labels[i] = record.get("label", -1)
    x = to_model_input(raw, pad_to)
    if not np.all(np.isfinite(x)) or x.min() < 0.0 or x.max() > 1.0:
        raise ValueError(f"{name!r} split {split!r}: images are not finite values in [0, 1].")
    return x, labels
