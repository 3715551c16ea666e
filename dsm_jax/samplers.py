"""Jit-compiled Langevin samplers: one ``lax.scan`` per chain run, chains on the batch axis.

Unadjusted Langevin (ULA) targeting exp(−E/T):
    x ← x − (η/2)∇E(x) + √(η·T)·z,   z ~ N(0, I)
MALA adds a Metropolis–Hastings test per chain, which removes ULA's O(η) bias.

Kernels follow the blackjax shape: ``init_chain`` builds a :class:`ChainState`, a kernel
maps ``(params, key, state, step_size, temperature, free_mask) -> (state, StepInfo)``, and
the public factories scan a kernel over a schedule. ``free_mask`` (1 = may move) turns any
chain into an inpainting chain: masked coordinates never change.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from dsm_jax import validation
from dsm_jax.core import EnergyFn, denoiser, energy_and_grad, sum_event


class ChainState(NamedTuple):
    x: jax.Array       # (batch, *event)
    energy: jax.Array  # (batch,) E at x
    grad: jax.Array    # ∇ₓE at x (kept so MALA and ULA reuse it on the next step)


class StepInfo(NamedTuple):
    acceptance_rate: jax.Array  # mean MH acceptance over chains (1 for ULA)
    mean_energy: jax.Array      # mean E over the finite chains
    n_nonfinite: jax.Array      # chains with a non-finite coordinate after the step


def init_chain(energy_fn: EnergyFn, params, x: jax.Array) -> ChainState:
    e, g = energy_and_grad(energy_fn, params, x)
    return ChainState(x, e, g)


def _step_info(state: ChainState, acceptance_rate) -> StepInfo:
    finite = jnp.all(jnp.isfinite(state.x.reshape(state.x.shape[0], -1)), axis=1)
    finite = finite & jnp.isfinite(state.energy)
    mean_energy = jnp.sum(jnp.where(finite, state.energy, 0.0)) / jnp.maximum(jnp.sum(finite), 1)
    return StepInfo(jnp.asarray(acceptance_rate, jnp.float32), mean_energy, jnp.sum(~finite))


def _masked(free_mask, moved, x):
    return moved if free_mask is None else jnp.where(free_mask > 0, moved, x)


def langevin_kernel(energy_fn: EnergyFn):
    """One unadjusted Langevin step targeting exp(−E/T)."""

    def step(params, key, state: ChainState, step_size, temperature, free_mask=None):
        noise = jax.random.normal(key, state.x.shape, state.x.dtype)
        proposal = state.x - 0.5 * step_size * state.grad + jnp.sqrt(step_size * temperature) * noise
        new = init_chain(energy_fn, params, _masked(free_mask, proposal, state.x))
        return new, _step_info(new, 1.0)

    return step


def mala_kernel(energy_fn: EnergyFn):
    """One Metropolis-adjusted Langevin step targeting exp(−E/T), T > 0."""

    def log_proposal(to_x, from_state: ChainState, step_size, temperature, free_mask):
        # log q(to | from) up to a constant shared by both directions.
        diff = to_x - from_state.x + 0.5 * step_size * from_state.grad
        if free_mask is not None:
            diff = jnp.where(free_mask > 0, diff, 0.0)
        return -sum_event(jnp.square(diff)) / (2.0 * step_size * temperature)

    def step(params, key, state: ChainState, step_size, temperature, free_mask=None):
        key_noise, key_accept = jax.random.split(key)
        noise = jax.random.normal(key_noise, state.x.shape, state.x.dtype)
        moved = state.x - 0.5 * step_size * state.grad + jnp.sqrt(step_size * temperature) * noise
        proposal = init_chain(energy_fn, params, _masked(free_mask, moved, state.x))
        log_ratio = (
            -(proposal.energy - state.energy) / temperature
            + log_proposal(state.x, proposal, step_size, temperature, free_mask)
            - log_proposal(proposal.x, state, step_size, temperature, free_mask)
        )
        log_u = jnp.log(jax.random.uniform(key_accept, log_ratio.shape))
        accept = log_u < jnp.nan_to_num(log_ratio, nan=-jnp.inf)  # a NaN proposal is rejected

        def pick(new, old):
            return jnp.where(accept.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

        new_state = jax.tree.map(pick, proposal, state)
        return new_state, _step_info(new_state, jnp.mean(accept))

    return step


def _schedule(name: str, value, n_steps: int):
    """Broadcast a scalar or (n_steps,) schedule to (n_steps,) float32."""
    value = jnp.asarray(value, jnp.float32)
    if value.ndim == 0:
        return jnp.full((n_steps,), value)
    if value.shape != (n_steps,):
        raise ValueError(f"`{name}` must be a scalar or have shape ({n_steps},), got {value.shape}.")
    return value


def _chain_sampler(kernel, energy_fn, step_size, n_steps, temperatures, return_info):
    n_steps = validation.check_positive_int("n_steps", n_steps)
    validation.check_positive("step_size", step_size)
    temperatures = validation.check_temperatures(temperatures, n_steps)
    step_sizes = _schedule("step_size", step_size, n_steps)

    def sample_fn(params, key, x0, free_mask=None):
        validation.check_batched("x0", x0)
        validation.check_mask("free_mask", free_mask, x0)

        def body(state, inputs):
            step_key, eta, temp = inputs
            return kernel(params, step_key, state, eta, temp, free_mask)

        keys = jax.random.split(key, n_steps)
        state, info = jax.lax.scan(body, init_chain(energy_fn, params, x0), (keys, step_sizes, temperatures))
        return (state.x, info) if return_info else state.x

    return sample_fn


def langevin(energy_fn: EnergyFn, step_size, n_steps: int, temperatures=None, *, return_info=False):
    """Unadjusted Langevin chain: ``sample_fn(params, key, x0, free_mask=None) -> x``.

    ``step_size`` η is a scalar or a per-step array of shape (n_steps,); ``temperatures``
    has shape (n_steps,) (default all ones). With ``return_info=True`` the function returns
    ``(x, StepInfo)`` whose fields have shape (n_steps,). One ``lax.scan``; jit it.
    """
    return _chain_sampler(langevin_kernel(energy_fn), energy_fn, step_size, n_steps, temperatures, return_info)


def mala(energy_fn: EnergyFn, step_size, n_steps: int, temperatures=None, *, return_info=False):
    """Metropolis-adjusted Langevin: exact stationary law exp(−E/T).

    Same signature as :func:`langevin`; the per-step acceptance rate is in
    ``StepInfo.acceptance_rate`` when ``return_info=True``.
    """
    if temperatures is not None:
        validation.check_positive("temperatures", temperatures)
    return _chain_sampler(mala_kernel(energy_fn), energy_fn, step_size, n_steps, temperatures, return_info)


def mdsm_temperature_schedule(
    n_constant: int = 500,
    n_exponential: int = 2000,
    n_linear: int = 200,
    t_high: float = 100.0,
    t_low: float = 1.0,
) -> jax.Array:
    """MDSM's annealing: ``n_constant`` steps at ``t_high``, ``n_exponential`` steps decaying
    geometrically to ``t_low``, ``n_linear`` steps falling linearly from ``t_low`` to 0."""
    for name, n in (("n_constant", n_constant), ("n_exponential", n_exponential), ("n_linear", n_linear)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"`{name}` must be an int >= 0, got {n!r}.")
    if n_constant + n_exponential + n_linear == 0:
        raise ValueError("The schedule is empty: make one of n_constant/n_exponential/n_linear > 0.")
    validation.check_positive("t_high", t_high)
    validation.check_positive("t_low", t_low)
    frac_exp = jnp.arange(1, n_exponential + 1, dtype=jnp.float32) / max(n_exponential, 1)
    frac_lin = jnp.arange(1, n_linear + 1, dtype=jnp.float32) / max(n_linear, 1)
    return jnp.concatenate([
        jnp.full((n_constant,), t_high, jnp.float32),
        t_high * (t_low / t_high) ** frac_exp,
        t_low * (1.0 - frac_lin),
    ])


def annealed_langevin(
    energy_fn: EnergyFn,
    step_size=0.02**2,
    temperatures=None,
    sigma0=0.1,
    denoise=True,
    *,
    return_info=False,
):
    """MDSM's sampler: annealed ULA (default: :func:`mdsm_temperature_schedule`, η = 0.02²),
    then one Tweedie step ``x − σ₀²∇E(x)``.

    ``sample_fn(params, key, x0, free_mask=None)``; with a ``free_mask`` only free
    coordinates move or get denoised (inpainting, see :func:`inpainter`).
    """
    if temperatures is None:
        temperatures = mdsm_temperature_schedule()
    validation.check_positive("sigma0", sigma0)
    final_denoise = denoiser(energy_fn, sigma0)
    if jnp.ndim(temperatures) != 1 or jnp.shape(temperatures)[0] == 0:
        raise ValueError(
            f"`temperatures` must have shape (n_steps,) with n_steps >= 1 (one temperature per "
            f"step), got shape {jnp.shape(temperatures)}."
        )
    chain = langevin(energy_fn, step_size, int(jnp.shape(temperatures)[0]), temperatures, return_info=True)

    def sample_fn(params, key, x0, free_mask=None):
        x, info = chain(params, key, x0, free_mask)
        if denoise:
            x = _masked(free_mask, final_denoise(params, x), x)
        return (x, info) if return_info else x

    return sample_fn


def inpainter(energy_fn: EnergyFn, step_size=0.02**2, temperatures=None, sigma0=0.1, denoise=True):
    """Inpainting with the annealed chain: ``fn(params, key, x, observed_mask) -> x``.

    ``x`` holds the observations where ``observed_mask`` is 1 and the chain's starting values
    elsewhere; observed coordinates are returned bit-for-bit unchanged.
    """
    sampler = annealed_langevin(energy_fn, step_size, temperatures, sigma0, denoise)

    def inpaint_fn(params, key, x, observed_mask):
        validation.check_batched("x", x)
        validation.check_mask("observed_mask", observed_mask, x)
        return sampler(params, key, x, 1.0 - jnp.asarray(observed_mask, x.dtype))

    return inpaint_fn


def sample_in_chunks(sample_fn, params, key, init_fn, n: int, chunk_size: int, *, progress=False, desc="sample"):
    """Draw ``n`` samples in fixed-size chunks, so 10⁴+ chains never need memory for all of
    them at once and only one chunk shape is ever compiled.

    ``sample_fn(params, key, x0)`` is any sampler here (jit it; with ``return_info=True`` its
    :class:`StepInfo` is used to report non-finite chains); ``init_fn(key, m) -> x0`` gives
    ``m`` starting points. Returns ``(samples as numpy (n, ...), info)`` where ``info`` has
    ``n_nonfinite`` (chains with a non-finite coordinate at the end) and
    ``first_nonfinite_step`` (earliest step any chain went non-finite, or None).
    """
    import numpy as np
    from tqdm.auto import tqdm

    n = validation.check_positive_int("n", n)
    chunk_size = min(validation.check_positive_int("chunk_size", chunk_size), n)
    n_chunks = -(-n // chunk_size)
    out, n_bad, first_bad = [], 0, None
    for i in tqdm(range(n_chunks), desc=desc, disable=not progress, dynamic_ncols=True):
        k_init, k_run = jax.random.split(jax.random.fold_in(key, i))
        result = sample_fn(params, k_run, init_fn(k_init, chunk_size))
        x, info = result if isinstance(result, tuple) else (result, None)
        x = np.asarray(x)[: n - i * chunk_size]  # the last chunk runs full-size and is trimmed
        bad = ~np.all(np.isfinite(x.reshape(x.shape[0], -1)), axis=1)
        n_bad += int(bad.sum())
        if info is not None and bad.any():
            steps = np.flatnonzero(np.asarray(info.n_nonfinite) > 0)
            if steps.size:
                first_bad = int(steps[0]) if first_bad is None else min(first_bad, int(steps[0]))
        out.append(x)
    return np.concatenate(out), {"n_nonfinite": n_bad, "first_nonfinite_step": first_bad}
