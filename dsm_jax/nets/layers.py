"""Activations and dense-layer initialisations, chosen by name from a config."""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable] = {
    "softplus": nn.softplus,
    "elu": nn.elu,
    "silu": nn.silu,
    "swish": nn.silu,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "tanh": jnp.tanh,
}


def activation(name: str) -> Callable:
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name such as a list
        raise ValueError(f"Unknown `activation` {name!r}; choose one of {sorted(ACTIVATIONS)}.") from None


def _xavier_bias(key, shape, dtype=jnp.float32):
    # the DDE code's bias init: Xavier's uniform bound with fan_in = fan_out = n, i.e. U(±sqrt(3/n))
    bound = (3.0 / shape[0]) ** 0.5
    return jax.random.uniform(key, shape, dtype, -bound, bound)


# Dense-layer initialisations: (kernel_init, bias_init). "lecun": flax's default (LeCun-normal,
# zero bias); "xavier": the DDE code's (Xavier-uniform kernel, U(±sqrt(3/n)) bias).
DENSE_INITS: dict[str, tuple[Callable, Callable]] = {
    "lecun": (nn.initializers.lecun_normal(), nn.initializers.zeros_init()),
    "xavier": (nn.initializers.xavier_uniform(), _xavier_bias),
}


def dense_initializers(name: str) -> tuple[Callable, Callable]:
    try:
        return DENSE_INITS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown `weight_init` {name!r}; choose one of {sorted(DENSE_INITS)}.") from None
