"""flax.linen networks. ``module.apply`` is the pure function; :func:`energy_fn_of` adapts a
module to the project's ``energy_fn(params, x) -> (batch,)`` convention."""
from __future__ import annotations

import functools
from typing import Callable, Sequence

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
    except KeyError:
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
    except KeyError:
        raise ValueError(f"Unknown `weight_init` {name!r}; choose one of {sorted(DENSE_INITS)}.") from None


class MLP(nn.Module):
    """Plain MLP on flattened inputs: ``depth`` hidden layers of ``width`` units; ``weight_init``
    one of :data:`DENSE_INITS` (the parameter tree is the same for every choice)."""

    depth: int
    width: int
    out_dim: int
    activation: str = "softplus"
    weight_init: str = "lecun"

    @nn.compact
    def __call__(self, x):
        act = activation(self.activation)
        kernel_init, bias_init = dense_initializers(self.weight_init)
        h = x.reshape(x.shape[0], -1)
        for _ in range(self.depth):
            h = act(nn.Dense(self.width, kernel_init=kernel_init, bias_init=bias_init)(h))
        return nn.Dense(self.out_dim, kernel_init=kernel_init, bias_init=bias_init)(h)


class MLPEnergy(nn.Module):
    """Scalar energy E(x) = MLP(x). DDE's 2-D setting: depth 25, width 32, softplus, Xavier init."""

    depth: int = 25
    width: int = 32
    activation: str = "softplus"
    weight_init: str = "lecun"

    @nn.compact
    def __call__(self, x):
        return MLP(self.depth, self.width, 1, self.activation, self.weight_init)(x)[:, 0]


class ResidualMLPGenerator(nn.Module):
    """DDE's toy generator G(z) = MLP(z) + z (latent dimension = data dimension); their toys
    use ReLU for eight_gaussians and two_spirals, softplus for the checkerboard."""

    depth: int = 25
    width: int = 32
    activation: str = "softplus"
    weight_init: str = "lecun"

    @nn.compact
    def __call__(self, z):
        return z + MLP(self.depth, self.width, z.shape[-1], self.activation, self.weight_init)(z)


def energy_fn_of(module: nn.Module) -> Callable:
    """``energy_fn(params, x) = module.apply(params, x)``: a pure function of (params, x)."""

    def energy_fn(params, x):
        return module.apply(params, x)

    return energy_fn


def init_params(module: nn.Module, key, event_shape: Sequence[int]):
    """Initialise ``module`` for inputs of shape ``(batch, *event_shape)``.

    Jitted: run eagerly, a conv net's init dispatches (and compiles) op by op."""
    return jax.jit(module.init)(key, jnp.zeros((1, *event_shape), jnp.float32))


def same_padding(kernel_size) -> tuple[tuple[int, int], tuple[int, int]]:
    """(low, high) padding of the two spatial axes for "SAME" output size, as ``nn.Conv``
    pads: the extra pixel of an even kernel goes on the high side."""
    kh, kw = kernel_size
    return ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)


class _SameConv(nn.Module):
    """A stride-1 'SAME' convolution with ``nn.Conv(features, kernel_size)``'s parameters
    (``kernel`` (kh, kw, c_in, c_out), ``bias``), so the implementations below are
    interchangeable on the same parameters; a subclass says how to correlate."""

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (kh, kw, x.shape[-1], self.features))
        y = self._correlate(x, kernel)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return y

    def _correlate(self, x, kernel):
        raise NotImplementedError


class MatmulConv(_SameConv):
    """A stride-1 'SAME' convolution written as shifted slices + one matmul (im2col).

    Same parameters (``kernel`` (kh, kw, c_in, c_out), ``bias``) and same result as
    ``nn.Conv(features, kernel_size)`` up to float summation order. Why: XLA:CPU lowers the
    convolutions that appear in the input- and parameter-gradients of a conv net to a naive
    loop when they sit inside a ``lax.scan``/``while`` body (jax-ml/jax#12868), making a
    scanned Langevin chain or training chunk 5–40× slower on CPU; slices, pads and dots
    have no such cliff, and their gradients are again slices, pads and dots.
    """

    def _correlate(self, x, kernel):
        kh, kw, c_in, _ = kernel.shape
        h, w = x.shape[1:3]
        padded = jnp.pad(x, ((0, 0), *same_padding(self.kernel_size), (0, 0)))
        patches = jnp.concatenate(
            [padded[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)], axis=-1
        )
        return patches @ kernel.reshape(kh * kw * c_in, self.features)


