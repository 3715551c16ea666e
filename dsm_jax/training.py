"""Training steps and the one host-side training loop every experiment uses.

A *step function* is pure: ``step_fn(state) -> (state, metrics)`` (data drawn inside from
the state's key) or ``step_fn(state, batch) -> (state, metrics)``. :func:`fit` compiles
``steps_per_call`` of them into one ``lax.scan`` (one dispatch per chunk, never a Python
loop inside the compiled function), shows a progress bar, logs metrics as JSONL, stops on
non-finite metrics, and saves/resumes orbax checkpoints.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from dsm_jax import _checks


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


def make_train_step(loss_fn, optimizer, data_fn: Callable | None = None, ema_decay: float | None = None):
    """Step on a ``loss_fn(params, key, x)`` such as :func:`dsm_jax.dsm_loss`.

    With ``data_fn(key) -> x`` the batch is drawn inside the step (synthetic data, fully on
    device) and the step is ``step(state)``; otherwise ``step(state, x)``. With
    ``ema_decay`` the state's ``ema`` (see :func:`init_train_state`) follows the params.
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

    return step_on if data_fn is None else with_data(step_on, data_fn)


def with_data(step_on, data_fn: Callable):
    """``step_on(state, x)`` → ``step(state)`` drawing ``x = data_fn(key)`` from the state's
    key (any state with a ``key`` field): synthetic data generated on device, inside jit."""

    def step(state):
        key, data_key = jax.random.split(state.key)
        return step_on(state._replace(key=key), data_fn(data_key))

    return step


def adam(learning_rate, b1=0.9, b2=0.999, total_steps=None, final_lr=None, clip_norm=None):
    """Adam with optional cosine decay to ``final_lr`` over ``total_steps`` and gradient clipping."""
    _checks.check_positive("learning_rate", learning_rate)
    lr = learning_rate
    if total_steps is not None and final_lr is not None:
        lr = optax.cosine_decay_schedule(learning_rate, total_steps, alpha=final_lr / learning_rate)
    opt = optax.adam(lr, b1=b1, b2=b2)
    return optax.chain(optax.clip_by_global_norm(clip_norm), opt) if clip_norm else opt


def _scan_chunk(step_fn, n: int, with_batches: bool):
    def chunk(state, batches=None):
        if n == 1:
            # One step: call it directly, no loop. XLA:CPU runs conv-net gradients inside a
            # while body far slower (jax-ml/jax#12868), so conv nets on CPU use steps_per_call=1.
            out = step_fn(state, jax.tree.map(lambda b: b[0], batches)) if with_batches else step_fn(state)
            return out[0], jax.tree.map(lambda m: m[None], out[1])
        if with_batches:
            return jax.lax.scan(step_fn, state, batches)
        return jax.lax.scan(lambda s, _: step_fn(s), state, None, length=n)

    return jax.jit(chunk)


class Checkpoints:
    """Thin wrapper over orbax's ``CheckpointManager``: keep the last ``keep``, resume latest."""

    def __init__(self, directory: str, keep: int = 3):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory), options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        )

    def save(self, step: int, state, extra: dict | None = None) -> None:
        """Save ``state`` (a pytree of arrays) and ``extra`` (JSON: e.g. the data position)."""
        args = self._ocp.args
        self.manager.save(
            step, args=args.Composite(state=args.StandardSave(state), extra=args.JsonSave(extra or {}))
        )

    def restore_latest(self, like):
        """``(state, extra)`` from the latest checkpoint, the state restored into the
        structure of ``like``; None when there is none."""
        step = self.manager.latest_step()
        if step is None:
            return None
        args = self._ocp.args
        restored = self.manager.restore(
            step, args=args.Composite(state=args.StandardRestore(like), extra=args.JsonRestore())
        )
        return restored.state, dict(restored.extra or {})

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


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
    callback: Callable[[object, dict], None] | None = None,
):
    """Run ``n_steps`` steps of ``step_fn`` from ``state``; returns ``(state, history)``.

    ``state`` must have an integer ``step`` field. ``batches``, if given, is a callable
    ``batches(n)`` or an iterator with ``next_stacked(n)`` (:class:`dsm_jax.data.BatchIterator`)
    returning a pytree of ``n`` stacked batches for ``step_fn(state, batch)``; an iterator
    with ``position``/``set_position`` has its position checkpointed and restored, so a
    resumed run sees the same data order as an uninterrupted one. ``history`` holds one dict per
    chunk: the step reached and the chunk-mean of every metric. A non-finite metric raises
    ``FloatingPointError`` naming the step (after the last good checkpoint was kept).
    With ``checkpoint_dir`` the loop resumes from the latest checkpoint there (keeping the
    last ``keep_checkpoints``). ``callback(state, record)`` runs on the host after every chunk
    (e.g. to save a sample grid every k steps).
    """
    n_steps = _checks.check_positive_int("n_steps", n_steps)
    steps_per_call = _checks.check_positive_int("steps_per_call", steps_per_call)
    ckpt = Checkpoints(checkpoint_dir, keep=keep_checkpoints) if checkpoint_dir else None
    take = getattr(batches, "next_stacked", batches)
    tracks_position = hasattr(batches, "position") and hasattr(batches, "set_position")
    if ckpt is not None:
        restored = ckpt.restore_latest(state)
        if restored is not None:
            state, extra = restored
            if tracks_position and "data_position" in extra:
                batches.set_position(extra["data_position"])
    start = int(state.step)
    chunks: dict[int, Callable] = {}
    history = []
    log_file = open(log_path, "a") if log_path else None
    bar = tqdm(total=n_steps, initial=min(start, n_steps), desc=desc, disable=not progress, dynamic_ncols=True)
    try:
        done = start
        while done < n_steps:
            n = min(steps_per_call, n_steps - done)
            if n not in chunks:
                chunks[n] = _scan_chunk(step_fn, n, batches is not None)
            t0 = time.perf_counter()
            state, metrics = chunks[n](state, take(n)) if batches is not None else chunks[n](state)
            metrics = {k: float(np.mean(np.asarray(v))) for k, v in metrics.items()}
            elapsed = time.perf_counter() - t0
            done += n
            bad = [k for k, v in metrics.items() if not math.isfinite(v)]
            if bad:
                raise FloatingPointError(
                    f"{desc}: non-finite {', '.join(bad)} in steps {done - n + 1}..{done} "
                    f"(metrics {metrics}). Lower the learning rate or enable gradient clipping."
                )
            record = {"step": done, **metrics, "steps_per_s": n / elapsed, **(log_extra or {})}
            history.append(record)
            if log_file:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
            if ckpt is not None and checkpoint_every and (done % checkpoint_every < n or done == n_steps):
                ckpt.save(done, state, {"data_position": batches.position} if tracks_position else None)
            if callback is not None:
                callback(state, record)
            bar.update(n)
            bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4g}", it_s=f"{n / elapsed:.0f}")
    finally:
        bar.close()
        if log_file:
            log_file.close()
        if ckpt is not None:
            ckpt.close()
    return state, history
