"""Langevin / MALA / annealed samplers and inpainting against closed forms.

On a Gaussian target every ULA quantity is exact: with B = I − (η/2)A the mean follows
x̄ ← m + B(x̄ − m) and the covariance C ← B C Bᵀ + ηT·I, so the stationary covariance is
ηT(I − B²)⁻¹; in 1-D with variance s² that is T·s²/(1 − η/(4s²)) (ULA's O(η) bias).
"""
from __future__ import annotations

import functools

import chex
import jax
import numpy as np
import pytest
from absl.testing import parameterized

import dsm_jax as dj
from conftest import assert_within, count_eqns, count_primitive, quadratic_energy, random_spd

# 2-D correlated Gaussian target E = ½(x − m)ᵀΣ⁻¹(x − m).
SIGMA_2D = np.array([[1.0, 0.6], [0.6, 0.8]])
M_2D = np.array([1.0, -1.0], np.float32)
PARAMS_2D = {"A": np.linalg.inv(SIGMA_2D).astype(np.float32), "m": M_2D}


def _gauss_1d(var, mean=0.5):
    return {"A": np.array([[1.0 / var]], np.float32), "m": np.array([mean], np.float32)}


def _ula_stationary_cov(A, eta, T=1.0):
    """Exact ULA stationary covariance ηT(I − B²)⁻¹, B = I − (η/2)A (A symmetric)."""
    B = np.eye(len(A)) - 0.5 * eta * np.asarray(A, np.float64)
    return eta * T * np.linalg.inv(np.eye(len(A)) - B @ B)


def _cov_se(C, n):
    """Standard error of a sample covariance from n independent Gaussian draws."""
    d = np.diag(C)
    return np.sqrt((np.outer(d, d) + C**2) / n)


def _moments(x):
    x = np.asarray(x, np.float64).reshape(x.shape[0], -1)
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


