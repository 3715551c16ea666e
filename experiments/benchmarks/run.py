"""dsm_jax against PyTorch (CPU) and against per-step Python loops, side by side.

    python -m experiments.benchmarks                 # the full table (the paper-size rows)
    python -m experiments.benchmarks --quick         # smaller batches and chains (< 5 min)
    python -m experiments.benchmarks.run --out DIR   # the same entry point
    python -m experiments.benchmarks --rows peers    # only the torchebm / blackjax rows

Prints a table and writes ``DIR/benchmarks.json`` (default ``runs/benchmarks[-quick]``).
Every row runs in a fresh subprocess (``--in-process`` runs them in this one), so a row's
memory and environment do not leak into the next. Inside a row the implementations are
timed *interleaved in blocks*: after compilation and one warm-up call each, every round
runs a block of calls (≥ 0.25 s) of each implementation in turn, dropping the first call of
a block when calls are short (PyTorch's OpenMP threads spin on after its last call and slow
whatever runs next: per-call alternation made a 9.4 ms jax step read 14.4 ms), and reports
the median (and min) per implementation, so slow drifts of the machine hit all of them
alike; speed-ups are paired (median over rounds of the ratio of back-to-back blocks). Run
it on idle cores all the same: under background load PyTorch's OpenMP regions
wait for descheduled threads (a 23 ms MLP step measured 4.9 s median at load average 4),
which no interleaving evens out; the table flags a machine that was busy at the start.

Rows:

* ``peak``: float32 FLOP/s of matmuls (jax.jit and torch, n = 2048 and 4096) and of one
  3×3 convolution (8×8, 512 channels, batch 32; ``CanonicalConv`` ynn-off and torch); the
  best of them is the machine's measured peak, the denominator of every ``% peak``
  (oneDNN's direct convolution outruns both libraries' matmuls on this CPU).
* ``train_mlp``: one DSM training step (forward, input gradient, parameter gradient, Adam)
  of the DDE toy MLP (25 × 32 softplus, batch 2048, 2-D).
* ``train_resnet_b{B}``: one MDSM training step of MDSM's Fashion-MNIST ResNet
  (``RESNET_CONFIGS["fashion_mnist"]``: 6 residual blocks, stem width 64, 32×32×1, batch B),
  dsm_jax with ``CanonicalConv`` and with ``nn.Conv``.
* ``conv_ops_b{B}``: every convolution of that ResNet on its own (shapes read off the module,
  ``(xN)`` = how often it occurs): forward, input gradient and kernel gradient of
  ``CanonicalConv`` (its custom VJPs) against PyTorch's ``conv2d`` / ``convolution_backward``,
  plus their count-weighted sums: the convolutions' share of the training-step gap.
* Every jax implementation named ``... ynn-off`` is compiled with
  ``dsm_jax.compiler_options(ynn_fusions=False)`` (XLA:CPU's own dot/convolution emitters
  instead of its YNNPACK library fusions, per computation); the others with XLA's defaults.
* ``..._hugetlb`` rows: the same with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` for both
  frameworks (XLA mallocs each call's temporaries afresh; with 4 KiB pages every call
  page-faults them in again).
* ``langevin_mlp`` (10,000 chains), ``langevin_mlp_100chains``, ``langevin_resnet`` (256
  chains; ``CanonicalConv`` and ``MatmulConv``): unadjusted Langevin chains, throughput in
  chain-steps per second for one ``lax.scan`` (``dsm_jax.langevin``), a jitted
  ``dsm_jax.langevin_kernel`` step called from a Python loop (same compile options), and
  the PyTorch loop. All evaluate ∇E n_steps + 1 times (at x0, then after every move), as
  ``dsm_jax.langevin``.

  The table adds, per jax variant with a loop, the kernels per step (scan body and jitted
  step, from the compiled HLO), the measured dispatch cost of one call, what the loop adds
  per step, and whether scan ≥ loop.
* ``train_mlp_ops``: the ``train_mlp`` step (ynn-off) traced with ``jax.profiler``, its
  kernel time summed per class of XLA kernel (:mod:`experiments.benchmarks.op_profile`):
  the largest remaining cost of the MLP step.
* ``peers`` (``--rows peers``): ``peer_dsm_torchebm``, ``peer_langevin_torchebm``,
  ``peer_mala_blackjax``, ``peer_ula_blackjax``: dsm_jax against torchebm and blackjax on a
  4 × 128 softplus MLP, each checked equal first (:mod:`experiments.benchmarks.peers`);
  "vs torch (or peer)" is then dsm_jax against the peer.

Training rows first check that both frameworks compute the same thing: from the same
initial weights (copied flax → torch) and the same noise, the first-step losses and every
parameter gradient agree to float32 tolerance (``check`` in the JSON).

Measured per implementation: ``compile_s`` (jax: ``lower().compile()``), ``first_call_s``,
``median_s``/``min_s`` over the repeats, ``flops`` per call (XLA's cost analysis of the
jax computation, used for both frameworks), achieved FLOP/s and its fraction of the
measured matmul peak, and ``peak_rss_mib``: the growth of the process's peak resident set
(VmHWM, reset through /proc/self/clear_refs after ``malloc_trim``) during the first call
after compilation, i.e. the host memory one call needs beyond what was already resident
(parameters, inputs, compiled code). For jax also ``xla_temp_mib``, XLA's own buffer
assignment for temporaries (``compiled.memory_analysis()``).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

from experiments.benchmarks.harness import paired_speedup
from experiments.benchmarks.kernels import CONV_OPS, resnet_conv_shapes  # noqa: F401  (the tests' names)
from experiments.benchmarks.modes import HUGETLB_ENV, MODES, PEER_ROWS, ROW_GROUPS, row_specs  # noqa: F401
from experiments.benchmarks.op_profile import profile_lines
from experiments.benchmarks.peers import peer_check_line
from experiments.benchmarks.rows import run_row

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_row_subprocess(spec: dict) -> dict:
    env = dict(os.environ, **spec.get("env", {}))
    proc = subprocess.run([sys.executable, "-m", "experiments.benchmarks.run", "--_row", json.dumps(spec)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_ROW "):
            return json.loads(line[len("BENCH_ROW "):])
    raise RuntimeError(f"benchmark row {spec['name']!r} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


# ---------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------


def machine_info() -> dict:
    import jax
    import jaxlib

    info = dict(platform=platform.platform(), python=platform.python_version(), cpu_count=os.cpu_count(),
                cpus_usable=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                jax=jax.__version__, jaxlib=jaxlib.__version__, xla_flags=os.environ.get("XLA_FLAGS", ""),
                date=datetime.datetime.now().isoformat(timespec="seconds"))
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu_model"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        info["cpu_model"] = platform.processor()
    try:
        import torch

        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    except ImportError:
        info["torch"] = None
    import flax

    info["flax"] = flax.__version__
    return info


def finish(rows: list[dict], peak: float | None) -> None:
    """Achieved FLOP/s, % of the matmul peak and speed-ups against torch, per implementation."""
    for row in rows:
        if row["kind"] == "peak":
            continue
        torch = row["impls"].get("torch", row["impls"].get("torch python loop"))
        for name, v in row["impls"].items():
            if v.get("flops"):
                v["gflops_per_s"] = v["flops"] / v["median_s"] / 1e9
                v["fraction_of_peak"] = v["gflops_per_s"] / peak if peak else None
            if row["kind"] == "conv_ops":  # each op against torch's same op and shape
                torch = row["impls"][name.replace(v["framework"], "torch", 1)]
            v["speedup_vs_torch"] = paired_speedup(torch, v) if torch else None
        for name, peer in row.get("vs_peer", {}).items():  # dsm_jax against torchebm / blackjax
            row["impls"][name]["speedup_vs_peer"] = paired_speedup(row["impls"][peer], row["impls"][name])
        if row["kind"] == "conv_ops":
            row["totals"] = conv_totals(row)
        if row["kind"].startswith("langevin"):
            for k, v in row["impls"].items():  # a scan against the Python loop of the same jax variant
                loop = row["impls"].get(k.replace(" lax.scan", " python loop")) if k.endswith(" lax.scan") else None
                v["speedup_vs_jax_python_loop"] = paired_speedup(loop, v) if loop else None
                if loop:  # what the loop adds per step, against what one call costs by itself
                    v["loop_overhead_per_step_s"] = (loop["median_s"] - v["median_s"]) / row["sizes"]["steps"]


def conv_totals(row: dict) -> dict:
    """Per op and over all three: Σ count × median time of the network's convolutions, jax
    and torch, and torch/jax (the convolutions' share of a ResNet training step)."""
    out = {}
    for op in CONV_OPS + ("all",):
        sums = {fw: sum(v["count"] * v["median_s"] for v in row["impls"].values()
                        if v["framework"] == fw and op in ("all", v["op"])) for fw in ("jax ynn-off", "torch")}
        out[op] = dict(jax_s=sums["jax ynn-off"], torch_s=sums["torch"], speedup_vs_torch=sums["torch"] / sums["jax ynn-off"])
    return out


def table(result: dict) -> str:
    lines = [f"# dsm_jax benchmarks ({result['mode']}), {result['machine'].get('cpu_model')}, "
             f"{result['machine']['cpus_usable']} cores, jax {result['machine']['jax']}, torch {result['machine'].get('torch')}",
             f"measured peak (best matmul or 3x3 convolution): {result['peak_gflops_per_s'] or float('nan'):.1f} GFLOP/s; "
             f"load average {result['loadavg_start'][0]:.2f} at start (1 min), {result['loadavg_end'][0]:.2f} at end "
             f"(includes this run)"
             + (" (BUSY MACHINE at start: torch's OpenMP threads stall behind other processes; rerun idle)"
                if result['loadavg_start'][0] > 0.5 else ""),
             "", "| row | implementation | median | min | throughput | vs torch (or peer) | GFLOP/s | % peak | compile s | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        for name, v in row["impls"].items():
            if row["kind"] == "peak":
                thr = f"{v['gflops_per_s']:.1f} GFLOP/s"
            elif "chain_steps_per_s" in v:
                thr = f"{v['chain_steps_per_s']:,.0f} chain-steps/s"
                if v.get("speedup_vs_jax_python_loop"):
                    thr += f" ({v['speedup_vs_jax_python_loop']:.2f}× its loop)"
            else:
                thr = f"{row['items_per_call'] / v['median_s']:,.0f} examples/s"
            fmt = lambda a, f="{:.2f}": "–" if a is None else f.format(a)  # noqa: E731
            vs = fmt(v.get('speedup_vs_torch'), '{:.2f}×')
            if v.get("speedup_vs_peer") is not None:
                vs = f"{v['speedup_vs_peer']:.2f}× {row['vs_peer'][name]}"
            lines.append(
                f"| {row['name']} | {name} | {v['median_s'] * 1e3:.1f} ms | {v['min_s'] * 1e3:.1f} ms | {thr} | "
                f"{vs} | {fmt(v.get('gflops_per_s'), '{:.1f}')} | "
                f"{fmt(None if v.get('fraction_of_peak') is None else 100 * v['fraction_of_peak'], '{:.0f}')} | "
                f"{fmt(v.get('compile_s'), '{:.1f}')} | {fmt(v.get('peak_rss_mib'), '{:.0f}')} |")
    checks = [(r["name"], r["check"]) for r in result["rows"] if "check" in r]
    for r in result["rows"]:
        if "totals" in r:
            t = r["totals"]
            lines += ["", f"{r['name']}: Σ count × time over the network's convolutions, jax / torch: " + ", ".join(
                f"{op} {t[op]['jax_s'] * 1e3:.0f} / {t[op]['torch_s'] * 1e3:.0f} ms ({t[op]['speedup_vs_torch']:.2f}×)"
                for op in (*CONV_OPS, "all")) + "; max rel. difference to torch "
                + f"{max(e for sh in r['sizes']['shapes'] for e in sh['rel_err'].values()):.1e}"]
    lines += scan_vs_loop_lines(result)
    for r in result["rows"]:
        if "profile" in r:
            lines += [""] + profile_lines(r, result["peak_gflops_per_s"])
    if checks:
        lines.append("")
        for name, c in checks:
            if name in PEER_ROWS:
                lines.append(f"{name}: {peer_check_line(c)}")
                continue
            lines.append(f"{name}: first-step loss jax {c['loss_jax']:.6g} torch {c['loss_torch']:.6g} "
                         f"(rel {c['loss_rel_err']:.1e}), max parameter-gradient rel err {c['grad_max_rel_err']:.1e}")
    return "\n".join(lines)


def scan_vs_loop_lines(result: dict) -> list[str]:
    """Per Langevin row and jax variant: kernels per step (compiled HLO), what one call of a
    compiled step costs by itself, what the Python loop adds per step, and scan ≥ loop."""
    out = []
    for row in result["rows"]:
        for name, v in row["impls"].items():
            loop = row["impls"].get(name.replace(" lax.scan", " python loop"))
            if not name.endswith(" lax.scan") or loop is None or "dispatch_s" not in loop:
                continue
            step_s = v["median_s"] / row["sizes"]["steps"]
            out.append(f"{row['name']} {name[:-len(' lax.scan')]}: {v['kernels_per_step']} kernels per step in the scan "
                       f"({loop['kernels_per_step']} in the jitted step), dispatch {loop['dispatch_s'] * 1e3:.3f} ms per "
                       f"call, the loop adds {v['loop_overhead_per_step_s'] * 1e3:.3f} ms per step to "
                       f"{step_s * 1e3:.3f} ms; scan ≥ loop: "
                       f"{'yes' if v['speedup_vs_jax_python_loop'] >= 1 else 'NO'} ({v['speedup_vs_jax_python_loop']:.2f}×)")
    return [""] + out if out else []


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller batches/chains, fewer repeats")
    ap.add_argument("--tiny", action="store_true", help="toy sizes: every code path in seconds (tests)")
    ap.add_argument("--out", default=None, help="directory for benchmarks.json")
    ap.add_argument("--rows", default=None, help="comma-separated row names or groups to run "
                    "('peers': the torchebm and blackjax rows; default: all; without 'peak' there is no %% of peak)")
    ap.add_argument("--in-process", action="store_true", help="run rows in this process (no per-row isolation)")
    ap.add_argument("--_row", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._row is not None:  # child process: one row, result on stdout
        print("BENCH_ROW " + json.dumps(run_row(json.loads(args._row))), flush=True)
        return {}
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    specs = row_specs(mode)
    if args.rows:
        keep = {name for word in args.rows.split(",") for name in ROW_GROUPS.get(word, (word,))}
        unknown = keep - {s["name"] for s in specs}
        if unknown:
            raise SystemExit(f"--rows: unknown {sorted(unknown)}; choose from {[s['name'] for s in specs]} "
                             f"or the groups {sorted(ROW_GROUPS)}")
        specs = [s for s in specs if s["name"] in keep]
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    rows = []
    for spec in specs:
        print(f"[bench] {spec['name']} ...", flush=True)
        if args.in_process:
            if spec.get("env"):
                print(f"[bench] {spec['name']}: --in-process cannot set its environment; skipped", flush=True)
                continue
            rows.append(run_row(spec))
        else:
            rows.append(run_row_subprocess(spec))
    peak = next((r["peak_gflops_per_s"] for r in rows if r["kind"] == "peak"), None)
    finish(rows, peak)
    result = dict(mode=mode, machine=machine_info(), peak_gflops_per_s=peak, rows=rows,
                  total_wall_s=time.perf_counter() - t0, loadavg_start=load0, loadavg_end=os.getloadavg(),
                  command=" ".join(["python -m experiments.benchmarks"] + (argv if argv is not None else sys.argv[1:])))
    out = args.out or os.path.join("runs", "benchmarks" + ("" if mode == "full" else f"-{mode}"))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "benchmarks.json"), "w") as f:
        json.dump(result, f, indent=1)
    text = table(result)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"\nwrote {os.path.join(out, 'benchmarks.json')} ({result['total_wall_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
