"""Honest 2-D metrics: grid-normalised model densities and KL estimates.

Two kinds of KL are provided:

* :func:`density_kl` compares a normalised model density with the exact
  ``p̂_σ`` of a toy by Monte Carlo over samples of ``p̂_σ`` (for energy models,
  normalised on a grid with :func:`model_log_density`).
* :func:`sample_kl` compares a *clean* sample (a generator, a denoised chain)
  with ``p̂_σ`` through its σ-smoothed empirical law ``q̂`` on a grid. A kernel
  estimate of ``n`` points is biased upward even for perfect samples, so every
  sample KL should be reported beside :func:`kl_floor`, the same number for
  ``n`` exact samples.

Energies follow the project convention: ``energy_fn(params, x)`` with ``x`` of
shape ``(batch, 2)`` returns ``(batch,)``, density ∝ exp(−E).
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import logsumexp

from dsm_jax import validation
from dsm_jax.chunks import chunked_map
from dsm_jax.toy import Toy2D

__all__ = [
    "Grid2D",
    "make_grid",
    "grid_log_normalizer",
    "model_log_density",
    "density_kl",
    "smoothed_empirical_log_density",
    "sample_kl",
    "kl_floor",
    "log_density_grid_image",
]


class Grid2D(NamedTuple):
    """Cell centres of an ``n x n`` grid on ``[lo, hi]^2``, row-major with y as
    the slow axis, so ``values.reshape(n, n)`` is an image with row = y."""

    points: jax.Array
    n: int
    bounds: tuple[float, float]
    cell_area: float


def make_grid(bounds, n: int = 256) -> Grid2D:
    """Grid of ``n * n`` cell centres covering the square ``bounds^2``."""
    try:
        lo, hi = (float(validation.check_real("bounds", b)) for b in bounds)
    except (TypeError, ValueError):  # not a pair of numbers
        lo = hi = None
    if lo is None or not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"`bounds` must be (lo, hi) with finite lo < hi, got {bounds!r}.")
    n = validation.check_positive_int("n", n, minimum=2, what="points per axis")
    h = (hi - lo) / n
    c = lo + (np.arange(n) + 0.5) * h  # cell centres: midpoint rule
    xx, yy = np.meshgrid(c, c)  # yy varies along rows
    pts = np.stack([xx.ravel(), yy.ravel()], -1).astype(np.float32)
    return Grid2D(jnp.asarray(pts), int(n), (lo, hi), h * h)


def grid_log_normalizer(energy_fn: Callable, params, grid: Grid2D, chunk_size: int = 16384):
    """``log Z ≈ log Σ_cells exp(−E) · cell_area`` (midpoint rule on the grid)."""
    validation.check_callable("energy_fn", energy_fn)
    validation.check_instance("grid", grid, Grid2D, "from metrics.make_grid(bounds, n)")
    validation.check_positive_int("chunk_size", chunk_size)
    energy = chunked_map(lambda c: energy_fn(params, c), grid.points, chunk_size)
    if energy.shape != (grid.points.shape[0],):
        raise ValueError(
            f"energy_fn must return shape (batch,), got {energy.shape} for "
            f"x of shape {grid.points.shape}."
        )
    return logsumexp(-energy.astype(jnp.float32)) + math.log(grid.cell_area)


def model_log_density(energy_fn: Callable, params, grid: Grid2D, chunk_size: int = 16384):
    """``x -> −E(x) − log Z_grid``: the model's normalised log density.

    Z is computed once here; the returned closure works for any ``(n, 2)`` x,
    also outside the grid (mass outside the grid is not in Z: pick bounds that
    hold the model's mass)."""
    log_z = grid_log_normalizer(energy_fn, params, grid, chunk_size)

    def log_p(x):
        return -energy_fn(params, x) - log_z

    return log_p


def density_kl(log_p_true: Callable, log_p_model: Callable, x_true):
    """Monte-Carlo ``KL(p̂‖p_model) = E_{x~p̂}[log p̂(x) − log p_model(x)]``.

    ``x_true`` must be samples of ``p̂`` (e.g. :func:`dsm_jax.toy.sample_smoothed`).
    Returns ``(kl, stderr)`` with ``stderr = std / sqrt(n)``."""
    validation.check_callable("log_p_true", log_p_true)
    validation.check_callable("log_p_model", log_p_model)
    x_true = validation.check_points_2d("x_true", x_true, finite=True)
    d = log_p_true(x_true) - log_p_model(x_true)
    n = d.shape[0]
    if n < 2:
        raise ValueError(f"x_true needs at least 2 samples for a standard error, got {n}.")
    return jnp.mean(d), jnp.std(d, ddof=1) / math.sqrt(n)


# Weighted kernel sums, relative to the largest kernel at x, are floored here
# (log 0 would make a KL infinite): only bootstrap columns that miss every
# sample within ~69 nats of the nearest one can hit it; the full-sample column
# (weight 1/n on that nearest sample) never does.
_KDE_FLOOR = 1e-30
_OUTSIDE_FLOOR = 1e-12  # outside-the-grid mass below this counts as none


def _kde_log_density(samples, weights, sigma, x, chunk_size):
    """``log Σ_j weights[j, b] N(x; samples_j, σ² I)`` for every column b.

    Chunked over x and samples with a running max, so memory is
    O(chunk_size²); the weighted sum is a matmul, so B weight columns (e.g.
    bootstrap resamples as counts) cost one exp per (x, sample) pair."""
    m = samples.shape[0]
    cs = min(chunk_size, m)
    n_blocks = -(-m // cs)
    pad = n_blocks * cs - m
    # pad with copies of a real sample at weight 0: no effect on sums or maxima
    ys = jnp.concatenate([samples, jnp.broadcast_to(samples[:1], (pad, 2))])
    ws = jnp.concatenate([weights, jnp.zeros((pad, weights.shape[1]), weights.dtype)])
    ys, ws = ys.reshape(n_blocks, cs, 2), ws.reshape(n_blocks, cs, -1)
    inv2v = 0.5 / jnp.square(sigma)

    def one_chunk(xc):
        def step(carry, yw):
            mx, acc = carry
            y, w = yw
            # per-coordinate differences: exact at small σ (unlike |x|²+|y|²−2x·y)
            # and much faster on CPU than a trailing axis of size 2
            d2 = jnp.square(xc[:, :1] - y[:, 0]) + jnp.square(xc[:, 1:] - y[:, 1])
            l = -d2 * inv2v
            new_mx = jnp.maximum(mx, jnp.max(l, 1))
            acc = acc * jnp.exp(mx - new_mx)[:, None] + jnp.matmul(
                jnp.exp(l - new_mx[:, None]), w, precision=lax.Precision.HIGHEST
            )  # HIGHEST: no TF32/bf16 on accelerators
            return (new_mx, acc), None

        init = (jnp.full(xc.shape[0], -jnp.inf), jnp.zeros((xc.shape[0], ws.shape[2])))
        (mx, acc), _ = lax.scan(step, init, (ys, ws))
        return mx[:, None] + jnp.log(jnp.maximum(acc, _KDE_FLOOR))

    return chunked_map(one_chunk, x, chunk_size) - jnp.log(2 * jnp.pi * jnp.square(sigma))


def smoothed_empirical_log_density(samples, sigma, chunk_size: int = 1024) -> Callable:
    """``x -> log q̂(x)`` with ``q̂ = mean_j N(samples_j, σ² I)``, the σ-smoothed
    empirical law. Chunked over x and samples (running logsumexp): peak
    memory is a few ``chunk_size²`` floats whatever the sizes."""
    samples = jnp.asarray(validation.check_points_2d("samples", samples, finite=True))
    validation.check_sigma("sigma", sigma, strict=True)
    validation.check_positive_int("chunk_size", chunk_size)
    sigma = jnp.asarray(sigma, jnp.float32)
    weights = jnp.full((samples.shape[0], 1), 1.0 / samples.shape[0])

    def log_q(x):
        return _kde_log_density(samples, weights, sigma, jnp.asarray(validation.check_points_2d("x", x)), chunk_size)[:, 0]

    return log_q


def _cell_masses_with_outside(log_density, log_cell_area):
    """Log masses of the grid cells plus one last "outside" cell holding what the grid
    misses, so mass a sampler leaks off the grid counts against it (renormalising on the
    grid would hide it). Quadrature error that pushes the inside above 1 is scaled away."""
    log_cells = log_density + log_cell_area
    log_inside = logsumexp(log_cells)
    log_cells = log_cells - jnp.maximum(log_inside, 0.0)
    outside = jnp.maximum(1.0 - jnp.exp(logsumexp(log_cells)), _OUTSIDE_FLOOR)
    return jnp.concatenate([log_cells, jnp.log(outside)[None]])


def _grid_kls(log_p, log_q, log_cell_area):
    """KL(P‖Q), KL(Q‖P) of the absolute cell masses, with an "outside" cell each."""
    lp = _cell_masses_with_outside(log_p, log_cell_area)
    lq = _cell_masses_with_outside(log_q, log_cell_area)
    p, q = jnp.exp(lp), jnp.exp(lq)
    # 0·log 0 = 0: cells without mass (e.g. σ = 0 checkerboard) contribute nothing
    fwd = jnp.sum(jnp.where(p > 0, p * (lp - lq), 0.0))
    rev = jnp.sum(jnp.where(q > 0, q * (lq - lp), 0.0))
    return fwd, rev


def sample_kl(
    samples,
    log_p_true: Callable,
    sigma,
    grid: Grid2D,
    n_boot: int = 8,
    key=None,
    chunk_size: int = 1024,
) -> dict:
    """Grid KLs between ``p̂`` and the σ-smoothed empirical law ``q̂`` of ``samples``.

    ``p̂`` is ``log_p_true`` (``x -> (n,)``, e.g. ``lambda x:
    toy.log_density(x, sigma)``); both laws are evaluated on ``grid`` as absolute cell
    masses plus one cell for the mass outside the grid (samples that leave the grid are
    penalised, not renormalised away). ``q̂`` is the *σ-smoothed* sample law: pass clean
    samples (a generator's output, a denoised chain) against ``p̂_σ``; samples that already
    follow ``p̂_σ`` (a Langevin chain on E ≈ −log p̂_σ) belong against ``p̂_{√2·σ}``. ``kl = KL(p̂‖q̂)`` punishes dropped modes,
    ``kl_reverse = KL(q̂‖p̂)`` punishes mass where ``p̂`` has none. Standard
    errors are the std over ``n_boot`` bootstrap resamples of ``samples``
    (conservative: about 1.5x the spread over independent samples, since
    resamples hold duplicates). Compare with :func:`kl_floor` for the same
    ``n``, ``sigma`` and grid.
    Returns a dict of scalar arrays (``float()`` them for logging).

    Refused before compute: non-finite ``samples`` (a NaN would make every KL NaN; checked
    when ``samples`` is concrete, not under ``jit``), ``sigma <= 0``, ``n_boot < 2``.
    Pass ``key`` (the bootstrap's): ``key=None`` still means ``PRNGKey(0)`` but is
    deprecated and warns."""
    samples = jnp.asarray(validation.check_points_2d("samples", samples, finite=True))
    validation.check_callable("log_p_true", log_p_true)
    validation.check_sigma("sigma", sigma, strict=True)
    validation.check_instance("grid", grid, Grid2D, "from metrics.make_grid(bounds, n)")
    validation.check_positive_int("n_boot", n_boot, minimum=2, what="bootstrap replicates")
    validation.check_positive_int("chunk_size", chunk_size)
    if key is None:
        warnings.warn("sample_kl(key=None) uses PRNGKey(0) for the bootstrap, the same resamples on every "
                      "call; pass key=jax.random.PRNGKey(...) (None is deprecated).", DeprecationWarning, stacklevel=2)
        key = jax.random.PRNGKey(0)
    validation.check_prng_key("key", key)
    log_p = log_p_true(grid.points)
    if log_p.shape != (grid.points.shape[0],):
        raise ValueError(f"log_p_true must map (n, 2) -> (n,), got shape {log_p.shape}.")

    fwd, rev, boot_fwd, boot_rev = _sample_kl_core(
        samples, log_p, grid.points, jnp.asarray(sigma, jnp.float32), key, n_boot, chunk_size,
        math.log(grid.cell_area),
    )
    return {
        "kl": fwd,
        "kl_reverse": rev,
        "kl_stderr": jnp.std(boot_fwd, ddof=1),
        "kl_reverse_stderr": jnp.std(boot_rev, ddof=1),
    }


@functools.partial(jax.jit, static_argnums=(5, 6))
def _sample_kl_core(samples, log_p, points, sigma, key, n_boot, chunk_size, log_cell_area):
    m = samples.shape[0]
    # a bootstrap resample = multinomial counts on the original samples, so
    # all replicates share the kernel evaluations (column 0: the sample itself)
    idx = jax.random.randint(key, (n_boot, m), 0, m)
    counts = jnp.zeros((n_boot, m)).at[jnp.arange(n_boot)[:, None], idx].add(1.0)
    weights = jnp.concatenate([jnp.ones((m, 1)), counts.T], 1) / m
    log_q = _kde_log_density(samples, weights, sigma, points, chunk_size)
    fwd, rev = jax.vmap(_grid_kls, in_axes=(None, 1, None))(log_p, log_q, log_cell_area)
    return fwd[0], rev[0], fwd[1:], rev[1:]


def kl_floor(
    toy: Toy2D, key, n: int, sigma, grid: Grid2D, n_boot: int = 8, chunk_size: int = 1024
) -> dict:
    """:func:`sample_kl` of ``n`` exact clean samples of ``toy``: the value a
    perfect sampler would score (finite-``n`` kernel bias + noise)."""
    validation.check_instance("toy", toy, Toy2D, "from dsm_jax.toy.get_toy(name)")
    validation.check_prng_key("key", key)
    k_sample, k_boot = jax.random.split(key)
    return sample_kl(
        toy.sample(k_sample, n),
        lambda x: toy.log_density(x, sigma),
        sigma,
        grid,
        n_boot=n_boot,
        key=k_boot,
        chunk_size=chunk_size,
    )


def log_density_grid_image(log_fn: Callable, grid: Grid2D) -> np.ndarray:
    """``log_fn`` on the grid as an ``(n, n)`` array, row = y, column = x: use
    ``plt.imshow(img, origin="lower", extent=grid.bounds * 2)``."""
    validation.check_callable("log_fn", log_fn)
    validation.check_instance("grid", grid, Grid2D, "from metrics.make_grid(bounds, n)")
    return np.asarray(log_fn(grid.points)).reshape(grid.n, grid.n)
