"""End-to-end: the toy experiment's smoke preset and the config system."""
import dataclasses
import json
import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

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


def test_presets_only_name_real_fields():
    fields = {f.name for f in dataclasses.fields(toy2d.ToyConfig)}
    for name, overrides in toy2d.PRESETS.items():
        assert set(overrides) <= fields, name
