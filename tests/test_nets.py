"""dsm_jax.nets: MDSM's ResNet energy and the convolutions; bad configurations refused when a module is built, bad inputs when it is traced,
and parameters that stay float32 under ``jax_enable_x64`` (float32 numbers unchanged).

Every case is tiny (a few 8×8 images, widths of 4), so the file runs in seconds.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dsm_jax as dj
from conftest import tree_equal
from dsm_jax import nets

NAN = float("nan")


# ---------------------------------------------------------------------------------------
# MDSM's ResNet energy and the convolutions (moved from test_images.py).
# ---------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------
# Bad configurations and inputs.
# ---------------------------------------------------------------------------------------

# (id, build, error type, message that names the argument). Each build only constructs the
# module: the error must come from the constructor, before any init or apply.
BAD_CONFIGS = [
    ("mlp-width-0", lambda: nets.MLPEnergy(width=0), ValueError, r"MLPEnergy: `width` must be an int >= 1, got 0"),
    ("mlp-width-float", lambda: nets.MLPEnergy(width=2.5), TypeError, r"`width` must be an int >= 1, got 2.5"),
    ("mlp-width-bool", lambda: nets.MLPEnergy(width=True), TypeError, r"`width` must be an int >= 1, got True"),
    ("mlp-depth-negative", lambda: nets.MLPEnergy(depth=-1), ValueError, r"`depth` must be an int >= 0, got -1"),
    ("mlp-activation", lambda: nets.MLPEnergy(activation="sigmoid!"), ValueError, r"Unknown `activation`"),
    ("mlp-weight-init", lambda: nets.MLPEnergy(weight_init="orthogonal"), ValueError, r"Unknown `weight_init`"),
    ("mlp-out-dim-0", lambda: nets.MLP(2, 4, 0), ValueError, r"MLP: `out_dim` must be an int >= 1"),
    ("residual-gen-width-0", lambda: nets.ResidualMLPGenerator(width=0), ValueError, r"ResidualMLPGenerator: `width`"),
    ("resnet-width-0", lambda: nets.ResNetEnergy(width=0), ValueError, r"ResNetEnergy: `width` must be an int >= 1"),
    ("resnet-stages-0", lambda: nets.ResNetEnergy(n_stages=0), ValueError, r"`n_stages` must be an int >= 1"),
    ("resnet-blocks-negative", lambda: nets.ResNetEnergy(blocks_per_stage=-2), ValueError, r"`blocks_per_stage`"),
    ("resnet-conv-impl", lambda: nets.ResNetEnergy(conv_impl="fft"), ValueError, r"Unknown `conv_impl` 'fft'"),
    ("resnet-activation", lambda: nets.ResNetEnergy(activation="elu2"), ValueError, r"Unknown `activation`"),
    ("densenet-growth-0", lambda: nets.DenseNetEnergy(growth=0), ValueError, r"DenseNetEnergy: `growth`"),
    ("densenet-depth-0", lambda: nets.DenseNetEnergy(depth=0), ValueError, r"`depth` must be an int >= 1"),
    ("densenet-mlp-out-0", lambda: nets.DenseNetMLP(out_dim=0), ValueError, r"DenseNetMLP: `out_dim`"),
    ("densenet-readout-nan", lambda: nets.DenseNetMLP(readout_init_scale=NAN), ValueError, r"`readout_init_scale`"),
    ("densenet-gen-image-0", lambda: nets.DenseNetGenerator(image_shape=(32, 0, 1)), ValueError,
     r"`image_shape` must be a tuple of positive ints"),
    ("densenet-gen-image-int", lambda: nets.DenseNetGenerator(image_shape=32), ValueError, r"`image_shape`.*\(32,\)"),
    ("densenet-gen-readout-0", lambda: nets.DenseNetGenerator(readout_init_scale=0.0), ValueError,
     r"`readout_init_scale` must be finite and > 0"),
    ("conv-gen-width-0", lambda: nets.ConvGenerator(width=0), ValueError, r"ConvGenerator: `width`"),
    ("conv-gen-upsamples", lambda: nets.ConvGenerator(n_upsamples=-1), ValueError, r"`n_upsamples`"),
    ("conv-gen-image-2d", lambda: nets.ConvGenerator(image_shape=(32, 32)), ValueError,
     r"`image_shape` must be a tuple of 3 positive ints"),
    ("conv-gen-indivisible", lambda: nets.ConvGenerator(image_shape=(28, 28, 1)), ValueError, r"lower `n_upsamples`"),
    ("conv-gen-impl", lambda: nets.ConvGenerator(conv_impl="winograd"), ValueError, r"Unknown `conv_impl`"),
    ("matmul-conv-features-0", lambda: nets.MatmulConv(0), ValueError, r"MatmulConv: `features`"),
    ("canonical-conv-kernel", lambda: nets.CanonicalConv(4, (3,)), ValueError, r"`kernel_size` must be a tuple of 2"),
]


@pytest.mark.parametrize("build, error, message", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_configuration_is_refused_when_the_module_is_built(build, error, message):
    with pytest.raises(error, match=message):
        build()


def _init(module, x):
    return lambda: module.init(jax.random.key(0), x)


# (id, call, error type, message): bad inputs, refused when the module is traced (init).
BAD_INPUTS = [
    ("mlp-1d-x", _init(nets.MLPEnergy(depth=1, width=4), jnp.zeros((3,))), ValueError,
     r"MLPEnergy expects x of shape \(batch, \*event\), got shape \(3,\).*x\[None\]"),
    ("mlp-int-x", _init(nets.MLPEnergy(depth=1, width=4), jnp.zeros((2, 3), jnp.int32)), TypeError,
     r"`x` must be a floating-point array, got dtype int32"),
    ("resnet-flat-x", _init(nets.ResNetEnergy(width=4, n_stages=1, blocks_per_stage=1), jnp.zeros((2, 64))),
     ValueError, r"expects images \(batch, H, W, C\)"),
    ("resnet-uint8-x", _init(nets.ResNetEnergy(width=4, n_stages=1, blocks_per_stage=1),
                             jnp.zeros((2, 8, 8, 1), jnp.uint8)), TypeError, r"`x` must be a floating-point array"),
    ("resnet-indivisible", _init(nets.ResNetEnergy(width=4, n_stages=3, blocks_per_stage=1),
                                 jnp.zeros((2, 28, 28, 1))), ValueError, r"do not halve 3 times \(`n_stages`\).*pad"),
    ("densenet-1d-x", _init(nets.DenseNetEnergy(depth=1, growth=2), jnp.zeros((16,))), ValueError,
     r"DenseNetEnergy expects x of shape \(batch, \*event\)"),
    ("densenet-gen-3d-z", _init(nets.DenseNetGenerator(depth=1, growth=2), jnp.zeros((2, 4, 4))), ValueError,
     r"expects latents \(batch, latent_dim\)"),
    ("densenet-gen-int-z", _init(nets.DenseNetGenerator(depth=1, growth=2), jnp.zeros((2, 4), jnp.int32)),
     TypeError, r"`z` must be a floating-point array"),
    ("conv-gen-1d-z", _init(nets.ConvGenerator(width=2, n_upsamples=1, image_shape=(4, 4, 1)), jnp.zeros((4,))),
     ValueError, r"ConvGenerator expects latents"),
    ("residual-gen-3d-z", _init(nets.ResidualMLPGenerator(depth=1, width=4), jnp.zeros((2, 2, 2))), ValueError,
     r"ResidualMLPGenerator expects latents"),
    ("init-params-int-shape", lambda: dj.init_params(nets.MLPEnergy(1, 4), jax.random.key(0), 2), ValueError,
     r"`event_shape` must be a tuple of sizes, got the int 2; pass \(2,\)"),
    ("init-params-zero-shape", lambda: dj.init_params(nets.MLPEnergy(1, 4), jax.random.key(0), (0,)), ValueError,
     r"`event_shape` must be a tuple of positive ints"),
    ("init-params-no-key", lambda: dj.init_params(nets.MLPEnergy(1, 4), None, (2,)), TypeError,
     r"`key` must be one PRNG key and is required"),
    ("init-params-int-key", lambda: dj.init_params(nets.MLPEnergy(1, 4), 0, (2,)), TypeError,
     r"`key` must be one PRNG key"),
    ("init-params-class", lambda: dj.init_params(nets.MLPEnergy, jax.random.key(0), (2,)), TypeError,
     r"`module` must be a module instance, got the class MLPEnergy; pass MLPEnergy\(...\)"),
    ("energy-fn-of-class", lambda: dj.energy_fn_of(nets.ResNetEnergy), TypeError, r"`module` must be a module"),
    ("energy-fn-of-function", lambda: dj.energy_fn_of(lambda p, x: x), TypeError,
     r"`module` must be a flax.linen.Module instance"),
]


@pytest.mark.parametrize("call, error, message", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_refused_at_trace_time_naming_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_good_edge_cases_still_build():
    # depth 0 is a linear energy (not a bad input); a raw uint32 key works like a typed one.
    params = dj.init_params(nets.MLPEnergy(depth=0, width=1), jax.random.PRNGKey(0), (3,))
    chex.assert_shape(params["params"]["MLP_0"]["Dense_0"]["kernel"], (3, 1))
    module = nets.ResNetEnergy(width=2, n_stages=2, blocks_per_stage=1)
    assert module.clone(width=3).width == 3  # flax's clone re-runs the checks on good values


@pytest.mark.parametrize("conv_impl", nets.CONV_IMPLS)
def test_resnet_params_stay_float32_under_x64_and_equal_the_float32_ones(conv_impl):
    # The default kernel initialiser follows jax_enable_x64 (float64) while init_params feeds
    # float32 images; the explicit param_dtype keeps the parameters float32, bit-identical to
    # the float32 mode's, and a float32 input gives float32 energies equal to those of x64 off.
    module = nets.ResNetEnergy(width=4, n_stages=1, blocks_per_stage=1, conv_impl=conv_impl)
    x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 1))
    apply = jax.jit(module.apply)  # eager, a conv net compiles op by op
    ref_params = dj.init_params(module, jax.random.key(0), (8, 8, 1))
    ref_energy = np.asarray(apply(ref_params, x))
    with jax.enable_x64(True):
        params = dj.init_params(module, jax.random.key(0), (8, 8, 1))
        assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
        energy = apply(params, x)
        assert energy.dtype == jnp.float32
        # float64 images promote the computation to float64 (as nn.Conv does), and run
        e64 = apply(params, jnp.asarray(x, jnp.float64))
        assert e64.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(e64), ref_energy, rtol=1e-4, atol=1e-4)
    assert tree_equal(params, ref_params)
    np.testing.assert_array_equal(np.asarray(energy), ref_energy)


def test_conv_generator_and_param_dtype_under_x64():
    generator = nets.ConvGenerator(width=2, n_upsamples=1, image_shape=(4, 4, 1))
    ref = dj.init_params(generator, jax.random.key(0), (3,))
    with jax.enable_x64(True):
        params = dj.init_params(generator, jax.random.key(0), (3,))
        images = jax.jit(generator.apply)(params, jnp.zeros((2, 3), jnp.float32))
    assert images.dtype == jnp.float32 and tree_equal(params, ref)
    # param_dtype is a choice, not only a default
    wide = dj.init_params(nets.MatmulConv(2, param_dtype=jnp.bfloat16), jax.random.key(0), (4, 4, 1))
    assert {leaf.dtype for leaf in jax.tree.leaves(wide)} == {jnp.dtype(jnp.bfloat16)}


def test_old_import_paths_still_work():
    # The package keeps every name the single module had (experiments, tests and notebooks use them).
    from dsm_jax.nets import (  # noqa: F401
        ACTIVATIONS, CONV_IMPLS, DDE_DENSENET_PAPER, DENSE_INITS, RESNET_CONFIGS, CanonicalConv, ConvGenerator,
        DenseNetEnergy, DenseNetGenerator, DenseNetMLP, MatmulConv, MLPEnergy, ResidualMLPGenerator, ResNetEnergy,
        canonical_conv, energy_fn_of, init_params, same_padding)
    assert dj.nets.MatmulConv is MatmulConv and dj.ResNetEnergy is ResNetEnergy
    # Auto-generated parameter names are the class names: checkpoints written before still load.
    shapes = jax.eval_shape(lambda: dj.init_params(ResNetEnergy(width=2, n_stages=1, blocks_per_stage=1),
                                                   jax.random.key(0), (4, 4, 1)))["params"]
    assert sorted(shapes) == ["ResidualBlock_0", "l1", "l2", "l3", "stem"]


@pytest.mark.parametrize("module, event_shape", [
    (nets.MLPEnergy(depth=2, width=8), (2,)),
    (nets.ResidualMLPGenerator(depth=2, width=8), (2,)),
    (nets.DenseNetEnergy(depth=2, growth=4, quadratic=True), (8, 8, 1)),
    (nets.DenseNetGenerator(depth=2, growth=4, image_shape=(4, 4, 1)), (3,)),
], ids=["MLPEnergy", "ResidualMLPGenerator", "DenseNetEnergy", "DenseNetGenerator"])
def test_dense_nets_initialise_float32_under_x64_bit_identical_to_float32_mode(module, event_shape):
    # With the ResNet and ConvGenerator tests above: every network in nets initialises under x64.
    ref = dj.init_params(module, jax.random.key(0), event_shape)
    with jax.enable_x64(True):
        params = dj.init_params(module, jax.random.key(0), event_shape)
        out = jax.jit(module.apply)(params, jnp.zeros((2, *event_shape), jnp.float32))
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    assert out.dtype == jnp.float32 and tree_equal(params, ref)
