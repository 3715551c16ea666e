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
# h1-train: arguments of the training step, the host loop, checkpoints and meshes.
# ---------------------------------------------------------------------------------------
def check_optional_int(name: str, value, minimum: int, meaning_of_none: str) -> int | None:
    """``value`` as an int >= ``minimum``, or None (which means ``meaning_of_none``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, or None ({meaning_of_none}), got {value!r}.")
    return int(value)


def check_callable(name: str, value, signature: str, optional: bool = False) -> None:
    """``value`` must be callable as ``signature`` (or None when ``optional``)."""
    if value is None and optional:
        return
    if not callable(value):
        none = " or None" if optional else ""
        raise TypeError(f"`{name}` must be a function {signature}{none}, got {type(value).__name__} {value!r:.80}.")


def check_optimizer(name: str, value) -> None:
    """An optax ``GradientTransformation`` (anything with ``init`` and ``update``)."""
    if not (callable(getattr(value, "init", None)) and callable(getattr(value, "update", None))):
        raise TypeError(f"`{name}` must be an optax.GradientTransformation (e.g. dsm_jax.adam(1e-3) or "
                        f"optax.sgd(0.1)), got {type(value).__name__}.")


def check_in_unit_interval(name: str, value, example: str) -> float:
    """A float in [0, 1) (Adam's betas, an EMA decay); NaN and 1 refused."""
    try:
        number = None if isinstance(value, (bool, str)) or np.ndim(value) != 0 else float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not 0.0 <= number < 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1) (e.g. {example}), got {value!r}.")
    return number


def check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)


def check_multiple_of(name: str, value: int, of_name: str, of_value: int) -> None:
    """``value`` (already an int) must be a multiple of ``of_value``: the host loop only
    stops at chunk boundaries, so anything else would silently be rounded up."""
    if value % of_value:
        lo, hi = (value // of_value) * of_value, -(-value // of_value) * of_value
        near = f"{hi}" if lo == 0 else f"{lo} or {hi}"
        raise ValueError(
            f"`{name}` = {value} is not a multiple of `{of_name}` = {of_value}: the loop stops on the host only "
            f"every {of_name} steps, so it would act at other steps than asked. Use {near}, or change {of_name}."
        )


def check_directory_path(name: str, path) -> str:
    """A path usable as a directory: a ``str``/``os.PathLike`` that is not an existing file."""
    import os

    if not isinstance(path, (str, os.PathLike)) or not str(os.fspath(path)):
        raise TypeError(f"`{name}` must be a non-empty path (str or os.PathLike), got {path!r}.")
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"`{name}` = {path!r} is an existing file, not a directory; name a directory "
                         f"(it is created if missing), or move the file away.")
    return path


def check_file_path(name: str, path) -> str:
    """A path usable as a file to append to: not an existing directory."""
    import os

    if not isinstance(path, (str, os.PathLike)) or not str(os.fspath(path)):
        raise TypeError(f"`{name}` must be a non-empty path (str or os.PathLike), got {path!r}.")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"`{name}` = {path!r} is a directory; name a file inside it, e.g. {path}/metrics.jsonl.")
    return path


def check_json_dict(name: str, value) -> None:
    """None or a dict that ``json.dumps`` can write (it is saved beside checkpoints or logs)."""
    import json

    if value is None:
        return
    if not isinstance(value, dict):
        raise TypeError(f"`{name}` must be a dict (JSON-able) or None, got {type(value).__name__}.")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`{name}` must be JSON-able (numbers, strings, lists, dicts): {err}. Convert "
                        f"arrays with .tolist() and other objects with str().") from None
