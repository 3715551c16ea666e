"""Execute every notebook at small settings (DSM_JAX_NOTEBOOK_SMALL=1); the two image tours
restore the image experiments' smoke runs (DSM_JAX_NOTEBOOK_RUN) instead of training again.

The expected set is written out, so a deleted or renamed notebook fails here instead of
silently dropping out of the parametrisation; the README names the same four.
"""
import os

import nbformat
import pytest
from conftest import DDE_RUN_GROUP, FASHION_RUN_GROUP
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(ROOT, "notebooks")
EXPECTED = (
    "01_toolkit_tour.ipynb",
    "02_fashion_mnist_mdsm.ipynb",
    "03_dde_generator.ipynb",
    "04_log_likelihood.ipynb",
)


def notebook_problems(nb) -> list[str]:
    """Every error output and every code cell that did not run, one line each.

    nbclient stops at the first error unless a cell is tagged ``raises-exception``; those
    errors, and cells skipped after a kernel death, only show up in the executed notebook.
    """
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        if cell.get("execution_count") is None:
            problems.append(f"cell {i}: not executed")
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(f"cell {i}: {out.get('ename')}: {out.get('evalue')}")
    return problems


def test_notebooks_exist():
    """Exactly the four tours, no more, no fewer."""
    found = sorted(f for f in os.listdir(NOTEBOOK_DIR) if f.endswith(".ipynb"))
    assert found == sorted(EXPECTED)


def test_notebook_problems_catches_errors_and_skipped_cells():
    """The collector used below can fail: an error output and an unexecuted cell are both reported."""
    nb = nbformat.v4.new_notebook()
    ran = nbformat.v4.new_code_cell("x = 1", execution_count=1)
    failed = nbformat.v4.new_code_cell("raise ValueError('boom')", execution_count=2)
    failed.outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="boom", traceback=[])]
    skipped = nbformat.v4.new_code_cell("y = 2")
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), ran, failed, skipped]
    assert notebook_problems(nb) == ["cell 2: ValueError: boom", "cell 3: not executed"]
    nb.cells = [ran]
    assert notebook_problems(nb) == []


# The image tours restore the experiments' smoke runs (session fixtures their own tests share)
# instead of training their small networks again, and score with the classifier those runs cached.
SMOKE_RUNS = {"02_fashion_mnist_mdsm.ipynb": "fashion_smoke_run", "03_dde_generator.ipynb": "dde_smoke_run"}
# each tour in its run's xdist group, so it runs on the worker that made the run
SMOKE_GROUPS = {"02_fashion_mnist_mdsm.ipynb": FASHION_RUN_GROUP, "03_dde_generator.ipynb": DDE_RUN_GROUP}


def printed(nb) -> str:
    return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.get("outputs", []) if out.get("output_type") == "stream")


@pytest.mark.parametrize("name", [pytest.param(n, marks=SMOKE_GROUPS[n]) if n in SMOKE_RUNS else n for n in EXPECTED])
def test_notebook_executes(name, monkeypatch, request):
    monkeypatch.setenv("DSM_JAX_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if name in SMOKE_RUNS:
        run_dir = request.getfixturevalue(SMOKE_RUNS[name])[0]
        monkeypatch.setenv("DSM_JAX_NOTEBOOK_RUN", str(run_dir))
    nb = nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)
    assert any(c.cell_type == "code" for c in nb.cells), f"{name} has no code cells"
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": ROOT}}).execute()
    assert notebook_problems(nb) == []
    if name in SMOKE_RUNS:  # the run was restored, not silently trained again
        assert f"from {run_dir}" in printed(nb), printed(nb)[-2000:]
