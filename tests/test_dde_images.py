"""DDE on images: the DenseNet / conv networks, and the DDE loop as the image experiment
drives it (``make_dde_step`` without ``data_fn``, real batches passed in by ``fit``).

The closed-form checks of the step (Gaussian fixed points) are in ``test_dde.py``; here the
same structure is checked with the image networks, and end to end on a 2-D toy.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dsm_jax as dj
from conftest import tree_equal
from dsm_jax import data, metrics, nets, toy as toys

SMALL_IMAGE = (8, 8, 1)
LATENT = 4
BATCH = 8


def _tiny_nets(image_shape=SMALL_IMAGE):
    energy = nets.DenseNetEnergy(depth=2, growth=8)
    generator = nets.DenseNetGenerator(depth=2, growth=8, image_shape=image_shape)
    return energy, generator


def _latent_fn(key):
    return jax.random.normal(key, (BATCH, LATENT))


def _state(energy, generator, gen_opt, energy_opt, image_shape=SMALL_IMAGE, seed=0):
    k_g, k_p, k_q, k_s = jax.random.split(jax.random.key(seed), 4)
    return dj.init_dde_state(
        dj.init_params(generator, k_g, (LATENT,)), dj.init_params(energy, k_p, image_shape),
        dj.init_params(energy, k_q, image_shape), gen_opt, energy_opt, k_s)


def _images(n, image_shape=SMALL_IMAGE, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(size=(n, *image_shape)), jnp.float32)


def _batches():
    """Real batches the way the image experiment feeds them: a BatchIterator through fit."""
    return data.BatchIterator(np.asarray(_images(64)), BATCH, seed=0)


def _constant_update(value):
    """An 'optimiser' whose update adds ``value`` to every parameter, whatever the gradient:
    after n updates a parameter is exactly its starting value + n·value, so it counts the
    updates a network received and shows whether it continued from the previous step."""

    def update(grads, state, params=None):
        return jax.tree.map(lambda g: jnp.full_like(g, value), grads), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _offset(after, before):
    """The single value every leaf of ``after − before`` equals (asserts it is uniform)."""
    diffs = np.concatenate([np.ravel(np.asarray(a) - np.asarray(b))
                            for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before))])
    np.testing.assert_allclose(diffs, diffs[0], atol=1e-4)
    return float(diffs[0])


# ---------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------
def test_densenet_energy_and_generator_shapes_and_range():
    energy = nets.DenseNetEnergy(depth=3, growth=16)
    generator = nets.DenseNetGenerator(depth=3, growth=8)
    e_params = dj.init_params(energy, jax.random.key(0), (32, 32, 1))
    g_params = dj.init_params(generator, jax.random.key(1), (16,))
    x = _images(5, (32, 32, 1))
    e = energy.apply(e_params, x)
    chex.assert_shape(e, (5,))
    chex.assert_tree_all_finite(e)
    images = generator.apply(g_params, 3.0 * jax.random.normal(jax.random.key(2), (5, 16)))
    chex.assert_shape(images, (5, 32, 32, 1))
    assert float(images.min()) > 0.0 and float(images.max()) < 1.0
    # The energy plugs into the core functions (one scalar per example).
    chex.assert_shape(dj.score(dj.energy_fn_of(energy))(e_params, x), x.shape)


def test_densenet_concatenation_grows_the_width():
    depth, growth, d_in = 4, 8, 32 * 32
    energy = nets.DenseNetEnergy(depth=depth, growth=growth)
    params = dj.init_params(energy, jax.random.key(0), (32, 32, 1))["params"]["mlp"]
    for i in range(depth):  # layer i sees the input and the i earlier layers' outputs
        chex.assert_shape(params[f"dense_{i}"]["kernel"], (d_in + i * growth, growth))
    chex.assert_shape(params["readout"]["kernel"], (d_in + depth * growth, 1))
    _, inter = energy.apply({"params": {"mlp": params}}, _images(3, (32, 32, 1)), mutable="intermediates")
    (features,) = inter["intermediates"]["mlp"]["features"]
    chex.assert_shape(features, (3, d_in + depth * growth))
    # The input itself is carried through unchanged at the end of the feature vector.
    np.testing.assert_array_equal(np.asarray(features[:, -d_in:]), np.asarray(_images(3, (32, 32, 1)).reshape(3, -1)))


def test_quadratic_term_adds_a_learned_diagonal_gaussian():
    plain = nets.DenseNetEnergy(depth=2, growth=8)
    quad = nets.DenseNetEnergy(depth=2, growth=8, quadratic=True)
    params = dj.init_params(quad, jax.random.key(0), (4, 4, 1))
    chex.assert_shape(params["params"]["centre"], (16,))
    chex.assert_shape(params["params"]["log_prec"], (16,))
    x = _images(3, (4, 4, 1))
    mlp_only = {"params": {"mlp": params["params"]["mlp"]}}
    # At initialisation (centre 0, precision 1) the term is ½‖x‖².
    np.testing.assert_allclose(quad.apply(params, x), plain.apply(mlp_only, x) + 0.5 * jnp.sum(x**2, axis=(1, 2, 3)),
                               rtol=1e-5, atol=1e-5)


def test_generator_readout_init_scale_widens_the_initial_spread():
    z = jax.random.normal(jax.random.key(1), (200, 8))
    spread = {}
    for scale in (1.0, 3.0):
        g = nets.DenseNetGenerator(depth=2, growth=8, image_shape=(4, 4, 1), readout_init_scale=scale)
        spread[scale] = float(jnp.mean(jnp.std(g.apply(dj.init_params(g, jax.random.key(0), (8,)), z), axis=0)))
    assert spread[3.0] > 1.5 * spread[1.0]


def test_paper_sizes_are_the_defaults():
    assert nets.DDE_DENSENET_PAPER == {"depth": 16, "energy_growth": 256, "generator_growth": 64, "latent_dim": 16}
    assert (nets.DenseNetEnergy().depth, nets.DenseNetEnergy().growth) == (16, 256)
    assert (nets.DenseNetGenerator().depth, nets.DenseNetGenerator().growth) == (16, 64)


def test_conv_generator_shape_and_range():
    generator = nets.ConvGenerator(width=4, n_upsamples=3)
    g_params = dj.init_params(generator, jax.random.key(0), (16,))
    images = jax.jit(generator.apply)(g_params, jax.random.normal(jax.random.key(1), (3, 16)))
    chex.assert_shape(images, (3, 32, 32, 1))
    assert float(images.min()) > 0.0 and float(images.max()) < 1.0
    # 4×4 → 8×8 → 16×16 → 32×32, channels halving to `width` at full resolution.
    chex.assert_shape(g_params["params"]["project"]["kernel"], (16, 4 * 4 * 4 * 8))
    chex.assert_shape(g_params["params"]["conv_2"]["kernel"], (3, 3, 8, 4))


def test_bad_network_sizes_name_the_argument():
    with pytest.raises(ValueError, match="`growth`"):
        dj.init_params(nets.DenseNetEnergy(depth=2, growth=0), jax.random.key(0), (4, 4, 1))
    with pytest.raises(ValueError, match="n_upsamples"):
        dj.init_params(nets.ConvGenerator(width=4, n_upsamples=3, image_shape=(28, 28, 1)), jax.random.key(0), (4,))
    with pytest.raises(ValueError, match="latent_dim"):
        nets.DenseNetGenerator(depth=1, growth=2).apply({}, jnp.zeros((2, 4, 4)))


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------
def test_every_k_structure_warm_start_and_separate_optimisers_through_fit():
    # Constant-update optimisers count the updates each network received: G +1 per generator
    # step, E_p and E_q +0.01 per energy step. Over 25 loop steps with k = 5, after 7 E_q
    # warm-up steps, fed real batches by fit from a BatchIterator exactly as the experiment.
    energy, generator = _tiny_nets()
    gen_opt, energy_opt = _constant_update(1.0), _constant_update(0.01)
    state0 = _state(energy, generator, gen_opt, energy_opt)
    energy_fn = dj.energy_fn_of(energy)
    warm = dj.make_q_warmup_step(energy_fn, generator.apply, 0.5, _latent_fn, energy_opt)
    state, _ = dj.fit(warm, state0, 7, steps_per_call=7, progress=False)
    assert int(state.step) == 0
    assert _offset(state.q.params, state0.q.params) == pytest.approx(0.07)
    assert tree_equal(state.p, state0.p) and tree_equal(state.gen, state0.gen)

    step = dj.make_dde_step(energy_fn, generator.apply, 0.5, _latent_fn, gen_opt, energy_opt, gen_every=5)
    batches = _batches()
    seen = []  # (step, G offset, E_q offset, E_p offset) after every step
    record = lambda s, r: seen.append((r["step"], _offset(s.gen.params, state0.gen.params),  # noqa: E731
                                       _offset(s.q.params, state0.q.params), _offset(s.p.params, state0.p.params)))
    final, history = dj.fit(step, state, 25, steps_per_call=1, batches=batches, progress=False, callback=record)
    assert int(final.step) == 25 and int(final.gen_updates) == 5
    g_updates = [round(g) for _, g, _, _ in seen]
    assert g_updates == [t // 5 for t in range(1, 26)]  # G moved exactly at steps 5, 10, ..., 25
    # E_q continued from its warm-up and from every previous step (never re-initialised):
    # its offset is (7 + t) updates after loop step t; E_p's is t.
    np.testing.assert_allclose([q for *_, q, _ in seen], [0.01 * (7 + t) for t in range(1, 26)], atol=1e-4)
    np.testing.assert_allclose([p for *_, p in seen], [0.01 * t for t in range(1, 26)], atol=1e-4)
    assert [h["gen_stepped"] for h in history] == [float(t % 5 == 0) for t in range(1, 26)]

    # The same 25 steps scanned in one dispatch (the GPU path) give the same generator count.
    scanned, _ = dj.fit(step, state, 25, steps_per_call=25, batches=_batches(), progress=False)
    assert int(scanned.gen_updates) == 5
    assert _offset(scanned.gen.params, state0.gen.params) == pytest.approx(5.0)


def test_p_warmup_trains_E_p_only():
    energy, generator = _tiny_nets()
    energy_fn = dj.energy_fn_of(energy)
    gen_opt, energy_opt = _constant_update(1.0), _constant_update(0.01)
    state0 = _state(energy, generator, gen_opt, energy_opt)
    warm = dj.make_p_warmup_step(energy_fn, 0.5, energy_opt)
    state, history = dj.fit(warm, state0, 6, steps_per_call=3, batches=_batches(), progress=False)
    assert int(state.step) == 0 and int(state.gen_updates) == 0
    assert _offset(state.p.params, state0.p.params) == pytest.approx(0.06)
    assert tree_equal(state.q, state0.q) and tree_equal(state.gen, state0.gen)
    assert not tree_equal(jax.random.key_data(state.key), jax.random.key_data(state0.key))
    assert all(np.isfinite(h["p_loss"]) for h in history)


def test_adam_states_carry_over_between_steps():
    # With real Adam optimisers: E_q's step count continues through the warm-up and the loop,
    # and one loop step moves E_q by at most one Adam step from where the last one left it.
    energy, generator = _tiny_nets()
    lr = 1e-3
    gen_opt, energy_opt = dj.adam(lr), dj.adam(lr)
    state = _state(energy, generator, gen_opt, energy_opt)
    energy_fn = dj.energy_fn_of(energy)
    warm = jax.jit(dj.make_q_warmup_step(energy_fn, generator.apply, 0.5, _latent_fn, energy_opt))
    for _ in range(3):
        state, _ = warm(state)
    step = jax.jit(dj.make_dde_step(energy_fn, generator.apply, 0.5, _latent_fn, gen_opt, energy_opt, gen_every=2))
    x = _images(BATCH)
    previous = state
    for t in range(1, 5):
        state, _ = step(state, x)
        assert int(state.q.opt_state[0].count) == 3 + t
        assert int(state.p.opt_state[0].count) == t
        assert int(state.gen.opt_state[0].count) == t // 2
        moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(state.q.params),
                                                                   jax.tree.leaves(previous.q.params)))
        assert 0.0 < moved <= 3.2 * lr  # |Adam step| <= lr·(1 − β1)/√(1 − β2) < 3.2·lr
        previous = state


def test_generator_step_leaves_both_energies_untouched():
    energy, generator = _tiny_nets()
    energy_fn = dj.energy_fn_of(energy)
    gen_opt, energy_opt = dj.adam(1e-2), dj.adam(1e-3)
    state = _state(energy, generator, gen_opt, energy_opt)
    x = _images(BATCH)
    make = lambda k, train_p: jax.jit(dj.make_dde_step(  # noqa: E731
        energy_fn, generator.apply, 0.5, _latent_fn, gen_opt, energy_opt, gen_every=k, train_p=train_p))
    # E_p frozen (train_p=False): the only networks that can move are E_q (before G, on this
    # step's fakes) and G. Same keys, same data, with and without the generator step.
    with_gen, m1 = make(1, False)(state, x)
    without_gen, m2 = make(10**6, False)(state, x)
    assert m1["gen_stepped"] == 1 and m2["gen_stepped"] == 0
    assert not tree_equal(with_gen.gen.params, state.gen.params)
    assert tree_equal(without_gen.gen, state.gen)
    assert tree_equal(with_gen.p, state.p) and tree_equal(without_gen.p, state.p)
    assert tree_equal(with_gen.q, without_gen.q)
    assert not tree_equal(with_gen.q.params, state.q.params)
    # And the surrogate's gradient has no path into E_p or E_q at all.
    loss = dj.kl_generator_loss(generator.apply, energy_fn, 0.5)
    z = _latent_fn(jax.random.key(3))
    g_p, g_q = jax.grad(loss, argnums=(1, 2))(state.gen.params, state.p.params, state.q.params, jax.random.key(4), z)
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves((g_p, g_q)))


def test_dde_loop_lowers_the_sample_kl_on_a_2d_toy():
    # The same loop code (warm-up, make_dde_step, E_p trained alongside) on checkerboard:
    # a few hundred iterations take the generator from N(0, I)-like samples (KL 2–6 nats)
    # to below 1 nat (measured 0.43–0.65 over four seeds).
    toy, sigma, batch = toys.get_toy("checkerboard"), 0.5, 256
    energy, generator = dj.MLPEnergy(depth=3, width=64), dj.ResidualMLPGenerator(depth=3, width=64)
    energy_fn = dj.energy_fn_of(energy)
    k_g, k_p, k_q, k_s, k_eval = jax.random.split(jax.random.key(0), 5)
    gen_opt, energy_opt = dj.adam(1e-3, b1=0.5), dj.adam(1e-3)
    latent_fn = lambda k: jax.random.normal(k, (batch, 2))  # noqa: E731
    state = dj.init_dde_state(dj.init_params(generator, k_g, (2,)), dj.init_params(energy, k_p, (2,)),
                              dj.init_params(energy, k_q, (2,)), gen_opt, energy_opt, k_s)
    grid = metrics.make_grid(toy.bounds, 64)

    def sample_kl(s):
        samples = generator.apply(s.gen.params, jax.random.normal(k_eval, (2000, 2)))
        return float(metrics.sample_kl(samples, lambda x: toy.log_density(x, sigma), sigma, grid, key=jax.random.key(0))["kl"])

    before = sample_kl(state)
    warm = dj.make_q_warmup_step(energy_fn, generator.apply, sigma, latent_fn, energy_opt)
    state, _ = dj.fit(warm, state, 100, steps_per_call=100, progress=False)
    step = dj.make_dde_step(energy_fn, generator.apply, sigma, latent_fn, gen_opt, energy_opt, gen_every=3,
                            data_fn=lambda k: toy.sample(k, batch))
    state, _ = dj.fit(step, state, 400, steps_per_call=200, progress=False)
    after = sample_kl(state)
    assert int(state.gen_updates) == 133
    assert after < 1.0 and after < 0.5 * before, (before, after)
