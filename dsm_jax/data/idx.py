"""LeCun's IDX format: parse a file, find a data set's four files on disk (no download), and
read a split straight into arrays (the path used when tensorflow-datasets is absent)."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

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


def find_idx_files(data_dir=None, name: str = "fashion_mnist") -> dict[str, tuple[Path, Path]]:
    """``{"train": (images, labels), "test": (images, labels)}`` paths of the IDX files.

    Looks in ``data_dir`` if given, else (Fashion-MNIST only) in :data:`DEFAULT_IDX_DIR`;
    raises ``FileNotFoundError`` naming the place searched, what was missing and how to get
    the files (nothing is downloaded at run time). ``name`` (``"fashion_mnist"`` or
    ``"mnist"``, which share LeCun's file names) only shapes the message and the default.
    """
    title = "MNIST" if name == "mnist" else "Fashion-MNIST"
    if data_dir is None and name == "mnist":  # Debian ships no MNIST package to default to
        raise FileNotFoundError(
            "MNIST IDX files: no directory given. Pass --data_dir DIR (data_dir=DIR) holding the four files "
            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
            "(each optionally .gz); nothing is downloaded at run time.")
    directory = Path(os.path.expanduser(os.fspath(data_dir or DEFAULT_IDX_DIR)))
    found, missing = {}, []
    for split, stems in _IDX_STEMS.items():
        paths = tuple(_find_file(directory, stem) for stem in stems)
        missing += [f"{stem}[.gz]" for stem, p in zip(stems, paths) if p is None]
        found[split] = paths
    if missing:
        where = f"{directory}" + ("" if directory.is_dir() else " (the directory does not exist)")
        hint = _INSTALL_HINT if name != "mnist" else _INSTALL_HINT[_INSTALL_HINT.index("pass --data_dir"):]
        raise FileNotFoundError(
            f"{title} IDX files not found. Looked in: {where}; missing: "
            f"{', '.join(missing)}. {hint[0].upper()}{hint[1:]}"
        )
    return found


def read_idx_pair(images_path, labels_path) -> tuple[np.ndarray, np.ndarray]:
    """An images file and its labels file: ``(images uint8 (n, 28, 28), labels (n,))``, checked."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise ValueError(
            f"{images_path} / {labels_path}: expected images (n, 28, 28) and labels (n,), "
            f"got {images.shape} and {labels.shape}."
        )
    return images, labels


def read_idx_split(split: str, data_dir=None, name: str = "fashion_mnist") -> tuple[np.ndarray, np.ndarray]:
    """One split of the IDX files as ``(images uint8 (n, 28, 28, 1), labels int64 (n,))`` in file
    order: the records the local TFDS builder writes, read without tensorflow-datasets."""
    images, labels = read_idx_pair(*find_idx_files(data_dir, name)[split])
    return images[..., None], labels.astype(np.int64)
