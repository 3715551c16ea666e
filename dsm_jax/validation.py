"""Input validation shared by every factory.

Checks run in Python at trace time (shapes and concrete configuration values are
static there), so a bad call fails before any compute with a message that names
the argument and the fix, instead of producing NaNs later.
"""
from __future__ import annotations

import inspect

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
    arr = check_real(name, value)  # strings and bools refused, not parsed
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"`{name}` must be finite and > 0, got {value!r}.")


def check_nonnegative(name: str, value) -> None:
    if value is None or not is_concrete(value):
        return
    arr = check_real(name, value)  # strings and bools refused, not parsed
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"`{name}` must be finite and >= 0, got {value!r}.")


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


def check_sigma_range(sigma_min, sigma_max) -> None:
    check_positive("sigma_min", sigma_min)
    check_positive("sigma_max", sigma_max)
    if is_concrete(sigma_min) and is_concrete(sigma_max) and float(sigma_min) > float(sigma_max):
        raise ValueError(
            f"`sigma_min` ({sigma_min}) must be <= `sigma_max` ({sigma_max}); swap them."
        )


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


# --- h3-validation ------------------------------------------------------------------------
# The checks toy/metrics/coverage/core/xla/inpainting kept privately, plus the bad-input sweep
# (integer or empty x, per-example inputs, 0/1 masks, finite samples, strings for numbers).
# Concrete values are checked; tracers (values only known under jit) pass through, and each
# caller's docstring says which of its checks that skips.


def check_real(name: str, value) -> np.ndarray:
    """``value`` (a number or a numeric array) as float64; strings, bools and None refused."""
    if isinstance(value, (str, bytes, bool, np.bool_)) or value is None:
        raise TypeError(f"`{name}` must be a number (or numeric array), got {value!r}; pass e.g. 0.1, not '0.1'.")
    arr = np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"`{name}` must be a real number (or numeric array), got dtype {arr.dtype}: {value!r}.")
    return arr.astype(np.float64)


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


def check_examples(name: str, x, per_example: bool = False) -> None:
    """What every function of examples checks: a floating-point ``x`` (:func:`check_floating`,
    TypeError) of shape (batch, *event) with batch >= 1, or one example of shape event when
    ``per_example``, the form to ``jax.vmap`` over single examples (:func:`check_batched`, ValueError)."""
    check_floating(name, x)
    check_batched(name, x, per_example)


def check_sigma(name: str, sigma, strict: bool = False) -> None:
    """A scalar noise level, finite and >= 0 (> 0 when ``strict``); a tracer's value is not
    checked (only its shape)."""
    value = check_real(name, sigma) if is_concrete(sigma) else sigma
    if jnp.ndim(value) != 0:
        raise ValueError(f"`{name}` must be a scalar, got shape {jnp.shape(value)}.")
    if not is_concrete(sigma):
        return
    v = float(value)
    if not np.isfinite(v) or v < 0 or (strict and v == 0):
        raise ValueError(f"`{name}` must be a finite number {'> 0' if strict else '>= 0'}, got {v}.")


def check_points_2d(name: str, x, finite: bool = False):
    """``x`` as float32 of shape (n, 2) with n >= 1 (jnp in, jnp out; numpy stays numpy).
    ``finite``: refuse NaN/inf rows (concrete values only; under jit they pass)."""
    dtype = np.dtype("U1") if isinstance(x, (str, bytes)) else getattr(x, "dtype", None)
    dtype = np.asarray(x).dtype if dtype is None else dtype
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):  # type, not shape
        raise TypeError(f"`{name}` must be a real array of points of shape (n, 2), got {type(x).__name__} "
                        f"{x!r:.80}.")
    if jnp.ndim(x) != 2 or jnp.shape(x)[1] != 2 or jnp.shape(x)[0] < 1:
        raise ValueError(f"`{name}` must have shape (n, 2) with n >= 1, got {jnp.shape(x)}; reshape it "
                         f"to (-1, 2) (add a batch axis for a single point).")
    x = x.astype(np.float32) if isinstance(x, np.ndarray) else jnp.asarray(x, jnp.float32)
    if finite and is_concrete(x):
        bad = ~np.isfinite(np.asarray(x)).all(axis=1)
        if bad.any():
            raise ValueError(f"`{name}` holds {int(bad.sum())} non-finite rows of {len(bad)} (first at "
                             f"{int(np.argmax(bad))}); drop them or fix the sampler before measuring.")
    return x


