"""Scores, the Tweedie denoiser and the three training objectives against closed forms."""
from __future__ import annotations


import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import dsm_jax as dj
from conftest import (
    assert_within,
    diag_quadratic_energy,
    flat,
    gaussian_energy,
    gmm_energy,
    gmm_posterior_mean,
    gmm_score,
    gmm_smoothed,
    kl_isotropic,
    linear_generator,
    make_gmm,
    quadratic_energy,
    quadratic_score,
    random_spd,
    zero_energy,
)

EVENT_SHAPES = (("event_2", (2,)), ("event_3x4", (3, 4)), ("event_1x5x5", (1, 5, 5)))

# Data law N(m, diag(s²)) and noise level of the DSM/MDSM minimiser tests.
DATA_MEAN = np.array([1.0, -2.0], np.float32)
DATA_STD = np.array([0.5, 1.0], np.float32)
SIGMA = 0.5


def _draw_data(key, n):
    return DATA_MEAN + DATA_STD * jax.random.normal(key, (n, 2))


def _np_data(seed, n):
    return (DATA_MEAN + DATA_STD * np.random.default_rng(seed).normal(size=(n, 2))).astype(np.float32)


def _minimise(loss_fn, params, x, key, *, steps=400, lr=0.05):
    """Adam on ``loss_fn(params, key, x)`` with a fixed key and batch (a deterministic
    sample objective), all steps inside one jitted ``lax.scan``."""
    opt = optax.adam(lr)

    @jax.jit
    def run(params):
        def body(carry, _):
            p, o = carry
            loss, g = jax.value_and_grad(loss_fn)(p, key, x)
            u, o = opt.update(g, o, p)
            return (optax.apply_updates(p, u), o), loss

        (p, _), losses = jax.lax.scan(body, (params, opt.init(params)), None, length=steps)
        return p, losses

    return run(params)


N_REP = 32  # independent replicates behind every Monte-Carlo mean and its standard error


def _mean_se(vals):
    vals = np.asarray(vals, np.float64)
    return vals.mean(axis=0), vals.std(axis=0, ddof=1) / np.sqrt(vals.shape[0])


def _replicates(one):
    """``fn(key, *args)`` → the N_REP values of ``one(key_i, *args)`` for independent keys.
    ``one`` is jitted once (module level; what varies between tests is passed as arguments)
    and called in a loop: cheaper to compile than a vmap over keys."""
    jitted = jax.jit(one)

    def fn(key, *args):
        keys = np.asarray(jax.random.split(key, N_REP))
        return np.stack([np.asarray(jitted(k, *args)) for k in keys])

    return fn


DSM_LOSS = dj.dsm_loss(diag_quadratic_energy, SIGMA)


@_replicates
def _dsm_loss_replicates(key, params):
    kx, kn = jax.random.split(key)
    return DSM_LOSS(params, kn, _draw_data(kx, 4096))


