"""log Z estimators (IS, AIS, grid) and likelihoods against closed forms.

Every target has a known normalising constant:

* Gaussian energies ``E = ½(x − m)ᵀA(x − m) + c`` with a random SPD precision ``A``:
  ``log Z = (d/2) log 2π − ½ log det A − c``.
* Gaussian mixtures with full covariances and separated modes,
  ``E = −log Σ_k w_k N(x; μ_k, Σ_k) + c``: ``log Z = −c``.

Which method is asked to do what (the settings below are what passed):

* IS (proposal from data: per-dimension mean, 1.5 × std): Gaussians d = 2, 10; mixtures d = 2
  (and 1-D). IS is not asked to go beyond d = 10: its weight variance grows exponentially.
* AIS (MALA, sigmoid schedule): Gaussians d = 2, 10, 20 (within 3 stderr AND 0.05 nats),
  d = 50, 100 (within 3 stderr), fixed step size; mixtures d = 1, 2, 10 (3 stderr and 0.05 nats)
  with the step size tuned per temperature by the pilot run (a fixed step freezes the chains).
* grid: 1-D and 2-D, against the closed form and against IS/AIS.

The estimators compile once per (energy_fn, static configuration, shapes); the tests share
configurations so the compiled code is reused (compilation dominates the runtime on CPU).
"""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dsm_jax as dj
from dsm_jax import likelihood as lk
from conftest import quadratic_energy, random_spd


# ---------------------------------------------------------------------------------------
# targets with known log Z
# ---------------------------------------------------------------------------------------
def gaussian_energy(params, x):
    return quadratic_energy(params, x) + params["c"]


def gaussian_case(d, c=-2.5, n_data=2000):
    """Random SPD precision (eigenvalues in [0.5, 2]), random mean, additive constant c."""
    rng = np.random.default_rng(100 + d)
    A = random_spd(rng, d)
    m = rng.normal(size=d).astype(np.float32)
    params = {"A": A, "m": m, "c": np.float32(c)}
    cov = np.linalg.inv(A.astype(np.float64))
    log_z = 0.5 * d * math.log(2 * math.pi) - 0.5 * np.linalg.slogdet(A.astype(np.float64))[1] - c
    data = rng.multivariate_normal(m, cov, size=n_data).astype(np.float32)
    return params, log_z, data


def mixture_energy(params, x):
    """E = −log Σ_k w_k N(x; μ_k, P_k⁻¹) + c with P_k = L_k L_kᵀ (L_k lower triangular)."""
    r = x[:, None, :] - params["means"][None]  # (batch, K, d)
    y = jnp.einsum("bkd,kde->bke", r, params["L"])  # L_kᵀ r
    d = x.shape[1]
    log_det_l = jnp.sum(jnp.log(jnp.diagonal(params["L"], axis1=1, axis2=2)), axis=1)  # ½ log det P_k
    log_n = -0.5 * jnp.sum(y * y, axis=-1) + log_det_l[None] - 0.5 * d * math.log(2 * math.pi)
    return -jax.scipy.special.logsumexp(jnp.log(params["weights"])[None] + log_n, axis=1) + params["c"]


def mixture_case(d, k=3, separation=8.0, c=1.7, n_data=3000):
    """Well-separated modes (pairwise distance ≳ separation, component sd ≤ 1)."""
    rng = np.random.default_rng(200 + d)
    if d == 1:
        means = np.array([[-4.0], [0.0], [4.0]])[:k]
    elif d == 2:  # on a circle: pairwise distance = separation
        angles = 2 * math.pi * np.arange(k) / k
        means = separation / math.sqrt(3.0) * np.stack([np.cos(angles), np.sin(angles)], 1)
    else:
        directions = np.linalg.qr(rng.normal(size=(d, d)))[0][:, :k].T  # orthonormal rows
        means = 0.5 * separation * math.sqrt(2.0) * directions
    precisions = [random_spd(rng, d, 1.0, 4.0).astype(np.float64) for _ in range(k)]
    weights = rng.uniform(0.5, 1.5, size=k)
    weights /= weights.sum()
    params = {
        "weights": weights.astype(np.float32),
        "means": means.astype(np.float32),
        "L": np.stack([np.linalg.cholesky(p) for p in precisions]).astype(np.float32),
        "c": np.float32(c),
    }
    comp = rng.choice(k, size=n_data, p=weights)
    data = np.stack([rng.multivariate_normal(means[j], np.linalg.inv(precisions[j])) for j in comp])
    return params, -c, data.astype(np.float32)


def _check_close(log_z, stderr, truth, n_se=3.0, atol=None, what=""):
    log_z, stderr = float(log_z), float(stderr)
    assert math.isfinite(log_z) and stderr > 0, (what, log_z, stderr)
    err = log_z - truth
    assert abs(err) < n_se * stderr, f"{what}: error {err:+.4f} = {err / stderr:+.2f} stderr (stderr {stderr:.4f})"
    if atol is not None:
        assert abs(err) < atol, f"{what}: |error| {abs(err):.4f} >= {atol}"


