"""PyTorch implementations of exactly the computations the benchmark times in dsm_jax.

Never imported by the library: PyTorch is the optional ``bench`` extra. Each network takes
its weights from the flax parameters (:func:`mlp_from_flax`, :func:`resnet_from_flax`) so
the first-step losses and gradients can be checked equal to float tolerance.

Layouts: flax is NHWC with kernels (kh, kw, c_in, c_out) and Dense kernels (in, out);
torch is NCHW with Conv2d weights (c_out, c_in, kh, kw) and Linear weights (out, in). The
ResNet read-out flattens NHWC features in flax and NCHW features here, so its Dense kernels
are permuted from (H, W, C) to (C, H, W) order on the way across.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_ACTS = {"softplus": F.softplus, "elu": F.elu}


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32, copy=True))


def nchw(images) -> torch.Tensor:
    """jax/flax NHWC images (or feature maps) as a contiguous NCHW tensor."""
    return _t(images).permute(0, 3, 1, 2).contiguous()


def oihw(kernel) -> torch.Tensor:
    """A flax HWIO convolution kernel as torch's OIHW weight."""
    return _t(kernel).permute(3, 2, 0, 1).contiguous()


# ---------------------------------------------------------------------------------------
# DDE toy MLP: depth × Dense(width) + act, then Dense(1).
# ---------------------------------------------------------------------------------------
class MLPEnergy(nn.Module):
    def __init__(self, in_dim: int, depth: int, width: int, activation: str = "softplus"):
        super().__init__()
        dims = [in_dim] + [width] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(dims[-1], 1)
        self.act = _ACTS[activation]

    def forward(self, x):
        h = x.reshape(x.shape[0], -1)
        for layer in self.hidden:
            h = self.act(layer(h))
        return self.out(h)[:, 0]


def mlp_from_flax(params, in_dim: int, depth: int, width: int, activation: str = "softplus") -> MLPEnergy:
    """A torch :class:`MLPEnergy` holding the weights of ``dsm_jax.MLPEnergy(depth, width)``."""
    p = params["params"]["MLP_0"]
    model = MLPEnergy(in_dim, depth, width, activation)
    with torch.no_grad():
        for i, layer in enumerate(list(model.hidden) + [model.out]):
            dense = p[f"Dense_{i}"]
            layer.weight.copy_(_t(dense["kernel"]).T)
            layer.bias.copy_(_t(dense["bias"]))
    return model


# ---------------------------------------------------------------------------------------
# MDSM ResNet energy (dsm_jax.nets.ResNetEnergy), NCHW.
# ---------------------------------------------------------------------------------------
class ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, downsample: bool):
        super().__init__()
        self.downsample = downsample
        self.shortcut = nn.Conv2d(c_in, c_out, 1)
        self.conv1 = nn.Conv2d(c_in, c_in, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x):
        shortcut = F.avg_pool2d(x, 2) if self.downsample else x
        shortcut = self.shortcut(shortcut)
        h = self.conv2(F.elu(self.conv1(F.elu(x))))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        return shortcut + h


