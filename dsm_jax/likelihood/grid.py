"""``log Z`` by the midpoint rule on a grid: 1-D and 2-D events only (exact up to quadrature)."""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from dsm_jax import validation
from dsm_jax.chunks import chunked_map
from dsm_jax.core import EnergyFn
from dsm_jax.likelihood._returns import legacy_return_info


def grid_log_z_with_info(energy_fn: EnergyFn, params, event_shape, *, bounds, n: int | None = None,
                         chunk_size: int = 16384):
    """Midpoint-rule ``log Z`` on ``n`` (1-D) or ``n × n`` (2-D, square ``bounds²``) cells:
    ``(log_z, stderr, {"log_z_coarse": log Z_{n/2}})``.

    Only for events with 1 or 2 numbers in total (e.g. ``(1,)``, ``(2,)``, ``(1, 2)``).
    ``bounds = (lo, hi)`` must hold essentially all the mass: mass outside is simply missing.
    ``n`` defaults to 4096 (1-D) or 256 (2-D). 2-D uses
    :func:`dsm_jax.metrics.grid_log_normalizer`.

    ``stderr`` is a quadrature-error estimate, not a Monte Carlo error:
    ``|log Z_n − log Z_{n/2}|``, the change from halving the resolution (conservative: the
    midpoint rule's error falls at least 4× per halving of the cell width for smooth
    energies). It does not see mass outside ``bounds``. float32 0-d arrays.
    """
    from dsm_jax import metrics  # local: metrics imports the toys

    event_shape = validation.check_event_shape(event_shape)
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
    validation.check_energy_fn(energy_fn, params, event_shape)

    def reshaped(p, x):
        return energy_fn(p, x.reshape((x.shape[0], *event_shape)))

    def at(m):
        if d == 2:
            return metrics.grid_log_normalizer(reshaped, params, metrics.make_grid((lo, hi), m), chunk_size)
        h = (hi - lo) / m
        pts = jnp.asarray(lo + (np.arange(m) + 0.5) * h, jnp.float32)[:, None]
        e = chunked_map(lambda c: reshaped(params, c), pts, chunk_size)
        return logsumexp(-e.astype(jnp.float32)) + math.log(h)

    log_z, coarse = at(n), at(n // 2)
    return log_z, jnp.abs(log_z - coarse), {"log_z_coarse": coarse}


def grid_log_z(energy_fn: EnergyFn, params, event_shape, *, bounds, n: int | None = None, chunk_size: int = 16384,
               return_info=None):
    """``(log_z, stderr)`` by the midpoint rule; see :func:`grid_log_z_with_info`.
    ``return_info=`` is deprecated."""
    out = grid_log_z_with_info(energy_fn, params, event_shape, bounds=bounds, n=n, chunk_size=chunk_size)
    return legacy_return_info("grid_log_z", out, return_info)