# Shared configurations (reused compiled code across tests).
IS_OPTS = dict(method="is", n_samples=100_000, n_batches=10, chunk_size=10_000)
AIS_K = {1: 100, 2: 100, 10: 200, 20: 400, 50: 400, 100: 1000}  # n_temps
AIS_CHAINS = {1: 512, 2: 512, 10: 512, 20: 1024, 50: 512, 100: 512}


def ais_opts(d, **kw):
    """Gaussians: a fixed MALA step (the default d^(−1/3), in units of the proposal scale)."""
    return dict(method="ais", n_temps=AIS_K[d], n_chains=AIS_CHAINS[d], chains_per_chunk=512,
                adapt_step_size=False, **kw)


MIX_AIS = {1: (200, 512), 2: (400, 1024), 10: (1000, 1024)}  # (n_temps, n_chains)


def mix_ais_opts(d):
    """Mixtures: the proposal (from the data) is ~5x wider than a mode, so a fixed step freezes
    the chains as β grows (acceptance → 0, ESS ≈ 2 of 512 in d = 10): tune it per temperature."""
    return dict(method="ais", n_temps=MIX_AIS[d][0], n_chains=MIX_AIS[d][1], chains_per_chunk=512,
                adapt_step_size=True)


# ---------------------------------------------------------------------------------------
# closed-form log Z
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [2, 10])
def test_is_gaussian(d):
    params, truth, data = gaussian_case(d)
    log_z, se, info = dj.estimate_log_z_with_info(
        gaussian_energy, params, jax.random.PRNGKey(0), (d,), data=data, **IS_OPTS
    )
    chex.assert_shape((log_z, se), [(), ()])
    chex.assert_shape(info["batch_log_z"], (10,))
    _check_close(log_z, se, truth, what=f"IS d={d}")
    # the per-sample delta-method error agrees with the batch error (both estimate one thing)
    assert 0.4 < float(info["stderr_delta"]) / float(se) < 2.5
    assert float(info["ess"]) > 1000


@pytest.mark.parametrize("d", [2, 10, 20, 50, 100])
def test_ais_gaussian(d):
    params, truth, data = gaussian_case(d)
    log_z, se, info = dj.estimate_log_z_with_info(
        gaussian_energy, params, jax.random.PRNGKey(0), (d,), data=data, **ais_opts(d)
    )
    chex.assert_shape(info["log_weights"], (AIS_CHAINS[d],))
    assert int(info["n_nonfinite"]) == 0
    acc = np.asarray(info["acceptance"])
    assert acc.shape == (AIS_K[d],) and 0.3 < acc.mean() < 0.98, acc.mean()
    _check_close(log_z, se, truth, atol=0.05 if d <= 20 else None, what=f"AIS d={d}")


@pytest.mark.parametrize("d", [2, 10])
def test_mixture_separated_modes(d):
    params, truth, data = mixture_case(d)
    if d == 2:  # IS copes with a 2-D multimodal target given a proposal wider than the data
        log_z, se = dj.estimate_log_z(mixture_energy, params, jax.random.PRNGKey(1), (d,), data=data, **IS_OPTS)
        _check_close(log_z, se, truth, what=f"IS mixture d={d}")
    log_z, se, info = dj.estimate_log_z_with_info(
        mixture_energy, params, jax.random.PRNGKey(2), (d,), data=data, **mix_ais_opts(d)
    )
    assert abs(float(np.mean(info["acceptance"][10:])) - 0.6) < 0.1
    _check_close(log_z, se, truth, atol=0.05, what=f"AIS mixture d={d}")


def _spread_vs_stderr(estimate, truth, n_seeds):
    est, se = zip(*(estimate(jax.random.PRNGKey(1000 + s)) for s in range(n_seeds)))
    est, se = np.array(est, np.float64), np.array(se, np.float64)
    spread = est.std(ddof=1)
    rms_se = np.sqrt(np.mean(se**2))
    # unbiased: the mean of n_seeds estimates is within 3 of its own standard errors
    assert abs(est.mean() - truth) < 3 * rms_se / math.sqrt(n_seeds), (est.mean() - truth, rms_se)
    return spread / rms_se


def test_stderr_is_honest_over_seeds():
    """The reported stderr matches the seed-to-seed spread of the estimates within a factor 2."""
    params, truth, data = gaussian_case(10)
    mean, scale = lk.proposal_from_data(data, (10,))

    def estimator(make, **opts):
        estimate = make(gaussian_energy, (10,), **{k: v for k, v in opts.items() if k != "method"})
        return lambda key: tuple(map(float, estimate(params, key, mean, scale)[:2]))

    for name, fn in (("IS", estimator(lk.make_is_log_z, **IS_OPTS)),
                     ("AIS", estimator(lk.make_ais_log_z, **ais_opts(10)))):
        ratio = _spread_vs_stderr(fn, truth, 16)
        assert 0.5 < ratio < 2.0, f"{name}: spread / reported stderr = {ratio:.2f}"


