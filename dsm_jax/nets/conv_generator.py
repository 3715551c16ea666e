"""A convolutional generator for images (an option beside DDE's DenseNet generator)."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from dsm_jax import validation
from dsm_jax.nets.conv import check_conv_impl, conv_layer
from dsm_jax.nets.densenet import check_latents
from dsm_jax.nets.layers import activation


def upsample_nearest(x, factor: int = 2):
    """Nearest-neighbour upsampling of NHWC images by an integer ``factor``."""
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


class ConvGenerator(nn.Module):
    """DCGAN-like generator without normalisation (so G(z) depends on its own z only):
    ``Dense → (s, s, width·2^n) → n × [2× nearest upsample → 3×3 conv → act] → 3×3 conv →
    sigmoid``, ``s = H / 2^n``; channels halve at every upsample (``width`` at full size).

    Upsample + conv instead of transposed convs avoids checkerboard artefacts; with
    the default ``conv_impl="canonical"`` (:class:`CanonicalConv`) there is no XLA:CPU slowdown
    inside scans.
    """

    width: int = 64
    n_upsamples: int = 3
    image_shape: tuple[int, ...] = (32, 32, 1)
    activation: str = "relu"
    conv_impl: str = "canonical"
    param_dtype: Any = jnp.float32

    def __post_init__(self):  # refused when the module is built, before any init or apply
        validation.check_module_sizes(type(self).__name__, width=self.width, n_upsamples=self.n_upsamples)
        h_out, w_out, _ = validation.check_shape("image_shape", self.image_shape, ndim=3)
        scale = 2**self.n_upsamples
        if h_out % scale or w_out % scale:
            raise ValueError(
                f"ConvGenerator: image_shape {self.image_shape} is not divisible by 2**n_upsamples = {scale}; "
                f"lower `n_upsamples`.")
        activation(self.activation)
        check_conv_impl(self.conv_impl)
        super().__post_init__()

    @nn.compact
    def __call__(self, z):
        check_latents(type(self).__name__, z)
        h_out, w_out, c_out = self.image_shape
        scale = 2**self.n_upsamples
        conv = lambda features, name: conv_layer(  # noqa: E731
            self.conv_impl, features, (3, 3), name=name, param_dtype=self.param_dtype)
        act = activation(self.activation)
        channels = self.width * scale
        h = act(nn.Dense(h_out // scale * (w_out // scale) * channels, name="project", param_dtype=self.param_dtype)(z))
        h = h.reshape(z.shape[0], h_out // scale, w_out // scale, channels)
        for i in range(self.n_upsamples):
            channels //= 2
            h = act(conv(max(channels, 1), f"conv_{i}")(upsample_nearest(h)))
        return nn.sigmoid(conv(c_out, "to_image")(h))