# ---------------------------------------------------------------------------------------
# score
# ---------------------------------------------------------------------------------------
class ScoreTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*EVENT_SHAPES)
    def test_quadratic_score_is_minus_A_x_minus_m(self, event_shape):
        d = int(np.prod(event_shape))
        rng = np.random.default_rng(1)
        params = {"A": random_spd(rng, d), "m": rng.normal(size=d).astype(np.float32)}
        x = rng.normal(size=(7, *event_shape)).astype(np.float32)
        out = self.variant(dj.score(quadratic_energy))(params, x)
        chex.assert_shape(out, x.shape)
        chex.assert_tree_all_finite(out)
        chex.assert_trees_all_close(out, quadratic_score(params, x), rtol=1e-5, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*EVENT_SHAPES)
    def test_gaussian_mixture_score_is_analytic(self, event_shape):
        d = int(np.prod(event_shape))
        rng = np.random.default_rng(2)
        params = make_gmm(rng, 4, d)
        # Points between and around the components so several responsibilities matter.
        x = (0.5 * params["means"][np.arange(16) % 4] + 0.8 * rng.normal(size=(16, d)))
        x = x.reshape(16, *event_shape).astype(np.float32)
        out = self.variant(dj.score(gmm_energy))(params, x)
        chex.assert_shape(out, x.shape)
        chex.assert_tree_all_finite(out)
        chex.assert_trees_all_close(out, gmm_score(params, x), rtol=1e-4, atol=1e-4)

    def test_score_is_minus_energy_gradient_not_plus(self):
        # Sign convention: p ∝ exp(−E), so the score points downhill in E (towards m).
        params = {"A": jnp.eye(2), "m": jnp.zeros(2)}
        x = jnp.array([[3.0, 0.0]])
        out = dj.score(quadratic_energy)(params, x)
        np.testing.assert_allclose(out, [[-3.0, 0.0]])

    def test_energy_and_grad(self):
        params = {"A": jnp.diag(jnp.array([1.0, 2.0])), "m": jnp.array([1.0, 0.0])}
        x = jnp.array([[1.0, 1.0], [3.0, 0.0]])
        e, g = dj.energy_and_grad(quadratic_energy, params, x)
        chex.assert_shape(e, (2,))
        chex.assert_trees_all_close(e, jnp.array([1.0, 2.0]))
        chex.assert_trees_all_close(g, jnp.array([[0.0, 2.0], [2.0, 0.0]]))


# ---------------------------------------------------------------------------------------
# denoiser
# ---------------------------------------------------------------------------------------
class DenoiserTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*EVENT_SHAPES)
    def test_gaussian_data_posterior_mean(self, event_shape):
        # x ~ N(m, s²I), y = x + σε: −log p̂(y) = ½‖y − m‖²/(s² + σ²) + c and
        # E[x | y] = m + s²/(s² + σ²)(y − m).
        d, s, sigma = int(np.prod(event_shape)), 0.8, 0.6
        rng = np.random.default_rng(3)
        m = rng.normal(size=d).astype(np.float32)
        params = {"A": np.eye(d, dtype=np.float32) / (s**2 + sigma**2), "m": m}
        y = (2.0 * rng.normal(size=(9, *event_shape))).astype(np.float32)
        out = self.variant(dj.denoiser(quadratic_energy, sigma))(params, y)
        chex.assert_shape(out, y.shape)
        chex.assert_tree_all_finite(out)
        expected = m + s**2 / (s**2 + sigma**2) * (flat(y) - m)
        chex.assert_trees_all_close(out, expected.reshape(y.shape), rtol=1e-5, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("event_2", (2,)), ("event_3x4", (3, 4)))
    def test_gaussian_mixture_data_posterior_mean(self, event_shape):
        # x ~ Σ w_k N(μ_k, s_k²I): E[x | y] = Σ r_k(y) (μ_k + s_k²/(s_k² + σ²)(y − μ_k)),
        # r_k the responsibilities under p̂ = Σ w_k N(μ_k, (s_k² + σ²)I).
        d, sigma = int(np.prod(event_shape)), 0.7
        rng = np.random.default_rng(4)
        data = make_gmm(rng, 3, d)
        y = (data["means"][np.arange(12) % 3] * 0.5 + rng.normal(size=(12, d)))
        y = y.reshape(12, *event_shape).astype(np.float32)
        smoothed = gmm_smoothed(data, sigma)
        out = self.variant(dj.denoiser(gmm_energy, sigma))(smoothed, y)
        chex.assert_shape(out, y.shape)
        chex.assert_tree_all_finite(out)
        chex.assert_trees_all_close(out, gmm_posterior_mean(data, sigma, y), rtol=1e-4, atol=1e-4)

    def test_gaussian_mixture_posterior_mean_reference_by_monte_carlo(self):
        # Guards the reference formula itself: E[x | y] by importance weighting of prior
        # draws x_i with weights N(y; x_i, σ²I).
        sigma = 0.7
        rng = np.random.default_rng(5)
        data = make_gmm(rng, 3, 2)
        y = np.array([[0.3, -0.2]])
        n = 400_000
        comp = rng.choice(3, size=n, p=data["weights"] / data["weights"].sum())
        x = data["means"][comp] + data["std"][comp, None] * rng.normal(size=(n, 2))
        logw = -0.5 * np.sum((x - y) ** 2, axis=1) / sigma**2
        w = np.exp(logw - logw.max())
        w /= w.sum()
        mc = np.sum(w[:, None] * x, axis=0)
        ess = 1.0 / np.sum(w**2)
        tol = 5.0 * 2.0 / np.sqrt(ess)  # posterior std < 2 in every direction here
        ref = gmm_posterior_mean(data, sigma, y)[0]
        np.testing.assert_allclose(mc, ref, atol=tol)
        # Not the trivial answers y or the prior mean: the check has power.
        assert np.max(np.abs(ref - y[0])) > 3 * tol
        prior_mean = data["weights"] @ data["means"]
        assert np.max(np.abs(ref - prior_mean)) > 3 * tol