# ---------------------------------------------------------------------------------------
# langevin / mala: update rule and stationary laws
# ---------------------------------------------------------------------------------------
class LangevinTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_zero_temperature_is_exact_gradient_descent(self):
        # T = 0: x_n − m = Π_k (I − η_k A/2)(x_0 − m), step sizes given per step.
        A = random_spd(np.random.default_rng(0), 3)
        params = {"A": A, "m": np.array([0.5, -1.0, 2.0], np.float32)}
        etas = np.linspace(0.05, 0.3, 25).astype(np.float32)
        x0 = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
        sample_fn = dj.langevin(quadratic_energy, etas, 25, temperatures=np.zeros(25, np.float32))
        out = self.variant(sample_fn)(params, jax.random.PRNGKey(0), x0)
        chex.assert_shape(out, x0.shape)
        chex.assert_tree_all_finite(out)
        P = np.eye(3)
        for eta in etas:
            P = (np.eye(3) - 0.5 * eta * A.astype(np.float64)) @ P
        expected = params["m"] + (x0 - params["m"]) @ P.T
        chex.assert_trees_all_close(out, expected.astype(np.float32), atol=1e-5, rtol=1e-5)

    def test_image_shaped_chains_shape_and_determinism(self):
        # (batch, 1, 5, 5) events; the same key gives the same chain, another key another.
        params = {"A": np.eye(25, dtype=np.float32), "m": np.zeros(25, np.float32)}
        x0 = np.ones((4, 1, 5, 5), np.float32)
        for factory in (dj.langevin, dj.mala):
            sample_fn = jax.jit(factory(quadratic_energy, 0.1, 5))
            a = sample_fn(params, jax.random.PRNGKey(0), x0)
            b = sample_fn(params, jax.random.PRNGKey(0), x0)
            c = sample_fn(params, jax.random.PRNGKey(1), x0)
            chex.assert_shape(a, x0.shape)
            chex.assert_tree_all_finite(a)
            np.testing.assert_array_equal(a, b)
            assert not np.array_equal(a, c)

    def test_stationary_moments_correlated_gaussian(self):
        # Small step η = 0.02: 1000 steps is > 6 relaxation times of the slowest mode.
        n_chains, eta = 10_000, 0.02
        x0 = np.zeros((n_chains, 2), np.float32)
        out = jax.jit(dj.langevin(quadratic_energy, eta, 1000))(PARAMS_2D, jax.random.PRNGKey(0), x0)
        chex.assert_tree_all_finite(out)
        mean, cov = _moments(out)
        exact_cov = _ula_stationary_cov(PARAMS_2D["A"], eta)
        bias = np.abs(exact_cov - SIGMA_2D)
        assert np.max(bias / SIGMA_2D.max()) < 0.02  # the step is small: O(η) bias ≈ 1%
        assert_within(mean, M_2D, 5 * np.sqrt(np.diag(SIGMA_2D) / n_chains), "mean")
        assert_within(cov, SIGMA_2D, 5 * _cov_se(SIGMA_2D, n_chains) + bias, "cov")

    def test_ula_bias_and_mala_correction_at_large_step(self):
        # 1-D N(0.5, 1), η = 1: ULA's stationary variance is 1/(1 − 1/4) = 4/3; MALA's is 1.
        s2, eta, n_chains = 1.0, 1.0, 20_000
        params = _gauss_1d(s2)
        x0 = np.full((n_chains, 1), 3.0, np.float32)  # far from stationarity
        ula = jax.jit(dj.langevin_with_info(quadratic_energy, eta, 200))
        mala = jax.jit(dj.mala_with_info(quadratic_energy, eta, 200))
        x_ula, info_ula = ula(params, jax.random.PRNGKey(0), x0)
        x_mala, info_mala = mala(params, jax.random.PRNGKey(0), x0)
        se_mean = np.sqrt(s2 / n_chains)
        se_var = np.sqrt(2.0 / n_chains)

        var_ula = s2 / (1 - eta / (4 * s2))
        assert_within(np.mean(x_ula), 0.5, 5 * se_mean * np.sqrt(var_ula), "ULA mean")
        assert_within(np.var(x_ula), var_ula, 5 * se_var * var_ula, "ULA variance")
        assert_within(np.mean(x_mala), 0.5, 5 * se_mean, "MALA mean")
        assert_within(np.var(x_mala), s2, 5 * se_var * s2, "MALA variance")

        chex.assert_shape(info_mala.acceptance_rate, (200,))
        acc = np.asarray(info_mala.acceptance_rate)
        assert np.all((acc >= 0) & (acc <= 1))
        assert 0.0 < acc[50:].mean() < 1.0
        assert 0.3 < acc[50:].mean() < 0.99  # some but not all proposals rejected
        np.testing.assert_array_equal(np.asarray(info_ula.acceptance_rate), 1.0)
        np.testing.assert_array_equal(np.asarray(info_mala.n_nonfinite), 0)
        chex.assert_shape(info_mala.mean_energy, (200,))

    @chex.variants(with_jit=True, without_jit=True)
    def test_temperature_scales_the_stationary_variance(self):
        # Target exp(−E/T): variance T·s² (MALA, exact); ULA: T·s²/(1 − η/(4s²)).
        s2, T, n_chains = 0.5, 2.5, 20_000
        params = _gauss_1d(s2)
        x0 = np.full((n_chains, 1), 0.5, np.float32)
        temps = np.full(300, T, np.float32)
        ula = self.variant(dj.langevin(quadratic_energy, 0.1, 300, temperatures=temps))
        mala = self.variant(dj.mala(quadratic_energy, 0.5, 300, temperatures=temps))
        x_ula = ula(params, jax.random.PRNGKey(0), x0)
        x_mala = mala(params, jax.random.PRNGKey(1), x0)
        var_ula = T * s2 / (1 - 0.1 / (4 * s2))
        se = np.sqrt(2.0 / n_chains)
        assert_within(np.var(x_ula), var_ula, 5 * se * var_ula, "ULA variance at T")
        assert_within(np.var(x_mala), T * s2, 5 * se * T * s2, "MALA variance at T")
        assert_within(np.mean(x_mala), 0.5, 5 * np.sqrt(T * s2 / n_chains), "MALA mean at T")

    def test_free_mask_freezes_coordinates(self):
        mask = np.array([1.0, 0.0, 1.0], np.float32)
        params = {"A": np.eye(3, dtype=np.float32), "m": np.full(3, 4.0, np.float32)}
        x0 = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
        for factory in (dj.langevin, dj.mala):
            out = np.asarray(jax.jit(factory(quadratic_energy, 0.1, 20))(
                params, jax.random.PRNGKey(0), x0, mask))
            np.testing.assert_array_equal(out[:, 1], x0[:, 1])
            assert np.all(out[:, [0, 2]] != x0[:, [0, 2]])


class OneScanTest(parameterized.TestCase):

    @parameterized.named_parameters(("langevin", "langevin", False), ("mala", "mala", False),
                                    ("annealed", "annealed", False), ("langevin_trajectory", "langevin", True),
                                    ("mala_trajectory", "mala", True), ("annealed_trajectory", "annealed", True))
    def test_single_scan_whose_size_does_not_grow_with_n_steps(self, which, trajectory):
        # trajectory: thin=2 trajectory, per-chain info and a clamp on (ULA) — still one scan
        params = {"A": np.eye(2, dtype=np.float32), "m": np.zeros(2, np.float32)}
        x0 = np.zeros((4, 2), np.float32)
        extra = dict(thin=2, per_chain=True) if trajectory else {}
        clip = dict(clip=(-1.0, 1.0)) if trajectory else {}

        def build(n):
            if which == "langevin":
                return (dj.langevin_with_info(quadratic_energy, 0.1, n, **extra, **clip) if trajectory
                        else dj.langevin(quadratic_energy, 0.1, n))
            if which == "mala":
                return dj.mala_with_info(quadratic_energy, 0.1, n, **extra) if trajectory else dj.mala(
                    quadratic_energy, 0.1, n)
            factory = dj.annealed_langevin_with_info if trajectory else dj.annealed_langevin
            return factory(quadratic_energy, 0.1, temperatures=np.ones(n, np.float32), **extra, **clip)

        sizes = []
        for n in (3, 300):
            jaxpr = jax.make_jaxpr(build(n))(params, jax.random.PRNGKey(0), x0)
            assert count_primitive(jaxpr, "scan") == 1
            assert count_primitive(jaxpr, "while") == 0
            sizes.append(count_eqns(jaxpr))
        assert sizes[0] == sizes[1], sizes


