"""Gaussian proposals for IS and AIS: their log densities, building one from data, and the
whitening change of variables that turns a full-covariance proposal into N(0, I).

``q = N(mean, diag(scale²))`` (diagonal) or ``q = N(mean, LLᵀ)`` (full, via :func:`whiten`).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from dsm_jax import validation
from dsm_jax.core import EnergyFn, sum_event

LOG_2PI = math.log(2.0 * math.pi)


def _per_dim_log_density(x, mean, scale):
    z = (x - mean) / scale
    return -0.5 * jnp.square(z) - jnp.log(jnp.broadcast_to(scale, x.shape)) - 0.5 * LOG_2PI


def gaussian_proposal_log_density(x, mean, scale):
    """``log N(x; mean, diag(scale²))`` per example: the per-dimension terms are SUMMED.

    ``x``: ``(batch, *event)``; ``mean``, ``scale``: broadcast to ``event``. Returns ``(batch,)``.
    """
    return sum_event(_per_dim_log_density(x, mean, scale))


def dde_buggy_proposal_log_density(x, mean, scale):
    """The DDE code's proposal log density: the per-dimension Gaussian log densities are
    AVERAGED over dimensions instead of summed. Wrong for d > 1 — kept only to demonstrate
    (in the tests and notebook 04) the bias it causes. Do not use it to report numbers.

    Its importance "weights" ``exp(−E(x) − mean_i log q_i(x_i))`` overstate ``q(x)`` by a
    factor ``exp((1 − 1/d)·(−log q(x)))``, so ``log Z`` comes out too low by about
    ``(1 − 1/d)·E_q[−log q] = (d − 1)/2·(1 + log 2π s²)`` nats for ``q = N(0, s² I)``
    (Jensen moves the realised bias somewhat; the tests measure it).
    """
    per_dim = _per_dim_log_density(x, mean, scale)
    return jnp.mean(per_dim.reshape(per_dim.shape[0], -1), axis=1)


def broadcast_proposal(event_shape, mean=None, scale=None):
    """``(mean, scale)`` broadcast to ``event_shape`` as float32 (defaults 0 and 1); a
    concrete ``scale`` must be > 0 (a traced one is the caller's to vouch for)."""
    mean = jnp.zeros(event_shape, jnp.float32) if mean is None else jnp.asarray(mean, jnp.float32)
    scale = jnp.ones(event_shape, jnp.float32) if scale is None else jnp.asarray(scale, jnp.float32)
    for name, v in (("proposal_mean", mean), ("proposal_scale", scale)):
        try:
            shape = jnp.broadcast_shapes(v.shape, event_shape)
        except ValueError:
            shape = None
        if shape != tuple(event_shape):
            raise ValueError(
                f"`{name}` must be a scalar or an array of shape event_shape {event_shape}, got shape {v.shape}."
            )
    validation.check_positive("proposal_scale", scale)
    validation.check_all_finite("proposal_mean", mean)
    return jnp.broadcast_to(mean, event_shape), jnp.broadcast_to(scale, event_shape)


def proposal_from_data(data, event_shape, *, scale_inflation=1.5, min_scale=1e-3):
    """Diagonal proposal from data ``(n, *event_shape)``: the per-dimension mean and
    ``max(std, min_scale) · scale_inflation``. Returns ``(mean, scale)`` float32."""
    validation.check_positive("scale_inflation", scale_inflation)
    validation.check_positive("min_scale", min_scale)
    data = jnp.asarray(data, jnp.float32)
    if data.ndim < 2 or data.shape[1:] != tuple(event_shape) or data.shape[0] < 2:
        raise ValueError(
            f"`data` must have shape (n, *event_shape) = (n, {', '.join(map(str, event_shape))}) "
            f"with n >= 2, got {data.shape}."
        )
    validation.check_all_finite("data", data)
    return jnp.mean(data, axis=0), jnp.maximum(jnp.std(data, axis=0), min_scale) * scale_inflation


class GaussianFit(NamedTuple):
    """``N(mean, chol·cholᵀ)`` over the flattened event, float64 numpy (``chol`` lower-triangular)."""
    mean: np.ndarray  # (d,)
    chol: np.ndarray  # (d, d)

    @property
    def log_det(self) -> float:
        """``log|det chol|``: log Z in x = log Z in z + this, for x = mean + chol·z."""
        return float(np.sum(np.log(np.diag(self.chol))))

    def log_density(self, x):
        """``log N(x; mean, chol·cholᵀ)`` per example for ``x`` of shape ``(batch, *event)``: ``(batch,)``."""
        flat = jnp.reshape(x, (jnp.shape(x)[0], -1))
        z = (flat - jnp.asarray(self.mean, jnp.float32)) @ jnp.asarray(np.linalg.inv(self.chol), jnp.float32).T
        return -0.5 * jnp.sum(jnp.square(z), axis=1) - self.log_det - 0.5 * self.mean.shape[0] * LOG_2PI


def fit_gaussian(x, sigma: float = 0.0, kind: str = "full", inflation: float = 1.0) -> GaussianFit:
    """Gaussian fitted to examples ``x`` ``(n, *event)`` with ``σ²I`` added (the σ-smoothed data's
    covariance): ``kind="full"`` N(μ, C + σ²I) or ``"diag"`` N(μ, diag(var + σ²)); ``chol`` is then
    multiplied by ``inflation`` (a wider proposal)."""
    if kind not in ("full", "diag"):
        raise ValueError(f"`kind` must be 'full' or 'diag', got {kind!r}.")
    validation.check_nonnegative("sigma", sigma)
    validation.check_positive("inflation", inflation)
    xf = np.asarray(x, np.float64).reshape(len(x), -1)
    if xf.shape[0] < 2:
        raise ValueError(f"`x` needs at least 2 examples to fit a Gaussian, got {xf.shape[0]}.")
    validation.check_all_finite("x", xf)
    mean = xf.mean(0)
    if kind == "diag":
        chol = np.diag(np.sqrt(xf.var(0) + sigma**2))
    else:
        chol = np.linalg.cholesky(np.cov(xf, rowvar=False) + sigma**2 * np.eye(xf.shape[1]))
    return GaussianFit(mean, chol * inflation)


def whiten(energy_fn: EnergyFn, event_shape) -> EnergyFn:
    """``E_z(params, z) = E(model_params, μ + Lz)`` with ``params = (model_params, μ, L)`` and ``z``
    of shape ``(batch, d)``: IS/AIS from N(0, I) in z is IS/AIS from N(μ, LLᵀ) in x, and
    ``log Z_x = log Z_z + log|det L|`` (:attr:`GaussianFit.log_det`)."""
    event_shape = validation.check_event_shape(event_shape)

    def energy_z(params, z):
        model_params, mean, chol = params
        x = mean + z.reshape(z.shape[0], -1) @ chol.T
        return energy_fn(model_params, x.reshape((z.shape[0], *event_shape)))

    return energy_z


def whitened_params(model_params, fit: GaussianFit):
    """The ``params`` of :func:`whiten`'s energy for this fit (float32 arrays)."""
    return (model_params, jnp.asarray(fit.mean, jnp.float32), jnp.asarray(fit.chol, jnp.float32))
