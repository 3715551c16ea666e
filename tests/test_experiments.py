"""End-to-end: the experiments' smoke presets and the config system.

Each smoke run happens once (module-scoped fixtures) and serves several tests. toy2d runs
every method on one toy: the scripts' glue is the same for all four (each toy's density,
sampler and coverage are tested in test_toy.py / test_metrics.py / test_coverage.py)."""
import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FASHION_RUN_GROUP, run_main, tree_equal

from dsm_jax import config, runlog
from dsm_jax import toy as toys
from experiments import common, fashion_mnist, toy2d
from experiments import toy2d_dde_study as study

SMOKE_TOY = "eight_gaussians"
# The toy_run tests share one xdist group: a module fixture is made once per worker that runs
# one of its tests, and under plain load distribution both workers made this 25-30 s run.
TOY_SMOKE = pytest.mark.xdist_group("toy_smoke")


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    results, _ = run_main(toy2d.main, ["--preset", "smoke", "--out", str(out), "--no-progress",
                                       "--set", f"toys={SMOKE_TOY}"])
    return out, results


@TOY_SMOKE
def test_toy2d_smoke_records_its_commit_and_command(toy_run):
    """run.json: the code that made the run (the commit results_tables copies), written at its start."""
    out, _ = toy_run
    record = json.loads((out / "run.json").read_text())
    assert record["command"] == (f"python -m experiments.toy2d --preset smoke --out {out} --no-progress "
                                 f"--set toys={SMOKE_TOY}")
    assert record["commit"] == common.code_version()["commit"] and "reruns" not in record


@TOY_SMOKE
def test_toy2d_smoke_writes_metrics_json_of_every_method(toy_run):
    out, results = toy_run
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == results
    expected = {f"{SMOKE_TOY}/{m}" for m in toy2d.METHODS}
    assert set(saved) == expected
    for name, r in saved.items():
        for field in ("kl", "kl_stderr", "steps", "seconds"):
            assert field in r, (name, field)
        assert math.isfinite(r["kl"]) and r["kl_stderr"] >= 0 and r["steps"] > 0
        # a KL below minus three standard errors would mean the evaluation is wrong
        assert r["kl"] > -3 * r["kl_stderr"] - 1e-6, name
    assert saved[f"{SMOKE_TOY}/dde-generator"]["generator_updates"] == 200 // 10


@TOY_SMOKE
def test_toy2d_smoke_reports_coverage_beside_every_sample_kl(toy_run):
    _, saved = toy_run
    for m in ("dde-generator", "mdsm"):
        r = saved[f"{SMOKE_TOY}/{m}"]
        assert len(r["mode_weights"]) == toys.get_toy(SMOKE_TOY).n_components
        assert abs(sum(r["mode_weights"]) - 1) < 1e-6 and 0 <= r["off_support"] <= 1
        assert r["kl_reverse"] > -3 * r["kl_reverse_stderr"] - 1e-6


@TOY_SMOKE
def test_toy2d_smoke_test_log_likelihood_gap_is_the_density_kl(toy_run):
    _, saved = toy_run
    r = saved[f"{SMOKE_TOY}/dde"]
    # same points, same grid normaliser: exact-minus-model log-likelihood is the density KL
    assert abs((r["test_ll_true"] - r["test_ll_grid"]) - r["kl"]) < 1e-3
    assert math.isfinite(r["test_ll_ais"]) and r["test_ll_ais_stderr"] > 0
    assert 0.0 <= r["mass_outside_bounds"] < 0.5


