"""MLPs on flattened inputs: the 2-D toys' energy and residual generator (DDE's setting)."""
from __future__ import annotations

import flax.linen as nn

from dsm_jax import validation
from dsm_jax.nets.layers import activation, dense_initializers


def check_dense_input(owner: str, x) -> None:
    """(batch, *event) floating-point input: a 1-D x would be read as a batch of scalars."""
    if x.ndim < 2:
        raise ValueError(
            f"{owner} expects x of shape (batch, *event), got shape {x.shape}. Add a batch axis "
            f"with x[None] (one example) or an event axis with x[:, None] (scalar data).")
    validation.check_floating("x", x)


def check_mlp_config(owner: str, depth, width, activation_name, weight_init) -> None:
    validation.check_module_sizes(owner, 0, depth=depth)  # depth 0: a linear map
    validation.check_module_sizes(owner, width=width)
    activation(activation_name)
    dense_initializers(weight_init)


class MLP(nn.Module):
    """Plain MLP on flattened inputs: ``depth`` hidden layers of ``width`` units (``depth`` 0: a
    linear map); ``weight_init`` one of :data:`DENSE_INITS` (the parameter tree is the same for
    every choice)."""

    depth: int
    width: int
    out_dim: int
    activation: str = "softplus"
    weight_init: str = "lecun"

    def __post_init__(self):  # refused when the module is built, before any init or apply
        check_mlp_config(type(self).__name__, self.depth, self.width, self.activation, self.weight_init)
        validation.check_module_sizes(type(self).__name__, out_dim=self.out_dim)
        super().__post_init__()

    @nn.compact
    def __call__(self, x):
        act = activation(self.activation)
        kernel_init, bias_init = dense_initializers(self.weight_init)
        check_dense_input(type(self).__name__, x)
        h = x.reshape(x.shape[0], -1)
        for _ in range(self.depth):
            h = act(nn.Dense(self.width, kernel_init=kernel_init, bias_init=bias_init)(h))
        return nn.Dense(self.out_dim, kernel_init=kernel_init, bias_init=bias_init)(h)


class _ToyMLP(nn.Module):
    """The fields (and their checks) of the toys' networks: an MLP of ``depth`` × ``width``."""

    depth: int = 25
    width: int = 32
    activation: str = "softplus"
    weight_init: str = "lecun"

    def __post_init__(self):  # refused when the module is built, before any init or apply
        check_mlp_config(type(self).__name__, self.depth, self.width, self.activation, self.weight_init)
        super().__post_init__()


class MLPEnergy(_ToyMLP):
    """Scalar energy E(x) = MLP(x). DDE's 2-D setting: depth 25, width 32, softplus, Xavier init."""

    @nn.compact
    def __call__(self, x):
        check_dense_input(type(self).__name__, x)
        return MLP(self.depth, self.width, 1, self.activation, self.weight_init)(x)[:, 0]


class ResidualMLPGenerator(_ToyMLP):
    """DDE's toy generator G(z) = MLP(z) + z (latent dimension = data dimension); their toys
    use ReLU for eight_gaussians and two_spirals, softplus for the checkerboard."""

    @nn.compact
    def __call__(self, z):
        if z.ndim != 2:
            raise ValueError(f"{type(self).__name__} expects latents (batch, latent_dim), got shape {z.shape}.")
        validation.check_floating("z", z)
        return z + MLP(self.depth, self.width, z.shape[-1], self.activation, self.weight_init)(z)
