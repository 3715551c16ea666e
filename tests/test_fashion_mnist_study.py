"""The MDSM FD monitor (a time trigger on training seconds) and the quality-vs-wall-clock study
(experiments.fashion_mnist_study). The end-to-end checks read the shared fashion_mnist smoke run,
which runs with the monitor at every chunk end, instead of training again."""
import dataclasses
import json
import shutil

import numpy as np
import pytest
from conftest import FASHION_RUN_GROUP, run_main

from dsm_jax import config, runlog
from experiments import common, fashion_mnist, fashion_mnist_dde
from experiments import fashion_mnist_study as study


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def watched(clock, seconds, n_steps, at_end, monitor_cost=7.0):
    """(trigger, points): an EverySeconds over a Monitor whose measure costs ``monitor_cost``
    seconds of the fake clock and records (step, train_seconds it was given)."""
    points = []

    def measure(state, step, train_seconds):
        points.append((step, train_seconds))
        clock.now += monitor_cost  # the monitor's own time: never counted as training
        return None

    monitor = common.Monitor(measure, None, start=0.0, clock=clock)
    return common.EverySeconds(seconds, monitor, n_steps, at_end=at_end), points


def test_every_seconds_fires_when_training_time_passes_each_multiple_of_the_period():
    clock = FakeClock()
    trigger, points = watched(clock, 10.0, n_steps=8, at_end=True)
    # training seconds at the chunk ends: 4 8 12 16 20 44 48 49 (the 20 -> 44 chunk spans 30 and 40)
    for step, dt in enumerate([4, 4, 4, 4, 4, 24, 4, 1], start=1):
        clock.now += dt
        trigger(None, {"step": step})
    # 12 passes 10; 20 reaches 20; 44 passes 30 and 40 (one point, next due 50); 49 < 50 but the last step
    assert points == [(3, 12.0), (5, 20.0), (6, 44.0), (8, 49.0)]
    assert trigger.monitor.seconds == 4 * 7.0 and trigger.monitor.train_seconds() == 49.0


def test_every_seconds_without_at_end_skips_the_last_step_and_zero_fires_every_chunk():
    clock = FakeClock()
    trigger, points = watched(clock, 10.0, n_steps=3, at_end=False)
    for step in (1, 2, 3):
        clock.now += 4
        trigger(None, {"step": step})
    assert points == [(3, 12.0)]
    clock = FakeClock()
    trigger, points = watched(clock, 0, n_steps=3, at_end=False, monitor_cost=0.0)
    for step in (1, 2, 3):
        clock.now += 0.5
        trigger(None, {"step": step})
    assert points == [(1, 0.5), (2, 1.0), (3, 1.5)]
    with pytest.raises(ValueError, match=r"`seconds` .* must be a finite number >= 0, got -1"):
        common.EverySeconds(-1, trigger.monitor, 3)


def test_monitor_period_is_validated_in_the_config():
    parse = lambda *sets: config.parse_args(fashion_mnist.FashionConfig(), fashion_mnist.PRESETS, "",  # noqa: E731
                                            [a for s in sets for a in ("--set", s)])[0]
    assert parse().train.monitor_every_seconds is None
    assert parse("train.monitor_every_seconds=300").train.monitor_every_seconds == 300.0
    with pytest.raises(ValueError, match=r"`train.monitor_every_seconds` must be a finite number >= 0"):
        parse("train.monitor_every_seconds=-5")
    # resume=False and added: the period never enters the checkpoint fingerprint
    assert config.fingerprint(parse("train.monitor_every_seconds=60")) == config.fingerprint(parse())
    # the DDE generator's monitor takes the same time trigger (monitor.every_seconds)
    dde = lambda *sets: config.parse_args(fashion_mnist_dde.DDEFashionConfig(), fashion_mnist_dde.PRESETS, "",  # noqa: E731
                                          [a for s in sets for a in ("--set", s)])[0]
    assert dde().monitor.every_seconds is None and dde("monitor.every_seconds=60").monitor.every_seconds == 60.0
    with pytest.raises(ValueError, match=r"`monitor.every_seconds` must be a finite number >= 0"):
        dde("monitor.every_seconds=-1")
    assert config.fingerprint(dde("monitor.every_seconds=60")) == config.fingerprint(dde())


