"""experiments/fashion_mnist_likelihood.py at the smoke preset, on a tiny DDE checkpoint written
here whose density is a Gaussian with a closed-form log Z (its DenseNet part is zeroed), so the
script's AIS, its change of variables, the noisy test set and the bits/dim are all checked
against exact numbers.

The Gaussian is a diagonal one near the script's diagonal proposal (precisions 1.05× those of
N(μ, var + σ²), centre shifted by 0.01: KL ≈ 0.8 nats in 1,024 dimensions), so that the
smoke preset's 40 AIS temperatures have real work to do and still converge. (From the
full-covariance proposal a Gaussian this unlike the data is ~100 nats away: AIS would need
thousands of temperatures. The full-covariance factor itself is checked separately.)"""
import dataclasses
import json
import math
import os

import jax
import numpy as np
import pytest

import dsm_jax as dj
from dsm_jax import config, data
from dsm_jax import likelihood as lk
from experiments import common
from experiments import fashion_mnist_dde as fmd
from experiments import fashion_mnist_likelihood as fml

D, D_IMAGE = 1024, 784
SIGMA = 0.5  # the smoke DDE run's σ


def gaussian_target(x_train):
    """E(x) = ½·Σ prec·(x − centre)² (the zeroed MLP adds exactly 0): centre, prec, log Z."""
    xf = x_train.reshape(len(x_train), -1).astype(np.float64)
    prec = 1.05 / (xf.var(0) + SIGMA**2)
    centre = xf.mean(0) + 0.01
    return centre, prec, float(0.5 * np.sum(np.log(2 * math.pi / prec)))


def write_gaussian_dde_run(run_dir, centre, prec):
    """A DDE run directory (config.json + an orbax checkpoint) whose E_p is that Gaussian."""
    cfg = dataclasses.replace(fmd.DDEFashionConfig(), **fmd.PRESETS["smoke"])
    assert cfg.sigma == SIGMA
    state = fmd.init_state(cfg)
    p = jax.tree.map(np.zeros_like, state.p.params)  # softplus(0) features, zero read-out → MLP ≡ 0
    p["params"]["centre"] = centre.astype(np.float32)
    p["params"]["log_prec"] = np.log(prec).astype(np.float32)
    state = state._replace(p=state.p._replace(params=p), step=np.asarray(7, np.int32))
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump({"preset": "smoke", **config.to_dict(cfg)}, f)
    ckpt = dj.Checkpoints(os.path.join(run_dir, "checkpoints"))
    ckpt.save(7, state)
    ckpt.close()


