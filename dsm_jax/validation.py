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


# --- h6-packages: checks shared by nets/, data/ and image_metrics/ (were private copies there).
def is_int(value) -> bool:
    """A Python or numpy integer, not a bool (``True`` is an int to Python, never a size here)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_module_sizes(owner: str, minimum: int = 1, **sizes) -> None:
    """Every ``sizes`` value an int >= ``minimum``; the error names the module and the field."""
    for name, value in sizes.items():
        if not is_int(value) or value < minimum:
            raise ValueError(f"{owner}: `{name}` must be an int >= {minimum}, got {value!r}.")


def check_shape(name: str, shape, ndim: int | None = None) -> tuple[int, ...]:
    """``shape`` as a tuple of positive ints (``ndim`` of them when given)."""
    if is_int(shape):
        raise ValueError(f"`{name}` must be a tuple of sizes, got the int {shape!r}; pass ({shape},).")
    try:
        dims = tuple(shape)
    except TypeError:
        raise ValueError(f"`{name}` must be a tuple of positive ints, got {shape!r}.") from None
    if not all(is_int(d) and d >= 1 for d in dims) or (ndim is not None and len(dims) != ndim):
        size = f"{ndim} " if ndim is not None else ""
        raise ValueError(f"`{name}` must be a tuple of {size}positive ints, got {shape!r}.")
    return tuple(int(d) for d in dims)


def check_floating(name: str, x, fix: str = "") -> None:
    """``x`` must hold floating-point values (integer pixels or labels are a unit mistake)."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`{name}` must be floating point, got dtype {dtype}. {fix or f'Pass {name}.astype(jnp.float32).'}")


def check_prng_key(name: str, key) -> None:
    """A key from ``jax.random.key`` or ``jax.random.PRNGKey`` (never None: no silent default)."""
    if key is None:
        raise ValueError(f"`{name}` is required; pass jax.random.key(seed).")
    if jnp.issubdtype(jnp.result_type(key), jax.dtypes.prng_key):
        return
    if jnp.ndim(key) != 1 or jnp.result_type(key) != jnp.uint32:  # a raw key: uint32 (2,) by default
        raise ValueError(
            f"`{name}` must be a PRNG key (jax.random.key(seed)), got {type(key).__name__} "
            f"of shape {jnp.shape(key)}.")


def check_images(name: str, x, expected_shape=None, value_range=(0.0, 1.0)) -> np.ndarray:
    """Refuse images a model cannot train or be scored on, before any compute: ``x`` must be a
    non-empty float array (n, H, W, C) with ``(H, W, C) == expected_shape`` (when given), no
    NaN/inf, and values in ``value_range`` (when given). Returns ``x`` as a numpy array."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(
            f"`{name}` must have shape (n, H, W, C), got {x.shape}. Add a channel axis with "
            f"{name}[..., None] (grey-scale) or a batch axis with {name}[None] (one image)."
        )
    if expected_shape is not None and tuple(x.shape[1:]) != tuple(expected_shape):
        raise ValueError(
            f"`{name}` must be images of shape {tuple(expected_shape)}, got {tuple(x.shape[1:])} "
            f"(array {x.shape}). Pad/resize them (data.to_model_input pads 28x28 to 32x32) or build the "
            f"model for this shape."
        )
    if len(x) == 0:
        raise ValueError(f"`{name}` is empty; pass at least one image.")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(
            f"`{name}` must be floating point, got dtype {x.dtype}. Convert uint8 pixels with "
            f"data.to_model_input (or x.astype(np.float32) / 255)."
        )
    finite = np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"`{name}` has {bad.size} images with NaN/inf values (first at index {bad[0]}). "
            f"Drop or repair them (samples: a sampler diverged, lower its step size)."
        )
    if value_range is not None:
        lo, hi = value_range
        x_min, x_max = float(x.min()), float(x.max())
        if x_min < lo or x_max > hi:
            raise ValueError(
                f"`{name}` values must lie in [{lo}, {hi}], got [{x_min:.4g}, {x_max:.4g}]. Rescale them "
                f"(uint8 pixels: / 255; [-1, 1] data: (x + 1) / 2)."
            )
    return x


def check_labels(name: str, labels, n: int, n_classes: int) -> np.ndarray:
    """Integer class labels of shape (n,) in 0..n_classes-1, as int32."""
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"`{name}` must be integers of shape ({n},) (one per image), got {labels.dtype} {labels.shape}.")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"`{name}` must lie in 0..{n_classes - 1}, got range [{labels.min()}, {labels.max()}].")
    return labels.astype(np.int32)


def check_matrix(name: str, x, min_rows: int = 1) -> np.ndarray:
    """A finite float64 matrix (n, d) with n >= ``min_rows``."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] < min_rows:
        raise ValueError(f"`{name}` must have shape (n, d) with n >= {min_rows}, got {x.shape}.")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"`{name}` must be numbers, got dtype {x.dtype}.")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"`{name}` has NaN/inf entries.")
    return x


def check_count(name: str, value, available: int, what: str) -> int:
    """A positive int no larger than ``available`` (the number of ``what`` there are)."""
    value = check_positive_int(name, value)
    if value > available:
        raise ValueError(f"`{name}` = {value} is larger than the {available} {what}; lower `{name}` or pass more.")
    return value


def check_bool(name: str, value) -> None:
    """A flag: True or False (a string such as "false" would be truthy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
