"""Callables: energy functions (arity, output shape), optimizers and other objects passed in."""
from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp


def check_callable(name: str, value, signature: str | None = None, optional: bool = False) -> None:
    """``value`` must be callable (as ``signature`` when given), or None when ``optional``."""
    if value is None and optional:
        return
    if not callable(value):
        none = " or None" if optional else ""
        hint = (f" {signature}{none}" if signature else
                f"{none}; pass e.g. `lambda params, x: ...` (energies return shape (batch,))")
        raise TypeError(f"`{name}` must be a function{hint}, got {type(value).__name__} {value!r:.80}.")


def check_arity(name: str, fn, n_args: int, signature: str) -> None:
    """``fn`` must accept ``n_args`` positional arguments (checked from its signature, before it
    is traced: a wrong arity would otherwise surface as a raw TypeError deep inside a scan).
    Functions without a readable signature (some builtins) pass."""
    try:
        inspect.signature(fn).bind(*([None] * n_args))
    except ValueError:  # no signature to read
        return
    except TypeError:
        raise TypeError(f"`{name}` must be a function {signature} taking {n_args} positional argument(s), "
                        f"got {getattr(fn, '__name__', type(fn).__name__)}{inspect.signature(fn)}.") from None


def check_energy_fn(energy_fn, params, event_shape) -> None:
    """Abstractly evaluate ``energy_fn`` on ``(2, *event_shape)`` (no compute; works on traced
    params): it must return ``(2,)``, else a clear error naming ``event_shape``."""
    if not callable(energy_fn):
        raise TypeError(f"`energy_fn` must be a callable (params, x) -> (batch,), got {energy_fn!r}.")
    x = jax.ShapeDtypeStruct((2, *event_shape), jnp.float32)
    try:
        out = jax.eval_shape(lambda x_: energy_fn(params, x_), x)
    except Exception as err:  # noqa: BLE001 - re-raised with the likely fix
        raise ValueError(
            f"energy_fn failed on x of shape (batch, *event_shape) = {(2, *event_shape)}: "
            f"{type(err).__name__}: {err}. Check that `event_shape` matches what energy_fn "
            f"expects for one example."
        ) from err
    if getattr(out, "shape", None) != (2,):
        raise ValueError(
            f"energy_fn must return shape (batch,) = (2,) for x of shape {(2, *event_shape)}, "
            f"got {getattr(out, 'shape', out)}. Check `event_shape`, or reduce over the event "
            f"axes inside energy_fn."
        )


def check_energy_output(energy, x) -> None:
    """An energy must return exactly one scalar per example: shape (batch,)."""
    expected = (jnp.shape(x)[0],)
    if jnp.shape(energy) != expected:
        raise ValueError(
            f"energy_fn must return shape (batch,) = {expected} for x of shape {jnp.shape(x)}, "
            f"got {jnp.shape(energy)}. Reduce over the event axes inside energy_fn (e.g. "
            f"squeeze a trailing (batch, 1) output)."
        )


def check_optimizer(name: str, value) -> None:
    """An optax ``GradientTransformation`` (anything with ``init`` and ``update``)."""
    if not (callable(getattr(value, "init", None)) and callable(getattr(value, "update", None))):
        raise TypeError(f"`{name}` must be an optax.GradientTransformation (e.g. dsm_jax.adam(1e-3) or "
                        f"optax.sgd(0.1)), got {type(value).__name__}.")


def check_instance(name: str, value, cls: type, how: str) -> None:
    """``value`` must be a ``cls``; ``how`` says where one comes from."""
    if not isinstance(value, cls):
        raise TypeError(f"`{name}` must be a {cls.__name__} ({how}), got {type(value).__name__}.")
