"""Shuffled fixed-size batches over in-memory arrays whose order is a pure function of
``(seed, epoch, index)``: resumable from a saved position, prefetchable, multi-host aware."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dsm_jax import validation
from dsm_jax.data.prefetch import _Prefetcher


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
        batch_size = validation.check_positive_int("batch_size", batch_size)
        if batch_size > self._n:
            raise ValueError(
                f"`batch_size`={batch_size} exceeds the {self._n} examples; pass "
                f"batch_size <= {self._n} (every epoch drops its incomplete last batch)."
            )
        seed = validation.check_positive_int("seed", seed, minimum=0, what="numpy seeds")
        prefetch = validation.check_positive_int("prefetch", prefetch, minimum=0, what="0 = off")
        if process_index is None or process_count is None:
            import jax  # only for the process layout of a multi-host run

            process_index = jax.process_index() if process_index is None else process_index
            process_count = jax.process_count() if process_count is None else process_count
        process_count = validation.check_positive_int("process_count", process_count)
        process_index = validation.check_positive_int("process_index", process_index, minimum=0)
        if process_index >= process_count:
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
        epoch, index = _check_position(position)
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
        n = validation.check_positive_int("n", n)
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


def _check_position(position) -> tuple[int, int]:
    """``{"epoch": int, "index": int}`` (what :attr:`BatchIterator.position` returns)."""
    if not isinstance(position, Mapping) or not {"epoch", "index"} <= set(position):
        raise ValueError(
            f"`position` must be a mapping with keys 'epoch' and 'index' (BatchIterator.position), "
            f"got {position!r}.")
    entries = (position["epoch"], position["index"])
    # ints, or 0-d integer arrays (a position read back from a checkpoint)
    if not all(np.ndim(v) == 0 and np.asarray(v).dtype.kind in "iu" for v in entries):
        raise TypeError(f"`position` entries must be ints, got {dict(position)!r}.")
    return int(entries[0]), int(entries[1])


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
