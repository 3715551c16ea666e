"""Training steps and the one host-side training loop every experiment uses.

A *step function* is pure: ``step_fn(state) -> (state, metrics)`` (data drawn inside from
the state's key) or ``step_fn(state, batch) -> (state, metrics)``. :func:`fit` compiles
``steps_per_call`` of them into one ``lax.scan`` (one dispatch per chunk, never a Python
loop inside the compiled function), shows a progress bar, logs metrics as JSONL, stops on
non-finite metrics, and saves/resumes orbax checkpoints.
"""
from __future__ import annotations

import json
import os
import sys
import time
import warnings
import zlib
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from dsm_jax import parallel, validation


class TrainState(NamedTuple):
    step: jax.Array  # int32 scalar
    params: object
    opt_state: object
    key: jax.Array
    ema: object = None  # exponential moving average of params (None: not tracked)


def init_train_state(params, optimizer: optax.GradientTransformation, key, *, ema: bool = False) -> TrainState:
    """A fresh state; with ``ema=True`` it also tracks an EMA of the parameters (starting at
    ``params``), updated by steps built with ``make_train_step(..., ema_decay=...)``."""
    ema_params = jax.tree.map(jnp.array, params) if ema else None
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), key, ema_params)


def update_ema(ema, params, decay):
    """``ema ← decay·ema + (1 − decay)·params`` leaf by leaf."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def apply_loss(loss_fn, optimizer, params, opt_state, *args):
    """One optimiser update on ``loss_fn(params, *args)``; returns the new params/opt state
    and ``{"loss", "grad_norm"}``."""
    loss, grads = jax.value_and_grad(loss_fn)(params, *args)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}


def make_train_step(loss_fn, optimizer, data_fn: Callable | None = None, ema_decay: float | None = None,
                    skip_nonfinite: bool = False):
    """Step on a ``loss_fn(params, key, x)`` such as :func:`dsm_jax.dsm_loss`.

    With ``data_fn(key) -> x`` the batch is drawn inside the step (synthetic data, fully on
    device) and the step is ``step(state)``; otherwise ``step(state, x)``. With
    ``ema_decay`` the state's ``ema`` (see :func:`init_train_state`) follows the params.
    Metrics: ``loss`` and ``grad_norm`` (non-finite when any gradient is, so :func:`fit`
    stops on either). With ``skip_nonfinite=True`` a step whose loss, gradient or update is
    non-finite is skipped instead (see :func:`skip_nonfinite_steps`).
    """
    if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"`ema_decay` must be in [0, 1) (e.g. 0.999), got {ema_decay!r}.")

    def step_on(state: TrainState, x):
        key, loss_key = jax.random.split(state.key)
        params, opt_state, metrics = apply_loss(loss_fn, optimizer, state.params, state.opt_state, loss_key, x)
        ema = state.ema
        if ema_decay is not None:
            if ema is None:
                raise ValueError("make_train_step(ema_decay=...) needs a state from init_train_state(..., ema=True).")
            ema = update_ema(ema, params, ema_decay)
        return TrainState(state.step + 1, params, opt_state, key, ema), metrics

    step = step_on if data_fn is None else with_data(step_on, data_fn)
    return skip_nonfinite_steps(step) if skip_nonfinite else step


def _all_finite(tree) -> jax.Array:
    """True when every float leaf of ``tree`` is finite (PRNG keys and integers ignored)."""
    checks = [jnp.all(jnp.isfinite(leaf)) for _, leaf in _float_leaves(tree)]
    return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


def skip_nonfinite_steps(step_fn):
    """Wrap any step (``step(state)`` or ``step(state, batch)``, a state with ``step`` and
    ``key`` fields) so that a step producing a non-finite metric or state leaf is skipped:
    the old state is kept except that ``step`` and ``key`` advance (the next step draws
    fresh noise and data), and the metric ``skipped`` is 1. :func:`fit` leaves skipped
    steps out of the logged means and counts them (``skipped``, ``skipped_total``).
    Inside jit, no host round trip: one ``lax.cond`` per step."""

    def guarded(state, *batch):
        new, metrics = step_fn(state, *batch)
        ok = _all_finite((metrics, new))
        kept = jax.lax.cond(ok, lambda: new, lambda: state)
        return kept._replace(step=new.step, key=new.key), {**metrics, "skipped": (~ok).astype(jnp.float32)}

    return guarded


def with_data(step_on, data_fn: Callable):
    """``step_on(state, x)`` → ``step(state)`` drawing ``x = data_fn(key)`` from the state's
    key (any state with a ``key`` field): synthetic data generated on device, inside jit."""

    def step(state):
        key, data_key = jax.random.split(state.key)
        # Under fit's mesh each device draws and processes only its slice of the batch.
        x = parallel.constrain_batch(data_fn(data_key), name="data_fn(key) batch")
        return step_on(state._replace(key=key), x)

    return step


def adam(learning_rate, b1=0.9, b2=0.999, total_steps=None, final_lr=None, clip_norm=None):
    """Adam with optional cosine decay to ``final_lr`` over ``total_steps`` and gradient clipping."""
    validation.check_positive("learning_rate", learning_rate)
    lr = learning_rate
    if total_steps is not None and final_lr is not None:
        lr = optax.cosine_decay_schedule(learning_rate, total_steps, alpha=final_lr / learning_rate)
    opt = optax.adam(lr, b1=b1, b2=b2)
    return optax.chain(optax.clip_by_global_norm(clip_norm), opt) if clip_norm else opt


def _scan_chunk(step_fn, n: int, with_batches: bool, mesh=None, compiler_options=None):
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


class IncompatibleCheckpointError(ValueError):
    """A checkpoint directory holds a run with another model or training configuration."""


def _named_leaves(tree):
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in leaves]


def _dtype(leaf):
    dtype = getattr(leaf, "dtype", None)
    return np.asarray(leaf).dtype if dtype is None else dtype


def _is_prng_key(leaf) -> bool:
    return jax.dtypes.issubdtype(_dtype(leaf), jax.dtypes.prng_key)


def _float_leaves(tree) -> list:
    """``(path, leaf)`` of the floating-point leaves: what can hold a NaN (PRNG keys and
    integers left out)."""
    return [(p, x) for p, x in _named_leaves(tree) if not _is_prng_key(x) and jnp.issubdtype(_dtype(x), jnp.inexact)]


def state_layout(tree) -> list:
    """``[[path, shape, dtype], ...]`` of every leaf: what a checkpoint must match to be
    restored into ``tree`` (saved beside each checkpoint, compared on restore)."""
    return [[path, list(np.shape(leaf)), str(_dtype(leaf))] for path, leaf in _named_leaves(tree)]


def state_digest(tree) -> str | None:
    """CRC32 over every leaf's path, shape, dtype and bytes. Saved beside each checkpoint and
    checked on restore: orbax's zstd chunks carry no checksum, so a flipped byte in a
    data file would otherwise restore silently. None when some leaf is not fully
    addressable from this process (multi-host), where no single process sees every value."""
    crc = 0
    for path, leaf in _named_leaves(tree):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return None
        if _is_prng_key(leaf):
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
    """

    def __init__(self, directory: str, keep: int = 3, cleanup_tmp: bool = False):
        import orbax.checkpoint as ocp

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


