"""What loaders read and metrics score: images, class labels, 2-D points, feature matrices."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from dsm_jax.validation.arrays import check_floating
from dsm_jax.validation.scalars import is_concrete


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


def check_images_like(name: str, images, x) -> None:
    """A non-empty stack of images shaped like ``x``'s examples: shape (m, *x.shape[1:])."""
    if np.ndim(images) != np.ndim(x) or np.shape(images)[1:] != np.shape(x)[1:] or len(images) == 0:
        raise ValueError(f"`{name}` must be a non-empty stack of images shaped like x's {np.shape(x)[1:]}, "
                         f"got shape {np.shape(images)}.")


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