# ---------------------------------------------------------------------------------------
# dsm_loss
# ---------------------------------------------------------------------------------------
def _dsm_expected_loss(b, v, sigma):
    """E‖x̃ − σ²∇E(x̃) − x‖² for E = ½Σ(x − b)²/v and x ~ N(DATA_MEAN, diag(DATA_STD²)):
    the residual is −(σ²/v)(x − b) + (1 − σ²/v)σε per coordinate."""
    r = sigma**2 / v
    return float(jnp.sum(r**2 * ((DATA_MEAN - b) ** 2 + DATA_STD**2) + (1 - r) ** 2 * sigma**2))


class DSMLossTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("optimum", 0.0, 1.0), ("shifted", 0.4, 1.0), ("too_wide", 0.0, 2.0), ("too_narrow", -0.3, 0.5)
    )
    def test_expected_value_matches_closed_form(self, shift, v_scale):
        b = DATA_MEAN + shift
        v = v_scale * (DATA_STD**2 + SIGMA**2)
        params = {"b": b, "log_prec": -np.log(v)}
        out = self.variant(DSM_LOSS)(params, jax.random.PRNGKey(0), _np_data(1, 8))
        chex.assert_shape(out, ())
        chex.assert_tree_all_finite(out)
        mean, se = _mean_se(_dsm_loss_replicates(jax.random.PRNGKey(7), params))
        expected = _dsm_expected_loss(b, v, SIGMA)
        assert abs(mean - expected) < 5 * se, (mean, se, expected)
        assert se < 0.01 * expected

    def test_zero_energy_gives_noise_power(self):
        # E ≡ 0: the "denoised" point is x̃ itself, so the loss is E‖σε‖² = dσ².
        x = np.zeros((50_000, 3), np.float32)
        out = jax.jit(dj.dsm_loss(zero_energy, 0.3))(None, jax.random.PRNGKey(0), x)
        se = 0.3**2 * np.sqrt(2 * 3 / 50_000)
        assert abs(float(out) - 3 * 0.3**2) < 5 * se

    def test_minimiser_recovers_smoothed_gaussian(self):
        # Minimiser of DSM over E_θ = ½(x − b)ᵀdiag(1/v)(x − b): b = m, v = s² + σ².
        x = _np_data(11, 20_000)
        init = {"b": np.zeros(2, np.float32), "log_prec": np.zeros(2, np.float32)}
        params, losses = _minimise(DSM_LOSS, init, x, jax.random.PRNGKey(11))
        chex.assert_tree_all_finite(params)
        v = jnp.exp(-params["log_prec"])
        # Tolerances: 5× the seed-to-seed standard deviation of this 20k-sample estimator
        # (measured over 20 seeds: b ±(0.005, 0.019), v ±(0.0023, 0.024)).
        assert_within(params["b"], DATA_MEAN, np.array([0.03, 0.1]), "b")
        assert_within(v, DATA_STD**2 + SIGMA**2, np.array([0.012, 0.12]), "v")
        # Converged (the last steps do not change the loss any more).
        assert abs(float(losses[-1] - losses[-20])) < 1e-4
        # Unsmoothed variance s² is excluded (σ² is 0.25, far beyond the tolerance).
        assert np.all(np.abs(v - DATA_STD**2) > 0.15)

    def test_loss_is_lowest_at_the_exact_optimum(self):
        # Common random numbers: one fixed key and batch for every evaluation.
        x, key = _np_data(12, 100_000), jax.random.PRNGKey(12)
        loss_fn = jax.jit(DSM_LOSS)
        v_opt = DATA_STD**2 + SIGMA**2
        opt = {"b": DATA_MEAN, "log_prec": -np.log(v_opt)}
        best = float(loss_fn(opt, key, x))
        # The optimum value itself: Σ σ²s²/(s² + σ²) (per-example sd ≈ 0.5 → SE ≈ 0.0016).
        expected = float(np.sum(SIGMA**2 * DATA_STD**2 / v_opt))
        assert abs(best - expected) < 0.01, (best, expected)
        for db, fv in [((0.15, 0.0), 1.0), ((0.0, -0.15), 1.0), ((0.0, 0.0), 1.3),
                       ((0.0, 0.0), 0.75), ((0.1, 0.1), 1.15)]:
            other = {"b": DATA_MEAN + np.array(db, np.float32), "log_prec": -np.log(fv * v_opt)}
            assert float(loss_fn(other, key, x)) > best, (db, fv)