def _short(err, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit] + " ..."


def latest_step(directory: str) -> int | None:
    """The newest checkpointed step in ``directory`` (None when there is none)."""
    if not os.path.isdir(directory):
        return None
    ckpt = Checkpoints(directory)
    try:
        return ckpt.latest_step()
    finally:
        ckpt.close()


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


@jax.jit
def _finite_leaves(leaves):
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])


def nonfinite_leaves(tree) -> list[str]:
    """Paths of the float leaves of ``tree`` holding a NaN or an infinity (one dispatch)."""
    named = _float_leaves(tree)
    if not named:
        return []
    finite = np.asarray(_finite_leaves([x for _, x in named]))
    return [p for (p, _), ok in zip(named, finite) if not ok]


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
    keep_checkpoints: int = 3,
    fingerprint: dict | None = None,
    max_consecutive_skips: int | None = 1000,
    callback: Callable[[object, dict], None] | None = None,
    mesh="auto",
    compiler_options: dict | None = None,
):
    """Run ``n_steps`` steps of ``step_fn`` from ``state``; returns ``(state, history)``.

    ``state`` must have an integer ``step`` field. ``batches``, if given, is a callable
    ``batches(n)`` or an iterator with ``next_stacked(n)`` (:class:`dsm_jax.data.BatchIterator`)
    returning a pytree of ``n`` stacked batches for ``step_fn(state, batch)``; an iterator
    with ``position``/``set_position`` has its position checkpointed and restored, so a
    resumed run sees the same data order as an uninterrupted one. ``history`` holds one dict per
    chunk: the step reached and the chunk-mean of every metric.

    Guards: a non-finite metric (e.g. ``loss``, or ``grad_norm`` when a gradient is NaN/inf)
    raises ``FloatingPointError`` naming the first bad step and the quantity, and a state
    holding a NaN/inf leaf is never checkpointed (same error, naming the leaf): the last
    good checkpoint stays the latest. Steps built with ``skip_nonfinite`` (see
    :func:`skip_nonfinite_steps`) are skipped instead and counted (``skipped`` per chunk,
    ``skipped_total`` over the run, kept across resumes); more than
    ``max_consecutive_skips`` in a row raises (the run is not recovering).

    With ``checkpoint_dir`` the loop resumes from the latest readable checkpoint there
    (parameters, optimiser state, EMA, step, RNG key and the data position: a run killed
    at any point and restarted ends bit-identical to an uninterrupted one), keeping the
    last ``keep_checkpoints``; see :class:`Checkpoints` for what happens to unreadable
    ones. ``fingerprint`` (a JSON-able dict, e.g. the config fields that shape the run) is
    stored with each checkpoint; resuming under a different one raises
    :class:`IncompatibleCheckpointError` listing the differing fields.
    ``callback(state, record)`` runs on the host after every chunk (e.g. to save a sample
    grid every k steps).

    ``mesh`` (see :mod:`dsm_jax.parallel`): ``"auto"`` runs data-parallel over all devices
    when there is more than one (on one device nothing changes); ``None`` never shards; or a
    ``Mesh`` with a ``"data"`` axis. Data-parallel means the state is replicated, each batch
    split over the devices (its size must divide by their number: a clear error otherwise),
    and data drawn inside the step (``with_data``, DDE latents) split the same way; with
    several processes ``batches`` gives this process's rows (``BatchIterator`` does).

    ``compiler_options`` go to the chunk's ``jax.jit`` (e.g.
    ``dsm_jax.compiler_options(ynn_fusions=False)``, see :mod:`dsm_jax.xla`).
    """
    n_steps = validation.check_positive_int("n_steps", n_steps)
    steps_per_call = validation.check_positive_int("steps_per_call", steps_per_call)
    ckpt = Checkpoints(checkpoint_dir, keep=keep_checkpoints, cleanup_tmp=True) if checkpoint_dir else None
    take = getattr(batches, "next_stacked", batches)
    tracks_position = hasattr(batches, "position") and hasattr(batches, "set_position")
    mesh = parallel.resolve_mesh(mesh)
    if mesh is not None:  # before restoring, so orbax restores straight into the mesh layout
        state = parallel.replicate(state, mesh)
    last_saved, skipped_total, skip_run = None, 0, 0
    if ckpt is not None:
        restored = ckpt.restore_latest(state, fingerprint=fingerprint)
        if restored is not None:
            state, extra = restored
            last_saved, skipped_total = int(state.step), int(extra.get("skipped_total", 0))
            print(f"{desc}: resuming from step {last_saved} ({ckpt.directory})", file=sys.stderr, flush=True)
            state = parallel.replicate(state, mesh) if mesh is not None else state
            if tracks_position and "data_position" in extra:
                batches.set_position(extra["data_position"])
    start = int(state.step)
    chunks: dict[int, Callable] = {}
    history = []
    lead = jax.process_index() == 0  # multi-host: one process writes the log and the bar
    log_file = _open_log(log_path) if log_path and lead else None
    bar = tqdm(total=n_steps, initial=min(start, n_steps), desc=desc, disable=not (progress and lead),
               dynamic_ncols=True)
    try:
        done = start
        while done < n_steps:
            n = min(steps_per_call, n_steps - done)
            if n not in chunks:
                chunks[n] = _scan_chunk(step_fn, n, batches is not None, mesh, compiler_options)
            t0 = time.perf_counter()
            args = (state,) if batches is None else (state, take(n))
            if mesh is not None and batches is not None:
                args = (state, parallel.shard_local_batch(args[1], mesh, axis=1, name="batch_size"))
            with parallel.active_mesh(mesh):
                state, metrics = chunks[n](*args)
            metrics, skipped, first_bad = _summarize_chunk(metrics)
            elapsed = time.perf_counter() - t0
            done += n
            if first_bad is not None:
                offset, values = first_bad
                raise FloatingPointError(
                    f"{desc}: non-finite {', '.join(values)} in steps {done - n + 1}..{done}, first at step "
                    f"{done - n + 1 + offset} ({', '.join(f'{k}={v}' for k, v in values.items())}); "
                    f"{_kept(ckpt, last_saved)}. Lower the learning rate, enable gradient clipping, or "
                    f"skip such steps (make_train_step(..., skip_nonfinite=True))."
                )
            record = {"step": done, **metrics, "steps_per_s": n / elapsed}
            if skipped is not None:
                skipped_total += int(skipped.sum())
                record.update(skipped=int(skipped.sum()), skipped_total=skipped_total)
                for i, s in enumerate(skipped):
                    skip_run = skip_run + 1 if s else 0
                    if max_consecutive_skips is not None and skip_run > max_consecutive_skips:
                        raise FloatingPointError(
                            f"{desc}: {skip_run} consecutive steps up to step {done - n + 1 + i} were non-finite and "
                            f"skipped: the run is not recovering; {_kept(ckpt, last_saved)}. Lower the "
                            f"learning rate or enable gradient clipping.")
            record.update(log_extra or {})
            history.append(record)
            if log_file:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
            if ckpt is not None and checkpoint_every and (done % checkpoint_every < n or done == n_steps):
                _refuse_nonfinite_state(state, desc, done, ckpt, last_saved)
                extra = {"skipped_total": skipped_total}
                if tracks_position:
                    extra["data_position"] = batches.position
                ckpt.save(done, state, extra, fingerprint)
                last_saved = done
            if callback is not None:
                callback(state, record)
            bar.update(n)
            bar.set_postfix(**_loss_postfix(metrics), it_s=f"{n / elapsed:.0f}",
                            **({"skipped": skipped_total} if skipped_total else {}))
        if done > start:
            _refuse_nonfinite_state(state, desc, done, ckpt, last_saved)
    finally:
        bar.close()
        if log_file:
            log_file.close()
        if ckpt is not None:
            ckpt.close()
    return state, history