# ---------------------------------------------------------------------------------------
# MDSM schedule, annealed sampler, inpainting
# ---------------------------------------------------------------------------------------
class ScheduleTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_default_schedule_equals_mdsm_sample_py_element_by_element(self):
        t = np.asarray(self.variant(functools.partial(dj.mdsm_temperature_schedule))())
        chex.assert_shape(t, (2700,))
        # MDSM's sample.py (annealing_schedule='exp'), written out in float64:
        k = np.linspace(0, 1999, 2000)
        reference = np.concatenate([100.0 * np.ones(500), 100.0 * np.exp(-k * (np.log(100.0 / 1.0) / 2000)),
                                    1.0 * np.linspace(1, 0, 200)])
        np.testing.assert_allclose(t, reference, rtol=1e-6, atol=1e-7)  # float32: a few ulps
        # A few values by hand: the exponential phase starts at T = 100 (k = 0) and stops one
        # geometric step above 1; the linear phase starts at exactly 1 and ends at exactly 0.
        np.testing.assert_allclose(t[[499, 500, 501, 2499, 2500, 2501, 2698]],
                                   [100.0, 100.0, 99.77000638225533, 1.0023052380778996, 1.0, 0.9949748743718593,
                                    0.005025125628140704], rtol=1e-6, atol=1e-7)
        assert t[-1] == 0.0
        assert np.all(np.diff(t) <= 0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_custom_schedule(self):
        fn = functools.partial(dj.mdsm_temperature_schedule, 10, 20, 5, t_high=50.0, t_low=2.0)
        t = np.asarray(self.variant(fn)())
        chex.assert_shape(t, (35,))
        np.testing.assert_allclose(t[:11], 50.0)  # 10 constant steps, then k = 0 of the exponential phase
        np.testing.assert_allclose(t[10:30], 50.0 * (2.0 / 50.0) ** (np.arange(20) / 20), rtol=1e-6)
        np.testing.assert_allclose(t[30:], [2.0, 1.5, 1.0, 0.5, 0.0], atol=1e-6)
        assert np.all(np.diff(t) <= 0)
        # Without a linear tail the schedule ends one geometric step above t_low.
        t = np.asarray(dj.mdsm_temperature_schedule(0, 7, 0, t_high=8.0, t_low=0.5))
        chex.assert_shape(t, (7,))
        np.testing.assert_allclose(t, 8.0 * (0.5 / 8.0) ** (np.arange(7) / 7), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(dj.mdsm_temperature_schedule(0, 0, 1, t_low=0.5)), [0.5])

    def test_bad_schedule_arguments(self):
        with pytest.raises(ValueError, match="n_constant"):
            dj.mdsm_temperature_schedule(-1)
        with pytest.raises(TypeError, match="n_linear"):
            dj.mdsm_temperature_schedule(n_linear=2.5)
        with pytest.raises(ValueError, match="empty"):
            dj.mdsm_temperature_schedule(0, 0, 0)
        with pytest.raises(ValueError, match="t_low"):
            dj.mdsm_temperature_schedule(t_low=0.0)


def _annealed_moments(a, m, x0, eta, temps, sigma0):
    """Exact per-coordinate mean and variance after annealed ULA on E = ½Σ a(x − m)² from
    a deterministic x0, followed by the Tweedie step x − σ₀²a(x − m)."""
    b = 1.0 - 0.5 * eta * a
    mean, var = x0 - m, np.zeros_like(a)
    for t in np.asarray(temps, np.float64):
        mean, var = b * mean, b * b * var + eta * t
    shrink = 1.0 - sigma0**2 * a
    return m + shrink * mean, shrink**2 * var


class AnnealedLangevinTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("denoise", True), ("no_denoise", False))
    def test_zero_temperature_closed_form(self, denoise):
        # T ≡ 0: x_n − m = Bⁿ(x_0 − m), then x − σ₀²A(x − m) if denoise.
        A = random_spd(np.random.default_rng(2), 3)
        params = {"A": A, "m": np.array([1.0, 0.0, -1.0], np.float32)}
        x0 = np.random.default_rng(3).normal(size=(5, 3)).astype(np.float32)
        n, eta, sigma0 = 40, 0.05, 0.3
        sample_fn = dj.annealed_langevin_with_info(quadratic_energy, eta, temperatures=np.zeros(n, np.float32),
                                                   sigma0=sigma0, denoise=denoise)
        out, info = self.variant(sample_fn)(params, jax.random.PRNGKey(0), x0)
        chex.assert_shape(out, x0.shape)
        chex.assert_shape(info.acceptance_rate, (n,))
        chex.assert_shape(info.mean_energy, (n,))
        A64 = A.astype(np.float64)
        P = np.linalg.matrix_power(np.eye(3) - 0.5 * eta * A64, n)
        if denoise:
            P = (np.eye(3) - sigma0**2 * A64) @ P
        expected = params["m"] + (x0 - params["m"]) @ P.T
        chex.assert_trees_all_close(out, expected.astype(np.float32), atol=1e-5, rtol=1e-5)

    def test_default_schedule_output_law(self):
        # Default MDSM chain (2700 steps, η = 0.02², σ₀ = 0.1) on a diagonal Gaussian: the
        # output is Gaussian with mean/variance given by the exact recursion.
        a = np.array([1.0, 4.0])
        m = np.array([0.5, -0.5])
        params = {"A": np.diag(a).astype(np.float32), "m": m.astype(np.float32)}
        n_chains = 4000
        x0 = np.full((n_chains, 2), 2.0, np.float32)
        sample_fn = jax.jit(dj.annealed_langevin_with_info(quadratic_energy))
        out, info = sample_fn(params, jax.random.PRNGKey(0), x0)
        chex.assert_shape(info.acceptance_rate, (2700,))
        chex.assert_tree_all_finite(out)
        mean, var = _annealed_moments(a, m, 2.0, 0.02**2, dj.mdsm_temperature_schedule(), 0.1)
        out = np.asarray(out, np.float64)
        assert_within(out.mean(0), mean, 5 * np.sqrt(var / n_chains), "mean")
        assert_within(out.var(0), var, 5 * var * np.sqrt(2 / n_chains), "variance")


class InpainterTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("shared_mask", False), ("per_example_mask", True))
    def test_observed_pixels_are_returned_unchanged(self, per_example):
        # An energy whose mode (5) is far from the observations: it pushes every pixel.
        rng = np.random.default_rng(4)
        event = (3, 4)
        params = {"A": np.eye(12, dtype=np.float32), "m": np.full(12, 5.0, np.float32)}
        x = rng.normal(size=(6, *event)).astype(np.float32)
        mask_shape = (6, *event) if per_example else event
        observed = (rng.uniform(size=mask_shape) < 0.5).astype(np.float32)
        temps = dj.mdsm_temperature_schedule(10, 30, 20)
        inpaint = self.variant(dj.inpainter(quadratic_energy, step_size=0.05, temperatures=temps))
        out = np.asarray(inpaint(params, jax.random.PRNGKey(0), x, free_mask=1.0 - observed))
        chex.assert_shape(out, x.shape)
        chex.assert_tree_all_finite(out)
        obs = np.broadcast_to(observed, x.shape) > 0
        assert obs.any() and (~obs).any()
        np.testing.assert_array_equal(out[obs], x[obs])  # bit for bit
        assert np.all(out[~obs] != x[~obs])
        # Free pixels were pulled towards the mode 5 (60 steps of η = 0.05 contract by 0.22).
        assert np.mean(out[~obs]) > np.mean(x[~obs]) + 2.5

    @chex.variants(with_jit=True, without_jit=True)
    def test_zero_temperature_conditional_closed_form(self):
        # Coupled Gaussian, observed coordinate 0: the free block does gradient descent
        # towards the conditional mode x_f* = m_f − A_ff⁻¹A_fo(x_o − m_o):
        # x_f(n) − x_f* = (I − ηA_ff/2)ⁿ(x_f(0) − x_f*), then x_f − σ₀²A_ff(x_f − x_f*).
        A = random_spd(np.random.default_rng(5), 3).astype(np.float64)
        m = np.array([0.3, -0.7, 1.1])
        params = {"A": A.astype(np.float32), "m": m.astype(np.float32)}
        x = np.random.default_rng(6).normal(size=(4, 3)).astype(np.float32)
        observed = np.array([1.0, 0.0, 0.0], np.float32)
        n, eta, sigma0 = 30, 0.1, 0.2
        inpaint = dj.inpainter(quadratic_energy, eta, temperatures=np.zeros(n, np.float32), sigma0=sigma0)
        out = np.asarray(self.variant(functools.partial(inpaint, free_mask=1.0 - observed))(
            params, jax.random.PRNGKey(0), x))
        Aff, Afo = A[1:, 1:], A[1:, :1]
        xs = m[1:] - (x[:, :1] - m[:1]) @ np.linalg.solve(Aff, Afo).T
        P = np.linalg.matrix_power(np.eye(2) - 0.5 * eta * Aff, n)
        xf = xs + (x[:, 1:] - xs) @ P.T
        xf = xf - sigma0**2 * (xf - xs) @ Aff.T
        np.testing.assert_array_equal(out[:, 0], x[:, 0])
        np.testing.assert_allclose(out[:, 1:], xf, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------
P2 = {"A": np.eye(2, dtype=np.float32), "m": np.zeros(2, np.float32)}


def _bad_energy(params, x):
    return quadratic_energy(params, x)[:, None]  # (batch, 1)


class BadInputTest(parameterized.TestCase):

    @parameterized.parameters(0.0, -0.1, float("nan"))
    def test_step_size(self, eta):
        for make in (lambda: dj.langevin(quadratic_energy, eta, 10),
                     lambda: dj.mala(quadratic_energy, eta, 10),
                     lambda: dj.annealed_langevin(quadratic_energy, eta, temperatures=np.ones(10)),
                     lambda: dj.inpainter(quadratic_energy, eta, temperatures=np.ones(10)),
                     lambda: dj.langevin(quadratic_energy, np.array([0.1, eta, 0.1]), 3)):
            with pytest.raises(ValueError, match="`step_size`"):
                make()
        with pytest.raises(ValueError, match="`step_size`"):
            dj.langevin(quadratic_energy, np.full(4, 0.1), 3)  # wrong schedule length

    @parameterized.parameters((0, ValueError), (-3, ValueError), (2.0, TypeError), (True, TypeError))
    def test_n_steps(self, n, error):  # a wrong type is a TypeError, a wrong value a ValueError
        for factory in (dj.langevin, dj.mala):
            with pytest.raises(error, match="`n_steps`"):
                factory(quadratic_energy, 0.1, n)

    def test_temperatures(self):
        for factory in (dj.langevin, dj.mala):
            for temps in (np.ones(9), np.ones(11), np.ones((10, 1)), 1.0):
                with pytest.raises(ValueError, match="`temperatures`"):
                    factory(quadratic_energy, 0.1, 10, temperatures=temps)
        with pytest.raises(ValueError, match="`temperatures`"):
            dj.langevin(quadratic_energy, 0.1, 3, temperatures=np.array([1.0, -1.0, 0.0]))
        with pytest.raises(ValueError, match="`temperatures`"):  # MALA needs T > 0
            dj.mala(quadratic_energy, 0.1, 3, temperatures=np.array([1.0, 0.5, 0.0]))
        with pytest.raises(ValueError, match="`sigma0`"):
            dj.annealed_langevin(quadratic_energy, 0.1, temperatures=np.ones(3), sigma0=0.0)
        # The annealed sampler takes its length from the schedule: it must be 1-D, non-empty.
        for temps in (1.0, np.ones((4, 2)), np.ones(0)):
            with pytest.raises(ValueError, match="`temperatures`"):
                dj.annealed_langevin(quadratic_energy, 0.1, temperatures=temps)
            with pytest.raises(ValueError, match="`temperatures`"):
                dj.inpainter(quadratic_energy, 0.1, temperatures=temps)

    def test_masks(self):
        x = np.zeros((8, 2), np.float32)
        key = jax.random.PRNGKey(0)
        with pytest.raises(ValueError, match="`free_mask`"):
            dj.langevin(quadratic_energy, 0.1, 3)(P2, key, x, np.ones(3, np.float32))
        with pytest.raises(ValueError, match="`free_mask`"):
            dj.mala(quadratic_energy, 0.1, 3)(P2, key, x, np.ones((4, 2), np.float32))
        inpaint = dj.inpainter(quadratic_energy, 0.1, temperatures=np.ones(3, np.float32))
        for bad in (np.ones(3), np.ones((8, 1)), np.ones((2, 8)), np.ones((1, 8, 2))):
            with pytest.raises(ValueError, match="`free_mask`"):
                inpaint(P2, key, x, free_mask=bad.astype(np.float32))
            with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="`observed_mask`"):
                inpaint(P2, key, x, bad.astype(np.float32))  # the deprecated positional mask

    def test_batch_axis_and_energy_shape(self):
        key = jax.random.PRNGKey(0)
        with pytest.raises(ValueError, match="`x0` must have shape"):
            dj.langevin(quadratic_energy, 0.1, 3)(P2, key, np.zeros(2, np.float32))
        with pytest.raises(ValueError, match="`x0` must have shape"):
            jax.jit(dj.mala(quadratic_energy, 0.1, 3))(P2, key, np.zeros(2, np.float32))
        with pytest.raises(ValueError, match="`x` must have shape"):
            dj.inpainter(quadratic_energy, 0.1, temperatures=np.ones(3))(P2, key, np.zeros(2, np.float32),
                                                                       free_mask=np.ones(2))
        with pytest.raises(ValueError, match=r"energy_fn must return shape \(batch,\)"):
            dj.langevin(_bad_energy, 0.1, 3)(P2, key, np.zeros((4, 2), np.float32))
        with pytest.raises(ValueError, match=r"energy_fn must return shape \(batch,\)"):
            dj.annealed_langevin(_bad_energy, 0.1, temperatures=np.ones(3))(P2, key, np.zeros((4, 2), np.float32))


