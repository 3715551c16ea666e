"""Measurement helpers: interleaved block timing, paired speed-ups, jax compilation with
its cost and memory analyses, the first call's peak-RSS growth."""
from __future__ import annotations

import ctypes
import math
import statistics
import time


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_growth_mib(fn):
    """Run ``fn()``; return (its result, growth of the peak RSS during it in MiB or None)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so reuse shows as growth
    except OSError:
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        base = _status_kib("VmHWM")  # read after the reset: the RSS it reset to
    except OSError:
        base = None
    out = fn()
    peak = _status_kib("VmHWM")
    return out, (None if base is None or peak is None else (peak - base) / 1024.0)


def interleaved(fns: dict, rounds: int, block_s: float, settle_s: float = 0.5) -> dict:
    """Time zero-argument callables in alternating blocks: each round runs a block of calls
    of every implementation in turn (≥ ``block_s`` of work per block) and keeps one time per
    call. Calls shorter than ``settle_s`` lose the first call of every block: right after
    PyTorch, its OpenMP threads still spin-wait for work and take the cores from the next
    call (measured: per-call alternation made a 9.4 ms jax step read 14.4 ms)."""
    per_call = {}
    for k, f in fns.items():  # one untimed-for-the-result call each sizes the blocks
        t0 = time.perf_counter()
        f()
        per_call[k] = time.perf_counter() - t0
    settle = {k: t < settle_s for k, t in per_call.items()}
    block = {k: int(settle[k]) + max(1, math.ceil(block_s / max(t, 1e-6))) for k, t in per_call.items()}
    times = {k: [] for k in fns}
    rounds_s = {k: [] for k in fns}  # per round, the median call of the block
    for _ in range(rounds):
        for k, f in fns.items():
            block_times = []
            for i in range(block[k]):
                t0 = time.perf_counter()
                f()
                if i or not settle[k]:
                    block_times.append(time.perf_counter() - t0)
            times[k] += block_times
            rounds_s[k].append(statistics.median(block_times))
    return {k: dict(times_s=v, rounds_s=rounds_s[k], median_s=statistics.median(v), min_s=min(v),
                    calls_per_block=block[k], first_call_of_block_dropped=settle[k]) for k, v in times.items()}


def paired_speedup(reference: dict, other: dict) -> float:
    """Median over rounds of reference/other block times: blocks of one round run back to
    back, so a change of the machine's speed between rounds cancels (on this VM the second
    core comes and goes for seconds at a time: the same step measured 9.6 and 17.5 ms within
    one process)."""
    return statistics.median(r / o for r, o in zip(reference["rounds_s"], other["rounds_s"]))


def _jax_name(conv: str | None = None, ynn_fusions: bool = True) -> str:
    """``jax``, ``jax[canonical]``, ``jax[nn.Conv] ynn-off``, ...: the implementation column."""
    base = "jax" if conv is None else f"jax[{'nn.Conv' if conv == 'xla' else conv}]"
    return base if ynn_fusions else base + " ynn-off"


def _jax_compile(fn, *args, ynn_fusions: bool = True):
    import jax

    import dsm_jax as dj

    t0 = time.perf_counter()
    compiled = jax.jit(fn, compiler_options=dj.compiler_options(ynn_fusions)).lower(*args).compile()
    info = dict(compile_s=time.perf_counter() - t0)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    info["flops"] = float(cost.get("flops", 0.0)) if cost else None
    try:
        info["xla_temp_mib"] = compiled.memory_analysis().temp_size_in_bytes / 2**20
    except Exception:  # noqa: BLE001 - not every backend reports it
        info["xla_temp_mib"] = None
    return compiled, info


def _first_call(fn) -> dict:
    t0 = time.perf_counter()
    _, mem = peak_rss_growth_mib(fn)
    return dict(first_call_s=time.perf_counter() - t0, peak_rss_mib=mem)


def _rel_err(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.max(np.abs(b))
    return float(np.max(np.abs(a - b)) / scale) if scale > 0 else float(np.max(np.abs(a)))


# ---------------------------------------------------------------------------------------
# Rows.
# ---------------------------------------------------------------------------------------