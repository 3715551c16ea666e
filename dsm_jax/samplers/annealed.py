"""MDSM's sampler: its temperature schedule, the annealed ULA chain with one final Tweedie denoise,
and inpainting with that chain."""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp

from dsm_jax import validation
from dsm_jax.core import EnergyFn, denoiser
from dsm_jax.samplers.chains import _legacy_return_info, _positions_only, langevin_with_info
from dsm_jax.samplers.kernels import _clipped, _masked


def mdsm_temperature_schedule(
    n_constant: int = 500,
    n_exponential: int = 2000,
    n_linear: int = 200,
    t_high: float = 100.0,
    t_low: float = 1.0,
) -> jax.Array:
    """MDSM's annealing, indexed as their ``sample.py`` does: ``n_constant`` steps at ``t_high``;
    ``n_exponential`` steps ``t_high·exp(−k·ln(t_high/t_low)/n_exponential)`` for k = 0 … n−1
    (starting at ``t_high``, ending one geometric step above ``t_low``); ``n_linear`` steps
    ``t_low·linspace(1, 0, n_linear)`` (from ``t_low`` down to exactly 0; one step is ``t_low``)."""
    n_constant, n_exponential, n_linear = (validation.check_positive_int(name, n, minimum=0) for name, n in (
        ("n_constant", n_constant), ("n_exponential", n_exponential), ("n_linear", n_linear)))
    if n_constant + n_exponential + n_linear == 0:
        raise ValueError("The schedule is empty: make one of n_constant/n_exponential/n_linear > 0.")
    validation.check_positive("t_high", t_high)
    validation.check_positive("t_low", t_low)
    if float(t_high) < float(t_low):  # the schedule anneals downwards; an inverted pair heats up
        raise ValueError(f"`t_high` ({t_high}) must be >= `t_low` ({t_low}); swap them.")
    k = jnp.arange(n_exponential, dtype=jnp.float32)
    decay = jnp.log(jnp.float32(t_high) / jnp.float32(t_low)) / max(n_exponential, 1)
    return jnp.concatenate([
        jnp.full((n_constant,), t_high, jnp.float32),
        t_high * jnp.exp(-k * decay),
        t_low * jnp.linspace(1.0, 0.0, n_linear, dtype=jnp.float32),
    ])


def _annealed_arguments(n_steps, temperatures, legacy):
    """Resolve ``(n_steps, temperatures, sigma0?, denoise?)`` from the new keyword form or the
    deprecated positional one ``annealed_langevin(E, step_size, temperatures, sigma0, denoise)``."""
    overrides = {}
    # an array in n_steps' place is the old positional schedule; a bad scalar is a bad n_steps
    positional_schedule = n_steps is not None and jnp.ndim(n_steps) > 0
    if positional_schedule or (legacy and n_steps is None):
        if temperatures is not None:
            raise ValueError("Pass the schedule once: `temperatures=` (the third positional argument is `n_steps`).")
        warnings.warn(
            "`annealed_langevin(energy_fn, step_size, temperatures, ...)` is deprecated: the third "
            "positional argument is `n_steps`, as in `langevin`; pass `temperatures=` by keyword.",
            DeprecationWarning, stacklevel=4)
        n_steps, temperatures = None, n_steps
        overrides = dict(zip(("sigma0", "denoise"), legacy))
    elif legacy:
        raise TypeError("annealed_langevin takes (energy_fn, step_size, n_steps) positionally; pass the rest by "
                        "keyword (temperatures=, sigma0=, denoise=).")
    if n_steps is not None:
        n_steps = validation.check_positive_int("n_steps", n_steps)
    if temperatures is None:
        temperatures = mdsm_temperature_schedule()
    if jnp.ndim(temperatures) != 1 or jnp.shape(temperatures)[0] == 0:
        raise ValueError(
            f"`temperatures` must have shape (n_steps,) with n_steps >= 1 (one temperature per "
            f"step), got shape {jnp.shape(temperatures)}."
        )
    length = int(jnp.shape(temperatures)[0])
    if n_steps is not None and n_steps != length:
        raise ValueError(f"`n_steps` ({n_steps}) must equal len(temperatures) ({length}); pass one of them.")
    return length, temperatures, overrides


