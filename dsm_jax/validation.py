"""Input validation shared by every factory.

Checks run in Python at trace time (shapes and concrete configuration values are
static there), so a bad call fails before any compute with a message that names
the argument and the fix, instead of producing NaNs later.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(value) -> bool:
    """True when ``value`` is known in Python (not a tracer inside jit/grad)."""
    return not isinstance(value, jax.core.Tracer)


def check_positive(name: str, value) -> None:
    """Raise if a concrete scalar or array is not strictly positive and finite."""
    if value is None or not is_concrete(value):
        return
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"`{name}` must be finite and > 0, got {value!r}.")


def check_nonnegative(name: str, value) -> None:
    if value is None or not is_concrete(value):
        return
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"`{name}` must be finite and >= 0, got {value!r}.")


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int, which must be >= ``minimum`` (default: positive)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    return int(value)


def check_sigma_range(sigma_min, sigma_max) -> None:
    check_positive("sigma_min", sigma_min)
    check_positive("sigma_max", sigma_max)
    if is_concrete(sigma_min) and is_concrete(sigma_max) and float(sigma_min) > float(sigma_max):
        raise ValueError(
            f"`sigma_min` ({sigma_min}) must be <= `sigma_max` ({sigma_max}); swap them."
        )


def check_batched(name: str, x) -> None:
    """``x`` must be (batch, *event) with at least one event axis."""
    ndim = jnp.ndim(x)
    if ndim < 2:
        raise ValueError(
            f"`{name}` must have shape (batch, *event) with at least one event axis, got "
            f"shape {jnp.shape(x)}. Add a batch axis with {name}[None] (one example) or an "
            f"event axis with {name}[:, None] (scalar data)."
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


def check_temperatures(temperatures, n_steps: int):
    """Return temperatures as a float32 array of shape (n_steps,), validated."""
    if temperatures is None:
        return jnp.ones((n_steps,), jnp.float32)
    shape = jnp.shape(temperatures)
    if shape != (n_steps,):
        raise ValueError(
            f"`temperatures` must have shape (n_steps,) = ({n_steps},), got {shape}. "
            f"Pass one temperature per step, or None for T = 1 throughout."
        )
    check_nonnegative("temperatures", temperatures)
    return jnp.asarray(temperatures, jnp.float32)


def check_mask(name: str, mask, x) -> None:
    """A mask must broadcast against x: shape event or (batch, *event)."""
    if mask is None:
        return
    mshape, xshape = jnp.shape(mask), jnp.shape(x)
    if mshape not in (xshape, xshape[1:]):
        raise ValueError(
            f"`{name}` must have shape {xshape} (per example) or {xshape[1:]} (shared), "
            f"got {mshape}."
        )


# ---------------------------------------------------------------------------------------
# h2-likelihood: samplers and likelihood estimators


def check_float_array(name: str, x) -> None:
    """``x`` must hold floating-point numbers (Langevin moves it by fractions; grads of ints fail)."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"`{name}` must be a floating-point array, got dtype {dtype}; pass {name}.astype(jnp.float32).")


def check_nonempty_batch(name: str, x) -> None:
    if jnp.ndim(x) >= 1 and jnp.shape(x)[0] == 0:
        raise ValueError(f"`{name}` is an empty batch (shape {jnp.shape(x)}); pass at least one example.")


def check_all_finite(name: str, x) -> None:
    """Refuse NaN/inf in a concrete array (they would turn every mean into NaN silently)."""
    if x is None or not is_concrete(x):
        return
    bad = ~np.isfinite(np.asarray(x, np.float64))
    if bad.any():
        rows = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1)) if bad.ndim > 1 else np.flatnonzero(bad)
        raise ValueError(
            f"`{name}` has {int(bad.sum())} non-finite value(s) (NaN/inf), in rows {rows[:5].tolist()}"
            f"{'…' if rows.size > 5 else ''}; drop or fix those examples first."
        )


def check_binary_mask(name: str, mask) -> None:
    """A concrete mask must be 0/1 everywhere (under jit only its shape can be checked)."""
    if mask is None or not is_concrete(mask):
        return
    m = np.asarray(mask, np.float64)
    if not np.all((m == 0) | (m == 1)):
        raise ValueError(f"`{name}` must hold only 0 and 1 (1 = may move), got values like "
                         f"{np.unique(m[(m != 0) & (m != 1)])[:3].tolist()}.")


def check_prng_key(name: str, key) -> None:
    shape = jnp.shape(key)
    typed = shape == () and jnp.issubdtype(jnp.result_type(key), jax.dtypes.prng_key)
    if not (shape == (2,) or typed):
        raise ValueError(
            f"`{name}` must be a PRNG key (jax.random.PRNGKey(seed) or jax.random.key(seed)), "
            f"got an array of shape {shape}."
        )


def check_event_shape(event_shape) -> tuple:
    """``event_shape`` (an int or a tuple of positive ints: one example, no batch axis) as a tuple."""
    if isinstance(event_shape, (int, np.integer)) and not isinstance(event_shape, bool):
        event_shape = (int(event_shape),)
    try:
        shape = tuple(event_shape)
    except TypeError:
        shape = ()
    if len(shape) == 0 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s <= 0 for s in shape):
        raise ValueError(
            f"`event_shape` must be a non-empty tuple of positive ints (the shape of one "
            f"example, without the batch axis), e.g. (2,) or (28, 28, 1); got {event_shape!r}."
        )
    return tuple(int(s) for s in shape)


def check_energy_fn(energy_fn, params, event_shape) -> None:
    """Abstractly evaluate ``energy_fn`` on ``(2, *event_shape)`` (no compute; works on traced
    params): it must return ``(2,)``, else a clear error naming ``event_shape``."""
    if not callable(energy_fn):
        raise ValueError(f"`energy_fn` must be a callable (params, x) -> (batch,), got {energy_fn!r}.")
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


def check_float_in(name: str, value, lo: float, hi: float) -> float:
    """``value`` as a float strictly inside ``(lo, hi)``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not lo < v < hi:
        raise ValueError(f"`{name}` must be a number in ({lo}, {hi}), got {value!r}.")
    return v
