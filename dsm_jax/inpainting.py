"""Inpainting masks, PSNR, the two baselines any inpainting number must beat, and
:func:`evaluate_inpainting`, which scores a fill function against both under every mask.

Masks use the samplers' convention for ``observed_mask``: 1 = observed (kept bit-for-bit by
:func:`dsm_jax.inpainter`), 0 = missing (filled by the chain). PSNR is measured on the
missing pixels only: the observed ones are copied, and counting them would flatter every
method equally.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dsm_jax import validation

MASK_KINDS = ("lower_half", "centre_square", "random_half")


def observed_mask(kind: str, shape, key=None) -> np.ndarray:
    """A float32 mask of ``shape`` = (n, H, W, C), 1 = observed.

    ``lower_half``: the bottom H/2 rows are missing; ``centre_square``: a centred
    (H/2)×(W/2) square is missing; ``random_half``: each pixel (all channels together) is
    missing with probability 1/2, independently per image (needs ``key``).
    """
    validation.check_choice("kind", kind, MASK_KINDS)
    if (not isinstance(shape, (tuple, list)) or len(shape) != 4
            or not all(validation.is_real_number(d) and int(d) == d and d >= 1 for d in shape)):
        raise ValueError(f"`shape` must be (n, H, W, C) of ints >= 1, got {shape!r}.")
    if kind == "random_half":
        if key is None:
            raise ValueError("observed_mask('random_half', ...) needs a `key` (a jax.random key).")
        validation.check_prng_key("key", key)
    n, h, w, c = (int(d) for d in shape)
    shape = (n, h, w, c)
    mask = np.ones(shape, np.float32)
    if kind == "lower_half":
        mask[:, h // 2:] = 0.0
    elif kind == "centre_square":
        mask[:, h // 4: h // 4 + h // 2, w // 4: w // 4 + w // 2] = 0.0
    else:  # random_half
        keep = np.asarray(jax.random.bernoulli(key, 0.5, (n, h, w, 1)), np.float32)
        mask = np.broadcast_to(keep, shape).copy()
    return mask


def psnr(estimate, truth, observed, data_range: float = 1.0) -> np.ndarray:
    """Per-image PSNR (dB) over the missing pixels: 10·log10(range² / MSE_missing).

    Estimates are clipped to [0, data_range] first, as a displayed image would be.
    """
    validation.check_positive("data_range", data_range)
    validation.check_binary_mask("observed", observed)
    estimate, truth, observed = (np.asarray(a, np.float64) for a in (estimate, truth, observed))
    if not (estimate.shape == truth.shape == observed.shape) or truth.ndim < 2:
        raise ValueError(
            f"`estimate`, `truth` and `observed` must have the same shape (n, *image), got "
            f"{estimate.shape}, {truth.shape}, {observed.shape}."
        )
    missing = (1.0 - observed).reshape(len(truth), -1)
    if np.any(missing.sum(axis=1) == 0):
        raise ValueError("PSNR over missing pixels needs at least one missing pixel per image (check `observed`).")
    err = np.square(np.clip(estimate, 0.0, data_range) - truth).reshape(len(truth), -1)
    mse = np.sum(err * missing, axis=1) / np.sum(missing, axis=1)
    return 10.0 * np.log10(data_range**2 / np.maximum(mse, 1e-12))


def mean_image_fill(x, observed, train_images) -> np.ndarray:
    """Baseline 1: the missing pixels taken from the mean training image."""
    validation.check_batched("x", x)
    validation.check_mask("observed", observed, x)
    validation.check_images_like("train_images", train_images, x)
    mean = np.asarray(train_images, np.float32).mean(axis=0, keepdims=True)
    return np.where(np.asarray(observed) > 0, np.asarray(x), mean)


@jax.jit
def _masked_sq_distances(x, observed, train):
    # ‖o⊙(x − t)‖² = Σ o·x² − 2 Σ (o·x)·t + Σ o·t², all as matrix products (o is 0/1).
    xf, of, tf = (a.reshape(a.shape[0], -1) for a in (x, observed, train))
    return (
        jnp.sum(of * xf**2, axis=1, keepdims=True)
        - 2.0 * (of * xf) @ tf.T
        + of @ (tf**2).T
    )


def nearest_visible_fill(x, observed, train_images, chunk_size: int = 8192) -> np.ndarray:
    """Baseline 2: the missing pixels taken from the training image nearest to ``x`` on the
    observed pixels (exact search, chunked over the training set)."""
    validation.check_positive_int("chunk_size", chunk_size)
    validation.check_batched("x", x)
    validation.check_mask("observed", observed, x)
    validation.check_images_like("train_images", train_images, x)
    x = jnp.asarray(x, jnp.float32)
    observed = jnp.broadcast_to(jnp.asarray(observed, jnp.float32), x.shape)  # a shared mask: per image
    train_images = np.asarray(train_images, np.float32)
    best_d = np.full(len(x), np.inf)
    best_i = np.zeros(len(x), np.int64)
    for start in range(0, len(train_images), chunk_size):
        d = np.asarray(_masked_sq_distances(x, observed, jnp.asarray(train_images[start:start + chunk_size])))
        i = np.argmin(d, axis=1)
        d_min = d[np.arange(len(x)), i]
        better = d_min < best_d
        best_d[better], best_i[better] = d_min[better], start + i[better]
    return np.where(np.asarray(observed) > 0, np.asarray(x), train_images[best_i])


class InpaintingScore(NamedTuple):
    """One mask kind's result from :func:`evaluate_inpainting`."""
    observed: np.ndarray  # the mask, 1 = observed
    fill: np.ndarray      # the fill function's images (observed pixels are the truth's)
    nearest: np.ndarray   # baseline 2: the nearest training image on the visible pixels
    psnr: dict            # mean PSNR (dB) on the missing pixels: "model", "mean_image", "nearest_train"