@FASHION_RUN_GROUP
def test_smoke_run_logs_an_fd_point_per_chunk_and_ends_with_the_main_sampling_run(fashion_smoke_run):
    out, _, metrics, _ = fashion_smoke_run
    smoke = dataclasses.replace(fashion_mnist.FashionConfig(), **fashion_mnist.PRESETS["smoke"])
    curve = metrics["fd_curve"]
    # period 0: a point at every chunk end, the last one the main run's FD
    n, per_call = smoke.train.steps, smoke.train.steps_per_call
    assert [r["step"] for r in curve] == sorted({*range(per_call, n + 1, per_call), n})
    assert all(set(r) == {"run", "step", "train_seconds", *common.MONITOR_FIELDS} for r in curve)
    seconds = [r["train_seconds"] for r in curve]
    assert seconds == sorted(seconds) and seconds[-1] == metrics["train_seconds"]
    assert curve[-1]["fd"] == metrics["fd"] and curve[-1]["class_kl"] == metrics["class_kl"]
    # The monitor's own point at the last step (before main's replaced it) drew the same samples
    # with the same key: its FD is the main run's up to float rounding of the two feature passes.
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
            if '"fd_monitor"' in line and json.loads(line)["step"] == smoke.train.steps]
    assert len(last) == 2
    np.testing.assert_allclose(last[0]["fd"], metrics["fd"], rtol=1e-4)
    assert last[0]["class_min"] == metrics["class_min"]
    # the loss curve's records are the training ones only
    assert all("loss" in r for r in runlog.read_log(str(out / "metrics.jsonl"), run=None))


@FASHION_RUN_GROUP
def test_study_of_two_rows_writes_json_table_and_quality_vs_time_png(fashion_smoke_run, tmp_path, monkeypatch):
    # Two rows whose config is the smoke run's: the study reads them as finished rows (no training).
    out, argv, metrics, _ = fashion_smoke_run
    monkeypatch.setattr(study, "ROWS", {"smoke": (), "smoke again": ("train.monitor_every_seconds=0",)})
    for i in (0, 1):
        (tmp_path / f"row{i}").mkdir()
        for name in ("config.json", "metrics.json"):
            shutil.copy2(out / name, tmp_path / f"row{i}" / name)
    dde = tmp_path / "dde"
    dde.mkdir()
    for step, fd, s in ((100, 300.0, 60.0), (200, 250.0, 120.0)):
        runlog.append_record(str(dde / "metrics.jsonl"), {"step": step, "run": "generator_monitor", "fd": fd,
                                                          "train_seconds": s})
    classifier = next(a for a in argv if a.startswith("data.classifier_dir="))
    result, printed = run_main(study.main, ["--preset", "smoke", "--every", "0", "--out", str(tmp_path),
                                            "--set", classifier, "--dde_run", str(dde), "--no-progress"])
    assert printed.count("(finished: read, not rerun)") == 2
    saved = json.loads((tmp_path / "study.json").read_text())
    assert saved == result and list(saved["rows"]) == ["smoke", "smoke again"]
    for row in saved["rows"].values():
        assert len(row["fd_curve"]) >= 2 and row["fd"] == metrics["fd"]
        assert row["steps_per_s"] == pytest.approx(metrics["train_steps"] / metrics["train_seconds"])
    assert [r["fd"] for r in saved["dde_generator_curve"]] == [300.0, 250.0]
    assert saved["fd_gaussian_baseline"] == metrics["fd_gaussian_baseline"]
    assert f"| smoke | {metrics['fd']:.1f} |" in (tmp_path / "study.md").read_text()
    assert (tmp_path / "quality_vs_time.png").stat().st_size > 5000


