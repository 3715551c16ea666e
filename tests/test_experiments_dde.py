"""End-to-end: experiments.fashion_mnist_dde (smoke preset, one run shared by the tests below),
resume, and its config."""
import dataclasses
import json
import math

import jax
import numpy as np
import pytest
from conftest import DDE_RUN_GROUP

from dsm_jax import config
from experiments import fashion_mnist_dde as fmd

KEYS = ("fd", "fd_floor", "fd_gaussian_baseline", "inception_score", "train_seconds", "sample_seconds_per_1k",
        "classifier_accuracy", "train_steps", "generator_updates", "dde_density", *fmd.CLASS_FIELDS)
DENSITY_KEYS = ("fd", "fd_floor", "inception_score", "sample_seconds_per_1k", "sampler_steps", *fmd.CLASS_FIELDS)


SMOKE = dataclasses.replace(fmd.DDEFashionConfig(), **fmd.PRESETS["smoke"])


@pytest.fixture
def dde_run(dde_smoke_run):
    return dde_smoke_run


@DDE_RUN_GROUP
def test_smoke_writes_metrics(dde_run):
    out, _, metrics, printed = dde_run
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == metrics
    for key in KEYS:
        assert key in saved, key
    for key in DENSITY_KEYS:
        assert key in saved["dde_density"], key
    assert saved["train_steps"] == SMOKE.train.steps
    assert saved["generator_updates"] == SMOKE.train.steps // SMOKE.gen.every
    for value in (saved["fd"], saved["fd_floor"], saved["fd_gaussian_baseline"], saved["dde_density"]["fd"]):
        assert math.isfinite(value) and value >= 0
    assert 0 < saved["sample_seconds_per_1k"] and 0 < saved["dde_density"]["sample_seconds_per_1k"]
    for r in (saved, saved["dde_density"]):  # class coverage of the n scored samples
        assert len(r["class_histogram"]) == 10 and abs(sum(r["class_histogram"]) - 1) < 1e-9
        assert 0 <= r["classes_under"] <= 10 and r["class_kl"] >= 0
    assert "| DDE generator (one forward pass) |" in printed and "Langevin steps + Tweedie" in printed


@DDE_RUN_GROUP
def test_smoke_writes_images_and_samples(dde_run):
    out = dde_run[0]
    for png in ("samples.png", "density_samples.png", "loss.png", "train_grid_000020.png", "train_grid_000040.png"):
        assert (out / png).stat().st_size > 1000, png
    samples = np.load(out / "samples.npz")
    assert samples["generator"].shape == (SMOKE.n_samples, 32, 32, 1)
    assert samples["density"].shape == (SMOKE.density.n_samples, 32, 32, 1)
    assert samples["generator"].min() > 0 and samples["generator"].max() < 1  # sigmoid output


@DDE_RUN_GROUP
def test_smoke_logs_the_losses_by_name_and_the_generator_monitor(dde_run):
    out = dde_run[0]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in lines if r["run"] == "dde"]
    assert records[-1]["step"] == SMOKE.train.steps
    # the generator is watched during training: FD and class coverage every monitor.every steps
    monitor = [r for r in lines if r["run"] == "generator_monitor"]
    assert [r["step"] for r in monitor] == [20, 40]
    assert all(r["fd"] > 0 and 0 <= r["classes_under"] <= 10 and r["train_seconds"] > 0 for r in monitor)
    assert {"p_loss", "q_loss", "gen_loss", "gen_stepped"} <= set(records[-1])
    assert "loss" not in records[-1]  # the DDE losses go by their names, nothing is aliased


@DDE_RUN_GROUP
def test_smoke_resumes_its_finished_checkpoint(dde_run):
    # Training again into the same directory restores the finished checkpoint: no step runs,
    # no E_q warm-up, and the restored generator is the trained one.
    out, argv, saved, _ = dde_run
    cfg, _ = config.parse_args(fmd.DDEFashionConfig(), fmd.PRESETS, "", argv)
    x_train, _ = fmd.data.load_arrays("fashion_mnist", "train", limit=SMOKE.data.train_limit)
    state, history, _ = fmd.train(cfg, x_train, str(out), progress=False)
    assert history == []
    assert int(state.step) == SMOKE.train.steps and int(state.gen_updates) == saved["generator_updates"]


@pytest.mark.slow
def test_conv_arch_trains_a_few_steps(tmp_path):
    # arch=conv: ResNetEnergy for E_p/E_q and the DCGAN-like ConvGenerator, same loop.
    cfg = dataclasses.replace(fmd.DDEFashionConfig(), **fmd.PRESETS["smoke"])
    cfg = config.apply_overrides(cfg, ["model.arch=conv", "model.conv_width=4", "model.conv_stages=1",
                                       "gen.conv_width=4", "train.steps=4", "gen.every=2", "train.p_warmup_steps=2",
                                       "train.q_warmup_steps=2", "train.steps_per_call=2", "train.batch_size=4",
                                       "train.grid_every=none"])
    x_train = np.random.default_rng(0).uniform(size=(32, 32, 32, 1)).astype(np.float32)
    state, history, _ = fmd.train(cfg, x_train, str(tmp_path), progress=False)
    assert int(state.step) == 4 and int(state.gen_updates) == 2
    assert all(math.isfinite(h["gen_loss"]) for h in history)


