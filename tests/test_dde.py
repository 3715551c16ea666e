"""The DDE step: update schedule, E_q warm start, isolation of the generator step.

Closed-form setting: data N(m, s²I), a linear generator G(z) = a·z + b (law N(b, a²I)) and
diagonal quadratic energies E = ½Σ(x − c)²/v for both E_p and E_q, so every fixed point is
known: E_p → N(m, (s² + σ²)I), E_q → N(b, (a² + σ²)I), and the generator → a² = s², b = m.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dsm_jax as dj
from conftest import assert_within, diag_quadratic_energy, linear_generator, tree_equal

SIGMA = 0.5
M = np.array([1.0, -2.0], np.float32)
S = 0.5
BATCH = 512


def latent_fn(key):
    return jax.random.normal(key, (BATCH, 2))


def data_fn(key):
    return M + S * jax.random.normal(key, (BATCH, 2))


def _init_state(gen_lr=0.02, energy_lr=0.05, a=1.5, b=(-1.0, 1.0)):
    gen = {"a": jnp.asarray(a, jnp.float32), "b": jnp.asarray(b, jnp.float32)}
    energy = {"b": jnp.zeros(2), "log_prec": jnp.zeros(2)}
    return dj.init_dde_state(gen, energy, energy, optax.sgd(gen_lr), optax.adam(energy_lr),
                             jax.random.PRNGKey(0))


def _make_step(gen_every, gen_lr=0.02, energy_lr=0.05, **kw):
    return dj.make_dde_step(diag_quadratic_energy, linear_generator, SIGMA, latent_fn,
                            optax.sgd(gen_lr), optax.adam(energy_lr), gen_every=gen_every,
                            data_fn=kw.pop("data_fn", data_fn), **kw)


def _trajectory(step, state, n):
    """Run n steps in one jitted scan; return the final state, the state after every step
    (stacked) and the metrics."""

    def body(s, _):
        s, metrics = step(s)
        return s, (s, metrics)

    final, (states, metrics) = jax.jit(lambda s: jax.lax.scan(body, s, None, length=n))(state)
    return final, states, metrics


def _at(states, t):
    return jax.tree.map(lambda leaf: leaf[t], states)


def test_generator_updated_exactly_every_gen_every_steps():
    state = _init_state()
    final, states, metrics = _trajectory(_make_step(gen_every=3), state, 10)
    assert int(final.step) == 10
    assert int(final.gen_updates) == 3
    stepped = [t + 1 for t in range(10) if metrics["gen_stepped"][t] == 1]
    assert stepped == [3, 6, 9]
    # Which steps actually changed the generator's parameters (and optimiser state)?
    previous, changed = state.gen, []
    for t in range(10):
        current = _at(states.gen, t)
        if not tree_equal(current.params, previous.params):
            changed.append(t + 1)
        previous = current
    assert changed == [3, 6, 9]
    np.testing.assert_array_equal(np.asarray(states.gen_updates), [0, 0, 1, 1, 1, 2, 2, 2, 3, 3])
    for name in ("p_loss", "q_loss", "gen_loss", "gen_stepped"):
        chex.assert_shape(metrics[name], (10,))
        chex.assert_tree_all_finite(metrics[name])


def test_gen_every_one_steps_every_time_and_bad_gen_every():
    final, _, metrics = _trajectory(_make_step(gen_every=1), _init_state(), 4)
    assert int(final.gen_updates) == 4
    np.testing.assert_array_equal(np.asarray(metrics["gen_stepped"]), 1.0)
    for bad, error in ((0, ValueError), (-2, ValueError), (1.5, TypeError)):
        with pytest.raises(error, match="`gen_every`"):
            _make_step(gen_every=bad)


def test_generator_step_does_not_touch_the_energies():
    # Same keys, same data: with gen_every = 4 the energies must follow exactly the run in
    # which G never steps, up to and including step 4 (G steps after the energies there).
    # E_p never depends on G at all; E_q does from step 5 on (it trains on G's samples).
    state = _init_state()
    _, with_gen, _ = _trajectory(_make_step(gen_every=4), state, 8)
    _, without_gen, _ = _trajectory(_make_step(gen_every=10**9), state, 8)
    assert tree_equal(with_gen.p, without_gen.p)
    assert tree_equal(_at(with_gen.q, 3), _at(without_gen.q, 3))
    assert not tree_equal(_at(with_gen.gen.params, 3), _at(without_gen.gen.params, 3))
    assert not tree_equal(_at(with_gen.q.params, 4), _at(without_gen.q.params, 4))
    assert int(without_gen.gen_updates[-1]) == 0
    assert tree_equal(_at(without_gen.gen, 7), state.gen)


def test_energies_are_warm_started_and_fit_their_targets():
    # The generator is frozen (gen_every huge). E_q only reaches N(b, (a² + σ²)I) — far from
    # its initialisation N(0, I) — if every step continues from the previous step's
    # parameters and optimiser state.
    state = _init_state(a=0.8, b=(2.0, -1.0))
    final, states, _ = _trajectory(_make_step(gen_every=10**9), state, 400)
    count = np.asarray(states.q.opt_state[0].count)
    np.testing.assert_array_equal(count, np.arange(1, 401))  # Adam state carried over
    q_b = np.asarray(final.q.params["b"])
    q_v = np.exp(-np.asarray(final.q.params["log_prec"]))
    p_b = np.asarray(final.p.params["b"])
    p_v = np.exp(-np.asarray(final.p.params["log_prec"]))
    # Tolerances: the Adam iterates jitter around the optimum (batch 512, lr 0.05).
    assert_within(q_b, [2.0, -1.0], 0.1, "E_q centre")
    assert_within(q_v, 0.8**2 + SIGMA**2, 0.1 * (0.8**2 + SIGMA**2), "E_q variance")
    assert_within(p_b, M, 0.1, "E_p centre")
    assert_within(p_v, S**2 + SIGMA**2, 0.1 * (S**2 + SIGMA**2), "E_p variance")
    # One more step starts from the previous step's E_q: it moves E_q only a little.
    nxt, _ = jax.jit(_make_step(gen_every=10**9))(final)
    assert_within(nxt.q.params["b"], q_b, 0.1, "next step")


def test_train_p_false_freezes_E_p_and_step_without_data_fn():
    step = _make_step(gen_every=2, train_p=False, data_fn=None)
    state = _init_state()
    x_real = jnp.asarray(np.random.default_rng(0).normal(size=(BATCH, 2)), jnp.float32)
    new, metrics = jax.jit(step)(state, x_real)
    assert "p_loss" not in metrics
    assert tree_equal(new.p, state.p)
    assert not tree_equal(new.q.params, state.q.params)
    # With train_p the batch passed in is what E_p trains on.
    step = _make_step(gen_every=2, data_fn=None)
    new, metrics = jax.jit(step)(state, x_real)
    assert not tree_equal(new.p.params, state.p.params)
    chex.assert_tree_all_finite(metrics)


def test_q_warmup_step_leaves_generator_and_E_p_untouched():
    state = _init_state(a=0.8, b=(2.0, -1.0))
    warm = dj.make_q_warmup_step(diag_quadratic_energy, linear_generator, SIGMA, latent_fn,
                                 optax.adam(0.05))
    final, states, metrics = _trajectory(warm, state, 300)
    assert tree_equal(final.gen, state.gen)
    assert tree_equal(final.p, state.p)
    assert int(final.step) == 0 and int(final.gen_updates) == 0
    assert not tree_equal(final.key, state.key)
    assert len(np.unique(np.asarray(states.key), axis=0)) == 300  # fresh key each step
    chex.assert_shape(metrics["q_loss"], (300,))
    # ... and E_q fits the initial generator's smoothed law N(b, (a² + σ²)I).
    assert_within(final.q.params["b"], [2.0, -1.0], 0.1, "E_q centre")
    v = np.exp(-np.asarray(final.q.params["log_prec"]))
    assert_within(v, 0.8**2 + SIGMA**2, 0.1 * (0.8**2 + SIGMA**2), "E_q variance")


def test_dde_loop_moves_the_generator_to_the_data():
    # End to end: the KL surrogate with learned E_p, E_q drives G's law N(b, a²I) to the
    # data law N(m, s²I).
    state = _init_state(gen_lr=0.05, a=1.5, b=(-1.0, 1.0))
    final, _, metrics = _trajectory(_make_step(gen_every=2, gen_lr=0.05), state, 1500)
    assert int(final.gen_updates) == 750
    chex.assert_tree_all_finite(final)
    assert_within(final.gen.params["b"], M, 0.1, "generator mean")
    assert_within(abs(float(final.gen.params["a"])), S, 0.1, "generator scale")


def test_lockstep_gives_E_p_and_E_q_the_same_number_of_dsm_steps():
    # The DDE code's recipe: each iteration one DSM step of E_p and one of E_q, with the same
    # optimiser (here both Adam states count every step), and G once every gen_every.
    final, states, _ = _trajectory(_make_step(gen_every=5), _init_state(), 40)
    p_count = np.asarray(states.p.opt_state[0].count)
    q_count = np.asarray(states.q.opt_state[0].count)
    np.testing.assert_array_equal(p_count, np.arange(1, 41))
    np.testing.assert_array_equal(q_count, p_count)
    assert int(final.gen_updates) == 40 // 5


def test_E_q_never_sees_real_data():
    # Two runs from the same state and keys that differ only in the real data: E_p differs,
    # E_q (trained on generator samples only) is bit-identical while G has not stepped.
    shifted = lambda key: data_fn(key) + 3.0  # noqa: E731
    _, a, _ = _trajectory(_make_step(gen_every=10**9), _init_state(), 20)
    _, b, _ = _trajectory(_make_step(gen_every=10**9, data_fn=shifted), _init_state(), 20)
    assert not tree_equal(a.p.params, b.p.params)
    assert tree_equal(a.q, b.q)


def test_E_q_may_start_as_a_copy_of_E_p():
    # init_dde_state with the same parameters for both: they start equal and then part ways
    # (E_p on data, E_q on the generator), never aliasing each other's updates.
    energy = {"b": jnp.asarray([0.3, -0.2]), "log_prec": jnp.zeros(2)}
    gen = {"a": jnp.asarray(1.5, jnp.float32), "b": jnp.asarray([-1.0, 1.0], jnp.float32)}
    state = dj.init_dde_state(gen, energy, energy, optax.sgd(0.02), optax.adam(0.05), jax.random.PRNGKey(0))
    assert tree_equal(state.p, state.q)
    final, _, _ = _trajectory(_make_step(gen_every=2), state, 10)
    assert not tree_equal(final.p.params, final.q.params)
    assert tree_equal(state.p.params, energy)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"gen_every": 0}, ValueError, r"`gen_every` must be an int >= 1"),
    ({"gen_every": 2.5}, TypeError, r"`gen_every` must be an int >= 1"),
    ({"train_p": "no"}, TypeError, r"`train_p` must be True or False"),
    ({"energy_fn": None}, TypeError, r"`energy_fn` must be a function \(params, x\)"),
    ({"generator_fn": "G"}, TypeError, r"`generator_fn` must be a function \(gen_params, z\)"),
    ({"latent_fn": jnp.zeros((4, 2))}, TypeError, r"`latent_fn` must be a function \(key\) -> z"),
    ({"gen_optimizer": None}, TypeError, r"`gen_optimizer` must be an optax.GradientTransformation"),
    ({"energy_optimizer": optax.adam}, TypeError, r"`energy_optimizer` must be an optax.GradientTransformation"),
    ({"sigma": 0.0}, ValueError, r"`sigma` must be finite and > 0"),
    ({"sigma": float("nan")}, ValueError, r"`sigma` must be finite and > 0"),
    ({"data_fn": 1}, TypeError, r"`data_fn` must be a function \(key\) -> x or None"),
    ({"mesh": "devices"}, ValueError, r"`mesh` must be 'auto', None or a jax.sharding.Mesh"),
])
def test_make_dde_step_refuses_bad_arguments(kwargs, error, message):
    args = {**dict(energy_fn=diag_quadratic_energy, generator_fn=linear_generator, sigma=SIGMA, latent_fn=latent_fn,
                   gen_optimizer=optax.sgd(0.1), energy_optimizer=optax.adam(0.1)), **kwargs}
    with pytest.raises(error, match=message):
        dj.make_dde_step(**args)


def test_dde_warmups_and_state_refuse_bad_arguments():
    with pytest.raises(TypeError, match=r"`energy_optimizer` must be an optax.GradientTransformation"):
        dj.make_q_warmup_step(diag_quadratic_energy, linear_generator, SIGMA, latent_fn, "adam")
    with pytest.raises(TypeError, match=r"`latent_fn` must be a function"):
        dj.make_q_warmup_step(diag_quadratic_energy, linear_generator, SIGMA, None, optax.sgd(0.1))
    with pytest.raises(TypeError, match=r"`energy_fn` must be a function"):
        dj.make_p_warmup_step(None, SIGMA, optax.sgd(0.1))
    with pytest.raises(TypeError, match=r"`gen_optimizer` must be an optax.GradientTransformation"):
        dj.init_dde_state(jnp.ones(2), jnp.ones(2), jnp.ones(2), None, optax.sgd(0.1), jax.random.PRNGKey(0))
