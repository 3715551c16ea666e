"""Step-size adaptation for MALA: dual averaging to a target acceptance, one ``lax.scan`` warm-up.

The update is blackjax's (``blackjax.adaptation.step_size.dual_averaging_adaptation``, Hoffman &
Gelman's scheme); this module only scans it with our MALA kernel, so blackjax is imported when a
warm-up is built, never by ``import dsm_jax``. The step size adapted is our η (x ← x − (η/2)∇E +
√(ηT) z; blackjax's own MALA calls η/2 its step size, see docs/samplers.md).

One step size is shared by all chains: they target the same law, so the acceptance probability
averaged over chains is a low-noise signal, and the production chain keeps a scalar η.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from dsm_jax import validation
from dsm_jax.core import EnergyFn
from dsm_jax.samplers import init_chain, mala_kernel


class AdaptationInfo(NamedTuple):
    step_size: jax.Array        # (n_steps,) η used at each warm-up step
    acceptance_prob: jax.Array  # (n_steps,) mean MH acceptance probability over chains (what is adapted)
    acceptance_rate: jax.Array  # (n_steps,) realised acceptance, averaged over chains


def mala_step_size_adaptation(energy_fn: EnergyFn, n_steps: int, *, initial_step_size=1e-2,
                              target_accept=0.574, temperature=1.0, t0=10, gamma=0.05, kappa=0.75):
    """Warm-up ``fn(params, key, x0, free_mask=None) -> (x, step_size, AdaptationInfo)``.

    Runs ``n_steps`` MALA steps at temperature ``temperature`` while dual averaging moves log η
    towards ``target_accept`` (0.574: the optimum for MALA in high dimension); returns the last
    state ``x`` (start the production chain there) and the averaged iterate ``step_size``, a
    scalar. The production chain then runs at that fixed η (``dj.mala(energy_fn, step_size, n)``):
    nothing adapts inside it. ``t0``, ``gamma``, ``kappa`` are blackjax's dual-averaging constants.
    One ``lax.scan``; jit it.
    """
    n_steps = validation.check_positive_int("n_steps", n_steps)
    validation.check_positive("initial_step_size", initial_step_size)
    target_accept = validation.check_float_in("target_accept", target_accept, 0.0, 1.0)
    validation.check_positive("temperature", temperature)
    validation.check_positive("gamma", gamma)
    validation.check_positive("kappa", kappa)  # blackjax: in (0.5, 1]; smaller forgets faster
    validation.check_nonnegative("t0", t0)
    blackjax = validation.require_blackjax("mala_step_size_adaptation")
    da_init, da_update, da_final = blackjax.adaptation.step_size.dual_averaging_adaptation(
        target_accept, t0=t0, gamma=gamma, kappa=kappa)
    kernel = mala_kernel(energy_fn)

    def warmup_fn(params, key, x0, free_mask=None):
        validation.check_chain_start(x0, free_mask)

        def body(carry, step_key):
            state, da_state = carry
            eta = jnp.exp(da_state.log_step_size)
            state, info = kernel(params, step_key, state, eta, temperature, free_mask)
            da_state = da_update(da_state, info.acceptance_prob)
            return (state, da_state), AdaptationInfo(eta, info.acceptance_prob, info.acceptance_rate)

        carry0 = (init_chain(energy_fn, params, x0), da_init(jnp.asarray(initial_step_size, jnp.float32)))
        (state, da_state), info = jax.lax.scan(body, carry0, jax.random.split(key, n_steps))
        return state.x, da_final(da_state), info

    return warmup_fn
