"""Image data: Fashion-MNIST from Debian's IDX files, other sets from the TFDS catalogue.

Everything goes through tensorflow-datasets *without TensorFlow*: features are
``tfds.features.Tensor``/``ClassLabel`` (``tfds.features.Image`` would import TF), files
are ``array_record`` and reading uses ``as_data_source()``, a random-access sequence of
numpy examples. Nothing is ever downloaded: Fashion-MNIST is prepared once from the IDX
files of Debian's ``dataset-fashion-mnist`` package into a cache directory; other data
sets must already be prepared (``tfds build NAME --file_format=array_record``) by the user.

For training, :func:`load_arrays` puts a whole split in memory as float32 in [0, 1]
(zero-padded to 32 × 32 as in the MDSM paper) and :class:`BatchIterator` serves shuffled
batches whose order is a pure function of ``(seed, epoch, index)``, so training can resume
the data order exactly::

    x, y = load_arrays("fashion_mnist", "train")
    batches = BatchIterator(x, batch_size=128, seed=0, prefetch=2)
    state, history = dj.fit(step, state, n_steps, batches=batches)  # checkpoints .position
"""
from __future__ import annotations

import gzip
import os
import queue
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

DEFAULT_IDX_DIR = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

_INSTALL_HINT = (
    "Install Debian's copy with `sudo apt-get install dataset-fashion-mnist` (files land in "
    f"{DEFAULT_IDX_DIR}), or pass --data_dir DIR (data_dir=DIR) pointing at a directory "
    "holding the four IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each optionally .gz)."
)

# IDX type codes (third byte of the magic number) -> big-endian numpy dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# split -> (images stem, labels stem), the file names LeCun's format uses.
_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# Names served by the local IDX builder rather than the TFDS catalogue.
_LOCAL_NAMES = ("fashion_mnist", "fashion_mnist_idx")


# ---------------------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------------------
def read_idx(path) -> np.ndarray:
    """Parse one IDX file (raw or gzip-compressed) into a native-endian numpy array.

    IDX = two zero bytes, a type code, the number of dimensions, then one big-endian
    uint32 per dimension and the data. Every field is checked, so a truncated or foreign
    file fails here with the reason instead of giving garbage images later.
    """
    path = Path(path)
    with path.open("rb") as f:
        is_gzip = f.read(2) == b"\x1f\x8b"  # sniff rather than trust the suffix
    opener = gzip.open if is_gzip else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path} is not an IDX file: bad magic number {raw[:4].hex() or '(empty)'} "
            "(expected 0000 followed by a type code and the number of dimensions)."
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: IDX header truncated ({len(raw)} bytes, need {header}).")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: IDX header says shape {shape} of {dtype.name} ({expected} bytes in "
            f"all) but the file has {len(raw)} bytes; it is truncated or corrupt."
        )
    data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))  # native order, and a writable copy


def _find_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_idx_files(data_dir=None) -> dict[str, tuple[Path, Path]]:
    """``{"train": (images, labels), "test": (images, labels)}`` paths of the IDX files.

    Looks in ``data_dir`` if given, else in :data:`DEFAULT_IDX_DIR`; raises
    ``FileNotFoundError`` naming the place searched, what was missing and how to get
    the files (nothing is downloaded at run time).
    """
    directory = Path(os.path.expanduser(os.fspath(data_dir or DEFAULT_IDX_DIR)))
    found, missing = {}, []
    for split, stems in _IDX_STEMS.items():
        paths = tuple(_find_file(directory, stem) for stem in stems)
        missing += [f"{stem}[.gz]" for stem, p in zip(stems, paths) if p is None]
        found[split] = paths
    if missing:
        where = f"{directory}" + ("" if directory.is_dir() else " (the directory does not exist)")
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files not found. Looked in: {where}; missing: "
            f"{', '.join(missing)}. {_INSTALL_HINT}"
        )
    return found


def _default_cache_dir() -> Path:
    return Path(
        os.path.expanduser(
            os.environ.get("DSM_JAX_TFDS_DIR", "~/.cache/dsm_jax/tensorflow_datasets")
        )
    )


def _resolve_cache_dir(cache_dir) -> Path:
    return Path(os.path.expanduser(os.fspath(cache_dir))) if cache_dir else _default_cache_dir()


