"""Every run directory records the code that ran it (experiments.common.rundir): the commit, a
dirty flag for changed tracked files under dsm_jax/ and experiments/, and the command line; a
later start in the same directory is appended, never written over the first."""
import json
import os
import subprocess

import pytest

from experiments import common
from experiments.configs.toy2d import PRESETS, ToyConfig


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


@pytest.fixture
def repo(tmp_path):
    """A git checkout with one tracked file under dsm_jax/ and one under docs/."""
    for path in ("dsm_jax/core.py", "docs/notes.md"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "first")
    return tmp_path


def test_code_version_is_the_short_head_and_dirty_only_for_tracked_code_changes(repo):
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert common.code_version(str(repo)) == {"commit": head}
    (repo / "docs" / "notes.md").write_text("edited\n")  # not code
    (repo / "experiments").mkdir()
    (repo / "experiments" / "new.py").write_text("y = 2\n")  # untracked
    assert common.code_version(str(repo)) == {"commit": head}
    (repo / "dsm_jax" / "core.py").write_text("x = 2\n")
    assert common.code_version(str(repo)) == {"commit": head, "dirty": True}


def test_code_version_outside_git_is_unknown(tmp_path):
    assert common.code_version(str(tmp_path)) == {"commit": "unknown"}


def test_record_run_keeps_the_first_record_and_appends_each_later_start(tmp_path):
    first = common.record_run(str(tmp_path), "experiments.toy2d", ["--preset", "smoke", "--set", "toys=a b"])
    assert first["command"] == "python -m experiments.toy2d --preset smoke --set 'toys=a b'"  # shell-quoted
    assert first["commit"] == common.code_version()["commit"] and first["started"].endswith("+00:00")
    assert first["called_by"] == common.process_command()  # main called from pytest, not typed
    again = common.record_run(str(tmp_path), "experiments.toy2d", ["--preset", "default"])
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved == again and {k: saved[k] for k in first} == first  # the first record untouched
    assert [r["command"] for r in saved["reruns"]] == ["python -m experiments.toy2d --preset default"]


def test_start_writes_config_json_and_the_run_record(tmp_path):
    out = tmp_path / "run"
    argv = ["--preset", "smoke", "--out", str(out), "--set", "toys=rings"]
    cfg, _, got = common.start(ToyConfig(), PRESETS, "toy2d\n", argv, script="toy2d", distributed=False)
    assert got == str(out) and json.loads((out / "config.json").read_text())["toys"] == ["rings"]
    record = json.loads((out / "run.json").read_text())
    assert record["command"] == "python -m experiments.toy2d " + " ".join(argv)
    assert "reruns" not in record and set(os.listdir(out)) == {"config.json", "run.json"}


def test_a_summary_without_a_record_gets_this_process_command(tmp_path):
    common.write_summary(str(tmp_path), "study", {"rows": {}}, "| a |")
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["command"] == common.process_command() and "called_by" not in record
    common.write_summary(str(tmp_path), "study", {"rows": {}}, "| a |")  # a record is kept, not extended
    assert json.loads((tmp_path / "run.json").read_text()) == record
