"""Normalising constants and test log-likelihoods of energy models.

Convention (project-wide): ``energy_fn(params, x) -> E`` of shape ``(batch,)`` for ``x`` of
shape ``(batch, *event)``; the model density is ``p(x) = exp(−E(x)) / Z`` with
``Z = ∫ exp(−E(x)) dx``. For a DDE/DSM energy trained at noise level σ, ``p`` models the
σ-smoothed data density ``p̂_σ``, so every likelihood here is the likelihood of ``p̂_σ``.

Three estimators of ``log Z`` (all return ``(log_z, stderr)`` as float32 0-d arrays):

* :func:`is_log_z` — importance sampling from a Gaussian proposal
  ``q = N(mean, diag(scale²))``. Samples are drawn and weighed chunk by chunk inside one
  ``lax.map``/``lax.scan`` with a running log-sum-exp, so memory does not grow with
  ``n_samples`` (10⁶ samples run in the memory of one chunk). ``stderr`` comes from
  ``n_batches`` independent batches (see the function's docstring for the definition).
* :func:`ais_log_z` — annealed importance sampling (Neal 2001) along the geometric path
  ``π_β ∝ q^(1−β)·exp(−E)^β`` with MALA (or ULA) transitions; the whole annealing is one
  ``lax.scan``, chains run in chunks (``lax.map``) of ``chains_per_chunk``.
* :func:`grid_log_z` — midpoint rule on a grid, 1-D and 2-D events only (2-D reuses
  :mod:`dsm_jax.metrics`).

:func:`estimate_log_z` dispatches to them by ``method``; :func:`log_likelihood` and
:func:`evaluate_log_likelihood` turn a ``log Z`` into per-example and mean test
log-likelihoods (nats and bits/dim).

A note on the DDE paper's code: its importance-sampling estimate of ``log Z`` evaluates
the proposal's log density as a *mean* over dimensions where the *sum* is needed. Here the
proposal log density is always the sum (:func:`gaussian_proposal_log_density`); the bug is
re-implemented in :func:`dde_buggy_proposal_log_density` only so the tests can show how
biased it is (it under-estimates ``log Z`` by roughly ``(1 − 1/d)·E_q[−log q]``, i.e.
``≈ (d − 1)/2·(1 + log 2π s²)`` nats for ``q = N(0, s² I)``, and so inflates reported
log-likelihoods by the same amount).

Every function validates its configuration in Python (it is static) and raises a
``ValueError`` that names the argument and the fix. Array arguments (``params``, ``key``,
proposal mean/scale, ``betas``) may be traced: the estimators are jit-able and cache their
compiled code per ``(energy_fn, static configuration)``.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import logsumexp

from dsm_jax import validation
from dsm_jax.core import EnergyFn, energy_and_grad, sum_event

__all__ = [
    "estimate_log_z",
    "is_log_z",
    "ais_log_z",
    "grid_log_z",
    "sigmoid_schedule",
    "gaussian_proposal_log_density",
    "dde_buggy_proposal_log_density",
    "log_likelihood",
    "evaluate_log_likelihood",
]

_METHODS = ("is", "ais", "grid")
_LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------------------
# validation helpers (Python side: configuration is static)


def _check_event_shape(event_shape) -> tuple:
    if isinstance(event_shape, (int, np.integer)) and not isinstance(event_shape, bool):
        event_shape = (int(event_shape),)
    try:
        shape = tuple(event_shape)
    except TypeError:
        raise ValueError(
            f"`event_shape` must be a tuple of positive ints (the shape of one example, "
            f"without the batch axis), got {event_shape!r}."
        ) from None
    if len(shape) == 0 or any(
        isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s <= 0 for s in shape
    ):
        raise ValueError(
            f"`event_shape` must be a non-empty tuple of positive ints (the shape of one "
            f"example, without the batch axis), e.g. (2,) or (28, 28, 1); got {event_shape!r}."
        )
    return tuple(int(s) for s in shape)


def _check_energy_fn(energy_fn, params, event_shape) -> None:
    """Abstractly evaluate ``energy_fn`` on ``(2, *event_shape)``: no compute, clear errors."""
    if not callable(energy_fn):
        raise ValueError(f"`energy_fn` must be a callable (params, x) -> (batch,), got {energy_fn!r}.")
    x = jax.ShapeDtypeStruct((2, *event_shape), jnp.float32)
    try:
        out = jax.eval_shape(energy_fn, params, x)
    except Exception as err:  # noqa: BLE001 - re-raised with the likely fix
        raise ValueError(
            f"energy_fn failed on x of shape (batch, *event_shape) = {(2, *event_shape)}: "
            f"{type(err).__name__}: {err}. Check that `event_shape` matches what energy_fn "
            f"expects for one example."
        ) from err
    if getattr(out, "shape", None) != (2,):
        raise ValueError(
            f"energy_fn must return shape (batch,) = (2,) for x of shape {(2, *event_shape)}, "
            f"got {getattr(out, 'shape', out)}. Check `event_shape`, or reduce over the event "
            f"axes inside energy_fn."
        )


def _check_float_in(name, value, lo, hi) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number in ({lo}, {hi}), got {value!r}.") from None
    if not lo < v < hi:
        raise ValueError(f"`{name}` must be a number in ({lo}, {hi}), got {value!r}.")
    return v


def _check_key(key) -> None:
    shape = jnp.shape(key)
    if not (shape == (2,) or (shape == () and jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key))):
        raise ValueError(
            f"`key` must be a PRNG key (jax.random.PRNGKey(seed) or jax.random.key(seed)), "
            f"got an array of shape {shape}."
        )


def _proposal(event_shape, mean, scale):
    """``(mean, scale)`` broadcast to ``event_shape`` as float32; scale validated > 0."""
    mean = jnp.zeros(event_shape, jnp.float32) if mean is None else jnp.asarray(mean, jnp.float32)
    scale = jnp.ones(event_shape, jnp.float32) if scale is None else jnp.asarray(scale, jnp.float32)
    for name, v in (("proposal_mean", mean), ("proposal_scale", scale)):
        try:
            jnp.broadcast_shapes(v.shape, event_shape)
        except ValueError:
            raise ValueError(
                f"`{name}` must be a scalar or broadcast to event_shape {event_shape}, got shape "
                f"{v.shape}."
            ) from None
        if jnp.broadcast_shapes(v.shape, event_shape) != event_shape:
            raise ValueError(
                f"`{name}` of shape {v.shape} broadcasts beyond event_shape {event_shape}; pass a "
                f"scalar or an array of shape {event_shape}."
            )
    validation.check_positive("proposal_scale", scale)
    return jnp.broadcast_to(mean, event_shape), jnp.broadcast_to(scale, event_shape)


# ----------------------------------------------------------------------------------------
# proposal densities


def gaussian_proposal_log_density(x, mean, scale):
    """``log N(x; mean, diag(scale²))`` per example: the per-dimension terms are SUMMED.

    ``x``: ``(batch, *event)``; ``mean``, ``scale``: broadcast to ``event``. Returns ``(batch,)``.
    """
    z = (x - mean) / scale
    per_dim = -0.5 * jnp.square(z) - jnp.log(jnp.broadcast_to(scale, x.shape)) - 0.5 * _LOG_2PI
    return sum_event(per_dim)


def dde_buggy_proposal_log_density(x, mean, scale):
    """The DDE code's proposal log density: the per-dimension Gaussian log densities are
    AVERAGED over dimensions instead of summed. Wrong for d > 1 — kept only to demonstrate
    (in the tests and notebook 04) the bias it causes. Do not use it to report numbers.

    Its importance "weights" ``exp(−E(x) − mean_i log q_i(x_i))`` overstate ``q(x)`` by a
    factor ``exp((1 − 1/d)·(−log q(x)))``, so ``log Z`` comes out too low by about
    ``(1 − 1/d)·E_q[−log q] = (d − 1)/2·(1 + log 2π s²)`` nats for ``q = N(0, s² I)``
    (Jensen moves the realised bias somewhat; the tests measure it).
    """
    z = (x - mean) / scale
    per_dim = -0.5 * jnp.square(z) - jnp.log(jnp.broadcast_to(scale, x.shape)) - 0.5 * _LOG_2PI
    return jnp.mean(per_dim.reshape(per_dim.shape[0], -1), axis=1)


# ----------------------------------------------------------------------------------------
# importance sampling


def is_log_z(
    energy_fn: EnergyFn,
    params,
    key,
    event_shape,
    *,
    proposal_mean=None,
    proposal_scale=None,
    n_samples: int = 100_000,
    n_batches: int = 10,
    chunk_size: int = 10_000,
    proposal_log_density: Callable | None = None,
    return_info: bool = False,
):
    """Importance-sampling estimate of ``log Z`` with proposal ``q = N(mean, diag(scale²))``.

    ``log Ẑ = log mean_i w_i``, ``w_i = exp(−E(x_i) − log q(x_i))``, ``x_i ~ q`` i.i.d.
    (``proposal_mean`` default 0, ``proposal_scale`` default 1; scalars or arrays of shape
    ``event_shape``). The proposal should be wider than the model in every direction:
    IS degrades exponentially with the dimension (fine for d ≲ 10 with a sensible
    proposal; use :func:`ais_log_z` beyond).

    Fixed memory: the ``n_samples`` draws are split into ``n_batches`` independent batches
    of ``n_samples / n_batches`` (must divide), each processed in chunks of ``chunk_size``
    by a ``lax.scan`` with a running log-sum-exp; only one chunk of samples is ever live.

    ``stderr`` (a delta-method error from independent batches): with ``Ẑ_b`` the mean
    weight of batch ``b`` and ``Ẑ = mean_b Ẑ_b``,
    ``stderr = std_b(Ẑ_b / Ẑ) / sqrt(n_batches)`` (``std`` with ``ddof=1``), i.e. the
    standard error of ``Ẑ`` relative to ``Ẑ``, which is the standard error of ``log Ẑ`` to
    first order. It is itself noisy (``n_batches − 1`` degrees of freedom) and, like every
    IS error bar, too small when the proposal misses mass the samples never visit.
    ``log Ẑ`` is biased low by about ``stderr²/2`` (Jensen).

    Returns ``(log_z, stderr)`` as float32 0-d arrays; with ``return_info=True`` also a dict
    with ``ess`` (Kish effective sample size ``(Σw)²/Σw²``), ``stderr_delta`` (per-sample
    delta method ``sqrt((n Σw²/(Σw)² − 1)/(n − 1))``) and ``batch_log_z`` (``(n_batches,)``).

    ``proposal_log_density(x, mean, scale) -> (batch,)`` replaces the log density used in the
    weights (default :func:`gaussian_proposal_log_density`); it exists only to reproduce the
    DDE bug (:func:`dde_buggy_proposal_log_density`) with otherwise identical machinery.
    """
    event_shape = _check_event_shape(event_shape)
    n_samples = validation.check_positive_int("n_samples", n_samples)
    n_batches = validation.check_positive_int("n_batches", n_batches, 2)
    chunk_size = validation.check_positive_int("chunk_size", chunk_size)
    if n_samples % n_batches:
        raise ValueError(
            f"`n_samples` ({n_samples}) must be a multiple of `n_batches` ({n_batches}); e.g. "
            f"n_samples={n_batches * max(1, round(n_samples / n_batches))}."
        )
    _check_key(key)
    _check_energy_fn(energy_fn, params, event_shape)
    mean, scale = _proposal(event_shape, proposal_mean, proposal_scale)
    log_q = gaussian_proposal_log_density if proposal_log_density is None else proposal_log_density
    per_batch = n_samples // n_batches
    out = _is_core(
        energy_fn, log_q, event_shape, n_batches, per_batch, min(chunk_size, per_batch), params, key, mean, scale
    )
    log_z, stderr, info = out
    return (log_z, stderr, info) if return_info else (log_z, stderr)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _is_core(energy_fn, log_q, event_shape, n_batches, per_batch, chunk, params, key, mean, scale):
    n_chunks = -(-per_batch // chunk)

    def batch_stats(batch_key):
        def body(carry, i):
            lse1, lse2 = carry
            z = jax.random.normal(jax.random.fold_in(batch_key, i), (chunk, *event_shape), jnp.float32)
            x = mean + scale * z
            log_w = -energy_fn(params, x).astype(jnp.float32) - log_q(x, mean, scale)
            log_w = jnp.where(i * chunk + jnp.arange(chunk) < per_batch, log_w, -jnp.inf)  # ragged tail
            return (jnp.logaddexp(lse1, logsumexp(log_w)), jnp.logaddexp(lse2, logsumexp(2.0 * log_w))), None

        init = (jnp.float32(-jnp.inf), jnp.float32(-jnp.inf))
        (lse1, lse2), _ = lax.scan(body, init, jnp.arange(n_chunks))
        return lse1, lse2

    lse1, lse2 = lax.map(batch_stats, jax.random.split(key, n_batches))  # (n_batches,) each
    batch_log_z = lse1 - math.log(per_batch)
    log_z = logsumexp(batch_log_z) - math.log(n_batches)
    rel = jnp.exp(batch_log_z - log_z)  # Ẑ_b / Ẑ, mean 1
    stderr = jnp.std(rel, ddof=1) / math.sqrt(n_batches)
    n = n_batches * per_batch
    tot1, tot2 = logsumexp(lse1), logsumexp(lse2)
    ratio = jnp.exp(tot2 - 2.0 * tot1 + math.log(n))  # n Σw² / (Σw)² >= 1
    info = {
        "ess": jnp.exp(2.0 * tot1 - tot2),
        "stderr_delta": jnp.sqrt(jnp.maximum(ratio - 1.0, 0.0) / max(n - 1, 1)),
        "batch_log_z": batch_log_z,
    }
    return log_z, stderr, info


# ----------------------------------------------------------------------------------------
# annealed importance sampling


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


def ais_log_z(
    energy_fn: EnergyFn,
    params,
    key,
    event_shape,
    *,
    proposal_mean=None,
    proposal_scale=None,
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
    return_info: bool = False,
):
    """Annealed importance sampling estimate of ``log Z``.

    Path: ``π_β(x) ∝ exp(−E_β(x))`` with ``E_β = (1 − β)·E_q + β·E`` and
    ``E_q(x) = ½ Σ ((x − mean)/scale)²`` (the proposal ``q = N(mean, diag(scale²))``,
    ``log Z_q = Σ log scale + (d/2) log 2π``). Each of ``n_chains`` chains starts at
    ``x_0 ~ q`` and for ``k = 1 … K`` adds ``−(β_k − β_{k−1})·(E − E_q)(x)`` to its log
    weight, then takes ``n_mcmc`` transitions that leave ``π_{β_k}`` invariant.
    ``log Ẑ = log mean_i w_i + log Z_q``.

    Schedule: ``betas`` of shape ``(K + 1,)``, non-decreasing from 0 to 1; default
    :func:`sigmoid_schedule` ``(n_temps)`` (``n_temps = K``, ignored when ``betas`` is given).

    Transitions (``kernel``): ``"mala"`` (exact; AIS stays unbiased in Z) or ``"ula"``
    (unadjusted Langevin: cheaper per step but biased for any step size > 0). Both are
    preconditioned by the proposal: ``x' = x − (η/2)·S∇E_β(x) + sqrt(η)·S^½ z`` with
    ``S = diag(scale²)``, so ``step_size`` η is dimensionless (in units of the proposal's
    scale). The transitions are written here rather than reusing
    :func:`dsm_jax.samplers.mala_kernel` because the chains carry ``E`` and ``∇E``
    separately from ``E_q`` (closed form): every temperature then costs exactly ``n_mcmc``
    energy-and-gradient evaluations per chain, and the weight increments need no extra
    evaluation and suffer no cancellation.

    Step sizes: ``step_size`` (default ``d^(−1/3)``) is a scalar or a ``(K,)`` array. With
    ``adapt_step_size=True`` (default) it is only the starting value of a *pilot* run:
    ``pilot_chains`` chains anneal with ``pilot_steps`` transitions per temperature, after
    each of which ``log η ← log η + (mean acceptance probability − target_accept)``; the
    pilot's step size at the end of each temperature becomes the ``(K,)`` schedule of the
    main run. The main run's kernels are therefore fixed before it starts (the pilot uses
    an independent key), which keeps AIS exactly unbiased — no in-run adaptation.
    For ULA the "acceptance" is the MH acceptance probability the step would have had
    (a discretisation-error gauge).

    Memory: chains run in ``n_chains / chains_per_chunk`` chunks (must divide) inside a
    ``lax.map``; the annealing of a chunk is one ``lax.scan`` over temperatures, so memory
    is that of one chunk whatever ``n_chains`` or ``K``.

    ``stderr``: the delta method on the i.i.d. chain weights,
    ``stderr = std(w)/(sqrt(n_chains)·mean(w))`` (``ddof=1``) — the standard error of
    ``Ẑ/Z`` and, to first order, of ``log Ẑ``. Honest when the effective sample size
    (``info["ess"]``) is large; with few effective chains it is itself unreliable. ``log Ẑ``
    is biased low by about ``stderr²/2`` (Jensen; Z itself is unbiased with MALA).

    Returns ``(log_z, stderr)`` as float32 0-d arrays; with ``return_info=True`` also a dict
    with ``ess``, ``log_weights`` ``(n_chains,)``, ``acceptance`` ``(K,)`` (mean acceptance
    probability per temperature, main run), ``step_sizes`` ``(K,)``, ``n_nonfinite``
    (chains whose log weight is not finite) and ``betas``.
    """
    event_shape = _check_event_shape(event_shape)
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
    if step_size is None:
        step_size = d ** (-1.0 / 3.0)
    validation.check_positive("step_size", step_size)
    step_size = jnp.asarray(step_size, jnp.float32)
    if step_size.ndim != 0 and step_size.shape != (n_temps,):
        raise ValueError(
            f"`step_size` must be a scalar or have shape (n_temps,) = ({n_temps},) (one per "
            f"annealing step), got shape {step_size.shape}."
        )
    if not isinstance(adapt_step_size, bool):
        raise ValueError(f"`adapt_step_size` must be True or False, got {adapt_step_size!r}.")
    target_accept = _check_float_in("target_accept", target_accept, 0.0, 1.0)
    pilot_chains = validation.check_positive_int("pilot_chains", pilot_chains)
    pilot_steps = validation.check_positive_int("pilot_steps", pilot_steps)
    _check_key(key)
    _check_energy_fn(energy_fn, params, event_shape)
    mean, scale = _proposal(event_shape, proposal_mean, proposal_scale)
    log_z, stderr, info = _ais_core(
        energy_fn,
        event_shape,
        n_chains // chains_per_chunk,
        chains_per_chunk,
        n_mcmc,
        kernel,
        adapt_step_size,
        target_accept,
        pilot_chains,
        pilot_steps,
        params,
        key,
        mean,
        scale,
        betas,
        jnp.broadcast_to(step_size, (n_temps,)),
    )
    info["betas"] = betas
    return (log_z, stderr, info) if return_info else (log_z, stderr)


def _make_transition(energy_fn, params, mean, scale, kernel):
    """A preconditioned MALA/ULA step on π_β ∝ exp(−(1−β)E_q − βE).

    Chain state: ``(x, e, g)`` with ``e = E(x)``, ``g = ∇E(x)`` of the *target* energy."""
    var = jnp.square(scale)

    def annealed(beta, x, e, g):
        r = (x - mean) / scale
        u = (1.0 - beta) * 0.5 * sum_event(jnp.square(r)) + beta * e
        return u, (1.0 - beta) * r / scale + beta * g

    def step(state, beta, eta, key):
        x, e, g = state
        key_noise, key_accept = jax.random.split(key)
        u, gu = annealed(beta, x, e, g)
        z = jax.random.normal(key_noise, x.shape, x.dtype)
        y = x - 0.5 * eta * var * gu + jnp.sqrt(eta) * scale * z
        e_y, g_y = energy_and_grad(energy_fn, params, y)
        e_y = e_y.astype(jnp.float32)
        u_y, gu_y = annealed(beta, y, e_y, g_y)
        back = (x - y + 0.5 * eta * var * gu_y) / (jnp.sqrt(eta) * scale)
        log_ratio = -(u_y - u) - 0.5 * sum_event(jnp.square(back)) + 0.5 * sum_event(jnp.square(z))
        log_ratio = jnp.nan_to_num(log_ratio, nan=-jnp.inf)  # a NaN proposal is rejected
        accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
        if kernel == "mala":
            accept = jnp.log(jax.random.uniform(key_accept, log_ratio.shape)) < log_ratio
        else:
            accept = jnp.ones(log_ratio.shape, bool)

        def pick(new, old):
            return jnp.where(accept.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

        return (pick(y, x), pick(e_y, e), pick(g_y, g)), jnp.mean(accept_prob)

    return step


def _loop(body, carry, keys):
    """``lax.scan`` over ``keys``; a single step is applied directly (no scan)."""
    if keys.shape[0] == 1:
        carry, out = body(carry, keys[0])
        return carry, jax.tree.map(lambda a: jnp.asarray(a)[None], out)
    return lax.scan(body, carry, keys)


@functools.partial(jax.jit, static_argnums=tuple(range(10)))
def _ais_core(
    energy_fn, event_shape, n_chunks, chunk, n_mcmc, kernel, adapt, target_accept, pilot_chains, pilot_steps,
    params, key, mean, scale, betas, step_sizes,
):
    step = _make_transition(energy_fn, params, mean, scale, kernel)
    n_temps = betas.shape[0] - 1

    def init(key_init, n):
        x = mean + scale * jax.random.normal(key_init, (n, *event_shape), jnp.float32)
        e, g = energy_and_grad(energy_fn, params, x)
        return x, e.astype(jnp.float32), g

    def e_minus_eq(state):
        x, e, _ = state
        return e - 0.5 * sum_event(jnp.square((x - mean) / scale))

    key_pilot, key_main = jax.random.split(key)
    if adapt:
        # pilot run: tune log η per temperature on independent chains, then freeze
        def pilot_temp(carry, inputs):
            state, log_eta = carry
            beta, k = inputs

            def one(c, kk):
                s, le = c
                s, acc = step(s, beta, jnp.exp(le), kk)
                return (s, le + (acc - target_accept)), None

            (state, log_eta), _ = _loop(one, (state, log_eta), jax.random.split(k, pilot_steps))
            return (state, log_eta), jnp.exp(log_eta)

        k_init, k_run = jax.random.split(key_pilot)
        _, step_sizes = lax.scan(
            pilot_temp,
            (init(k_init, pilot_chains), jnp.log(step_sizes[0])),
            (betas[1:], jax.random.split(k_run, n_temps)),
        )

    def run_chunk(chunk_key):
        k_init, k_run = jax.random.split(chunk_key)

        def temp(carry, inputs):
            state, log_w = carry
            beta_prev, beta, eta, k = inputs
            log_w = log_w - (beta - beta_prev) * e_minus_eq(state)

            def one(s, kk):
                return step(s, beta, eta, kk)

            state, acc = _loop(one, state, jax.random.split(k, n_mcmc))
            return (state, log_w), jnp.mean(acc)

        init_state = init(k_init, chunk)
        (_, log_w), acc = lax.scan(
            temp,
            (init_state, jnp.zeros((chunk,), jnp.float32)),
            (betas[:-1], betas[1:], step_sizes, jax.random.split(k_run, n_temps)),
        )
        return log_w, acc

    if n_chunks == 1:
        log_w, acc = jax.tree.map(lambda a: a[None], run_chunk(jax.random.split(key_main, 1)[0]))
    else:
        log_w, acc = lax.map(run_chunk, jax.random.split(key_main, n_chunks))
    log_w = log_w.reshape(-1)
    n = log_w.shape[0]
    d = int(np.prod(event_shape))
    log_z_q = jnp.sum(jnp.log(scale)) + 0.5 * d * _LOG_2PI
    lse = logsumexp(log_w)
    log_z = lse - math.log(n) + log_z_q
    rel = jnp.exp(log_w - (lse - math.log(n)))  # w_i / mean(w)
    stderr = jnp.std(rel, ddof=1) / math.sqrt(n)
    info = {
        "ess": jnp.exp(2.0 * lse - logsumexp(2.0 * log_w)),
        "log_weights": log_w,
        "acceptance": jnp.mean(acc, axis=0),
        "step_sizes": step_sizes,
        "n_nonfinite": jnp.sum(~jnp.isfinite(log_w)),
    }
    return log_z, stderr, info


# ----------------------------------------------------------------------------------------
# grid quadrature (1-D and 2-D)


def grid_log_z(
    energy_fn: EnergyFn,
    params,
    event_shape,
    *,
    bounds,
    n: int | None = None,
    chunk_size: int = 16384,
    return_info: bool = False,
):
    """Midpoint-rule ``log Z`` on ``n`` (1-D) or ``n × n`` (2-D, square ``bounds²``) cells.

    Only for events with 1 or 2 numbers in total (e.g. ``(1,)``, ``(2,)``, ``(1, 2)``).
    ``bounds = (lo, hi)`` must hold essentially all the mass: mass outside is simply missing.
    ``n`` defaults to 4096 (1-D) or 256 (2-D). 2-D uses
    :func:`dsm_jax.metrics.grid_log_normalizer`.

    ``stderr`` is a quadrature-error estimate, not a Monte Carlo error:
    ``|log Z_n − log Z_{n/2}|``, the change from halving the resolution (conservative: the
    midpoint rule's error falls at least 4× per halving of the cell width for smooth
    energies). It does not see mass outside ``bounds``. Returns float32 0-d arrays (with
    ``return_info=True`` also ``{"log_z_coarse": log Z_{n/2}}``).
    """
    from dsm_jax import metrics  # local: metrics imports the toys

    event_shape = _check_event_shape(event_shape)
    d = int(np.prod(event_shape))
    if d not in (1, 2):
        raise ValueError(
            f"method 'grid' only integrates 1-D or 2-D events, got event_shape {event_shape} "
            f"(d = {d}); use method='ais' (or 'is') for d > 2."
        )
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"`bounds` must be a pair (lo, hi) of numbers with lo < hi, got {bounds!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"`bounds` must be a pair (lo, hi) of finite numbers with lo < hi, got {bounds!r}.")
    n = (4096 if d == 1 else 256) if n is None else validation.check_positive_int("n", n, 4)
    chunk_size = validation.check_positive_int("chunk_size", chunk_size)
    _check_energy_fn(energy_fn, params, event_shape)

    def reshaped(p, x):
        return energy_fn(p, x.reshape((x.shape[0], *event_shape)))

    def at(m):
        if d == 2:
            return metrics.grid_log_normalizer(reshaped, params, metrics.make_grid((lo, hi), m), chunk_size)
        h = (hi - lo) / m
        pts = jnp.asarray(lo + (np.arange(m) + 0.5) * h, jnp.float32)[:, None]
        e = metrics._chunked(lambda c: reshaped(params, c), pts, chunk_size)
        return logsumexp(-e.astype(jnp.float32)) + math.log(h)

    log_z, coarse = at(n), at(n // 2)
    stderr = jnp.abs(log_z - coarse)
    return (log_z, stderr, {"log_z_coarse": coarse}) if return_info else (log_z, stderr)


# ----------------------------------------------------------------------------------------
# dispatcher

_COMMON = ("proposal_mean", "proposal_scale", "data", "scale_inflation", "min_scale", "return_info")
_OPTIONS = {
    "is": ("n_samples", "n_batches", "chunk_size"),
    "ais": (
        "n_temps", "betas", "n_chains", "chains_per_chunk", "n_mcmc", "kernel", "step_size",
        "adapt_step_size", "target_accept", "pilot_chains", "pilot_steps",
    ),
    "grid": ("bounds", "n", "chunk_size"),
}


def estimate_log_z(energy_fn: EnergyFn, params, key, event_shape, method: str = "ais", **options):
    """``log Z = log ∫ exp(−E(x)) dx`` and its standard error: ``(log_z, stderr)``.

    Both are **float32 0-d jax arrays** (call ``float()`` for logging), so this function can
    be called under ``jax.jit`` with traced ``params``/``key`` (options must be static).

    ``method``:

    * ``"ais"`` (default) — :func:`ais_log_z`; options ``n_temps=256``, ``betas=None``,
      ``n_chains=1024``, ``chains_per_chunk=1024``, ``n_mcmc=1``, ``kernel="mala"``,
      ``step_size=None``, ``adapt_step_size=True``, ``target_accept=0.6``,
      ``pilot_chains=128``, ``pilot_steps=2``. Use it for d > ~10.
    * ``"is"`` — :func:`is_log_z`; options ``n_samples=100_000``, ``n_batches=10``,
      ``chunk_size=10_000``. Good for low d with a proposal wider than the model.
    * ``"grid"`` — :func:`grid_log_z`, 1-D and 2-D events; options ``bounds`` (default
      ``(min(mean − 8·scale), max(mean + 8·scale))`` of the proposal), ``n``,
      ``chunk_size``. Its stderr is a quadrature-error estimate.

    Proposal (IS and AIS; the grid's default bounds): ``q = N(proposal_mean,
    diag(proposal_scale²))``, default ``N(0, I)``. Or pass ``data=`` (shape
    ``(n, *event_shape)``, e.g. training data) to use the data's per-dimension mean and
    ``max(std, min_scale) · scale_inflation`` (defaults ``min_scale=1e-3``,
    ``scale_inflation=1.5``) — explicit ``proposal_mean``/``proposal_scale`` win over ``data``.

    ``return_info=True`` appends the method's diagnostics dict (ESS, acceptance, …).
    ``key`` is ignored by ``"grid"``.
    """
    if method not in _METHODS:
        raise ValueError(f"Unknown `method` {method!r}; choose one of {list(_METHODS)}.")
    allowed = _COMMON + _OPTIONS[method]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for method={method!r}; valid options: {sorted(allowed)}."
        )
    event_shape = _check_event_shape(event_shape)
    opts = dict(options)
    data = opts.pop("data", None)
    inflation = opts.pop("scale_inflation", 1.5)
    min_scale = opts.pop("min_scale", 1e-3)
    validation.check_positive("scale_inflation", inflation)
    validation.check_positive("min_scale", min_scale)
    mean, scale = opts.pop("proposal_mean", None), opts.pop("proposal_scale", None)
    if data is not None:
        data = jnp.asarray(data, jnp.float32)
        if data.ndim < 2 or data.shape[1:] != event_shape or data.shape[0] < 2:
            raise ValueError(
                f"`data` must have shape (n, *event_shape) = (n, {', '.join(map(str, event_shape))}) "
                f"with n >= 2, got {data.shape}."
            )
        if mean is None:
            mean = jnp.mean(data, axis=0)
        if scale is None:
            scale = jnp.maximum(jnp.std(data, axis=0), min_scale) * inflation
    if method == "grid":
        if "bounds" not in opts:
            m, s = _proposal(event_shape, mean, scale)
            if not (validation.is_concrete(m) and validation.is_concrete(s)):
                raise ValueError("Pass `bounds=(lo, hi)` for method='grid' under jit (traced proposal).")
            opts["bounds"] = (float(jnp.min(m - 8.0 * s)), float(jnp.max(m + 8.0 * s)))
        return grid_log_z(energy_fn, params, event_shape, **opts)
    fn = is_log_z if method == "is" else ais_log_z
    return fn(energy_fn, params, key, event_shape, proposal_mean=mean, proposal_scale=scale, **opts)


# ----------------------------------------------------------------------------------------
# likelihoods


def log_likelihood(energy_fn: EnergyFn, params, x, log_z):
    """``log p(x) = −E(x) − log Z`` per example: shape ``(batch,)``. Pure, jit-able."""
    validation.check_batched("x", x)
    e = energy_fn(params, x)
    validation.check_energy_output(e, x)
    return -e - log_z


def evaluate_log_likelihood(
    energy_fn: EnergyFn, params, x_test, log_z, log_z_stderr=0.0, *, chunk_size: int = 4096
) -> dict:
    """Mean test log-likelihood (nats) with its standard error, and bits/dim; plain floats.

    ``ll = mean_i(−E(x_i)) − log Z``. Its error combines the sampling error of the test
    mean and the error of ``log Z`` (independent): ``sqrt(var(−E)/n + log_z_stderr²)``.
    ``bits_per_dim = −ll / (d·ln 2)`` with ``d`` the number of numbers per example; no
    dequantisation offset is applied (for 8-bit images rescaled to [0, 1] the usual
    ``+ log 256`` per dimension is NOT added: this is a continuous density on the data as
    given). For a DSM/DDE energy trained at noise σ the density is the σ-smoothed model
    ``p̂_σ``: this is the test likelihood of the smoothed density, not of the clean data.

    Keys: ``log_likelihood``, ``log_likelihood_stderr``, ``log_likelihood_stderr_data``
    (test-sample part only), ``bits_per_dim``, ``bits_per_dim_stderr``, ``log_z``,
    ``log_z_stderr``, ``n``, ``dim``. The energy is evaluated in chunks of ``chunk_size``.
    """
    validation.check_batched("x_test", x_test)
    n = int(jnp.shape(x_test)[0])
    if n < 2:
        raise ValueError(f"`x_test` needs at least 2 examples for a standard error, got {n}.")
    chunk_size = validation.check_positive_int("chunk_size", chunk_size)
    validation.check_nonnegative("log_z_stderr", log_z_stderr)
    log_z, log_z_stderr = float(log_z), float(log_z_stderr)
    if not math.isfinite(log_z):
        raise ValueError(f"`log_z` must be finite, got {log_z}; check the log Z estimate.")
    d = int(np.prod(jnp.shape(x_test)[1:]))
    efn = jax.jit(energy_fn)
    parts = []
    for start in range(0, n, chunk_size):
        xc = jnp.asarray(x_test[start:start + chunk_size])
        e = efn(params, xc)
        validation.check_energy_output(e, xc)
        parts.append(np.asarray(e, np.float64))
    neg_e = -np.concatenate(parts)
    ll = float(np.mean(neg_e)) - log_z
    se_data = float(np.std(neg_e, ddof=1)) / math.sqrt(n)
    se = math.sqrt(se_data**2 + log_z_stderr**2)
    return {
        "log_likelihood": ll,
        "log_likelihood_stderr": se,
        "log_likelihood_stderr_data": se_data,
        "bits_per_dim": -ll / (d * math.log(2.0)),
        "bits_per_dim_stderr": se / (d * math.log(2.0)),
        "log_z": log_z,
        "log_z_stderr": log_z_stderr,
        "n": n,
        "dim": d,
    }
