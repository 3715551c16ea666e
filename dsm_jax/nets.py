"""flax.linen networks. ``module.apply`` is the pure function; :func:`energy_fn_of` adapts a
module to the project's ``energy_fn(params, x) -> (batch,)`` convention."""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
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
    except KeyError:
        raise ValueError(f"Unknown `activation` {name!r}; choose one of {sorted(ACTIVATIONS)}.") from None


class MLP(nn.Module):
    """Plain MLP on flattened inputs: ``depth`` hidden layers of ``width`` units."""

    depth: int
    width: int
    out_dim: int
    activation: str = "softplus"

    @nn.compact
    def __call__(self, x):
        act = activation(self.activation)
        h = x.reshape(x.shape[0], -1)
        for _ in range(self.depth):
            h = act(nn.Dense(self.width)(h))
        return nn.Dense(self.out_dim)(h)


class MLPEnergy(nn.Module):
    """Scalar energy E(x) = MLP(x). DDE's 2-D setting: depth 25, width 32, softplus."""

    depth: int = 25
    width: int = 32
    activation: str = "softplus"

    @nn.compact
    def __call__(self, x):
        return MLP(self.depth, self.width, 1, self.activation)(x)[:, 0]


class ResidualMLPGenerator(nn.Module):
    """DDE's toy generator G(z) = MLP(z) + z (latent dimension = data dimension)."""

    depth: int = 25
    width: int = 32
    activation: str = "softplus"

    @nn.compact
    def __call__(self, z):
        return z + MLP(self.depth, self.width, z.shape[-1], self.activation)(z)


def energy_fn_of(module: nn.Module) -> Callable:
    """``energy_fn(params, x) = module.apply(params, x)``: a pure function of (params, x)."""

    def energy_fn(params, x):
        return module.apply(params, x)

    return energy_fn


def init_params(module: nn.Module, key, event_shape: Sequence[int]):
    """Initialise ``module`` for inputs of shape ``(batch, *event_shape)``."""
    return module.init(key, jnp.zeros((1, *event_shape), jnp.float32))
