"""From ``log Z`` to test log-likelihoods: per example, mean with error bars, bits/dim, and
the summaries of repeated AIS runs (pooled estimate, a bound that needs no convergence)."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from dsm_jax import validation
from dsm_jax.core import EnergyFn


def log_likelihood(energy_fn: EnergyFn, params, x, log_z):
    """``log p(x) = −E(x) − log Z`` per example: shape ``(batch,)``. Pure, jit-able.

    A concrete ``x`` with NaN/inf is refused; under jit it cannot be checked (its rows come
    out non-finite)."""
    validation.check_examples("x", x)
    validation.check_all_finite("x", x)
    e = energy_fn(params, x)
    validation.check_energy_output(e, x)
    return -e - log_z


def bits_per_dim(ll: float, se: float, d: int) -> dict:
    """A log-likelihood (nats per example, with stderr) in bits/dim, continuous convention on the data
    as given; ``bits_per_dim_256 = bits_per_dim + 8`` is the same density for [0, 1] data in 0..255 units."""
    bpd = -ll / (d * math.log(2.0))
    return {"log_likelihood": ll, "stderr": se, "dim": d, "bits_per_dim": bpd,
            "bits_per_dim_stderr": se / (d * math.log(2.0)), "bits_per_dim_256": bpd + 8.0}


def smoothed_entropy_ceiling(sigma: float, d: int) -> float:
    """−(d/2)·log(2πeσ²): no density's expected log-likelihood of σ-smoothed data exceeds it
    (adding independent noise cannot lower the entropy below the noise's)."""
    validation.check_positive("sigma", sigma)
    return -0.5 * d * math.log(2.0 * math.pi * math.e * sigma**2)


def noisy_test_scores(score_fn, params, x, key, sigma: float, n_draws: int, chunk_size: int):
    """Score the σ-smoothed test set: ``score_fn(params, x̃) -> tuple of (batch,) arrays`` on
    ``x̃ = x + σε`` for ``n_draws`` independent draws of ε, ``chunk_size`` examples at a time
    (jitted once per call). Returns one numpy float64 array ``(n_draws, n)`` per output."""
    validation.check_examples("x", x)
    validation.check_all_finite("x", x)
    validation.check_nonnegative("sigma", sigma)
    n_draws = validation.check_positive_int("n_draws", n_draws)
    chunk_size = validation.check_positive_int("chunk_size", chunk_size)

    @jax.jit
    def score(p, xc, k):
        return score_fn(p, xc + sigma * jax.random.normal(k, xc.shape, xc.dtype))

    rows = []
    for j in range(n_draws):
        parts = [[np.asarray(a, np.float64) for a in score(params, jnp.asarray(x[s:s + chunk_size]),
                                                             jax.random.fold_in(jax.random.fold_in(key, j), i))]
                 for i, s in enumerate(range(0, len(x), chunk_size))]
        rows.append([np.concatenate(col) for col in zip(*parts)])
    return [np.stack(col) for col in zip(*rows)]


def mean_and_stderr_over_draws(values) -> tuple[float, float]:
    """``values`` ``(n_draws, n)``: the mean, and its stderr over the n examples (draws averaged first)."""
    per_example = np.asarray(values, np.float64).mean(0)
    return float(per_example.mean()), float(per_example.std(ddof=1) / math.sqrt(len(per_example)))


def likelihood_row(log_densities, d: int, log_z=None, log_z_stderr: float = 0.0, log_z_lower_bound=None) -> dict:
    """Mean log-likelihood with bits/dim from ``log_densities`` ``(n_draws, n)`` (e.g. −E on the noisy
    test set of :func:`noisy_test_scores`), minus ``log_z`` when given (then ``stderr`` adds its error).
    With ``log_z_lower_bound`` also ``log_likelihood_upper_bound = mean + 2·stderr_test − bound`` and
    its ``bits_per_dim_lower_bound``: valid however far the log Z estimate is from converging."""
    m, se = mean_and_stderr_over_draws(log_densities)
    if log_z is None:
        return {**bits_per_dim(m, se, d), "stderr_test": se}
    row = {**bits_per_dim(m - log_z, math.hypot(se, log_z_stderr), d), "stderr_test": se, "stderr_log_z": log_z_stderr}
    if log_z_lower_bound is not None:
        upper = m + 2.0 * se - log_z_lower_bound
        row.update(log_likelihood_upper_bound=upper, bits_per_dim_lower_bound=-upper / (d * math.log(2.0)))
    return row


def evaluate_log_likelihood(
    energy_fn: EnergyFn, params, x_test, log_z, log_z_stderr=0.0, *, chunk_size: int = 4096
) -> dict:
    """Mean test log-likelihood (nats) with its standard error, and bits/dim; plain floats.

    ``ll = mean_i(−E(x_i)) − log Z``. Its error combines the sampling error of the test
    mean and the error of ``log Z`` (independent): ``sqrt(var(−E)/n + log_z_stderr²)``.
    ``bits_per_dim = −ll / (d·ln 2)`` with ``d`` the number of numbers per example; no
    dequantisation offset is applied (for 8-bit images rescaled to [0, 1] the usual
    ``+ log 256`` per dimension is NOT added: this is a continuous density on the data as
    given). For a DSM/DDE energy trained at noise σ the density is the σ-smoothed model
    ``p̂_σ``: this is the test likelihood of the smoothed density, not of the clean data.
    Non-finite test points (``x_test``) or energies are refused, naming the rows.

    Keys: ``log_likelihood``, ``log_likelihood_stderr``, ``log_likelihood_stderr_data``
    (test-sample part only), ``bits_per_dim``, ``bits_per_dim_stderr``, ``log_z``,
    ``log_z_stderr``, ``n``, ``dim``. The energy is evaluated in chunks of ``chunk_size``.
    """
    validation.check_examples("x_test", x_test)
    n = int(jnp.shape(x_test)[0])
    if n < 2:
        raise ValueError(f"`x_test` needs at least 2 examples for a standard error, got {n}.")
    validation.check_all_finite("x_test", x_test)
    chunk_size = validation.check_positive_int("chunk_size", chunk_size)
    validation.check_nonnegative("log_z_stderr", log_z_stderr)
    log_z, log_z_stderr = float(log_z), float(log_z_stderr)
    if not math.isfinite(log_z):
        raise ValueError(f"`log_z` must be finite, got {log_z}; check the log Z estimate.")
    d = int(np.prod(jnp.shape(x_test)[1:]))
    efn = jax.jit(energy_fn)
    parts = []
    for start in range(0, n, chunk_size):
        xc = jnp.asarray(x_test[start:start + chunk_size])
        e = efn(params, xc)
        validation.check_energy_output(e, xc)
        parts.append(np.asarray(e, np.float64))
    neg_e = -np.concatenate(parts)
    if not np.all(np.isfinite(neg_e)):
        rows = np.flatnonzero(~np.isfinite(neg_e))
        raise ValueError(f"energy_fn is not finite on {rows.size} finite test point(s) (rows {rows[:5].tolist()}); "
                         f"check `params`.")
    ll = float(np.mean(neg_e)) - log_z
    se_data = float(np.std(neg_e, ddof=1)) / math.sqrt(n)
    se = math.sqrt(se_data**2 + log_z_stderr**2)
    return {
        "log_likelihood": ll,
        "log_likelihood_stderr": se,
        "log_likelihood_stderr_data": se_data,
        "bits_per_dim": -ll / (d * math.log(2.0)),
        "bits_per_dim_stderr": se / (d * math.log(2.0)),
        "log_z": log_z,
        "log_z_stderr": log_z_stderr,
        "n": n,
        "dim": d,
    }
