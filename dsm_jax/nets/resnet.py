"""MDSM's image energy: a pre-activation ResNet with a quadratic read-out."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from dsm_jax import validation
from dsm_jax.nets.conv import check_conv_impl, conv_layer
from dsm_jax.nets.layers import activation


def mean_pool(x):
    """2×2 mean pooling (NHWC), MDSM's downsampling."""
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


class ResidualBlock(nn.Module):
    """Pre-activation block: ELU → 3×3 conv → ELU → 3×3 conv, plus a 1×1-conv shortcut.

    With ``downsample`` both paths are mean-pooled 2×2 (the shortcut before its 1×1 conv,
    the residual after its second conv), as in MDSM. No normalisation: an energy must
    treat examples independently.
    """

    features: int
    downsample: bool = False
    activation: str = "elu"
    conv_impl: str = "canonical"
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        act = activation(self.activation)
        conv = lambda features, size, **kw: conv_layer(  # noqa: E731
            self.conv_impl, features, size, param_dtype=self.param_dtype, **kw)
        shortcut = mean_pool(x) if self.downsample else x
        shortcut = conv(self.features, (1, 1), name="shortcut")(shortcut)
        h = conv(x.shape[-1], (3, 3), use_bias=False, name="conv1")(act(x))
        h = conv(self.features, (3, 3), name="conv2")(act(h))
        if self.downsample:
            h = mean_pool(h)
        return shortcut + h


class ResNetEnergy(nn.Module):
    """MDSM's image energy: a 3×3 conv stem, stages of residual blocks that each start by
    downsampling and doubling the channels (``width`` → 2·width → 4·width → …), and the
    quadratic read-out ``E = l₁(h)·l₂(h) + l₃(h²)`` over the flattened features.

    ``blocks_per_stage`` counts the blocks per stage including the downsampling one:
    MDSM's Fashion-MNIST network is ``ResNetEnergy(width=64, n_stages=3, blocks_per_stage=2)``
    (6 blocks, 128/256/512 channels), its CIFAR-10 network ``width=128, n_stages=3,
    blocks_per_stage=3`` (9 blocks, 256/512/1024 channels); see :data:`RESNET_CONFIGS`.
    ``conv_impl`` picks the convolution: ``"canonical"`` (:class:`CanonicalConv`, the
    default: XLA's conv kernels with gradients that stay on XLA:CPU's fast path inside scans
    too: as fast as ``nn.Conv`` outside loops, the fastest of the three inside them; measured
    in ``experiments/benchmarks``), ``"matmul"`` (:class:`MatmulConv`: slices + one matmul)
    or ``"xla"`` (``nn.Conv``); parameters are interchangeable. Parameters are
    ``param_dtype`` (float32 unless asked, also under ``jax_enable_x64``).
    """

    width: int = 64
    n_stages: int = 3
    blocks_per_stage: int = 2
    activation: str = "elu"
    conv_impl: str = "canonical"
    param_dtype: Any = jnp.float32

    def __post_init__(self):  # refused when the module is built, before any init or apply
        validation.check_module_sizes(type(self).__name__, width=self.width, n_stages=self.n_stages,
                                      blocks_per_stage=self.blocks_per_stage)
        activation(self.activation)
        check_conv_impl(self.conv_impl)
        super().__post_init__()

    @nn.compact
    def __call__(self, x):
        if x.ndim != 4:
            raise ValueError(f"ResNetEnergy expects images (batch, H, W, C), got shape {x.shape}.")
        validation.check_floating("x", x)
        scale = 2**self.n_stages
        if x.shape[1] % scale or x.shape[2] % scale:
            raise ValueError(
                f"ResNetEnergy: images {x.shape[1]}x{x.shape[2]} do not halve {self.n_stages} times "
                f"(`n_stages`); pad them to a multiple of {scale} (data.to_model_input pads to 32) or "
                f"lower `n_stages`.")
        h = conv_layer(self.conv_impl, self.width, (3, 3), name="stem", param_dtype=self.param_dtype)(x)
        for stage in range(self.n_stages):
            for block in range(self.blocks_per_stage):
                h = ResidualBlock(
                    self.width * 2 ** (stage + 1), downsample=block == 0, activation=self.activation,
                    conv_impl=self.conv_impl, param_dtype=self.param_dtype,
                )(h)
        h = h.reshape(h.shape[0], -1)
        dense = lambda name: nn.Dense(1, name=name, param_dtype=self.param_dtype)  # noqa: E731
        linear = dense("l1")(h) * dense("l2")(h)
        return (linear + dense("l3")(jnp.square(h)))[:, 0]


RESNET_CONFIGS: dict[str, dict] = {
    # MDSM's networks (the papers' settings) and a CPU-sized one. Checked against zengyi-li/MDSM
    # (models/ResNet.py, train.py, exps/*_train.sh): CIFAR-10 trains Res18_Quadratic(3, n_chan=128,
    # 32, normalize=False, AF=ELU): a 3×3 stem to 128 channels, then 3 stages of 3 blocks (the first
    # of each downsamples: 1×1 shortcut after a 2×2 mean-pool, conv2 before it) at 256/512/1024
    # channels; every block ELU → 3×3 conv (in → in, no bias) → ELU → 3×3 conv (in → out), a 1×1-conv
    # shortcut even in non-resampling blocks (their `resample='none'` is not None), stride 1
    # everywhere, no normalisation, and the quadratic read-out over the 4×4×1024 features.
    # Fashion-MNIST and MNIST train Res12_Quadratic(1, n_chan=64, 32): 2 blocks per stage.
    # (Their sample.py builds an SE-ResNet with Swish for CIFAR that the repository does not contain;
    # the trained network is this one.)
    "fashion_mnist": dict(width=64, n_stages=3, blocks_per_stage=2),
    "cifar10": dict(width=128, n_stages=3, blocks_per_stage=3),
    "cpu": dict(width=16, n_stages=3, blocks_per_stage=1),
}
