"""Normalising constants and test log-likelihoods of energy models.

Convention (project-wide): ``energy_fn(params, x) -> E`` of shape ``(batch,)`` for ``x`` of
shape ``(batch, *event)``; the model density is ``p(x) = exp(−E(x)) / Z`` with
``Z = ∫ exp(−E(x)) dx``. For a DDE/DSM energy trained at noise level σ, ``p`` models the
σ-smoothed data density ``p̂_σ``, so every likelihood here is the likelihood of ``p̂_σ``.

One module per job:

* :mod:`.proposals` — Gaussian proposals: log densities (summed over dimensions; the DDE
  code's mean-over-dimensions bug kept only to measure it), from data, full-covariance fits
  and the whitening change of variables.
* :mod:`.importance` — importance sampling (:func:`make_is_log_z`, :func:`is_log_z`).
* :mod:`.ais` — annealed importance sampling with the samplers' preconditioned MALA
  (:func:`make_ais_log_z`, :func:`ais_log_z`, :func:`sigmoid_schedule`).
* :mod:`.grid` — the midpoint rule, 1-D and 2-D (:func:`grid_log_z`).
* :mod:`.estimate` — :func:`estimate_log_z`, one entry point over the three.
* :mod:`.evaluation` — :func:`log_likelihood`, :func:`evaluate_log_likelihood`, bits/dim, the
  σ-smoothed test set.
* :mod:`.repeats` — repeated AIS runs: pooled log Z, spread, K trend, a convergence-free bound.

Return convention: ``f(...) -> (log_z, stderr)`` and ``f_with_info(...) -> (log_z, stderr, info)``
(float32 0-d arrays; ``return_info=`` is deprecated). ``make_*`` build a jitted estimator once
per energy and configuration, ``estimate(params, key, proposal_mean, proposal_scale) ->
(log_z, stderr, info)``: new params never recompile and nothing is cached at module level.

A note on the DDE paper's code: its importance-sampling estimate of ``log Z`` evaluates the
proposal's log density as a *mean* over dimensions where the *sum* is needed; it
under-estimates ``log Z`` by roughly ``(d − 1)/2·(1 + log 2π s²)`` nats for ``q = N(0, s² I)``
and so inflates reported log-likelihoods by the same amount.
"""
from dsm_jax.likelihood.ais import ais_log_z, ais_log_z_with_info, make_ais_log_z, sigmoid_schedule
from dsm_jax.likelihood.estimate import estimate_log_z, estimate_log_z_with_info
from dsm_jax.likelihood.evaluation import (
    bits_per_dim,
    evaluate_log_likelihood,
    likelihood_row,
    log_likelihood,
    mean_and_stderr_over_draws,
    noisy_test_scores,
    smoothed_entropy_ceiling,
)
from dsm_jax.likelihood.grid import grid_log_z, grid_log_z_with_info
from dsm_jax.likelihood.importance import is_log_z, is_log_z_with_info, make_is_log_z
from dsm_jax.likelihood.repeats import convergence_notes, log_z_lower_bound, pool_log_z, repeated_ais_log_z
from dsm_jax.likelihood.proposals import (
    GaussianFit,
    broadcast_proposal,
    dde_buggy_proposal_log_density,
    fit_gaussian,
    gaussian_proposal_log_density,
    proposal_from_data,
    whiten,
    whitened_params,
)

__all__ = [
    "GaussianFit",
    "ais_log_z",
    "ais_log_z_with_info",
    "bits_per_dim",
    "convergence_notes",
    "broadcast_proposal",
    "dde_buggy_proposal_log_density",
    "estimate_log_z",
    "estimate_log_z_with_info",
    "evaluate_log_likelihood",
    "fit_gaussian",
    "gaussian_proposal_log_density",
    "grid_log_z",
    "grid_log_z_with_info",
    "is_log_z",
    "is_log_z_with_info",
    "likelihood_row",
    "log_likelihood",
    "log_z_lower_bound",
    "make_ais_log_z",
    "make_is_log_z",
    "mean_and_stderr_over_draws",
    "noisy_test_scores",
    "pool_log_z",
    "proposal_from_data",
    "repeated_ais_log_z",
    "sigmoid_schedule",
    "smoothed_entropy_ceiling",
    "whiten",
    "whitened_params",
]