def test_presets_name_real_fields_and_bad_arch():
    fields = {f.name for f in dataclasses.fields(fmd.DDEFashionConfig)}
    for name, overrides in fmd.PRESETS.items():
        assert set(overrides) <= fields, name
    paper = dataclasses.replace(fmd.DDEFashionConfig(), **fmd.PRESETS["paper"])
    m, g, t = paper.model, paper.gen, paper.train
    assert (m.depth, m.growth, g.growth, g.latent_dim) == (16, 256, 64, 16)
    assert (t.batch_size, t.lr, g.lr, t.sigma, g.every) == (100, 1e-3, 1e-3, 0.5, 10)
    # The paper's networks exactly: no Gaussian term, default initialisation, no E_p warm-up.
    assert (m.quadratic, g.init_scale, t.p_warmup_steps) == (False, 1.0, 0)
    # ... and the DDE code's lockstep loop: no warm-up of either energy, constant σ.
    assert (t.q_warmup_steps, t.sigma_start) == (0, t.sigma)
    with pytest.raises(ValueError, match="`model.arch`"):
        fmd.main(["--preset", "smoke", "--set", "model.arch=nope", "--out", "/tmp/unused"])
    with pytest.raises(ValueError, match="`arch`"), pytest.warns(FutureWarning):  # the old name: errors speak it
        fmd.main(["--preset", "smoke", "--set", "arch=nope", "--out", "/tmp/unused"])


def test_density_schedule_and_sigma_annealing():
    cfg = config.replace(fmd.DDEFashionConfig(), {"density.n_constant": 3, "density.n_exponential": 4,
                                                  "density.n_final": 5, "density.t_high": 10.0})
    temps = np.asarray(fmd.density_temperatures(cfg))
    assert temps.shape == (12,)
    np.testing.assert_allclose(temps[:3], 10.0)
    np.testing.assert_allclose(temps[6:], 1.0, rtol=1e-6)
    assert np.all(np.diff(temps[2:7]) < 0)
    assert fmd.sigma_of(cfg) == 0.5  # no annealing by default (the paper's constant σ)
    schedule = fmd.sigma_of(config.replace(cfg, {"train.sigma_start": 1.0, "train.steps": 100, "train.anneal_frac": 0.5}))
    np.testing.assert_allclose([float(schedule(0)), float(schedule(50)), float(schedule(100))], [1.0, 0.5, 0.5],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="no steps"):
        fmd.make_density_sampler(config.replace(cfg, {"density.n_constant": 0, "density.n_exponential": 0,
                                                      "density.n_final": 0}), lambda p, x: x.sum((1, 2, 3)))


def test_image_size_trains_on_the_centre_crop_and_scores_padded_images(tmp_path):
    # model.image_size=28: the authors' unpadded Fashion-MNIST. The networks see the centre crop
    # of the 32x32 padded data; their samples are zero-padded back for the FD classifier.
    cfg = config.apply_overrides(dataclasses.replace(fmd.DDEFashionConfig(), **fmd.PRESETS["smoke"]),
                                 ["model.image_size=28", "train.steps=4", "gen.every=2", "train.steps_per_call=2",
                                  "train.batch_size=4", "train.grid_every=none"])
    from experiments import fashion_mnist_dde_nets as nets_of
    assert nets_of.model_shape(cfg) == (28, 28, 1)
    x = np.random.default_rng(0).uniform(size=(8, 32, 32, 1)).astype(np.float32)
    crop = nets_of.to_model_images(cfg, x)
    np.testing.assert_array_equal(crop, x[:, 2:30, 2:30])
    back = nets_of.to_data_images(cfg, crop)
    assert back.shape == x.shape and not back[:, :2].any() and not back[:, :, 30:].any()
    np.testing.assert_array_equal(back[:, 2:30, 2:30], crop)
    state, history, _ = fmd.train(cfg, crop, str(tmp_path), progress=False)
    assert int(state.step) == 4 and all(math.isfinite(h["gen_loss"]) for h in history)
    z = fmd.latent_sampler(cfg, 3)(jax.random.key(0))
    assert fmd.generator_module(cfg).apply(state.gen.params, z).shape == (3, 28, 28, 1)
    plain = dataclasses.replace(fmd.DDEFashionConfig(), **fmd.PRESETS["smoke"])
    assert nets_of.to_model_images(plain, x) is x and nets_of.to_data_images(plain, x) is x
    with pytest.raises(ValueError, match="`model.image_size` 40 is larger"):
        nets_of.model_shape(config.replace(cfg, {"model.image_size": 40}))
    with pytest.raises(ValueError, match="`model.image_size` 28 needs `model.arch` 'densenet'"):
        config.replace(cfg, {"model.arch": "conv"}).validate()
