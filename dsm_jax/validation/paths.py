"""Paths and files: checkpoint directories, log files, and the JSON written beside them."""
from __future__ import annotations

import json
import os


def _path(name: str, path) -> str:
    if not isinstance(path, (str, os.PathLike)) or not str(os.fspath(path)):
        raise TypeError(f"`{name}` must be a non-empty path (str or os.PathLike), got {path!r}.")
    return os.fspath(path)


def check_directory_path(name: str, path) -> str:
    """A path usable as a directory: a ``str``/``os.PathLike`` that is not an existing file."""
    path = _path(name, path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"`{name}` = {path!r} is an existing file, not a directory; name a directory "
                         f"(it is created if missing), or move the file away.")
    return path


def check_file_path(name: str, path) -> str:
    """A path usable as a file to append to: not an existing directory."""
    path = _path(name, path)
    if os.path.isdir(path):
        raise ValueError(f"`{name}` = {path!r} is a directory; name a file inside it, e.g. {path}/metrics.jsonl.")
    return path


def check_json_dict(name: str, value) -> None:
    """None or a dict that ``json.dumps`` can write (it is saved beside checkpoints or logs)."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise TypeError(f"`{name}` must be a dict (JSON-able) or None, got {type(value).__name__}.")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`{name}` must be JSON-able (numbers, strings, lists, dicts): {err}. Convert "
                        f"arrays with .tolist() and other objects with str().") from None
