"""The image half: chunked sampling, inpainting masks/PSNR/baselines (on a tiny MDSM ResNet
energy; the network itself is tested in test_nets.py; EMA and data-order resume in test_training.py)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dsm_jax as dj
from dsm_jax import inpainting


class TestSampleInChunks:
    def test_chunks_trim_and_stay_finite(self):
        energy_fn = lambda p, x: 0.5 * jnp.sum(x**2, axis=(1, 2))  # noqa: E731
        sampler = jax.jit(dj.langevin_with_info(energy_fn, 0.1, 5))
        init = lambda k, n: jax.random.normal(k, (n, 2, 3))  # noqa: E731
        x, info = dj.sample_in_chunks(sampler, None, jax.random.key(0), init, 10, 4, with_info=True)
        assert x.shape == (10, 2, 3) and info == {"n_nonfinite": 0, "first_nonfinite_step": None}
        x2, _ = dj.sample_in_chunks(sampler, None, jax.random.key(0), init, 10, 4, with_info=True)
        np.testing.assert_array_equal(x, x2)

    def test_reports_nonfinite_chains_and_step(self):
        # Energy that blows up: the gradient doubles x each step until it overflows.
        energy_fn = lambda p, x: -jnp.sum(x**2, axis=1) * 1e30  # noqa: E731
        sampler = jax.jit(dj.langevin_with_info(energy_fn, 1.0, 20))
        init = lambda k, n: jnp.ones((n, 2))  # noqa: E731
        _, info = dj.sample_in_chunks(sampler, None, jax.random.key(0), init, 3, 3, with_info=True)
        assert info["n_nonfinite"] == 3
        assert info["first_nonfinite_step"] is not None and info["first_nonfinite_step"] < 20


class TestInpainting:
    @pytest.mark.parametrize("kind", inpainting.MASK_KINDS)
    def test_masks(self, kind):
        m = inpainting.observed_mask(kind, (5, 8, 8, 1), jax.random.key(0))
        assert m.shape == (5, 8, 8, 1) and set(np.unique(m)) <= {0.0, 1.0}
        frac_missing = 1 - m.mean()
        assert 0.2 < frac_missing < 0.8
        if kind == "lower_half":
            assert m[:, :4].min() == 1 and m[:, 4:].max() == 0
        if kind == "centre_square":
            assert m[:, 2:6, 2:6].max() == 0 and m.sum() == 5 * (64 - 16)

    def test_bad_mask_kind(self):
        with pytest.raises(ValueError, match="lower_half"):
            inpainting.observed_mask("top", (1, 4, 4, 1))

    def test_psnr_closed_form_and_missing_only(self):
        truth = np.zeros((2, 4, 4, 1))
        observed = np.zeros_like(truth)
        observed[:, :2] = 1
        est = truth.copy()
        est[:, 2:] = 0.1                       # error 0.1 on every missing pixel → MSE 0.01 → 20 dB
        est[:, :2] = 0.9                       # observed pixels are not counted
        np.testing.assert_allclose(inpainting.psnr(est, truth, observed), [20.0, 20.0], atol=1e-9)

    def test_baselines_keep_observed_and_find_exact_neighbour(self):
        rng = np.random.default_rng(0)
        train = rng.uniform(size=(50, 6, 6, 1)).astype(np.float32)
        x = train[[7, 31]]
        observed = inpainting.observed_mask("lower_half", x.shape)
        nearest = inpainting.nearest_visible_fill(x, observed, train, chunk_size=16)
        np.testing.assert_array_equal(nearest, x)  # the image itself is in the training set
        mean = inpainting.mean_image_fill(x, observed, train)
        np.testing.assert_array_equal(mean[observed > 0], x[observed > 0])
        np.testing.assert_allclose(mean[0, 3:], train.mean(0)[3:], rtol=1e-6)

    def test_evaluate_inpainting_scores_a_fill_beside_both_baselines_with_per_kind_keys(self):
        """A fill that is the mean-image baseline scores exactly its PSNR; a perfect fill of a
        training image is the nearest baseline's; each kind's mask comes from fold_in(key, i)."""
        rng = np.random.default_rng(1)
        train = rng.uniform(size=(40, 8, 8, 1)).astype(np.float32)
        truth = train[[3, 9, 27]]
        mean_img = train.mean(0)
        calls = []

        def mean_fill(params, key, x, free_mask):
            calls.append(np.asarray(x))
            return jnp.where(free_mask > 0, mean_img, x)

        init = lambda k, n: jnp.full((n, 8, 8, 1), 0.5)  # noqa: E731
        key = jax.random.key(5)
        got = inpainting.evaluate_inpainting(mean_fill, None, key, truth, train, init)
        assert list(got) == list(inpainting.MASK_KINDS)
        for i, (kind, r) in enumerate(got.items()):
            k_mask = jax.random.split(jax.random.fold_in(key, i), 3)[0]
            np.testing.assert_array_equal(r.observed, inpainting.observed_mask(kind, truth.shape, k_mask))
            np.testing.assert_array_equal(calls[i], np.where(r.observed > 0, truth, 0.5))  # the chain's start
            assert r.psnr["model"] == r.psnr["mean_image"]
            assert r.psnr["nearest_train"] == 120.0  # exact neighbour: MSE floored at 1e-12
            np.testing.assert_array_equal(r.nearest, truth)
        with pytest.raises(ValueError, match="`kinds`"):
            inpainting.evaluate_inpainting(mean_fill, None, key, truth, train, init, kinds="lower_half")

    def test_inpainter_never_changes_observed_pixels(self, tiny_resnet):
        energy_fn, params = tiny_resnet
        x = jax.random.uniform(jax.random.key(2), (3, 16, 16, 1))
        observed = inpainting.observed_mask("random_half", x.shape, jax.random.key(3))
        fill = jax.jit(dj.inpainter(energy_fn, 1e-3, temperatures=dj.mdsm_temperature_schedule(3, 5, 2, 10.0)))
        out = np.asarray(fill(params, jax.random.key(4), x, free_mask=1.0 - jnp.asarray(observed)))
        np.testing.assert_array_equal(out[observed > 0], np.asarray(x)[observed > 0])
        assert np.any(out[observed == 0] != np.asarray(x)[observed == 0])
