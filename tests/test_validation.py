"""The bad-input sweep over core, toy, metrics, coverage, inpainting, xla and plotting.

Each case is (argument, bad value, call, expected error and message substring): the error
must name the argument (in backticks) and be raised before any compute starts, at
factory-build time for configuration and at trace time for shapes and dtypes.
"""
from __future__ import annotations

import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dsm_jax as dj
from conftest import gaussian_energy, linear_generator, quadratic_energy
from dsm_jax import coverage, inpainting, metrics, plotting, validation
from dsm_jax import toy as toys

P2 = {"A": np.eye(2, dtype=np.float32), "m": np.zeros(2, np.float32)}
KEY = jax.random.PRNGKey(0)
X = np.ones((4, 2), np.float32)
X_INT = np.ones((4, 2), np.int32)
X_EMPTY = np.zeros((0, 2), np.float32)
GEN = {"a": np.float32(1.0), "b": np.zeros(2, np.float32)}
GAUSS = {"mean": np.zeros(2, np.float32), "var": np.float32(1.0)}
RINGS = toys.get_toy("rings")
GRID = metrics.make_grid((-1.0, 1.0), 8)
LOG_P = lambda z: RINGS.log_density(z, 0.2)  # noqa: E731
NAN_PTS = np.array([[0.0, 1.0], [np.nan, 0.0], [np.inf, 1.0]], np.float32)
IMGS = np.full((2, 4, 4, 1), 0.5, np.float32)
HALF = np.concatenate([np.ones((2, 2, 4, 1)), np.zeros((2, 2, 4, 1))], 1).astype(np.float32)


def _kl(gen_z):
    return dj.kl_generator_loss(linear_generator, gaussian_energy, 0.5)(GEN, GAUSS, GAUSS, KEY, gen_z)


def _inpaint(mask):
    return dj.inpainter(quadratic_energy, 0.1, np.ones(3, np.float32))(P2, KEY, X, mask)


