"""Annealed importance sampling (Neal 2001) of ``log Z``, with the samplers' preconditioned MALA.

Path ``π_β ∝ exp(−E_β)``, ``E_β = (1 − β)·E_q + β·E``, from the proposal
``q = N(mean, diag(scale²))`` (``E_q(x) = ½ Σ ((x − mean)/scale)²``,
``log Z_q = Σ log scale + (d/2) log 2π``) to the model. The whole annealing is one
``lax.scan``; chains run in chunks (``lax.map``).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import logsumexp

from dsm_jax import samplers, validation
from dsm_jax.core import EnergyFn, sum_event
from dsm_jax.likelihood._returns import build_and_run, legacy_return_info
from dsm_jax.likelihood.proposals import LOG_2PI, broadcast_proposal


def sigmoid_schedule(n_temps: int, delta: float = 4.0) -> jax.Array:
    """Annealing schedule ``β_0 = 0 < β_1 < … < β_K = 1`` of shape ``(n_temps + 1,)``.

    Sigmoid schedule (Grosse, Maddison & Salakhutdinov 2013): ``β̃_k = sigmoid(δ(2k/K − 1))``
    rescaled to start at 0 and end at 1 — small steps near both ends, where the annealed
    distributions change fastest. ``delta → 0`` gives a linear schedule.
    """
    n_temps = validation.check_positive_int("n_temps", n_temps)
    validation.check_positive("delta", delta)
    t = np.linspace(-1.0, 1.0, n_temps + 1) * float(delta)
    s = 1.0 / (1.0 + np.exp(-t))
    betas = (s - s[0]) / (s[-1] - s[0])
    betas[0], betas[-1] = 0.0, 1.0
    return jnp.asarray(betas, jnp.float32)


def _check_betas(betas):
    if not validation.is_concrete(betas):
        return jnp.asarray(betas, jnp.float32)  # traced: the caller vouches for it
    b = np.asarray(betas, np.float64)
    if b.ndim != 1 or b.shape[0] < 2:
        raise ValueError(
            f"`betas` must have shape (n_temps + 1,) with n_temps >= 1 (from 0 to 1), got shape {b.shape}."
        )
    if not np.all(np.isfinite(b)) or b[0] != 0.0 or b[-1] != 1.0 or np.any(np.diff(b) < 0):
        raise ValueError(
            "`betas` must be non-decreasing from exactly 0 to exactly 1 (e.g. "
            "dsm_jax.likelihood.sigmoid_schedule(n_temps) or np.linspace(0, 1, n_temps + 1)), "
            f"got {b[:3]}…{b[-3:]}."
        )
    return jnp.asarray(b, jnp.float32)


def _loop(body, carry, keys):
    """``lax.scan`` over ``keys``; a single step is applied directly (no scan)."""
    if keys.shape[0] == 1:
        carry, out = body(carry, keys[0])
        return carry, jax.tree.map(lambda a: jnp.asarray(a)[None], out)
    return lax.scan(body, carry, keys)


def _annealed_transition(energy_fn, mean, scale, kernel):
    """``step(params, state, beta, eta, key) -> (state, acceptance probability)`` leaving π_β
    invariant. The chain caches the *model's* E and ∇E (``ChainState``); E_q is closed form, so a
    step costs one energy-and-gradient evaluation and the weight increments need none."""

    def potential(p, state):
        _, beta = p
        r = (state.x - mean) / scale
        u = (1.0 - beta) * 0.5 * sum_event(jnp.square(r)) + beta * state.energy
        return u, (1.0 - beta) * r / scale + beta * state.grad

    def model_energy(p, x):
        return energy_fn(p[0], x).astype(jnp.float32)

    one = samplers.preconditioned_mala_kernel(model_energy, scale, adjusted=kernel == "mala", potential=potential)

    def step(params, state, beta, eta, key):
        state, info = one((params, beta), key, state, eta, 1.0)
        return state, info.acceptance_prob

    return step, model_energy


def make_ais_log_z(
    energy_fn: EnergyFn,
    event_shape,
    *,
    n_temps: int = 256,
    betas=None,
    n_chains: int = 1024,
    chains_per_chunk: int = 1024,
    n_mcmc: int = 1,
    kernel: str = "mala",
    step_size=None,
    adapt_step_size: bool = True,
    target_accept: float = 0.6,
    pilot_chains: int = 128,
    pilot_steps: int = 2,
):
    """Jitted ``estimate(params, key, proposal_mean=None, proposal_scale=None) -> (log_z, stderr, info)``.

    Each of ``n_chains`` chains starts at ``x_0 ~ q`` and for ``k = 1 … K`` adds
    ``−(β_k − β_{k−1})·(E − E_q)(x)`` to its log weight, then takes ``n_mcmc`` transitions that
    leave ``π_{β_k}`` invariant. ``log Ẑ = log mean_i w_i + log Z_q``.

    Schedule: ``betas`` ``(K + 1,)``, non-decreasing from 0 to 1; default
    :func:`sigmoid_schedule` ``(n_temps)`` (``n_temps = K``, ignored when ``betas`` is given).

    Transitions: :func:`dsm_jax.samplers.preconditioned_mala_kernel` with ``scale`` the
    proposal's, i.e. ``x' = x − (η/2)·S∇E_β(x) + sqrt(η)·S^½ z``, ``S = diag(scale²)``, so
    ``step_size`` η is dimensionless. ``kernel="mala"`` (exact; AIS stays unbiased in Z) or
    ``"ula"`` (unadjusted: cheaper, biased for any η > 0).

    Step sizes: ``step_size`` (default ``d^(−1/3)``) is a scalar or a ``(K,)`` array. With
    ``adapt_step_size=True`` it only starts a *pilot* run: ``pilot_chains`` chains anneal with
    ``pilot_steps`` transitions per temperature, after each of which ``log η ← log η + (mean
    acceptance probability − target_accept)``; the pilot's η at the end of each temperature is
    the main run's ``(K,)`` schedule. The main run's kernels are fixed before it starts (the pilot
    uses an independent key): AIS stays exactly unbiased. For ULA the "acceptance" is the MH
    acceptance probability the step would have had (a discretisation-error gauge).

    Memory: ``n_chains / chains_per_chunk`` chunks (must divide) in a ``lax.map``, each annealed
    by one ``lax.scan``: the memory of one chunk whatever ``n_chains`` or ``K``.

    ``stderr = std(w)/(sqrt(n_chains)·mean(w))`` (``ddof=1``), the delta-method error of ``log Ẑ``;
    honest when ``info["ess"]`` is large. ``log Ẑ`` is biased low by about ``stderr²/2``.
    ``info``: ``ess``, ``log_weights`` ``(n_chains,)``, ``acceptance`` ``(K,)`` (mean acceptance
    probability per temperature, main run), ``step_sizes`` ``(K,)``, ``n_nonfinite`` (chains
    whose log weight is not finite), ``betas``. A traced ``proposal_scale`` must be > 0.
    """
    event_shape = validation.check_event_shape(event_shape)
    if kernel not in ("mala", "ula"):
        raise ValueError(f"`kernel` must be 'mala' or 'ula', got {kernel!r}.")
    betas = sigmoid_schedule(n_temps) if betas is None else _check_betas(betas)
    n_temps = betas.shape[0] - 1
    n_chains = validation.check_positive_int("n_chains", n_chains)
    chains_per_chunk = min(validation.check_positive_int("chains_per_chunk", chains_per_chunk), n_chains)
    if n_chains % chains_per_chunk:
        raise ValueError(
            f"`n_chains` ({n_chains}) must be a multiple of `chains_per_chunk` ({chains_per_chunk}); "
            f"e.g. n_chains={chains_per_chunk * max(1, round(n_chains / chains_per_chunk))}."
        )
    if n_chains < 2:
        raise ValueError(f"`n_chains` must be >= 2 for a standard error, got {n_chains}.")
    n_mcmc = validation.check_positive_int("n_mcmc", n_mcmc)
    d = int(np.prod(event_shape))
    step_size = d ** (-1.0 / 3.0) if step_size is None else step_size
    validation.check_positive("step_size", step_size)
    step_size = jnp.asarray(step_size, jnp.float32)
    if step_size.ndim != 0 and step_size.shape != (n_temps,):
        raise ValueError(
            f"`step_size` must be a scalar or have shape (n_temps,) = ({n_temps},) (one per "
            f"annealing step), got shape {step_size.shape}."
        )
    if not isinstance(adapt_step_size, bool):
        raise ValueError(f"`adapt_step_size` must be True or False, got {adapt_step_size!r}.")
    target_accept = validation.check_float_in("target_accept", target_accept, 0.0, 1.0)
    pilot_chains = validation.check_positive_int("pilot_chains", pilot_chains)
    pilot_steps = validation.check_positive_int("pilot_steps", pilot_steps)
    if not callable(energy_fn):
        raise ValueError(f"`energy_fn` must be a callable (params, x) -> (batch,), got {energy_fn!r}.")
    n_chunks = n_chains // chains_per_chunk
    step_sizes = jnp.broadcast_to(step_size, (n_temps,))

    def estimate(params, key, proposal_mean=None, proposal_scale=None):
        validation.check_prng_key("key", key)
        validation.check_energy_fn(energy_fn, params, event_shape)
        mean, scale = broadcast_proposal(event_shape, proposal_mean, proposal_scale)
        step, model_energy = _annealed_transition(energy_fn, mean, scale, kernel)

        def init(key_init, n):
            x = mean + scale * jax.random.normal(key_init, (n, *event_shape), jnp.float32)
            return samplers.init_chain(model_energy, (params,), x)

        def e_minus_eq(state):
            return state.energy - 0.5 * sum_event(jnp.square((state.x - mean) / scale))

        key_pilot, key_main = jax.random.split(key)
        etas = step_sizes
        if adapt_step_size:
            # pilot run: tune log η per temperature on independent chains, then freeze
            def pilot_temp(carry, inputs):
                state, log_eta = carry
                beta, k = inputs

                def one(c, kk):
                    s, le = c
                    s, acc = step(params, s, beta, jnp.exp(le), kk)
                    return (s, le + (acc - target_accept)), None

                (state, log_eta), _ = _loop(one, (state, log_eta), jax.random.split(k, pilot_steps))
                return (state, log_eta), jnp.exp(log_eta)

            k_init, k_run = jax.random.split(key_pilot)
            _, etas = lax.scan(pilot_temp, (init(k_init, pilot_chains), jnp.log(step_sizes[0])),
                               (betas[1:], jax.random.split(k_run, n_temps)))

        def run_chunk(chunk_key):
            k_init, k_run = jax.random.split(chunk_key)

            def temp(carry, inputs):
                state, log_w = carry
                beta_prev, beta, eta, k = inputs
                log_w = log_w - (beta - beta_prev) * e_minus_eq(state)
                state, acc = _loop(lambda s, kk: step(params, s, beta, eta, kk), state, jax.random.split(k, n_mcmc))
                return (state, log_w), jnp.mean(acc)

            (_, log_w), acc = lax.scan(
                temp, (init(k_init, chains_per_chunk), jnp.zeros((chains_per_chunk,), jnp.float32)),
                (betas[:-1], betas[1:], etas, jax.random.split(k_run, n_temps)))
            return log_w, acc

        if n_chunks == 1:
            log_w, acc = jax.tree.map(lambda a: a[None], run_chunk(jax.random.split(key_main, 1)[0]))
        else:
            log_w, acc = lax.map(run_chunk, jax.random.split(key_main, n_chunks))
        log_w = log_w.reshape(-1)
        n = log_w.shape[0]
        log_z_q = jnp.sum(jnp.log(scale)) + 0.5 * d * LOG_2PI
        lse = logsumexp(log_w)
        log_z = lse - math.log(n) + log_z_q
        rel = jnp.exp(log_w - (lse - math.log(n)))  # w_i / mean(w)
        stderr = jnp.std(rel, ddof=1) / math.sqrt(n)
        info = {
            "ess": jnp.exp(2.0 * lse - logsumexp(2.0 * log_w)),
            "log_weights": log_w,
            "acceptance": jnp.mean(acc, axis=0),
            "step_sizes": etas,
            "n_nonfinite": jnp.sum(~jnp.isfinite(log_w)),
            "betas": betas,
        }
        return log_z, stderr, info

    return jax.jit(estimate)


def ais_log_z_with_info(energy_fn: EnergyFn, params, key, event_shape, *, proposal_mean=None, proposal_scale=None,
                        **config):
    """``(log_z, stderr, info)`` by AIS; ``config`` as in :func:`make_ais_log_z`."""
    return build_and_run(make_ais_log_z, energy_fn, params, key, event_shape, proposal_mean, proposal_scale, config)


def ais_log_z(energy_fn: EnergyFn, params, key, event_shape, *, proposal_mean=None, proposal_scale=None,
              return_info=None, **config):
    """``(log_z, stderr)`` (float32 0-d arrays) by annealed importance sampling from
    ``N(proposal_mean, diag(proposal_scale²))``; see :func:`make_ais_log_z` for the estimator and
    ``config``. ``return_info=`` is deprecated: use :func:`ais_log_z_with_info`."""
    out = build_and_run(make_ais_log_z, energy_fn, params, key, event_shape, proposal_mean, proposal_scale, config)
    return legacy_return_info("ais_log_z", out, return_info)
