"""Energies → scores, the Tweedie denoiser and the three training objectives.

Project-wide convention (documented once, here):

* ``energy_fn(params, x) -> E`` with ``x`` of shape ``(batch, *event)`` and ``E`` of
  shape ``(batch,)``; the model density is ``p(x) ∝ exp(-E(x))``.
* score ``= ∇ log p = -∇ₓE``; Tweedie denoiser ``r(x) = x - σ² ∇ₓE(x)``.
* Every function here takes a float batch; ``per_example=True`` gives the single-example
  form (``x`` of shape ``event``, run as a batch of one) that composes with ``jax.vmap``.

How the papers' quantities map onto ``E``:

* DDE (Bigdeli et al.): their network ``f`` *is* ``log p̂`` → ``E = -f``. The blog's
  ``E = σ² log p̂`` → ``E_here = -E_blog / σ²``.
* MDSM (Li et al.): ``p ∝ exp(-E)`` as here, but their denoiser is ``x - σ₀² ∇E`` with a
  fixed σ₀, so at noise level σ their ``E`` is ``(σ²/σ₀²)·(-log p̂_σ)`` up to a constant.

Per-example gradients are taken as the gradient of ``sum(E)``: valid because an energy
treats examples independently (no batch statistics inside ``energy_fn``).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from dsm_jax import validation

EnergyFn = Callable[[object, jax.Array], jax.Array]
GeneratorFn = Callable[[object, jax.Array], jax.Array]
SPACINGS = ("geometric", "linear")  # how mdsm_loss draws σ in [σ_min, σ_max]


def _as_batch(name: str, x, per_example: bool):
    """Validated ``(batch, *event)`` view of ``x`` and the function that undoes it: a single
    example gets a batch axis of 1, so ``energy_fn`` always sees the project's convention."""
    validation.check_examples(name, x, per_example)
    if per_example:
        return x[None], lambda y: y[0]
    return x, lambda y: y


def energy_and_grad(energy_fn: EnergyFn, params, x: jax.Array, *, per_example: bool = False):
    """``(E(x), ∇ₓE(x))`` in one forward/backward pass, shapes validated.

    ``per_example=True``: ``x`` is one example (shape ``event``) and the result is
    ``(scalar, event-shaped gradient)``, the form to ``jax.vmap`` over single examples.
    """
    xb, unbatch = _as_batch("x", x, per_example)

    def total(x_):
        e = energy_fn(params, x_)
        validation.check_energy_output(e, x_)
        return jnp.sum(e), e

    (_, e), g = jax.value_and_grad(total, has_aux=True)(xb)
    return unbatch(e), unbatch(g)


def energy_grad(energy_fn: EnergyFn, params, x: jax.Array, *, per_example: bool = False) -> jax.Array:
    return energy_and_grad(energy_fn, params, x, per_example=per_example)[1]


def score(energy_fn: EnergyFn, *, per_example: bool = False):
    """``score_fn(params, x) = -∇ₓE(x)``, same shape as ``x``.

    ``x`` is a float batch ``(batch, *event)``; with ``per_example=True`` it is one example
    (shape ``event``), so ``jax.vmap(score(E, per_example=True), in_axes=(None, 0))(params, x)``
    equals ``score(E)(params, x)`` (the batched form refuses a vmapped single example: its
    missing batch axis would be misread as the batch).
    """
    validation.check_callable("energy_fn", energy_fn)

    def score_fn(params, x):
        return -energy_grad(energy_fn, params, x, per_example=per_example)

    return score_fn


def denoiser(energy_fn: EnergyFn, sigma, *, per_example: bool = False):
    """Tweedie's optimal denoiser ``r(x) = x - σ²∇ₓE(x)`` for noise level ``sigma``.

    ``per_example``: as in :func:`score` (one example in, one out; vmap it)."""
    validation.check_callable("energy_fn", energy_fn)
    validation.check_sigma("sigma", sigma, strict=True)

    def denoise_fn(params, x):
        return x - sigma**2 * energy_grad(energy_fn, params, x, per_example=per_example)

    return denoise_fn


def sum_event(v: jax.Array) -> jax.Array:
    """Sum over the event axes: (batch, *event) -> (batch,)."""
    return jnp.sum(v.reshape(v.shape[0], -1), axis=1)


def _broadcast_event(per_example: jax.Array, x: jax.Array) -> jax.Array:
    return per_example.reshape((-1,) + (1,) * (x.ndim - 1))