# ---------------------------------------------------------------------------------------
# A convolution whose every reverse-mode derivative is again a canonical convolution.
# ---------------------------------------------------------------------------------------
# XLA:CPU runs a convolution on its fast library path only when its dimension labels are
# canonical (input b01f, kernel 01io, output b01f). The convolutions autodiff writes for the
# input gradient (kernel 01oi) and the kernel gradient (f01b_i01o->01bf) are not; outside
# loops XLA's conv-canonicalization pass rewrites them, but that pass only visits the entry
# computation, so inside a while/scan body they fall back to a naive loop nest
# (jax-ml/jax#12868; measured 25x slower for a ResNet training step). Here both gradients
# are written out as canonical convolutions of explicitly transposed operands, with custom
# VJPs that close over each other, so every order of reverse-mode differentiation (the DSM
# loss differentiates the input gradient again) stays canonical, inside loops or not.
_NHWC = ("NHWC", "HWIO", "NHWC")


def _flip_io(kernel):
    """The adjoint's kernel: spatially flipped, input/output channels swapped."""
    return jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)


def _adjoint_pads(kernel_hw, pads):
    """Pads of the transposed correlation, so its output has the input's size."""
    return tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(kernel_hw, pads))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def canonical_conv(x, kernel, pads):
    """Stride-1 correlation of NHWC ``x`` with an HWIO ``kernel``, ``pads`` = ((top, bottom),
    (left, right)): ``lax.conv_general_dilated`` with the same numbers, but its gradients (of
    any order) are canonical convolutions too (see the note above)."""
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=_NHWC)


def _canonical_conv_fwd(x, kernel, pads):
    return canonical_conv(x, kernel, pads), (x, kernel)


def _canonical_conv_bwd(pads, res, g):
    x, kernel = res
    dx = canonical_conv(g, _flip_io(kernel), _adjoint_pads(kernel.shape[:2], pads))
    return dx, _conv_kernel_grad(x, g, pads, kernel.shape[:2])


canonical_conv.defvjp(_canonical_conv_fwd, _canonical_conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_kernel_grad(x, g, pads, kernel_hw):
    """dK[i, j, c, o] = Σ_{n,h,w} x_pad[n, h+i, w+j, c]·g[n, h, w, o] as one canonical
    convolution: channels in the batch slot, examples in the feature slot, the output image
    as the window. The padding stays inside the convolution: padding x beforehand measured
    2.9x slower for the 3x3 kernel gradients of the MDSM ResNet."""
    del kernel_hw  # fixed by the shapes; a static argument so the VJP can rebuild shapes
    out = jax.lax.conv_general_dilated(
        x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3), (1, 1), pads, dimension_numbers=_NHWC)
    return out.transpose(1, 2, 0, 3)


def _conv_kernel_grad_fwd(x, g, pads, kernel_hw):
    return _conv_kernel_grad(x, g, pads, kernel_hw), (x, g)


def _conv_kernel_grad_bwd(pads, kernel_hw, res, dk):
    # Bilinear in (x, g): its partials are the adjoint and the forward convolution with dk.
    x, g = res
    return canonical_conv(g, _flip_io(dk), _adjoint_pads(kernel_hw, pads)), canonical_conv(x, dk, pads)


_conv_kernel_grad.defvjp(_conv_kernel_grad_fwd, _conv_kernel_grad_bwd)


class CanonicalConv(_SameConv):
    """A stride-1 'SAME' convolution, same parameters and result as ``nn.Conv(features,
    kernel_size)``, whose gradients of every order are canonical convolutions
    (:func:`canonical_conv`): XLA:CPU's fast path inside ``lax.scan``/``while`` bodies as well
    as outside. Reverse mode only (custom VJPs: ``jax.jvp`` through it raises)."""

    def _correlate(self, x, kernel):
        return canonical_conv(x, kernel, same_padding(self.kernel_size))


CONV_IMPLS = ("xla", "matmul", "canonical")


