"""One command for an accelerator machine: what is installed, the tests that matter on a
device, the benchmark rows and 200 steps of each paper preset, in about 5 minutes.

    bash scripts/accelerator_check.sh --out runs/accel            # on the GPU/TPU machine
    bash scripts/accelerator_check.sh --out /tmp/accel --dry-run  # tiny sizes on a CPU (its test)
    python -m experiments.accelerator_check --parts environment,toy2d

Runs from the source tree (no install: ``PYTHONPATH=.``) with whatever jax is there, and needs
neither tensorflow-datasets nor data files: the image presets train on synthetic arrays of
their image shape. Parts, each with its own time budget and its own process (a part that
fails or overruns is reported, with its traceback, and the rest still run):

* ``environment``: python, jax, jaxlib, flax, optax, orbax, chex, tfds (absent is fine), the
  accelerator plugin; backend, devices and memory per device.
* ``tests``: pytest on the core contract, samplers, multi-device (8 host devices) and
  resume/checkpoint tests, none of which needs tfds or Fashion-MNIST.
* ``multi_device``: the data-parallel step and sharded chains on a mesh of all local devices
  against the one-device programs.
* ``bench_train``, ``bench_langevin``: the benchmark's training and sampling rows at paper
  size (``experiments.benchmarks`` sizes), jax only, beside the committed CPU figures.
* ``mdsm_fashion_mnist``, ``mdsm_cifar10``, ``dde_fashion_mnist``, ``toy2d``: each paper preset
  through its experiment's own ``train`` for 250 steps (50 to compile, 200 timed), steps/s
  extrapolated to the preset's step count, and peak device memory.

Writes ``accelerator_check.json`` and ``accelerator_check.md`` (:mod:`experiments.accelerator_report`)
to ``--out``; exits 0 only when every part passed. The parts are in
:mod:`experiments.accelerator_parts`; this module runs them, each in its own process.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

from experiments import accelerator_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_BUDGET_S = 300
DRY_TOTAL_BUDGET_S = 1800  # a busy CPU: the dry run checks code paths, not speed
# name -> (budget on the accelerator in seconds, budget of the dry run); order = run order.
BUDGETS = {
    "environment": (15, 60), "tests": (90, 60), "multi_device": (15, 60), "bench_train": (30, 60),
    "bench_langevin": (20, 60), "mdsm_fashion_mnist": (25, 60), "mdsm_cifar10": (60, 60),
    "dde_fashion_mnist": (20, 60), "toy2d": (25, 60),
}
# The tests that matter on a device; none of them needs tensorflow-datasets or Fashion-MNIST.
TEST_FILES = ("tests/test_core.py", "tests/test_samplers.py", "tests/test_parallel.py", "tests/test_training.py",
              "tests/test_resilience.py")
TEST_SELECT = {
    "gpu": "test_core or test_samplers or test_parallel or "
           "((test_training or test_resilience) and (resume or checkpoint or sigkill))",
    "dry": "test_mesh_argument_errors",  # one cheap test: the dry run checks the part, not the library
}
DRY_TEST_FILES = ("tests/test_parallel.py",)
# Every child: allocate device memory as needed (pytest workers and the parts share one
# device; XLA's default grabs 75 % of it in the first process).
CHILD_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _say(text: str) -> None:
    print(f"[accel {time.strftime('%H:%M:%S')}] {text}", flush=True)


def _env() -> dict:
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, **CHILD_ENV, PYTHONPATH=ROOT + (os.pathsep + path if path else ""))


def _stream(cmd: list[str], timeout: float, prefix: str, keep: int = 60) -> tuple[int | None, list[str], float]:
    """Run ``cmd`` in its own process group, echoing its output as it comes; past ``timeout``
    kill the group. Returns ``(exit code or None on timeout, last lines, seconds)``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    tail = collections.deque(maxlen=keep)

    def pump():
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            print(f"{prefix}{line}", end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=max(timeout, 0.1))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        code = None
    reader.join(5)
    return code, list(tail), time.perf_counter() - t0


def _failure(kind: str, message: str, tail: list[str]) -> dict:
    return {"ok": False, "error": f"{kind}: {message}", "traceback": "\n".join(tail[-25:])}


def run_tests(mode: str, budget: float) -> dict:
    """pytest on :data:`TEST_FILES` selected by ``TEST_SELECT[mode]``, in a subprocess."""
    import importlib.util

    workers = ["-n", "8"] if mode == "gpu" and importlib.util.find_spec("xdist") else ["-n", "0"]
    files = TEST_FILES if mode == "gpu" else DRY_TEST_FILES
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files, "-k", TEST_SELECT[mode],
           *workers]
    code, tail, seconds = _stream(cmd, budget, "  [tests] ", keep=500)  # all of pytest's FAILED lines
    summary = next((ln.strip("= ") for ln in reversed(tail) if re.search(r"\d+ (passed|failed|error)", ln)), "")
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary)}
    failed = [ln.split()[1] for ln in tail if ln.startswith(("FAILED ", "ERROR "))]
    result = {"command": " ".join(["python"] + cmd[1:]), "counts": counts, "failed": failed, "exit_code": code,
              "seconds": seconds, "summary": summary or "(no pytest summary)"}
    if code is None:
        return dict(result, **_failure("timeout", f"pytest ran past its {budget:.0f} s budget", tail))
    if code != 0:
        return dict(result, **_failure("failed", f"pytest exited {code}: {summary}", tail))
    return dict(result, ok=True)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the dry run's cost on a busy machine)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_part_here(name: str, mode: str) -> dict:
    """One part in this process: its measurements, or its error and traceback; and its
    seconds and the device's peak memory after it."""
    from experiments import accelerator_parts as parts

    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    try:
        result = dict(parts.PARTS[name](parts.SIZES[mode]), ok=True)
    except Exception as err:  # noqa: BLE001 - every failure is reported, the other parts still run
        result = {"ok": False, "error": f"{type(err).__name__}: {err}",
                  "traceback": "".join(traceback.format_exception(err)[-6:])}
    result["seconds"], result["cpu_seconds"] = time.perf_counter() - t0, _cpu_seconds() - cpu0
    try:
        result["peak_device_bytes"] = parts.peak_device_bytes()
    except Exception:  # noqa: BLE001 - a backend without memory stats
        result["peak_device_bytes"] = None
    return result