def annealed_langevin_with_info(energy_fn: EnergyFn, step_size=0.02**2, n_steps=None, *legacy,
                                temperatures=None, sigma0=0.1, denoise=True, clip=None, per_chain=False,
                                thin=None):
    """MDSM's sampler: annealed ULA (default: :func:`mdsm_temperature_schedule`, η = 0.02²),
    then one Tweedie step ``x − σ₀²∇E(x)``: ``fn(params, key, x0, free_mask=None) -> (x, StepInfo)``.

    ``n_steps`` defaults to ``len(temperatures)`` (must match it when given). With a
    ``free_mask`` only free coordinates move or get denoised (inpainting). ``clip=(lo, hi)``
    clamps every step and the denoised output to the box (MDSM itself does not clip).
    ``per_chain`` and ``thin`` as in :func:`langevin_with_info`; the trajectory holds chain
    states, so its last entry is the state *before* the final denoise (``x`` itself when
    ``denoise=False``).
    """
    n_steps, temperatures, overrides = _annealed_arguments(n_steps, temperatures, legacy)
    sigma0, denoise = overrides.get("sigma0", sigma0), overrides.get("denoise", denoise)
    validation.check_positive("sigma0", sigma0)
    final_denoise = denoiser(energy_fn, sigma0)
    clip = validation.check_clip("clip", clip)  # once: the chain and the final denoise share it
    chain = langevin_with_info(energy_fn, step_size, n_steps, temperatures, clip=clip, per_chain=per_chain,
                               thin=thin)

    def chain_fn(params, key, x0, free_mask=None):
        x, info = chain(params, key, x0, free_mask)
        if denoise:
            x = _masked(free_mask, _clipped(clip, final_denoise(params, x)), x)
        return x, info

    return chain_fn


def annealed_langevin(energy_fn: EnergyFn, step_size=0.02**2, n_steps=None, *legacy, temperatures=None,
                      sigma0=0.1, denoise=True, clip=None, return_info=None):
    """MDSM's sampler, ``sample_fn(params, key, x0, free_mask=None) -> x``; arguments as in
    :func:`annealed_langevin_with_info`. ``return_info=`` and the old positional form
    ``(energy_fn, step_size, temperatures, sigma0, denoise)`` are deprecated."""
    chain = annealed_langevin_with_info(energy_fn, step_size, n_steps, *legacy, temperatures=temperatures,
                                        sigma0=sigma0, denoise=denoise, clip=clip)
    return _legacy_return_info("annealed_langevin", chain, return_info) or _positions_only(chain)


def inpainter(energy_fn: EnergyFn, step_size=0.02**2, n_steps=None, *legacy, temperatures=None, sigma0=0.1,
              denoise=True, clip=None):
    """Inpainting with the annealed chain: ``fn(params, key, x, free_mask=...) -> x``.

    ``x`` holds the observations where ``free_mask`` is 0 (returned bit-for-bit unchanged)
    and the chain's starting values where it is 1. The old 4th positional ``observed_mask``
    (1 = observed, i.e. ``1 − free_mask``) still works but is deprecated. ``clip=(0.0, 1.0)``
    keeps filled-in pixels in the box.
    """
    sampler = annealed_langevin(energy_fn, step_size, n_steps, *legacy, temperatures=temperatures, sigma0=sigma0,
                                denoise=denoise, clip=clip)

    def inpaint_fn(params, key, x, observed_mask=None, *, free_mask=None):
        validation.check_batched("x", x)
        if (observed_mask is None) == (free_mask is None):
            raise ValueError("Pass exactly one mask: `free_mask=` (1 = fill in, 0 = keep).")
        if observed_mask is not None:
            warnings.warn("inpainter's `observed_mask` is deprecated: pass `free_mask=1 - observed_mask` "
                          "(1 = fill in, 0 = keep), the samplers' meaning.", DeprecationWarning, stacklevel=2)
            validation.check_mask("observed_mask", observed_mask, x)
            free_mask = 1.0 - jnp.asarray(observed_mask, x.dtype)
        validation.check_mask("free_mask", free_mask, x)
        return sampler(params, key, x, jnp.asarray(free_mask, x.dtype))

    return inpaint_fn
