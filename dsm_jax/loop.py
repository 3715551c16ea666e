"""The host loop: :func:`fit` runs a pure step function for ``n_steps`` in compiled chunks.

Each chunk is ``steps_per_call`` steps in one ``lax.scan`` (one dispatch, never a Python
loop inside the compiled function). Between chunks, on the host, ``fit`` calls the pieces
that live elsewhere: the JSONL log (:mod:`dsm_jax.runlog`), checkpoints
(:mod:`dsm_jax.checkpoint`), the non-finite guard (below) and the callbacks.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Callable, NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from dsm_jax import parallel, validation
from dsm_jax.checkpoint import RunCheckpoints, check_keep
from dsm_jax.pytree import nonfinite_leaves
from dsm_jax.runlog import RunLog


class Every(NamedTuple):
    """A :func:`fit` callback run at every multiple of ``steps`` (and, with ``at_end``, at the
    last step): ``fn(state, record)``, ``record["step"]`` the step it runs at. ``steps`` must
    be a multiple of fit's ``steps_per_call`` (chunks end there); 0 never runs ``fn``.
    A plain function given as ``callback`` runs after every chunk."""

    steps: int
    fn: Callable
    at_end: bool = False

    def due(self, step: int, n_steps: int) -> bool:
        return self.steps > 0 and (step % self.steps == 0 or (self.at_end and step == n_steps))


def fit(
    step_fn,
    state,
    n_steps: int,
    *,
    steps_per_call: int = 100,
    batches: Callable[[int], object] | None = None,
    desc: str = "train",
    progress: bool = True,
    log_path: str | None = None,
    log_extra: dict | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int | None = None,
    keep_checkpoints: int | None = 3,
    fingerprint: dict | None = None,
    max_consecutive_skips: int | None = 1000,
    callback=None,
    mesh="auto",
    compiler_options: dict | None = None,
):
    """Run ``state`` up to step ``n_steps`` with ``step_fn``; returns ``(state, history)``.

    ``state`` must have an integer ``step`` field. Chunks end at multiples of
    ``steps_per_call`` (and at ``n_steps``), whatever step the run starts or resumes from.
    ``batches``, if given, is a callable ``batches(n)`` or an iterator with
    ``next_stacked(n)`` (:class:`dsm_jax.data.BatchIterator`) returning a pytree of ``n``
    stacked batches for ``step_fn(state, batch)``; an iterator with ``position``/
    ``set_position`` has its position checkpointed and restored, so a resumed run sees the
    same data order as an uninterrupted one. ``history`` holds one record per chunk: the
    step reached, the chunk-mean of every metric, ``steps_per_s`` and ``log_extra``; the
    same records go to the JSONL file ``log_path`` (see :func:`dsm_jax.runlog.read_log`).

    Guards: a non-finite metric (e.g. ``loss``, or ``grad_norm`` when a gradient is NaN/inf)
    raises ``FloatingPointError`` naming the first bad step and the quantity, and a state
    holding a NaN/inf leaf is never checkpointed (same error, naming the leaf): the last
    good checkpoint stays the latest. Steps built with ``skip_nonfinite`` (see
    :func:`dsm_jax.skip_nonfinite_steps`) are skipped instead and counted (``skipped`` per
    chunk, ``skipped_total`` over the run, kept across resumes); more than
    ``max_consecutive_skips`` in a row raises (the run is not recovering).

    With ``checkpoint_dir`` the loop resumes from the latest readable checkpoint there
    (parameters, optimiser state, EMA, step, RNG key and the data position: a run killed
    at any point and restarted ends bit-identical to an uninterrupted one) and saves every
    ``checkpoint_every`` steps (a multiple of ``steps_per_call``; None or 0: never; without
    ``checkpoint_dir`` it is unused) and at
    ``n_steps``, keeping the last ``keep_checkpoints`` (>= 1; None: all); see
    :class:`dsm_jax.Checkpoints` for unreadable ones. ``fingerprint`` (a JSON-able dict,
    e.g. the config fields that shape the run) is stored with each checkpoint; resuming
    under a different one raises :class:`dsm_jax.IncompatibleCheckpointError`.

    ``callback``: ``callback(state, record)`` after every chunk, an :class:`Every` (at
    multiples of its ``steps``), or a list of these; ``record["step"]`` is the step reached.

    ``mesh`` (see :mod:`dsm_jax.parallel`), resolved once here on the host: ``"auto"`` runs
    data-parallel over all devices when there is more than one (on one device nothing
    changes); ``None`` never shards; or a ``Mesh`` with a ``"data"`` axis. Data-parallel
    means the state is replicated and each host batch split over the devices (its size
    must divide by their number: a clear error otherwise); data a step draws itself is
    split when the step was built with the same mesh (``make_train_step(..., mesh=)``,
    ``make_dde_step(..., mesh=)``). With several processes ``batches`` gives this process's
    rows (``BatchIterator`` does). ``compiler_options`` go to the chunk's ``jax.jit`` (e.g.
    ``dsm_jax.compiler_options(ynn_fusions=False)``, see :mod:`dsm_jax.xla`).
    """
    n_steps, steps_per_call, callbacks = _check_fit_arguments(
        step_fn, state, n_steps, steps_per_call, batches, desc, progress, log_path, log_extra, checkpoint_dir,
        checkpoint_every, keep_checkpoints, fingerprint, max_consecutive_skips, callback, compiler_options)
    mesh = parallel.resolve_mesh(mesh)
    feed = _Feed(batches, mesh)
    if mesh is not None:  # before restoring, so orbax restores straight into the mesh layout
        state = parallel.replicate(state, mesh)
    ckpts = RunCheckpoints(checkpoint_dir, checkpoint_every, keep_checkpoints, fingerprint)
    lead = jax.process_index() == 0  # multi-host: one process writes the log and the bar
    log, history, bar = RunLog(log_path if lead else None), [], None
    try:
        state, extra = ckpts.restore(state, desc)
        state = parallel.replicate(state, mesh) if mesh is not None else state
        feed.restore(extra)
        guard = _NonfiniteGuard(desc, max_consecutive_skips, ckpts, int(extra.get("skipped_total", 0)))
        chunk = functools.cache(lambda n: _compile_chunk(step_fn, n, batches is not None, mesh, compiler_options))
        start = done = int(state.step)
        bar = tqdm(total=n_steps, initial=min(start, n_steps), desc=desc, disable=not (progress and lead),
                   dynamic_ncols=True)
        for done, n in _chunk_ends(start, n_steps, steps_per_call):
            t0 = time.perf_counter()
            state, metrics = chunk(n)(state, *feed.take(n))
            means, skips = guard.check_chunk(metrics, done, n)  # waits for the chunk to finish
            record = {"step": done, **means, "steps_per_s": n / (time.perf_counter() - t0), **skips,
                      **(log_extra or {})}
            history.append(record)
            log.write(record)
            if ckpts.due(done, n_steps):
                guard.refuse_nonfinite_state(state, done)
                ckpts.save(done, state, {"skipped_total": guard.skipped_total, **feed.position()})
            for cb in callbacks:
                if cb.due(done, n_steps):
                    cb.fn(state, record)
            bar.update(n)
            bar.set_postfix(**_loss_postfix(means), it_s=f"{record['steps_per_s']:.0f}",
                            **({"skipped": guard.skipped_total} if guard.skipped_total else {}))
        if done > start:
            guard.refuse_nonfinite_state(state, done)
    finally:
        if bar is not None:
            bar.close()
        log.close()
        ckpts.close()
    return state, history


def _chunk_ends(start: int, n_steps: int, steps_per_call: int):
    """``(end, size)`` of each chunk from ``start`` to ``n_steps``: ends on multiples of
    ``steps_per_call`` (so ``checkpoint_every`` and :class:`Every` land on them) and at
    ``n_steps``."""
    done = start
    while done < n_steps:
        n = min(steps_per_call - done % steps_per_call, n_steps - done)
        done += n
        yield done, n


def _compile_chunk(step_fn, n: int, with_batches: bool, mesh=None, compiler_options=None):
    """``chunk(state[, batches]) -> (state, metrics stacked over the n steps)``, jitted."""

    def chunk(state, batches=None):
        if n == 1:
            # One step: call it directly, no loop. XLA:CPU runs nn.Conv gradients inside a
            # while body far slower (jax-ml/jax#12868; nets.CanonicalConv does not).
            out = step_fn(state, jax.tree.map(lambda b: b[0], batches)) if with_batches else step_fn(state)
            return out[0], jax.tree.map(lambda m: m[None], out[1])
        if with_batches:
            return jax.lax.scan(step_fn, state, batches)
        return jax.lax.scan(lambda s, _: step_fn(s), state, None, length=n)

    if mesh is None:
        return jax.jit(chunk, compiler_options=compiler_options)
    # Data parallel: state in and out replicated, stacked batches (n, batch, ...) split on
    # the batch axis; XLA adds the gradient all-reduce.
    rep = parallel.replicated(mesh)
    in_shardings = (rep, parallel.batch_sharding(mesh, axis=1)) if with_batches else (rep,)
    return jax.jit(chunk, in_shardings=in_shardings, out_shardings=(rep, rep), compiler_options=compiler_options)


class _Feed:
    """Where fit's batches come from: nowhere (the step draws its own), ``batches(n)``, or an
    iterator's ``next_stacked(n)``, whose ``position`` is checkpointed when it has one."""

    def __init__(self, batches, mesh):
        self.source, self.mesh = batches, mesh
        self.next = getattr(batches, "next_stacked", batches)
        self.tracks_position = hasattr(batches, "position") and hasattr(batches, "set_position")

    def take(self, n: int) -> tuple:
        if self.source is None:
            return ()
        stacked = self.next(n)
        if self.mesh is not None:
            stacked = parallel.shard_local_batch(stacked, self.mesh, axis=1, name="batch_size")
        return (stacked,)

    def position(self) -> dict:
        return {"data_position": self.source.position} if self.tracks_position else {}

    def restore(self, extra: dict) -> None:
        if self.tracks_position and "data_position" in extra:
            self.source.set_position(extra["data_position"])