# ---------------------------------------------------------------------------------------
# sample_sigmas / mdsm_loss
# ---------------------------------------------------------------------------------------
class SampleSigmasTest(parameterized.TestCase):

    @parameterized.named_parameters(("geometric", "geometric"), ("linear", "linear"))
    def test_range_and_distribution(self, spacing):
        a, b, n = 0.1, 3.0, 200_000
        s = np.asarray(dj.sample_sigmas(jax.random.PRNGKey(0), n, a, b, spacing))
        assert s.shape == (n,)
        assert s.min() >= a * (1 - 1e-6) and s.max() <= b * (1 + 1e-6)
        if spacing == "linear":  # σ ~ U(a, b)
            mean, sd = (a + b) / 2, (b - a) / np.sqrt(12)
            log_mean = (b * np.log(b) - a * np.log(a)) / (b - a) - 1
        else:  # log σ ~ U(log a, log b)
            mean = (b - a) / np.log(b / a)
            sd = np.sqrt((b**2 - a**2) / (2 * np.log(b / a)) - mean**2)
            log_mean = (np.log(a) + np.log(b)) / 2
        assert abs(s.mean() - mean) < 5 * sd / np.sqrt(n)
        assert abs(np.log(s).mean() - log_mean) < 5 * np.log(b / a) / np.sqrt(n)
        # The two spacings are far apart here (means 1.55 vs 0.86): the check can fail.
        other = 0.86 if spacing == "linear" else 1.55
        assert abs(s.mean() - other) > 0.5

    def test_degenerate_range(self):
        for spacing in ("geometric", "linear"):
            s = dj.sample_sigmas(jax.random.PRNGKey(0), 100, 0.5, 0.5, spacing)
            np.testing.assert_allclose(s, 0.5, rtol=1e-6)

    def test_unknown_spacing(self):
        with pytest.raises(ValueError, match="spacing"):
            dj.sample_sigmas(jax.random.PRNGKey(0), 4, 0.1, 1.0, "cosine")
        with pytest.raises(ValueError, match="spacing"):
            dj.mdsm_loss(zero_energy, 0.1, 1.0, spacing="cosine")


MDSM_A, MDSM_B, MDSM_SIGMA0, MDSM_C = 0.5, 2.0, 0.1, 50.0
MDSM_M = np.array([2.0, 0.0, 0.0], np.float32)
MDSM_X = np.broadcast_to(MDSM_M, (4096, 3))
MDSM_PARAMS = {"b": np.zeros(3, np.float32), "log_prec": np.full(3, np.log(MDSM_C), np.float32)}
MDSM_LOSSES = {
    spacing: dj.mdsm_loss(diag_quadratic_energy, MDSM_A, MDSM_B, sigma0=MDSM_SIGMA0, spacing=spacing)
    for spacing in ("geometric", "linear")
}
_MDSM_REPLICATES = {
    spacing: _replicates(lambda k, params, x, fn=fn: fn(params, k, x))
    for spacing, fn in MDSM_LOSSES.items()
}


class MDSMLossTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("geometric", "geometric"), ("linear", "linear"))
    def test_expected_value_matches_closed_form(self, spacing):
        # Data ≡ m, E = ½c‖x‖²: the residual over σ_i is (σ₀²c − 1)ε + σ₀²c·m/σ_i, so
        # E[loss] = d(σ₀²c − 1)² + (σ₀²c)²‖m‖² E[1/σ²]; E[1/σ²] = 1/(ab) for linear
        # spacing and (a⁻² − b⁻²)/(2 log(b/a)) for geometric spacing.
        a, b, sigma0, c, m = MDSM_A, MDSM_B, MDSM_SIGMA0, MDSM_C, MDSM_M
        out = self.variant(MDSM_LOSSES[spacing])(MDSM_PARAMS, jax.random.PRNGKey(0), MDSM_X[:64])
        chex.assert_shape(out, ())
        chex.assert_tree_all_finite(out)

        mean, se = _mean_se(_MDSM_REPLICATES[spacing](jax.random.PRNGKey(1), MDSM_PARAMS, MDSM_X))
        inv_sq = 1 / (a * b) if spacing == "linear" else (a**-2 - b**-2) / (2 * np.log(b / a))
        g = sigma0**2 * c
        expected = 3 * (g - 1) ** 2 + g**2 * float(m @ m) * inv_sq
        assert abs(mean - expected) < 5 * se, (mean, se, expected)
        assert se < 0.01 * expected

    def test_zero_energy_loss_is_scale_free(self):
        # E ≡ 0: residual = −σ_i ε, weighted by 1/σ_i²: loss = E‖ε‖² = d for any σ range.
        loss_fn = dj.mdsm_loss(zero_energy, 0.05, 5.0, spacing="geometric")
        out = float(jax.jit(loss_fn)(None, jax.random.PRNGKey(0), np.zeros((50_000, 4), np.float32)))
        assert abs(out - 4.0) < 5 * np.sqrt(2 * 4 / 50_000)

    def test_minimiser_single_sigma(self):
        # σ_min = σ_max = σ: σ₀²∇E = −σ²∇log p̂, so σ₀²/v = σ²/(s² + σ²) and b = m.
        sigma0 = 0.1
        x = _np_data(13, 20_000)
        loss_fn = dj.mdsm_loss(diag_quadratic_energy, SIGMA, SIGMA, sigma0=sigma0)
        init = {"b": np.zeros(2, np.float32), "log_prec": np.zeros(2, np.float32)}
        params, _ = _minimise(loss_fn, init, x, jax.random.PRNGKey(13))
        chex.assert_tree_all_finite(params)
        ratio = sigma0**2 * jnp.exp(params["log_prec"])
        # 5× the seed-to-seed standard deviation of the estimator (b ±(0.004, 0.010),
        # ratio ±(0.0026, 0.0024)).
        assert_within(params["b"], DATA_MEAN, np.array([0.02, 0.05]), "b")
        assert_within(ratio, SIGMA**2 / (DATA_STD**2 + SIGMA**2), 0.013, "σ₀²/v")


# ---------------------------------------------------------------------------------------
# kl_generator_loss
# ---------------------------------------------------------------------------------------
KL_SIGMA = 0.5
KL_M = np.array([1.0, 0.0, -1.0], np.float32)
KL_S = 1.2


KL_LOSS = dj.kl_generator_loss(linear_generator, gaussian_energy, KL_SIGMA)