# ---------------------------------------------------------------------------------------
# The local TFDS builder
# ---------------------------------------------------------------------------------------
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
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
            raise ValueError(
                f"{images_path} / {labels_path}: expected images (n, 28, 28) and labels (n,), "
                f"got {images.shape} and {labels.shape}."
            )
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


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------
def _catalogue_source(name: str, split: str, cache_dir):
    """A prepared TFDS catalogue data set; never downloads.

    ``tfds.data_source`` (which ``tfds.testing.mock_data`` mocks) is tried in each
    candidate directory; when it fails, the builder tells whether the data was simply
    absent (a clear ``FileNotFoundError``) or something else went wrong (re-raised).
    """
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


def load_split(name: str = "fashion_mnist", split: str = "train", *, data_dir=None, cache_dir=None):
    """A random-access data source (``len``, ``[i]``, ``__getitems__``) of numpy examples.

    ``fashion_mnist``: the local IDX builder, prepared into ``cache_dir`` (default
    ``$DSM_JAX_TFDS_DIR`` or ``~/.cache/dsm_jax/tensorflow_datasets``) from the IDX files
    in ``data_dir`` (default :data:`DEFAULT_IDX_DIR`) on first use. Other names: the TFDS
    catalogue, already prepared as array_record in ``cache_dir`` (or, when ``cache_dir`` is
    not given, also TFDS's default directory); ``data_dir`` is unused for them.
    """
    if name in _LOCAL_NAMES:
        return _prepare_local(data_dir, _resolve_cache_dir(cache_dir)).as_data_source(split=split)
    return _catalogue_source(name, split, cache_dir)


def to_model_input(images, pad_to: int | None = 32) -> np.ndarray:
    """uint8 images (n, H, W[, C]) -> float32 (n, pad_to, pad_to, C) in [0, 1].

    Zero padding is split evenly between the sides (28 -> 32 adds 2 pixels each side,
    as the MDSM paper does for Fashion-MNIST, so that the conv nets halve cleanly).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"`images` must be uint8 (0..255), got dtype {images.dtype}.")
    if images.ndim == 3:
        images = images[..., None]  # grey-scale without a channel axis
    if images.ndim != 4:
        raise ValueError(f"`images` must be (n, H, W) or (n, H, W, C), got shape {images.shape}.")
    n, h, w, c = images.shape
    if pad_to is not None and (not _is_int(pad_to) or pad_to < 1):
        raise ValueError(f"`pad_to` must be a positive int or None, got {pad_to!r}.")
    if pad_to is None:
        pad_to_h, pad_to_w = h, w
    else:
        if h > pad_to or w > pad_to:
            raise ValueError(
                f"images are {h}x{w}, larger than pad_to={pad_to}; pass pad_to >= {max(h, w)} "
                "or pad_to=None to keep the size."
            )
        pad_to_h = pad_to_w = pad_to
    out = np.zeros((n, pad_to_h, pad_to_w, c), np.float32)
    top, left = (pad_to_h - h) // 2, (pad_to_w - w) // 2
    # Division (correctly rounded), not a multiply by 1/255: pixel values are exactly k/255.
    np.divide(images, np.float32(255), out=out[:, top : top + h, left : left + w], casting="unsafe")
    return out


def check_images(name: str, x, expected_shape=None, value_range=(0.0, 1.0)) -> np.ndarray:
    """Refuse images a model cannot train or be scored on, before any compute: ``x`` must
    be a float array (n, H, W, C) with ``(H, W, C) == expected_shape`` (when given), no
    NaN/inf, and values in ``value_range`` (when given). Errors name ``name`` and the fix.
    Returns ``x`` as a numpy array."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(
            f"`{name}` must have shape (n, H, W, C), got {x.shape}. Add a channel axis with "
            f"{name}[..., None] (grey-scale) or a batch axis with {name}[None] (one image)."
        )
    if expected_shape is not None and tuple(x.shape[1:]) != tuple(expected_shape):
        raise ValueError(
            f"`{name}` must be images of shape {tuple(expected_shape)}, got {tuple(x.shape[1:])} "
            f"(array {x.shape}). Pad/resize them (data.to_model_input pads 28x28 to 32x32) or build the "
            f"model for this shape."
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(
            f"`{name}` must be floating point, got dtype {x.dtype}. Convert uint8 pixels with "
            f"data.to_model_input (or x.astype(np.float32) / 255)."
        )
    finite = np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"`{name}` has {bad.size} images with NaN/inf values (first at index {bad[0]}). "
            f"Drop or repair them before training."
        )
    if value_range is not None and x.size:
        lo, hi = value_range
        x_min, x_max = float(x.min()), float(x.max())
        if x_min < lo or x_max > hi:
            raise ValueError(
                f"`{name}` values must lie in [{lo}, {hi}], got [{x_min:.4g}, {x_max:.4g}]. Rescale them "
                f"(uint8 pixels: / 255; [-1, 1] data: (x + 1) / 2)."
            )
    return x


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