# ---------------------------------------------------------------------------------------
# Preconditioned MALA (the kernel AIS uses)
# ---------------------------------------------------------------------------------------
def _scan_kernel(kernel, params, key, x0, n_steps, eta, free_mask=None):
    def body(state, k):
        return kernel(params, k, state, eta, 1.0, free_mask)

    state, info = jax.lax.scan(body, dj.init_chain(quadratic_energy, params, x0), jax.random.split(key, n_steps))
    return state.x, info


class PreconditionedMALATest(chex.TestCase):
    # Diagonal Gaussian with variances 0.01 and 4 (condition number 400); scale = their sqrt.
    VAR = np.array([0.01, 4.0])
    PARAMS = {"A": np.diag(1.0 / VAR).astype(np.float32), "m": np.array([1.0, -2.0], np.float32)}

    def test_unadjusted_has_the_closed_form_ula_bias_per_dimension(self):
        # x ← x − (η/2)S A(x − m) + √η S^½ z with S = diag(var) = A⁻¹: every coordinate contracts by
        # (1 − η/2), so the stationary variance is var/(1 − η/4) in each, whatever its scale.
        eta, n = 0.8, 20_000
        kernel = dj.preconditioned_mala_kernel(quadratic_energy, np.sqrt(self.VAR).astype(np.float32),
                                               adjusted=False)
        x0 = np.tile(self.PARAMS["m"], (n, 1))
        x, info = jax.jit(lambda k: _scan_kernel(kernel, self.PARAMS, k, x0, 60, eta))(jax.random.PRNGKey(0))
        np.testing.assert_array_equal(np.asarray(info.acceptance_rate), 1.0)
        assert np.all(np.asarray(info.acceptance_prob) < 1.0)  # the gauge sees the discretisation error
        expected = self.VAR / (1 - eta / 4)
        assert_within(np.var(np.asarray(x, np.float64), axis=0), expected, 5 * expected * np.sqrt(2 / n), "variance")

    def test_adjusted_is_exact_and_mixes_both_scales(self):
        eta, n = 1.0, 20_000
        kernel = dj.preconditioned_mala_kernel(quadratic_energy, np.sqrt(self.VAR).astype(np.float32))
        x0 = np.tile(self.PARAMS["m"], (n, 1))
        x, info = jax.jit(lambda k: _scan_kernel(kernel, self.PARAMS, k, x0, 100, eta))(jax.random.PRNGKey(1))
        x = np.asarray(x, np.float64)
        assert_within(np.var(x, axis=0), self.VAR, 5 * self.VAR * np.sqrt(2 / n), "MALA variance")
        assert_within(x.mean(0), self.PARAMS["m"], 5 * np.sqrt(self.VAR / n), "MALA mean")
        acc = np.asarray(info.acceptance_rate)
        assert 0.5 < acc[20:].mean() < 0.99, acc[20:].mean()
        # the realised rate and the probability estimate the same thing
        assert abs(acc[20:].mean() - np.asarray(info.acceptance_prob)[20:].mean()) < 0.02

    def test_identity_preconditioner_is_mala_and_free_mask_freezes(self):
        params = {"A": np.eye(3, dtype=np.float32), "m": np.full(3, 4.0, np.float32)}
        x0 = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
        mask = np.array([1.0, 0.0, 1.0], np.float32)
        key = jax.random.PRNGKey(2)
        a, _ = _scan_kernel(dj.preconditioned_mala_kernel(quadratic_energy, np.ones(3, np.float32)), params, key,
                            x0, 20, 0.1, mask)
        b, _ = _scan_kernel(dj.mala_kernel(quadratic_energy), params, key, x0, 20, 0.1, mask)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(a)[:, 1], x0[:, 1])


