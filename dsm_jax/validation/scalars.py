"""Scalars: numbers, ints and counts, flags, intervals and choices (strings and bools are never
parsed as numbers)."""
from __future__ import annotations

import jax
import numpy as np


def is_concrete(value) -> bool:
    """True when ``value`` is known in Python (not a tracer inside jit/grad)."""
    return not isinstance(value, jax.core.Tracer)


def is_int(value) -> bool:
    """A Python or numpy integer, not a bool (``True`` is an int to Python, never a size here)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_real_number(value) -> bool:
    """A Python/numpy int or float scalar, not a bool (a flag is not a count or a size)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def is_finite_number(value) -> bool:
    """:func:`is_real_number` and finite (no NaN, no inf)."""
    return is_real_number(value) and value == value and abs(value) != float("inf")  # any int size


def check_real(name: str, value) -> np.ndarray:
    """``value`` (a number or a numeric array) as float64; strings, bools and None refused."""
    if isinstance(value, (str, bytes, bool, np.bool_)) or value is None:
        raise TypeError(f"`{name}` must be a number (or numeric array), got {value!r}; pass e.g. 0.1, not '0.1'.")
    arr = np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"`{name}` must be a real number (or numeric array), got dtype {arr.dtype}: {value!r}.")
    return arr.astype(np.float64)


def check_positive(name: str, value) -> None:
    """Raise if a concrete scalar or array is not strictly positive and finite."""
    _check_sign(name, value, strict=True)


def check_nonnegative(name: str, value) -> None:
    """Raise if a concrete scalar or array is negative or not finite."""
    _check_sign(name, value, strict=False)


def _check_sign(name: str, value, strict: bool) -> None:
    if value is None or not is_concrete(value):  # a tracer's value is only known under jit
        return
    arr = check_real(name, value)  # strings and bools refused, not parsed
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0 if strict else arr < 0):
        raise ValueError(f"`{name}` must be finite and {'>' if strict else '>='} 0, got {value!r}.")


def check_positive_int(name: str, value, minimum: int = 1, what: str = "") -> int:
    """``value`` as an int, which must be >= ``minimum`` (default: positive); ``what`` says
    what it counts, for the message. TypeError for anything but an int (a bool or an integral
    float included: a count is never rounded), ValueError below ``minimum``."""
    return _checked_int(name, value, minimum, f" ({what})" if what else "")


def _checked_int(name: str, value, minimum: int, tail: str, owner: str = "") -> int:
    """The one int check behind check_positive_int, check_optional_int and check_module_sizes."""
    if not is_int(value) or value < minimum:
        error = ValueError if is_int(value) else TypeError
        raise error(f"{owner + ': ' if owner else ''}`{name}` must be an int >= {minimum}{tail}, got {value!r}.")
    return int(value)


def check_optional_int(name: str, value, minimum: int, meaning_of_none: str) -> int | None:
    """``value`` as an int >= ``minimum``, or None (which means ``meaning_of_none``)."""
    return None if value is None else _checked_int(name, value, minimum, f", or None ({meaning_of_none})")


def check_module_sizes(owner: str, minimum: int = 1, **sizes) -> None:
    """Every ``sizes`` value an int >= ``minimum``; the error names the module and the field."""
    for name, value in sizes.items():
        _checked_int(name, value, minimum, "", owner)


def check_count(name: str, value, available: int, what: str) -> int:
    """A positive int no larger than ``available`` (the number of ``what`` there are)."""
    value = check_positive_int(name, value)
    if value > available:
        raise ValueError(f"`{name}` = {value} is larger than the {available} {what}; lower `{name}` or pass more.")
    return value


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


def check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)


def check_in_unit_interval(name: str, value, example: str) -> float:
    """A float in [0, 1) (Adam's betas, an EMA decay); NaN and 1 refused."""
    try:
        number = None if isinstance(value, (bool, str)) or np.ndim(value) != 0 else float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not 0.0 <= number < 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1) (e.g. {example}), got {value!r}.")
    return number


def check_float_in(name: str, value, lo: float, hi: float) -> float:
    """``value`` as a float strictly inside ``(lo, hi)``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not lo < v < hi:
        raise ValueError(f"`{name}` must be a number in ({lo}, {hi}), got {value!r}.")
    return v


def check_choice(name: str, value, choices: tuple) -> None:
    """``value`` must be one of ``choices`` (compared by equality: unhashable values are refused too)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


KNOWN_BACKENDS = ("cpu", "gpu", "cuda", "rocm", "tpu", "metal")


def check_backend(name: str, backend) -> None:
    """None (JAX's default backend) or one of :data:`KNOWN_BACKENDS`."""
    if backend is not None and backend not in KNOWN_BACKENDS:
        raise ValueError(f"`{name}` must be None (jax.default_backend()) or one of {KNOWN_BACKENDS}, "
                         f"got {backend!r}.")
