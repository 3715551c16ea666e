"""ESS and R-hat over chains: blackjax's estimators on our (chains, draws, *event) layout.

``StepInfo.trajectory`` of a chain run with ``thin=k`` is already (chains, draws, *event), so
``effective_sample_size(info.trajectory)`` works as is. blackjax is imported on the first call
only (``import dsm_jax`` never needs it); inputs are checked here, where they enter.
"""
from __future__ import annotations

import functools

import jax

from dsm_jax import validation


@functools.cache  # one jit wrapper per blackjax estimator, so its compile cache lives across calls
def _jitted(estimator):
    """One compiled computation (eagerly, blackjax's estimators dispatch and compile op by op)."""
    return jax.jit(estimator, static_argnames=("chain_axis", "sample_axis"))


def effective_sample_size(draws) -> jax.Array:
    """Effective sample size per coordinate, shape ``draws.shape[2:]``, of draws laid out
    (chains, draws, *event) (≥ 1 chain, ≥ 4 draws): blackjax's Geyer-truncated estimator,
    summed over chains (so at most chains × draws for independent draws, more if anticorrelated)."""
    draws = validation.check_draws("draws", draws, min_chains=1)
    blackjax = validation.require_blackjax("effective_sample_size")
    return _jitted(blackjax.diagnostics.effective_sample_size)(draws)


def potential_scale_reduction(draws) -> jax.Array:
    """Gelman–Rubin R-hat per coordinate, shape ``draws.shape[2:]``, of draws laid out
    (chains, draws, *event) (≥ 2 chains, ≥ 4 draws): blackjax's classic (unsplit) estimator;
    ≈ 1 when the chains agree, > 1.01 is the usual warning sign."""
    draws = validation.check_draws("draws", draws, min_chains=2)
    blackjax = validation.require_blackjax("potential_scale_reduction")
    return _jitted(blackjax.diagnostics.potential_scale_reduction)(draws)