def _kl_setup(a=0.7, b=(0.3, -0.5, 1.0)):
    """Generator (a, b); exact energies E_p = −log N(m, (s² + σ²)I) and, at the current
    generator, E_q = −log N(b, (a² + σ²)I)."""
    gen = {"a": np.float32(a), "b": np.asarray(b, np.float32)}
    d = len(b)
    p = {"mean": KL_M[:d], "var": np.float32(KL_S**2 + KL_SIGMA**2)}
    q = {"mean": gen["b"], "var": np.float32(a**2 + KL_SIGMA**2)}
    return gen, p, q


def _exact_kl(gen):
    """KL(q̂‖p̂) = KL(N(b, (a² + σ²)I) ‖ N(m, (s² + σ²)I)), differentiable in (a, b)."""
    d = gen["b"].shape[0]
    return kl_isotropic(gen["b"], gen["a"] ** 2 + KL_SIGMA**2, KL_M[:d], KL_S**2 + KL_SIGMA**2)


@_replicates
def _kl_loss_replicates(key, gen, p, q):
    kz, kn = jax.random.split(key)
    return KL_LOSS(gen, p, q, kn, jax.random.normal(kz, (8192, gen["b"].shape[0])))


@_replicates
def _kl_grad_replicates(key, gen, p, q):
    kz, kn = jax.random.split(key)
    g = jax.grad(KL_LOSS)(gen, p, q, kn, jax.random.normal(kz, (8192, gen["b"].shape[0])))
    return jnp.concatenate([g["a"][None], g["b"]])


class KLGeneratorLossTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_value_is_kl_up_to_normalisers(self):
        # With normalised Gaussian energies, E[E_p − E_q] over q̂ is exactly KL(q̂‖p̂).
        gen, p, q = _kl_setup()
        out = self.variant(KL_LOSS)(gen, p, q, jax.random.PRNGKey(0), np.zeros((8, 3), np.float32))
        chex.assert_shape(out, ())
        chex.assert_tree_all_finite(out)
        mean, se = _mean_se(_kl_loss_replicates(jax.random.PRNGKey(1), gen, p, q))
        exact = float(_exact_kl(gen))
        assert abs(mean - exact) < 5 * se, (mean, se, exact)
        assert se < 0.05 * exact

    @parameterized.named_parameters(("d3", 0.7, (0.3, -0.5, 1.0)), ("d2", 1.6, (-1.0, 2.0)))
    def test_gradient_equals_closed_form_kl_gradient(self, a, b):
        gen, p, q = _kl_setup(a, b)
        mean, se = _mean_se(_kl_grad_replicates(jax.random.PRNGKey(2), gen, p, q))
        eg = jax.jit(jax.grad(_exact_kl))(gen)
        exact = np.concatenate([np.asarray(eg["a"])[None], np.asarray(eg["b"])])
        assert np.all(np.abs(mean - exact) < 5 * se + 1e-6), (mean, se, exact)
        # The MC error is small next to the gradient: a wrong sign or scale would fail.
        assert np.max(se) < 0.03 * np.max(np.abs(exact))

    def test_no_gradient_into_energies(self):
        gen, p, q = _kl_setup()
        z = np.random.default_rng(0).normal(size=(256, 3)).astype(np.float32)
        grads = jax.jit(jax.grad(KL_LOSS, argnums=(0, 1, 2)))(gen, p, q, jax.random.PRNGKey(1), z)
        gg, gp, gq = grads
        for leaf in jax.tree.leaves((gp, gq)):
            np.testing.assert_array_equal(leaf, np.zeros_like(leaf))
        # ...while the generator does get a gradient.
        assert np.all(np.abs(np.asarray(gg["b"])) > 0)

    def test_separate_q_energy_fn(self):
        # E_p ≡ 0 and E_q = ½‖x‖², G(z) = z: loss = −½E‖z + ε‖² = −½ d (1 + σ²).
        gen = {"a": np.float32(1.0), "b": np.zeros(2, np.float32)}
        q_energy = lambda _, x: 0.5 * jnp.sum(x**2, axis=1)  # noqa: E731
        loss_fn = dj.kl_generator_loss(linear_generator, zero_energy, 0.5, q_energy_fn=q_energy)
        z = np.random.default_rng(0).normal(size=(100_000, 2)).astype(np.float32)
        out = float(jax.jit(loss_fn)(gen, None, None, jax.random.PRNGKey(1), z))
        expected = -0.5 * 2 * (1.0 + 0.25)
        assert abs(out - expected) < 5 * 0.5 * np.sqrt(2 * 2) * 1.25 / np.sqrt(100_000)