def test_ais_step_size_adaptation():
    """The pilot tunes one step size per temperature to the target acceptance; exact result."""
    params, truth, data = gaussian_case(10)
    log_z, se, info = dj.estimate_log_z_with_info(
        gaussian_energy, params, jax.random.PRNGKey(3), (10,), data=data,
        method="ais", n_temps=200, n_chains=512, target_accept=0.6,
    )
    acc, eta = np.asarray(info["acceptance"]), np.asarray(info["step_sizes"])
    assert eta.shape == (200,) and np.all(eta > 0)
    assert np.ptp(eta) > 0.1 * eta.mean()  # it did adapt along the path
    assert abs(acc[10:].mean() - 0.6) < 0.08, acc[10:].mean()
    _check_close(log_z, se, truth, atol=0.05, what="adaptive AIS d=10")


def test_additive_constant_shifts_log_z_exactly():
    params, _, data = gaussian_case(2)
    shifted = {**params, "c": params["c"] + np.float32(5.0)}
    key = jax.random.PRNGKey(4)
    for opts, atol in ((IS_OPTS, 1e-5), (ais_opts(2), 1e-4)):
        a, se_a = dj.estimate_log_z(gaussian_energy, params, key, (2,), data=data, **opts)
        b, se_b = dj.estimate_log_z(gaussian_energy, shifted, key, (2,), data=data, **opts)
        chex.assert_trees_all_close(float(b) - float(a), -5.0, atol=atol)
        chex.assert_trees_all_close(se_a, se_b, rtol=1e-3)
    g = dj.estimate_log_z(gaussian_energy, params, key, (2,), method="grid", bounds=(-8.0, 8.0), n=128)[0]
    h = dj.estimate_log_z(gaussian_energy, shifted, key, (2,), method="grid", bounds=(-8.0, 8.0), n=128)[0]
    chex.assert_trees_all_close(float(h) - float(g), -5.0, atol=1e-5)


# ---------------------------------------------------------------------------------------
# grid vs IS vs AIS
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 2])
def test_grid_agrees_with_is_and_ais(d):
    params, truth, data = mixture_case(d)
    log_g, err_g = dj.estimate_log_z(mixture_energy, params, None, (d,), method="grid", bounds=(-12.0, 12.0),
                                     n=2048 if d == 1 else 256)
    assert abs(float(log_g) - truth) < 1e-3 and float(err_g) < 1e-3, (float(log_g) - truth, float(err_g))
    log_i, se_i = dj.estimate_log_z(mixture_energy, params, jax.random.PRNGKey(5), (d,), data=data, **IS_OPTS)
    log_a, se_a = dj.estimate_log_z(mixture_energy, params, jax.random.PRNGKey(6), (d,), data=data, **mix_ais_opts(d))
    _check_close(log_i, math.hypot(float(se_i), float(err_g)), float(log_g), what=f"IS vs grid d={d}")
    _check_close(log_a, math.hypot(float(se_a), float(err_g)), float(log_g), what=f"AIS vs grid d={d}")
    if d == 1:
        # ULA transitions do not leave π_β invariant: AIS is biased at a step size MALA handles
        # (acceptance-probability gauge ≈ 0.86), and the bias fades as the step shrinks
        ula = dict(**ais_opts(d, kernel="ula"))
        del ula["method"]
        big, se_big = lk.ais_log_z(mixture_energy, params, jax.random.PRNGKey(7), (d,), step_size=0.05,
                                   proposal_mean=data.mean(0), proposal_scale=1.5 * data.std(0), **ula)
        assert float(big) - float(log_g) < -5 * float(se_big), (float(big) - float(log_g), float(se_big))
        small, se_small = lk.ais_log_z(mixture_energy, params, jax.random.PRNGKey(7), (d,), step_size=0.002,
                                       proposal_mean=data.mean(0), proposal_scale=1.5 * data.std(0), **ula)
        _check_close(small, se_small, float(log_g), what="ULA-AIS (small step) vs grid d=1")


def test_grid_quadrature_error_estimate_shrinks():
    params, truth, _ = gaussian_case(2)
    errs = []
    for n in (16, 32, 64):
        log_z, est = dj.estimate_log_z(gaussian_energy, params, None, (2,), method="grid", bounds=(-9.0, 9.0), n=n)
        errs.append((abs(float(log_z) - truth), float(est)))
    # the halving estimate bounds the true error and falls with n
    assert all(true_err <= est + 1e-5 for true_err, est in errs), errs
    assert errs[-1][1] < errs[0][1], errs


