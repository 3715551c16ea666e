"""The chain runner: a kernel scanned over a schedule in one ``lax.scan`` (:func:`langevin`,
:func:`mala` return ``x``; their ``*_with_info`` twins ``(x, StepInfo)``, with per-chain fields
and a thinned trajectory when asked)."""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp

from dsm_jax import validation
from dsm_jax.core import EnergyFn
from dsm_jax.samplers.kernels import StepInfo, init_chain, langevin_kernel, mala_kernel


def _schedule(name: str, value, n_steps: int):
    """Broadcast a scalar or (n_steps,) schedule to (n_steps,) float32."""
    value = jnp.asarray(value, jnp.float32)
    if value.ndim == 0:
        return jnp.full((n_steps,), value)
    if value.shape != (n_steps,):
        raise ValueError(f"`{name}` must be a scalar or have shape ({n_steps},), got {value.shape}.")
    return value


def _recorded(info: StepInfo, per_chain: bool) -> StepInfo:
    """Drop the per-chain fields unless asked: stacked over steps they cost O(n_steps·batch)."""
    return info if per_chain else info._replace(acceptance_prob_per_chain=None, is_accepted=None)


def _chain(kernel, energy_fn, step_size, n_steps, temperatures, *, per_chain=False, thin=None):
    """``(params, key, x0, free_mask=None) -> (x, StepInfo)``: ``kernel`` scanned over the schedule.

    With ``thin=k`` the scan also carries a (batch, ⌈n/k⌉, *event) buffer and writes every state
    into slot ⌊(i + offset)/k⌋ (``offset`` = ⌈n/k⌉·k − n): each slot's last write is the kept
    state, so there is no branch, the scan stays one, and its size does not depend on n_steps.
    """
    n_steps = validation.check_positive_int("n_steps", n_steps)
    validation.check_positive("step_size", step_size)
    temperatures = validation.check_temperatures(temperatures, n_steps)
    step_sizes = _schedule("step_size", step_size, n_steps)
    per_chain = validation.check_bool("per_chain", per_chain)
    thin = validation.check_optional_int("thin", thin, 1, "keep no trajectory")
    n_kept = None if thin is None else -(-n_steps // thin)

    def chain_fn(params, key, x0, free_mask=None):
        validation.check_chain_start(x0, free_mask)
        state0 = init_chain(energy_fn, params, x0)

        def body(carry, inputs):
            state, buffer = carry
            i, step_key, eta, temp = inputs
            state, info = kernel(params, step_key, state, eta, temp, free_mask)
            if buffer is not None:
                slot = (i + n_kept * thin - n_steps) // thin
                buffer = jax.lax.dynamic_update_index_in_dim(buffer, state.x, slot, axis=1)
            return (state, buffer), _recorded(info, per_chain)

        buffer0 = None
        if thin is not None:
            buffer0 = jnp.zeros((state0.x.shape[0], n_kept) + state0.x.shape[1:], state0.x.dtype)
        keys = jax.random.split(key, n_steps)
        inputs = (jnp.arange(n_steps), keys, step_sizes, temperatures)
        (state, trajectory), info = jax.lax.scan(body, (state0, buffer0), inputs)
        return state.x, info._replace(trajectory=trajectory)

    return chain_fn


def _positions_only(chain_fn):
    def sample_fn(params, key, x0, free_mask=None):
        return chain_fn(params, key, x0, free_mask)[0]

    return sample_fn


def _legacy_return_info(name: str, with_info, return_info):
    """``return_info=`` (deprecated) picks the ``*_with_info`` twin, as it used to."""
    if return_info is None:
        return None
    warnings.warn(
        f"`{name}(..., return_info=...)` is deprecated: use `{name}` (returns x) or "
        f"`{name}_with_info` (returns (x, StepInfo)).", DeprecationWarning, stacklevel=3)
    return with_info if return_info else None


def langevin_with_info(energy_fn: EnergyFn, step_size, n_steps: int, temperatures=None, *, clip=None,
                       per_chain=False, thin=None):
    """Unadjusted Langevin chain: ``fn(params, key, x0, free_mask=None) -> (x, StepInfo)``.

    ``step_size`` η is a scalar or a per-step array of shape (n_steps,); ``temperatures``
    has shape (n_steps,) (default all ones); StepInfo's per-step fields have shape (n_steps,).
    ``clip=(lo, hi)`` clamps every step to a box (see :func:`langevin_kernel`).
    ``per_chain=True`` keeps the per-chain fields, (n_steps, batch) each (O(n_steps·batch) memory).
    ``thin=k`` keeps ⌈n_steps/k⌉ states in ``StepInfo.trajectory``, shape (batch, ⌈n/k⌉, *event)
    (memory ⌈n/k⌉ × the size of x0), the last equal to the returned ``x``.
    One ``lax.scan`` (its size does not depend on n_steps); jit it.
    """
    return _chain(langevin_kernel(energy_fn, clip), energy_fn, step_size, n_steps, temperatures,
                  per_chain=per_chain, thin=thin)


def langevin(energy_fn: EnergyFn, step_size, n_steps: int, temperatures=None, *, clip=None, return_info=None):
    """Unadjusted Langevin chain: ``sample_fn(params, key, x0, free_mask=None) -> x``.

    See :func:`langevin_with_info` for the arguments (``clip=``) and for the per-step
    diagnostics. ``return_info=`` is deprecated.
    """
    chain = langevin_with_info(energy_fn, step_size, n_steps, temperatures, clip=clip)
    return _legacy_return_info("langevin", chain, return_info) or _positions_only(chain)


def _refuse_clip_for_mala(clip):
    if clip is not None:
        raise ValueError(
            "`clip` is refused for MALA: a clamped proposal has an atom on the box's faces, which the "
            "Metropolis–Hastings ratio (written for the Gaussian proposal density) does not account for, "
            "so the chain would no longer target exp(−E/T). Use `langevin`/`annealed_langevin` with "
            "`clip=`, or clip MALA's returned samples yourself.")


def mala_with_info(energy_fn: EnergyFn, step_size, n_steps: int, temperatures=None, *, clip=None,
                   per_chain=False, thin=None):
    """Metropolis-adjusted Langevin, exact stationary law exp(−E/T) (T > 0):
    ``fn(params, key, x0, free_mask=None) -> (x, StepInfo)`` (acceptance per step).

    ``per_chain=True`` adds each chain's acceptance probability and accept flag per step
    ((n_steps, batch) each); ``thin=k`` a trajectory, as in :func:`langevin_with_info`.
    ``clip`` is refused (it would break detailed balance). The step size is fixed: tune it
    first with :func:`dsm_jax.adaptation.mala_step_size_adaptation` (dual averaging).
    """
    _refuse_clip_for_mala(clip)
    if temperatures is not None:
        validation.check_positive("temperatures", temperatures)
    return _chain(mala_kernel(energy_fn), energy_fn, step_size, n_steps, temperatures,
                  per_chain=per_chain, thin=thin)


def mala(energy_fn: EnergyFn, step_size, n_steps: int, temperatures=None, *, clip=None, return_info=None):
    """Metropolis-adjusted Langevin: same signature as :func:`langevin`, returns ``x``."""
    chain = mala_with_info(energy_fn, step_size, n_steps, temperatures, clip=clip)  # refuses a clip
    return _legacy_return_info("mala", chain, return_info) or _positions_only(chain)
