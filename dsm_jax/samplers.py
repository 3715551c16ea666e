"""Jit-compiled Langevin samplers: one ``lax.scan`` per chain run, chains on the batch axis.

Unadjusted Langevin (ULA) targeting exp(−E/T):
    x ← x − (η/2)∇E(x) + √(η·T)·z,   z ~ N(0, I)
MALA adds a Metropolis–Hastings test per chain, which removes ULA's O(η) bias.
``step_size`` is η in that update (a peer library's ``step_size`` is often η/2).

Kernels follow the blackjax shape: ``init_chain`` builds a :class:`ChainState`, a kernel
maps ``(params, key, state, step_size, temperature, free_mask) -> (state, StepInfo)``, and
the public factories scan a kernel over a schedule.

One calling convention everywhere: ``sample_fn(params, key, x0, free_mask=None)``.
One mask meaning everywhere: ``free_mask`` is 1 where a coordinate may move, 0 where it
is kept bit-for-bit (inpainting: free = missing pixels). One return structure per
factory: :func:`langevin`, :func:`mala`, :func:`annealed_langevin` return ``x``; their
``*_with_info`` twins return ``(x, StepInfo)`` with per-step fields of shape (n_steps,), and,
when asked, per-chain fields (``per_chain=True``) and a thinned trajectory (``thin=k``).
ULA chains can be clamped to a box (``clip=(lo, hi)``); MALA refuses it (see :func:`mala_with_info`).
Conventions shared with peers (blackjax, torchebm, MDSM) are tabled in docs/samplers.md.
"""
from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dsm_jax import validation
from dsm_jax.core import EnergyFn, denoiser, energy_and_grad, sum_event


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


def gaussian_start(event_shape, mean=0.0, std=1.0):
    """The default starting points of a chain: ``init_fn(key, n_chains) -> x0`` with
    ``x0 ~ N(mean, std²·I)`` of shape ``(n_chains, *event_shape)``, float32 (torchebm's default
    start given a dimension; MDSM starts at ``mean=0.5``). ``mean`` may be an array broadcasting
    against ``event_shape`` (e.g. the data's mean image). Pass it to :func:`sample_in_chunks`, or
    call it for one batch: ``x0 = gaussian_start((2,))(key, 1000)``."""
    shape = validation.check_event_shape(event_shape)
    validation.check_positive("std", std)
    mean_arr = validation.check_real("mean", mean)
    if not np.all(np.isfinite(mean_arr)):
        raise ValueError(f"`mean` must be finite, got {mean!r}.")
    try:
        np.broadcast_shapes(mean_arr.shape, shape)
    except ValueError:
        raise ValueError(f"`mean` of shape {mean_arr.shape} does not broadcast against event_shape {shape}; "
                         f"pass a scalar or an array of shape {shape}.") from None
    mean_arr = jnp.asarray(mean_arr, jnp.float32)

    def init_fn(key, n_chains: int) -> jax.Array:
        validation.check_prng_key("key", key)
        n_chains = validation.check_positive_int("n_chains", n_chains)
        return mean_arr + jnp.float32(std) * jax.random.normal(key, (n_chains, *shape), jnp.float32)

    return init_fn


def sample_in_chunks(sample_fn, params, key, init_fn, n: int, chunk_size: int, *, with_info=False,
                     progress=False, desc="sample"):
    """Draw ``n`` samples in fixed-size chunks, so 10⁴+ chains never need memory for all of
    them at once and only one chunk shape is ever compiled.

    ``sample_fn(params, key, x0)`` is any sampler here (jit it); with ``with_info=True`` it is
    a ``*_with_info`` chain returning ``(x, StepInfo)``, whose ``n_nonfinite`` dates the first
    non-finite step. ``init_fn(key, m) -> x0`` gives ``m`` starting points. Returns
    ``(samples as numpy (n, ...), info)`` where ``info`` has ``n_nonfinite`` (chains with a
    non-finite coordinate at the end) and ``first_nonfinite_step`` (earliest step any chain
    went non-finite, or None).
    """
    from tqdm.auto import tqdm

    n = validation.check_positive_int("n", n)
    chunk_size = min(validation.check_positive_int("chunk_size", chunk_size), n)
    n_chunks = -(-n // chunk_size)
    out, n_bad, first_bad = [], 0, None
    for i in tqdm(range(n_chunks), desc=desc, disable=not progress, dynamic_ncols=True):
        k_init, k_run = jax.random.split(jax.random.fold_in(key, i))
        result = sample_fn(params, k_run, init_fn(k_init, chunk_size))
        if not with_info and isinstance(result, tuple):  # a deprecated return_info=True sampler
            warnings.warn("sample_in_chunks: pass with_info=True for a sampler returning (x, StepInfo).",
                          DeprecationWarning, stacklevel=2)
            with_info = True
        x, info = result if with_info else (result, None)
        x = np.asarray(x)[: n - i * chunk_size]  # the last chunk runs full-size and is trimmed
        bad = ~np.all(np.isfinite(x.reshape(x.shape[0], -1)), axis=1)
        n_bad += int(bad.sum())
        if info is not None and bad.any():
            steps = np.flatnonzero(np.asarray(info.n_nonfinite) > 0)
            if steps.size:
                first_bad = int(steps[0]) if first_bad is None else min(first_bad, int(steps[0]))
        out.append(x)
    return np.concatenate(out), {"n_nonfinite": n_bad, "first_nonfinite_step": first_bad}