# ---------------------------------------------------------------------------------------
# the DDE proposal bug
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [5, 10])
def test_dde_mean_over_dimensions_bug_is_biased(d):
    """DDE's IS: proposal N(0, (1 + σ²) I), its log density averaged over dimensions.

    For a normalised Gaussian target p = N(m, Σ) and q = N(0, s² I) the buggy estimator
    converges to log Z + log E_p[q(x)^a], a = (d − 1)/d, which is in closed form:
    bias = −a d/2 log 2πs² − ½ log det(I + aΣ/s²) − a mᵀ(s² I + aΣ)⁻¹ m / 2."""
    params, truth, _ = gaussian_case(d)
    sigma = 0.5
    s2 = 1.0 + sigma**2
    opts = dict(proposal_mean=0.0, proposal_scale=math.sqrt(s2), n_samples=100_000, n_batches=10, chunk_size=10_000)
    key = jax.random.PRNGKey(8)
    ours, se = lk.is_log_z(gaussian_energy, params, key, (d,), **opts)
    buggy, se_b = lk.is_log_z(
        gaussian_energy, params, key, (d,), proposal_log_density=lk.dde_buggy_proposal_log_density, **opts
    )
    _check_close(ours, se, truth, what=f"correct IS d={d}")
    bias = float(buggy) - truth
    assert bias < -20 * max(float(se), float(se_b)), (bias, float(se), float(se_b))

    a = (d - 1) / d
    cov = np.linalg.inv(params["A"].astype(np.float64))
    m = params["m"].astype(np.float64)
    predicted = (
        -0.5 * a * d * math.log(2 * math.pi * s2)
        - 0.5 * np.linalg.slogdet(np.eye(d) + a * cov / s2)[1]
        - 0.5 * a * m @ np.linalg.solve(s2 * np.eye(d) + a * cov, m)
    )
    assert abs(bias - predicted) < 3 * float(se_b) + 0.02, (bias, predicted, float(se_b))


def test_buggy_density_is_the_mean_of_the_correct_terms():
    x = jax.random.normal(jax.random.PRNGKey(9), (4, 3, 2))
    mean, scale = jnp.full((3, 2), 0.3), jnp.full((3, 2), 1.7)
    good = lk.gaussian_proposal_log_density(x, mean, scale)
    bad = lk.dde_buggy_proposal_log_density(x, mean, scale)
    ref = jax.scipy.stats.norm.logpdf(x, mean, scale).reshape(4, -1)
    chex.assert_trees_all_close(good, ref.sum(1), rtol=1e-5)
    chex.assert_trees_all_close(bad, ref.mean(1), rtol=1e-5)


# ---------------------------------------------------------------------------------------
# memory, jit
# ---------------------------------------------------------------------------------------
def test_a_million_is_samples_in_fixed_memory():
    params, truth, data = gaussian_case(2)
    n, chunk = 10**6, 4096
    log_z, se = dj.estimate_log_z(gaussian_energy, params, jax.random.PRNGKey(10), (2,), method="is",
                                  data=data, n_samples=n, n_batches=10, chunk_size=chunk)
    _check_close(log_z, se, truth, what="IS 1e6")
    assert float(se) < 0.002
    # the compiled program's scratch memory is that of a chunk, the same for 10⁵ and 10⁶ samples
    temp = []
    for n_total in (10**5, n):
        estimate = lk.make_is_log_z(gaussian_energy, (2,), n_samples=n_total, n_batches=10, chunk_size=chunk)
        mem = estimate.lower(params, jax.random.PRNGKey(0), jnp.zeros(2), jnp.ones(2)).compile().memory_analysis()
        temp.append(getattr(mem, "temp_size_in_bytes", None) if mem is not None else None)
    if None not in temp:  # memory_analysis is backend-dependent
        assert temp[1] <= 1.1 * temp[0] and temp[1] < 64 * chunk * 2 * 4, temp


def test_estimate_log_z_under_jit():
    params, truth, _ = gaussian_case(2)

    @jax.jit
    def f(p, key):
        return dj.estimate_log_z(gaussian_energy, p, key, (2,), method="is", proposal_scale=2.0,
                                 n_samples=20_000, n_batches=10, chunk_size=5_000)

    log_z, se = f(params, jax.random.PRNGKey(11))
    _check_close(log_z, se, truth, what="IS under jit")