# ---------------------------------------------------------------------------------------
# One API: return structure, argument order, mask meaning (issue 16)
# ---------------------------------------------------------------------------------------
class ConsistentAPITest(chex.TestCase):

    def test_sample_fns_return_x_and_with_info_twins_return_x_and_info(self):
        x0 = np.zeros((4, 2), np.float32)
        key = jax.random.PRNGKey(0)
        temps = np.ones(5, np.float32)
        pairs = ((dj.langevin(quadratic_energy, 0.1, 5), dj.langevin_with_info(quadratic_energy, 0.1, 5)),
                 (dj.mala(quadratic_energy, 0.1, 5), dj.mala_with_info(quadratic_energy, 0.1, 5)),
                 (dj.annealed_langevin(quadratic_energy, 0.1, 5, temperatures=temps),
                  dj.annealed_langevin_with_info(quadratic_energy, 0.1, 5, temperatures=temps)))
        for plain, with_info in pairs:
            x = plain(P2, key, x0)
            assert isinstance(x, jax.Array) and x.shape == x0.shape
            x2, info = with_info(P2, key, x0)
            assert isinstance(info, dj.StepInfo)
            chex.assert_shape(info.acceptance_prob, (5,))
            np.testing.assert_array_equal(x, x2)

    def test_deprecated_return_info_still_works(self):
        x0 = np.zeros((4, 2), np.float32)
        key = jax.random.PRNGKey(0)
        for factory, twin in ((dj.langevin, dj.langevin_with_info), (dj.mala, dj.mala_with_info)):
            with pytest.warns(DeprecationWarning, match="_with_info"):
                old = factory(quadratic_energy, 0.1, 5, return_info=True)
            x, info = old(P2, key, x0)
            np.testing.assert_array_equal(x, twin(quadratic_energy, 0.1, 5)(P2, key, x0)[0])
            with pytest.warns(DeprecationWarning):
                assert isinstance(factory(quadratic_energy, 0.1, 5, return_info=False)(P2, key, x0), jax.Array)

    def test_n_steps_is_the_third_argument_everywhere(self):
        temps = np.linspace(2.0, 0.5, 6).astype(np.float32)
        x0 = np.ones((3, 2), np.float32)
        key = jax.random.PRNGKey(0)
        new = dj.annealed_langevin(quadratic_energy, 0.1, 6, temperatures=temps, sigma0=0.2)(P2, key, x0)
        with pytest.warns(DeprecationWarning, match="n_steps"):
            old = dj.annealed_langevin(quadratic_energy, 0.1, temps, 0.2)  # (E, step_size, temperatures, sigma0)
        np.testing.assert_array_equal(new, old(P2, key, x0))
        with pytest.raises(ValueError, match="`n_steps`"):
            dj.annealed_langevin(quadratic_energy, 0.1, 5, temperatures=temps)
        with pytest.raises(ValueError, match="`n_steps`"):
            dj.annealed_langevin(quadratic_energy, 0.1, 0, temperatures=temps[:0])
        with pytest.raises(ValueError, match="`n_steps`"):  # the default MDSM schedule has 2700 steps
            dj.annealed_langevin(quadratic_energy, 0.1, 100)

    def test_key_is_second_everywhere(self):
        import inspect

        temps = np.ones(3, np.float32)
        fns = (dj.langevin(quadratic_energy, 0.1, 3), dj.mala(quadratic_energy, 0.1, 3),
               dj.annealed_langevin(quadratic_energy, 0.1, 3, temperatures=temps),
               dj.inpainter(quadratic_energy, 0.1, 3, temperatures=temps),
               dj.langevin_kernel(quadratic_energy), dj.preconditioned_mala_kernel(quadratic_energy))
        for fn in fns:
            assert list(inspect.signature(fn).parameters)[:2] == ["params", "key"]

    def test_one_mask_meaning_free_mask_in_the_inpainter(self):
        rng = np.random.default_rng(7)
        params = {"A": np.eye(4, dtype=np.float32), "m": np.full(4, 3.0, np.float32)}
        x = rng.normal(size=(5, 4)).astype(np.float32)
        free = np.array([1.0, 0.0, 0.0, 1.0], np.float32)
        inpaint = dj.inpainter(quadratic_energy, 0.05, temperatures=np.ones(10, np.float32))
        a = np.asarray(inpaint(params, jax.random.PRNGKey(0), x, free_mask=free))
        np.testing.assert_array_equal(a[:, free == 0], x[:, free == 0])  # 0 = kept bit for bit
        assert np.all(a[:, free == 1] != x[:, free == 1])
        # the same chain as the sampler's own free_mask, and as the deprecated observed_mask
        b = dj.annealed_langevin(quadratic_energy, 0.05, temperatures=np.ones(10, np.float32))(
            params, jax.random.PRNGKey(0), x, free)
        np.testing.assert_array_equal(a, b)
        with pytest.warns(DeprecationWarning, match="free_mask"):
            c = inpaint(params, jax.random.PRNGKey(0), x, 1.0 - free)
        np.testing.assert_array_equal(a, c)
        for kwargs in ({}, {"observed_mask": free, "free_mask": free}):
            with pytest.raises(ValueError, match="free_mask"):
                inpaint(params, jax.random.PRNGKey(0), x, **kwargs)

    def test_sample_in_chunks_with_info(self):
        init = lambda k, m: np.zeros((m, 2), np.float32)  # noqa: E731
        chain = jax.jit(dj.langevin_with_info(quadratic_energy, 0.1, 4))
        x, info = dj.sample_in_chunks(chain, P2, jax.random.key(0), init, 7, 3, with_info=True)
        assert x.shape == (7, 2) and info == {"n_nonfinite": 0, "first_nonfinite_step": None}
        plain, _ = dj.sample_in_chunks(jax.jit(dj.langevin(quadratic_energy, 0.1, 4)), P2, jax.random.key(0), init, 7, 3)
        np.testing.assert_array_equal(x, plain)
        with pytest.warns(DeprecationWarning, match="with_info"):  # a tuple without with_info: the old sniffing
            old, _ = dj.sample_in_chunks(chain, P2, jax.random.key(0), init, 7, 3)
        np.testing.assert_array_equal(old, plain)