def dsm_loss(energy_fn: EnergyFn, sigma, *, per_example: bool = False):
    """Single-σ denoising score matching (DDE form).

    ``loss(params, key, x) = mean_i ‖x̃_i − σ²∇E(x̃_i) − x_i‖²`` with ``x̃ = x + σε``.
    Its minimiser is ``E = −log p̂_σ + c``: the energy becomes a density estimate of the
    σ-smoothed data.

    ``per_example=True``: ``x`` is one example (shape ``event``) and the loss is that
    example's, so ``jax.vmap(loss_fn, in_axes=(None, 0, 0))(params, keys, x)`` gives the
    per-example losses (their mean equals the batched loss in distribution, not bit for bit:
    each example draws its noise from its own key).
    """
    validation.check_callable("energy_fn", energy_fn)
    validation.check_sigma("sigma", sigma, strict=True)

    def loss_fn(params, key, x):
        validation.check_prng_key("key", key)
        x, _ = _as_batch("x", x, per_example)
        x_noisy = x + sigma * jax.random.normal(key, x.shape, x.dtype)
        denoised = x_noisy - sigma**2 * energy_grad(energy_fn, params, x_noisy)
        return jnp.mean(sum_event(jnp.square(denoised - x)))

    return loss_fn


def sample_sigmas(key, n: int, sigma_min, sigma_max, spacing: str = "geometric"):
    """``n`` noise levels drawn uniformly in σ (linear) or in log σ (geometric).

    Needs ``0 < sigma_min <= sigma_max`` (checked when the values are concrete; traced
    bounds under jit are not)."""
    validation.check_prng_key("key", key)
    validation.check_choice("spacing", spacing, SPACINGS)
    n = validation.check_positive_int("n", n)
    validation.check_sigma_range(sigma_min, sigma_max)
    u = jax.random.uniform(key, (n,))
    if spacing == "geometric":
        return sigma_min * (sigma_max / sigma_min) ** u
    return sigma_min + (sigma_max - sigma_min) * u


def mdsm_loss(energy_fn: EnergyFn, sigma_min, sigma_max, sigma0=0.1, spacing="geometric", *, per_example=False):
    """Multi-scale DSM (MDSM, Li et al.).

    Per example σ_i ∈ [σ_min, σ_max]; ``x̃_i = x_i + σ_i ε_i`` and
    ``loss = mean_i ‖x_i − x̃_i + σ₀²∇E(x̃_i)‖² / σ_i²`` (the 1/σ² weight balances scales;
    ``x̃ − σ₀²∇E(x̃)`` is the denoised guess with a fixed σ₀). ``per_example``: as in
    :func:`dsm_loss` (each example also draws its own σ).
    """
    validation.check_callable("energy_fn", energy_fn)
    validation.check_sigma_range(sigma_min, sigma_max)
    validation.check_sigma("sigma0", sigma0, strict=True)
    validation.check_choice("spacing", spacing, SPACINGS)

    def loss_fn(params, key, x):
        validation.check_prng_key("key", key)
        x, _ = _as_batch("x", x, per_example)
        key_sigma, key_noise = jax.random.split(key)
        sigmas = sample_sigmas(key_sigma, x.shape[0], sigma_min, sigma_max, spacing)
        sigmas = sigmas.astype(x.dtype)
        x_noisy = x + _broadcast_event(sigmas, x) * jax.random.normal(key_noise, x.shape, x.dtype)
        residual = x - x_noisy + sigma0**2 * energy_grad(energy_fn, params, x_noisy)
        return jnp.mean(sum_event(jnp.square(residual)) / jnp.square(sigmas))

    return loss_fn


def kl_generator_loss(generator_fn: GeneratorFn, energy_fn: EnergyFn, sigma, q_energy_fn=None, *, per_example=False):
    """DDE's KL surrogate for the generator.

    ``loss(gen_params, p_params, q_params, key, z) = mean E_p(G(z)+ε) − E_q(G(z)+ε)``,
    ε ~ N(0, σ²I). With ``E_p = −log p̂ + c`` and ``E_q = −log q̂ + c'`` its gradient in the
    generator parameters equals ∇KL(q̂‖p̂) (the score-function term of q̂ has mean zero).
    The energies are frozen: gradients flow only into ``gen_params``. ``q_energy_fn``
    defaults to ``energy_fn`` (same architecture for E_p and E_q). ``per_example=True``:
    ``z`` is one latent (shape ``latent``), vmap over latents and keys for per-example terms.
    """
    validation.check_callable("generator_fn", generator_fn)
    validation.check_callable("energy_fn", energy_fn)
    validation.check_sigma("sigma", sigma, strict=True)
    q_energy_fn = energy_fn if q_energy_fn is None else q_energy_fn
    validation.check_callable("q_energy_fn", q_energy_fn)

    def loss_fn(gen_params, p_params, q_params, key, z):
        validation.check_prng_key("key", key)
        z, _ = _as_batch("z", z, per_example)
        x = generator_fn(gen_params, z)
        x_noisy = x + sigma * jax.random.normal(key, x.shape, x.dtype)
        e_p = energy_fn(jax.lax.stop_gradient(p_params), x_noisy)
        e_q = q_energy_fn(jax.lax.stop_gradient(q_params), x_noisy)
        validation.check_energy_output(e_p, x_noisy)
        validation.check_energy_output(e_q, x_noisy)
        return jnp.mean(e_p - e_q)

    return loss_fn
