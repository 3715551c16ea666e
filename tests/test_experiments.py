"""End-to-end: the experiments' smoke presets and the config system."""
import dataclasses
import json
import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

import fashion_mnist  # noqa: E402
import toy2d  # noqa: E402

from dsm_jax import config  # noqa: E402


def test_toy2d_smoke_writes_metrics_and_figures(tmp_path):
    out = tmp_path / "toy"
    results = toy2d.main(["--preset", "smoke", "--out", str(out), "--no-progress"])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == results
    expected = {f"{t}/{m}" for t in toy2d.toys.TOY_NAMES for m in toy2d.METHODS}
    assert set(saved) == expected
    for name, r in saved.items():
        for field in ("kl", "kl_stderr", "steps", "seconds"):
            assert field in r, (name, field)
        assert math.isfinite(r["kl"]) and r["kl_stderr"] >= 0 and r["steps"] > 0
        # a KL below minus three standard errors would mean the evaluation is wrong
        assert r["kl"] > -3 * r["kl_stderr"] - 1e-6, name
    assert saved["eight_gaussians/dde-generator"]["generator_updates"] == 200 // 10
    for t in toy2d.toys.TOY_NAMES:
        r = saved[f"{t}/dde"]
        # same points, same grid normaliser: exact-minus-model log-likelihood is the density KL
        assert abs((r["test_ll_true"] - r["test_ll_grid"]) - r["kl"]) < 1e-3, t
        assert math.isfinite(r["test_ll_ais"]) and r["test_ll_ais_stderr"] > 0
        assert 0.0 <= r["mass_outside_bounds"] < 0.5
    for t in toy2d.toys.TOY_NAMES:
        assert (out / f"{t}.png").stat().st_size > 1000
        assert (out / f"{t}_loss.png").stat().st_size > 1000
    runs = {json.loads(line)["run"] for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert runs == expected


def test_config_overrides_and_errors():
    cfg = config.apply_overrides(toy2d.ToyConfig(), ["toys=rings,checkerboard", "lr=0.01", "gen_every=3"])
    assert cfg.toys == ("rings", "checkerboard") and cfg.lr == 0.01 and cfg.gen_every == 3
    assert dataclasses.replace(cfg, lr=1.0).lr == 1.0
    with pytest.raises(ValueError, match="field=value"):
        config.apply_overrides(cfg, ["not_a_field=1"])
    with pytest.raises(ValueError, match="methods"):
        toy2d.main(["--preset", "smoke", "--set", "methods=nope", "--out", "/tmp/unused"])


def test_data_dir_flag_and_missing_data_error(tmp_path):
    cfg, _ = config.parse_args(fashion_mnist.FashionConfig(), fashion_mnist.PRESETS, "",
                               ["--data_dir", "/some/where", "--set", "steps=3"], flags=("data_dir",))
    assert cfg.data_dir == "/some/where" and cfg.steps == 3
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


def test_fashion_mnist_smoke_writes_metrics_images_and_resumes(tmp_path):
    out = tmp_path / "fm"
    argv = ["--preset", "smoke", "--out", str(out), "--no-progress", "--set", f"classifier_dir={tmp_path / 'clf'}"]
    metrics = fashion_mnist.main(argv)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == metrics
    for key in FASHION_KEYS:
        assert key in saved, key
    assert saved["train_steps"] == fashion_mnist.PRESETS["smoke"]["steps"]
    for kind in ("lower_half", "centre_square", "random_half"):
        assert set(saved["inpainting_psnr"][kind]) == {"mdsm", "mean_image", "nearest_train"}
        assert all(math.isfinite(v) for v in saved["inpainting_psnr"][kind].values())
    assert all(math.isfinite(saved[k]) and saved[k] >= 0 for k in ("fd", "fd_floor", "fd_gaussian_baseline"))
    for png in ("samples.png", "inpainting.png", "loss.png", "train_grid_000020.png"):
        assert (out / png).stat().st_size > 1000, png
    import numpy as np
    assert np.load(out / "samples.npz")["samples"].shape == (fashion_mnist.PRESETS["smoke"]["n_samples"], 32, 32, 1)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == saved["train_steps"]
    # Training again into the same directory finds the finished checkpoint: no step runs.
    cfg, _ = config.parse_args(fashion_mnist.FashionConfig(), fashion_mnist.PRESETS, "", argv)
    x_train, _ = fashion_mnist.data.load_arrays("fashion_mnist", "train", limit=cfg.train_limit)
    _, history, _ = fashion_mnist.train(cfg, x_train, str(out), progress=False)
    assert history == []