@TOY_SMOKE
def test_toy2d_smoke_writes_figures_and_logs_every_run_and_the_monitor(toy_run):
    out, saved = toy_run
    assert (out / f"{SMOKE_TOY}.png").stat().st_size > 1000
    assert (out / f"{SMOKE_TOY}_loss.png").stat().st_size > 1000
    runs = {json.loads(line)["run"] for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert runs == set(saved) | {f"{SMOKE_TOY}/dde-generator/monitor"}
    # the generator's sample KL is watched during training: at steps 100 and 200 (smoke preset)
    monitor = runlog.read_log(str(out / "metrics.jsonl"), run=f"{SMOKE_TOY}/dde-generator/monitor")
    assert [r["step"] for r in monitor] == [100, 200] and all(r["sample_kl"] > 0 for r in monitor)
    config_json = json.loads((out / "config.json").read_text())
    assert config_json["preset"] == "smoke" and config_json["gen.iters"] == 200  # the --set names


def test_lockstep_recipe_lowers_sample_kl_and_off_support_on_eight_gaussians(tmp_path):
    # Measured, not hard-coded: the same seed's generator before training (1 iteration, G never
    # steps at gen.every = 10) against 1,500 iterations of the recipe, at smoke size.
    def run(iters):
        argv = ["--preset", "smoke", "--out", str(tmp_path / str(iters)), "--no-progress",
                "--set", "toys=eight_gaussians", "--set", "methods=dde-generator", "--set", f"gen.iters={iters}",
                "--set", "gen.monitor_every=none"]
        return run_main(toy2d.main, argv)[0]["eight_gaussians/dde-generator"]

    before, after = run(1), run(1500)
    assert before["generator_updates"] == 0 and after["generator_updates"] == 150
    assert after["kl"] + 3 * after["kl_stderr"] < before["kl"] - 3 * before["kl_stderr"], (before["kl"], after["kl"])
    # 1,000 samples: a standard error of at most 0.016 on each fraction
    assert after["off_support"] < before["off_support"] - 0.1, (before["off_support"], after["off_support"])


def test_toy2d_paper_preset_is_the_dde_code_recipe():
    paper = dataclasses.replace(toy2d.ToyConfig(), **toy2d.PRESETS["paper"])
    m, g = paper.model, paper.gen
    assert (m.depth, m.width, g.depth, g.width, m.weight_init) == (25, 32, 25, 32, "xavier")
    assert (g.batch_size, paper.train.lr, g.lr, g.b1, g.every) == (2048, 1e-3, 1e-3, 0.9, 10)
    assert (paper.sigma, g.iters, m.activation) == (0.2, 5000, "softplus")
    assert [toy2d._gen_activation(paper, t) for t in ("eight_gaussians", "two_spirals", "checkerboard")] == \
        ["relu", "relu", "softplus"]
    # lockstep from random weights: no pre-training, no warm-up, no σ annealing
    assert (g.p_pretrained, g.q_warmup_steps, g.anneal_sigma, g.q_init) == (False, 0, False, "scratch")
    assert not g.lr_decay  # Adam at a constant rate, no schedule
    with pytest.raises(ValueError, match="gen.activation_by_toy"):
        config.apply_overrides(paper, ["gen.activation_by_toy=moon:relu"]).validate()
    with pytest.raises(ValueError, match="gen.p_pretrained"):
        config.apply_overrides(paper, ["gen.p_pretrained=true", "methods=dde-generator"]).validate()


def test_config_overrides_and_errors(tmp_path):
    cfg = config.apply_overrides(toy2d.ToyConfig(), ["toys=rings,checkerboard", "train.lr=0.01", "gen.every=3"])
    assert cfg.toys == ("rings", "checkerboard") and cfg.train.lr == 0.01 and cfg.gen.every == 3
    assert config.replace(cfg, {"train.lr": 1.0}).train.lr == 1.0
    with pytest.raises(ValueError, match="field=value"):
        config.apply_overrides(cfg, ["not_a_field=1"])
    with pytest.raises(ValueError, match="methods"):
        toy2d.main(["--preset", "smoke", "--set", "methods=nope", "--out", str(tmp_path / "unused")])


def test_data_dir_flag_and_missing_data_error(tmp_path):
    cfg, _ = config.parse_args(fashion_mnist.FashionConfig(), fashion_mnist.PRESETS, "",
                               ["--data_dir", "/some/where", "--set", "train.steps=3"], flags=("data.data_dir",))
    assert cfg.data.data_dir == "/some/where" and cfg.train.steps == 3
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.main(["--preset", "smoke", "--out", str(tmp_path / "o"), "--data_dir", str(tmp_path / "none"),
                            "--cache_dir", str(tmp_path / "cache")])


@pytest.mark.parametrize("module, base", [(toy2d, toy2d.ToyConfig), (fashion_mnist, fashion_mnist.FashionConfig)])
def test_presets_only_name_real_fields(module, base):
    fields = {f.name for f in dataclasses.fields(base)}
    for name, overrides in module.PRESETS.items():
        assert set(overrides) <= fields, name


FASHION_KEYS = ("fd", "fd_floor", "fd_gaussian_baseline", "classifier_accuracy", "inception_score",
                "inpainting_psnr", "train_steps", "train_seconds", "sample_seconds")
FASHION_SMOKE = dataclasses.replace(fashion_mnist.FashionConfig(), **fashion_mnist.PRESETS["smoke"])


@pytest.fixture
def fashion_run(fashion_smoke_run):
    return fashion_smoke_run[:3]


@FASHION_RUN_GROUP
def test_fashion_mnist_smoke_writes_metrics(fashion_run):
    out, _, metrics = fashion_run
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == metrics
    for key in FASHION_KEYS:
        assert key in saved, key
    assert saved["train_steps"] == FASHION_SMOKE.train.steps
    for kind in ("lower_half", "centre_square", "random_half"):
        assert set(saved["inpainting_psnr"][kind]) == {"mdsm", "mean_image", "nearest_train"}
        assert all(math.isfinite(v) for v in saved["inpainting_psnr"][kind].values())
    assert all(math.isfinite(saved[k]) and saved[k] >= 0 for k in ("fd", "fd_floor", "fd_gaussian_baseline"))
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == saved["train_steps"]


@FASHION_RUN_GROUP
def test_fashion_mnist_smoke_writes_images_and_samples(fashion_run):
    out, _, _ = fashion_run
    for png in ("samples.png", "inpainting.png", "loss.png", "train_grid_000020.png"):
        assert (out / png).stat().st_size > 1000, png
    assert np.load(out / "samples.npz")["samples"].shape == (FASHION_SMOKE.sampler.n_samples, 32, 32, 1)


@FASHION_RUN_GROUP
def test_fashion_mnist_smoke_resumes_its_finished_checkpoint(fashion_run):
    # Training again into the same directory finds the finished checkpoint: no step runs.
    out, argv, _ = fashion_run
    cfg, _ = config.parse_args(fashion_mnist.FashionConfig(), fashion_mnist.PRESETS, "", argv)
    x_train, _ = fashion_mnist.data.load_arrays("fashion_mnist", "train", limit=cfg.data.train_limit)
    _, history, _ = fashion_mnist.train(cfg, x_train, str(out), progress=False)
    assert history == []


@FASHION_RUN_GROUP
def test_fashion_mnist_smoke_run_trains_with_canonical_conv_and_its_energy_equals_nn_conv(fashion_smoke_run):
    # The run trained and sampled with CanonicalConv, ynn off; on its own parameters the energy
    # and its input gradient (what the chain uses) are nn.Conv's ("xla") to float32 rounding.
    out = str(fashion_smoke_run[0])
    cfg, canonical_fn, params, _ = fashion_mnist.load_run(out)
    assert (cfg.model.conv, cfg.train.ynn_fusions) == ("canonical", False)
    _, xla_fn, xla_params, _ = fashion_mnist.load_run(out, "xla")
    assert tree_equal(params, xla_params)  # one checkpoint, whatever the conv
    x = jax.random.uniform(jax.random.key(0), (8, 32, 32, 1))
    both = lambda fn: jax.jit(lambda y: (fn(params, y), jax.grad(lambda z: jnp.sum(fn(params, z)))(y)))(x)  # noqa: E731
    (e_canonical, g_canonical), (e_xla, g_xla) = both(canonical_fn), both(xla_fn)
    assert float(jnp.std(e_xla)) > 0  # the trained net tells these images apart
    np.testing.assert_allclose(e_canonical, e_xla, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(e_xla))))
    np.testing.assert_allclose(g_canonical, g_xla, atol=1e-5 * float(jnp.max(jnp.abs(g_xla))))