# ---------------------------------------------------------------------------------------
# likelihoods
# ---------------------------------------------------------------------------------------
def test_log_likelihood_and_evaluation():
    d = 10
    params, log_z, data = gaussian_case(d, n_data=4000)
    ll = dj.log_likelihood(gaussian_energy, params, data[:5], log_z)
    chex.assert_shape(ll, (5,))
    cov = np.linalg.inv(params["A"].astype(np.float64))
    ref = jax.scipy.stats.multivariate_normal.logpdf(data[:5].astype(np.float64), params["m"], cov)
    chex.assert_trees_all_close(np.asarray(ll, np.float64), np.asarray(ref), atol=1e-3)

    out = dj.evaluate_log_likelihood(gaussian_energy, params, data, log_z, 0.03, chunk_size=1000)
    assert all(isinstance(out[k], float) for k in ("log_likelihood", "log_likelihood_stderr", "bits_per_dim"))
    neg_entropy = -0.5 * d * (1 + math.log(2 * math.pi)) - 0.5 * np.linalg.slogdet(cov)[1]
    assert abs(out["log_likelihood"] - neg_entropy) < 3 * out["log_likelihood_stderr_data"] + 1e-3
    assert out["log_likelihood_stderr"] > out["log_likelihood_stderr_data"]
    assert math.isclose(out["log_likelihood_stderr"], math.hypot(out["log_likelihood_stderr_data"], 0.03))
    assert math.isclose(out["bits_per_dim"], -out["log_likelihood"] / (d * math.log(2)))
    assert out["n"] == 4000 and out["dim"] == d


# ---------------------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------------------
def test_bad_inputs():
    params, _, data = gaussian_case(3)
    key = jax.random.PRNGKey(0)
    E = gaussian_energy
    with pytest.raises(ValueError, match="Unknown `method`"):
        dj.estimate_log_z(E, params, key, (3,), method="nested")
    with pytest.raises(ValueError, match="Unknown option"):
        dj.estimate_log_z(E, params, key, (3,), method="is", n_temps=10)
    with pytest.raises(ValueError, match="event_shape"):
        dj.estimate_log_z(E, params, key, (2,), method="is")  # A is 3×3
    with pytest.raises(ValueError, match="event_shape"):
        dj.estimate_log_z(E, params, key, (), method="is")
    for bad, error in ((0, ValueError), (-5, ValueError), (2.5, TypeError)):  # a wrong type is a TypeError
        with pytest.raises(error, match="n_samples"):
            dj.estimate_log_z(E, params, key, (3,), method="is", n_samples=bad)
    with pytest.raises(ValueError, match="multiple of `n_batches`"):
        dj.estimate_log_z(E, params, key, (3,), method="is", n_samples=1001)
    with pytest.raises(ValueError, match="n_batches"):
        dj.estimate_log_z(E, params, key, (3,), method="is", n_batches=1)
    with pytest.raises(ValueError, match="grid"):
        dj.estimate_log_z(E, params, key, (3,), method="grid", bounds=(-5, 5))
    with pytest.raises(ValueError, match="bounds"):
        dj.estimate_log_z(E, params, key, (1,), method="grid", bounds=(5, -5))
    with pytest.raises(ValueError, match="kernel"):
        dj.estimate_log_z(E, params, key, (3,), method="ais", kernel="hmc")
    with pytest.raises(ValueError, match="betas"):
        dj.estimate_log_z(E, params, key, (3,), method="ais", betas=np.linspace(0.1, 1.0, 10))
    with pytest.raises(ValueError, match="betas"):
        dj.estimate_log_z(E, params, key, (3,), method="ais", betas=np.array([0.0, 0.7, 0.5, 1.0]))
    with pytest.raises(ValueError, match="chains_per_chunk"):
        dj.estimate_log_z(E, params, key, (3,), method="ais", n_chains=1000, chains_per_chunk=300)
    with pytest.raises(ValueError, match="step_size"):
        dj.estimate_log_z(E, params, key, (3,), method="ais", n_temps=10, step_size=np.ones(7))
    with pytest.raises(ValueError, match="step_size"):
        dj.estimate_log_z(E, params, key, (3,), method="ais", step_size=-0.1)
    with pytest.raises(ValueError, match="target_accept"):
        dj.estimate_log_z(E, params, key, (3,), method="ais", target_accept=1.5)
    with pytest.raises(ValueError, match="proposal_scale"):
        dj.estimate_log_z(E, params, key, (3,), method="is", proposal_scale=0.0)
    with pytest.raises(ValueError, match="proposal_mean"):
        dj.estimate_log_z(E, params, key, (3,), method="is", proposal_mean=np.zeros(4))
    with pytest.raises(ValueError, match="`data`"):
        dj.estimate_log_z(E, params, key, (3,), method="is", data=data[:, :2])
    with pytest.raises(TypeError, match="`key` must be one PRNG key"):
        dj.estimate_log_z(E, params, np.zeros(3), (3,), method="is")
    with pytest.raises(ValueError, match="shape"):
        dj.log_likelihood(E, params, np.zeros(3), 0.0)
    with pytest.raises(ValueError, match="at least 2"):
        dj.evaluate_log_likelihood(E, params, data[:1], 0.0)
    with pytest.raises(ValueError, match="log_z"):
        dj.evaluate_log_likelihood(E, params, data, float("nan"))


