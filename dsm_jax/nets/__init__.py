"""flax.linen networks, one family a module. ``module.apply`` is the pure function;
:func:`energy_fn_of` adapts a module to the project's ``energy_fn(params, x) -> (batch,)``.

- :mod:`~dsm_jax.nets.layers`: activations and dense initialisations by name;
- :mod:`~dsm_jax.nets.params`: :func:`init_params`, :func:`energy_fn_of`;
- :mod:`~dsm_jax.nets.mlp`: the 2-D toys' MLP energy and residual generator;
- :mod:`~dsm_jax.nets.conv`: 'SAME' convolutions (``nn.Conv``, :class:`MatmulConv`,
  :class:`CanonicalConv`) on the same parameters;
- :mod:`~dsm_jax.nets.resnet`: MDSM's ResNet energy (:data:`RESNET_CONFIGS`);
- :mod:`~dsm_jax.nets.densenet`: DDE's DenseNet energy and generator;
- :mod:`~dsm_jax.nets.conv_generator`: a DCGAN-like generator.

Sizes, names and shapes are checked when a module is built (its ``__post_init__``), input
shapes and dtypes when it is traced.
"""
from dsm_jax.nets.conv import (
    CONV_IMPLS,
    CanonicalConv,
    MatmulConv,
    canonical_conv,
    conv_layer,
    same_padding,
)
from dsm_jax.nets.conv_generator import ConvGenerator, upsample_nearest
from dsm_jax.nets.densenet import DDE_DENSENET_PAPER, DenseNetEnergy, DenseNetGenerator, DenseNetMLP
from dsm_jax.nets.layers import ACTIVATIONS, DENSE_INITS, activation, dense_initializers
from dsm_jax.nets.mlp import MLP, MLPEnergy, ResidualMLPGenerator
from dsm_jax.nets.params import energy_fn_of, init_params
from dsm_jax.nets.resnet import RESNET_CONFIGS, ResidualBlock, ResNetEnergy, mean_pool

__all__ = [
    "ACTIVATIONS",
    "CONV_IMPLS",
    "CanonicalConv",
    "ConvGenerator",
    "DDE_DENSENET_PAPER",
    "DENSE_INITS",
    "DenseNetEnergy",
    "DenseNetGenerator",
    "DenseNetMLP",
    "MLP",
    "MLPEnergy",
    "MatmulConv",
    "RESNET_CONFIGS",
    "ResNetEnergy",
    "ResidualBlock",
    "ResidualMLPGenerator",
    "activation",
    "canonical_conv",
    "conv_layer",
    "dense_initializers",
    "energy_fn_of",
    "init_params",
    "mean_pool",
    "same_padding",
    "upsample_nearest",
]
