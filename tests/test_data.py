"""Tests for dsm_jax.data: IDX parsing, the local TFDS builder, loading, batching.

Everything runs on tiny IDX files written here (20 train / 10 test images), so the suite
needs neither network nor Debian's package; one test reads the real Fashion-MNIST test
split when the package is installed.
"""
from __future__ import annotations

import gc
import gzip
import struct
import sys
from pathlib import Path

import chex
import numpy as np
import pytest
import tensorflow_datasets as tfds

from dsm_jax import data

N_TRAIN, N_TEST = 20, 10
_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    """Write ``array`` in LeCun's IDX format, independently of the reader under test."""
    array = np.asarray(array)
    header = bytes([0, 0, _IDX_CODES[array.dtype], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def write_fashion_dir(directory: Path, rng, n_train=N_TRAIN, n_test=N_TEST, compress=True):
    """The four Fashion-MNIST IDX files with random content; returns {split: (x, y)}."""
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    written = {}
    for split, n, prefix in (("train", n_train, "train"), ("test", n_test, "t10k")):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=(n,)).astype(np.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", x, compress)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", y, compress)
        written[split] = (x, y)
    return written


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny IDX directory and its builder prepared once into a cache for the module."""
    root = tmp_path_factory.mktemp("fashion")
    idx_dir, cache = root / "idx", root / "cache"
    written = write_fashion_dir(idx_dir, np.random.default_rng(0))
    data.load_split("fashion_mnist", "train", data_dir=idx_dir, cache_dir=cache)  # prepares
    return {"idx_dir": idx_dir, "cache": cache, "written": written}


# ---------------------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_read_idx_round_trip(tmp_path, compress):
    rng = np.random.default_rng(1)
    arrays = {
        "images": rng.integers(0, 256, size=(3, 5, 4), dtype=np.uint8),
        "labels": rng.integers(0, 10, size=(7,)).astype(np.uint8),
        "ints": rng.integers(-(2**30), 2**30, size=(2, 3)).astype(np.int32),  # big-endian
        "floats": rng.normal(size=(4,)).astype(np.float32),
    }
    for name, expected in arrays.items():
        # Compression is sniffed from the content, not from the file name.
        got = data.read_idx(write_idx(tmp_path / f"{name}.idx", expected, compress))
        chex.assert_shape(got, expected.shape)
        assert got.dtype == expected.dtype.newbyteorder("="), name
        np.testing.assert_array_equal(got, expected)


def test_read_idx_rejects_malformed_files(tmp_path):
    good = write_idx(tmp_path / "good", np.zeros((2, 3), np.uint8), compress=False)
    bad_magic = tmp_path / "bad_magic"
    bad_magic.write_bytes(b"\x01\x02" + good.read_bytes()[2:])
    with pytest.raises(ValueError, match="magic number"):
        data.read_idx(bad_magic)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(good.read_bytes()[:-1])
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(truncated)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="magic number"):
        data.read_idx(empty)


def test_find_idx_files_raw_and_gz(tmp_path):
    write_fashion_dir(tmp_path / "raw", np.random.default_rng(2), 3, 2, compress=False)
    files = data.find_idx_files(tmp_path / "raw")
    assert set(files) == {"train", "test"}
    assert files["test"][0].name == "t10k-images-idx3-ubyte"
    assert files["train"][1].name == "train-labels-idx1-ubyte"


def test_missing_directory_explains_where_and_how(tmp_path):
    missing = tmp_path / "no-such-dir"
    for call in (
        lambda: data.find_idx_files(missing),
        lambda: data.load_split("fashion_mnist", data_dir=missing, cache_dir=tmp_path / "c"),
    ):
        with pytest.raises(FileNotFoundError) as info:
            call()
        message = str(info.value)
        assert str(missing) in message
        assert "sudo apt-get install dataset-fashion-mnist" in message
        assert "--data_dir" in message
    assert not (tmp_path / "c" / "fashion_mnist_idx" / "1.0.0").exists()


# ---------------------------------------------------------------------------------------
# The local builder
# ---------------------------------------------------------------------------------------
def test_builder_reproduces_the_idx_files_exactly(tiny):
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        source = data.load_split(
            "fashion_mnist", split, data_dir=tiny["idx_dir"], cache_dir=tiny["cache"]
        )
        assert len(source) == n
        x, y = tiny["written"][split]
        for i in range(n):  # same order as the IDX files (shuffling is disabled)
            example = source[i]
            chex.assert_shape(example["image"], (28, 28, 1))
            assert example["image"].dtype == np.uint8
            np.testing.assert_array_equal(example["image"][..., 0], x[i])
            assert int(example["label"]) == y[i]


def test_prepared_cache_is_reused(tiny, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the data set was prepared again")

    monkeypatch.setattr(data.FashionMnistIdx, "_generate_examples", fail)
    monkeypatch.setattr(data.FashionMnistIdx, "download_and_prepare", fail)
    # The IDX files are not even needed once the cache exists.
    gone = tiny["idx_dir"] / "gone"
    source = data.load_split("fashion_mnist", "test", data_dir=gone, cache_dir=tiny["cache"])
    assert len(source) == N_TEST


def test_load_arrays_scales_and_pads(tiny):
    kwargs = dict(data_dir=tiny["idx_dir"], cache_dir=tiny["cache"])
    x, y = data.load_arrays("fashion_mnist", "train", **kwargs)
    images, labels = tiny["written"]["train"]
    chex.assert_shape(x, (N_TRAIN, 32, 32, 1))
    chex.assert_type([x, y], [np.float32, np.int32])
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_array_equal(x[:, 2:30, 2:30, 0], images.astype(np.float32) / np.float32(255))
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert np.all(x[:, border] == 0.0)
    assert x.min() >= 0.0 and x.max() <= 1.0

    x5, y5 = data.load_arrays("fashion_mnist", "test", pad_to=None, limit=5, chunk_size=2, **kwargs)
    chex.assert_shape(x5, (5, 28, 28, 1))
    np.testing.assert_array_equal(y5, tiny["written"]["test"][1][:5])


def test_to_model_input_shapes_and_errors():
    rgb = np.full((2, 29, 30, 3), 255, np.uint8)
    out = data.to_model_input(rgb, pad_to=32)
    chex.assert_shape(out, (2, 32, 32, 3))
    assert out.dtype == np.float32
    # Odd padding: the extra row goes to the bottom.
    assert np.all(out[:, 1:30, 1:31] == 1.0) and out.sum() == 2 * 29 * 30 * 3
    chex.assert_shape(data.to_model_input(np.zeros((4, 28, 28), np.uint8)), (4, 32, 32, 1))
    chex.assert_shape(data.to_model_input(rgb, pad_to=None), (2, 29, 30, 3))
    with pytest.raises(ValueError, match="pad_to"):
        data.to_model_input(np.zeros((1, 33, 33), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        data.to_model_input(np.zeros((1, 28, 28), np.float32))


# ---------------------------------------------------------------------------------------
# TFDS catalogue
# ---------------------------------------------------------------------------------------
def test_catalogue_data_set_through_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=12):
        source = data.load_split("mnist", "train", cache_dir=tmp_path)
        assert len(source) == 12
        x, y = data.load_arrays("mnist", "train", cache_dir=tmp_path, limit=7)
    chex.assert_shape(x, (7, 32, 32, 1))
    chex.assert_shape(y, (7,))
    assert np.all((y >= 0) & (y < 10))
    assert np.all(x[:, :2] == 0.0) and x.min() >= 0.0 and x.max() <= 1.0


def test_catalogue_data_set_not_prepared(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.load_split("mnist", "train", cache_dir=tmp_path)
    message = str(info.value)
    assert "'mnist'" in message and str(tmp_path) in message
    assert "downloaded" in message and "--file_format=array_record" in message
    with pytest.raises(ValueError, match="catalogue"):
        data.load_split("not_a_data_set_xyz", "train", cache_dir=tmp_path)


# ---------------------------------------------------------------------------------------
# BatchIterator
# ---------------------------------------------------------------------------------------
def _epoch_batches(iterator, n_batches):
    return [next(iterator) for _ in range(n_batches)]


def test_batches_cover_each_example_once_per_epoch():
    n, batch = 103, 10
    it = data.BatchIterator(np.arange(n), batch, seed=3)
    assert it.batches_per_epoch == 10
    epochs = []
    for epoch in range(3):
        assert it.position == {"epoch": epoch, "index": 0}
        seen = np.concatenate(_epoch_batches(it, it.batches_per_epoch))
        assert len(np.unique(seen)) == 100  # each example at most once; 3 dropped
        epochs.append(seen)
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch
    again = data.BatchIterator(np.arange(n), batch, seed=3)
    np.testing.assert_array_equal(np.concatenate(_epoch_batches(again, 10)), epochs[0])
    other = data.BatchIterator(np.arange(n), batch, seed=4)
    assert not np.array_equal(np.concatenate(_epoch_batches(other, 10)), epochs[0])


def test_batches_keep_structure_aligned():
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20, dtype=np.int32)
    xb, yb = next(data.BatchIterator((x, y), 4, seed=0))
    chex.assert_shape([xb, yb], [(4, 2), (4,)])
    np.testing.assert_array_equal(xb[:, 0], 2 * yb)
    stacked = data.BatchIterator({"x": x, "y": y}, 4, seed=0).next_stacked(7)  # crosses epochs
    chex.assert_shape([stacked["x"], stacked["y"]], [(7, 4, 2), (7, 4)])
    np.testing.assert_array_equal(stacked["x"][..., 0], 2 * stacked["y"])


@pytest.mark.parametrize("prefetch", [0, 2])
def test_set_position_resumes_the_exact_sequence(prefetch):
    x = np.arange(50)
    reference = data.BatchIterator(x, 8, seed=11)  # 6 batches per epoch
    expected = np.stack(_epoch_batches(reference, 20))

    first = data.BatchIterator(x, 8, seed=11, prefetch=prefetch)
    got = list(first.next_stacked(3)) + _epoch_batches(first, 5)
    saved = first.position
    assert saved == {"epoch": 1, "index": 2}
    first.close()

    resumed = data.BatchIterator(x, 8, seed=11, prefetch=prefetch)
    _epoch_batches(resumed, 4)  # somewhere else, with prefetched batches queued
    resumed.set_position(saved)
    got += _epoch_batches(resumed, 2) + list(resumed.next_stacked(5)) + _epoch_batches(resumed, 2)
    np.testing.assert_array_equal(np.stack(got), expected[:17])
    resumed.set_position({"epoch": 0, "index": 0})
    np.testing.assert_array_equal(resumed.next_stacked(20), expected)
    resumed.close()


def test_prefetch_thread_ends_with_its_iterator():
    it = data.BatchIterator(np.arange(64), 8, seed=0, prefetch=2)
    next(it)
    thread = it._worker._thread  # noqa: SLF001 - the thread is the point of this test
    assert thread.is_alive()
    del it
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_next_stacked_matches_single_batches():
    x = np.random.default_rng(0).normal(size=(30, 3, 3)).astype(np.float32)
    stacked = data.BatchIterator(x, 7, seed=5).next_stacked(9)
    chex.assert_shape(stacked, (9, 7, 3, 3))
    singles = _epoch_batches(data.BatchIterator(x, 7, seed=5), 9)  # crosses an epoch
    np.testing.assert_array_equal(stacked, np.stack(singles))


def test_bad_arguments_name_the_fix():
    x = np.zeros((10, 2))
    for bad in (0, -3):  # a value out of range: ValueError; a wrong type: TypeError, as everywhere
        with pytest.raises(ValueError, match="`batch_size` must be an int >= 1"):
            data.BatchIterator(x, bad)
    for bad in (2.5, True, "8"):
        with pytest.raises(TypeError, match="`batch_size` must be an int >= 1"):
            data.BatchIterator(x, bad)
    with pytest.raises(ValueError, match=r"`batch_size`=11 exceeds the 10 .*batch_size <= 10"):
        data.BatchIterator(x, 11)
    with pytest.raises(ValueError, match="same first"):
        data.BatchIterator((x, np.zeros(9)), 2)
    it = data.BatchIterator(x, 5)
    with pytest.raises(ValueError, match="out of range"):
        it.set_position({"epoch": 0, "index": 2})
    with pytest.raises(ValueError, match="`n`"):
        it.next_stacked(0)
    with pytest.raises(ValueError, match="`seed`"):
        data.BatchIterator(x, 5, seed=-1)


# ---------------------------------------------------------------------------------------
# The real data
# ---------------------------------------------------------------------------------------
def _real_files_or_skip():
    try:
        return data.find_idx_files()
    except FileNotFoundError:
        pytest.skip(f"Fashion-MNIST not installed in {data.DEFAULT_IDX_DIR}")


def test_real_fashion_mnist_test_split(tmp_path):
    files = _real_files_or_skip()
    # Quick: the real test files also stand in for the train split (10k, not 60k, to prepare).
    idx_dir = tmp_path / "idx"
    idx_dir.mkdir()
    images, labels = files["test"]
    for prefix in ("train", "t10k"):
        (idx_dir / f"{prefix}-images-idx3-ubyte{images.suffix}").symlink_to(images)
        (idx_dir / f"{prefix}-labels-idx1-ubyte{labels.suffix}").symlink_to(labels)
    x, y = data.load_arrays("fashion_mnist", "test", data_dir=idx_dir, cache_dir=tmp_path / "cache")
    chex.assert_shape(x, (10_000, 32, 32, 1))
    assert set(np.unique(y)) == set(range(10))
    assert np.all(np.bincount(y) == 1000)  # Fashion-MNIST's test split is balanced
    expected = data.read_idx(images).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(x[:, 2:30, 2:30, 0], expected)
    assert "tensorflow" not in sys.modules  # all of the above ran without TensorFlow


# ---------------------------------------------------------------------------------------
# Bad input refused before any reading or batching
# ---------------------------------------------------------------------------------------
_X = np.zeros((10, 2))
BAD_CALLS = [
    ("batch-size-0", lambda: data.BatchIterator(_X, 0), ValueError, r"`batch_size` must be an int >= 1, got 0"),
    ("batch-size-too-large", lambda: data.BatchIterator(_X, 11), ValueError, r"`batch_size`=11 exceeds the 10"),
    ("batch-size-on-no-data", lambda: data.BatchIterator(np.zeros((0, 2)), 1), ValueError, r"exceeds the 0 examples"),
    ("seed-float", lambda: data.BatchIterator(_X, 2, seed=1.5), TypeError, r"`seed` must be an int >= 0"),
    ("seed-negative", lambda: data.BatchIterator(_X, 2, seed=-1), ValueError, r"`seed` must be an int >= 0"),
    ("prefetch-negative", lambda: data.BatchIterator(_X, 2, prefetch=-1), ValueError, r"`prefetch` must be an int >= 0"),
    ("process-count-0", lambda: data.BatchIterator(_X, 2, process_index=0, process_count=0), ValueError,
     r"`process_count` must be an int >= 1"),
    ("process-index-out", lambda: data.BatchIterator(_X, 2, process_index=2, process_count=2), ValueError,
     r"`process_index` must be an int in \[0, 2\)"),
    ("batch-not-split", lambda: data.BatchIterator(_X, 3, process_index=0, process_count=2), ValueError,
     r"does not split over 2 processes"),
    ("data-empty-tuple", lambda: data.BatchIterator((), 2), ValueError, r"`data` is empty"),
    ("data-scalar", lambda: data.BatchIterator(np.float32(3.0), 1), ValueError, r"same first \(example\) dimension"),
    ("position-missing-key", lambda: data.BatchIterator(_X, 2).set_position({"epoch": 0}), ValueError,
     r"`position` must be a mapping with keys 'epoch' and 'index'"),
    ("position-not-int", lambda: data.BatchIterator(_X, 2).set_position({"epoch": "0", "index": 1}), TypeError,
     r"`position` entries must be ints"),
    ("position-negative-epoch", lambda: data.BatchIterator(_X, 2).set_position({"epoch": -1, "index": 0}), ValueError,
     r"out of range"),
    ("next-stacked-bool", lambda: data.BatchIterator(_X, 2).next_stacked(True), TypeError, r"`n` must be an int >= 1"),
    ("pad-to-0", lambda: data.to_model_input(np.zeros((1, 28, 28), np.uint8), pad_to=0), ValueError, r"`pad_to`"),
    ("pad-to-float", lambda: data.to_model_input(np.zeros((1, 28, 28), np.uint8), pad_to=32.0), TypeError,
     r"`pad_to` must be an int >= 1, or None"),
    ("images-float", lambda: data.to_model_input(np.zeros((1, 28, 28))), TypeError, r"`images` must be uint8"),
    ("images-2d", lambda: data.to_model_input(np.zeros((28, 28), np.uint8)), ValueError, r"`images` must be \(n, H, W\)"),
    ("load-limit-0", lambda: data.load_arrays("fashion_mnist", limit=0), ValueError, r"`limit` must be an int >= 1"),
    ("load-limit-float", lambda: data.load_arrays("fashion_mnist", limit=2.5), TypeError, r"`limit`"),
    ("load-chunk-0", lambda: data.load_arrays("fashion_mnist", chunk_size=0), ValueError, r"`chunk_size`"),
    ("load-pad-to-negative", lambda: data.load_arrays("fashion_mnist", pad_to=-4), ValueError, r"`pad_to`"),
    ("load-split-unknown", lambda: data.load_split("fashion_mnist", "validation"), ValueError,
     r"`split` 'validation' is not a split of 'fashion_mnist'; choose one of \['test', 'train'\]"),
    ("load-split-not-str", lambda: data.load_split("fashion_mnist", 0), TypeError, r"`split` must be a split name"),
    ("load-name-not-str", lambda: data.load_split(None), TypeError, r"`name` must be a data set name"),
    ("check-images-empty", lambda: data.check_images("x", np.zeros((0, 4, 4, 1), np.float32)), ValueError,
     r"`x` is empty"),
]


@pytest.mark.parametrize("call, error, message", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_input_is_refused_naming_the_argument(call, error, message, tmp_path, monkeypatch):
    # Nothing here may be read: the IDX directory and the cache do not exist.
    monkeypatch.setenv("DSM_JAX_TFDS_DIR", str(tmp_path / "no-cache"))
    with pytest.raises(error, match=message):
        call()
    assert not (tmp_path / "no-cache").exists()


def test_importing_data_and_batching_do_not_import_tensorflow_datasets():
    # tfds costs seconds to import; the batch iterator and the IDX reader do not need it.
    import subprocess

    code = ("import sys, numpy as np, dsm_jax.data as d; it = d.BatchIterator(np.arange(8), 4); next(it); "
            "d.to_model_input(np.zeros((1, 28, 28), np.uint8)); "
            "assert 'tensorflow_datasets' not in sys.modules, 'imported'; "
            "d.FashionMnistIdx; assert 'tensorflow_datasets' in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
