"""Tables and summaries of results: markdown tables, a study's ``<stem>.json`` + ``<stem>.md``,
and the checks a result passes before it is written."""
from __future__ import annotations

import os

import jax
import numpy as np

from experiments.common.rundir import RUN_FILE, record_run, write_json


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A markdown table: ``header`` cells, then one line per row of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_summary(out: str, stem: str, summary, table: str) -> None:
    """A study's two files: ``<out>/<stem>.json`` (``summary``) and ``<out>/<stem>.md`` (``table``).
    A directory whose script did not record its run at the start gets this process's record
    now (:func:`experiments.common.rundir.record_run`), so a summary never sits without one."""
    os.makedirs(out, exist_ok=True)
    if not os.path.exists(os.path.join(out, RUN_FILE)):
        record_run(out)
    write_json(os.path.join(out, f"{stem}.json"), summary)
    with open(os.path.join(out, f"{stem}.md"), "w") as f:
        f.write(table + "\n")


def refuse_nonfinite(samples, what: str, fix: str) -> None:
    """Never write or score NaN images: raise naming how many samples are non-finite."""
    finite = np.isfinite(np.asarray(samples)).reshape(len(samples), -1).all(axis=1)
    if not finite.all():
        raise FloatingPointError(f"{int((~finite).sum())} of {len(samples)} {what} are non-finite (first at "
                                 f"index {int(np.argmin(finite))}); nothing was written. {fix}")


def n_params(tree) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(tree)))
