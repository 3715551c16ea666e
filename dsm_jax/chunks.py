"""``chunked_map``: a function of a batch applied in fixed-size chunks of rows.

Peak memory is that of one chunk whatever the batch size, and only one chunk shape is
compiled (the last chunk is padded, then trimmed). Pure and jit-able.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from dsm_jax import validation


def chunked_map(fn: Callable[[jax.Array], jax.Array], x: jax.Array, chunk_size: int) -> jax.Array:
    """``fn(x)`` computed ``chunk_size`` rows at a time (``lax.map`` over chunks).

    ``fn`` maps ``(m, *event)`` to ``(m, ...)`` row by row (row ``i`` of the output depends
    only on row ``i`` of the input). ``x``: ``(n, *event)`` with ``n >= 1``.
    """
    chunk_size = validation.check_positive_int("chunk_size", chunk_size)
    n = jnp.shape(x)[0]
    if n == 0:
        raise ValueError("`x` is an empty batch; chunked_map needs at least one row.")
    if n <= chunk_size:
        return fn(x)
    m = -(-n // chunk_size)
    # pad with copies of a real row so fn never sees made-up inputs
    pad = jnp.broadcast_to(x[-1:], (m * chunk_size - n,) + x.shape[1:])
    xs = jnp.concatenate([x, pad]).reshape((m, chunk_size) + x.shape[1:])
    out = lax.map(fn, xs)
    return out.reshape((m * chunk_size,) + out.shape[2:])[:n]