def run_part_isolated(name: str, mode: str, budget: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "result.json")
        cmd = [sys.executable, "-m", "experiments.accelerator_check", "--_part", name, "--_result", path,
               *(["--dry-run"] if mode == "dry" else [])]
        code, tail, seconds = _stream(cmd, budget, f"  [{name}] ")
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
    if code is None:
        return dict(_failure("timeout", f"ran past its {budget:.0f} s budget", tail), seconds=seconds)
    return dict(_failure("crashed", f"the part's process exited {code} without a result", tail), seconds=seconds)


def check(parts: list[str], mode: str, isolate: bool, total_budget: float) -> dict:
    t0 = time.perf_counter()
    results = {}
    for name in parts:
        left = total_budget - (time.perf_counter() - t0)
        budget = min(BUDGETS[name][mode == "dry"], left)
        if budget < 3:
            results[name] = {"ok": False, "error": f"skipped: the check's {total_budget:.0f} s budget was spent",
                             "seconds": 0.0}
            _say(f"{name}: SKIPPED (total budget spent)")
            continue
        _say(f"{name}: start (budget {budget:.0f} s)")
        if name == "tests":
            cpu0 = _cpu_seconds()
            results[name] = dict(run_tests(mode, budget))
            results[name]["cpu_seconds"] = _cpu_seconds() - cpu0
        elif isolate:
            results[name] = run_part_isolated(name, mode, budget)
        else:
            results[name] = run_part_here(name, mode)
        r = results[name]
        _say(f"{name}: {'ok' if r['ok'] else 'FAILED'} in {r.get('seconds', 0):.1f} s "
             f"(CPU {r.get('cpu_seconds', float('nan')):.1f} s)"
             + (f" - {r['summary']}" if r.get("summary") else "") + ("" if r["ok"] else f" - {r['error']}"))
    return {"mode": mode, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "ok": all(r["ok"] for r in results.values()), "total_seconds": time.perf_counter() - t0,
            "total_budget_s": total_budget, "parts": results}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/accelerator_check", help="directory for the JSON and the table")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on any machine (CPU): every code path")
    ap.add_argument("--parts", default=None, help=f"comma-separated subset of {list(BUDGETS)}")
    ap.add_argument("--in-process", action="store_true", help="run the parts in this process (no per-part "
                    "isolation or time limit; the default for --dry-run)")
    ap.add_argument("--isolate", action="store_true", help="one process per part (the default without --dry-run)")
    ap.add_argument("--total-budget", type=float, default=None, help=f"seconds for the whole check (default "
                    f"{TOTAL_BUDGET_S}; {DRY_TOTAL_BUDGET_S} for --dry-run, whose speed is the CPU's, not the check's)")
    ap.add_argument("--_part", help=argparse.SUPPRESS)
    ap.add_argument("--_result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    mode = "dry" if args.dry_run else "gpu"
    total_budget = args.total_budget or (DRY_TOTAL_BUDGET_S if args.dry_run else TOTAL_BUDGET_S)
    if args._part:  # a child: one part, its result to a file
        result = run_part_here(args._part, mode)  # the file appears only once the part has finished
        with open(args._result + ".tmp", "w") as f:
            json.dump(result, f, indent=1, default=str)
        os.replace(args._result + ".tmp", args._result)
        return 0
    parts = list(BUDGETS) if args.parts is None else [p for p in args.parts.split(",") if p]
    unknown = [p for p in parts if p not in BUDGETS]
    if unknown:
        ap.error(f"--parts: unknown {unknown}; choose from {list(BUDGETS)}")
    if args.in_process and args.isolate:
        ap.error("--in-process and --isolate exclude each other; pass one")
    isolate = args.isolate or not (args.in_process or args.dry_run)
    for k, v in CHILD_ENV.items():  # before this process imports jax (in-process parts)
        os.environ.setdefault(k, v)
    _say(f"{mode} run of {len(parts)} parts, {'one process each' if isolate else 'in this process'}, "
         f"budget {total_budget:.0f} s, out {args.out}")
    report = check(parts, mode, isolate, total_budget)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "accelerator_check.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    text = accelerator_report.markdown(report)
    with open(os.path.join(args.out, "accelerator_check.md"), "w") as f:
        f.write(text)
    print(text)
    _say(f"wrote {args.out}/accelerator_check.json and .md; {'all passed' if report['ok'] else 'SOME PARTS FAILED'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
