"""A run directory and what it records: ``config.json`` (the validated config), ``run.json``
(the code that ran it: commit, dirty flag, command line, start time; later starts in the same
directory appended under ``reruns``) and the JSON helpers every script writes with."""
from __future__ import annotations

import datetime
import json
import os
import shlex
import subprocess
import sys

import dsm_jax as dj
from dsm_jax import config as cfgs
from dsm_jax import parallel

RUN_FILE = "run.json"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout
CODE_DIRS = ("dsm_jax", "experiments")  # a change to a tracked file here makes a run "dirty"


def start(base, presets: dict, doc: str, argv=None, *, script: str, flags=(), distributed: bool = True):
    """Parse ``--preset``/``--set`` (validated), make the run directory (default
    ``runs/<script>-<preset>``), write its ``config.json`` and record the run in its
    ``run.json`` (:func:`record_run`); returns ``(cfg, args, out)``. ``script`` is the module's
    name under ``experiments``. ``distributed``: initialise multi-host JAX first (multi-host
    launches only; before any JAX computation)."""
    if distributed:
        parallel.maybe_initialize_distributed()
    cfg, args = cfgs.parse_args(base, presets, doc.splitlines()[0], argv, flags=flags)
    out = args.out or os.path.join("runs", f"{script}-{args.preset}")
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "config.json"), {"preset": args.preset, **cfgs.to_dict(cfg)})
    record_run(out, f"experiments.{script}", argv)
    return cfg, args, out


def code_version(root: str = ROOT) -> dict:
    """``{"commit": short hash}`` of the checkout at ``root``, plus ``"dirty": True`` when a
    tracked file under :data:`CODE_DIRS` differs from that commit; ``{"commit": "unknown"}``
    outside git (or without git)."""
    def git(*args):
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", *CODE_DIRS)
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown"}
    return {"commit": commit, **({"dirty": True} if changed else {})}


def _argv() -> list[str]:
    return list(getattr(sys, "argv", None) or [""])  # an embedded interpreter may have none


def process_command() -> str:
    """This process's command line as it was typed: ``python -m <module> ARGS`` when it was
    started as a module, else ``python <script> ARGS``."""
    spec, argv = getattr(sys.modules.get("__main__"), "__spec__", None), _argv()
    if spec is not None and spec.name:
        return shlex.join(["python", "-m", spec.name.removesuffix(".__main__"), *argv[1:]])
    return shlex.join(["python", *argv])


def run_entry(module: str | None = None, argv=None) -> dict:
    """What a run records at its start: :func:`code_version`, ``command`` (``python -m module``
    and ``argv``, default this process's arguments; without ``module``, this process's command),
    ``started`` (UTC) and, when another command called the script's ``main`` (a study's rows,
    a test), ``called_by``: that command."""
    process = process_command()
    argv = _argv()[1:] if argv is None else [str(a) for a in argv]
    command = process if module is None else shlex.join(["python", "-m", module, *argv])
    entry = {**code_version(), "command": command,
             "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    return entry if command == process else {**entry, "called_by": process}


def record_run(out: str, module: str | None = None, argv=None) -> dict:
    """Write ``<out>/run.json`` (:func:`run_entry`) at a run's start. A directory that has one
    keeps it and gets the new entry appended to its ``reruns`` (a resume, or a rerun over it),
    so the first record is never lost. Returns the whole record."""
    path, entry = os.path.join(out, RUN_FILE), run_entry(module, argv)
    record = read_json(path) if os.path.exists(path) else None
    if record is None:
        record = entry
    else:
        record.setdefault("reruns", []).append(entry)
    write_json(path, record)
    return record


def restore_latest(run_dir: str, template, script: str):
    """The latest checkpoint under ``<run_dir>/checkpoints``, restored into ``template``'s
    structure (a freshly initialised state of the run's config); raises, naming the command
    that trains one (``python -m experiments.<script>``), when there is none."""
    ckpt = dj.Checkpoints(os.path.join(run_dir, "checkpoints"))
    try:
        restored = ckpt.restore_latest(template)
    finally:
        ckpt.close()
    if restored is None:
        raise FileNotFoundError(f"No checkpoint under {run_dir}/checkpoints; train first: "
                                f"python -m experiments.{script} --out {run_dir}")
    return restored[0]


def experiment_of(config_json: dict) -> str:
    """Which image experiment wrote a run's ``config.json``: ``"mdsm"`` (fashion_mnist) or
    ``"dde"`` (fashion_mnist_dde); reads the nested names and the flat ones of earlier runs."""
    keys = set(config_json)
    if {"train.sigma_min", "train.sigma0"} <= keys or {"sigma_min", "sigma0"} <= keys:
        return "mdsm"
    if {"gen.every", "train.sigma"} <= keys or {"gen_every", "sigma"} <= keys:
        return "dde"
    raise ValueError("Cannot tell which experiment wrote this run's config.json (expected the fields of "
                     "experiments.fashion_mnist or experiments.fashion_mnist_dde); pass the run directory of one.")


def write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def read_json(path: str):
    with open(path) as f:
        return json.load(f)