# ---------------------------------------------------------------------------------------
# compiled once: no static-closure jit, no module-level cache (issue 16)
# ---------------------------------------------------------------------------------------
def _module_jit_cache_sizes():
    """Sizes of every jitted function held at module level in dsm_jax.likelihood*."""
    import sys

    return {
        f"{name}.{attr}": obj._cache_size()
        for name, mod in list(sys.modules.items())
        if name == "dsm_jax.likelihood" or name.startswith("dsm_jax.likelihood.")
        for attr, obj in vars(mod).items()
        if hasattr(obj, "_cache_size")
    }


def _counted_closure(traces):
    """A new closure on every call, all computing the same energy; counts its traces."""
    def energy(p, x):
        traces.append(1)
        return gaussian_energy(p, x)

    return energy


SMALL_IS = dict(n_samples=2000, n_batches=10, chunk_size=500)
SMALL_AIS = dict(n_temps=5, n_chains=8, chains_per_chunk=8, pilot_chains=4)


def test_new_closures_grow_no_module_cache():
    """Regression: energy_fn was a static jit argument of module-level functions, so every new
    closure compiled again and stayed in their caches (measured 1 → 4 entries)."""
    params, _, _ = gaussian_case(2)
    key = jax.random.PRNGKey(0)
    traces = []
    lk.is_log_z(_counted_closure(traces), params, key, (2,), proposal_scale=2.0, **SMALL_IS)
    lk.ais_log_z(_counted_closure(traces), params, key, (2,), **SMALL_AIS)
    before = _module_jit_cache_sizes()
    for _ in range(2):
        lk.is_log_z(_counted_closure(traces), params, key, (2,), proposal_scale=2.0, **SMALL_IS)
        lk.ais_log_z(_counted_closure(traces), params, key, (2,), **SMALL_AIS)
    assert _module_jit_cache_sizes() == before, (before, _module_jit_cache_sizes())


@pytest.mark.parametrize("make, opts", [(lk.make_is_log_z, SMALL_IS), (lk.make_ais_log_z, SMALL_AIS)])
def test_estimator_compiles_once_for_new_params_keys_and_proposals(make, opts):
    params, _, _ = gaussian_case(2)
    traces = []
    estimate = make(_counted_closure(traces), (2,), **opts)
    mean, scale = jnp.zeros(2), jnp.full(2, 2.0)
    a = estimate(params, jax.random.PRNGKey(0), mean, scale)
    n_traces = len(traces)
    assert n_traces > 0
    shifted = {**params, "c": params["c"] + np.float32(1.0)}
    b = estimate(shifted, jax.random.PRNGKey(0), mean, scale)
    estimate(shifted, jax.random.PRNGKey(1), mean + 0.1, scale * 1.1)
    assert len(traces) == n_traces and estimate._cache_size() == 1
    chex.assert_trees_all_close(float(b[0]) - float(a[0]), -1.0, atol=1e-4)  # params are really used


def test_a_fresh_closure_inside_the_callers_jit_compiles_once():
    params, truth, _ = gaussian_case(2)
    traces = []

    @jax.jit
    def f(p, key):
        return dj.estimate_log_z(_counted_closure(traces), p, key, (2,), method="ais", proposal_scale=2.0,
                                 **SMALL_AIS)

    f(params, jax.random.PRNGKey(0))
    n_traces = len(traces)
    f({**params, "c": params["c"] + np.float32(1.0)}, jax.random.PRNGKey(1))
    assert len(traces) == n_traces and f._cache_size() == 1


# ---------------------------------------------------------------------------------------
# return structure: f → (log_z, stderr), f_with_info → (log_z, stderr, info)
# ---------------------------------------------------------------------------------------
def test_with_info_twins_and_deprecated_return_info():
    params, _, _ = gaussian_case(2)
    key = jax.random.PRNGKey(0)
    calls = {
        "is": (lambda **kw: lk.is_log_z(gaussian_energy, params, key, (2,), **SMALL_IS, **kw),
               lambda: lk.is_log_z_with_info(gaussian_energy, params, key, (2,), **SMALL_IS)),
        "ais": (lambda **kw: lk.ais_log_z(gaussian_energy, params, key, (2,), **SMALL_AIS, **kw),
                lambda: lk.ais_log_z_with_info(gaussian_energy, params, key, (2,), **SMALL_AIS)),
        "grid": (lambda **kw: lk.grid_log_z(gaussian_energy, params, (2,), bounds=(-9, 9), n=16, **kw),
                 lambda: lk.grid_log_z_with_info(gaussian_energy, params, (2,), bounds=(-9, 9), n=16)),
        "estimate": (lambda **kw: dj.estimate_log_z(gaussian_energy, params, key, (2,), method="is", **SMALL_IS, **kw),
                     lambda: dj.estimate_log_z_with_info(gaussian_energy, params, key, (2,), method="is", **SMALL_IS)),
    }
    for name, (plain, with_info) in calls.items():
        pair, triple = plain(), with_info()
        assert len(pair) == 2 and len(triple) == 3 and isinstance(triple[2], dict), name
        chex.assert_trees_all_close(pair, triple[:2])
        with pytest.warns(DeprecationWarning, match="_with_info"):
            old = plain(return_info=True)
        assert len(old) == 3, name
        with pytest.warns(DeprecationWarning):
            assert len(plain(return_info=False)) == 2, name