def test_fashion_mnist_densenet_kind_trains_samples_inpaints_and_loads(tmp_path):
    # MDSM's loss on the DDE paper's DenseNet MLP energy, at toy size: every stage runs and is finite.
    cfg = config.replace(FASHION_SMOKE, {
        "model.kind": "densenet", "model.depth": 2, "model.growth": 8, "train.steps": 10, "train.grid_every": None,
        "sampler.n_constant": 2, "sampler.n_exponential": 4, "sampler.n_linear": 2,
        "inpaint.n": 2, "inpaint.masks": ("lower_half",)})
    cfg.validate()
    x_train, _ = fashion_mnist.data.load_arrays("fashion_mnist", "train", limit=200)
    os.makedirs(tmp_path / "run")
    config_json = {"preset": "smoke", **config.to_dict(cfg)}
    (tmp_path / "run" / "config.json").write_text(json.dumps(config_json))
    params, history, _ = fashion_mnist.train(cfg, x_train, str(tmp_path / "run"), progress=False)
    assert history[-1]["step"] == 10 and np.isfinite(history[-1]["loss"])
    assert set(params["params"]) == {"mlp", "centre", "log_prec"}  # DenseNetEnergy with its quadratic term
    loaded_cfg, energy_fn, loaded, step = fashion_mnist.load_run(str(tmp_path / "run"))
    assert loaded_cfg == cfg and step == 10
    sampler, n_steps = fashion_mnist.make_sampler(cfg, energy_fn)
    x, _ = sampler(loaded, jax.random.key(0), fashion_mnist.init_fn(cfg)(jax.random.key(1), 4))
    assert n_steps == 8 and x.shape == (4, 32, 32, 1) and bool(jnp.all(jnp.isfinite(x)))
    psnr, rows = fashion_mnist.inpaint(cfg, energy_fn, loaded, x_train[:2], x_train, jax.random.key(2))
    assert math.isfinite(psnr["lower_half"]["mdsm"]) and np.all(np.isfinite(rows))