@FASHION_RUN_GROUP
def test_study_reruns_a_row_whose_config_changed(fashion_smoke_run, tmp_path):
    out, argv, _, _ = fashion_smoke_run
    shutil.copy2(out / "config.json", tmp_path / "config.json")
    shutil.copy2(out / "metrics.json", tmp_path / "metrics.json")
    row = ["--preset", "smoke", "--out", str(tmp_path), *argv[argv.index("--set"):]]
    assert study.finished_row(str(tmp_path), row) is not None
    assert study.finished_row(str(tmp_path), [*row, "--set", "train.lr=2e-3"]) is None


@pytest.mark.parametrize("name", list(study.ROWS))
def test_study_rows_are_valid_configs_and_only_the_default_row_is_the_default_preset(name):
    overrides = study.ROWS[name]
    argv = [a for s in ("train.monitor_every_seconds=300", *overrides) for a in ("--set", s)]
    cfg = config.parse_args(fashion_mnist.FashionConfig(), fashion_mnist.PRESETS, "", argv)[0]
    default = config.with_preset(fashion_mnist.FashionConfig(), fashion_mnist.PRESETS, "default")
    monitored = config.replace(default, {"train.monitor_every_seconds": cfg.train.monitor_every_seconds})
    assert (cfg == monitored) == ("(default preset)" in name), name
    assert cfg.model.kind == ("resnet" if name.startswith("ResNet") else "densenet"), name


def test_study_rows_flag_picks_by_index_and_refuses_bad_indices():
    assert list(study.pick_rows("1,0")) == [list(study.ROWS)[1], list(study.ROWS)[0]]
    with pytest.raises(ValueError, match=r"`--rows` must be comma-separated row indices in 0\.\.4, got '9'"):
        study.pick_rows("9")


@FASHION_RUN_GROUP
def test_chain_study_redraws_the_runs_own_chains_and_chooses_on_training_images(fashion_smoke_run, tmp_path,
                                                                                 monkeypatch):
    from experiments import fashion_mnist_chains as chains

    out, _, metrics, _ = fashion_smoke_run
    cfg = config.load(fashion_mnist.FashionConfig(), str(out / "config.json"))
    monkeypatch.setattr(chains, "CHAINS", {"own": (), "double_step": (f"sampler.step_size={2 * cfg.sampler.step_size}",),
                                           "short": ("sampler.n_constant=1", "sampler.n_exponential=1",
                                                     "sampler.n_linear=1")})
    result, printed = run_main(chains.main, ["--run_dir", str(out), "--out", str(tmp_path), "--select_n", "500",
                                             "--no-progress"])
    rows = result["rows"]
    # Same key and starting points as the run's final chains: the run's own chain gives its FD
    # (the run scored data.fd_n = sampler.n_samples samples; only the feature passes' rounding differs).
    assert cfg.sampler.n_samples == cfg.data.fd_n
    np.testing.assert_allclose(rows["own"]["fd"], metrics["fd"], rtol=1e-4)
    assert rows["own"]["class_min"] == metrics["class_min"]
    assert rows["short"]["sampler_steps"] == 3 and rows["double_step"]["fd"] != rows["own"]["fd"]
    # chosen on the training subset, never on the test FD
    assert result["chosen"] == min(rows, key=lambda n: rows[n]["fd_select"]) and result["select_n"] == 500
    assert json.loads((tmp_path / "chains.json").read_text()) == result
    assert f"**{result['chosen']}**" in (tmp_path / "chains.md").read_text()
    assert all((tmp_path / f"{name}.png").stat().st_size > 1000 for name in rows)


def test_chain_study_refuses_overrides_that_would_change_the_energy_and_unknown_rows():
    from experiments import fashion_mnist_chains as chains

    with pytest.raises(ValueError, match="sampler"):
        chains.chain_config(fashion_mnist.FashionConfig(), ["train.lr=1e-3"])
    with pytest.raises(ValueError, match="step_size"):
        chains.chain_config(fashion_mnist.FashionConfig(), ["sampler.step_size=-1"])
    with pytest.raises(ValueError, match="--rows"):
        chains.pick("step_4e-4,nope")
    assert list(chains.pick("step_8e-4")) == ["step_8e-4"]