class BadInputSweepTest(parameterized.TestCase):

    def test_schedule_refuses_t_high_below_t_low(self):
        # Accepted silently before issue 16: the "annealing" heated the chain up.
        with pytest.raises(ValueError, match="`t_high`.*swap"):
            dj.mdsm_temperature_schedule(t_high=0.5, t_low=1.0)
        with pytest.raises(ValueError, match="`t_high`"):
            dj.mdsm_temperature_schedule(t_high=float("nan"))
        np.testing.assert_allclose(dj.mdsm_temperature_schedule(2, 0, 0, t_high=1.0, t_low=1.0), 1.0)

    def test_integer_empty_and_non_binary_inputs(self):
        key = jax.random.PRNGKey(0)
        temps = np.ones(3, np.float32)
        for fn in (dj.langevin(quadratic_energy, 0.1, 3), dj.mala(quadratic_energy, 0.1, 3),
                   dj.annealed_langevin(quadratic_energy, 0.1, 3, temperatures=temps)):
            with pytest.raises(TypeError, match="`x0` must be a floating-point"):
                fn(P2, key, np.zeros((4, 2), np.int32))
            with pytest.raises(ValueError, match="`x0` has an empty batch"):
                fn(P2, key, np.zeros((0, 2), np.float32))
            for bad in (np.array([1.0, 0.5], np.float32), np.array([1.0, np.nan], np.float32)):
                with pytest.raises(ValueError, match="`free_mask` (must hold|holds .* NaN values; a mask must hold) only 0 and 1"):
                    fn(P2, key, np.zeros((4, 2), np.float32), bad)
        inpaint = dj.inpainter(quadratic_energy, 0.1, 3, temperatures=temps)
        with pytest.raises(ValueError, match="`free_mask` (must hold|holds .* NaN values; a mask must hold) only 0 and 1"):
            inpaint(P2, key, np.zeros((4, 2), np.float32), free_mask=np.array([2.0, 0.0], np.float32))

    @parameterized.parameters((0, ValueError), (-2, ValueError), (1.5, TypeError), (None, TypeError))
    def test_counts_in_sample_in_chunks(self, bad, error):  # a wrong type is a TypeError, a wrong value a ValueError
        init = lambda k, m: np.zeros((m, 2), np.float32)  # noqa: E731
        fn = dj.langevin(quadratic_energy, 0.1, 2)
        with pytest.raises(error, match="`n`"):
            dj.sample_in_chunks(fn, P2, jax.random.key(0), init, bad, 2)
        with pytest.raises(error, match="`chunk_size`"):
            dj.sample_in_chunks(fn, P2, jax.random.key(0), init, 4, bad)