class _NonfiniteGuard:
    """fit's NaN policy: stop on a non-finite metric of a kept step, count skipped steps
    (stop after too many in a row), never let a non-finite state be saved or returned."""

    def __init__(self, desc: str, max_consecutive_skips: int | None, ckpts: RunCheckpoints, skipped_total: int):
        self.desc, self.max_skips, self.ckpts = desc, max_consecutive_skips, ckpts
        self.skipped_total, self.skip_run = skipped_total, 0

    def check_chunk(self, metrics: dict, done: int, n: int):
        """``(chunk means, skip fields for the record)``; raises on a non-finite metric."""
        means, skipped, first_bad = _summarize_chunk(metrics)
        first = done - n + 1
        if first_bad is not None:
            offset, values = first_bad
            raise FloatingPointError(
                f"{self.desc}: non-finite {', '.join(values)} in steps {first}..{done}, first at step "
                f"{first + offset} ({', '.join(f'{k}={v}' for k, v in values.items())}); "
                f"{self.ckpts.kept()}. Lower the learning rate, enable gradient clipping, or "
                f"skip such steps (make_train_step(..., skip_nonfinite=True))."
            )
        if skipped is None:
            return means, {}
        self.skipped_total += int(skipped.sum())
        for i, s in enumerate(skipped):
            self.skip_run = self.skip_run + 1 if s else 0
            if self.max_skips is not None and self.skip_run > self.max_skips:
                raise FloatingPointError(
                    f"{self.desc}: {self.skip_run} consecutive steps up to step {first + i} were non-finite and "
                    f"skipped: the run is not recovering; {self.ckpts.kept()}. Lower the "
                    f"learning rate or enable gradient clipping.")
        return means, {"skipped": int(skipped.sum()), "skipped_total": self.skipped_total}

    def refuse_nonfinite_state(self, state, step: int) -> None:
        """A state with NaN/inf leaves is never saved (nor returned): its metrics may still be
        finite when the last step of a chunk produced a non-finite gradient."""
        bad = nonfinite_leaves(state)
        if bad:
            shown = ", ".join(f"state{p}" for p in bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
            raise FloatingPointError(
                f"{self.desc}: non-finite values in {shown} after step {step} (a non-finite gradient or update); "
                f"not saved: {self.ckpts.kept()}. Lower the learning rate, enable gradient clipping, or "
                f"skip such steps (make_train_step(..., skip_nonfinite=True))."
            )


def _summarize_chunk(metrics: dict):
    """Per-step metrics of one chunk → ``(means, skipped, first_bad)``: chunk means over the
    steps not skipped by :func:`skip_nonfinite_steps`; the per-step skip mask (None when
    the step does not skip); ``(offset, {name: value})`` of the first kept step with a
    non-finite metric, or None."""
    rows = {k: np.asarray(v).reshape(np.shape(v)[0], -1) for k, v in metrics.items()}
    skipped = rows.pop("skipped", None)
    skipped = None if skipped is None else skipped[:, 0] > 0
    n = next(iter(rows.values())).shape[0] if rows else 0
    keep = np.ones(n, bool) if skipped is None else ~skipped
    means, bad = {}, np.zeros(n, bool)
    for k, r in rows.items():
        if keep.any():
            means[k] = float(np.mean(r[keep]))
        bad |= keep & ~np.all(np.isfinite(r), axis=1)
    if not bad.any():
        return means, skipped, None
    i = int(np.argmax(bad))
    values = {k: (r[i, 0].item() if r.shape[1] == 1 else r[i].tolist())
              for k, r in rows.items() if not np.all(np.isfinite(r[i]))}
    return means, skipped, (i, values)


def _loss_postfix(metrics: dict) -> dict:
    """The progress bar's loss fields: every metric named ``loss`` or ``*_loss`` (the DDE
    step reports ``p_loss``, ``q_loss``, ``gen_loss``), by name, never a made-up NaN."""
    return {k: f"{v:.4g}" for k, v in metrics.items() if k == "loss" or k.endswith("_loss")}


def _check_fit_arguments(step_fn, state, n_steps, steps_per_call, batches, desc, progress, log_path, log_extra,
                         checkpoint_dir, checkpoint_every, keep_checkpoints, fingerprint, max_consecutive_skips,
                         callback, compiler_options):
    """Every fit argument checked before anything is compiled, opened or restored;
    returns ``(n_steps, steps_per_call, callbacks as a list of Every)``."""
    validation.check_callable("step_fn", step_fn, "(state[, batch]) -> (state, metrics)")
    if not hasattr(state, "step"):
        raise TypeError(f"`state` must have a `step` field (e.g. dsm_jax.init_train_state(...) or "
                        f"dsm_jax.init_dde_state(...)), got {type(state).__name__}.")
    n_steps = validation.check_positive_int("n_steps", n_steps)
    steps_per_call = validation.check_positive_int("steps_per_call", steps_per_call)
    if not (batches is None or callable(batches) or callable(getattr(batches, "next_stacked", None))):
        raise TypeError(f"`batches` must be None, a function batches(n) -> n stacked batches, or an iterator "
                        f"with next_stacked(n) (dsm_jax.data.BatchIterator), got {type(batches).__name__}.")
    if batches is None:  # the arity the loop calls it with, checked before tracing
        validation.check_arity("step_fn", step_fn, 1, "(state) -> (state, metrics), as fit has no `batches`")
    else:
        validation.check_arity("step_fn", step_fn, 2, "(state, batch) -> (state, metrics), as fit has `batches`")
    if not isinstance(desc, str):
        raise TypeError(f"`desc` must be a str (the progress bar's label), got {desc!r}.")
    validation.check_bool("progress", progress)
    if log_path is not None:
        validation.check_file_path("log_path", log_path)
    validation.check_json_dict("log_extra", log_extra)
    validation.check_json_dict("fingerprint", fingerprint)
    if checkpoint_dir is not None:
        validation.check_directory_path("checkpoint_dir", checkpoint_dir)
    every = validation.check_optional_int("checkpoint_every", checkpoint_every, 0, "never save")
    if checkpoint_dir is not None and every:
        validation.check_multiple_of("checkpoint_every", every, "steps_per_call", steps_per_call)
    check_keep("keep_checkpoints", keep_checkpoints)
    validation.check_optional_int("max_consecutive_skips", max_consecutive_skips, 0, "never stop")
    if compiler_options is not None and not isinstance(compiler_options, Mapping):
        raise TypeError(f"`compiler_options` must be a dict or None (e.g. dsm_jax.compiler_options()), "
                        f"got {type(compiler_options).__name__}.")
    callbacks = [] if callback is None else list(callback) if isinstance(callback, list) else [callback]
    for cb in callbacks:
        if isinstance(cb, Every):
            steps = validation.check_positive_int("callback Every.steps", cb.steps, minimum=0)
            validation.check_callable("callback Every.fn", cb.fn, "(state, record)")
            if steps:
                validation.check_multiple_of("callback Every.steps", steps, "steps_per_call", steps_per_call)
        else:
            validation.check_callable("callback", cb, "(state, record), a dsm_jax.Every or a list of these")
    # A plain function runs after every chunk: chunks end on multiples of steps_per_call and at n_steps.
    callbacks = [cb if isinstance(cb, Every) else Every(steps_per_call, cb, at_end=True) for cb in callbacks]
    return n_steps, steps_per_call, callbacks
