"""Stride-1 'SAME' convolutions with ``nn.Conv``'s parameters, in three implementations
(:data:`CONV_IMPLS`): XLA's own, one matmul over shifted slices, and one whose gradients of
every order stay canonical convolutions (XLA:CPU's fast path inside scans)."""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dsm_jax import validation

def same_padding(kernel_size) -> tuple[tuple[int, int], tuple[int, int]]:
    """(low, high) padding of the two spatial axes for "SAME" output size, as ``nn.Conv``
    pads: the extra pixel of an even kernel goes on the high side."""
    kh, kw = kernel_size
    return ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)


class _SameConv(nn.Module):
    """A stride-1 'SAME' convolution with ``nn.Conv(features, kernel_size)``'s parameters
    (``kernel`` (kh, kw, c_in, c_out), ``bias``), so the implementations below are
    interchangeable on the same parameters; a subclass says how to correlate.

    ``param_dtype`` is explicit (float32, as ``nn.Conv``'s): left to the initialisers, the
    kernel would be float64 under ``jax_enable_x64`` while the input is float32, and the
    convolution refuses mixed dtypes. Input and kernel are promoted to a common dtype."""

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    use_bias: bool = True
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        validation.check_module_sizes(type(self).__name__, features=self.features)
        validation.check_shape("kernel_size", self.kernel_size, ndim=2)
        super().__post_init__()

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (kh, kw, x.shape[-1], self.features),
                            self.param_dtype)
        x, kernel = nn.dtypes.promote_dtype(x, kernel)
        y = self._correlate(x, kernel)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
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


def check_conv_impl(impl) -> None:
    if impl not in CONV_IMPLS:
        raise ValueError(
            f"Unknown `conv_impl` {impl!r}; choose 'canonical' (XLA:CPU's fast convolutions inside and "
            f"outside scans), 'matmul' (slices + one matmul) or 'xla' (nn.Conv).")


def conv_layer(impl: str, features: int, kernel_size, use_bias: bool = True, name: str | None = None,
               param_dtype: Any = jnp.float32):
    """``nn.Conv`` (``impl="xla"``), :class:`MatmulConv` (``"matmul"``) or
    :class:`CanonicalConv` (``"canonical"``): same parameters, same results up to float
    summation order."""
    check_conv_impl(impl)
    if impl == "xla":
        return nn.Conv(features, kernel_size, use_bias=use_bias, name=name, param_dtype=param_dtype)
    cls = MatmulConv if impl == "matmul" else CanonicalConv
    return cls(features, tuple(kernel_size), use_bias=use_bias, name=name, param_dtype=param_dtype)

