"""From a flax module to the project's pure functions: parameters and ``energy_fn``."""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dsm_jax import validation


def _check_module(module) -> None:
    if isinstance(module, type) and issubclass(module, nn.Module):
        raise TypeError(f"`module` must be a module instance, got the class {module.__name__}; "
                        f"pass {module.__name__}(...).")
    if not isinstance(module, nn.Module):
        raise TypeError(f"`module` must be a flax.linen.Module instance, got {type(module).__name__}.")


def energy_fn_of(module: nn.Module) -> Callable:
    """``energy_fn(params, x) = module.apply(params, x)``: a pure function of (params, x)."""
    _check_module(module)

    def energy_fn(params, x):
        return module.apply(params, x)

    return energy_fn


def init_params(module: nn.Module, key, event_shape: Sequence[int]):
    """Initialise ``module`` for float32 inputs of shape ``(batch, *event_shape)``.

    Jitted: run eagerly, a conv net's init dispatches (and compiles) op by op."""
    _check_module(module)
    validation.check_prng_key("key", key)
    event_shape = validation.check_shape("event_shape", event_shape)
    return jax.jit(module.init)(key, jnp.zeros((1, *event_shape), jnp.float32))