def _loss_postfix(metrics: dict) -> dict:
    """The progress bar's loss fields: every metric named ``loss`` or ``*_loss`` (the DDE
    step reports ``p_loss``, ``q_loss``, ``gen_loss``), by name, never a made-up NaN."""
    return {k: f"{v:.4g}" for k, v in metrics.items() if k == "loss" or k.endswith("_loss")}


def _open_log(path: str):
    """Open a JSONL log for appending; a last line cut short (a killed run) is ended first,
    so the next record starts on its own line."""
    f = open(path, "a+b")
    if f.tell() > 0:
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
            f.write(b"\n")
    f.close()
    return open(path, "a")


def read_log(path: str, **match) -> list[dict]:
    """The records of a :func:`fit` JSONL log whose fields equal ``match`` (e.g.
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


def _kept(ckpt, last_saved) -> str:
    if ckpt is None:
        return "no checkpoint_dir was given"
    if last_saved is None:
        return f"no checkpoint was written yet in {ckpt.directory}"
    return f"the last good checkpoint (step {last_saved}) in {ckpt.directory} is kept"


def _refuse_nonfinite_state(state, desc, step, ckpt, last_saved) -> None:
    """A state with NaN/inf leaves is never saved (nor returned): its metrics may still be
    finite when the last step of a chunk produced a non-finite gradient."""
    bad = nonfinite_leaves(state)
    if bad:
        shown = ", ".join(f"state{p}" for p in bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
        raise FloatingPointError(
            f"{desc}: non-finite values in {shown} after step {step} (a non-finite gradient or update); "
            f"not saved: {_kept(ckpt, last_saved)}. Lower the learning rate, enable gradient clipping, or "
            f"skip such steps (make_train_step(..., skip_nonfinite=True))."
        )
