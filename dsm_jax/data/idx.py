"""LeCun's IDX format: parse a file, and find Fashion-MNIST's four files on disk (no download)."""
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
