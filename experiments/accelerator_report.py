"""The accelerator check's report (``experiments.accelerator_check``): its JSON as markdown."""
from __future__ import annotations


def _gib(n) -> str:
    return "–" if n is None else f"{n / 2**30:.2f} GiB"


def _ms(s) -> str:
    return "–" if s is None else f"{s * 1e3:.2f} ms"


def markdown(report: dict) -> str:
    """``accelerator_check.md``: the environment, one row per part, the presets' extrapolated
    hours, the benchmark rows beside the CPU figures, and the tests' summary."""
    from experiments.common import markdown_table  # imports jax: only once the parts have run

    parts = report["parts"]
    env = parts.get("environment", {})
    pk = env.get("packages", {})
    head = [f"# Accelerator check ({report['mode']}), {report['date']}"]
    if env.get("ok"):
        kinds = sorted({d["kind"] for d in env["devices"]})
        head.append(f"{env['device_count']} × {', '.join(kinds)} ({env['backend']}); python {env['python']}, "
                    + ", ".join(f"{n} {pk[n]['version'] if pk[n]['importable'] else 'absent'}"
                                for n in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex",
                                          "tensorflow-datasets"))
                    + (f"; plugins {', '.join(env['accelerator_plugins'])}" if env["accelerator_plugins"] else ""))
    head.append(f"all parts passed: {'yes' if report['ok'] else 'NO'} ({report['total_seconds']:.0f} s of "
                f"{report['total_budget_s']:.0f} s)")
    rows = [[n, "ok" if r["ok"] else "**FAILED**", f"{r.get('seconds', 0):.1f}", _gib(r.get("peak_device_bytes")),
             (r.get("summary") or "") if r["ok"] else r["error"].replace("|", "/").replace("\n", " ")[:200]]
            for n, r in parts.items()]
    out = ["\n".join(head), "", markdown_table(["part", "status", "seconds", "peak device memory", "result"], rows)]
    preset_rows = []
    for name in ("mdsm_fashion_mnist", "mdsm_cifar10", "dde_fashion_mnist"):
        r = parts.get(name, {})
        if r.get("ok") and "steps_per_s" in r:
            preset_rows.append([name, f"{r['steps_per_s']:,.1f}", f"{r['paper_steps']:,}", f"{r['paper_hours']:.2f}",
                                _gib(r.get("peak_device_bytes"))])
    for method, r in parts.get("toy2d", {}).get("runs", {}).items() if parts.get("toy2d", {}).get("ok") else ():
        preset_rows.append([f"toy2d {method}", f"{r['steps_per_s']:,.1f}", f"{r['paper_steps']:,}",
                            f"{r['paper_hours']:.2f}", _gib(parts["toy2d"].get("peak_device_bytes"))])
    if preset_rows:
        out += ["", markdown_table(["paper preset (synthetic data)", "steps/s", "preset's steps",
                                    "hours extrapolated", "peak device memory"], preset_rows)]
    bench_rows = []
    for part, key, unit in (("bench_train", "steps_per_s", "steps/s"),
                            ("bench_langevin", "chain_steps_per_s", "chain-steps/s")):
        for row, r in parts.get(part, {}).get("rows", {}).items() if parts.get(part, {}).get("ok") else ():
            cpu = r.get("cpu")
            cpu_cell = "–" if not cpu else (f"{_ms(cpu['median_s'])} ({cpu['impl']}, {cpu['cores']} {cpu['machine']} "
                                            f"cores, jax {cpu['jax']})")
            for impl, v in r["impls"].items():
                bench_rows.append([row, impl, _ms(v["median_s"]), f"{v[key]:,.0f} {unit}",
                                   f"{v['compile_s']:.1f}", cpu_cell])
    if bench_rows:
        out += ["", markdown_table(["benchmark row", "implementation", "median", "throughput", "compile s",
                                    "CPU median (docs/benchmarks)"], bench_rows)]
    tests = parts.get("tests")
    if tests:
        out += ["", f"tests: `{tests.get('command', '')}`: {tests.get('summary', '')}"
                + (f"; failed: {', '.join(tests['failed'])}" if tests.get("failed") else "")]
    return "\n".join(out) + "\n"
