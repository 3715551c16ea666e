"""Tests of dsm_jax.metrics against closed-form answers."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsm_jax import metrics
from dsm_jax.toy import get_toy, sample_smoothed


def _quadratic_energy(params, x):
    m, s, c = params
    return jnp.sum(jnp.square(x - m), -1) / (2 * s**2) + c


def _gaussian_log_density(mean):
    return lambda x: -0.5 * jnp.sum(jnp.square(x - mean), -1) - jnp.log(2 * jnp.pi)


def _half_the_modes(x):
    # keep eight_gaussians samples of the modes at angles 0, π/4, π/2, 3π/4
    k = np.round(np.arctan2(x[:, 1], x[:, 0]) / (np.pi / 4)).astype(int) % 8
    return x[k < 4]


class MetricsTest(chex.TestCase):
    def test_make_grid_and_image_layout(self):
        grid = metrics.make_grid((-2.0, 2.0), n=4)
        chex.assert_shape(grid.points, (16, 2))
        assert grid.n == 4 and grid.bounds == (-2.0, 2.0) and grid.cell_area == 1.0
        want = [[-1.5, -1.5], [-0.5, -1.5], [0.5, -1.5], [1.5, -1.5], [-1.5, -0.5]]
        np.testing.assert_allclose(grid.points[:5], want)  # x fast, y slow
        img = metrics.log_density_grid_image(lambda x: x[:, 0] + 10 * x[:, 1], grid)
        assert img.shape == (4, 4) and isinstance(img, np.ndarray)
        assert img[0, -1] == 1.5 - 15.0  # row = y (lowest first), column = x
        assert img[-1, 0] == -1.5 + 15.0

    @chex.variants(with_jit=True, without_jit=True)
    def test_grid_log_normalizer_of_gaussian_energy(self):
        grid = metrics.make_grid((-5.0, 5.0), n=200)
        params = (jnp.array([0.3, -0.2]), jnp.float32(0.6), jnp.float32(1.7))
        # chunk 3000 does not divide 40000: exercises the padding
        log_z_fn = self.variant(
            lambda p: metrics.grid_log_normalizer(_quadratic_energy, p, grid, chunk_size=3000)
        )
        log_z = log_z_fn(params)
        chex.assert_shape(log_z, ())
        chex.assert_trees_all_close(log_z, np.log(2 * np.pi * 0.6**2) - 1.7, atol=1e-4)

    def test_model_log_density_is_normalised_everywhere(self):
        grid = metrics.make_grid((-5.0, 5.0), n=128)
        params = (jnp.zeros(2), jnp.float32(1.0), jnp.float32(3.0))
        log_p = metrics.model_log_density(_quadratic_energy, params, grid)
        x = jnp.array([[0.0, 0.0], [1.0, -2.0], [20.0, 0.0]])  # last one off the grid
        chex.assert_trees_all_close(log_p(x), _gaussian_log_density(jnp.zeros(2))(x), atol=1e-4)

    @chex.variants(with_jit=True, without_jit=True)
    def test_density_kl_closed_forms(self):
        x = jax.random.normal(jax.random.PRNGKey(0), (20_000, 2))
        truth = _gaussian_log_density(jnp.zeros(2))
        kl_fn = self.variant(
            lambda x, mean: metrics.density_kl(truth, _gaussian_log_density(mean), x)
        )
        mean = jnp.array([0.5, -0.3])
        kl, se = kl_fn(x, mean)  # KL(N(0,I)‖N(μ,I)) = |μ|²/2
        assert abs(float(kl) - 0.17) < 3 * float(se)
        # model == truth, but reached through a grid-normalised energy
        toy, sigma = get_toy("eight_gaussians"), 0.2
        x = sample_smoothed(toy, jax.random.PRNGKey(1), 4000, sigma)
        grid = metrics.make_grid(toy.bounds, 128)
        log_model = metrics.model_log_density(lambda p, x: -toy.log_density(x, p), sigma, grid)
        kl_fn = self.variant(
            lambda x: metrics.density_kl(lambda y: toy.log_density(y, sigma), log_model, x)
        )
        kl, se = kl_fn(x)
        assert abs(float(kl)) < 3 * float(se) + 1e-4, (kl, se)

    def test_smoothed_empirical_log_density_matches_direct_sum(self):
        samples = jax.random.normal(jax.random.PRNGKey(0), (7, 2)) * 2
        x = jax.random.normal(jax.random.PRNGKey(1), (10, 2)) * 3
        sigma = 0.3
        s, xx = np.asarray(samples, np.float64), np.asarray(x, np.float64)
        d2 = ((xx[:, None] - s[None]) ** 2).sum(-1)
        k = np.exp(-d2 / (2 * sigma**2)) / (2 * np.pi * sigma**2)
        # chunks of 3 over 7 samples and 10 points: both paddings are exercised
        got = metrics.smoothed_empirical_log_density(samples, sigma, chunk_size=3)(x)
        chex.assert_shape(got, (10,))
        chex.assert_trees_all_close(got, np.log(k.mean(1)), rtol=1e-5)
        whole = metrics.smoothed_empirical_log_density(samples, sigma)(x)
        chex.assert_trees_all_close(got, whole, rtol=1e-5)

    def test_sample_kl_true_samples_and_dropped_modes(self):
        toy, sigma = get_toy("eight_gaussians"), 0.2
        grid = metrics.make_grid(toy.bounds, 96)
        log_p = lambda x: toy.log_density(x, sigma)  # noqa: E731
        samples = toy.sample(jax.random.PRNGKey(0), 4000)
        good = metrics.sample_kl(samples, log_p, sigma, grid, key=jax.random.PRNGKey(1))
        floor = metrics.kl_floor(toy, jax.random.PRNGKey(2), 4000, sigma, grid)
        assert set(good) == {"kl", "kl_reverse", "kl_stderr", "kl_reverse_stderr"}
        chex.assert_tree_all_finite(good)
        assert 0 < float(good["kl"]) < 0.05 and 0 < float(good["kl_reverse"]) < 0.05
        tol = 3 * np.hypot(float(good["kl_stderr"]), float(floor["kl_stderr"]))
        assert abs(float(good["kl"]) - float(floor["kl"])) < tol, (good, floor)
        # half the modes: q̂ misses half of p̂ (forward KL large), while q̂ is
        # p̂ restricted to half its mass (reverse KL ≈ log 2)
        half = metrics.sample_kl(_half_the_modes(np.asarray(samples)), log_p, sigma, grid, key=jax.random.PRNGKey(3))
        assert float(half["kl"]) > 0.5
        assert float(half["kl"]) > float(half["kl_reverse"])
        assert abs(float(half["kl_reverse"]) - np.log(2)) < 0.05
        chex.assert_tree_all_finite(half)

    @chex.variants(with_jit=True, without_jit=True)
    def test_sample_kl_is_jittable(self):
        toy, sigma = get_toy("rings"), 0.3
        grid = metrics.make_grid(toy.bounds, 32)
        fn = self.variant(
            lambda s: metrics.sample_kl(
                s, lambda x: toy.log_density(x, sigma), sigma, grid, n_boot=4, key=jax.random.PRNGKey(1)
            )
        )
        out = fn(toy.sample(jax.random.PRNGKey(0), 500))
        chex.assert_tree_all_finite(out)
        chex.assert_shape(list(out.values()), [()] * 4)

    def test_bad_inputs(self):
        grid = metrics.make_grid((-1.0, 1.0), 8)
        log_p = _gaussian_log_density(jnp.zeros(2))
        with pytest.raises(ValueError, match="`samples` must have shape"):
            metrics.sample_kl(jnp.zeros((10, 3)), log_p, 0.1, grid)
        with pytest.raises(ValueError, match="`samples` must have shape"):
            metrics.smoothed_empirical_log_density(jnp.zeros(10), 0.1)
        with pytest.raises(ValueError, match="sigma"):
            metrics.smoothed_empirical_log_density(jnp.zeros((10, 2)), 0.0)
        with pytest.raises(ValueError, match="sigma"):
            metrics.sample_kl(jnp.zeros((10, 2)), log_p, -1.0, grid)
        with pytest.raises(ValueError, match="n_boot"):
            metrics.sample_kl(jnp.zeros((10, 2)), log_p, 0.1, grid, n_boot=1)
        with pytest.raises(ValueError, match="`x_true` must have shape"):
            metrics.density_kl(log_p, log_p, jnp.zeros((5, 1)))
        with pytest.raises(ValueError, match="bounds"):
            metrics.make_grid((1.0, -1.0))
        with pytest.raises(ValueError, match="`n` must be"):
            metrics.make_grid((-1.0, 1.0), n=1)
        with pytest.raises(ValueError, match="energy_fn must return shape"):
            metrics.grid_log_normalizer(lambda p, x: x, None, grid)


def test_sample_kl_counts_mass_that_leaves_the_grid():
    # Half the samples far outside the grid: q̂ keeps only half its mass inside, so
    # KL(p̂‖q̂) ≈ log 2; renormalising on the grid would hide the leak.
    toy = get_toy("eight_gaussians")
    grid = metrics.make_grid(toy.bounds, 96)
    x = toy.sample(jax.random.PRNGKey(0), 2000)
    log_p = lambda z: toy.log_density(z, 0.2)  # noqa: E731
    exact = metrics.sample_kl(x, log_p, 0.2, grid, key=jax.random.PRNGKey(1))
    leaked = metrics.sample_kl(x.at[:1000].set(50.0), log_p, 0.2, grid, key=jax.random.PRNGKey(1))
    assert float(exact["kl"]) < 0.1
    assert float(leaked["kl"]) > np.log(2.0) - 0.05
    assert float(leaked["kl_reverse"]) > 5.0