def test_ais_transitions_are_the_samplers_preconditioned_kernel(monkeypatch):
    from dsm_jax import samplers

    built = []
    real = samplers.preconditioned_mala_kernel

    def spy(*args, **kwargs):
        built.append(kwargs.get("adjusted", True))
        return real(*args, **kwargs)

    monkeypatch.setattr(samplers, "preconditioned_mala_kernel", spy)
    params, _, _ = gaussian_case(2)
    for kernel in ("mala", "ula"):
        lk.ais_log_z(gaussian_energy, params, jax.random.PRNGKey(0), (2,), kernel=kernel, **SMALL_AIS)
    assert built == [True, False]


# ---------------------------------------------------------------------------------------
# the proposals the Fashion-MNIST script uses, now in the library
# ---------------------------------------------------------------------------------------
def test_whitened_full_covariance_proposal_gives_the_exact_log_z():
    """A correlated Gaussian in d = 6: IS in z from N(0, I) with x = μ + Lz, L from the data, plus
    log|det L|, recovers log Z (the fit is close to the target, so the weights are nearly flat)."""
    d = 6
    params, truth, data = gaussian_case(d, n_data=20_000)
    fit = lk.fit_gaussian(data, 0.0, "full", inflation=1.1)
    np.testing.assert_allclose(fit.chol @ fit.chol.T, 1.21 * np.cov(data.astype(np.float64), rowvar=False),
                               rtol=1e-9)
    log_z_z, se = lk.is_log_z(lk.whiten(gaussian_energy, (d,)), lk.whitened_params(params, fit),
                              jax.random.PRNGKey(0), (d,), **SMALL_IS)
    _check_close(float(log_z_z) + fit.log_det, float(se), truth, what="whitened IS")
    diag = lk.fit_gaussian(data, 0.5, "diag")
    np.testing.assert_allclose(np.diag(diag.chol), np.sqrt(data.astype(np.float64).var(0) + 0.25))
    x = data[:4]
    ref = jax.scipy.stats.multivariate_normal.logpdf(x.astype(np.float64), fit.mean, fit.chol @ fit.chol.T)
    np.testing.assert_allclose(np.asarray(fit.log_density(x)), ref, rtol=1e-4)


def test_pooled_repeats_and_the_markov_lower_bound():
    pooled = lk.pool_log_z([1.0, 1.2, 0.9], [0.1, 0.1, 0.1])
    assert math.isclose(pooled["value"], math.log(np.mean(np.exp([1.0, 1.2, 0.9]))))
    assert pooled["stderr"] == max(pooled["stderr_within_chains"], pooled["stderr_between_repeats"])
    assert math.isclose(lk.log_z_lower_bound([1.0, 1.2, 0.9]), 1.2 - math.log(3 / 0.05))
    assert math.isclose(lk.smoothed_entropy_ceiling(0.5, 10), -5 * math.log(2 * math.pi * math.e * 0.25))
    row = lk.bits_per_dim(-10.0, 0.5, 4)
    assert math.isclose(row["bits_per_dim"], 10 / (4 * math.log(2))) and row["bits_per_dim_256"] == row["bits_per_dim"] + 8


# ---------------------------------------------------------------------------------------
# bad inputs: refused before compute, the argument named (issue 16 sweep)
# ---------------------------------------------------------------------------------------
def test_non_finite_test_points_are_refused():
    """Regression: NaN/inf samples into evaluate_log_likelihood returned NaN silently."""
    params, log_z, data = gaussian_case(3, n_data=50)
    for bad in (np.nan, np.inf, -np.inf):
        x = data.copy()
        x[7, 1] = bad
        with pytest.raises(ValueError, match=r"`x_test` has 1 non-finite value.*rows \[7\]"):
            dj.evaluate_log_likelihood(gaussian_energy, params, x, log_z)
        with pytest.raises(ValueError, match="`x` has 1 non-finite"):
            dj.log_likelihood(gaussian_energy, params, x, log_z)
    with pytest.raises(ValueError, match="energy_fn is not finite"):
        dj.evaluate_log_likelihood(gaussian_energy, {**params, "c": np.float32(np.nan)}, data, log_z)