def conv_layer(impl: str, features: int, kernel_size, use_bias: bool = True, name: str | None = None):
    """``nn.Conv`` (``impl="xla"``), :class:`MatmulConv` (``"matmul"``) or
    :class:`CanonicalConv` (``"canonical"``): same parameters, same results up to float
    summation order."""
    if impl == "xla":
        return nn.Conv(features, kernel_size, use_bias=use_bias, name=name)
    if impl == "matmul":
        return MatmulConv(features, tuple(kernel_size), use_bias=use_bias, name=name)
    if impl == "canonical":
        return CanonicalConv(features, tuple(kernel_size), use_bias=use_bias, name=name)
    raise ValueError(
        f"Unknown `conv_impl` {impl!r}; choose 'canonical' (XLA:CPU's fast convolutions inside and "
        f"outside scans), 'matmul' (slices + one matmul) or 'xla' (nn.Conv).")


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

    @nn.compact
    def __call__(self, x):
        act = activation(self.activation)
        shortcut = mean_pool(x) if self.downsample else x
        shortcut = conv_layer(self.conv_impl, self.features, (1, 1), name="shortcut")(shortcut)
        h = conv_layer(self.conv_impl, x.shape[-1], (3, 3), use_bias=False, name="conv1")(act(x))
        h = conv_layer(self.conv_impl, self.features, (3, 3), name="conv2")(act(h))
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
    or ``"xla"`` (``nn.Conv``); parameters are interchangeable.
    """

    width: int = 64
    n_stages: int = 3
    blocks_per_stage: int = 2
    activation: str = "elu"
    conv_impl: str = "canonical"

    @nn.compact
    def __call__(self, x):
        if x.ndim != 4:
            raise ValueError(f"ResNetEnergy expects images (batch, H, W, C), got shape {x.shape}.")
        h = conv_layer(self.conv_impl, self.width, (3, 3), name="stem")(x)
        for stage in range(self.n_stages):
            for block in range(self.blocks_per_stage):
                h = ResidualBlock(
                    self.width * 2 ** (stage + 1), downsample=block == 0, activation=self.activation,
                    conv_impl=self.conv_impl,
                )(h)
        h = h.reshape(h.shape[0], -1)
        linear = nn.Dense(1, name="l1")(h) * nn.Dense(1, name="l2")(h)
        return (linear + nn.Dense(1, name="l3")(jnp.square(h)))[:, 0]


RESNET_CONFIGS: dict[str, dict] = {
    # MDSM's networks (the papers' settings) and a CPU-sized one.
    "fashion_mnist": dict(width=64, n_stages=3, blocks_per_stage=2),
    "cifar10": dict(width=128, n_stages=3, blocks_per_stage=3),
    "cpu": dict(width=16, n_stages=3, blocks_per_stage=1),
}


# ---------------------------------------------------------------------------------------
# DDE's image networks (Bigdeli et al.): DenseNet-style MLPs, plus a convolutional option.
# ---------------------------------------------------------------------------------------
DDE_DENSENET_PAPER: dict[str, int] = {
    # The DDE code's MNIST / Fashion-MNIST networks: 16 dense layers, each layer's output
    # concatenated to its input; growth 256 for E_p and E_q, 64 for G; a 16-d latent.
    "depth": 16,
    "energy_growth": 256,
    "generator_growth": 64,
    "latent_dim": 16,
}


def _check_net_size(owner: str, **sizes) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner}: `{name}` must be an int >= 1, got {value!r}.")


class DenseNetMLP(nn.Module):
    """DenseNet-style MLP on flattened inputs (the DDE code's image network).

    Layer ``i`` computes ``y = act(Dense(growth)(h))`` and passes on ``concat([y, h])``, so
    after ``depth`` layers the features are ``d_in + depth·growth`` wide (every layer sees
    the input and every earlier layer's output); a final ``Dense(out_dim)`` reads them out.
    """

    depth: int = DDE_DENSENET_PAPER["depth"]
    growth: int = DDE_DENSENET_PAPER["energy_growth"]
    out_dim: int = 1
    activation: str = "softplus"
    readout_init_scale: float = 1.0  # std multiplier of the read-out's LeCun-normal initialisation

    @nn.compact
    def __call__(self, x):
        _check_net_size(type(self).__name__, depth=self.depth, growth=self.growth, out_dim=self.out_dim)
        act = activation(self.activation)
        h = x.reshape(x.shape[0], -1)
        for i in range(self.depth):
            h = jnp.concatenate([act(nn.Dense(self.growth, name=f"dense_{i}")(h)), h], axis=-1)
        # The read-out's input, (batch, d_in + depth·growth): apply(..., mutable="intermediates").
        self.sow("intermediates", "features", h)
        init = nn.initializers.variance_scaling(self.readout_init_scale**2, "fan_in", "truncated_normal")
        return nn.Dense(self.out_dim, kernel_init=init, name="readout")(h)


class DenseNetEnergy(nn.Module):
    """Scalar energy ``E(x) = DenseNetMLP(x)`` (shape ``(batch,)``): DDE's E_p / E_q on
    images, ``depth`` 16 and ``growth`` 256 in the paper. The DDE code's network is log p̂;
    here E = −log p̂ (the project convention), which only flips the read-out's sign.

    ``quadratic=True`` adds a learned diagonal Gaussian term ``½ Σᵢ exp(aᵢ)(xᵢ − bᵢ)²``
    (per-coordinate centre ``b`` and log-precision ``a``; not in the paper). Why: a softplus
    MLP's gradient is bounded and tends to a constant far from the data, while the DSM
    target ∇E(x̃) ≈ (x̃ − E[x | x̃])/σ² grows linearly with the noise. On Fashion-MNIST at
    σ = 0.5 the plain 16 × 64 DenseNet's DSM loss plateaued at ≈ 132 (worse than predicting
    the mean image, 68), with the term it reached 34 after 1,000 steps of batch 100.
    """

    depth: int = DDE_DENSENET_PAPER["depth"]
    growth: int = DDE_DENSENET_PAPER["energy_growth"]
    activation: str = "softplus"
    quadratic: bool = False

    @nn.compact
    def __call__(self, x):
        e = DenseNetMLP(self.depth, self.growth, 1, self.activation, name="mlp")(x)[:, 0]
        if self.quadratic:
            flat = x.reshape(x.shape[0], -1)
            centre = self.param("centre", nn.initializers.zeros_init(), (flat.shape[1],))
            log_prec = self.param("log_prec", nn.initializers.zeros_init(), (flat.shape[1],))
            e = e + 0.5 * jnp.sum(jnp.exp(log_prec) * jnp.square(flat - centre), axis=1)
        return e


class DenseNetGenerator(nn.Module):
    """DDE's image generator: latent ``z`` (batch, latent_dim) → DenseNetMLP → sigmoid →
    images ``(batch, *image_shape)`` in (0, 1). Paper: 16-d latent, depth 16, growth 64."""

    depth: int = DDE_DENSENET_PAPER["depth"]
    growth: int = DDE_DENSENET_PAPER["generator_growth"]
    image_shape: tuple[int, ...] = (32, 32, 1)
    activation: str = "softplus"
    # > 1 widens the initial generator's spread over z (LeCun init gives pixel std ≈ 0.06
    # across z, against 0.21 in Fashion-MNIST).
    readout_init_scale: float = 1.0

    @nn.compact
    def __call__(self, z):
        if z.ndim != 2:
            raise ValueError(f"{type(self).__name__} expects latents (batch, latent_dim), got shape {z.shape}.")
        n_out = 1
        for s in self.image_shape:
            n_out *= int(s)
        logits = DenseNetMLP(self.depth, self.growth, n_out, self.activation, self.readout_init_scale, name="mlp")(z)
        return nn.sigmoid(logits).reshape(z.shape[0], *self.image_shape)


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

    @nn.compact
    def __call__(self, z):
        _check_net_size(type(self).__name__, width=self.width, n_upsamples=self.n_upsamples)
        if z.ndim != 2:
            raise ValueError(f"{type(self).__name__} expects latents (batch, latent_dim), got shape {z.shape}.")
        h_out, w_out, c_out = self.image_shape
        scale = 2**self.n_upsamples
        if h_out % scale or w_out % scale:
            raise ValueError(
                f"ConvGenerator: image_shape {self.image_shape} is not divisible by 2**n_upsamples = {scale}; "
                f"lower `n_upsamples`.")
        act = activation(self.activation)
        channels = self.width * scale
        h = act(nn.Dense(h_out // scale * (w_out // scale) * channels, name="project")(z))
        h = h.reshape(z.shape[0], h_out // scale, w_out // scale, channels)
        for i in range(self.n_upsamples):
            channels //= 2
            h = act(conv_layer(self.conv_impl, max(channels, 1), (3, 3), name=f"conv_{i}")(upsample_nearest(h)))
        return nn.sigmoid(conv_layer(self.conv_impl, c_out, (3, 3), name="to_image")(h))