class ResNetEnergy(nn.Module):
    def __init__(self, width: int, n_stages: int, blocks_per_stage: int, in_channels: int = 1, image_size: int = 32):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        blocks, c = [], width
        for stage in range(n_stages):
            for block in range(blocks_per_stage):
                c_out = width * 2 ** (stage + 1)
                blocks.append(ResidualBlock(c, c_out, downsample=block == 0))
                c = c_out
        self.blocks = nn.ModuleList(blocks)
        self.feature_shape = (c, image_size // 2**n_stages, image_size // 2**n_stages)
        n_features = int(np.prod(self.feature_shape))
        self.l1, self.l2, self.l3 = (nn.Linear(n_features, 1) for _ in range(3))

    def forward(self, x):
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        h = h.reshape(h.shape[0], -1)
        return (self.l1(h) * self.l2(h) + self.l3(h * h))[:, 0]


def _copy_conv(conv: nn.Conv2d, p) -> None:
    conv.weight.copy_(oihw(p["kernel"]))
    if conv.bias is not None:
        conv.bias.copy_(_t(p["bias"]))


def resnet_from_flax(params, width: int, n_stages: int, blocks_per_stage: int, in_channels: int = 1,
                     image_size: int = 32, channels_last: bool = False) -> ResNetEnergy:
    """A torch :class:`ResNetEnergy` holding the weights of ``dsm_jax.ResNetEnergy``."""
    p = params["params"]
    model = ResNetEnergy(width, n_stages, blocks_per_stage, in_channels, image_size)
    c, h, w = model.feature_shape
    with torch.no_grad():
        _copy_conv(model.stem, p["stem"])
        for i, block in enumerate(model.blocks):
            pb = p[f"ResidualBlock_{i}"]
            for name in ("shortcut", "conv1", "conv2"):
                _copy_conv(getattr(block, name), pb[name])
        for name in ("l1", "l2", "l3"):
            kernel = _t(p[name]["kernel"])  # (H·W·C, 1), NHWC flattening
            getattr(model, name).weight.copy_(kernel.reshape(h, w, c).permute(2, 0, 1).reshape(1, -1))
            getattr(model, name).bias.copy_(_t(p[name]["bias"]))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


# ---------------------------------------------------------------------------------------
# Losses (dsm_jax.dsm_loss / dsm_jax.mdsm_loss with the noise passed in) and steps.
# ---------------------------------------------------------------------------------------
def _energy_grad(model, x_noisy):
    x_noisy = x_noisy.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x_noisy).sum(), x_noisy, create_graph=True)
    return g


def dsm_loss(model, x, noise, sigma: float):
    """mean_i ‖x̃ − σ²∇E(x̃) − x‖², x̃ = x + σ·noise (dsm_jax.dsm_loss)."""
    x_noisy = x + sigma * noise
    denoised = x_noisy - sigma**2 * _energy_grad(model, x_noisy)
    return (denoised - x).square().reshape(x.shape[0], -1).sum(1).mean()


def mdsm_loss(model, x, sigmas, noise, sigma0: float):
    """mean_i ‖x − x̃ + σ₀²∇E(x̃)‖² / σ_i², x̃ = x + σ_i·noise (dsm_jax.mdsm_loss)."""
    s = sigmas.reshape(-1, *([1] * (x.ndim - 1)))
    x_noisy = x + s * noise
    residual = x - x_noisy + sigma0**2 * _energy_grad(model, x_noisy)
    return (residual.square().reshape(x.shape[0], -1).sum(1) / sigmas.square()).mean()


def adam(model, lr: float, b1: float = 0.9, b2: float = 0.999):
    # fused: PyTorch's fastest Adam on CPU (same update as optax.adam, eps = 1e-8).
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, betas=(b1, b2), eps=1e-8, fused=True)
    except (RuntimeError, TypeError):  # pragma: no cover - older builds without a fused CPU Adam
        return torch.optim.Adam(model.parameters(), lr=lr, betas=(b1, b2), eps=1e-8, foreach=True)


def make_dsm_step(model, opt, sigma: float):
    """``step(x) -> loss``: noise drawn by torch, loss, parameter gradient, Adam update."""

    def step(x):
        loss = dsm_loss(model, x, torch.randn_like(x), sigma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def make_mdsm_step(model, opt, sigma_min: float, sigma_max: float, sigma0: float):
    """``step(x) -> loss`` with per-example geometric σ as in dsm_jax.mdsm_loss."""
    log_ratio = float(np.log(sigma_max / sigma_min))

    def step(x):
        sigmas = sigma_min * torch.exp(log_ratio * torch.rand(x.shape[0]))
        loss = mdsm_loss(model, x, sigmas, torch.randn_like(x), sigma0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def energy_and_grad(model, x):
    x = x.detach().requires_grad_(True)
    e = model(x)
    (g,) = torch.autograd.grad(e.sum(), x)
    return e.detach(), g


def langevin_chain(model, x0, n_steps: int, step_size: float, temperature: float = 1.0):
    """``n_steps`` unadjusted Langevin steps x ← x − (η/2)∇E(x) + √(ηT)·z, structured as
    dsm_jax.langevin: ∇E at x0 first, then after each move E and ∇E at the new point (kept
    for the next move), i.e. n_steps + 1 gradient evaluations."""
    e, g = energy_and_grad(model, x0)
    x = x0
    for _ in range(n_steps):
        x = x - 0.5 * step_size * g + (step_size * temperature) ** 0.5 * torch.randn_like(x)
        e, g = energy_and_grad(model, x)
    return x
