"""The JSONL run log: one JSON record per line, appended by :func:`dsm_jax.fit` after every
chunk (and by experiments, e.g. for monitor records), read back de-duplicated by step."""
from __future__ import annotations

import json
import os

from dsm_jax import validation


def _open_for_append(path: str):
    """Open a JSONL log for appending; a last line cut short (a killed run) is ended first,
    so the next record starts on its own line."""
    with open(path, "a+b") as f:
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
    return open(path, "a")


def append_record(path: str, record: dict) -> None:
    """Append one JSON ``record`` (a dict with a ``"step"``, by convention) to the log at
    ``path``, on its own line even after a line cut short by a kill."""
    path = validation.check_file_path("path", path)
    validation.check_json_dict("record", record)
    with _open_for_append(path) as f:
        f.write(json.dumps(record) + "\n")


class RunLog:
    """An open log for a run of many records (one open file, flushed per record); a no-op
    when ``path`` is None."""

    def __init__(self, path: str | None):
        self._file = None if path is None else _open_for_append(path)

    def write(self, record: dict) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def read_log(path: str, **match) -> list[dict]:
    """The records of a JSONL run log whose fields equal ``match`` (e.g.
    ``run="rings/dde"``), one per step, sorted by step. A run killed after its last
    checkpoint logs the steps past it again when resumed: the later record wins."""
    if not os.path.exists(path):
        return []
    by_step = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if "step" in record and all(record.get(k) == v for k, v in match.items()):
                by_step[record["step"]] = record
    return [by_step[s] for s in sorted(by_step)]