# ---------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------
class BatchIterator:
    """Shuffled, fixed-size batches over in-memory arrays, resumable and prefetchable.

    ``data`` is one array or a tuple/list/dict of arrays sharing the first dimension.
    Epoch ``e`` visits the examples in ``np.random.default_rng([seed, e]).permutation(n)``
    order and drops the last ``n % batch_size``; so the batch at ``position``
    ``{"epoch": e, "index": i}`` is a pure function of ``(seed, e, i)``, which is what
    makes :meth:`set_position` resume exactly and what keeps prefetching (a background
    thread computing the next request of the same size ahead of time) from ever
    changing the order.

    ``batch_size`` is the *global* batch. With several processes (a multi-host run) each
    process reads only its own rows of every global batch: process ``process_index`` of
    ``process_count`` (default: ``jax.process_index()``/``jax.process_count()``) gets rows
    ``[i·b, (i+1)·b)`` with ``b = batch_size / process_count`` (``local_batch_size``), so
    together the processes see exactly the one-process batches, and all share one position.
    """

    def __init__(self, data, batch_size: int, *, seed: int = 0, prefetch: int = 0,
                 process_index: int | None = None, process_count: int | None = None):
        self._data, self._n = _check_data(data)
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
        if batch_size > self._n:
            raise ValueError(
                f"`batch_size`={batch_size} exceeds the {self._n} examples; pass "
                f"batch_size <= {self._n} (every epoch drops its incomplete last batch)."
            )
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"`seed` must be an int >= 0 (numpy seeds), got {seed!r}.")
        if not _is_int(prefetch) or prefetch < 0:
            raise ValueError(f"`prefetch` must be an int >= 0 (0 = off), got {prefetch!r}.")
        if process_index is None or process_count is None:
            import jax  # only for the process layout of a multi-host run

            process_index = jax.process_index() if process_index is None else process_index
            process_count = jax.process_count() if process_count is None else process_count
        if not _is_int(process_count) or process_count < 1:
            raise ValueError(f"`process_count` must be a positive int, got {process_count!r}.")
        if not _is_int(process_index) or not 0 <= process_index < process_count:
            raise ValueError(f"`process_index` must be an int in [0, {process_count}), got {process_index!r}.")
        if batch_size % process_count:
            raise ValueError(
                f"`batch_size`={batch_size} (the global batch) does not split over {process_count} "
                f"processes; use a multiple of {process_count} (in fact of the total device count)."
            )
        self.batch_size = int(batch_size)
        self.local_batch_size = self.batch_size // int(process_count)
        self._row_offset = int(process_index) * self.local_batch_size  # this process's rows of a batch
        self.seed = int(seed)
        self.batches_per_epoch = self._n // self.batch_size
        self._prefetch = int(prefetch)
        self._epoch, self._index = 0, 0
        self._perm_cache: dict[int, np.ndarray] = {}
        self._worker: _Prefetcher | None = None

    # -- position ------------------------------------------------------------------------
    @property
    def position(self) -> dict[str, int]:
        """Where the next batch starts: save it with a checkpoint, restore with set_position."""
        return {"epoch": self._epoch, "index": self._index}

    def set_position(self, position: Mapping[str, int]) -> None:
        epoch, index = int(position["epoch"]), int(position["index"])
        if epoch < 0 or not 0 <= index < self.batches_per_epoch:
            raise ValueError(
                f"position {dict(position)} out of range: need epoch >= 0 and "
                f"0 <= index < {self.batches_per_epoch} (batches per epoch)."
            )
        self._stop_worker()  # its queue holds batches from the old position
        self._epoch, self._index = epoch, index

    # -- batches ------------------------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self):
        return self._take(None)

    def next_stacked(self, n: int):
        """The next ``n`` batches stacked on a new leading axis: leaves (n, batch, ...)."""
        if not _is_int(n) or n < 1:
            raise ValueError(f"`n` must be a positive int, got {n!r}.")
        return self._take(int(n))

    def close(self) -> None:
        """Stop the prefetch thread (it is a daemon; closing just frees it early)."""
        self._stop_worker()

    def _take(self, n: int | None):
        start = (self._epoch, self._index)
        if self._prefetch:
            if self._worker is None or self._worker.request != n:
                self._stop_worker()  # a different request size: restart from here
                self._worker = _Prefetcher(self, start, n, self._prefetch)
            try:
                batch, start_got, end = self._worker.get()
            except BaseException:
                self._stop_worker()  # the thread has ended; the next call starts afresh
                raise
            assert start_got == start, "prefetcher out of step"  # guarded by set_position
        else:
            batch, end = self._make(start, n)
        self._epoch, self._index = end
        return batch

    def _stop_worker(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def _permutation(self, epoch: int) -> np.ndarray:
        perm = self._perm_cache.get(epoch)
        if perm is None:  # benign race under prefetch: both threads compute the same array
            perm = np.random.default_rng([self.seed, epoch]).permutation(self._n)
            # Keep two epochs: a stacked request may straddle an epoch boundary.
            self._perm_cache = {**dict(list(self._perm_cache.items())[-1:]), epoch: perm}
        return perm

    def _make(self, start: tuple[int, int], n: int | None):
        """(batches from ``start``, position after them): pure in (seed, start, n)."""
        epoch, index = start
        count = 1 if n is None else n
        rows = []
        for _ in range(count):
            lo = index * self.batch_size + self._row_offset
            rows.append(self._permutation(epoch)[lo : lo + self.local_batch_size])
            index += 1
            if index == self.batches_per_epoch:
                epoch, index = epoch + 1, 0
        idx = np.stack(rows) if n is not None else rows[0]  # (n, batch) or (batch,)
        return _gather(self._data, idx), (epoch, index)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_data(data):
    leaves = list(data.values()) if isinstance(data, Mapping) else (
        list(data) if isinstance(data, (tuple, list)) else [data]
    )
    if not leaves:
        raise ValueError("`data` is empty; pass an array or a tuple/dict of arrays.")
    arrays = [np.asarray(a) for a in leaves]
    sizes = {a.shape[0] if a.ndim else None for a in arrays}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"every array in `data` needs the same first (example) dimension, got shapes "
            f"{[a.shape for a in arrays]}."
        )
    if isinstance(data, Mapping):
        structured = dict(zip(data.keys(), arrays))
    elif isinstance(data, (tuple, list)):
        structured = tuple(arrays)
    else:
        structured = arrays[0]
    return structured, int(arrays[0].shape[0])