def check_class_labels(name: str, labels, n_classes: int) -> np.ndarray:
    """A non-empty 1-D integer array of class labels in [0, n_classes)."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"`{name}` must be an array of integer class labels, got dtype {labels.dtype} "
                        f"(argmax the classifier's logits first).")
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D array of integer class labels, got dtype "
                         f"{labels.dtype} and shape {labels.shape} (argmax the classifier's logits first).")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"`{name}` must hold labels in [0, {n_classes}), got range [{labels.min()}, "
                         f"{labels.max()}]; pass the right n_classes.")
    return labels


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


KNOWN_BACKENDS = ("cpu", "gpu", "cuda", "rocm", "tpu", "metal")


def check_backend(name: str, backend) -> None:
    """None (JAX's default backend) or one of :data:`KNOWN_BACKENDS`."""
    if backend is not None and backend not in KNOWN_BACKENDS:
        raise ValueError(f"`{name}` must be None (jax.default_backend()) or one of {KNOWN_BACKENDS}, "
                         f"got {backend!r}.")


def check_instance(name: str, value, cls: type, how: str) -> None:
    """``value`` must be a ``cls``; ``how`` says where one comes from."""
    if not isinstance(value, cls):
        raise TypeError(f"`{name}` must be a {cls.__name__} ({how}), got {type(value).__name__}.")


def is_real_number(value) -> bool:
    """A Python/numpy int or float scalar, not a bool (a flag is not a count or a size)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def check_images_like(name: str, images, x) -> None:
    """A non-empty stack of images shaped like ``x``'s examples: shape (m, *x.shape[1:])."""
    if np.ndim(images) != np.ndim(x) or np.shape(images)[1:] != np.shape(x)[1:] or len(images) == 0:
        raise ValueError(f"`{name}` must be a non-empty stack of images shaped like x's {np.shape(x)[1:]}, "
                         f"got shape {np.shape(images)}.")


def check_choice(name: str, value, choices: tuple) -> None:
    """``value`` must be one of ``choices`` (compared by equality: unhashable values are refused too)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


def check_prng_key(name: str, key) -> None:
    """One PRNG key: a typed key (shape ()) or a raw uint32 key (shape (2,) for threefry).
    Shape and dtype only, so it runs at trace time under jit and vmap."""
    if key is None:  # no silent default key anywhere
        raise TypeError(f"`{name}` must be one PRNG key and is required (there is no default key); pass jax.random.key(seed).")
    dtype, shape = getattr(key, "dtype", None), jnp.shape(key) if hasattr(key, "shape") else None
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and shape == ()
    raw = dtype == np.uint32 and shape is not None and len(shape) == 1 and shape[0] in (2, 4)
    if not (typed or raw):
        got = f"dtype {dtype} and shape {shape}" if dtype is not None else repr(key)
        raise TypeError(f"`{name}` must be one PRNG key (jax.random.PRNGKey(seed) or jax.random.key(seed)), "
                        f"got {got}; pass a key, not a seed, and split a batch of keys with jax.vmap.")


# ---------------------------------------------------------------------------------------
# h1-train: arguments of the training step, the host loop, checkpoints and meshes.
# ---------------------------------------------------------------------------------------
def check_optional_int(name: str, value, minimum: int, meaning_of_none: str) -> int | None:
    """``value`` as an int >= ``minimum``, or None (which means ``meaning_of_none``)."""
    return None if value is None else _checked_int(name, value, minimum, f", or None ({meaning_of_none})")


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


# ---------------------------------------------------------------------------------------
# h2-likelihood: samplers and likelihood estimators


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


def check_float_in(name: str, value, lo: float, hi: float) -> float:
    """``value`` as a float strictly inside ``(lo, hi)``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not lo < v < hi:
        raise ValueError(f"`{name}` must be a number in ({lo}, {hi}), got {value!r}.")
    return v


# --- h6-packages: checks shared by nets/, data/ and image_metrics/ (were private copies there).
def is_int(value) -> bool:
    """A Python or numpy integer, not a bool (``True`` is an int to Python, never a size here)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_module_sizes(owner: str, minimum: int = 1, **sizes) -> None:
    """Every ``sizes`` value an int >= ``minimum``; the error names the module and the field."""
    for name, value in sizes.items():
        _checked_int(name, value, minimum, "", owner)


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
    """The one dtype check: ``x`` must be an array of floating-point values (gradients in x need
    real inputs; integer pixels or labels are a unit mistake), else TypeError with ``fix``."""
    dtype = getattr(x, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        got = f"dtype {dtype}" if dtype is not None else f"a {type(x).__name__}"
        raise TypeError(f"`{name}` must be a floating-point array, got {got}; "
                        f"{fix or f'convert it with jnp.asarray({name}, jnp.float32).'}")


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
    check_floating(name, x, "convert uint8 pixels with data.to_model_input (or x.astype(np.float32) / 255).")
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
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"`{name}` must be integer class labels of shape ({n},), got dtype {labels.dtype}.")
    if labels.shape != (n,):
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




# --- s17-samplers: clamping boxes, MCMC draws for ESS/R-hat, the optional blackjax extra.
def check_chain_start(x0, free_mask) -> None:
    """A chain's starting batch and its optional 0/1 ``free_mask`` (every sampler and warm-up)."""
    check_batched("x0", x0)  # shape first: a scalar x0 is a shape mistake before a dtype one
    check_floating("x0", x0)
    check_mask("free_mask", free_mask, x0)
    check_binary_mask("free_mask", free_mask)


def check_clip(name: str, clip):
    """``clip`` as ``(lo, hi)`` float32 arrays (scalars or arrays broadcasting to the event), or None.

    Concrete bounds must satisfy lo < hi everywhere; ±inf leaves a side open."""
    if clip is None:
        return None
    if isinstance(clip, (str, bytes)) or not hasattr(clip, "__len__") or len(clip) != 2:
        raise ValueError(f"`{name}` must be a pair (lo, hi), e.g. (0.0, 1.0) for pixels, or None; got {clip!r}.")
    lo, hi = clip
    if any(v is None for v in (lo, hi)):
        raise ValueError(f"`{name}` = {clip!r}: pass -jnp.inf or jnp.inf for an open side, not None.")
    if is_concrete(lo) and is_concrete(hi):
        lo_arr, hi_arr = check_real(f"{name}[0]", lo), check_real(f"{name}[1]", hi)
        try:
            ok = np.all(lo_arr < hi_arr)
        except ValueError:
            raise ValueError(f"`{name}`: lo {lo_arr.shape} and hi {hi_arr.shape} do not broadcast together.") from None
        if np.any(np.isnan(lo_arr)) or np.any(np.isnan(hi_arr)) or not ok:
            raise ValueError(f"`{name}` must have lo < hi everywhere (e.g. (0.0, 1.0)), got {clip!r}.")
    return jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32)


