"""experiments.fashion_mnist_compare on two tiny runs written here (smoke-sized, untrained
checkpoints): restoring both runs, the interleaved timing, and the comparability check."""
import dataclasses
import json
import os

import jax
import numpy as np
import pytest

import dsm_jax as dj
from dsm_jax import config
from experiments import common
from experiments import fashion_mnist as fm
from experiments import fashion_mnist_compare as cmp
from experiments import fashion_mnist_dde as fmd

QUALITY = {"n": 64, "classifier_accuracy": 0.5, "fd_floor": 3.0, "fd_gaussian_baseline": 90.0,
           "fd_gaussian_baseline_std": 4.0, "inception_score_test": 7.0}


def _write_run(path, cfg, state, metrics):
    os.makedirs(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"preset": "smoke", **config.to_dict(cfg)}, f)
    with open(os.path.join(path, "metrics.json"), "w") as f:
        json.dump(metrics, f)
    ckpt = dj.Checkpoints(os.path.join(path, "checkpoints"))
    ckpt.save(1, state)
    ckpt.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    m_cfg = dataclasses.replace(fm.FashionConfig(), **fm.PRESETS["smoke"])
    module = fm.energy_module(m_cfg)
    state = dj.init_train_state(dj.init_params(module, jax.random.key(0), (32, 32, 1)), fm.optimizer(m_cfg),
                                jax.random.key(1),
                                ema=True)
    state = state._replace(ema=jax.tree.map(lambda p: p + 0.01, state.params))  # EMA ≠ params
    _write_run(root / "mdsm", m_cfg, state,
               {**QUALITY, "fd": 120.0, "inception_score": 2.5, "inception_score_std": 0.1})

    d_cfg = dataclasses.replace(fmd.DDEFashionConfig(), **fmd.PRESETS["smoke"])
    _write_run(root / "dde", d_cfg, fmd.init_state(d_cfg),
               {**QUALITY, "fd": 200.0, "inception_score": 1.5, "inception_score_std": 0.1,
                "dde_density": {"fd": 100.0, "inception_score": 3.0, "inception_score_std": 0.2}})
    return root, state


def test_load_run_restores_the_sampling_params(runs):
    root, state = runs
    cfg, energy_fn, params, step = fm.load_run(str(root / "mdsm"))
    assert step == int(state.step)  # the saved state's own step counter
    assert cfg.model.width == fm.PRESETS["smoke"]["model"].width
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), params, state.ema))  # the EMA
    e = energy_fn(params, np.zeros((2, 32, 32, 1), np.float32))
    assert e.shape == (2,) and np.all(np.isfinite(e))
    empty = root / "no_checkpoint"  # a config but no checkpoint: say how to train it
    os.makedirs(empty, exist_ok=True)
    (empty / "config.json").write_text((root / "mdsm" / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="train first"):
        fm.load_run(str(empty))


def test_compare_times_all_three_samplers_and_writes_the_table(runs, tmp_path, capsys):
    root, _ = runs
    out = tmp_path / "cmp"
    result = cmp.main(["--preset", "smoke", "--out", str(out), "--set", f"mdsm_run={root / 'mdsm'}",
                       "--set", f"dde_run={root / 'dde'}"])
    assert json.loads((out / "comparison.json").read_text()) == json.loads(json.dumps(result))
    s = result["samplers"]
    assert (s["mdsm"]["fd"], s["dde_generator"]["fd"], s["dde_density"]["fd"]) == (120.0, 200.0, 100.0)
    for name in ("mdsm", "dde_generator", "dde_density"):
        assert s[name]["seconds_per_1k"] > 0 and s[name]["compile_seconds"] > 0, name
    # Per sample, a 20-step chain costs more than one forward pass of the generator.
    assert result["generator_speedup_vs_mdsm"] > 1
    assert result["generator_fd_over_mdsm_fd"] == pytest.approx(200.0 / 120.0)
    table = (out / "comparison.md").read_text()
    assert "DDE generator (one forward pass) | 200.0 | 1.50" in table and "90.0 ± 4.0" in table
    assert "faster than MDSM" in capsys.readouterr().out


def test_runs_scored_with_different_classifiers_are_refused(runs, tmp_path):
    root, _ = runs
    other = tmp_path / "dde_other"
    os.makedirs(other)
    metrics = json.loads((root / "dde" / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps({**metrics, "classifier_accuracy": 0.9}))
    cfg = cmp.CompareConfig(mdsm_run=str(root / "mdsm"), dde_run=str(other))
    with pytest.raises(ValueError, match="`classifier_accuracy`.*same classifier"):
        cmp.quality(cfg)


def test_time_calls_reports_compile_and_median():
    calls = {"a": lambda: np.zeros(3), "b": lambda: np.ones(2)}
    timings = common.time_calls(calls, repeats=3)
    assert set(timings) == {"a", "b"} and all(c >= 0 and m >= 0 for c, m in timings.values())
    # the first call (or its warm-up twin) is reported apart from the timed rounds
    counts = {"a": 0}

    def count():
        counts["a"] += 1
        return np.zeros(1)

    common.time_calls({"a": count}, repeats=2, warmup={"a": lambda: np.zeros(1)})
    assert counts["a"] == 2