def evaluate_inpainting(fill_fn: Callable, params, key, truth, train_images, init_fn: Callable,
                        kinds=MASK_KINDS) -> dict[str, InpaintingScore]:
    """Inpaint ``truth`` (n, H, W, C) under each mask of ``kinds`` and score the fills on the
    missing pixels beside the mean-image and nearest-training-image baselines.

    ``fill_fn(params, key, x, free_mask=...) -> x`` is e.g. ``jax.jit(dj.inpainter(...))``;
    ``init_fn(key, n)`` gives the chain's starting values for the missing pixels (e.g.
    :func:`dsm_jax.gaussian_start`). Mask kind ``i`` draws its mask, starts and chain from
    ``jax.random.split(jax.random.fold_in(key, i), 3)``, so one kind's numbers do not depend on
    the others. Returns ``{kind: InpaintingScore}``."""
    validation.check_prng_key("key", key)
    validation.check_batched("truth", truth)
    if isinstance(kinds, str) or not kinds:
        raise ValueError(f"`kinds` must be a non-empty sequence of {MASK_KINDS}, got {kinds!r}; e.g. kinds=('lower_half',).")
    truth = np.asarray(truth)
    out = {}
    for i, kind in enumerate(kinds):
        k_mask, k_init, k_run = jax.random.split(jax.random.fold_in(key, i), 3)
        observed = observed_mask(kind, truth.shape, k_mask)
        start = np.where(observed > 0, truth, np.asarray(init_fn(k_init, len(truth))))
        fill = np.asarray(fill_fn(params, k_run, jnp.asarray(start), free_mask=1.0 - jnp.asarray(observed)))
        nearest = nearest_visible_fill(truth, observed, train_images)
        scores = {name: float(np.mean(psnr(est, truth, observed))) for name, est in
                  (("model", fill), ("mean_image", mean_image_fill(truth, observed, train_images)),
                   ("nearest_train", nearest))}
        out[kind] = InpaintingScore(observed, fill, nearest, scores)
    return out
