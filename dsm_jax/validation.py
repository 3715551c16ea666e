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
