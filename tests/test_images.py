"""The image half: the MDSM ResNet energy, chunked sampling, inpainting masks/PSNR/baselines.
(The EMA and data-order resume tests live in tests/test_training.py.)"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dsm_jax as dj
from dsm_jax import inpainting


@pytest.fixture(scope="module")
def tiny_resnet():
    module = dj.ResNetEnergy(width=4, n_stages=2, blocks_per_stage=2)
    params = dj.init_params(module, jax.random.key(0), (16, 16, 1))
    return dj.energy_fn_of(module), params


class TestResNetEnergy:
    def test_scalar_energy_per_example(self, tiny_resnet):
        energy_fn, params = tiny_resnet
        x = jax.random.uniform(jax.random.key(1), (3, 16, 16, 1))
        e = jax.jit(energy_fn)(params, x)
        chex.assert_shape(e, (3,))
        chex.assert_tree_all_finite(e)

    def test_examples_are_independent(self, tiny_resnet):
        # No batch statistics: each example's energy does not depend on the rest of the batch,
        # which is what makes grad(sum(E)) the per-example gradient.
        energy_fn, params = tiny_resnet
        x = jax.random.uniform(jax.random.key(1), (4, 16, 16, 1))
        e = jax.jit(energy_fn)
        chex.assert_trees_all_close(e(params, x)[:1], e(params, x[:1]), atol=1e-5, rtol=1e-5)

    def test_architecture_matches_mdsm(self):
        # Fashion-MNIST config: 6 blocks, channels 128/256/512, quadratic read-out on 4×4×512.
        module = dj.ResNetEnergy(**dj.RESNET_CONFIGS["fashion_mnist"])
        shapes = jax.eval_shape(lambda: dj.init_params(module, jax.random.key(0), (32, 32, 1)))["params"]
        blocks = sorted(k for k in shapes if k.startswith("ResidualBlock"))
        assert len(blocks) == 6
        assert [shapes[b]["conv2"]["kernel"].shape[-1] for b in blocks] == [128, 128, 256, 256, 512, 512]
        assert shapes["l3"]["kernel"].shape == (4 * 4 * 512, 1)
        assert shapes[blocks[0]]["shortcut"]["kernel"].shape[:2] == (1, 1)
        assert "bias" not in shapes[blocks[0]]["conv1"]

    def test_score_shape(self, tiny_resnet):
        energy_fn, params = tiny_resnet
        x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 1))
        chex.assert_equal_shape([jax.jit(dj.score(energy_fn))(params, x), x])

    def test_rejects_flat_input(self, tiny_resnet):
        energy_fn, params = tiny_resnet
        with pytest.raises(ValueError, match="expects images"):
            energy_fn(params, jnp.zeros((2, 256)))


@pytest.mark.parametrize("kernel_size, use_bias", [((3, 3), True), ((3, 3), False), ((1, 1), True), ((5, 3), True)])
def test_matmul_conv_equals_flax_conv_values_and_gradients(kernel_size, use_bias):
    # Same parameters, same outputs and input gradients as nn.Conv: the two are interchangeable.
    import flax.linen as nn

    x = jax.random.normal(jax.random.key(6), (2, 8, 8, 3))
    mm = dj.nets.MatmulConv(5, kernel_size, use_bias=use_bias)
    ref = nn.Conv(5, kernel_size, use_bias=use_bias)
    params = mm.init(jax.random.key(1), x)
    chex.assert_trees_all_equal_shapes(params, ref.init(jax.random.key(1), x))
    chex.assert_trees_all_close(mm.apply(params, x), ref.apply(params, x), atol=1e-5, rtol=1e-5)
    g = lambda m: jax.grad(lambda x_: jnp.sum(jnp.sin(m.apply(params, x_))))(x)  # noqa: E731
    chex.assert_trees_all_close(g(mm), g(ref), atol=1e-5, rtol=1e-5)


def test_resnet_conv_impls_share_parameters():
    x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 1))
    a = dj.ResNetEnergy(width=4, n_stages=2, blocks_per_stage=1, conv_impl="matmul")
    b = dj.ResNetEnergy(width=4, n_stages=2, blocks_per_stage=1, conv_impl="xla")
    params = dj.init_params(a, jax.random.key(0), (16, 16, 1))
    chex.assert_trees_all_close(a.apply(params, x), b.apply(params, x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="conv_impl"):
        dj.ResNetEnergy(width=4, conv_impl="fft").init(jax.random.key(0), x)


class TestSampleInChunks:
    def test_chunks_trim_and_stay_finite(self):
        energy_fn = lambda p, x: 0.5 * jnp.sum(x**2, axis=(1, 2))  # noqa: E731
        sampler = jax.jit(dj.langevin(energy_fn, 0.1, 5, return_info=True))
        init = lambda k, n: jax.random.normal(k, (n, 2, 3))  # noqa: E731
        x, info = dj.sample_in_chunks(sampler, None, jax.random.key(0), init, 10, 4)
        assert x.shape == (10, 2, 3) and info == {"n_nonfinite": 0, "first_nonfinite_step": None}
        x2, _ = dj.sample_in_chunks(sampler, None, jax.random.key(0), init, 10, 4)
        np.testing.assert_array_equal(x, x2)

    def test_reports_nonfinite_chains_and_step(self):
        # Energy that blows up: the gradient doubles x each step until it overflows.
        energy_fn = lambda p, x: -jnp.sum(x**2, axis=1) * 1e30  # noqa: E731
        sampler = jax.jit(dj.langevin(energy_fn, 1.0, 20, return_info=True))
        init = lambda k, n: jnp.ones((n, 2))  # noqa: E731
        _, info = dj.sample_in_chunks(sampler, None, jax.random.key(0), init, 3, 3)
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

    def test_inpainter_never_changes_observed_pixels(self, tiny_resnet):
        energy_fn, params = tiny_resnet
        x = jax.random.uniform(jax.random.key(2), (3, 16, 16, 1))
        observed = inpainting.observed_mask("random_half", x.shape, jax.random.key(3))
        fill = jax.jit(dj.inpainter(energy_fn, 1e-3, dj.mdsm_temperature_schedule(3, 5, 2, 10.0)))
        out = np.asarray(fill(params, jax.random.key(4), x, jnp.asarray(observed)))
        np.testing.assert_array_equal(out[observed > 0], np.asarray(x)[observed > 0])
        assert np.any(out[observed == 0] != np.asarray(x)[observed == 0])
