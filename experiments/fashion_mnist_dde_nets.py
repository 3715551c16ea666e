"""fashion_mnist_dde's networks, latents, σ schedule, optimisers and initial state (built from its config)."""
from __future__ import annotations

import jax
import numpy as np

import dsm_jax as dj
from dsm_jax import nets
from experiments.common import image_shape
from experiments.configs.fashion_mnist_dde import ARCHS


def model_shape(cfg) -> tuple[int, int, int]:
    """The networks' image shape (H, W, C): the data's, or its centre ``model.image_size``² crop."""
    h, w, c = image_shape(cfg.data)
    size = cfg.model.image_size
    if size is None:
        return h, w, c
    if size > min(h, w):
        raise ValueError(f"`model.image_size` {size} is larger than the data's {h}x{w} images; pass at most "
                         f"{min(h, w)} (or None for the data's size).")
    return size, size, c


def _offsets(cfg):
    (h, w, _), (mh, mw, _) = image_shape(cfg.data), model_shape(cfg)
    return (h - mh) // 2, (w - mw) // 2, h - mh, w - mw


def to_model_images(cfg, x):
    """Data images (n, H, W, C) -> the networks' centre crop (a no-op without ``model.image_size``)."""
    top, left, dh, dw = _offsets(cfg)
    if not (dh or dw):
        return x
    return np.ascontiguousarray(x[:, top:top + x.shape[1] - dh, left:left + x.shape[2] - dw])


def to_data_images(cfg, x):
    """The networks' images -> the data's size by zero padding (what the FD classifier scores)."""
    top, left, dh, dw = _offsets(cfg)
    if not (dh or dw):
        return x
    return np.pad(np.asarray(x), ((0, 0), (top, dh - top), (left, dw - left), (0, 0)))


def energy_module(cfg):
    m = cfg.model
    if m.arch == "densenet":
        return nets.DenseNetEnergy(m.depth, m.growth, m.activation, quadratic=m.quadratic)
    if m.arch == "conv":
        return dj.ResNetEnergy(width=m.conv_width, n_stages=m.conv_stages, blocks_per_stage=m.conv_blocks,
                               conv_impl=m.conv_impl)
    raise ValueError(f"Unknown `model.arch` {m.arch!r}; choose one of {ARCHS}.")


def generator_module(cfg):
    m, g = cfg.model, cfg.gen
    if m.arch == "densenet":
        return nets.DenseNetGenerator(g.depth, g.growth, model_shape(cfg), m.activation, g.init_scale)
    if m.arch == "conv":
        return nets.ConvGenerator(g.conv_width, 3, image_shape(cfg.data), conv_impl=m.conv_impl)
    raise ValueError(f"Unknown `model.arch` {m.arch!r}; choose one of {ARCHS}.")


def latent_sampler(cfg, n: int):
    """``latent_fn(key) -> z`` of shape (n, gen.latent_dim), z ~ N(0, I)."""
    return lambda key: jax.random.normal(key, (n, cfg.gen.latent_dim))


def sigma_of(cfg):
    """σ, or the annealing schedule σ(step) when ``train.sigma_start`` differs from ``train.sigma``."""
    t = cfg.train
    if t.sigma_start == t.sigma:
        return t.sigma
    return dj.geometric_sigma_schedule(t.sigma_start, t.sigma, max(1, int(t.anneal_frac * t.steps)))


def optimizers(cfg):
    """(generator Adam, energy Adam): E_p and E_q get separate states of the energy one."""
    return dj.adam(cfg.gen.lr, cfg.gen.b1, cfg.gen.b2), dj.adam(cfg.train.lr, cfg.train.b1, cfg.train.b2)


def init_state(cfg) -> dj.DDEState:
    k_g, k_p, k_q, k_state = jax.random.split(jax.random.key(cfg.seed), 4)
    gen_opt, energy_opt = optimizers(cfg)
    energy, shape = energy_module(cfg), model_shape(cfg)
    return dj.init_dde_state(
        dj.init_params(generator_module(cfg), k_g, (cfg.gen.latent_dim,)),
        dj.init_params(energy, k_p, shape), dj.init_params(energy, k_q, shape),
        gen_opt, energy_opt, k_state)
