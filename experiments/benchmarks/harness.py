"""Measurement helpers: interleaved block timing, paired speed-ups, jax compilation with
its cost and memory analyses, the first call's peak-RSS growth."""
from __future__ import annotations

import ctypes
import math
import re
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


def jax_train_call(step, params, opt, key, x, ynn_fusions: bool):
    """A compiled ``make_train_step`` step as a zero-argument call that advances its own
    state, and its compile info (with the first call's time and memory)."""
    import jax

    import dsm_jax as dj

    state = [dj.init_train_state(params, opt, key)]
    compiled, info = _jax_compile(step, state[0], x, ynn_fusions=ynn_fusions)

    def call():
        state[0], metrics = compiled(state[0], x)
        jax.block_until_ready(metrics)

    info.update(_first_call(call))
    return call, info


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

# Ops that XLA:CPU runs without a kernel of their own (buffer plumbing).
_NO_KERNEL = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast"}
_COMPUTATION = re.compile(r"^(ENTRY\s+)?%(\S+)\s.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT\s+)?%\S+\s+=\s+(.*)$")
_OPCODE = re.compile(r"(?<![\w.\-])([a-z][a-z0-9\-]*)\(")
_BODY = re.compile(r"body=%([\w.\-]+)")
_TRIPS = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')


def hlo_kernels(hlo_text: str) -> dict:
    """Kernels per call of an optimized HLO module (``compiled.as_text()``): the entry
    computation's instructions that are not buffer plumbing (parameter, constant, tuple,
    get-tuple-element, bitcast), each ``while`` counted as its body × its known trip count
    (1 when unknown). Returns ``{"entry": n, "whiles": [(trip_count, kernels per trip), ...]}``,
    the entry's whiles outermost first."""
    comps, name, entry = {}, None, None
    for line in hlo_text.splitlines():
        m = _COMPUTATION.match(line)
        if m:
            name = m.group(2)
            comps[name] = []
            entry = name if m.group(1) else entry
            continue
        m = _INSTRUCTION.match(line)
        if m and name is not None:
            op = _OPCODE.search(m.group(1))
            comps[name].append((op.group(1) if op else "?", m.group(1)))

    def count(comp: str, whiles: list | None) -> int:
        n = 0
        for op, text in comps.get(comp, ()):
            if op == "while":
                body = _BODY.search(text).group(1)
                trips = _TRIPS.search(text)
                per_trip = count(body, None)
                if whiles is not None:
                    whiles.append((int(trips.group(1)) if trips else 1, per_trip))
                n += per_trip * (int(trips.group(1)) if trips else 1)
            elif op not in _NO_KERNEL:
                n += 1
        return n

    whiles: list = []
    return dict(entry=count(entry, whiles), whiles=whiles)


def dispatch_s(compiled, *args, calls: int = 200) -> float:
    """Median seconds of one call of an already compiled computation, dispatch to result:
    for a computation doing (almost) nothing, the cost of calling it."""
    import jax

    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
