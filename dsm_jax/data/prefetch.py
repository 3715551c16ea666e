"""The background thread that computes a :class:`~dsm_jax.data.BatchIterator`'s next request
ahead of the consumer, without ever changing the batch order."""
from __future__ import annotations

import queue
import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotation: batches.py imports this module
    from dsm_jax.data.batches import BatchIterator


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