def test_fashion_mnist_model_fields_are_validated_and_the_paper_preset_keeps_no_ema():
    # MDSM's training code keeps no parameter EMA; EMA stays an option elsewhere (default 0.999)
    paper = dataclasses.replace(fashion_mnist.FashionConfig(), **fashion_mnist.PRESETS["paper"])
    assert paper.train.ema_decay is None and paper.model.conv == "xla"
    assert fashion_mnist.FashionConfig().train.ema_decay == 0.999
    for bad, message in [({"model.kind": "mlp"}, r"`model.kind` must be one of \('resnet', 'densenet'\)"),
                         ({"model.depth": 0}, r"`model.depth` must be an int >= 1"),
                         ({"model.growth": 2.5}, r"`model.growth` must be an int >= 1"),
                         ({"model.conv": "fft"}, r"`model.conv` must be one of \('xla', 'matmul', 'canonical'\)"),
                         ({"train.steps_per_call": 3},  # refused before the classifier trains, not in fit
                          r"`train.checkpoint_every` = 10 is not a multiple of `train.steps_per_call` = 3")]:
        with pytest.raises(ValueError, match=message):
            config.replace(FASHION_SMOKE, bad).validate()
    # the new fields at their defaults leave a run's fingerprint as before they existed
    assert not {"kind", "depth", "growth", "quadratic"} & set(config.fingerprint(fashion_mnist.FashionConfig()))
    assert config.fingerprint(config.replace(FASHION_SMOKE, {"model.kind": "densenet"}))["kind"] == "densenet"


def test_dde_study_rows_are_valid_configs_and_tabulate():
    for name, deviation in study.DEVIATIONS.items():
        methods = study.row_methods(deviation)
        cfg = config.apply_overrides(toy2d.ToyConfig(), ["toys=eight_gaussians", f"methods={methods}", *deviation])
        cfg.validate()
        # every row but the first changes the recipe
        assert (cfg == toy2d.ToyConfig(toys=("eight_gaussians",), methods=(methods,) if "," not in methods
                                       else ("dde", "dde-generator"))) == (not deviation), name
    row = {"kl": 0.01, "kl_stderr": 0.001, "kl_reverse": 0.012, "mode_weight_min": 0.9, "mode_weight_max": 1.1,
           "off_support": 0.002}
    table = study.study_table({"recipe (default preset)": row})
    assert "| recipe (default preset) | 0.0100 ± 0.0010 | 0.0120 | 0.90–1.10 | 0.0020 |" in table