def test_smoke_on_a_gaussian_energy_matches_closed_forms(tmp_path):
    smoke = fml.PRESETS["smoke"]
    x_train, _ = data.load_arrays("fashion_mnist", "train", limit=smoke["train_limit"])
    x_test, _ = data.load_arrays("fashion_mnist", "test", limit=smoke["test_limit"])
    centre, prec, truth = gaussian_target(x_train)
    run_dir = str(tmp_path / "run")
    write_gaussian_dde_run(run_dir, centre, prec)
    report = fml.main(["--preset", "smoke", "--run_dir", run_dir, "--no-progress", "--set", "proposal=diag"])
    saved = json.loads((tmp_path / "run" / "likelihood.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert (saved["kind"], saved["checkpoint_step"], saved["eval_sigma"], saved["temperature"]) == ("dde", 7, 0.5, 1.0)
    assert (saved["n_test_images"], saved["n_noise_draws"]) == (smoke["test_limit"], smoke["n_noise"])
    lz = saved["log_z"]
    assert (lz["method"], lz["n_temps"], lz["n_chains"], lz["n_repeats"]) == (
        "ais", smoke["n_temps"], smoke["n_chains"], smoke["n_repeats"])
    assert len(lz["repeats"]) == smoke["n_repeats"] and "k_trend_check" in lz
    assert "σ" in saved["definition"] and "1,024" in saved["definition"]
    assert all(s >= 0 for s in saved["seconds"].values())

    # log Z against the closed form. Tolerance 1 nat: over 8 seeds this smoke AIS (32 chains, 40
    # temperatures) landed within −0.6…+0.3 nats of the truth (its delta-method stderr, ~0.13,
    # understates that scatter; the JSON's between-repeat error is there for this reason). A
    # bookkeeping error is far larger: without log|det L| it is off by ~500 nats, with the AIS
    # weights ignored (log Z of the proposal) by 512·log 1.05 ≈ 25 nats.
    assert abs(lz["value"] - truth) < 1.0, (lz["value"], truth, lz["stderr"])
    assert abs(saved["log_z_is"]["value"] - truth) < 1.0, (saved["log_z_is"], truth)
    assert lz["stderr"] == max(lz["stderr_within_chains"], lz["stderr_between_repeats"]) > 0

    # The σ-smoothed test likelihood: E_ε ½·Σ prec·(x + ε − c)² = ½·Σ prec·((x − c)² + σ²), exactly.
    xt = x_test.reshape(len(x_test), -1).astype(np.float64)
    expected_ll = float(np.mean(-0.5 * np.sum(prec * ((xt - centre) ** 2 + SIGMA**2), axis=1))) - truth
    m = saved["model"]
    assert abs(m["log_likelihood"] - expected_ll) < 4 * m["stderr"], (m["log_likelihood"], expected_ll, m["stderr"])
    assert 0 < m["stderr_test"] <= m["stderr"] and m["stderr_log_z"] == lz["stderr"]
    # the bound that holds without convergence: above the point estimate and the truth
    assert lz["lower_bound_95"] < min(lz["value"], truth)
    assert m["log_likelihood_upper_bound"] > max(m["log_likelihood"], expected_ll)
    # The padding pixels are N(0, σ²) exactly: removing them moves the mean by ~240·½log(2πeσ²)
    im = saved["image_pixels"]
    pad_entropy = (D - D_IMAGE) * 0.5 * math.log(2 * math.pi * math.e * SIGMA**2)
    assert abs((im["log_likelihood"] - m["log_likelihood"]) - pad_entropy) < 2.0

    # bits/dim consistent with nats, for both D
    for row, d in ((m, D), (im, D_IMAGE), (saved["references"]["gaussian_fit"]["model"], D),
                   (saved["references"]["ceiling"]["image_pixels"], D_IMAGE)):
        assert row["dim"] == d
        np.testing.assert_allclose(row["bits_per_dim"], -row["log_likelihood"] / (d * math.log(2)), rtol=1e-9)
        np.testing.assert_allclose(row["bits_per_dim_stderr"], row["stderr"] / (d * math.log(2)), rtol=1e-9)
        np.testing.assert_allclose(row["bits_per_dim_256"], row["bits_per_dim"] + 8.0, rtol=1e-9)
        if "log_likelihood_upper_bound" in row:
            np.testing.assert_allclose(row["bits_per_dim_lower_bound"],
                                       -row["log_likelihood_upper_bound"] / (d * math.log(2)), rtol=1e-9)
    np.testing.assert_allclose(saved["references"]["ceiling"]["model"]["log_likelihood"],
                               -0.5 * D * math.log(2 * math.pi * math.e * SIGMA**2), rtol=1e-9)
    # a correct log Z cannot put the likelihood above the ceiling
    assert m["log_likelihood"] < saved["references"]["ceiling"]["model"]["log_likelihood"]
    assert isinstance(saved["trustworthy"], bool) and isinstance(saved["trust_notes"], list)


def test_detects_the_experiment_and_refuses_other_dirs(tmp_path):
    assert common.experiment_of({"sigma_min": 0.1, "sigma_max": 3.0, "sigma0": 0.1}) == "mdsm"  # old flat file
    assert common.experiment_of(config.to_dict(fmd.DDEFashionConfig())) == "dde"
    with pytest.raises(ValueError, match="run directory"):
        common.experiment_of({"toys": ["rings"]})
    with pytest.raises(FileNotFoundError, match="config.json"):
        fml.main(["--preset", "smoke", "--run_dir", str(tmp_path), "--no-progress"])
    with pytest.raises(ValueError, match="proposal"):
        fml.main(["--preset", "smoke", "--run_dir", str(tmp_path), "--set", "proposal=nope"])


def test_gaussian_fit_and_whitened_energy():
    """The proposal the script uses (now dsm_jax.likelihood.fit_gaussian / whiten)."""
    rng = np.random.default_rng(0)
    x = np.zeros((300, 32, 32, 1), np.float32)
    x[:, 2:30, 2:30, 0] = rng.uniform(size=(300, 28, 28)) * rng.uniform(size=(300, 1, 1))  # correlated
    mean, chol = lk.fit_gaussian(x, SIGMA, "full")
    xf = x.reshape(300, -1).astype(np.float64)
    np.testing.assert_allclose(chol @ chol.T, np.cov(xf, rowvar=False) + SIGMA**2 * np.eye(D), atol=1e-10)
    assert np.allclose(chol, np.tril(chol)) and np.all(np.diag(chol) > 0)
    _, diag = lk.fit_gaussian(x, SIGMA, "diag")
    np.testing.assert_allclose(np.diag(diag), np.sqrt(xf.var(0) + SIGMA**2))
    # padding pixels: exactly N(0, σ²), uncorrelated with the image
    pad = (1.0 - fml.image_pixel_mask()).reshape(-1) > 0
    assert pad.sum() == D - D_IMAGE
    np.testing.assert_allclose(chol[pad][:, pad], SIGMA * np.eye(D - D_IMAGE), atol=1e-12)
    # E_z(z) = E(μ + Lz): evaluated against numpy on a quadratic energy
    w = rng.normal(size=D).astype(np.float32)

    def energy(params, img):
        return 0.5 * np.float32(params) * jax.numpy.sum((img.reshape(img.shape[0], -1) - w) ** 2, axis=1)

    z = rng.normal(size=(3, D)).astype(np.float32)
    got = np.asarray(lk.whiten(energy, fml.IMAGE_SHAPE)(lk.whitened_params(2.0, lk.GaussianFit(mean, chol)),
                                                        jax.numpy.asarray(z)))
    xs = mean + z.astype(np.float64) @ chol.T
    np.testing.assert_allclose(got, np.sum((xs - w) ** 2, axis=1), rtol=1e-4)
