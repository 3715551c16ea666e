"""Issue 17: per-chain info, thinned trajectories, clamping, MALA step-size adaptation,
ESS/R-hat, and the blackjax log-density adapter (h = η/2).

blackjax is optional (the `samplers` extra): tests that need it skip without it, and one test
checks that `import dsm_jax` works with blackjax blocked and names the extra when it is needed.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dsm_jax as dj
from conftest import assert_within, quadratic_energy
from dsm_jax import toy as toys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P2 = {"A": np.eye(2, dtype=np.float32), "m": np.zeros(2, np.float32)}
D10 = 10
P10 = {"A": np.diag(np.linspace(0.5, 2.0, D10)).astype(np.float32), "m": np.zeros(D10, np.float32)}
COV10 = np.linalg.inv(np.asarray(P10["A"], np.float64))


# ---------------------------------------------------------------------------------------
# per-chain info
# ---------------------------------------------------------------------------------------
def test_per_chain_flags_average_to_the_acceptance_rate_of_the_same_run():
    # η = 1.5 on N(0, I): some proposals rejected, so the flags are a real mix of 0 and 1.
    x0 = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    key = jax.random.PRNGKey(3)
    x, info = jax.jit(dj.mala_with_info(quadratic_energy, 1.5, 20, per_chain=True))(P2, key, x0)
    x_old, old = jax.jit(dj.mala_with_info(quadratic_energy, 1.5, 20))(P2, key, x0)
    np.testing.assert_array_equal(x, x_old)  # per_chain records, never changes the chain
    assert old.is_accepted is None and old.acceptance_prob_per_chain is None  # default O(n_steps)
    chex.assert_shape((info.is_accepted, info.acceptance_prob_per_chain), (20, 64))
    assert info.is_accepted.dtype == jnp.bool_
    flags = np.asarray(info.is_accepted)
    assert 0 < flags.mean() < 1
    np.testing.assert_allclose(flags.mean(axis=1), np.asarray(old.acceptance_rate), rtol=0, atol=1e-7)
    probs = np.asarray(info.acceptance_prob_per_chain)
    assert np.all((probs >= 0) & (probs <= 1))
    np.testing.assert_allclose(probs.mean(axis=1), np.asarray(old.acceptance_prob), rtol=1e-6, atol=1e-7)
    # ULA accepts everything, per chain too
    _, ula = dj.langevin_with_info(quadratic_energy, 0.1, 3, per_chain=True)(P2, key, x0)
    np.testing.assert_array_equal(ula.is_accepted, True)
    np.testing.assert_array_equal(ula.acceptance_prob_per_chain, 1.0)


# ---------------------------------------------------------------------------------------
# trajectories
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,k", [(10, 3), (9, 3), (4, 7)])
def test_thin_keeps_ceil_n_over_k_states_ending_at_the_final_one(n, k):
    x0 = np.random.default_rng(1).normal(size=(3, 2)).astype(np.float32)
    key = jax.random.PRNGKey(0)
    x, info = dj.langevin_with_info(quadratic_energy, 0.1, n, thin=k)(P2, key, x0)
    x_full, full = dj.langevin_with_info(quadratic_energy, 0.1, n, thin=1)(P2, key, x0)
    n_kept = -(-n // k)
    chex.assert_shape(info.trajectory, (3, n_kept, 2))  # chains first
    chex.assert_shape(full.trajectory, (3, n, 2))
    np.testing.assert_array_equal(info.trajectory[:, -1], x)
    np.testing.assert_array_equal(x, x_full)  # recording never changes the chain
    # every k-th state, aligned on the last: steps n, n − k, ... (1-based)
    kept_steps = n - k * np.arange(n_kept)[::-1]
    np.testing.assert_array_equal(info.trajectory, np.asarray(full.trajectory)[:, kept_steps - 1])
    if n == 10:  # and the same chain as the plain sampler
        np.testing.assert_array_equal(x, dj.langevin(quadratic_energy, 0.1, n)(P2, key, x0))


def test_thin_on_mala_and_annealed_and_bad_values():
    x0 = np.ones((4, 2), np.float32)
    key = jax.random.PRNGKey(1)
    x, info = dj.mala_with_info(quadratic_energy, 0.5, 7, thin=2, per_chain=True)(P2, key, x0)
    chex.assert_shape(info.trajectory, (4, 4, 2))
    np.testing.assert_array_equal(info.trajectory[:, -1], x)
    chex.assert_shape(info.is_accepted, (7, 4))
    temps = np.ones(6, np.float32)
    xa, ia = dj.annealed_langevin_with_info(quadratic_energy, 0.1, temperatures=temps, thin=3, denoise=False)(
        P2, key, x0)
    chex.assert_shape(ia.trajectory, (4, 2, 2))
    np.testing.assert_array_equal(ia.trajectory[:, -1], xa)
    for bad, error in ((0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="`thin`"):  # a wrong value: ValueError; not an int: TypeError
            dj.langevin_with_info(quadratic_energy, 0.1, 5, thin=bad)


# ---------------------------------------------------------------------------------------
# clamping to a box
# ---------------------------------------------------------------------------------------
def test_clip_keeps_every_state_in_the_box_and_free_mask_still_freezes():
    # A wide Gaussian centred in [0, 1]: unclamped chains leave the box at once.
    params = {"A": np.eye(3, dtype=np.float32), "m": np.full(3, 0.5, np.float32)}
    x0 = np.full((200, 3), 0.5, np.float32)
    x0[:, 1] = 5.0  # frozen coordinate outside the box: kept bit for bit, never clamped
    mask = np.array([1.0, 0.0, 1.0], np.float32)
    key = jax.random.PRNGKey(0)
    x, info = dj.langevin_with_info(quadratic_energy, 0.5, 12, clip=(0.0, 1.0), thin=1)(params, key, x0, mask)
    free = np.asarray(info.trajectory)[..., [0, 2]]
    assert free.min() >= 0.0 and free.max() <= 1.0
    assert (free == 0.0).any() and (free == 1.0).any()  # the clamp was active
    np.testing.assert_array_equal(np.asarray(x)[:, 1], 5.0)
    # annealed: the final denoise is clamped too; an open side (inf) and per-coordinate bounds work
    temps = np.ones(5, np.float32)
    xa = dj.annealed_langevin(quadratic_energy, 0.5, temperatures=temps, sigma0=2.0, clip=(0.0, 1.0))(
        params, key, np.full((50, 3), 0.5, np.float32))
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    xo = dj.langevin(quadratic_energy, 0.5, 12, clip=(np.array([0.0, -np.inf, 0.2]), np.inf))(params, key, x0)
    assert float(xo[:, 0].min()) >= 0.0 and float(xo[:, 2].min()) >= 0.2


def test_clip_refused_for_mala_and_bad_boxes_name_clip():
    for factory in (dj.mala, dj.mala_with_info):
        with pytest.raises(ValueError, match="`clip` is refused for MALA.*detailed|Metropolis"):
            factory(quadratic_energy, 0.1, 5, clip=(0.0, 1.0))
    for bad in ((1.0, 0.0), (0.0,), "01", (0.0, None), (np.nan, 1.0), ([0.0, 0.0], [1.0, 1.0, 1.0])):
        with pytest.raises(ValueError, match="`clip`"):
            dj.langevin(quadratic_energy, 0.1, 5, clip=bad)
    fn = dj.langevin(quadratic_energy, 0.1, 5, clip=(np.zeros(3), np.ones(3)))  # event is (2,)
    with pytest.raises(ValueError, match="`clip`'s lo has shape \\(3,\\).*event shape \\(2,\\)"):
        fn(P2, jax.random.PRNGKey(0), np.zeros((4, 2), np.float32))


# ---------------------------------------------------------------------------------------
# step-size adaptation (blackjax's dual averaging)
# ---------------------------------------------------------------------------------------
def _adapt_then_run(energy_fn, params, x0, target, n_warmup=200, n_run=150):
    warmup = jax.jit(dj.mala_step_size_adaptation(energy_fn, n_warmup, initial_step_size=0.1, target_accept=target))
    x, eta, info = warmup(params, jax.random.PRNGKey(0), x0)
    chex.assert_shape((info.step_size, info.acceptance_prob, info.acceptance_rate), (n_warmup,))
    chex.assert_shape(eta, ())
    assert float(info.step_size[0]) == pytest.approx(0.1)
    assert np.ptp(np.asarray(info.step_size)) > 0.1  # it did adapt during warm-up
    # the production chain is plain MALA at the fixed adapted η
    _, run = jax.jit(dj.mala_with_info(energy_fn, eta, n_run))(params, jax.random.PRNGKey(1), x)
    return float(eta), np.asarray(run.acceptance_rate)


@pytest.mark.parametrize("target", [0.574])
def test_adaptation_reaches_target_on_a_10d_gaussian(target):
    pytest.importorskip("blackjax")
    x0 = np.zeros((256, D10), np.float32)
    eta, acc = _adapt_then_run(quadratic_energy, P10, x0, target)
    assert abs(acc.mean() - target) < 0.05, (eta, acc.mean())
    assert abs(acc[: len(acc) // 2].mean() - acc[len(acc) // 2:].mean()) < 0.03  # fixed η: stationary


def test_adaptation_follows_its_target_on_a_toy_energy():
    pytest.importorskip("blackjax")
    toy = toys.get_toy("eight_gaussians")
    energy_fn = lambda params, x: -toy.log_density(x, 0.2)  # noqa: E731  exact −log p̂, 2-D, 8 modes
    x0 = toys.sample_smoothed(toy, jax.random.PRNGKey(2), 256, 0.2)
    eta, acc = _adapt_then_run(energy_fn, None, x0, 0.7)
    assert abs(acc.mean() - 0.7) < 0.05, (eta, acc.mean())


def test_adaptation_refuses_bad_arguments():
    for kwargs, name in (({"target_accept": 1.0}, "target_accept"), ({"initial_step_size": 0.0}, "initial_step_size"),
                         ({"temperature": -1.0}, "temperature")):
        with pytest.raises(ValueError, match=f"`{name}`"):
            dj.mala_step_size_adaptation(quadratic_energy, 10, **kwargs)
    with pytest.raises(ValueError, match="`n_steps`"):
        dj.mala_step_size_adaptation(quadratic_energy, 0)


# ---------------------------------------------------------------------------------------
# ESS and R-hat
# ---------------------------------------------------------------------------------------
def test_ess_and_rhat_equal_blackjax_on_the_same_draws():
    blackjax = pytest.importorskip("blackjax")
    x0 = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32) * 3
    _, info = jax.jit(dj.mala_with_info(quadratic_energy, 0.5, 200, thin=2))(P2, jax.random.PRNGKey(0), x0)
    draws = info.trajectory  # (chains, draws, 2): 8 × 100, so swapped axes would not pass
    # ours is blackjax's estimator compiled as one computation: equal to blackjax's jitted call,
    # and to its eager (op-by-op) call to float32 rounding
    theirs = jax.jit(blackjax.diagnostics.effective_sample_size, static_argnames=("chain_axis", "sample_axis"))
    np.testing.assert_array_equal(dj.effective_sample_size(draws), theirs(draws, chain_axis=0, sample_axis=1))
    np.testing.assert_allclose(dj.potential_scale_reduction(draws),
                               blackjax.diagnostics.potential_scale_reduction(draws, chain_axis=0, sample_axis=1),
                               rtol=1e-5)
    assert not np.allclose(dj.effective_sample_size(draws),
                           theirs(jnp.swapaxes(draws, 0, 1), chain_axis=0, sample_axis=1), rtol=1e-2)
    chex.assert_shape(dj.effective_sample_size(draws), (2,))
    # independent N(0, 1) draws: ESS ≈ chains × draws, R-hat ≈ 1
    iid = np.random.default_rng(1).normal(size=(4, 500, 3)).astype(np.float32)
    ess = np.asarray(dj.effective_sample_size(iid))
    assert np.all((ess > 1500) & (ess < 2600)), ess
    assert_within(dj.potential_scale_reduction(iid), 1.0, 0.01, "R-hat of iid draws")
    shifted = iid + np.arange(4, dtype=np.float32)[:, None, None]  # chains that disagree
    assert np.all(np.asarray(dj.potential_scale_reduction(shifted)) > 1.5)


def test_ess_and_rhat_check_their_draws():
    good = np.zeros((2, 8, 3), np.float32)
    for fn in (dj.effective_sample_size, dj.potential_scale_reduction):
        with pytest.raises(ValueError, match="`draws` must have shape \\(chains, draws, \\*event\\)"):
            fn(np.zeros(8, np.float32))
        with pytest.raises(ValueError, match="`draws` has 2 chain\\(s\\) × 3 draw"):
            fn(good[:, :3])
        with pytest.raises(TypeError, match="`draws` must be a floating-point"):
            fn(good.astype(np.int32))
        bad = good.copy()
        bad[0, 1, 2] = np.nan
        with pytest.raises(ValueError, match=r"`draws` has 1 non-finite value\(s\) \(NaN/inf\), in rows \[0\]"):
            fn(bad)  # check_all_finite's message: the rows are the chains
    with pytest.raises(ValueError, match="at least 2 chains"):
        dj.potential_scale_reduction(good[:1])


def test_ess_compiles_once_for_repeated_calls():
    # one module-level jit wrapper per estimator: a second call of the same shape is a cache hit
    import blackjax
    from dsm_jax import diagnostics
    jitted = diagnostics._jitted(blackjax.diagnostics.effective_sample_size)
    assert jitted is diagnostics._jitted(blackjax.diagnostics.effective_sample_size)
    before = jitted._cache_size()  # other tests may have compiled other shapes already
    draws = np.random.default_rng(0).normal(size=(2, 9, 5)).astype(np.float32)  # a shape no other test uses
    dj.effective_sample_size(draws)
    dj.effective_sample_size(draws + 1)
    assert jitted._cache_size() == before + 1


def test_import_works_without_blackjax_and_names_the_extra_when_needed():
    code = textwrap.dedent("""
        import sys
        sys.modules["blackjax"] = None  # blocked: `import blackjax` raises ImportError
        import numpy as np, jax
        import dsm_jax as dj
        E = lambda p, x: 0.5 * (x ** 2).sum(axis=-1)
        assert float(dj.to_logdensity(E, None)(np.ones(2, np.float32))) == -1.0
        dj.mala(E, 0.1, 3)(None, jax.random.PRNGKey(0), np.zeros((2, 2), np.float32))
        for call in (lambda: dj.effective_sample_size(np.zeros((2, 8), np.float32)),
                     lambda: dj.potential_scale_reduction(np.zeros((2, 8), np.float32)),
                     lambda: dj.mala_step_size_adaptation(E, 10)):
            try:
                call()
            except ImportError as err:
                assert "dsm-jax[samplers]" in str(err), err
            else:
                raise AssertionError("no ImportError")
        print("ok")
    """)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# ---------------------------------------------------------------------------------------
# interop: blackjax's MALA with h = η/2
# ---------------------------------------------------------------------------------------
def test_to_logdensity_is_minus_energy_over_temperature_of_one_position():
    x = np.random.default_rng(0).normal(size=(5, D10)).astype(np.float32)
    logd = dj.to_logdensity(quadratic_energy, P10, temperature=2.0)
    np.testing.assert_allclose(jax.vmap(logd)(x), -quadratic_energy(P10, x) / 2.0, rtol=1e-6)
    with pytest.raises(TypeError, match="`energy_fn`"):
        dj.to_logdensity(None, P10)


def test_one_mala_step_equals_blackjax_with_h_half_eta():
    # Same key: both split it into (noise, accept) keys the same way, so the steps agree exactly.
    blackjax = pytest.importorskip("blackjax")
    eta = 1.5
    kernel = dj.mala_kernel(quadratic_energy)
    bj = blackjax.mala(dj.to_logdensity(quadratic_energy, P10), eta / 2)
    x0 = jax.random.normal(jax.random.PRNGKey(5), (D10,))
    flags = []
    for i in range(8):
        key = jax.random.PRNGKey(i)
        theirs, their_info = bj.step(key, bj.init(x0))
        ours, our_info = kernel(P10, key, dj.init_chain(quadratic_energy, P10, x0[None]), eta, 1.0)
        assert bool(their_info.is_accepted) == bool(our_info.is_accepted[0])
        np.testing.assert_allclose(our_info.acceptance_prob_per_chain[0], their_info.acceptance_rate, rtol=1e-5)
        np.testing.assert_allclose(ours.x[0], theirs.position, rtol=1e-6, atol=1e-6)
        flags.append(bool(their_info.is_accepted))
    assert any(flags) and not all(flags)  # both branches compared


def test_mala_and_blackjax_mala_agree_on_stationary_moments_of_a_10d_gaussian():
    blackjax = pytest.importorskip("blackjax")
    n_chains, n_steps, eta = 2000, 150, 0.8
    x0 = np.zeros((n_chains, D10), np.float32)
    ours, info = jax.jit(dj.mala_with_info(quadratic_energy, eta, n_steps))(P10, jax.random.PRNGKey(0), x0)
    bj = blackjax.mala(dj.to_logdensity(quadratic_energy, P10), eta / 2)

    @jax.jit
    def run(key):
        def body(states, k):
            states, step_info = jax.vmap(bj.step)(jax.random.split(k, n_chains), states)
            return states, jnp.mean(step_info.is_accepted)
        return jax.lax.scan(body, jax.vmap(bj.init)(x0), jax.random.split(key, n_steps))

    theirs, their_acc = run(jax.random.PRNGKey(1))
    se_var = np.sqrt(2.0 / n_chains) * np.diag(COV10)
    for name, x in (("dsm_jax", np.asarray(ours)), ("blackjax", np.asarray(theirs.position))):
        assert_within(x.mean(axis=0), 0.0, 5 * np.sqrt(np.diag(COV10) / n_chains), f"{name} mean")
        assert_within(x.var(axis=0), np.diag(COV10), 5 * se_var, f"{name} variance")
    assert abs(float(jnp.mean(info.acceptance_rate[50:])) - float(jnp.mean(their_acc[50:]))) < 0.01
