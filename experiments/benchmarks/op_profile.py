"""Where the time of a compiled jax step goes, per kind of XLA kernel: the ``*_ops`` rows.

XLA:CPU runs an executable as a sequence of thunks (one per kernel) and, under
``jax.profiler.trace``, records one event per thunk named after its HLO instruction. The
profile row traces a few calls of the compiled step, maps every event back to its
instruction in the optimized HLO and sums the time per class: ``dot`` (the matmuls, with
their FLOPs counted from the HLO shapes), fusions by the elementwise work inside them
(``softplus`` = exp and log1p: the activation; ``exp`` without log1p: its derivatives,
the logistic; ``other``), copies, the rest (a ``while``'s time is its body's kernels,
counted in their classes). The per-thunk events add
a little time of their own to every kernel, so shares are read as relative; the row's
wall time per call is measured without the profiler by the training rows.
"""
from __future__ import annotations

import collections
import glob
import os
import re
import tempfile

from experiments.benchmarks.harness import _COMPUTATION, _INSTRUCTION, _OPCODE, _jax_compile
from experiments.benchmarks.modes import DSM_SIGMA, MODES

_CONTAINERS = {"while", "call", "conditional"}  # kernels that run other kernels
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_SHAPE = re.compile(r"^[a-z]\w*\[([\d,]*)\]")
_OPERANDS = re.compile(r"\bdot\((%[^,]+),\s*(%[^)]+)\)")
_LHS_CONTRACT = re.compile(r"lhs_contracting_dims=\{([\d,]*)\}")


def parse_hlo(hlo_text: str) -> tuple[dict, dict]:
    """``({instruction: (opcode, text)}, {computation: set of opcodes})`` of an HLO module."""
    ops, inner, comp = {}, collections.defaultdict(set), None
    for line in hlo_text.splitlines():
        m = _COMPUTATION.match(line)
        if m:
            comp = m.group(2)
            continue
        m = _INSTRUCTION.match(line)
        if m:
            op = _OPCODE.search(m.group(1))
            name = line.split("=", 1)[0].strip().removeprefix("ROOT").strip().lstrip("%")
            ops[name] = (op.group(1) if op else "?", m.group(1))
            inner[comp].add(op.group(1) if op else "?")
    return ops, inner


def kernel_class(name: str, ops: dict, inner: dict) -> str:
    op, text = ops.get(name, ("?", ""))
    if op == "fusion":
        called = inner.get(_CALLS.search(text).group(1), set()) if _CALLS.search(text) else set()
        if "dot" in called:
            return "dot (fused)"
        if "log-plus-one" in called:
            return "elementwise: softplus (exp, log1p)"
        if "exponential" in called or "logistic" in called:
            return "elementwise: exp (softplus' derivatives)"
        if "reduce" in called:
            return "reduce"
        return "elementwise: other"
    return op


def dot_flops(name: str, ops: dict) -> float:
    """2 × output elements × contracted size of one ``dot`` instruction."""
    _, text = ops[name]
    out = [int(d) for d in _SHAPE.match(text).group(1).split(",") if d]
    lhs = _OPERANDS.search(text).group(1).lstrip("%")
    lhs_dims = [int(d) for d in _SHAPE.match(ops[lhs][1]).group(1).split(",") if d]
    k = 1
    for d in _LHS_CONTRACT.search(text).group(1).split(","):
        k *= lhs_dims[int(d)]
    n = 1
    for d in out:
        n *= d
    return 2.0 * n * k


def profile_compiled(compiled, args, calls: int = 5) -> dict:
    """Per kernel class: ms per call, share of the summed kernel time, kernels per call
    (and for dots GFLOP/s), from a ``jax.profiler`` trace of ``calls`` calls."""
    import jax

    for _ in range(2):
        jax.block_until_ready(compiled(*args))
    trace_dir = tempfile.mkdtemp(prefix="dsm_jax_profile_")
    with jax.profiler.trace(trace_dir):
        for _ in range(calls):
            jax.block_until_ready(compiled(*args))
    pb = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[-1]
    ops, inner = parse_hlo(compiled.as_text())
    time_ns, count, flops, containers = (collections.Counter() for _ in range(4))
    for plane in jax.profiler.ProfileData.from_file(pb).planes:
        for line in plane.lines:
            for e in line.events:
                if e.name not in ops:  # python frames, thread-pool markers, "end: ..." events
                    continue
                if ops[e.name][0] in _CONTAINERS:  # its body's kernels have events of their own
                    containers[ops[e.name][0]] += e.duration_ns
                    continue
                cls = kernel_class(e.name, ops, inner)
                time_ns[cls] += e.duration_ns
                count[cls] += 1
                if ops[e.name][0] == "dot":
                    flops[cls] += dot_flops(e.name, ops)
    total = sum(time_ns.values())
    classes = {cls: dict(ms_per_call=t / 1e6 / calls, share=t / total, kernels_per_call=count[cls] / calls,
                         gflops_per_s=(flops[cls] / t) if flops[cls] else None)
               for cls, t in time_ns.most_common()}
    return dict(classes=classes, kernel_ms_per_call=total / 1e6 / calls, largest=next(iter(classes)), calls=calls,
                containers_ms_per_call={k: v / 1e6 / calls for k, v in containers.items()})


def run_train_mlp_ops(spec) -> dict:
    """The toy-MLP DSM training step (the ``train_mlp`` row's, ynn-off) profiled per kernel class."""
    import jax

    import dsm_jax as dj
    from dsm_jax import toy

    m = MODES[spec["mode"]]
    cfg = m["mlp"]
    k_init, k_data, k_state = jax.random.split(jax.random.key(0), 3)
    module = dj.MLPEnergy(cfg["depth"], cfg["width"])
    params = dj.init_params(module, k_init, (2,))
    x = toy.get_toy("eight_gaussians").sample(k_data, cfg["batch"])
    opt = dj.adam(1e-3)
    step = dj.make_train_step(dj.dsm_loss(dj.energy_fn_of(module), DSM_SIGMA), opt)
    state = dj.init_train_state(params, opt, k_state)
    compiled, info = _jax_compile(step, state, x, ynn_fusions=False)
    prof = profile_compiled(compiled, (state, x), calls=m.get("profile_calls", 5))
    return dict(impls={}, profile=dict(prof, flops=info["flops"]), sizes=cfg, unit="step")


def profile_lines(row: dict, peak: float | None) -> list[str]:
    p = row["profile"]
    out = [f"{row['name']}: kernel time {p['kernel_ms_per_call']:.2f} ms per call under the profiler; "
           f"largest cost: {p['largest']}"]
    for cls, v in p["classes"].items():
        extra = ""
        if v["gflops_per_s"]:
            extra = f", {v['gflops_per_s']:.0f} GFLOP/s" + (f" ({100 * v['gflops_per_s'] / peak:.0f} % of peak)" if peak else "")
        out.append(f"  {cls}: {v['ms_per_call']:.2f} ms ({100 * v['share']:.0f} %), {v['kernels_per_call']:.0f} kernels{extra}")
    return out
