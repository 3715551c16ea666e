"""Shared closed-form energies and helpers for the tests.

Everything here follows the project convention: ``energy_fn(params, x) -> (batch,)`` with
``p(x) ∝ exp(-E(x))``. The reference answers (scores, posterior means) are written out by
hand in numpy (float64), never by differentiating the energies, so they are independent of
the code under test; the KL reference is a closed-form KL between Gaussians (jnp, so that
its gradient can be taken).

Import the helpers with ``from conftest import ...`` (pytest puts ``tests/`` on sys.path).

The experiments' end-to-end runs are shared: :func:`smoke_classifier_dir` (one FD classifier
for every image experiment's smoke run), the image experiments' smoke runs themselves
(:func:`fashion_smoke_run`, :func:`dde_smoke_run`: session fixtures, also restored by notebooks
02/03) and :func:`run_main` (a script's ``main`` with its printed output captured), so one run
serves many assertions.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time

# One XLA compilation cache per test run, shared by the xdist workers and every subprocess
# they start (notebooks, benchmarks, 8-device and resume workers inherit the environment):
# many tests compile the same tiny networks, and a hit skips XLA, not tracing, so the
# trace/recompile counters the tests check are unaffected. Cold at the start of each run, so
# the measured suite time is a fresh run's. The controller sets it before it starts the
# workers (initial conftests load first), so it is keyed by the controller's pid.
_CACHE_PREFIX = "dsm_jax_tests_xla_"
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ  # a cache the user named is never removed
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"{_CACHE_PREFIX}{os.getpid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")  # subset: 0.5 s 145 s, 0.1 s 119 s, 0 s 121 s
# The tests' programs are tiny and run for milliseconds, so XLA:CPU's LLVM optimisation passes
# are most of the suite's CPU time: at level 0 a tiny conv net's compiles cost half (CPU s, one
# test alone: benchmark tiny run 71 -> 25, DDE conv arch 59 -> 29) while a 1,500-step toy run
# executes 27 -> 33. Dots and convolutions still go to Eigen/YNNPACK; only the generated loops
# are unoptimised. Read when XLA first compiles (after this), inherited by every subprocess.
# A level the user names (e.g. XLA_FLAGS=--xla_backend_optimization_level=3) is kept, and a
# machine with a GPU/TPU plugin (the accelerator check's tests part) compiles as its users do.

# One OpenBLAS thread (numpy's eigh/cov in the FD and Gaussian-baseline code): with the two
# xdist workers on 2 cores a second BLAS thread only spins; fd_report's test alone on a busy
# machine 18 -> 7 CPU s (wall too). Read when numpy loads, which is after this (jax below).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _cpu_only() -> bool:
    """JAX_PLATFORMS=cpu, or no GPU/TPU plugin installed: XLA:CPU compiles everything."""
    if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
        return True
    import importlib.metadata
    import re
    return not any(re.match(r"jax[-_](cuda\d*|rocm\d*)[-_](plugin|pjrt)|libtpu", (d.metadata["Name"] or "").lower())
                   for d in importlib.metadata.distributions())


if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "") and _cpu_only():
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()


def _run_ended(path: str) -> bool:
    """A cache whose run is over: its controller's pid is gone (or, unkeyed, a day old)."""
    suffix = os.path.basename(path)[len(_CACHE_PREFIX):]
    if not suffix.isdigit():
        return time.time() - os.path.getmtime(path) > 86400
    try:
        os.kill(int(suffix), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def pytest_sessionfinish(session, exitstatus):
    """The controller (or a run without xdist) removes its own cache and those of runs that
    ended, never one that another live test run (a second checkout, a CI job) still uses:
    removing it made that run's every later compilation miss."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    import glob
    import shutil
    own = os.environ["JAX_COMPILATION_CACHE_DIR"] if _OWN_CACHE else None
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{_CACHE_PREFIX}*")):
        if path == own or _run_ended(path):
            shutil.rmtree(path, ignore_errors=True)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])  # jax may be imported already
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))

try:  # jax >= 0.5
    from jax.extend.core import jaxprs_in_params as _jaxprs_in_params
except ImportError:  # pragma: no cover
    _jaxprs_in_params = jax.core.jaxprs_in_params


def flat(x):
    """(batch, *event) -> (batch, d)."""
    return x.reshape(x.shape[0], -1)


# ---------------------------------------------------------------------------------------
# Quadratic energy E(x) = ½ (x − m)ᵀ A (x − m) on the flattened event.
# ---------------------------------------------------------------------------------------
def quadratic_energy(params, x):
    """params = {"A": (d, d) symmetric, "m": (d,)}; score = −A(x − m)."""
    r = flat(x) - params["m"]
    return 0.5 * jnp.einsum("bi,ij,bj->b", r, params["A"], r)


def quadratic_score(params, x):
    """Reference (numpy): −A(x − m), reshaped like x."""
    x = np.asarray(x)
    r = x.reshape(x.shape[0], -1) - np.asarray(params["m"])
    return (-(r @ np.asarray(params["A"]).T)).reshape(x.shape)


def random_spd(rng, d, eig_min=0.5, eig_max=2.0):
    """A symmetric positive definite (d, d) float32 matrix, eigenvalues in [eig_min, eig_max]."""
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    eig = rng.uniform(eig_min, eig_max, size=d)
    return ((q * eig) @ q.T).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Diagonal quadratic family E_θ(x) = ½ Σ (x − b)² / v, the DSM test family.
# ---------------------------------------------------------------------------------------
def diag_quadratic_energy(params, x):
    """params = {"b": (d,), "log_prec": (d,)}: E = ½ Σ exp(log_prec)·(x − b)²."""
    r = flat(x) - params["b"]
    return 0.5 * jnp.sum(jnp.exp(params["log_prec"]) * r * r, axis=1)


# ---------------------------------------------------------------------------------------
# Isotropic Gaussian mixture  p(x) = Σ_k w_k N(x; μ_k, s_k² I).
# ---------------------------------------------------------------------------------------
def gmm_log_components(params, x):
    """(batch, K) terms log w_k + log N(x; μ_k, s_k² I) (jnp: traced inside energies)."""
    xf = flat(x)
    d = xf.shape[1]
    var = params["std"] ** 2  # (K,)
    sq = jnp.sum((xf[:, None, :] - params["means"][None]) ** 2, axis=-1)  # (batch, K)
    return (
        jnp.log(params["weights"])[None]
        - 0.5 * sq / var[None]
        - 0.5 * d * jnp.log(2 * jnp.pi * var)[None]
    )


def gmm_energy(params, x):
    """E = −log Σ_k w_k N(x; μ_k, s_k² I) (a normalised density)."""
    return -jax.scipy.special.logsumexp(gmm_log_components(params, x), axis=1)


def _np_responsibilities(params, xf):
    """Reference (numpy, float64) responsibilities r_k(x) of the mixture."""
    w, mu = np.asarray(params["weights"], np.float64), np.asarray(params["means"], np.float64)
    var = np.asarray(params["std"], np.float64) ** 2
    d = xf.shape[1]
    sq = np.sum((xf[:, None, :] - mu[None]) ** 2, axis=-1)
    logp = np.log(w)[None] - 0.5 * sq / var[None] - 0.5 * d * np.log(2 * np.pi * var)[None]
    logp -= logp.max(axis=1, keepdims=True)
    r = np.exp(logp)
    return r / r.sum(axis=1, keepdims=True)


def gmm_score(params, x):
    """Reference (numpy): the analytic mixture score Σ_k r_k(x) (μ_k − x)/s_k²."""
    x = np.asarray(x, np.float64)
    xf = x.reshape(x.shape[0], -1)
    r = _np_responsibilities(params, xf)
    mu, var = np.asarray(params["means"], np.float64), np.asarray(params["std"], np.float64) ** 2
    comp = (mu[None] - xf[:, None, :]) / var[None, :, None]
    return np.sum(r[..., None] * comp, axis=1).reshape(x.shape)


def gmm_smoothed(params, sigma):
    """The mixture convolved with N(0, σ²I): component std sqrt(s_k² + σ²)."""
    return {**params, "std": np.sqrt(np.asarray(params["std"]) ** 2 + sigma**2).astype(np.float32)}


def gmm_posterior_mean(params, sigma, y):
    """Reference (numpy): E[x | x + σε = y] for x ~ the mixture, i.e. the responsibilities
    under p̂ times the component posterior means μ_k + s_k²/(s_k² + σ²)(y − μ_k)."""
    y = np.asarray(y, np.float64)
    yf = y.reshape(y.shape[0], -1)
    r = _np_responsibilities(gmm_smoothed(params, sigma), yf)
    mu, var = np.asarray(params["means"], np.float64), np.asarray(params["std"], np.float64) ** 2
    shrink = (var / (var + sigma**2))[None, :, None]
    comp = mu[None] + shrink * (yf[:, None, :] - mu[None])
    return np.sum(r[..., None] * comp, axis=1).reshape(y.shape)


def make_gmm(rng, k, d):
    """Random isotropic mixture (numpy float32 leaves)."""
    weights = rng.uniform(0.5, 1.5, size=k)
    return {
        "weights": (weights / weights.sum()).astype(np.float32),
        "means": (2.0 * rng.normal(size=(k, d))).astype(np.float32),
        "std": rng.uniform(0.4, 1.0, size=k).astype(np.float32),
    }


# ---------------------------------------------------------------------------------------
# Isotropic Gaussian energy with mean and variance as parameters (DDE / KL tests).
# ---------------------------------------------------------------------------------------
def gaussian_energy(params, x):
    """E = −log N(x; mean, var·I), params = {"mean": (d,), "var": ()}."""
    xf = flat(x)
    d = xf.shape[1]
    sq = jnp.sum((xf - params["mean"]) ** 2, axis=1)
    return 0.5 * sq / params["var"] + 0.5 * d * jnp.log(2 * jnp.pi * params["var"])


def kl_isotropic(mu1, var1, mu2, var2):
    """KL(N(mu1, var1 I) ‖ N(mu2, var2 I)) (jnp, differentiable)."""
    d = mu1.shape[-1]
    return 0.5 * (d * var1 / var2 + jnp.sum((mu2 - mu1) ** 2) / var2 - d + d * jnp.log(var2 / var1))


def linear_generator(params, z):
    """G(z) = a·z + b with a scalar a and a vector b."""
    return params["a"] * z + params["b"]


def zero_energy(params, x):
    return jnp.zeros((x.shape[0],), x.dtype)


# ---------------------------------------------------------------------------------------
# Small numerical helpers.
# ---------------------------------------------------------------------------------------
def count_primitive(jaxpr, name: str) -> int:
    """Occurrences of primitive ``name`` in a (closed) jaxpr, sub-jaxprs included."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    n = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == name:
            n += 1
        for sub in _jaxprs_in_params(eqn.params):
            n += count_primitive(sub, name)
    return n


def count_eqns(jaxpr) -> int:
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    n = len(jaxpr.eqns)
    for eqn in jaxpr.eqns:
        for sub in _jaxprs_in_params(eqn.params):
            n += count_eqns(sub)
    return n


def assert_within(actual, expected, tol, what=""):
    """Element-wise |actual − expected| <= tol (tol may be an array)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    err = np.abs(actual - expected)
    assert np.all(err <= tol), f"{what}: actual {actual}, expected {expected}, |err| {err} > tol {tol}"


def tree_equal(a, b) -> bool:
    """Bit-for-bit equality of two pytrees of arrays."""
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    return ta == tb and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.fixture(scope="session")
def tiny_resnet():
    """A small ResNetEnergy and its params, ``(energy_fn, params)``: initialised once per worker
    for test_nets.py and test_images.py (a module fixture was initialised once per module)."""
    import dsm_jax as dj
    module = dj.ResNetEnergy(width=4, n_stages=2, blocks_per_stage=2)
    params = dj.init_params(module, jax.random.key(0), (16, 16, 1))
    return dj.energy_fn_of(module), params


# ---------------------------------------------------------------------------------------
# Shared end-to-end runs of the experiments.
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def smoke_classifier_dir(tmp_path_factory, worker_id):
    """One cache directory for the FD classifier of every smoke run, trained once per test run.

    Under xdist the directory is shared by the workers (the run's common base directory), and
    the classifier is trained there under a file lock before a smoke run starts: the two image
    smoke runs (groups FASHION_RUN_GROUP and DDE_RUN_GROUP) land on different workers, and
    without the lock both would train the same classifier, or one would read the other's
    half-written checkpoint."""
    if worker_id == "master":  # no xdist: this session's own directory
        return str(tmp_path_factory.mktemp("classifier"))
    import fcntl

    root = tmp_path_factory.getbasetemp().parent / "shared_classifier"
    root.mkdir(exist_ok=True)
    with open(root.parent / "shared_classifier.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the second worker waits here, then finds it cached
        try:
            if not (root / ".trained").exists():  # the second worker skips even loading it here
                _train_smoke_classifier(str(root))
                (root / ".trained").touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return str(root)


def _train_smoke_classifier(classifier_dir: str) -> None:
    """The classifier the image smoke presets score with, cached in ``classifier_dir`` (a cache
    hit when it is there already): the same call the experiments make (experiments.common.images)."""
    import dataclasses

    from experiments import common, fashion_mnist, fashion_mnist_dde
    from dsm_jax import config as cfgs
    settings = set()
    for module, base in ((fashion_mnist, fashion_mnist.FashionConfig),
                         (fashion_mnist_dde, fashion_mnist_dde.DDEFashionConfig)):
        cfg = dataclasses.replace(base(), **module.PRESETS["smoke"])
        cfg = cfgs.replace(cfg, {"data.classifier_dir": classifier_dir})
        settings.add((cfg.data, cfg.seed))
    for d, seed in settings:  # both presets share one setting today; a preset that differs gets its own
        common.images(d, seed, progress=False)


def run_main(main, argv):
    """``(result, stdout)`` of an experiment's ``main(argv)``."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = main(argv)
    return result, buffer.getvalue()


def image_smoke_run(main, out, classifier_dir, sets=()):
    """An image experiment's smoke run into ``out`` scored with the shared classifier (plus
    ``--set`` of each of ``sets``): ``(out, argv, metrics, printed)``."""
    argv = ["--preset", "smoke", "--out", str(out), "--no-progress", "--set", f"data.classifier_dir={classifier_dir}"]
    argv += [a for s in sets for a in ("--set", s)]
    metrics, printed = run_main(main, argv)
    return out, argv, metrics, printed


# The image experiments' smoke runs, once per test session: their own tests read them, and
# notebooks 02/03 restore them instead of training again. Every test that uses one is in that
# run's xdist group (pyproject sets --dist loadgroup), so one worker makes each run, once; the
# two groups are separate so that the two runs (the suite's largest chunks) can land on
# different workers, and they share the classifier through smoke_classifier_dir.
FASHION_RUN_GROUP = pytest.mark.xdist_group("fashion_smoke")
DDE_RUN_GROUP = pytest.mark.xdist_group("dde_smoke")


FASHION_SMOKE_MONITOR = "train.monitor_every_seconds=0"


@pytest.fixture(scope="session")
def fashion_smoke_run(tmp_path_factory, smoke_classifier_dir):
    """experiments.fashion_mnist at its smoke preset with the FD monitor at every chunk end
    (the fashion_mnist_study tests read it as a finished row): ``(out, argv, metrics, printed)``."""
    from experiments import fashion_mnist
    return image_smoke_run(fashion_mnist.main, tmp_path_factory.mktemp("fm"), smoke_classifier_dir,
                           sets=(FASHION_SMOKE_MONITOR,))


@pytest.fixture(scope="session")
def dde_smoke_run(tmp_path_factory, smoke_classifier_dir):
    """experiments.fashion_mnist_dde at its smoke preset: ``(out, argv, metrics, printed)``."""
    from experiments import fashion_mnist_dde
    return image_smoke_run(fashion_mnist_dde.main, tmp_path_factory.mktemp("dde"), smoke_classifier_dir)
