"""Leaf-level facts about pytrees of arrays: paths, dtypes, PRNG keys, float leaves.

Shared by the non-finite guards of the training step (:mod:`dsm_jax.train_step`), the host
loop (:mod:`dsm_jax.loop`) and the checkpoint layout/digest (:mod:`dsm_jax.checkpoint`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def named_leaves(tree) -> list:
    """``(path, leaf)`` of every leaf, the path as ``jax.tree_util.keystr`` writes it."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in leaves]


def dtype_of(leaf):
    dtype = getattr(leaf, "dtype", None)
    return np.asarray(leaf).dtype if dtype is None else dtype


def is_prng_key(leaf) -> bool:
    return jax.dtypes.issubdtype(dtype_of(leaf), jax.dtypes.prng_key)


def float_leaves(tree) -> list:
    """``(path, leaf)`` of the floating-point leaves: what can hold a NaN (PRNG keys and
    integers left out)."""
    return [(p, x) for p, x in named_leaves(tree) if not is_prng_key(x) and jnp.issubdtype(dtype_of(x), jnp.inexact)]


def all_finite(tree) -> jax.Array:
    """True when every float leaf of ``tree`` is finite (traceable: one boolean scalar)."""
    checks = [jnp.all(jnp.isfinite(leaf)) for _, leaf in float_leaves(tree)]
    return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


@jax.jit
def _finite_leaves(leaves):
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])


def nonfinite_leaves(tree) -> list[str]:
    """Paths of the float leaves of ``tree`` holding a NaN or an infinity (host side, one
    dispatch)."""
    named = float_leaves(tree)
    if not named:
        return []
    finite = np.asarray(_finite_leaves([x for _, x in named]))
    return [p for (p, _), ok in zip(named, finite) if not ok]
