"""One step of a chain, blackjax-shaped: :func:`init_chain` builds a :class:`ChainState`, a kernel
maps ``(params, key, state, step_size, temperature, free_mask) -> (state, StepInfo)``.

ULA targeting exp(−E/T): ``x ← x − (η/2)∇E(x) + √(η·T)·z``; MALA adds a Metropolis–Hastings
test per chain; the preconditioned kernel both, with ``S = diag(scale²)`` (AIS uses it too).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dsm_jax import validation
from dsm_jax.core import EnergyFn, energy_and_grad, sum_event


class ChainState(NamedTuple):
    x: jax.Array       # (batch, *event)
    energy: jax.Array  # (batch,) E at x
    grad: jax.Array    # ∇ₓE at x (kept so MALA and ULA reuse it on the next step)


class StepInfo(NamedTuple):
    """What a step reports; a ``*_with_info`` chain stacks it over steps (leading axis n_steps).

    Per step, always (a kernel's fields are scalars; a chain's have shape (n_steps,)):
      ``acceptance_rate``  realised MH acceptance, averaged over chains (1 for ULA);
      ``mean_energy``      mean E over the finite chains after the step;
      ``n_nonfinite``      chains with a non-finite coordinate (or energy) after the step;
      ``acceptance_prob``  mean MH acceptance probability min(1, ratio) over chains (1 for ULA;
                           for the unadjusted preconditioned kernel, the probability the step
                           would have had: a gauge of the discretisation error).
    Per chain (a kernel always fills them, shape (batch,); a chain keeps them only with
    ``per_chain=True``, shape (n_steps, batch), else None, so the default stays O(n_steps)):
      ``acceptance_prob_per_chain``  float32 min(1, ratio) of each chain (blackjax's
                                     ``MALAInfo.acceptance_rate``); 1 for ULA;
      ``is_accepted``                bool, the realised MH decision (blackjax's ``is_accepted``);
                                     its mean over chains is ``acceptance_rate``.
    Trajectory (only a chain with ``thin=k``, else None):
      ``trajectory``  (batch, ⌈n_steps/k⌉, *event), chains first like blackjax's diagnostics:
                      the states after steps n − k·(⌈n/k⌉ − 1), …, n − k, n (every k-th state,
                      aligned so the last is the chain's final state).
    """
    acceptance_rate: jax.Array
    mean_energy: jax.Array
    n_nonfinite: jax.Array
    acceptance_prob: Any = None
    acceptance_prob_per_chain: Any = None
    is_accepted: Any = None
    trajectory: Any = None


def init_chain(energy_fn: EnergyFn, params, x: jax.Array) -> ChainState:
    e, g = energy_and_grad(energy_fn, params, x)
    return ChainState(x, e, g)


def _step_info(state: ChainState, accepted, accept_prob) -> StepInfo:
    """Summaries over chains plus the per-chain fields (``accepted``, ``accept_prob``: (batch,))."""
    finite = jnp.all(jnp.isfinite(state.x.reshape(state.x.shape[0], -1)), axis=1)
    finite = finite & jnp.isfinite(state.energy)
    mean_energy = jnp.sum(jnp.where(finite, state.energy, 0.0)) / jnp.maximum(jnp.sum(finite), 1)
    accept_prob = jnp.asarray(accept_prob, jnp.float32)
    return StepInfo(jnp.mean(accepted.astype(jnp.float32)), mean_energy, jnp.sum(~finite),
                    jnp.mean(accept_prob), accept_prob, accepted)


def _masked(free_mask, moved, x):
    return moved if free_mask is None else jnp.where(free_mask > 0, moved, x)


def _clipped(clip, x):
    return x if clip is None else jnp.clip(x, clip[0], clip[1])


def langevin_kernel(energy_fn: EnergyFn, clip=None):
    """One unadjusted Langevin step targeting exp(−E/T).

    ``clip=(lo, hi)`` clamps the moved coordinates to the box after the step (``lo``/``hi``
    scalars or arrays broadcasting to the event, e.g. ``(0.0, 1.0)`` for pixels): the chain
    then targets exp(−E/T) restricted to the box only approximately (mass piles up on faces).
    """
    clip = validation.check_clip("clip", clip)

    def step(params, key, state: ChainState, step_size, temperature, free_mask=None):
        validation.check_clip_shape("clip", clip, state.x)
        noise = jax.random.normal(key, state.x.shape, state.x.dtype)
        proposal = state.x - 0.5 * step_size * state.grad + jnp.sqrt(step_size * temperature) * noise
        new = init_chain(energy_fn, params, _masked(free_mask, _clipped(clip, proposal), state.x))
        ones = jnp.ones(state.x.shape[:1], bool)
        return new, _step_info(new, ones, ones)

    return step


def _own_potential(params, state: ChainState):
    return state.energy, state.grad


def preconditioned_mala_kernel(energy_fn: EnergyFn, scale=None, *, adjusted: bool = True, potential=None):
    """One Metropolis-adjusted Langevin step on exp(−U/T) with a diagonal preconditioner.

    ``x' = x − (η/2)·S∇U(x) + √(ηT)·S^½ z`` with ``S = diag(scale²)`` (``scale`` broadcasts to
    the event; ``None`` is the identity, i.e. :func:`mala_kernel`), so ``step_size`` η is in
    units of ``scale``. ``adjusted=False`` always accepts (preconditioned ULA) but still reports
    the acceptance probability in :class:`StepInfo`.

    ``U`` is ``E`` by default. ``potential(params, state) -> (U, ∇U)`` makes the chain target a
    function of the cached ``state.energy``/``state.grad`` instead (AIS anneals between a
    Gaussian and ``E`` this way, at one energy-and-gradient evaluation per step).
    """
    potential = _own_potential if potential is None else potential

    def half_sq(v, free_mask):
        return 0.5 * sum_event(jnp.square(v if free_mask is None else jnp.where(free_mask > 0, v, 0.0)))

    def step(params, key, state: ChainState, step_size, temperature, free_mask=None):
        s = 1.0 if scale is None else scale
        var = 1.0 if scale is None else jnp.square(scale)
        key_noise, key_accept = jax.random.split(key)
        u, gu = potential(params, state)
        z = jax.random.normal(key_noise, state.x.shape, state.x.dtype)
        noise_scale = jnp.sqrt(step_size * temperature) * s
        moved = state.x - 0.5 * step_size * var * gu + noise_scale * z
        proposal = init_chain(energy_fn, params, _masked(free_mask, moved, state.x))
        u_y, gu_y = potential(params, proposal)
        back = (state.x - proposal.x + 0.5 * step_size * var * gu_y) / noise_scale
        # log q(x | y) − log q(y | x): the forward residual is z itself (free coordinates only)
        log_ratio = -(u_y - u) / temperature - half_sq(back, free_mask) + half_sq(z, free_mask)
        log_ratio = jnp.nan_to_num(log_ratio, nan=-jnp.inf)  # a NaN proposal is rejected
        accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
        if adjusted:
            accept = jnp.log(jax.random.uniform(key_accept, log_ratio.shape)) < log_ratio
        else:
            accept = jnp.ones(log_ratio.shape, bool)

        def pick(new, old):
            return jnp.where(accept.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

        new_state = jax.tree.map(pick, proposal, state)
        return new_state, _step_info(new_state, accept, accept_prob)

    return step


def mala_kernel(energy_fn: EnergyFn):
    """One Metropolis-adjusted Langevin step targeting exp(−E/T), T > 0."""
    return preconditioned_mala_kernel(energy_fn)
