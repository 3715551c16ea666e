"""The README and docs/ stay true: short README, tables equal to their run JSON, links that
resolve, commands in their module form, and a README example that runs."""
import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _results_tables():
    spec = importlib.util.spec_from_file_location("results_tables", os.path.join(ROOT, "scripts", "results_tables.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _documents():
    return [README] + sorted(os.path.join(DOCS, f) for f in os.listdir(DOCS) if f.endswith(".md"))


def test_readme_at_most_250_lines():
    n = len(_read(README).splitlines())
    assert n <= 250, f"README.md has {n} lines; move detail to docs/*.md"


def test_results_tables_check_passes():
    """Every generated table equals what its docs/results JSON renders to (the script's --check)."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "results_tables.py"), "--check"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_results_tables_check_can_fail():
    """A hand-edited number inside a generated table is put back from the JSON (so --check sees it)."""
    rt = _results_tables()
    text = _read(README)
    assert "<!-- table:toy2d -->" in text
    tampered = text.replace("0.0135 ± 0.0008 (floor 0.0030)", "0.0100 ± 0.0008 (floor 0.0030)", 1)
    assert tampered != text
    assert rt.render(tampered) == text


def test_every_generated_table_has_json_or_is_static():
    rt = _results_tables()
    for path in _documents():
        for m in rt.MARKER.finditer(_read(path)):
            assert m["name"] in rt.TABLES, f"{path}: unknown table {m['name']}"
            assert m["static"] or rt.TABLES[m["name"]]() is not None, f"{path}: {m['name']} has no JSON"


def test_collect_copies_the_commit_and_command_the_run_recorded(tmp_path, monkeypatch):
    """--collect RUN=DIR: the JSON names DIR as its source and takes the command and commit from the
    run's own run.json (written at its start), not from this checkout's HEAD; a rerun stays listed."""
    from experiments import common

    rt = _results_tables()
    monkeypatch.setattr(rt, "RESULTS", str(tmp_path / "results"))  # never docs/results
    row = tmp_path / "study" / "row2"
    row.mkdir(parents=True)
    argv = ["--preset", "default", "--out", str(row), "--set", "train.monitor_every_seconds=120"]
    first = common.record_run(str(row), "experiments.fashion_mnist", argv)
    first_run = dict(first)
    (row / "run.json").write_text(json.dumps(dict(first, commit="abc1234")))  # as if run at another commit
    common.record_run(str(row), "experiments.fashion_mnist", argv)  # resumed later
    (row / "metrics.json").write_text('{"fd": 1.5}')
    assert rt.collect(**rt.collect_args([f"fashion_mnist-default={row}"])) == ["fashion_mnist-default"]
    got = rt.load("fashion_mnist-default")
    assert got["metrics"] == {"fd": 1.5} and got["commit"] == "abc1234"
    assert got["command"] == first_run["command"] == "python -m experiments.fashion_mnist " + " ".join(argv)
    assert got["called_by"] == common.process_command()  # main was called by pytest, not typed
    assert [r["command"] for r in got["reruns"]] == [first_run["command"]]
    assert got["source"] == f"{row}/metrics.json"  # outside the repository: its absolute path
    assert rt._source_label(os.path.join(ROOT, "runs", "study", "row2")) == "runs/study/row2"  # inside: relative


def test_collect_marks_a_run_that_did_not_record_its_commit(tmp_path, monkeypatch):
    """A run older than run.json: the usual command and the collecting HEAD, each marked as such."""
    rt = _results_tables()
    monkeypatch.setattr(rt, "RESULTS", str(tmp_path / "results"))
    runs = tmp_path / "runs"
    (runs / "toy2d-default").mkdir(parents=True)
    (runs / "toy2d-default" / "metrics.json").write_text('{"kl": 0.1}')
    assert rt.collect(**rt.collect_args([str(runs)])) == ["toy2d-default"]
    toy = rt.load("toy2d-default")
    assert toy["commit"] == f"{rt._head_commit()} (collected; run did not record its commit)"
    assert toy["command"] == f"{rt.COMMANDS['toy2d-default']} (collected; run did not record its command)"
    assert toy["source"] == "runs/toy2d-default/metrics.json" and "reruns" not in toy
    with pytest.raises(ValueError, match=r"unknown run 'fashion_mnist-deflaut'"):
        rt.collect_args([f"fashion_mnist-deflaut={runs}"])
    with pytest.raises(FileNotFoundError, match=r"no metrics.json there"):
        rt.collect(sources={"fashion_mnist_dde-default": str(tmp_path)})
    with pytest.raises(SystemExit):  # --command is gone: runs record their own
        rt.main(["--collect", str(runs), "--command", "toy2d-default=python -m x"])


def test_mdsm_tables_are_generated_from_the_default_run():
    """The MDSM tables (static until issue 15's re-run) now come from the default run's JSON."""
    rt = _results_tables()
    assert rt.load("fashion_mnist-default") is not None
    for path, tables in ((README, ("fashion_mnist_mdsm",)), (os.path.join(DOCS, "results.md"),
                                                             ("fashion_mnist_mdsm", "fashion_mnist_inpainting"))):
        markers = {m["name"]: m["static"] for m in rt.MARKER.finditer(_read(path))}
        for name in tables:
            assert markers.get(name, "missing") is None, f"{path}: {name} is {markers.get(name, 'missing')}"


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("path", _documents(), ids=lambda p: os.path.relpath(p, ROOT))
def test_local_links_and_figures_exist(path):
    missing = []
    for target in LINK.findall(_read(path)):
        if re.match(r"[a-z]+://", target) or target.startswith("#"):
            continue
        file = target.split("#", 1)[0]
        if not os.path.exists(os.path.join(os.path.dirname(path), file)):
            missing.append(target)
    assert not missing, f"{os.path.relpath(path, ROOT)} links to missing files: {missing}"


def test_readme_links_figures_and_docs():
    targets = LINK.findall(_read(README))
    assert any(t.startswith("docs/figures/") and t.endswith(".png") for t in targets)
    for doc in ("api", "results", "dde", "faithfulness", "performance", "scaling", "resilience"):
        assert f"docs/{doc}.md" in targets, f"README does not link docs/{doc}.md"


def test_readme_names_every_notebook():
    text = _read(README)
    notebooks = sorted(f for f in os.listdir(os.path.join(ROOT, "notebooks")) if f.endswith(".ipynb"))
    assert len(notebooks) == 4
    assert [n for n in notebooks if n not in text] == []


def test_experiment_commands_are_modules():
    """Scripts run as modules (`python -m experiments.toy2d`), never by path."""
    for path in _documents():
        stale = re.findall(r"experiments/\w+\.py|\b(?:toy2d|fashion_mnist\w*)\.py", _read(path))
        assert not stale, f"{os.path.relpath(path, ROOT)}: {stale}"


def test_readme_example_runs():
    """The README's example block executes and gives finite, denoised samples of the right shape."""
    text = _read(README)
    section = text.split("\n## Example", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "dj.mdsm_loss" in code and "dj.langevin" in code and "dj.score" in code
    scope = {}
    exec(compile(code, "README.md:Example", "exec"), scope)
    x, s, loss = np.asarray(scope["x"]), np.asarray(scope["s"]), float(scope["loss"])
    assert x.shape == (256, 2) and s.shape == (256, 2)
    assert np.isfinite(x).all() and np.isfinite(s).all() and np.isfinite(loss)