# ---------------------------------------------------------------------------------------
# Default starting points
# ---------------------------------------------------------------------------------------
def test_gaussian_start_draws_standard_normal_chains_of_the_event_shape():
    init = dj.gaussian_start((3, 2))
    x = init(jax.random.key(0), 20_000)
    chex.assert_shape(x, (20_000, 3, 2))
    chex.assert_type(x, np.float32)
    flat = np.asarray(x).reshape(len(x), -1)
    np.testing.assert_allclose(flat.mean(0), 0.0, atol=0.03)  # 4.2 standard errors
    np.testing.assert_allclose(flat.std(0), 1.0, atol=0.02)
    np.testing.assert_allclose(np.corrcoef(flat.T) - np.eye(6), 0.0, atol=0.04)
    # MDSM's start 0.5 + N(0, I), an image-shaped mean, and jit: the same draws
    mdsm = dj.gaussian_start((4, 4, 1), mean=0.5)(jax.random.key(1), 8)
    np.testing.assert_allclose(mdsm, 0.5 + jax.random.normal(jax.random.key(1), (8, 4, 4, 1)), rtol=1e-6)
    mean_image = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4, 1)
    shifted = jax.jit(dj.gaussian_start((4, 4, 1), mean=mean_image, std=0.1), static_argnums=1)(jax.random.key(2), 5)
    np.testing.assert_allclose(shifted, mean_image + 0.1 * jax.random.normal(jax.random.key(2), (5, 4, 4, 1)),
                               rtol=1e-5, atol=1e-7)
    assert dj.gaussian_start(2)(jax.random.key(0), 3).shape == (3, 2)  # an int is one axis


def test_gaussian_start_feeds_sample_in_chunks():
    energy_fn = lambda params, x: 0.5 * (x**2).sum(axis=-1)  # noqa: E731
    sampler = jax.jit(dj.langevin(energy_fn, 0.1, 5))
    x, info = dj.sample_in_chunks(sampler, {}, jax.random.key(0), dj.gaussian_start((2,)), 10, 4)
    chex.assert_shape(x, (10, 2))
    assert info["n_nonfinite"] == 0


@pytest.mark.parametrize("call, error, match", [
    (lambda: dj.gaussian_start(()), ValueError, "event_shape"),
    (lambda: dj.gaussian_start((2, 0)), ValueError, "event_shape"),
    (lambda: dj.gaussian_start((2,), std=0.0), ValueError, "std"),
    (lambda: dj.gaussian_start((2,), mean=np.nan), ValueError, "mean"),
    (lambda: dj.gaussian_start((2,), mean="0.5"), TypeError, "mean"),
    (lambda: dj.gaussian_start((2,), mean=np.zeros(3)), ValueError, "broadcast"),
    (lambda: dj.gaussian_start((2,))(jax.random.key(0), 0), ValueError, "n_chains"),
    (lambda: dj.gaussian_start((2,))(jax.random.key(0), 2.5), TypeError, "n_chains"),
    (lambda: dj.gaussian_start((2,))(None, 4), TypeError, "key"),
])
def test_gaussian_start_refuses_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
