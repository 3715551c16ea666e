"""Interop with blackjax: our batched energy as a log-density of one unbatched position.

blackjax kernels (``blackjax.mala``, ``blackjax.nuts``, ...) take ``logdensity_fn(x)`` of a
single position; ours is ``energy_fn(params, x) -> (batch,)`` with density ∝ exp(−E/T). Step
sizes differ too: blackjax's MALA ``step_size`` h is our η/2 (docs/samplers.md has the table).
Nothing here imports blackjax.
"""
from __future__ import annotations

from dsm_jax import validation
from dsm_jax.core import EnergyFn


def to_logdensity(energy_fn: EnergyFn, params, temperature=1.0):
    """``logdensity_fn(x) = −E(x)/T`` for one position ``x`` of the event's shape (no batch axis);
    ``jax.vmap`` it, or let blackjax do so, for many chains."""
    validation.check_callable("energy_fn", energy_fn)
    validation.check_positive("temperature", temperature)
    return lambda x: -energy_fn(params, x[None])[0] / temperature
