"""Tests of dsm_jax.toy against closed-form / brute-force answers."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from dsm_jax import toy as toy_lib
from dsm_jax.toy import TOY_NAMES, get_toy, sample_smoothed

_TOYS = [(name, name) for name in TOY_NAMES]


def _grid(bounds, n):
    lo, hi = bounds
    h = (hi - lo) / n
    c = lo + (np.arange(n) + 0.5) * h
    xx, yy = np.meshgrid(c, c)
    return jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32), h * h


class ToyTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*_TOYS)
    def test_density_integrates_to_one_and_is_finite(self, name):
        toy = get_toy(name)
        # midpoint rule: cells (<= 0.115) below the smallest kernel width, error ~1e-7
        points, area = _grid(toy.bounds, 96)
        log_density = self.variant(toy.log_density)  # sigma traced under jit
        for sigma in (0.1, 0.2, 0.5):
            log_p = log_density(points, sigma)
            chex.assert_shape(log_p, (points.shape[0],))
            chex.assert_tree_all_finite(log_p)
            total = float(jnp.sum(jnp.exp(log_p)) * area)
            assert abs(total - 1.0) < 2e-3, (name, sigma, total)

    @parameterized.named_parameters(*_TOYS)
    def test_density_matches_brute_force_kde_of_samples(self, name):
        # p̂_σ(x) = E_y~p N(x; y, σ² I): Monte Carlo over a big clean sample
        toy = get_toy(name)
        ys = np.asarray(toy.sample(jax.random.PRNGKey(1), 200_000), np.float64)
        for sigma in (0.1, 0.5):
            xs = np.asarray(sample_smoothed(toy, jax.random.PRNGKey(2), 6, sigma))
            exact = np.exp(np.asarray(toy.log_density(xs, sigma), np.float64))
            d2 = ((xs[:, None, :] - ys[None]) ** 2).sum(-1)
            k = np.exp(-d2 / (2 * sigma**2)) / (2 * np.pi * sigma**2)
            mc, se = k.mean(1), k.std(1) / np.sqrt(len(ys))
            np.testing.assert_array_less(np.abs(exact - mc), 4 * se + 1e-6)
            # most points must carry enough mass for a sharp (<10%) comparison
            assert np.sum(se < 0.1 * mc) >= 4, (name, sigma, mc, se)

    @parameterized.named_parameters(*_TOYS)
    def test_samples(self, name):
        toy = get_toy(name)
        x = jax.jit(toy.sample, static_argnums=1)(jax.random.PRNGKey(0), 4000)
        chex.assert_shape(x, (4000, 2))
        chex.assert_type(x, jnp.float32)
        chex.assert_tree_all_finite(x)
        lo, hi = toy.bounds
        inside = np.mean(np.all((np.asarray(x) > lo) & (np.asarray(x) < hi), 1))
        assert inside > 0.999
        xs = sample_smoothed(toy, jax.random.PRNGKey(0), 4000, 0.5)
        chex.assert_shape(xs, (4000, 2))
        assert np.mean(np.all((np.asarray(xs) > lo) & (np.asarray(xs) < hi), 1)) > 0.99

    @parameterized.named_parameters(*_TOYS)
    def test_score_is_finite(self, name):
        # grad log p̂_σ is the target score of denoising models: must not be nan
        toy = get_toy(name)
        points, _ = _grid(toy.bounds, 24)
        score = jax.vmap(jax.grad(lambda x: toy.log_density(x[None], 0.05)[0]))(points)
        chex.assert_tree_all_finite(score)

    def test_eight_gaussians_smoothed_moments(self):
        # Cov p̂_σ = (R²/2 + s² + σ²) I for 8 equally spaced centres on radius R
        toy, sigma = get_toy("eight_gaussians"), 0.3
        x = np.asarray(sample_smoothed(toy, jax.random.PRNGKey(3), 200_000, sigma), np.float64)
        want = (4.0 / np.sqrt(2)) ** 2 / 2 + 0.5**2 / 2 + sigma**2
        chex.assert_trees_all_close(np.cov(x.T), want * np.eye(2), atol=0.05)
        chex.assert_trees_all_close(x.mean(0), np.zeros(2), atol=0.02)

    def test_checkerboard_clean_density(self):
        toy = get_toy("checkerboard")
        x = jnp.array([[0.5, 0.5], [-3.0, -3.0], [1.0, 3.0], [2.5, 0.5], [4.5, 0.0]])
        want = np.array([np.log(1 / 32), np.log(1 / 32), -np.inf, -np.inf, -np.inf])
        np.testing.assert_allclose(np.asarray(toy.log_density(x, 0.0)), want, rtol=1e-6)
        samples = toy.sample(jax.random.PRNGKey(0), 2000)  # all in the support
        chex.assert_tree_all_finite(toy.log_density(samples, 0.0))

    def test_spiral_quadrature_converged(self):
        # doubling the Gauss-Legendre nodes changes nothing beyond float32 noise
        points, _ = _grid((-4.5, 4.5), 48)
        base_fn = jax.jit(toy_lib._spirals_log_density)
        fine_fn = jax.jit(lambda x, s: toy_lib._spirals_log_density(x, s, n_nodes=1024))
        for sigma in (0.0, 0.05, 0.2):
            base, fine = base_fn(points, sigma), fine_fn(points, sigma)
            mass = np.exp(np.asarray(fine)) > 1e-6
            err = np.abs(np.asarray(base) - np.asarray(fine))[mass]
            assert err.max() < 1e-4, (sigma, err.max())

    def test_bad_inputs(self):
        toy = get_toy("rings")
        with pytest.raises(ValueError, match="`name` must be one of.*eight_gaussians"):
            get_toy("moons")
        with pytest.raises(ValueError, match="sigma"):
            toy.log_density(jnp.zeros((3, 2)), -0.1)
        with pytest.raises(ValueError, match="sigma"):
            sample_smoothed(toy, jax.random.PRNGKey(0), 3, -1.0)
        with pytest.raises(ValueError, match="`x` must have shape"):
            toy.log_density(jnp.zeros((3, 3)), 0.1)
        with pytest.raises(ValueError, match="`x` must have shape"):
            toy.log_density(jnp.zeros(2), 0.1)
        with pytest.raises(ValueError, match="`n` must be"):
            toy.sample(jax.random.PRNGKey(0), 0)
