"""Randomness and sampling: PRNG keys, noise levels σ, temperatures, chain starts and their
masks, clip boxes, MCMC draws, and the blackjax extra."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dsm_jax.validation.arrays import check_all_finite, check_batched, check_floating, check_mask
from dsm_jax.validation.scalars import check_nonnegative, check_positive, check_real, is_concrete


def check_prng_key(name: str, key) -> None:
    """One PRNG key: a typed key (shape ()) or a raw uint32 key (shape (2,) for threefry).
    Shape and dtype only, so it runs at trace time under jit and vmap."""
    if key is None:  # no silent default key anywhere
        raise TypeError(f"`{name}` must be one PRNG key and is required (there is no default key); pass jax.random.key(seed).")
    dtype, shape = getattr(key, "dtype", None), jnp.shape(key) if hasattr(key, "shape") else None
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and shape == ()
    raw = dtype == np.uint32 and shape is not None and len(shape) == 1 and shape[0] in (2, 4)
    if not (typed or raw):
        got = f"dtype {dtype} and shape {shape}" if dtype is not None else repr(key)
        raise TypeError(f"`{name}` must be one PRNG key (jax.random.PRNGKey(seed) or jax.random.key(seed)), "
                        f"got {got}; pass a key, not a seed, and split a batch of keys with jax.vmap.")


def check_sigma(name: str, sigma, strict: bool = False) -> None:
    """A scalar noise level, finite and >= 0 (> 0 when ``strict``); a tracer's value is not
    checked (only its shape)."""
    value = check_real(name, sigma) if is_concrete(sigma) else sigma
    if jnp.ndim(value) != 0:
        raise ValueError(f"`{name}` must be a scalar, got shape {jnp.shape(value)}.")
    if not is_concrete(sigma):
        return
    v = float(value)
    if not np.isfinite(v) or v < 0 or (strict and v == 0):
        raise ValueError(f"`{name}` must be a finite number {'> 0' if strict else '>= 0'}, got {v}.")


def check_sigma_range(sigma_min, sigma_max) -> None:
    check_positive("sigma_min", sigma_min)
    check_positive("sigma_max", sigma_max)
    if is_concrete(sigma_min) and is_concrete(sigma_max) and float(sigma_min) > float(sigma_max):
        raise ValueError(
            f"`sigma_min` ({sigma_min}) must be <= `sigma_max` ({sigma_max}); swap them."
        )


def check_temperatures(temperatures, n_steps: int):
    """Return temperatures as a float32 array of shape (n_steps,), validated."""
    if temperatures is None:
        return jnp.ones((n_steps,), jnp.float32)
    shape = jnp.shape(temperatures)
    if shape != (n_steps,):
        raise ValueError(
            f"`temperatures` must have shape (n_steps,) = ({n_steps},), got {shape}. "
            f"Pass one temperature per step, or None for T = 1 throughout."
        )
    check_nonnegative("temperatures", temperatures)
    return jnp.asarray(temperatures, jnp.float32)


def check_chain_start(x0, free_mask) -> None:
    """A chain's starting batch and its optional 0/1 ``free_mask`` (every sampler and warm-up)."""
    check_batched("x0", x0)  # shape first: a scalar x0 is a shape mistake before a dtype one
    check_floating("x0", x0)
    check_mask("free_mask", free_mask, x0)  # its shape, then 0/1 only


def check_clip(name: str, clip):
    """``clip`` as ``(lo, hi)`` float32 arrays (scalars or arrays broadcasting to the event), or None.

    Concrete bounds must satisfy lo < hi everywhere; ±inf leaves a side open."""
    if clip is None:
        return None
    if isinstance(clip, (str, bytes)) or not hasattr(clip, "__len__") or len(clip) != 2:
        raise ValueError(f"`{name}` must be a pair (lo, hi), e.g. (0.0, 1.0) for pixels, or None; got {clip!r}.")
    lo, hi = clip
    if any(v is None for v in (lo, hi)):
        raise ValueError(f"`{name}` = {clip!r}: pass -jnp.inf or jnp.inf for an open side, not None.")
    if is_concrete(lo) and is_concrete(hi):
        lo_arr, hi_arr = check_real(f"{name}[0]", lo), check_real(f"{name}[1]", hi)
        try:
            ok = np.all(lo_arr < hi_arr)
        except ValueError:
            raise ValueError(f"`{name}`: lo {lo_arr.shape} and hi {hi_arr.shape} do not broadcast together.") from None
        if np.any(np.isnan(lo_arr)) or np.any(np.isnan(hi_arr)) or not ok:
            raise ValueError(f"`{name}` must have lo < hi everywhere (e.g. (0.0, 1.0)), got {clip!r}.")
    return jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32)


def check_clip_shape(name: str, clip, x) -> None:
    """The box's bounds must broadcast to one example of ``x`` (batch, *event)."""
    if clip is None:
        return
    event = tuple(jnp.shape(x)[1:])
    for side, bound in zip(("lo", "hi"), clip):
        try:
            if np.broadcast_shapes(jnp.shape(bound), event) != event:
                raise ValueError
        except ValueError:
            raise ValueError(f"`{name}`'s {side} has shape {jnp.shape(bound)}, which does not broadcast to the "
                             f"event shape {event}; pass a scalar or an array of shape {event}.") from None


def check_draws(name: str, draws, min_chains: int, min_draws: int = 4):
    """MCMC draws laid out (chains, draws, *event): floating, finite when concrete, big enough."""
    shape = jnp.shape(draws)
    if len(shape) < 2:
        raise ValueError(f"`{name}` must have shape (chains, draws, *event), got shape {shape}; for one chain "
                         f"add an axis with {name}[None]; a StepInfo.trajectory is already (chains, draws, *event).")
    if shape[0] < min_chains or shape[1] < min_draws:
        raise ValueError(f"`{name}` has {shape[0]} chain(s) × {shape[1]} draw(s) (shape {shape}); this needs at "
                         f"least {min_chains} chains and {min_draws} draws (axis 0 = chains, axis 1 = draws).")
    check_floating(name, draws)
    check_all_finite(name, draws)  # its rows are the chains here
    return jnp.asarray(draws)


def require_blackjax(feature: str):
    """Import blackjax for ``feature`` or say which extra installs it (imported lazily: dsm_jax itself
    works without it)."""
    try:
        import blackjax
    except ImportError as err:
        raise ImportError(
            f"{feature} uses blackjax, which is not installed: pip install 'dsm-jax[samplers]' "
            f"(or pip install 'blackjax>=1.7')."
        ) from err
    return blackjax
