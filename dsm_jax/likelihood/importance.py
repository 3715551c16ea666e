"""Importance sampling of ``log Z`` from a diagonal Gaussian proposal, in fixed memory.

:func:`make_is_log_z` builds the jitted estimator once per ``energy_fn`` and configuration;
``params``, ``key`` and the proposal are traced arguments, so new parameters never
recompile. :func:`is_log_z` is the one-call form (it builds, checks and runs: one compile
per call; jit your own function around it, or reuse a ``make_is_log_z`` estimator, to call
it in a loop).
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import logsumexp

from dsm_jax import validation
from dsm_jax.core import EnergyFn
from dsm_jax.likelihood._returns import build_and_run, legacy_return_info
from dsm_jax.likelihood.proposals import broadcast_proposal, gaussian_proposal_log_density


def make_is_log_z(
    energy_fn: EnergyFn,
    event_shape,
    *,
    n_samples: int = 100_000,
    n_batches: int = 10,
    chunk_size: int = 10_000,
    proposal_log_density: Callable | None = None,
):
    """Jitted ``estimate(params, key, proposal_mean=None, proposal_scale=None) -> (log_z, stderr, info)``.

    ``log Ẑ = log mean_i w_i``, ``w_i = exp(−E(x_i) − log q(x_i))``, ``x_i ~ q = N(mean, diag(scale²))``
    i.i.d. (mean default 0, scale default 1; scalars or arrays of shape ``event_shape``). The
    proposal should be wider than the model in every direction: IS degrades exponentially with
    the dimension (fine for d ≲ 10; use AIS beyond).

    Fixed memory: the ``n_samples`` draws are split into ``n_batches`` independent batches of
    ``n_samples / n_batches`` (must divide), each processed in chunks of ``chunk_size`` by a
    ``lax.scan`` with a running log-sum-exp; only one chunk of samples is ever live.

    ``stderr`` (delta method over independent batches): with ``Ẑ_b`` the mean weight of batch
    ``b`` and ``Ẑ = mean_b Ẑ_b``, ``stderr = std_b(Ẑ_b / Ẑ) / sqrt(n_batches)`` (``ddof=1``), the
    standard error of ``log Ẑ`` to first order. Itself noisy (``n_batches − 1`` degrees of
    freedom) and, like every IS error bar, too small when the proposal misses mass the samples
    never visit. ``log Ẑ`` is biased low by about ``stderr²/2`` (Jensen).

    ``info``: ``ess`` (Kish ``(Σw)²/Σw²``), ``stderr_delta`` (per-sample delta method
    ``sqrt((n Σw²/(Σw)² − 1)/(n − 1))``) and ``batch_log_z`` ``(n_batches,)``. All float32.

    ``proposal_log_density(x, mean, scale) -> (batch,)`` replaces the log density used in the
    weights (default :func:`gaussian_proposal_log_density`); it exists only to reproduce the DDE
    bug (:func:`dde_buggy_proposal_log_density`) with otherwise identical machinery.
    A traced ``proposal_scale`` cannot be checked: it must be > 0.
    """
    event_shape = validation.check_event_shape(event_shape)
    n_samples = validation.check_positive_int("n_samples", n_samples)
    n_batches = validation.check_positive_int("n_batches", n_batches, 2)
    chunk_size = validation.check_positive_int("chunk_size", chunk_size)
    if n_samples % n_batches:
        raise ValueError(
            f"`n_samples` ({n_samples}) must be a multiple of `n_batches` ({n_batches}); e.g. "
            f"n_samples={n_batches * max(1, round(n_samples / n_batches))}."
        )
    if not callable(energy_fn):
        raise ValueError(f"`energy_fn` must be a callable (params, x) -> (batch,), got {energy_fn!r}.")
    log_q = gaussian_proposal_log_density if proposal_log_density is None else proposal_log_density
    per_batch = n_samples // n_batches
    chunk = min(chunk_size, per_batch)
    n_chunks = -(-per_batch // chunk)

    def estimate(params, key, proposal_mean=None, proposal_scale=None):
        validation.check_prng_key("key", key)
        validation.check_energy_fn(energy_fn, params, event_shape)
        mean, scale = broadcast_proposal(event_shape, proposal_mean, proposal_scale)

        def batch_stats(batch_key):
            def body(carry, i):
                lse1, lse2 = carry
                z = jax.random.normal(jax.random.fold_in(batch_key, i), (chunk, *event_shape), jnp.float32)
                x = mean + scale * z
                log_w = -energy_fn(params, x).astype(jnp.float32) - log_q(x, mean, scale)
                log_w = jnp.where(i * chunk + jnp.arange(chunk) < per_batch, log_w, -jnp.inf)  # ragged tail
                return (jnp.logaddexp(lse1, logsumexp(log_w)), jnp.logaddexp(lse2, logsumexp(2.0 * log_w))), None

            init = (jnp.float32(-jnp.inf), jnp.float32(-jnp.inf))
            (lse1, lse2), _ = lax.scan(body, init, jnp.arange(n_chunks))
            return lse1, lse2

        lse1, lse2 = lax.map(batch_stats, jax.random.split(key, n_batches))  # (n_batches,) each
        batch_log_z = lse1 - math.log(per_batch)
        log_z = logsumexp(batch_log_z) - math.log(n_batches)
        rel = jnp.exp(batch_log_z - log_z)  # Ẑ_b / Ẑ, mean 1
        stderr = jnp.std(rel, ddof=1) / math.sqrt(n_batches)
        n = n_batches * per_batch
        tot1, tot2 = logsumexp(lse1), logsumexp(lse2)
        ratio = jnp.exp(tot2 - 2.0 * tot1 + math.log(n))  # n Σw² / (Σw)² >= 1
        info = {
            "ess": jnp.exp(2.0 * tot1 - tot2),
            "stderr_delta": jnp.sqrt(jnp.maximum(ratio - 1.0, 0.0) / max(n - 1, 1)),
            "batch_log_z": batch_log_z,
        }
        return log_z, stderr, info

    return jax.jit(estimate)


def is_log_z_with_info(energy_fn: EnergyFn, params, key, event_shape, *, proposal_mean=None, proposal_scale=None,
                       **config):
    """``(log_z, stderr, info)`` by importance sampling; ``config`` as in :func:`make_is_log_z`."""
    return build_and_run(make_is_log_z, energy_fn, params, key, event_shape, proposal_mean, proposal_scale, config)


def is_log_z(energy_fn: EnergyFn, params, key, event_shape, *, proposal_mean=None, proposal_scale=None,
             return_info=None, **config):
    """``(log_z, stderr)`` (float32 0-d arrays) by importance sampling from
    ``N(proposal_mean, diag(proposal_scale²))``; see :func:`make_is_log_z` for the estimator,
    its error bar and ``config`` (``n_samples``, ``n_batches``, ``chunk_size``,
    ``proposal_log_density``). ``return_info=`` is deprecated: use :func:`is_log_z_with_info`."""
    out = build_and_run(make_is_log_z, energy_fn, params, key, event_shape, proposal_mean, proposal_scale, config)
    return legacy_return_info("is_log_z", out, return_info)
