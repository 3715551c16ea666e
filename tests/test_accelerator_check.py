"""scripts/accelerator_check.sh: its CPU dry run on a simulated accelerator machine (no
tensorflow-datasets, blackjax or PyTorch), and how failing or overrunning parts are reported."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from experiments import accelerator_check as ac
from experiments import accelerator_parts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKED = ("tensorflow_datasets", "blackjax", "torch")


def _blocking_env(tmp_path, modules=BLOCKED) -> dict:
    """An environment whose Python (and every subprocess it starts) cannot import ``modules``,
    as on the GPU machine: a sitecustomize that maps them to None in sys.modules."""
    site = tmp_path / "block"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules))
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=str(site) + (os.pathsep + path if path else ""), PYTHON=sys.executable)


def test_dsm_jax_and_the_experiments_import_without_tfds_blackjax_torch_or_scipy(tmp_path):
    env = _blocking_env(tmp_path, BLOCKED + ("scipy",))
    code = ("import sys, dsm_jax, experiments.fashion_mnist, experiments.fashion_mnist_dde, experiments.toy2d, "
            "experiments.accelerator_parts, experiments.benchmarks.harness; "
            f"assert all(sys.modules[m] is None for m in {BLOCKED + ('scipy',)!r}); print('imported')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "imported" in proc.stdout, proc.stderr[-3000:]


@pytest.mark.slow
def test_dry_run_without_tfds_blackjax_or_torch_runs_every_part_and_writes_json_and_table(tmp_path):
    """The whole check at tiny sizes on CPU, as on the GPU machine (those modules blocked):
    every part passes, except MDSM's CIFAR-10 preset while config has none; exit code = all passed."""
    out = tmp_path / "out"
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "accelerator_check.sh"), "--dry-run", "--out",
                           str(out)], cwd=ROOT, env=_blocking_env(tmp_path), capture_output=True, text=True,
                          timeout=1200)  # a guard against hangs only: 63 s of CPU, minutes on busy cores
    report = json.loads((out / "accelerator_check.json").read_text())
    parts = report["parts"]
    assert list(parts) == list(ac.BUDGETS), proc.stdout[-3000:]
    assert proc.returncode == (0 if report["ok"] else 1), proc.stderr[-3000:]
    bad = {n: r["error"] for n, r in parts.items() if not r["ok"]}
    cifar = bad.pop("mdsm_cifar10", "preset not available")
    assert "preset not available" in cifar and not bad, bad
    if parts["mdsm_cifar10"]["ok"]:  # once the preset exists: found, not trained at dry-run sizes
        assert parts["mdsm_cifar10"]["paper_steps"] == 300_000 and not parts["mdsm_cifar10"]["trained"]
    pk = parts["environment"]["packages"]
    assert [n for n in ("tensorflow-datasets", "blackjax", "torch") if pk[n]["importable"]] == []
    assert pk["jax"]["importable"] and parts["environment"]["devices"]
    assert parts["environment"]["dsm_jax_from"] == os.path.join(ROOT, "dsm_jax")  # the source tree, not an install
    assert parts["tests"]["counts"].get("passed", 0) >= 1 and not parts["tests"]["failed"]
    presets = [parts[n] for n in ("mdsm_fashion_mnist", "dde_fashion_mnist")] + list(parts["toy2d"]["runs"].values())
    for r in presets:  # 4 timed steps after the compiling chunk, extrapolated to the preset's count
        assert r["timed_steps"] == 4 and r["steps_per_s"] > 0 and math.isfinite(r["paper_hours"]), r
    assert parts["mdsm_fashion_mnist"]["paper_steps"] == 100_000 and parts["dde_fashion_mnist"]["paper_steps"] == 30_000
    assert parts["bench_train"]["rows"]["train_mlp"]["impls"]["jax"]["steps_per_s"] > 0
    assert parts["multi_device"]["params_max_abs_diff"] < 1e-4
    table = (out / "accelerator_check.md").read_text()
    assert "| mdsm_fashion_mnist | ok |" in table and "hours extrapolated" in table and "tensorflow-datasets absent" in table


def test_a_failing_part_is_reported_with_its_traceback_and_the_others_still_run(tmp_path, monkeypatch):
    def broken(sizes):
        raise ValueError("planted failure")

    for k, v in ac.CHILD_ENV.items():  # main sets them for in-process parts; restored after the test
        monkeypatch.setenv(k, os.environ.get(k, v))
    monkeypatch.setitem(accelerator_parts.PARTS, "environment", broken)
    monkeypatch.setitem(accelerator_parts.PARTS, "toy2d", lambda sizes: {"summary": "fine"})
    code = ac.main(["--dry-run", "--parts", "environment,toy2d", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "accelerator_check.json").read_text())
    env, toy = report["parts"]["environment"], report["parts"]["toy2d"]
    assert code == 1 and not report["ok"]
    assert env["error"] == "ValueError: planted failure" and "planted failure" in env["traceback"]
    assert toy["ok"] and toy["summary"] == "fine"
    assert "| environment | **FAILED** |" in (tmp_path / "accelerator_check.md").read_text()


def test_a_part_in_its_own_process_returns_its_result_and_one_past_its_budget_is_killed():
    r = ac.run_part_isolated("environment", "dry", budget=120)
    assert r["ok"] and r["backend"] == "cpu" and r["cpu_seconds"] > 0, r
    r = ac.run_part_isolated("environment", "dry", budget=0.3)  # importing jax alone takes longer
    assert not r["ok"] and r["error"].startswith("timeout:") and r["seconds"] < 30, r


def test_unknown_parts_are_refused_naming_the_choices(capsys):
    with pytest.raises(SystemExit):
        ac.main(["--parts", "environment,gpu_magic"])
    assert "unknown ['gpu_magic']" in capsys.readouterr().err
