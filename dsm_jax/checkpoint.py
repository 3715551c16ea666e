"""Where a checkpoint is written and read: orbax, integrity checks, fallback to older steps.

:class:`Checkpoints` is orbax's ``CheckpointManager`` with what a long run needs (atomic
saves, a CRC of every leaf, the leaf layout and a caller fingerprint saved beside the
arrays, unreadable steps set aside); :class:`RunCheckpoints` is how :func:`dsm_jax.fit`
uses it (restore once, save every ``every`` steps and at the end). The on-disk format is
unchanged from ``dsm_jax.training``: older checkpoints load.
"""
from __future__ import annotations

import json
import os
import sys
import time
import warnings
import zlib

import jax
import numpy as np

from dsm_jax import validation
from dsm_jax.pytree import dtype_of, is_prng_key, named_leaves


class IncompatibleCheckpointError(ValueError):
    """A checkpoint directory holds a run with another model or training configuration."""


def state_layout(tree) -> list:
    """``[[path, shape, dtype], ...]`` of every leaf: what a checkpoint must match to be
    restored into ``tree`` (saved beside each checkpoint, compared on restore)."""
    return [[path, list(np.shape(leaf)), str(dtype_of(leaf))] for path, leaf in named_leaves(tree)]


def state_digest(tree) -> str | None:
    """CRC32 over every leaf's path, shape, dtype and bytes. Saved beside each checkpoint and
    checked on restore: orbax's zstd chunks carry no checksum, so a flipped byte in a
    data file would otherwise restore silently. None when some leaf is not fully
    addressable from this process (multi-host), where no single process sees every value."""
    crc = 0
    for path, leaf in named_leaves(tree):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return None
        if is_prng_key(leaf):
            leaf = jax.random.key_data(leaf)
        arr = np.ascontiguousarray(np.asarray(leaf))
        crc = zlib.crc32(f"{path}|{arr.shape}|{arr.dtype}".encode(), crc)
        crc = zlib.crc32(arr.reshape(-1).view(np.uint8), crc)
    return f"{crc:08x}"


def _json_normal(value):
    """Tuples → lists etc., exactly as the value reads back from a checkpoint's JSON."""
    return json.loads(json.dumps(value))


def _differences(saved: dict, current: dict) -> list[str]:
    missing = "<absent>"
    return [
        f"{name}: checkpoint {saved.get(name, missing)!r}, now {current.get(name, missing)!r}"
        for name in sorted(set(saved) | set(current)) if saved.get(name, missing) != current.get(name, missing)
    ]


def _short(err, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit] + " ..."


def check_keep(name: str, keep) -> int | None:
    """How many checkpoints to keep: an int >= 1, or None (keep every one). 0 is refused:
    orbax would delete each checkpoint as soon as it is written."""
    return validation.check_optional_int(name, keep, 1, "keep every checkpoint")


