"""2-D toy distributions with exact Gaussian-smoothed log densities.

Each toy gives a sampler for the clean law ``p`` and the exact log density of
``p̂_σ = p * N(0, σ² I)``, the law of ``x + σ ε``. The data sets follow the
FFJORD / DDE toy code (same scales), so numbers are comparable with the papers.
Exactness is what makes the metrics in :mod:`dsm_jax.metrics` honest: every
density is closed form, except ``two_spirals`` which integrates a closed-form
kernel over the spiral parameter with a fixed 512-node Gauss-Legendre rule
(|Δ log p̂| < 1e-5 against 1024 nodes wherever p̂ > 1e-6, for σ >= 0).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import i0e, log_ndtr, logsumexp

from dsm_jax import validation

__all__ = ["Toy2D", "TOY_NAMES", "get_toy", "sample_smoothed"]


class Toy2D(NamedTuple):
    """A 2-D toy law: ``sample(key, n) -> (n, 2)`` clean samples,
    ``log_density(x, sigma) -> (n,)`` exact ``log p̂_σ(x)`` and a square
    ``bounds = (lo, hi)`` holding >= 99.9% of ``p̂_σ`` for ``σ <= 0.5``.

    ``nearest_component(x, sigma) -> (index, z)``: for each point the mixture component it
    lies nearest to (a Gaussian mode, a ring, a spiral arm, a square; ``n_components`` of
    them, equally weighted in ``p``) and its distance to that component's clean skeleton
    (centre, circle, curve, square) in standard deviations of ``p̂_σ``'s spread across it,
    ``sqrt(s² + σ²)`` with ``s`` the toy's own noise. :mod:`dsm_jax.coverage` reads mode
    weights and the off-support fraction (``z > 3``) from it."""

    name: str
    sample: Callable
    log_density: Callable
    bounds: tuple[float, float]
    n_components: int
    nearest_component: Callable


TOY_NAMES = ("eight_gaussians", "two_spirals", "checkerboard", "rings")


def _log_ndtr_diff(a, b):
    """log(Φ(a) − Φ(b)) for a > b, accurate far in either tail."""
    # Φ(a) − Φ(b) = Φ(−b) − Φ(−a): reflect so the interval sits in the lower
    # tail, where log_ndtr keeps relative precision (no 1 − 1 cancellation).
    flip = a + b > 0
    hi = jnp.where(flip, -b, a)
    lo = jnp.where(flip, -a, b)
    l_hi = log_ndtr(hi)
    return l_hi + jnp.log(-jnp.expm1(log_ndtr(lo) - l_hi))


def _wrap(name, sample, log_density, bounds, n_components, nearest_component):
    # check eagerly, then run compiled (op-by-op dispatch of log_ndtr is slow)
    sample = jax.jit(sample, static_argnums=1)
    log_density = jax.jit(log_density)
    nearest_component = jax.jit(nearest_component)

    def checked_sample(key, n):
        validation.check_prng_key("key", key)
        return sample(key, validation.check_positive_int("n", n, what="a Python int: static under jit"))

    def checked_log_density(x, sigma):
        x = validation.check_points_2d("x", x)
        validation.check_sigma("sigma", sigma)
        return log_density(jnp.asarray(x), jnp.asarray(sigma, jnp.float32))

    def checked_nearest_component(x, sigma):
        x = validation.check_points_2d("x", x)
        validation.check_sigma("sigma", sigma)
        return nearest_component(jnp.asarray(x), jnp.asarray(sigma, jnp.float32))

    return Toy2D(name, checked_sample, checked_log_density, bounds, n_components, checked_nearest_component)


def _nearest(dist, spread):
    """``(argmin, min / spread)`` over the last axis of per-component distances."""
    return jnp.argmin(dist, axis=1).astype(jnp.int32), jnp.min(dist, axis=1) / spread


# ----------------------------------------------------------------------------
# eight_gaussians: 8 isotropic Gaussians on a circle (FFJORD "8gaussians")

_EG_RADIUS = 4.0 / math.sqrt(2.0)
_EG_STD = 0.5 / math.sqrt(2.0)
_EG_ANGLES = np.arange(8) * np.pi / 4
_EG_CENTRES = (_EG_RADIUS * np.stack([np.cos(_EG_ANGLES), np.sin(_EG_ANGLES)], -1)).astype(
    np.float32
)


def _eg_sample(key, n):
    k1, k2 = jax.random.split(key)
    idx = jax.random.randint(k1, (n,), 0, 8)
    return jnp.asarray(_EG_CENTRES)[idx] + _EG_STD * jax.random.normal(k2, (n, 2))


def _eg_log_density(x, sigma):
    var = _EG_STD**2 + sigma**2  # Gaussian * Gaussian: variances add
    d2 = jnp.sum((x[:, None, :] - _EG_CENTRES[None]) ** 2, -1)
    return logsumexp(-d2 / (2 * var), axis=1) - jnp.log(8 * 2 * jnp.pi * var)


def _eg_nearest(x, sigma):
    d = jnp.sqrt(jnp.sum((x[:, None, :] - _EG_CENTRES[None]) ** 2, -1))
    return _nearest(d, jnp.sqrt(_EG_STD**2 + sigma**2))


# ----------------------------------------------------------------------------
# checkerboard: uniform on the 8 "even" squares of side 2 tiling [-4, 4]^2

# unit-cell indices (i, j) in {-2..1}^2 with i + j even, i.e. exactly the cells
# FFJORD's x2 = U - 2 Bern + (floor(x1) mod 2) can hit; scaled by 2 below.
_CB_LO = np.array(
    [(2.0 * i, 2.0 * j) for i in range(-2, 2) for j in range(-2, 2) if (i + j) % 2 == 0],
    np.float32,
)  # (8, 2) lower-left corners
_CB_SIDE = 2.0
_CB_LOG_DENS = -math.log(8 * _CB_SIDE**2)  # uniform: 1/32 on each square


def _cb_sample(key, n):
    k1, k2, k3 = jax.random.split(key, 3)
    x1 = jax.random.uniform(k1, (n,)) * 4 - 2
    x2 = (
        jax.random.uniform(k2, (n,))
        - 2.0 * jax.random.bernoulli(k3, 0.5, (n,))
        + jnp.floor(x1) % 2
    )
    return 2.0 * jnp.stack([x1, x2], -1)


def _cb_log_density(x, sigma):
    lo = jnp.asarray(_CB_LO)[None]  # (1, 8, 2)
    hi = lo + _CB_SIDE
    xe = x[:, None, :]
    # sigma = 0 is the clean uniform law; a safe divisor keeps the unused
    # branch (and its gradient) free of inf/nan under jnp.where.
    pos = sigma > 0
    s = jnp.where(pos, sigma, 1.0)
    # per square, per axis: P(a <= x_d - σε < b) = Φ((x_d−a)/σ) − Φ((x_d−b)/σ)
    log_box = _log_ndtr_diff((xe - lo) / s, (xe - hi) / s).sum(-1)
    smooth = logsumexp(log_box, axis=1) - 2 * math.log(_CB_SIDE) - math.log(8)
    inside = jnp.any(jnp.all((xe >= lo) & (xe < hi), -1), -1)
    clean = jnp.where(inside, _CB_LOG_DENS, -jnp.inf)
    return jnp.where(pos, smooth, clean)


def _cb_nearest(x, sigma):
    lo = jnp.asarray(_CB_LO)[None]
    gap = jnp.maximum(jnp.maximum(lo - x[:, None, :], x[:, None, :] - (lo + _CB_SIDE)), 0.0)
    d = jnp.sqrt(jnp.sum(gap**2, -1))  # 0 inside a square
    # the clean squares have no noise of their own: the spread is σ alone (σ = 0: any gap is off)
    return _nearest(d, jnp.where(sigma > 0, sigma, 1e-30))


# ----------------------------------------------------------------------------
# rings: 4 concentric circles, uniform angle, + N(0, 0.08^2) (FFJORD "rings")

_RING_RADII = np.float32(3.0) * np.array([1.0, 0.75, 0.5, 0.25], np.float32)
_RING_NOISE = 0.08


def _rings_sample(key, n):
    k1, k2, k3 = jax.random.split(key, 3)
    r = jnp.asarray(_RING_RADII)[jax.random.randint(k1, (n,), 0, 4)]
    a = jax.random.uniform(k2, (n,), maxval=2 * jnp.pi)
    circ = r[:, None] * jnp.stack([jnp.cos(a), jnp.sin(a)], -1)
    return circ + _RING_NOISE * jax.random.normal(k3, (n, 2))


def _rings_log_density(x, sigma):
    var = _RING_NOISE**2 + sigma**2
    rho = jnp.sqrt(jnp.sum(x**2, -1))[:, None]
    r = jnp.asarray(_RING_RADII)[None]
    # uniform circle * N(0, var I): (1/2πv) exp(−(ρ²+r²)/2v) I0(ρr/v);
    # with I0(z) = i0e(z) e^z the exponent becomes −(ρ−r)²/2v (no overflow).
    log_ring = -((rho - r) ** 2) / (2 * var) + jnp.log(i0e(rho * r / var))
    return logsumexp(log_ring, axis=1) - jnp.log(4 * 2 * jnp.pi * var)


def _rings_nearest(x, sigma):
    rho = jnp.sqrt(jnp.sum(x**2, -1))[:, None]
    return _nearest(jnp.abs(rho - jnp.asarray(_RING_RADII)[None]), jnp.sqrt(_RING_NOISE**2 + sigma**2))


# ----------------------------------------------------------------------------
# two_spirals (FFJORD "2spirals"):
#   t = sqrt(u) * 3π,  d = (−cos t · t + U·0.5, sin t · t + U·0.5),
#   data = (±d) / 3 + N(0, 0.1^2)
# Given t, each coordinate of spiral 1 is c_d(t) + box[0, w) + N(0, s²) with
# w = 0.5/3 and s² = 0.1² + σ²: a box * Gaussian = difference of normal CDFs
# (closed form). The integral over t ~ 2t / t_max² is a fixed quadrature.
# Spiral 2 is the point reflection of spiral 1 (the Gaussian is symmetric),
# so p2(x) = p1(−x).

_SP_TMAX = 540 * 2 * np.pi / 360
_SP_BOX = 0.5 / 3
_SP_NOISE = 0.1
_SP_NODES = 512  # 2x the count where the rule has converged (see _spiral_nodes)
_SP_BLOCK = 64  # nodes per scan step: bounds memory at ~n * 64 floats


@functools.lru_cache(maxsize=None)
def _spiral_nodes(n_nodes):
    # Gauss-Legendre in t: the integrand t * kernel(x - c(t)) is smooth in t,
    # so the rule converges spectrally (512 nodes: float32-exact for p̂ > 1e-6
    # down to σ = 0; a midpoint rule needs > 16k nodes for the same).
    g, gw = np.polynomial.legendre.leggauss(n_nodes)
    t = (g + 1) / 2 * _SP_TMAX
    w = gw * t  # p(t) ∝ t
    c = np.stack([-np.cos(t) * t, np.sin(t) * t], -1) / 3
    return c.astype(np.float32), np.log(w / w.sum()).astype(np.float32)


def _spirals_sample(key, n):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    t = jnp.sqrt(jax.random.uniform(k1, (n, 1))) * _SP_TMAX
    d = jnp.concatenate([-jnp.cos(t) * t, jnp.sin(t) * t], -1)
    d = d + 0.5 * jax.random.uniform(k2, (n, 2))  # jitter before the reflection
    sign = jnp.where(jax.random.bernoulli(k3, 0.5, (n, 1)), 1.0, -1.0)
    return sign * d / 3 + _SP_NOISE * jax.random.normal(k4, (n, 2))


def _spirals_log_density(x, sigma, n_nodes=_SP_NODES):
    s = jnp.sqrt(_SP_NOISE**2 + sigma**2)
    n = x.shape[0]
    pts = jnp.concatenate([x, -x], 0)  # rows n: hold −x, i.e. spiral 2
    c_np, lw_np = _spiral_nodes(n_nodes)
    block = math.gcd(_SP_BLOCK, n_nodes)
    centres = jnp.asarray(c_np).reshape(n_nodes // block, block, 2)
    logw = jnp.asarray(lw_np).reshape(n_nodes // block, block)

    def step(_, cw):
        c, lw = cw
        y = (pts[:, None, :] - c[None]) / s  # (2n, block, 2)
        # density of box[0, w) + N(0, s²) at y·s is (Φ(y) − Φ(y − w/s)) / w
        log_k = _log_ndtr_diff(y, y - _SP_BOX / s).sum(-1)
        return None, logsumexp(log_k + lw, axis=1)

    _, per_block = lax.scan(step, None, (centres, logw))
    log_p1 = logsumexp(per_block, axis=0) - 2 * math.log(_SP_BOX)
    return jnp.logaddexp(log_p1[:n], log_p1[n:]) - math.log(2.0)


@functools.lru_cache(maxsize=None)
def _spiral_curve(n_points=4096):
    # arm 1's skeleton: c(t) shifted by the centre of its [0, w)² jitter box, densely in t
    t = np.linspace(0.0, _SP_TMAX, n_points)
    c = np.stack([-np.cos(t) * t, np.sin(t) * t], -1) / 3 + _SP_BOX / 2
    return c.astype(np.float32)


def _spirals_nearest(x, sigma):
    curve = jnp.asarray(_spiral_curve())

    def dist_to_curve(pts):  # min distance to the curve, blocked over its points
        blocks = curve.reshape(-1, 256, 2)

        def step(best, c):
            d2 = jnp.square(pts[:, :1] - c[:, 0]) + jnp.square(pts[:, 1:] - c[:, 1])
            return jnp.minimum(best, jnp.min(d2, 1)), None

        best, _ = lax.scan(step, jnp.full(pts.shape[0], jnp.inf), blocks)
        return jnp.sqrt(best)

    d = jnp.stack([dist_to_curve(x), dist_to_curve(-x)], 1)  # arm 2 = −arm 1
    # the jitter box adds variance w²/12 per coordinate around its centre
    return _nearest(d, jnp.sqrt(_SP_NOISE**2 + _SP_BOX**2 / 12 + sigma**2))


# ----------------------------------------------------------------------------

_TOYS = {
    "eight_gaussians": (_eg_sample, _eg_log_density, (-5.0, 5.0), 8, _eg_nearest),
    "two_spirals": (_spirals_sample, _spirals_log_density, (-4.5, 4.5), 2, _spirals_nearest),
    "checkerboard": (_cb_sample, _cb_log_density, (-5.5, 5.5), 8, _cb_nearest),
    "rings": (_rings_sample, _rings_log_density, (-4.5, 4.5), 4, _rings_nearest),
}


@functools.lru_cache(maxsize=None)
def _cached_toy(name):
    return _wrap(name, *_TOYS[name])


def get_toy(name: str) -> Toy2D:
    """Return the toy ``name`` (one of :data:`TOY_NAMES`)."""
    validation.check_choice("name", name, TOY_NAMES)
    return _cached_toy(name)  # one instance per name: jit caches are reused


def sample_smoothed(toy: Toy2D, key, n: int, sigma) -> jax.Array:
    """Draw ``n`` samples of ``p̂_σ``: clean samples + ``sigma * N(0, I)``."""
    validation.check_instance("toy", toy, Toy2D, "from dsm_jax.toy.get_toy(name)")
    validation.check_sigma("sigma", sigma)
    validation.check_prng_key("key", key)
    k1, k2 = jax.random.split(key)
    return toy.sample(k1, n) + sigma * jax.random.normal(k2, (n, 2))
