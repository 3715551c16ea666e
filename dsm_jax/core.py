"""Energies → scores, the Tweedie denoiser and the three training objectives.

Project-wide convention (documented once, here):

* ``energy_fn(params, x) -> E`` with ``x`` of shape ``(batch, *event)`` and ``E`` of
  shape ``(batch,)``; the model density is ``p(x) ∝ exp(-E(x))``.
* score ``= ∇ log p = -∇ₓE``; Tweedie denoiser ``r(x) = x - σ² ∇ₓE(x)``.

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


def energy_and_grad(energy_fn: EnergyFn, params, x: jax.Array):
    """``(E(x), ∇ₓE(x))`` in one forward/backward pass, shapes validated."""
    validation.check_batched("x", x)

    def total(x_):
        e = energy_fn(params, x_)
        validation.check_energy_output(e, x_)
        return jnp.sum(e), e

    (_, e), g = jax.value_and_grad(total, has_aux=True)(x)
    return e, g


def energy_grad(energy_fn: EnergyFn, params, x: jax.Array) -> jax.Array:
    return energy_and_grad(energy_fn, params, x)[1]


def score(energy_fn: EnergyFn):
    """``score_fn(params, x) = -∇ₓE(x)``, same shape as ``x``."""

    def score_fn(params, x):
        return -energy_grad(energy_fn, params, x)

    return score_fn


def denoiser(energy_fn: EnergyFn, sigma):
    """Tweedie's optimal denoiser ``r(x) = x - σ²∇ₓE(x)`` for noise level ``sigma``."""
    validation.check_positive("sigma", sigma)

    def denoise_fn(params, x):
        return x - sigma**2 * energy_grad(energy_fn, params, x)

    return denoise_fn


def sum_event(v: jax.Array) -> jax.Array:
    """Sum over the event axes: (batch, *event) -> (batch,)."""
    return jnp.sum(v.reshape(v.shape[0], -1), axis=1)


def _broadcast_event(per_example: jax.Array, x: jax.Array) -> jax.Array:
    return per_example.reshape((-1,) + (1,) * (x.ndim - 1))


def dsm_loss(energy_fn: EnergyFn, sigma):
    """Single-σ denoising score matching (DDE form).

    ``loss(params, key, x) = mean_i ‖x̃_i − σ²∇E(x̃_i) − x_i‖²`` with ``x̃ = x + σε``.
    Its minimiser is ``E = −log p̂_σ + c``: the energy becomes a density estimate of the
    σ-smoothed data.
    """
    validation.check_positive("sigma", sigma)

    def loss_fn(params, key, x):
        validation.check_batched("x", x)
        x_noisy = x + sigma * jax.random.normal(key, x.shape, x.dtype)
        denoised = x_noisy - sigma**2 * energy_grad(energy_fn, params, x_noisy)
        return jnp.mean(sum_event(jnp.square(denoised - x)))

    return loss_fn


def sample_sigmas(key, n: int, sigma_min, sigma_max, spacing: str = "geometric"):
    """``n`` noise levels drawn uniformly in σ (linear) or in log σ (geometric)."""
    u = jax.random.uniform(key, (n,))
    if spacing == "geometric":
        return sigma_min * (sigma_max / sigma_min) ** u
    if spacing == "linear":
        return sigma_min + (sigma_max - sigma_min) * u
    raise ValueError(f"`spacing` must be 'geometric' or 'linear', got {spacing!r}.")


def mdsm_loss(energy_fn: EnergyFn, sigma_min, sigma_max, sigma0=0.1, spacing="geometric"):
    """Multi-scale DSM (MDSM, Li et al.).

    Per example σ_i ∈ [σ_min, σ_max]; ``x̃_i = x_i + σ_i ε_i`` and
    ``loss = mean_i ‖x_i − x̃_i + σ₀²∇E(x̃_i)‖² / σ_i²`` (the 1/σ² weight balances scales;
    ``x̃ − σ₀²∇E(x̃)`` is the denoised guess with a fixed σ₀).
    """
    validation.check_sigma_range(sigma_min, sigma_max)
    validation.check_positive("sigma0", sigma0)
    if spacing not in ("geometric", "linear"):
        raise ValueError(f"`spacing` must be 'geometric' or 'linear', got {spacing!r}.")

    def loss_fn(params, key, x):
        validation.check_batched("x", x)
        key_sigma, key_noise = jax.random.split(key)
        sigmas = sample_sigmas(key_sigma, x.shape[0], sigma_min, sigma_max, spacing)
        sigmas = sigmas.astype(x.dtype)
        x_noisy = x + _broadcast_event(sigmas, x) * jax.random.normal(key_noise, x.shape, x.dtype)
        residual = x - x_noisy + sigma0**2 * energy_grad(energy_fn, params, x_noisy)
        return jnp.mean(sum_event(jnp.square(residual)) / jnp.square(sigmas))

    return loss_fn


def kl_generator_loss(generator_fn: GeneratorFn, energy_fn: EnergyFn, sigma, q_energy_fn=None):
    """DDE's KL surrogate for the generator.

    ``loss(gen_params, p_params, q_params, key, z) = mean E_p(G(z)+ε) − E_q(G(z)+ε)``,
    ε ~ N(0, σ²I). With ``E_p = −log p̂ + c`` and ``E_q = −log q̂ + c'`` its gradient in the
    generator parameters equals ∇KL(q̂‖p̂) (the score-function term of q̂ has mean zero).
    The energies are frozen: gradients flow only into ``gen_params``. ``q_energy_fn``
    defaults to ``energy_fn`` (same architecture for E_p and E_q).
    """
    validation.check_positive("sigma", sigma)
    q_energy_fn = energy_fn if q_energy_fn is None else q_energy_fn

    def loss_fn(gen_params, p_params, q_params, key, z):
        validation.check_batched("z", z)
        x = generator_fn(gen_params, z)
        x_noisy = x + sigma * jax.random.normal(key, x.shape, x.dtype)
        e_p = energy_fn(jax.lax.stop_gradient(p_params), x_noisy)
        e_q = q_energy_fn(jax.lax.stop_gradient(q_params), x_noisy)
        validation.check_energy_output(e_p, x_noisy)
        validation.check_energy_output(e_q, x_noisy)
        return jnp.mean(e_p - e_q)

    return loss_fn