def check_clip_shape(name: str, clip, x) -> None:
    """The box's bounds must broadcast to one example of ``x`` (batch, *event)."""
    if clip is None:
        return
    event = tuple(jnp.shape(x)[1:])
    for side, bound in zip(("lo", "hi"), clip):
        try:
            if np.broadcast_shapes(jnp.shape(bound), event) != event:
                raise ValueError
        except ValueError:
            raise ValueError(f"`{name}`'s {side} has shape {jnp.shape(bound)}, which does not broadcast to the "
                             f"event shape {event}; pass a scalar or an array of shape {event}.") from None


def check_draws(name: str, draws, min_chains: int, min_draws: int = 4):
    """MCMC draws laid out (chains, draws, *event): floating, finite when concrete, big enough."""
    shape = jnp.shape(draws)
    if len(shape) < 2:
        raise ValueError(f"`{name}` must have shape (chains, draws, *event), got shape {shape}; for one chain "
                         f"add an axis with {name}[None]; a StepInfo.trajectory is already (chains, draws, *event).")
    if shape[0] < min_chains or shape[1] < min_draws:
        raise ValueError(f"`{name}` has {shape[0]} chain(s) × {shape[1]} draw(s) (shape {shape}); this needs at "
                         f"least {min_chains} chains and {min_draws} draws (axis 0 = chains, axis 1 = draws).")
    check_floating(name, draws)
    check_all_finite(name, draws)  # its rows are the chains here
    return jnp.asarray(draws)


def require_blackjax(feature: str):
    """Import blackjax for ``feature`` or say which extra installs it (imported lazily: dsm_jax itself
    works without it)."""
    try:
        import blackjax
    except ImportError as err:
        raise ImportError(
            f"{feature} uses blackjax, which is not installed: pip install 'dsm-jax[samplers]' "
            f"(or pip install 'blackjax>=1.7')."
        ) from err
    return blackjax
