"""Batches of examples: floating dtype, (batch, *event) and event shapes, finiteness, 0/1 masks."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from dsm_jax.validation.scalars import is_concrete, is_int


def check_floating(name: str, x, fix: str = "") -> None:
    """The one dtype check: ``x`` must be an array of floating-point values (gradients in x need
    real inputs; integer pixels or labels are a unit mistake), else TypeError with ``fix``."""
    dtype = getattr(x, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        got = f"dtype {dtype}" if dtype is not None else f"a {type(x).__name__}"
        raise TypeError(f"`{name}` must be a floating-point array, got {got}; "
                        f"{fix or f'convert it with jnp.asarray({name}, jnp.float32).'}")


def check_batched(name: str, x, per_example: bool = False) -> None:
    """``x`` must be (batch, *event) with batch >= 1 and at least one event axis, or one example
    of shape event (at least one axis) when ``per_example``. Shapes only (ValueError); the
    dtype is :func:`check_floating`'s, both together :func:`check_examples`."""
    ndim = jnp.ndim(x)
    if per_example:
        if ndim < 1:
            raise ValueError(f"`{name}` must be one example of shape event (at least one axis) for the "
                             f"per_example form, got a scalar; use {name}[None] for scalar data.")
        return
    if ndim < 2:
        raise ValueError(
            f"`{name}` must have shape (batch, *event) with at least one event axis, got "
            f"shape {jnp.shape(x)}. Add a batch axis with {name}[None] (one example) or an "
            f"event axis with {name}[:, None] (scalar data)."
        )
    if jnp.shape(x)[0] == 0:
        raise ValueError(f"`{name}` has an empty batch (shape {jnp.shape(x)}); pass at least one example.")


def check_examples(name: str, x, per_example: bool = False) -> None:
    """What every function of examples checks: a floating-point ``x`` (:func:`check_floating`,
    TypeError) of shape (batch, *event) with batch >= 1, or one example of shape event when
    ``per_example``, the form to ``jax.vmap`` over single examples (:func:`check_batched`, ValueError)."""
    check_floating(name, x)
    check_batched(name, x, per_example)


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


def check_binary_mask(name: str, mask) -> None:
    """A concrete mask must hold only 0 and 1 (bool is fine); NaN and fractions are refused.
    Under jit a traced mask is not checked: threshold it yourself."""
    if mask is None or not is_concrete(mask):
        return
    m = np.asarray(mask)
    if m.dtype == bool:
        return
    if not np.issubdtype(m.dtype, np.number):
        raise TypeError(f"`{name}` must be a numeric or bool array of 0s and 1s, got dtype {m.dtype}.")
    n_nan = int(np.isnan(m).sum()) if np.issubdtype(m.dtype, np.floating) else 0
    if n_nan:
        raise ValueError(f"`{name}` holds {n_nan} NaN values; a mask must hold only 0 and 1.")
    other = (m != 0) & (m != 1)
    if other.any():
        raise ValueError(f"`{name}` must hold only 0 and 1, got {int(other.sum())} other values (e.g. "
                         f"{m[other].flat[0]!r}); threshold it, e.g. ({name} > 0.5).astype(x.dtype).")


def check_mask(name: str, mask, x) -> None:
    """A mask must broadcast against x: shape event or (batch, *event), and hold only 0 and 1
    (a concrete mask; a traced one is not inspected)."""
    if mask is None:
        return
    mshape, xshape = jnp.shape(mask), jnp.shape(x)
    if mshape not in (xshape, xshape[1:]):
        raise ValueError(
            f"`{name}` must have shape {xshape} (per example) or {xshape[1:]} (shared), "
            f"got {mshape}."
        )
    check_binary_mask(name, mask)