class Checkpoints:
    """Orbax's ``CheckpointManager`` with the guarantees a long run needs.

    * Atomic saves: orbax writes ``<step>.orbax-checkpoint-tmp-*`` and renames it when
      complete, so a run killed mid-save leaves no half-written step as "latest"; leftover
      temporary directories are ignored, and removed on opening with ``cleanup_tmp=True``
      (what :func:`fit` does: the training run owns its directory; a reader such as an
      evaluation script must not delete the temporary directory of a save in flight).
    * Each save also stores (JSON, beside the arrays) the state's leaf layout, a CRC32 of
      its bytes and an optional caller ``fingerprint`` (the config that shapes the run).
    * :meth:`restore_latest` tries steps newest first. A step that fails to read or fails
      its checksum is reported (a warning naming the step and the error), moved aside to
      ``unreadable-step-<step>-<time>`` and the next older one used. A step whose layout or
      fingerprint differs from the current run raises :class:`IncompatibleCheckpointError`
      listing the differences: resuming it would silently mix two configurations.

    ``keep``: the newest checkpoints kept (an int >= 1; None keeps all).
    """

    def __init__(self, directory: str, keep: int | None = 3, cleanup_tmp: bool = False):
        import orbax.checkpoint as ocp

        directory = validation.check_directory_path("directory", directory)
        keep = check_keep("keep", keep)
        self._ocp = ocp
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=cleanup_tmp),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, extra: dict | None = None, fingerprint: dict | None = None) -> None:
        """Save ``state`` (a pytree of arrays) and ``extra`` (JSON: e.g. the data position)."""
        step = validation.check_positive_int("step", step, minimum=0)
        validation.check_json_dict("extra", extra)
        validation.check_json_dict("fingerprint", fingerprint)
        extra = {**(extra or {}), "layout": state_layout(state), "digest": state_digest(state)}
        if fingerprint is not None:
            extra["fingerprint"] = _json_normal(fingerprint)
        args = self._ocp.args
        self.manager.save(
            step, args=args.Composite(state=args.StandardSave(state), extra=args.JsonSave(extra))
        )

    def restore_latest(self, like, fingerprint: dict | None = None):
        """``(state, extra)`` from the newest readable checkpoint, the state restored into the
        structure (and shardings) of ``like``; None when the directory has no checkpoint.

        Raises :class:`IncompatibleCheckpointError` when the checkpoint's leaf layout, or its
        saved fingerprint, differs from ``like`` / ``fingerprint``; ``RuntimeError`` when
        checkpoints exist but none can be read.
        """
        args = self._ocp.args
        failures = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                extra = dict(self.manager.restore(step, args=args.Composite(extra=args.JsonRestore())).extra or {})
            except Exception as err:  # noqa: BLE001 - any read error means "unreadable"
                failures.append((step, err))
                continue
            self._check_compatible(step, extra, like, fingerprint)
            try:
                state = self.manager.restore(step, args=args.Composite(state=args.StandardRestore(like))).state
                if extra.get("digest") is not None and state_digest(state) not in (None, extra["digest"]):
                    raise ValueError(f"checksum mismatch (saved {extra['digest']}, read {state_digest(state)}): "
                                     "the array files changed after they were written")
            except Exception as err:  # noqa: BLE001
                failures.append((step, err))
                continue
            self._set_aside(failures)
            return state, extra
        if failures:
            details = "; ".join(f"step {s}: {type(e).__name__}: {_short(e)}" for s, e in failures)
            raise RuntimeError(
                f"No checkpoint in {self.directory} could be read ({details}). Move that directory "
                f"away (or delete it) to start the run afresh."
            )
        return None

    def _check_compatible(self, step, extra, like, fingerprint) -> None:
        problems = []
        if "layout" in extra:
            saved = {p: (tuple(s), d) for p, s, d in extra["layout"]}
            now = {p: (tuple(s), d) for p, s, d in state_layout(like)}
            problems += [f"state{d}" for d in _differences(
                {p: f"{s} {d}" for p, (s, d) in saved.items()}, {p: f"{s} {d}" for p, (s, d) in now.items()})][:8]
        if fingerprint is not None and "fingerprint" in extra:
            problems += _differences(extra["fingerprint"], _json_normal(fingerprint))
        if problems:
            raise IncompatibleCheckpointError(
                f"The checkpoint at step {step} in {self.directory} comes from a different configuration "
                f"than this run: {'; '.join(problems)}. Resume with the original settings, or write this "
                f"run elsewhere (a new --out directory / checkpoint_dir)."
            )

    def _set_aside(self, failures) -> None:
        """Report unreadable newer steps and move them out of orbax's view, so the resumed run
        can save those step numbers again."""
        for step, err in failures:
            src = os.path.join(self.directory, str(step))
            dst = os.path.join(self.directory, f"unreadable-step-{step}-{int(time.time())}")
            try:
                os.rename(src, dst)
                where = f"moved to {dst}"
            except OSError as move_err:
                where = f"could not be moved aside ({move_err})"
            warnings.warn(
                f"Checkpoint step {step} in {self.directory} is unreadable ({type(err).__name__}: "
                f"{_short(err)}); {where}. Resuming from the previous checkpoint.",
                RuntimeWarning, stacklevel=3,
            )
        if failures:
            self.manager.reload()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def latest_step(directory: str) -> int | None:
    """The newest checkpointed step in ``directory`` (None when there is none, or no such
    directory yet; a path that is a file is refused)."""
    directory = validation.check_directory_path("directory", directory)
    if not os.path.isdir(directory):
        return None
    ckpt = Checkpoints(directory)
    try:
        return ckpt.latest_step()
    finally:
        ckpt.close()


class RunCheckpoints:
    """A training run's checkpoints, as :func:`dsm_jax.fit` uses them: restore the newest
    readable one at the start, save every ``every`` steps (and at the last step), each save
    with ``extra`` (data position, skip count) and the run's ``fingerprint``.

    ``directory=None``: no checkpoints; ``every`` None or 0: restore only, never save.
    Arguments are checked by :func:`dsm_jax.loop.fit` before this is built.
    """

    def __init__(self, directory: str | None, every: int | None, keep: int | None, fingerprint: dict | None):
        self.every, self.fingerprint, self.last_saved = every, fingerprint, None
        self.store = Checkpoints(directory, keep=keep, cleanup_tmp=True) if directory is not None else None

    def restore(self, state, desc: str):
        """``(state, extra)``: the newest checkpoint restored into ``state``'s structure and
        shardings, or ``(state, {})`` when there is none."""
        restored = None if self.store is None else self.store.restore_latest(state, fingerprint=self.fingerprint)
        if restored is None:
            return state, {}
        state, extra = restored
        self.last_saved = int(state.step)
        print(f"{desc}: resuming from step {self.last_saved} ({self.store.directory})", file=sys.stderr, flush=True)
        return state, extra

    def due(self, step: int, n_steps: int) -> bool:
        return self.store is not None and bool(self.every) and (step % self.every == 0 or step == n_steps)

    def save(self, step: int, state, extra: dict) -> None:
        self.store.save(step, state, extra, self.fingerprint)
        self.last_saved = step

    def kept(self) -> str:
        """What is safe on disk, for error messages."""
        if self.store is None:
            return "no checkpoint_dir was given"
        if self.last_saved is None:
            return f"no checkpoint was written yet in {self.store.directory}"
        return f"the last good checkpoint (step {self.last_saved}) in {self.store.directory} is kept"

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
