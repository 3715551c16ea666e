"""Images as models take them: float32 (n, H, W, C) in [0, 1], padded; and the check that
refuses anything else before training or scoring starts."""
from __future__ import annotations

import numpy as np

from dsm_jax import validation
from dsm_jax.validation import check_images

__all__ = ["check_images", "check_pad_to", "padded_shape", "to_model_input"]


def check_pad_to(pad_to) -> None:
    validation.check_optional_int("pad_to", pad_to, 1, "no padding")


def padded_shape(shape, pad_to: int | None = 32) -> tuple[int, int, int]:
    """The (H, W, C) that :func:`to_model_input` makes of images of ``shape`` (H, W[, C])."""
    check_pad_to(pad_to)
    h, w, *c = (int(d) for d in shape)
    if pad_to is not None and (h > pad_to or w > pad_to):
        raise ValueError(f"images are {h}x{w}, larger than pad_to={pad_to}; pass pad_to >= {max(h, w)} "
                         "or pad_to=None to keep the size.")
    return (h, w, *(c or [1])) if pad_to is None else (pad_to, pad_to, *(c or [1]))


def to_model_input(images, pad_to: int | None = 32) -> np.ndarray:
    """uint8 images (n, H, W[, C]) -> float32 (n, pad_to, pad_to, C) in [0, 1].

    Zero padding is split evenly between the sides (28 -> 32 adds 2 pixels each side,
    as the MDSM paper does for Fashion-MNIST, so that the conv nets halve cleanly).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"`images` must be uint8 (0..255), got dtype {images.dtype}.")
    if images.ndim == 3:
        images = images[..., None]  # grey-scale without a channel axis
    if images.ndim != 4:
        raise ValueError(f"`images` must be (n, H, W) or (n, H, W, C), got shape {images.shape}.")
    n, h, w, c = images.shape
    pad_to_h, pad_to_w, _ = padded_shape((h, w, c), pad_to)
    out = np.zeros((n, pad_to_h, pad_to_w, c), np.float32)
    top, left = (pad_to_h - h) // 2, (pad_to_w - w) // 2
    # Division (correctly rounded), not a multiply by 1/255: pixel values are exactly k/255.
    np.divide(images, np.float32(255), out=out[:, top : top + h, left : left + w], casting="unsafe")
    return out