def _gather(data, idx: np.ndarray):
    """``data[idx]`` on every array; idx (batch,) or (n, batch) gives the leading axes."""
    if isinstance(data, dict):
        return {k: np.take(v, idx, axis=0) for k, v in data.items()}
    if isinstance(data, tuple):
        return tuple(np.take(v, idx, axis=0) for v in data)
    return np.take(data, idx, axis=0)


class _Prefetcher:
    """Computes ``iterator._make`` for successive positions ahead of the consumer.

    Each item carries the position it started from, so the consumer can check it got
    exactly the batch an unprefetched iterator would have produced. The thread holds the
    iterator only weakly, so an iterator dropped without ``close()`` still gets freed
    and its thread ends.
    """

    def __init__(self, iterator: BatchIterator, start, request: int | None, depth: int):
        self.request = request
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(weakref.ref(iterator), start),
            daemon=True,
            name="BatchIterator-prefetch",
        )
        self._thread.start()

    def _alive(self, iterator_ref) -> bool:
        return not self._stop.is_set() and iterator_ref() is not None

    def _run(self, iterator_ref, start) -> None:
        position = start
        while self._alive(iterator_ref):
            iterator = iterator_ref()
            if iterator is None:
                return
            try:
                batch, end = iterator._make(position, self.request)
                item = (batch, position, end)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                item, end = e, position
            del iterator  # no strong reference while blocked on the queue
            while self._alive(iterator_ref):
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return
            position = end

    def get(self):
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
