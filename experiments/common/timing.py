"""Timing: a monitor that ``fit`` calls every N steps or seconds of training (its own time kept
apart from the training time), and the one harness that times compiled calls."""
from __future__ import annotations

import time
from typing import Callable

import jax
import numpy as np

from dsm_jax import runlog, validation


class Monitor:
    """A ``fit`` callback (wrap it in ``dj.Every(n, monitor, at_end=True)`` or
    :class:`EverySeconds` to choose when) that calls ``measure(state, step, train_seconds) ->
    record | None``, appends the record to ``log_path`` and keeps the seconds it spends
    apart: :meth:`train_seconds` is the wall-clock since ``start`` minus the monitor's own
    time. ``clock`` (seconds, default ``time.perf_counter``) is there for tests."""

    def __init__(self, measure: Callable, log_path: str | None, start: float | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.measure, self.log_path, self.clock = measure, log_path, clock
        self.start = clock() if start is None else start
        self.seconds = 0.0

    def train_seconds(self) -> float:
        return self.clock() - self.start - self.seconds

    def __call__(self, state, record) -> None:
        t0 = self.clock()
        entry = self.measure(state, record["step"], t0 - self.start - self.seconds)
        if entry is not None and self.log_path:
            runlog.append_record(self.log_path, entry)
        self.seconds += self.clock() - t0


class EverySeconds:
    """A plain ``fit`` callback (fit calls it at every chunk end) that runs ``monitor`` (a
    :class:`Monitor`) at the first chunk end where its training seconds (the monitor's own
    time excluded) reach the next multiple of ``seconds``, and, with ``at_end``, at step
    ``n_steps``. A chunk that spans several multiples gives one point; the next is due at the
    multiple after the current time. ``seconds`` 0 runs it at every chunk end."""

    def __init__(self, seconds: float, monitor: Monitor, n_steps: int, at_end: bool = False):
        if not validation.is_real_number(seconds) or not 0 <= seconds < float("inf"):
            raise ValueError(f"`seconds` (the monitor's period) must be a finite number >= 0, got {seconds!r}; "
                             "e.g. --set train.monitor_every_seconds=300.")
        self.seconds, self.monitor, self.n_steps, self.at_end = float(seconds), monitor, n_steps, at_end
        self.due_at = self.seconds

    def __call__(self, state, record) -> None:
        now = self.monitor.train_seconds()
        if now >= self.due_at or (self.at_end and record["step"] >= self.n_steps):
            self.monitor(state, record)
            if self.seconds > 0:
                self.due_at = (np.floor(now / self.seconds) + 1) * self.seconds


def time_calls(calls: dict[str, Callable], repeats: int, warmup: dict[str, Callable] | None = None) -> dict:
    """``{name: (first_call_seconds, median_seconds)}`` of zero-argument ``calls`` (each
    returns arrays, waited for with ``block_until_ready``). The first call of each (or of
    its ``warmup`` twin, e.g. one chunk of a long run) compiles and is reported apart; then
    ``repeats`` rounds run round-robin, so slow drifts in machine load hit all of them alike."""
    warmup = warmup or calls
    first = {name: _seconds(warmup.get(name, call)) for name, call in calls.items()}
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            times[name].append(_seconds(call))
    return {name: (first[name], float(np.median(times[name]))) for name in calls}


def _seconds(call: Callable) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    return time.perf_counter() - t0