def test_bad_input_sweep():
    params, _, data = gaussian_case(3)
    key = jax.random.PRNGKey(0)
    E = gaussian_energy
    sweep = [
        ("n_chains", lambda: lk.make_ais_log_z(E, (3,), n_chains=0)),
        ("n_chains", lambda: lk.make_ais_log_z(E, (3,), n_chains=-4)),
        ("n_chains", lambda: lk.make_ais_log_z(E, (3,), n_chains=1, chains_per_chunk=1)),
        ("n_temps", lambda: lk.make_ais_log_z(E, (3,), n_temps=0)),
        ("n_mcmc", lambda: lk.make_ais_log_z(E, (3,), n_mcmc=0)),
        ("pilot_chains", lambda: lk.make_ais_log_z(E, (3,), pilot_chains=-1)),
        ("pilot_steps", lambda: lk.make_ais_log_z(E, (3,), pilot_steps=0)),
        ("step_size", lambda: lk.make_ais_log_z(E, (3,), step_size=0.0)),
        ("step_size", lambda: lk.make_ais_log_z(E, (3,), step_size=float("nan"))),
        ("adapt_step_size", lambda: lk.make_ais_log_z(E, (3,), adapt_step_size=1)),
        ("chunk_size", lambda: lk.make_is_log_z(E, (3,), chunk_size=0)),
        ("n_batches", lambda: lk.make_is_log_z(E, (3,), n_batches=0)),
        ("event_shape", lambda: lk.make_is_log_z(E, (0,))),
        ("event_shape", lambda: lk.make_is_log_z(E, (2.5,))),
        ("event_shape", lambda: lk.make_ais_log_z(E, "ab")),
        ("energy_fn", lambda: lk.make_is_log_z("not a function", (3,))),
        ("proposal_scale", lambda: dj.estimate_log_z(E, params, key, (3,), method="is", proposal_scale=-1.0)),
        ("proposal_scale", lambda: dj.estimate_log_z(E, params, key, (3,), method="ais", proposal_scale=np.nan)),
        ("proposal_mean", lambda: dj.estimate_log_z(E, params, key, (3,), method="is", proposal_mean=np.nan)),
        ("`data`", lambda: dj.estimate_log_z(E, params, key, (3,), method="is", data=np.full((5, 3), np.nan))),
        ("`data`", lambda: dj.estimate_log_z(E, params, key, (3,), method="ais", data=data[:1])),
        ("scale_inflation", lambda: dj.estimate_log_z(E, params, key, (3,), data=data, scale_inflation=0.0)),
        ("event_shape", lambda: lk.make_ais_log_z(E, (4,), **SMALL_AIS)(params, key)),
        ("n_temps", lambda: lk.sigmoid_schedule(0)),
        ("delta", lambda: lk.sigmoid_schedule(10, delta=0.0)),
        ("`n`", lambda: dj.grid_log_z(E, params, (1,), bounds=(-1, 1), n=2)),
        ("chunk_size", lambda: dj.grid_log_z(E, params, (1,), bounds=(-1, 1), chunk_size=0)),
        ("bounds", lambda: dj.grid_log_z(E, params, (1,), bounds=(0.0, float("nan")))),
        ("`x` has an empty batch", lambda: dj.log_likelihood(E, params, np.zeros((0, 3), np.float32), 0.0)),
        ("`x_test` has an empty batch", lambda: dj.evaluate_log_likelihood(E, params, np.zeros((0, 3), np.float32), 0.0)),
        ("at least 2", lambda: dj.evaluate_log_likelihood(E, params, np.zeros((1, 3), np.float32), 0.0)),
        ("chunk_size", lambda: dj.evaluate_log_likelihood(E, params, data, 0.0, chunk_size=0)),
        ("log_z_stderr", lambda: dj.evaluate_log_likelihood(E, params, data, 0.0, -1.0)),
        ("kind", lambda: lk.fit_gaussian(data, 0.5, "cholesky")),
        ("sigma", lambda: lk.fit_gaussian(data, -0.5)),
        ("`x` needs at least 2", lambda: lk.fit_gaussian(data[:1])),
        ("`x` has", lambda: lk.fit_gaussian(np.full((4, 3), np.inf))),
        ("log_zs", lambda: lk.pool_log_z([1.0], [0.1])),
        ("confidence", lambda: lk.log_z_lower_bound([1.0, 2.0], 1.0)),
        ("sigma", lambda: lk.smoothed_entropy_ceiling(0.0, 3)),
    ]
    for match, call in sweep:
        with pytest.raises(ValueError, match=match):
            call()
    for match, call in [  # a wrong dtype is a TypeError
        ("`x` must be a floating-point", lambda: dj.log_likelihood(E, params, np.zeros((4, 3), np.int32), 0.0)),
        ("`x_test` must be a floating-point",
         lambda: dj.evaluate_log_likelihood(E, params, np.zeros((4, 3), np.int64), 0.0)),
    ]:
        with pytest.raises(TypeError, match=match):
            call()
    with pytest.raises(TypeError, match="`key` must be one PRNG key"):  # a float array is not a key
        lk.make_is_log_z(E, (3,), **SMALL_IS)(params, jnp.zeros(5))