# (id, call, error type, substring of the message)
CASES = [
    # --- core: integer x (a raw JAX error on main), empty batch (ZeroDivisionError on main)
    ("score/x/int", lambda: dj.score(quadratic_energy)(P2, X_INT), TypeError, "`x` must be a floating-point"),
    ("denoiser/x/int", lambda: dj.denoiser(quadratic_energy, 0.1)(P2, X_INT), TypeError, "`x` must be a floating-point"),
    ("dsm_loss/x/int", lambda: dj.dsm_loss(quadratic_energy, 0.1)(P2, KEY, X_INT), TypeError, "`x` must be a floating-point"),
    ("mdsm_loss/x/int", lambda: dj.mdsm_loss(quadratic_energy, 0.1, 1.0)(P2, KEY, X_INT), TypeError,
     "`x` must be a floating-point"),
    ("kl_generator_loss/z/int", lambda: _kl(X_INT), TypeError, "`z` must be a floating-point"),
    ("energy_and_grad/x/int", lambda: dj.energy_and_grad(quadratic_energy, P2, X_INT), TypeError,
     "`x` must be a floating-point"),
    ("score/x/list", lambda: dj.score(quadratic_energy)(P2, [[1.0, 2.0]]), TypeError, "`x` must be a floating-point"),
    ("score/x/empty", lambda: dj.score(quadratic_energy)(P2, X_EMPTY), ValueError, "`x` has an empty batch"),
    ("denoiser/x/empty", lambda: dj.denoiser(quadratic_energy, 0.1)(P2, X_EMPTY), ValueError, "`x` has an empty batch"),
    ("dsm_loss/x/empty", lambda: dj.dsm_loss(quadratic_energy, 0.1)(P2, KEY, X_EMPTY), ValueError,
     "`x` has an empty batch"),
    ("mdsm_loss/x/empty", lambda: dj.mdsm_loss(quadratic_energy, 0.1, 1.0)(P2, KEY, X_EMPTY), ValueError,
     "`x` has an empty batch"),
    ("kl_generator_loss/z/empty", lambda: _kl(X_EMPTY), ValueError, "`z` has an empty batch"),
    ("score/x/per_example_scalar", lambda: dj.score(quadratic_energy, per_example=True)(P2, np.float32(1.0)),
     ValueError, "`x` must be one example"),
    ("score/energy_fn/int", lambda: dj.score(3), TypeError, "`energy_fn` must be a function"),
    ("denoiser/energy_fn/None", lambda: dj.denoiser(None, 0.1), TypeError, "`energy_fn` must be a function"),
    ("kl_generator_loss/generator_fn/str", lambda: dj.kl_generator_loss("G", gaussian_energy, 0.1), TypeError,
     "`generator_fn` must be a function"),
    ("kl_generator_loss/q_energy_fn/dict", lambda: dj.kl_generator_loss(linear_generator, gaussian_energy, 0.1,
                                                                        q_energy_fn={}), TypeError,
     "`q_energy_fn` must be a function"),
    ("denoiser/sigma/str", lambda: dj.denoiser(quadratic_energy, "0.1"), TypeError, "`sigma` must be a number"),
    ("dsm_loss/sigma/bool", lambda: dj.dsm_loss(quadratic_energy, True), TypeError, "`sigma` must be a number"),
    ("denoiser/sigma/vector", lambda: dj.denoiser(quadratic_energy, np.array([0.1, 0.2])), ValueError,
     "`sigma` must be a scalar"),
    ("dsm_loss/key/seed", lambda: dj.dsm_loss(quadratic_energy, 0.1)(P2, 0, X), TypeError, "`key` must be one PRNG key"),
    ("dsm_loss/key/batch_of_keys", lambda: dj.dsm_loss(quadratic_energy, 0.1)(P2, jax.random.split(KEY, 3), X),
     TypeError, "`key` must be one PRNG key"),
    ("mdsm_loss/key/None", lambda: dj.mdsm_loss(quadratic_energy, 0.1, 1.0)(P2, None, X), TypeError,
     "`key` must be one PRNG key"),
    ("kl_generator_loss/key/float", lambda: dj.kl_generator_loss(linear_generator, gaussian_energy, 0.5)(
        GEN, GAUSS, GAUSS, np.zeros(2, np.float32), X), TypeError, "`key` must be one PRNG key"),
    ("sample_sigmas/key/int", lambda: dj.sample_sigmas(7, 4, 0.1, 1.0), TypeError, "`key` must be one PRNG key"),
    ("mdsm_loss/sigma_max/nan", lambda: dj.mdsm_loss(quadratic_energy, 0.1, float("nan")), ValueError, "`sigma_max`"),
    ("mdsm_loss/sigma0/str", lambda: dj.mdsm_loss(quadratic_energy, 0.1, 1.0, sigma0="0.1"), TypeError, "`sigma0`"),
    # --- sample_sigmas: sigma_min = 0 (a raw error on main) and sigma_min > sigma_max (accepted on main)
    ("sample_sigmas/sigma_min/zero", lambda: dj.sample_sigmas(KEY, 4, 0.0, 1.0), ValueError,
     "`sigma_min` must be finite and > 0"),
    ("sample_sigmas/sigma_min/above_max", lambda: dj.sample_sigmas(KEY, 4, 2.0, 1.0), ValueError,
     "`sigma_min` (2.0) must be <= `sigma_max` (1.0); swap them"),
    ("sample_sigmas/sigma_max/negative", lambda: dj.sample_sigmas(KEY, 4, 0.1, -1.0, "linear"), ValueError,
     "`sigma_max` must be finite and > 0"),
    ("sample_sigmas/spacing/None", lambda: dj.sample_sigmas(KEY, 4, 0.1, 1.0, None), ValueError,
     "`spacing` must be one of"),
    ("mdsm_loss/spacing/list", lambda: dj.mdsm_loss(quadratic_energy, 0.1, 1.0, spacing=["linear"]), ValueError,
     "`spacing` must be one of"),
    ("sample_sigmas/n/zero", lambda: dj.sample_sigmas(KEY, 0, 0.1, 1.0), ValueError, "`n` must be an int >= 1"),
    ("sample_sigmas/n/float", lambda: dj.sample_sigmas(KEY, 4.0, 0.1, 1.0), TypeError, "`n` must be an int >= 1"),
    ("sample_sigmas/sigma_min/str", lambda: dj.sample_sigmas(KEY, 4, "0.1", 1.0), TypeError,
     "`sigma_min` must be a number"),
    # --- masks (validation.check_mask, used by the samplers and inpainting): 0/1 only
    ("inpainter/observed_mask/half", lambda: _inpaint(np.full(2, 0.5, np.float32)), ValueError,
     "`observed_mask` must hold only 0 and 1"),
    ("inpainter/observed_mask/nan", lambda: _inpaint(np.array([1.0, np.nan], np.float32)), ValueError,
     "`observed_mask` holds 1 NaN"),
    ("langevin/free_mask/two", lambda: dj.langevin(quadratic_energy, 0.1, 3)(P2, KEY, X, np.full(2, 2.0, np.float32)),
     ValueError, "`free_mask` must hold only 0 and 1"),
    ("check_mask/mask/half", lambda: validation.check_mask("mask", np.full((4, 2), 0.5), X), ValueError,
     "`mask` must hold only 0 and 1, got 8 other values"),
    ("check_mask/mask/nan", lambda: validation.check_mask("mask", np.array([0.0, np.nan]), X), ValueError,
     "`mask` holds 1 NaN"),
    ("check_mask/mask/negative", lambda: validation.check_mask("mask", np.array([-1, 1]), X), ValueError,
     "`mask` must hold only 0 and 1"),
    ("check_mask/mask/str", lambda: validation.check_mask("mask", np.array(["a", "b"]), X), TypeError,
     "`mask` must be a numeric or bool array"),
    # --- xla
    ("compiler_options/backend/quantum", lambda: dj.compiler_options(backend="quantum"), ValueError, "`backend`"),
    ("compiler_options/backend/quantum_ynn_off", lambda: dj.compiler_options(False, backend="quantum"), ValueError,
     "`backend` must be None"),
    ("compiler_options/backend/int", lambda: dj.compiler_options(backend=3), ValueError, "`backend`"),
    # --- metrics: NaN/inf samples (NaN KLs on main), strings, wrong types
    ("sample_kl/samples/nan", lambda: metrics.sample_kl(NAN_PTS, LOG_P, 0.2, GRID, key=KEY), ValueError,
     "`samples` holds 2 non-finite rows of 3 (first at 1)"),
    ("sample_kl/grid/tuple", lambda: metrics.sample_kl(X, LOG_P, 0.2, (-1.0, 1.0), key=KEY), TypeError,
     "`grid` must be a Grid2D"),
    ("sample_kl/log_p_true/array", lambda: metrics.sample_kl(X, X, 0.2, GRID, key=KEY), TypeError,
     "`log_p_true` must be a function"),
    ("sample_kl/sigma/str", lambda: metrics.sample_kl(X, LOG_P, "0.2", GRID, key=KEY), TypeError,
     "`sigma` must be a number"),
    ("sample_kl/sigma/vector", lambda: metrics.sample_kl(X, LOG_P, np.ones(2), GRID, key=KEY), ValueError,
     "`sigma` must be a scalar"),
    ("sample_kl/n_boot/bool", lambda: metrics.sample_kl(X, LOG_P, 0.2, GRID, n_boot=True, key=KEY), TypeError,
     "`n_boot` must be an int >= 2"),
    ("sample_kl/chunk_size/zero", lambda: metrics.sample_kl(X, LOG_P, 0.2, GRID, chunk_size=0, key=KEY), ValueError,
     "`chunk_size` must be an int >= 1"),
    ("sample_kl/samples/empty", lambda: metrics.sample_kl(X_EMPTY, LOG_P, 0.2, GRID, key=KEY), ValueError,
     "`samples` must have shape (n, 2) with n >= 1"),
    ("toy.log_density/x/complex", lambda: RINGS.log_density(X.astype(np.complex64), 0.1), TypeError,
     "`x` must be a real array of points"),
    ("grid_log_z/energy_fn/not-callable", lambda: dj.grid_log_z("E", None, (2,), bounds=(-1.0, 1.0)), TypeError,
     "`energy_fn` must be a callable (params, x) -> (batch,)"),
    ("smoothed_empirical_log_density/samples/nan", lambda: metrics.smoothed_empirical_log_density(NAN_PTS, 0.1),
     ValueError, "`samples` holds 2 non-finite"),
    ("smoothed_empirical_log_density/sigma/nan", lambda: metrics.smoothed_empirical_log_density(X, float("nan")),
     ValueError, "`sigma` must be a finite number > 0"),
    ("density_kl/x_true/nan", lambda: metrics.density_kl(LOG_P, LOG_P, NAN_PTS), ValueError, "`x_true` holds 2"),
    ("density_kl/log_p_model/None", lambda: metrics.density_kl(LOG_P, None, X), TypeError,
     "`log_p_model` must be a function"),
    ("make_grid/bounds/str", lambda: metrics.make_grid(("a", "b")), ValueError, "`bounds` must be (lo, hi)"),
    ("make_grid/bounds/inf", lambda: metrics.make_grid((0.0, float("inf"))), ValueError, "`bounds` must be (lo, hi)"),
    ("make_grid/bounds/scalar", lambda: metrics.make_grid(3.0), ValueError, "`bounds` must be (lo, hi)"),
    ("make_grid/n/float", lambda: metrics.make_grid((-1.0, 1.0), 8.5), TypeError, "`n` must be an int >= 2"),
    ("grid_log_normalizer/energy_fn/None", lambda: metrics.grid_log_normalizer(None, None, GRID), TypeError,
     "`energy_fn` must be a function"),
    ("grid_log_normalizer/grid/None", lambda: metrics.grid_log_normalizer(quadratic_energy, P2, None), TypeError,
     "`grid` must be a Grid2D"),
    ("grid_log_normalizer/chunk_size/neg", lambda: metrics.grid_log_normalizer(quadratic_energy, P2, GRID, -1),
     ValueError, "`chunk_size` must be an int >= 1"),
    ("kl_floor/toy/str", lambda: metrics.kl_floor("rings", KEY, 10, 0.2, GRID), TypeError, "`toy` must be a Toy2D"),
    ("log_density_grid_image/log_fn/None", lambda: metrics.log_density_grid_image(None, GRID), TypeError,
     "`log_fn` must be a function"),
    # --- toy
    ("get_toy/name/list", lambda: toys.get_toy(["rings"]), ValueError, "`name` must be one of"),
    ("toy.sample/n/float", lambda: RINGS.sample(KEY, 2.0), TypeError, "`n` must be an int >= 1"),
    ("toy.sample/n/bool", lambda: RINGS.sample(KEY, True), TypeError, "`n` must be an int >= 1"),
    ("toy.sample/key/seed", lambda: RINGS.sample(0, 5), TypeError, "`key` must be one PRNG key"),
    ("sample_smoothed/key/str", lambda: toys.sample_smoothed(RINGS, "k", 3, 0.1), TypeError, "`key` must be one PRNG"),
    ("sample_kl/key/seed", lambda: metrics.sample_kl(X, LOG_P, 0.2, GRID, key=1), TypeError, "`key` must be one PRNG"),
    ("kl_floor/key/None", lambda: metrics.kl_floor(RINGS, None, 10, 0.2, GRID), TypeError, "`key` must be one PRNG"),
    ("observed_mask/key/seed", lambda: inpainting.observed_mask("random_half", (2, 4, 4, 1), 3), TypeError,
     "`key` must be one PRNG"),
    ("toy.log_density/sigma/str", lambda: RINGS.log_density(X, "0.1"), TypeError, "`sigma` must be a number"),
    ("toy.log_density/sigma/nan", lambda: RINGS.log_density(X, float("nan")), ValueError,
     "`sigma` must be a finite number >= 0"),
    ("toy.log_density/x/empty", lambda: RINGS.log_density(X_EMPTY, 0.1), ValueError, "`x` must have shape (n, 2)"),
    ("toy.nearest_component/x/str", lambda: RINGS.nearest_component("x", 0.1), TypeError,
     "`x` must be a real array of points of shape (n, 2)"),
    ("sample_smoothed/toy/str", lambda: toys.sample_smoothed("rings", KEY, 3, 0.1), TypeError, "`toy` must be a Toy2D"),
    # --- coverage
    ("toy_coverage/off_support_z/str", lambda: coverage.toy_coverage(RINGS, X, 0.2, off_support_z="3"), ValueError,
     "`off_support_z`"),
    ("toy_coverage/off_support_z/bool", lambda: coverage.toy_coverage(RINGS, X, 0.2, off_support_z=True), ValueError,
     "`off_support_z`"),
    ("toy_coverage/off_support_z/inf", lambda: coverage.toy_coverage(RINGS, X, 0.2, off_support_z=float("inf")),
     ValueError, "`off_support_z`"),
    ("toy_coverage/samples/empty", lambda: coverage.toy_coverage(RINGS, X_EMPTY, 0.2), ValueError,
     "`samples` must have shape (n, 2) with n >= 1"),
    ("toy_coverage/toy/str", lambda: coverage.toy_coverage("rings", X, 0.2), TypeError, "`toy` must be a Toy2D"),
    ("class_coverage/n_classes/float", lambda: coverage.class_coverage(np.arange(3), np.arange(3), n_classes=3.0),
     TypeError, "`n_classes` must be an int >= 2"),
    ("class_coverage/min_fraction/nan", lambda: coverage.class_coverage(np.arange(3), np.arange(3), 3,
                                                                       min_fraction=float("nan")),
     ValueError, "`min_fraction`"),
    ("class_coverage/reference_labels/float", lambda: coverage.class_coverage(np.arange(3), np.ones(3), 3), TypeError,
     "`reference_labels` must be an array of integer class labels, got dtype float64"),
    ("class_coverage/reference_labels/2d", lambda: coverage.class_coverage(np.arange(3), np.zeros((3, 1), int), 3),
     ValueError, "`reference_labels` must be a non-empty 1-D array of integer"),
    # --- inpainting
    ("observed_mask/kind/int", lambda: inpainting.observed_mask(3, (2, 4, 4, 1)), ValueError, "`kind` must be one of"),
    ("observed_mask/key/None", lambda: inpainting.observed_mask("random_half", (2, 4, 4, 1)), ValueError, "`key`"),
    ("observed_mask/shape/3d", lambda: inpainting.observed_mask("lower_half", (2, 4, 4)), ValueError, "`shape`"),
    ("observed_mask/shape/zero", lambda: inpainting.observed_mask("lower_half", (2, 0, 4, 1)), ValueError, "`shape`"),
    ("observed_mask/shape/float", lambda: inpainting.observed_mask("lower_half", (2, 4.5, 4, 1)), ValueError, "`shape`"),
    ("observed_mask/shape/str", lambda: inpainting.observed_mask("lower_half", "2441"), ValueError, "`shape`"),
    ("psnr/observed/half", lambda: inpainting.psnr(IMGS, IMGS, np.full_like(IMGS, 0.5)), ValueError,
     "`observed` must hold only 0 and 1"),
    ("psnr/observed/nan", lambda: inpainting.psnr(IMGS, IMGS, np.where(HALF > 0, np.nan, 0.0)), ValueError,
     "`observed` holds 16 NaN"),
    ("psnr/data_range/zero", lambda: inpainting.psnr(IMGS, IMGS, HALF, data_range=0.0), ValueError, "`data_range`"),
    ("mean_image_fill/observed/nan", lambda: inpainting.mean_image_fill(IMGS, np.full_like(IMGS, np.nan), IMGS),
     ValueError, "`observed` holds"),
    ("mean_image_fill/train_images/shape", lambda: inpainting.mean_image_fill(IMGS, HALF, np.ones((3, 5, 5, 1))),
     ValueError, "`train_images` must be a non-empty stack"),
    ("mean_image_fill/observed/shape", lambda: inpainting.mean_image_fill(IMGS, HALF[:, :2], IMGS), ValueError,
     "`observed` must have shape"),
    ("nearest_visible_fill/observed/half", lambda: inpainting.nearest_visible_fill(IMGS, HALF * 0.5, IMGS),
     ValueError, "`observed` must hold only 0 and 1"),
    ("nearest_visible_fill/train_images/empty", lambda: inpainting.nearest_visible_fill(IMGS, HALF, IMGS[:0]),
     ValueError, "`train_images` must be a non-empty stack"),
    # --- plotting (nothing is drawn or written)
    ("image_grid/images/1d", lambda: plotting.image_grid("/nonexistent/x.png", np.ones(4)), ValueError, "`images`"),
    ("image_grid/images/empty", lambda: plotting.image_grid("/nonexistent/x.png", np.ones((0, 4, 4))), ValueError,
     "`images`"),
    ("image_grid/n_cols/zero", lambda: plotting.image_grid("/nonexistent/x.png", IMGS, n_cols=0), ValueError,
     "`n_cols` must be an int >= 1"),
    ("loss_curves/curves/empty", lambda: plotting.loss_curves("/nonexistent/x.png", {}, "t"), ValueError, "`curves`"),
    ("toy_figure/panels/list", lambda: plotting.toy_figure("/nonexistent/x.png", RINGS, 0.2, GRID, [], {}, "rings"),
     TypeError, "`panels` must be a dict"),
]


