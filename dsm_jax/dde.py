"""DDE generator training (Bigdeli et al.) as one pure, jit-able step.

Each step, following the paper's code:
1. E_p takes a DSM step on a real batch (optional: it may be pre-trained and frozen);
2. fresh latents z give generator samples G(z); E_q (never re-initialised) takes a DSM step
   on them, so it tracks the current q̂;
3. every ``gen_every`` steps the generator takes a step on the KL surrogate
   E_p(G(z)+ε) − E_q(G(z)+ε) with both energies frozen (``lax.cond``, no Python branch).

The DDE code's recipe is this step alone, in lockstep from random weights: E_p and E_q get
the same optimiser, one DSM step each per iteration, no warm-up, σ fixed. Trained alike,
their errors cancel in the generator's gradient; an E_p trained more than E_q (pre-trained,
or E_q under-trained) pulls G onto p̂'s densest regions. Pass the same parameters for both
to :func:`init_dde_state` to start E_q as a copy of E_p. The warm-ups below
(:func:`make_p_warmup_step`, :func:`make_q_warmup_step`) and σ annealing
(:func:`geometric_sigma_schedule`) are options that deviate from that recipe.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from dsm_jax import parallel, validation
from dsm_jax.core import dsm_loss, kl_generator_loss
from dsm_jax.train_step import apply_loss, with_data


def _split_latents(latent_fn, mesh):
    # With a mesh, each device draws and pushes through G only its slice of the latents.
    return lambda key: parallel.constrain_batch(latent_fn(key), mesh, name="latent_fn(key) batch")


def _check_nets(energy_fn, *generator_and_latent_fn) -> None:
    """The functions a DDE step is built from (E; or E, G and the latent sampler)."""
    validation.check_callable("energy_fn", energy_fn, "(params, x) -> (batch,)")
    for name, fn, signature in zip(("generator_fn", "latent_fn"), generator_and_latent_fn,
                                   ("(gen_params, z) -> x", "(key) -> z")):
        validation.check_callable(name, fn, signature)


class NetState(NamedTuple):
    params: object
    opt_state: object


class DDEState(NamedTuple):
    step: jax.Array      # int32: energy steps taken
    gen: NetState
    p: NetState          # E_p, density of the (σ-smoothed) data
    q: NetState          # E_q, density of the (σ-smoothed) generator samples
    gen_updates: jax.Array  # int32: generator steps taken
    key: jax.Array


def init_dde_state(gen_params, p_params, q_params, gen_optimizer, energy_optimizer, key) -> DDEState:
    """E_p and E_q each get their own state of the one ``energy_optimizer`` (lockstep: trained
    alike); ``q_params`` may be ``p_params`` itself (E_q starts as a copy of E_p)."""
    validation.check_optimizer("gen_optimizer", gen_optimizer)
    validation.check_optimizer("energy_optimizer", energy_optimizer)
    return DDEState(
        step=jnp.zeros((), jnp.int32),
        gen=NetState(gen_params, gen_optimizer.init(gen_params)),
        p=NetState(p_params, energy_optimizer.init(p_params)),
        q=NetState(q_params, energy_optimizer.init(q_params)),
        gen_updates=jnp.zeros((), jnp.int32),
        key=key,
    )


def make_dde_step(
    energy_fn,
    generator_fn,
    sigma,
    latent_fn: Callable,
    gen_optimizer: optax.GradientTransformation,
    energy_optimizer: optax.GradientTransformation,
    *,
    gen_every: int = 10,
    train_p: bool = True,
    data_fn: Callable | None = None,
    mesh=None,
):
    """The DDE loop's step.

    ``latent_fn(key) -> z`` draws a batch of latents; ``data_fn(key) -> x`` draws a real
    batch (then the step is ``step(state)``), else the step is ``step(state, x_real)``.
    ``sigma`` is a number or a schedule ``sigma(step) -> σ`` (σ annealing: a large σ early
    lets E_p see where the generator's first samples lie; all three losses use the same σ).
    Metrics: ``p_loss``, ``q_loss``, ``gen_loss`` (the surrogate on this step's latents,
    whether or not G stepped) and ``gen_stepped`` (1 on steps where G was updated).

    ``mesh``: None (default) builds the one-device step; a ``Mesh`` (or ``"auto"``, resolved
    here on the host) builds a data-parallel one: the real batch and the latents are split
    over the mesh's ``"data"`` axis, each device drawing and processing its slice (pass the
    same mesh to :func:`dsm_jax.fit`).
    """
    _check_nets(energy_fn, generator_fn, latent_fn)
    validation.check_optimizer("gen_optimizer", gen_optimizer)
    validation.check_optimizer("energy_optimizer", energy_optimizer)
    gen_every = validation.check_positive_int("gen_every", gen_every)
    train_p = validation.check_bool("train_p", train_p)
    validation.check_callable("data_fn", data_fn, "(key) -> x", optional=True)
    mesh = parallel.resolve_mesh(mesh)
    latent_fn = _split_latents(latent_fn, mesh)
    sigma_at = sigma if callable(sigma) else (lambda step: sigma)
    if not callable(sigma):
        validation.check_positive("sigma", sigma)

    def step_on(state: DDEState, x_real):
        x_real = parallel.constrain_batch(x_real, mesh, name="x_real (the real batch)")
        sigma_now = sigma_at(state.step)
        energy_loss = dsm_loss(energy_fn, sigma_now)
        gen_loss = kl_generator_loss(generator_fn, energy_fn, sigma_now)
        key, k_p, k_z, k_q, k_zg, k_g = jax.random.split(state.key, 6)
        p, metrics = state.p, {}
        if train_p:
            params, opt_state, m = apply_loss(energy_loss, energy_optimizer, p.params, p.opt_state, k_p, x_real)
            p, metrics["p_loss"] = NetState(params, opt_state), m["loss"]

        fakes = jax.lax.stop_gradient(generator_fn(state.gen.params, latent_fn(k_z)))
        params, opt_state, m = apply_loss(energy_loss, energy_optimizer, state.q.params, state.q.opt_state, k_q, fakes)
        q = NetState(params, opt_state)
        metrics["q_loss"] = m["loss"]

        z = latent_fn(k_zg)
        do_gen = (state.step + 1) % gen_every == 0

        def gen_step(gen: NetState):
            params, opt_state, m = apply_loss(gen_loss, gen_optimizer, gen.params, gen.opt_state, p.params, q.params, k_g, z)
            return NetState(params, opt_state), m["loss"]

        def no_step(gen: NetState):
            return gen, gen_loss(gen.params, p.params, q.params, k_g, z)

        gen, metrics["gen_loss"] = jax.lax.cond(do_gen, gen_step, no_step, state.gen)
        metrics["gen_stepped"] = do_gen.astype(jnp.float32)
        metrics["sigma"] = jnp.asarray(sigma_now, jnp.float32)
        new_state = DDEState(state.step + 1, gen, p, q, state.gen_updates + do_gen.astype(jnp.int32), key)
        return new_state, metrics

    return step_on if data_fn is None else with_data(step_on, data_fn, mesh=mesh)


def geometric_sigma_schedule(sigma_start, sigma_end, n_steps):
    """σ(step) decaying geometrically from ``sigma_start`` to ``sigma_end`` over ``n_steps``,
    then constant: a schedule for :func:`make_dde_step`."""
    validation.check_positive("sigma_start", sigma_start)
    validation.check_positive("sigma_end", sigma_end)
    n_steps = validation.check_positive_int("n_steps", n_steps)

    def sigma(step):
        frac = jnp.clip(step / n_steps, 0.0, 1.0)
        return sigma_start * (sigma_end / sigma_start) ** frac

    return sigma


def make_q_warmup_step(energy_fn, generator_fn, sigma, latent_fn, energy_optimizer, *, mesh=None):
    """Train E_q alone on samples of the (fixed) initial generator, so the first generator
    steps see a sensible q̂. ``step(state) -> (state, {"q_loss"})``; ``state.step`` unchanged.
    ``mesh``: as in :func:`make_dde_step` (the latents split over it)."""
    _check_nets(energy_fn, generator_fn, latent_fn)
    validation.check_optimizer("energy_optimizer", energy_optimizer)
    energy_loss = dsm_loss(energy_fn, sigma)
    latent_fn = _split_latents(latent_fn, parallel.resolve_mesh(mesh))

    def step(state: DDEState):
        key, k_z, k_q = jax.random.split(state.key, 3)
        fakes = jax.lax.stop_gradient(generator_fn(state.gen.params, latent_fn(k_z)))
        params, opt_state, m = apply_loss(energy_loss, energy_optimizer, state.q.params, state.q.opt_state, k_q, fakes)
        return state._replace(q=NetState(params, opt_state), key=key), {"q_loss": m["loss"]}

    return step


def make_p_warmup_step(energy_fn, sigma, energy_optimizer, *, mesh=None):
    """Train E_p alone by DSM on real batches before the loop (``step(state, x_real) ->
    (state, {"p_loss"})``; ``state.step`` and the generator unchanged): the first generator
    steps then follow a data density rather than a barely trained E_p, whose early gradient
    pulls every sample toward one blob (on Fashion-MNIST the generator collapsed onto a
    single image without it). E_p stays on the same optimiser state when the loop starts.
    ``mesh``: as in :func:`make_dde_step` (the real batch split over it)."""
    _check_nets(energy_fn)
    validation.check_optimizer("energy_optimizer", energy_optimizer)
    energy_loss = dsm_loss(energy_fn, sigma)
    mesh = parallel.resolve_mesh(mesh)

    def step(state: DDEState, x_real):
        x_real = parallel.constrain_batch(x_real, mesh, name="x_real (the real batch)")
        key, k_p = jax.random.split(state.key)
        params, opt_state, m = apply_loss(energy_loss, energy_optimizer, state.p.params, state.p.opt_state, k_p, x_real)
        return state._replace(p=NetState(params, opt_state), key=key), {"p_loss": m["loss"]}

    return step
