"""Pure training steps: ``TrainState``, one optimiser update, EMA, the non-finite skip, Adam.

A *step function* is pure: ``step_fn(state) -> (state, metrics)`` (data drawn inside from
the state's key) or ``step_fn(state, batch) -> (state, metrics)``. Nothing here touches the
host: :func:`dsm_jax.loop.fit` runs such steps in chunks, logs and checkpoints them.

Meshes are arguments, never ambient state: a step built with ``mesh=`` splits the data it
draws (and the batch it is given) over the mesh's ``"data"`` axis; built without one it is
the one-device program. Two steps built with and without a mesh are two functions, so
``jax.jit`` compiles each on its own and can never reuse one program for the other.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from dsm_jax import parallel, validation
from dsm_jax.pytree import all_finite


class TrainState(NamedTuple):
    step: jax.Array  # int32 scalar
    params: object
    opt_state: object
    key: jax.Array
    ema: object = None  # exponential moving average of params (None: not tracked)


def init_train_state(params, optimizer: optax.GradientTransformation, key, *, ema: bool = False) -> TrainState:
    """A fresh state; with ``ema=True`` it also tracks an EMA of the parameters (starting at
    ``params``), updated by steps built with ``make_train_step(..., ema_decay=...)``."""
    validation.check_optimizer("optimizer", optimizer)
    validation.check_bool("ema", ema)
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
                    skip_nonfinite: bool = False, *, mesh=None):
    """Step on a ``loss_fn(params, key, x)`` such as :func:`dsm_jax.dsm_loss`.

    With ``data_fn(key) -> x`` the batch is drawn inside the step (synthetic data, fully on
    device) and the step is ``step(state)``; otherwise ``step(state, x)``. With
    ``ema_decay`` the state's ``ema`` (see :func:`init_train_state`) follows the params.
    Metrics: ``loss`` and ``grad_norm`` (non-finite when any gradient is, so :func:`fit`
    stops on either). With ``skip_nonfinite=True`` a step whose loss, gradient or update is
    non-finite is skipped instead (see :func:`skip_nonfinite_steps`).

    ``mesh``: None (default) builds the one-device step; a ``Mesh`` with a ``"data"`` axis
    (:func:`dsm_jax.parallel.data_mesh`), or ``"auto"`` (resolved here, once, on the host:
    all devices when there are several, else None), builds a data-parallel step: ``x`` is
    split on its batch axis over the mesh, so each device draws and processes its slice
    (pass the same mesh to :func:`dsm_jax.fit`). The batch must divide by the number of
    devices (checked when the step is traced).
    """
    validation.check_callable("loss_fn", loss_fn, "(params, key, x) -> scalar")
    validation.check_optimizer("optimizer", optimizer)
    validation.check_callable("data_fn", data_fn, "(key) -> x", optional=True)
    if ema_decay is not None:
        ema_decay = validation.check_in_unit_interval("ema_decay", ema_decay, "0.999")
    validation.check_bool("skip_nonfinite", skip_nonfinite)
    mesh = parallel.resolve_mesh(mesh)

    def step_on(state: TrainState, x):
        if ema_decay is not None and state.ema is None:
            raise ValueError("make_train_step(ema_decay=...) needs a state from init_train_state(..., ema=True).")
        x = parallel.constrain_batch(x, mesh, name="x (the training batch)")
        key, loss_key = jax.random.split(state.key)
        params, opt_state, metrics = apply_loss(loss_fn, optimizer, state.params, state.opt_state, loss_key, x)
        ema = state.ema if ema_decay is None else update_ema(state.ema, params, ema_decay)
        return TrainState(state.step + 1, params, opt_state, key, ema), metrics

    step = step_on if data_fn is None else with_data(step_on, data_fn, mesh=mesh)
    return skip_nonfinite_steps(step) if skip_nonfinite else step


def skip_nonfinite_steps(step_fn):
    """Wrap any step (``step(state)`` or ``step(state, batch)``, a state with ``step`` and
    ``key`` fields) so that a step producing a non-finite metric or state leaf is skipped:
    the old state is kept except that ``step`` and ``key`` advance (the next step draws
    fresh noise and data), and the metric ``skipped`` is 1. :func:`fit` leaves skipped
    steps out of the logged means and counts them (``skipped``, ``skipped_total``).
    Inside jit, no host round trip: one ``lax.cond`` per step."""
    validation.check_callable("step_fn", step_fn, "(state[, batch]) -> (state, metrics)")

    def guarded(state, *batch):
        new, metrics = step_fn(state, *batch)
        ok = all_finite((metrics, new))
        kept = jax.lax.cond(ok, lambda: new, lambda: state)
        return kept._replace(step=new.step, key=new.key), {**metrics, "skipped": (~ok).astype(jnp.float32)}

    return guarded


def with_data(step_on, data_fn: Callable, *, mesh=None):
    """``step_on(state, x)`` → ``step(state)`` drawing ``x = data_fn(key)`` from the state's
    key (any state with a ``key`` field): synthetic data generated on device, inside jit.
    With a ``mesh`` (a ``Mesh`` or ``"auto"``, see :func:`make_train_step`) each device
    draws only its slice of the batch."""
    validation.check_callable("data_fn", data_fn, "(key) -> x")
    mesh = parallel.resolve_mesh(mesh)

    def step(state):
        key, data_key = jax.random.split(state.key)
        x = parallel.constrain_batch(data_fn(data_key), mesh, name="data_fn(key) batch")
        return step_on(state._replace(key=key), x)

    return step


def adam(learning_rate, b1=0.9, b2=0.999, total_steps=None, final_lr=None, clip_norm=None):
    """Adam with optional cosine decay to ``final_lr`` over ``total_steps`` and gradient
    clipping to global norm ``clip_norm``. The decay needs both ``total_steps`` and
    ``final_lr`` (with one alone Adam keeps ``learning_rate`` throughout, as before);
    ``clip_norm=None`` (or 0) clips nothing."""
    validation.check_positive("learning_rate", learning_rate)
    b1 = validation.check_in_unit_interval("b1", b1, "0.9")
    b2 = validation.check_in_unit_interval("b2", b2, "0.999")
    total_steps = validation.check_optional_int("total_steps", total_steps, 1, "no decay")
    if final_lr is not None:
        validation.check_nonnegative("final_lr", final_lr)
    if clip_norm is not None:
        validation.check_nonnegative("clip_norm", clip_norm)
    lr = learning_rate
    if total_steps is not None and final_lr is not None:
        lr = optax.cosine_decay_schedule(learning_rate, total_steps, alpha=final_lr / learning_rate)
    opt = optax.adam(lr, b1=b1, b2=b2)
    return optax.chain(optax.clip_by_global_norm(clip_norm), opt) if clip_norm else opt