@pytest.mark.parametrize("call, error, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_naming_the_argument(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value), str(info.value)


def test_sweep_ids_are_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


# ---------------------------------------------------------------------------------------
# Checks that run at trace time under jit, and what jit cannot check
# ---------------------------------------------------------------------------------------
def test_shape_and_dtype_checks_run_at_trace_time_under_jit():
    with pytest.raises(TypeError, match="`x` must be a floating-point"):
        jax.jit(dj.score(quadratic_energy))(P2, X_INT)
    with pytest.raises(ValueError, match="`x` has an empty batch"):
        jax.jit(dj.dsm_loss(quadratic_energy, 0.1))(P2, KEY, X_EMPTY)


def test_a_concrete_mask_closed_over_by_jit_is_still_checked():
    bad = np.array([1.0, 0.5], np.float32)
    with pytest.raises(ValueError, match="`observed_mask` must hold only 0 and 1"):
        jax.jit(lambda x: _inpaint(bad))(X)


def test_a_traced_mask_is_not_inspected_as_documented():
    # Values only known under jit are not checked (check_mask's docstring says so): a
    # traced non-binary mask passes; thresholding it is the caller's job.
    out = jax.jit(_inpaint)(np.array([1.0, 0.5], np.float32))
    assert out.shape == X.shape


def test_valid_edge_values_still_pass():
    dj.sample_sigmas(KEY, 3, 0.5, 0.5)  # sigma_min == sigma_max is a single scale
    validation.check_mask("mask", np.array([True, False]), X)  # bool masks are 0/1
    validation.check_mask("mask", np.array([1, 0], np.int32), X)
    assert dj.compiler_options(False, backend="gpu") is None
    assert toys.get_toy("rings").log_density(np.zeros((1, 2), np.float64), 0).shape == (1,)  # sigma = 0 is p itself
    assert RINGS.sample(jax.random.key(0), 3).shape == (3, 2)  # typed keys are keys too
    per = jax.vmap(dj.dsm_loss(quadratic_energy, 0.1, per_example=True), in_axes=(None, 0, 0))
    assert per(P2, jax.random.split(jax.random.key(1), 4), X).shape == (4,)  # one key per example under vmap


# ---------------------------------------------------------------------------------------
# sample_kl(key=None): deprecated, still PRNGKey(0)
# ---------------------------------------------------------------------------------------
def test_sample_kl_without_a_key_warns_and_keeps_the_old_default():
    samples = RINGS.sample(jax.random.PRNGKey(1), 200)
    grid = metrics.make_grid(RINGS.bounds, 16)
    with pytest.warns(DeprecationWarning, match="pass key="):
        old = metrics.sample_kl(samples, LOG_P, 0.2, grid)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit key warns nothing
        new = metrics.sample_kl(samples, LOG_P, 0.2, grid, key=jax.random.PRNGKey(0))
    for k in old:
        np.testing.assert_array_equal(old[k], new[k])


# ---------------------------------------------------------------------------------------
# No import side effects: plotting leaves matplotlib's backend alone
# ---------------------------------------------------------------------------------------
def test_importing_plotting_keeps_the_users_matplotlib_backend(tmp_path):
    # svg is a non-interactive backend every matplotlib has; on main, import switched it to agg.
    code = (
        "import matplotlib; before = matplotlib.get_backend()\n"
        "import dsm_jax.plotting as p, numpy as np\n"
        "after = matplotlib.get_backend()\n"
        "assert before == after == 'svg', (before, after)\n"
        f"p.image_grid({str(tmp_path / 'g.png')!r}, np.full((3, 4, 4), 0.5))\n"
        "assert matplotlib.get_backend() == 'svg'\n"
    )
    env = {**os.environ, "MPLBACKEND": "svg", "JAX_PLATFORMS": "cpu"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # still a PNG, headless


def test_plotting_writes_pngs_without_pyplot(tmp_path):
    grid = metrics.make_grid(RINGS.bounds, 16)
    samples = np.asarray(RINGS.sample(KEY, 100))
    results = {"rings/m": {"kl": 0.1, "kl_stderr": 0.01}}
    plotting.toy_figure(tmp_path / "toy.png", RINGS, 0.2, grid, {"m": {"samples": samples}}, results, "rings")
    plotting.loss_curves(tmp_path / "loss.png", {"run": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}]}, "t")
    for name in ("toy.png", "loss.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