# ---------------------------------------------------------------------------------------
# Per-example forms: jax.vmap over single examples equals the batched function
# ---------------------------------------------------------------------------------------
def _quadratic_params(d, seed=21):
    rng = np.random.default_rng(seed)
    return {"A": random_spd(rng, d), "m": rng.normal(size=d).astype(np.float32)}


class PerExampleTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*EVENT_SHAPES)
    def test_vmapped_per_example_score_and_denoiser_equal_the_batched_ones(self, event_shape):
        # vmap over x (batch, *event) hands each call one example of shape event; the
        # per-example form runs it as a batch of one, so the result is −A(x − m) row by row.
        params = _quadratic_params(int(np.prod(event_shape)))
        x = np.random.default_rng(22).normal(size=(6, *event_shape)).astype(np.float32)
        for batched, single in (
            (dj.score(quadratic_energy), dj.score(quadratic_energy, per_example=True)),
            (dj.denoiser(quadratic_energy, 0.4), dj.denoiser(quadratic_energy, 0.4, per_example=True)),
        ):
            out = self.variant(jax.vmap(single, in_axes=(None, 0)))(params, x)
            chex.assert_shape(out, x.shape)
            chex.assert_trees_all_close(out, batched(params, x), rtol=1e-6, atol=1e-6)
        chex.assert_trees_all_close(self.variant(jax.vmap(dj.score(quadratic_energy, per_example=True),
                                                          in_axes=(None, 0)))(params, x),
                                    quadratic_score(params, x), rtol=1e-5, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_vmapped_per_example_energy_and_grad(self):
        params = _quadratic_params(3)
        x = np.random.default_rng(23).normal(size=(5, 3)).astype(np.float32)
        e, g = self.variant(jax.vmap(lambda p, xi: dj.energy_and_grad(quadratic_energy, p, xi, per_example=True),
                                     in_axes=(None, 0)))(params, x)
        chex.assert_shape((e, g), ((5,), (5, 3)))
        e_ref, g_ref = dj.energy_and_grad(quadratic_energy, params, x)
        chex.assert_trees_all_close((e, g), (e_ref, g_ref), rtol=1e-6, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_vmapped_per_example_losses_equal_batches_of_one(self):
        # vmap over (key_i, x_i): loss i is the batched loss of x[i:i+1] under key_i, exactly
        # (same noise draws: a batch of one with the same key).
        params = {"b": np.array([0.5, -1.0], np.float32), "log_prec": np.array([0.2, -0.3], np.float32)}
        x = _np_data(24, 5)
        keys = jax.random.split(jax.random.PRNGKey(24), 5)
        for make in (lambda **kw: dj.dsm_loss(diag_quadratic_energy, SIGMA, **kw),
                     lambda **kw: dj.mdsm_loss(diag_quadratic_energy, 0.2, 2.0, **kw)):
            per = self.variant(jax.vmap(make(per_example=True), in_axes=(None, 0, 0)))(params, keys, x)
            chex.assert_shape(per, (5,))
            ref = np.stack([make()(params, keys[i], x[i:i + 1]) for i in range(5)])
            chex.assert_trees_all_close(per, ref, rtol=1e-6, atol=1e-6)
        gen, p, q = _kl_setup()
        z = np.random.default_rng(25).normal(size=(5, 3)).astype(np.float32)
        single = dj.kl_generator_loss(linear_generator, gaussian_energy, KL_SIGMA, per_example=True)
        per = self.variant(jax.vmap(single, in_axes=(None, None, None, 0, 0)))(gen, p, q, keys, z)
        ref = np.stack([KL_LOSS(gen, p, q, keys[i], z[i:i + 1]) for i in range(5)])
        chex.assert_trees_all_close(per, ref, rtol=1e-6, atol=1e-6)

    def test_batched_form_refuses_a_vmapped_single_example(self):
        # Why the per-example form exists: under vmap the batched form sees shape event and
        # would misread its first axis as the batch; it refuses and names the fix.
        params = _quadratic_params(2)
        x = np.ones((4, 2), np.float32)
        with pytest.raises(ValueError, match="`x` must have shape"):
            jax.vmap(dj.score(quadratic_energy), in_axes=(None, 0))(params, x)
        with pytest.raises(ValueError, match="one example of shape event"):
            dj.score(quadratic_energy, per_example=True)(params, np.float32(1.0))


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------
def _bad_energy_column(params, x):
    return jnp.sum(flat(x) ** 2, axis=1, keepdims=True)  # (batch, 1)


def _bad_energy_scalar(params, x):
    return jnp.sum(x**2)  # ()


class BadInputTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("column", _bad_energy_column), ("scalar", _bad_energy_scalar))
    def test_energy_output_shape(self, bad_energy):
        x = jnp.ones((4, 2))
        key = jax.random.PRNGKey(0)
        for fn in (
            lambda: self.variant(dj.score(bad_energy))(None, x),
            lambda: self.variant(dj.denoiser(bad_energy, 0.1))(None, x),
            lambda: self.variant(dj.dsm_loss(bad_energy, 0.1))(None, key, x),
            lambda: self.variant(dj.mdsm_loss(bad_energy, 0.1, 1.0))(None, key, x),
            lambda: self.variant(dj.kl_generator_loss(linear_generator, bad_energy, 0.1))(
                {"a": 1.0, "b": jnp.zeros(2)}, None, None, key, x),
        ):
            with pytest.raises(ValueError, match=r"energy_fn must return shape \(batch,\)"):
                fn()

    @chex.variants(with_jit=True, without_jit=True)
    def test_missing_batch_axis(self):
        x = jnp.ones((2,))
        key = jax.random.PRNGKey(0)
        params = {"A": jnp.eye(2), "m": jnp.zeros(2)}
        with pytest.raises(ValueError, match="`x` must have shape"):
            self.variant(dj.score(quadratic_energy))(params, x)
        with pytest.raises(ValueError, match="`x` must have shape"):
            self.variant(dj.denoiser(quadratic_energy, 0.1))(params, x)
        with pytest.raises(ValueError, match="`x` must have shape"):
            self.variant(dj.dsm_loss(quadratic_energy, 0.1))(params, key, x)
        with pytest.raises(ValueError, match="`x` must have shape"):
            self.variant(dj.mdsm_loss(quadratic_energy, 0.1, 1.0))(params, key, x)
        with pytest.raises(ValueError, match="`z` must have shape"):
            self.variant(dj.kl_generator_loss(linear_generator, gaussian_energy, 0.1))(
                {"a": 1.0, "b": jnp.zeros(2)}, None, None, key, x)

    @parameterized.parameters(0.0, -0.5, float("nan"), float("inf"))
    def test_sigma_must_be_positive(self, sigma):
        with pytest.raises(ValueError, match="`sigma`"):
            dj.denoiser(quadratic_energy, sigma)
        with pytest.raises(ValueError, match="`sigma`"):
            dj.dsm_loss(quadratic_energy, sigma)
        with pytest.raises(ValueError, match="`sigma`"):
            dj.kl_generator_loss(linear_generator, quadratic_energy, sigma)
        with pytest.raises(ValueError, match="`sigma_min`"):
            dj.mdsm_loss(quadratic_energy, sigma, 1.0)
        with pytest.raises(ValueError, match="`sigma0`"):
            dj.mdsm_loss(quadratic_energy, 0.1, 1.0, sigma0=sigma)

    def test_sigma_range_order(self):
        with pytest.raises(ValueError, match="`sigma_min`"):
            dj.mdsm_loss(quadratic_energy, 2.0, 1.0)
        dj.mdsm_loss(quadratic_energy, 1.0, 1.0)  # equal is fine
