"""Many samples on the host: Gaussian starting points, and chains run in fixed-size chunks whose
results go to host memory one chunk at a time (:func:`dsm_jax.chunks.chunked_map`, by contrast,
maps a batch function inside one compiled ``lax.map``)."""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from dsm_jax import validation


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
