"""dsm_jax against PyTorch (CPU) and against per-step Python loops, side by side.

    python -m experiments.benchmarks                 # the full table (the paper-size rows)
    python -m experiments.benchmarks --quick         # smaller batches and chains (< 5 min)
    python experiments/benchmarks/run.py --out DIR   # same entry point as a script

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
import ctypes
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# glibc's malloc with transparent huge pages: XLA:CPU mallocs each call's temporaries as one
# block (61 MiB for the toy MLP's gradient at 10,000 chains), which glibc mmaps and the kernel
# faults in 4 KiB at a time on every call (15,600 minor faults per call measured); with
# huge pages 610.
HUGETLB_ENV = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}

# Sizes per mode. "tiny" is for the tests: every code path in seconds.
MODES = {
    "full": dict(
        mlp=dict(depth=25, width=32, batch=2048), mlp_repeats=30,
        resnet=dict(width=64, n_stages=3, blocks_per_stage=2, image=32), resnet_batches=(128, 64), resnet_repeats=5,
        langevin_mlp=dict(chains=10_000, steps=200), langevin_resnet=dict(chains=256, steps=3), langevin_repeats=3,
        peak_sizes=(2048, 4096), peak_conv=(32, 8, 512), peak_repeats=5, block_s=0.25,
    ),
    "quick": dict(
        mlp=dict(depth=25, width=32, batch=2048), mlp_repeats=10,
        resnet=dict(width=64, n_stages=3, blocks_per_stage=2, image=32), resnet_batches=(32,), resnet_repeats=3,
        langevin_mlp=dict(chains=10_000, steps=30), langevin_resnet=dict(chains=32, steps=2), langevin_repeats=3,
        peak_sizes=(2048,), peak_conv=(32, 8, 512), peak_repeats=5, block_s=0.25,
    ),
    "tiny": dict(
        mlp=dict(depth=3, width=8, batch=64), mlp_repeats=3,
        resnet=dict(width=4, n_stages=1, blocks_per_stage=1, image=8), resnet_batches=(4,), resnet_repeats=2,
        langevin_mlp=dict(chains=32, steps=2), langevin_resnet=dict(chains=4, steps=2), langevin_repeats=2,
        peak_sizes=(128,), peak_conv=(2, 4, 16), peak_repeats=2, block_s=0.005,
        # One torch thread: on a loaded 2-core machine each 2-thread OpenMP region of a tiny op
        # can wait a scheduler time slice (~12 ms measured) for its second thread.
        torch_threads=1,
        resnet_impls=(("canonical", False),), langevin_resnet_impls=(("canonical", False, True),),
        skip_rows=("langevin_mlp_100chains",),  # the same code path as langevin_mlp
    ),
}
# The losses' settings: DDE's toy σ; MDSM's Fashion-MNIST σ range, σ₀ and Adam β₂.
DSM_SIGMA, MDSM_SIGMAS, MDSM_SIGMA0 = 0.2, (0.1, 3.0), 0.1
LANGEVIN_STEP = 1e-3


def row_specs(mode: str) -> list[dict]:
    m = MODES[mode]
    rows = [dict(name="peak", kind="peak"), dict(name="train_mlp", kind="train_mlp")]
    for b in m["resnet_batches"]:
        rows.append(dict(name=f"train_resnet_b{b}", kind="train_resnet", batch=b))
    b = m["resnet_batches"][0]
    rows.append(dict(name=f"train_resnet_b{b}_hugetlb", kind="train_resnet", batch=b, env=HUGETLB_ENV,
                     impls=("jax[canonical] ynn-off", "torch")))
    rows.append(dict(name=f"conv_ops_b{b}", kind="conv_ops"))
    rows += [dict(name="langevin_mlp", kind="langevin_mlp"),
             dict(name="langevin_mlp_hugetlb", kind="langevin_mlp", env=HUGETLB_ENV),
             dict(name="langevin_mlp_100chains", kind="langevin_mlp", chains=100),
             dict(name="langevin_resnet", kind="langevin_resnet")]
    skip = set(m.get("skip_rows", ()))
    rows = [r for r in rows if r["name"] not in skip]
    for r in rows:
        r["mode"] = mode
    return rows


# ---------------------------------------------------------------------------------------
# Measurement helpers.
# ---------------------------------------------------------------------------------------
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
def run_peak(spec) -> dict:
    import jax
    import torch

    import dsm_jax as dj
    from experiments.benchmarks import torch_impl as ti

    m = MODES[spec["mode"]]
    impls = {}
    for n in m["peak_sizes"]:
        a = jax.random.normal(jax.random.key(0), (n, n))
        mm, _ = _jax_compile(lambda u, v: u @ v, a, a)
        ta = torch.randn(n, n)
        fns = {f"jax matmul {n}": lambda: mm(a, a).block_until_ready(), f"torch matmul {n}": lambda: torch.mm(ta, ta)}
        for k, v in interleaved(fns, m["peak_repeats"], m["block_s"]).items():  # its sizing call warms up
            v["flops"] = 2.0 * n**3
            impls[k] = v
    # A 3x3 convolution too: oneDNN's direct convolution (PyTorch) runs faster than either
    # library's matmul here (measured 260 vs 213 GFLOP/s), so the peak is the best of all.
    batch, size, ch = m["peak_conv"]
    x = jax.random.normal(jax.random.key(1), (batch, size, size, ch))
    kernel = jax.random.normal(jax.random.key(2), (3, 3, ch, ch)) / (3 * ch**0.5)
    conv, _ = _jax_compile(lambda a, b: dj.nets.canonical_conv(a, b, ((1, 1), (1, 1))), x, kernel, ynn_fusions=False)
    tx, tk = ti.nchw(x), ti.oihw(kernel)
    label = f"conv 3x3 {size}x{size} {ch}->{ch} batch {batch}"
    fns = {f"jax ynn-off {label}": lambda: conv(x, kernel).block_until_ready(),
           f"torch {label}": lambda: torch.nn.functional.conv2d(tx, tk, padding=1)}
    for k, v in interleaved(fns, m["peak_repeats"], m["block_s"]).items():
        v["flops"] = 2.0 * batch * size * size * ch * ch * 9
        impls[k] = v
    for v in impls.values():
        v["gflops_per_s"] = v["flops"] / v["min_s"] / 1e9
    return dict(impls=impls, peak_gflops_per_s=max(v["gflops_per_s"] for v in impls.values()),
                unit="call")


def _mdsm_noise(key, x_shape):
    """The σ and ε that ``dsm_jax.mdsm_loss(params, key, x)`` draws (same key use)."""
    import jax

    import dsm_jax as dj

    k_sigma, k_noise = jax.random.split(key)
    return dj.sample_sigmas(k_sigma, x_shape[0], *MDSM_SIGMAS, "geometric"), jax.random.normal(k_noise, x_shape)


def check_first_step(kind: str, params, x, module_cfg: dict, conv_impl: str = "canonical") -> dict:
    """Same weights, same noise: the jax and torch losses and parameter gradients."""
    import jax
    import numpy as np
    import torch

    import dsm_jax as dj
    from experiments.benchmarks import torch_impl as ti

    key = jax.random.key(42)
    if kind == "train_mlp":
        efn = dj.energy_fn_of(dj.MLPEnergy(module_cfg["depth"], module_cfg["width"]))
        loss, grads = jax.jit(jax.value_and_grad(dj.dsm_loss(efn, DSM_SIGMA)))(params, key, x)
        to_torch = lambda p: ti.mlp_from_flax(p, x.shape[1], module_cfg["depth"], module_cfg["width"])  # noqa: E731
        model = to_torch(params)
        noise = torch.from_numpy(np.array(jax.random.normal(key, x.shape)))
        t_loss = ti.dsm_loss(model, torch.from_numpy(np.array(x)), noise, DSM_SIGMA)
    else:
        cfg = {k: module_cfg[k] for k in ("width", "n_stages", "blocks_per_stage")}
        efn = dj.energy_fn_of(dj.ResNetEnergy(**cfg, conv_impl=conv_impl))
        loss, grads = jax.jit(jax.value_and_grad(dj.mdsm_loss(efn, *MDSM_SIGMAS, MDSM_SIGMA0)))(params, key, x)
        to_torch = lambda p: ti.resnet_from_flax(p, **cfg, image_size=module_cfg["image"])  # noqa: E731
        model = to_torch(params)
        sigmas, noise = jax.jit(_mdsm_noise, static_argnums=1)(key, x.shape)
        t_loss = ti.mdsm_loss(model, ti.nchw(x), torch.from_numpy(np.array(sigmas)), ti.nchw(noise), MDSM_SIGMA0)
    t_loss.backward()
    # The jax gradients carried into torch's layout by the same weight converter.
    ref = dict(to_torch(jax.tree.map(np.asarray, grads)).named_parameters())
    # A bias that only shifts E (the read-out's) has no gradient in torch (None) and 0 in jax.
    grad_err = max(_rel_err(np.zeros(p.shape) if p.grad is None else p.grad.numpy(), ref[n].detach().numpy())
                   for n, p in model.named_parameters())
    return dict(loss_jax=float(loss), loss_torch=t_loss.item(), loss_rel_err=abs(float(loss) - t_loss.item()) / abs(float(loss)),
                grad_max_rel_err=grad_err, n_params=int(sum(p.numel() for p in model.parameters())))


def run_train(spec) -> dict:
    import jax
    import numpy as np
    import torch

    import dsm_jax as dj
    from dsm_jax import toy
    from experiments.benchmarks import torch_impl as ti

    m = MODES[spec["mode"]]
    key = jax.random.key(0)
    k_init, k_data, k_state = jax.random.split(key, 3)
    fns, infos = {}, {}
    if spec["kind"] == "train_mlp":
        cfg = m["mlp"]
        x = toy.get_toy("eight_gaussians").sample(k_data, cfg["batch"])
        module = dj.MLPEnergy(cfg["depth"], cfg["width"])
        params = dj.init_params(module, k_init, (2,))
        opt = dj.adam(1e-3)
        loss = dj.dsm_loss(dj.energy_fn_of(module), DSM_SIGMA)
        variants = {_jax_name(None, ynn): (loss, ynn) for ynn in (False, True)}
        t_model = ti.mlp_from_flax(params, 2, cfg["depth"], cfg["width"])
        t_step = ti.make_dsm_step(t_model, ti.adam(t_model, 1e-3), DSM_SIGMA)
        tx = torch.from_numpy(np.array(x))
        repeats, batch = m["mlp_repeats"], cfg["batch"]
    else:
        cfg = m["resnet"]
        batch = spec["batch"]
        net = {k: cfg[k] for k in ("width", "n_stages", "blocks_per_stage")}
        shape = (cfg["image"], cfg["image"], 1)
        x = jax.random.uniform(k_data, (batch, *shape))
        params = dj.init_params(dj.ResNetEnergy(**net), k_init, shape)
        opt = dj.adam(1e-4, 0.9, 0.95)
        variants = {
            _jax_name(impl, ynn): (dj.mdsm_loss(dj.energy_fn_of(dj.ResNetEnergy(**net, conv_impl=impl)),
                                                *MDSM_SIGMAS, MDSM_SIGMA0), ynn)
            for impl, ynn in m.get("resnet_impls", (("canonical", False), ("canonical", True), ("xla", True)))}
        t_model = ti.resnet_from_flax(params, **net, image_size=cfg["image"])
        t_step = ti.make_mdsm_step(t_model, ti.adam(t_model, 1e-4, 0.9, 0.95), *MDSM_SIGMAS, MDSM_SIGMA0)
        tx = ti.nchw(x)
        repeats = m["resnet_repeats"]
        cfg = dict(cfg, batch=batch)
    wanted = spec.get("impls")
    for name, (loss_fn, ynn) in variants.items():
        if wanted and name not in wanted:
            continue
        step = dj.make_train_step(loss_fn, opt)
        state = [dj.init_train_state(params, opt, k_state)]
        compiled, info = _jax_compile(step, state[0], x, ynn_fusions=ynn)

        def call(compiled=compiled, state=state):
            state[0], metrics = compiled(state[0], x)
            jax.block_until_ready(metrics)

        info.update(_first_call(call))
        fns[name], infos[name] = call, info
    infos["torch"] = _first_call(lambda: t_step(tx))
    fns["torch"] = lambda: t_step(tx)
    timings = interleaved(fns, repeats, m["block_s"])
    flops = next(v["flops"] for v in infos.values() if v.get("flops"))
    impls = {k: dict(infos[k], **timings[k], flops=flops) for k in fns}
    check = check_first_step(spec["kind"], params, x, cfg)
    return dict(impls=impls, sizes=cfg, check=check, unit="step", items_per_call=batch)


def resnet_conv_shapes(net: dict, image: int) -> dict:
    """``{(H, W, C_in, C_out, (kh, kw)): count}``: every convolution of ``ResNetEnergy(**net)``
    on ``image``×``image``×1 inputs, read off the module by intercepting its conv layers."""
    import collections

    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    import dsm_jax as dj

    shapes = collections.Counter()

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, dj.nets.CanonicalConv) and context.method_name == "__call__":
            _, h, w, c = args[0].shape
            shapes[(h, w, c, context.module.features, tuple(context.module.kernel_size))] += 1
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(dj.ResNetEnergy(**net, conv_impl="canonical").init, jax.random.key(0),
                       jnp.zeros((1, image, image, 1)))
    return dict(shapes)


CONV_OPS = ("fwd", "dx", "dK")  # forward, input gradient, kernel gradient


def run_conv_ops(spec) -> dict:
    """Each convolution shape of the MDSM ResNet on its own: forward, input gradient and kernel
    gradient of ``CanonicalConv`` (its custom VJPs, XLA:CPU's Eigen kernels, ynn-off) against
    PyTorch's ``conv2d`` / ``convolution_backward`` (oneDNN), same data."""
    import jax
    import numpy as np
    import torch

    import dsm_jax as dj
    from experiments.benchmarks import torch_impl as ti

    m = MODES[spec["mode"]]
    r = m["resnet"]
    batch = m["resnet_batches"][0]
    net = {k: r[k] for k in ("width", "n_stages", "blocks_per_stage")}
    shapes = resnet_conv_shapes(net, r["image"])
    impls, per_shape = {}, []
    for (h, w, c_in, c_out, k), count in sorted(shapes.items(), key=lambda kv: (-kv[0][0], kv[0][2], kv[0][3], kv[0][4])):
        keys = jax.random.split(jax.random.key(h * 1000 + c_in), 3)
        x = jax.random.normal(keys[0], (batch, h, w, c_in))
        g = jax.random.normal(keys[1], (batch, h, w, c_out))
        kernel = jax.random.normal(keys[2], (*k, c_in, c_out)) / np.sqrt(k[0] * k[1] * c_in)
        pads = dj.nets.same_padding(k)
        conv = lambda x_, k_: dj.nets.canonical_conv(x_, k_, pads)  # noqa: E731
        jax_ops = {"fwd": lambda x_, k_, g_: conv(x_, k_),
                   "dx": lambda x_, k_, g_: jax.vjp(lambda a: conv(a, k_), x_)[1](g_)[0],
                   "dK": lambda x_, k_, g_: jax.vjp(lambda b: conv(x_, b), k_)[1](g_)[0]}
        tx, tg, tk = ti.nchw(x), ti.nchw(g), ti.oihw(kernel)
        t_pad = [k[0] // 2, k[1] // 2]

        def t_backward(mask, tx=tx, tg=tg, tk=tk, t_pad=t_pad):
            return torch.ops.aten.convolution_backward(tg, tx, tk, None, [1, 1], t_pad, [1, 1], False, [0, 0], 1, mask)

        torch_ops = {"fwd": lambda tx=tx, tk=tk, t_pad=t_pad: torch.nn.functional.conv2d(tx, tk, padding=t_pad),
                     "dx": lambda: t_backward([True, False, False])[0],
                     "dK": lambda: t_backward([False, True, False])[1]}
        label = f"{h}x{w} {c_in}->{c_out} {k[0]}x{k[1]} (x{count})"
        flops = 2.0 * batch * h * w * c_in * c_out * k[0] * k[1]
        fns, infos, errs = {}, {}, {}
        for op in CONV_OPS:
            compiled, info = _jax_compile(jax_ops[op], x, kernel, g, ynn_fusions=False)
            out = np.asarray(compiled(x, kernel, g))
            t_out = torch_ops[op]().numpy()
            t_out = t_out.transpose(2, 3, 1, 0) if op == "dK" else t_out.transpose(0, 2, 3, 1)
            errs[op] = _rel_err(out, t_out)
            fns[f"jax ynn-off {op} {label}"] = lambda compiled=compiled: compiled(x, kernel, g).block_until_ready()
            infos[f"jax ynn-off {op} {label}"] = dict(info, op=op, framework="jax ynn-off")
            fns[f"torch {op} {label}"], infos[f"torch {op} {label}"] = torch_ops[op], dict(op=op, framework="torch")
        timings = interleaved(fns, m["resnet_repeats"], m["block_s"])
        for name in fns:
            impls[name] = dict(infos[name], **timings[name], flops=flops, count=count)
        per_shape.append(dict(h=h, w=w, c_in=c_in, c_out=c_out, kernel=list(k), count=count, rel_err=errs))
    return dict(impls=impls, sizes=dict(r, batch=batch, shapes=per_shape), unit="call", items_per_call=batch)


def run_langevin(spec) -> dict:
    import jax
    import numpy as np
    import torch

    import dsm_jax as dj
    from experiments.benchmarks import torch_impl as ti

    m = MODES[spec["mode"]]
    key = jax.random.key(0)
    k_init, k_x, k_run = jax.random.split(key, 3)
    if spec["kind"] == "langevin_mlp":
        cfg = dict(m["langevin_mlp"], depth=m["mlp"]["depth"], width=m["mlp"]["width"])
        cfg["chains"] = spec.get("chains", cfg["chains"])
        module = dj.MLPEnergy(cfg["depth"], cfg["width"])
        params = dj.init_params(module, k_init, (2,))
        x0 = jax.random.normal(k_x, (cfg["chains"], 2))
        # name -> (module, ynn_fusions, also time the per-step Python loop)
        variants = {_jax_name(None, ynn): (module, ynn, True) for ynn in (False, True)}
        t_model = ti.mlp_from_flax(params, 2, cfg["depth"], cfg["width"])
        tx0 = torch.from_numpy(np.array(x0))
    else:
        r = m["resnet"]
        cfg = dict(m["langevin_resnet"], **r)
        net = {k: r[k] for k in ("width", "n_stages", "blocks_per_stage")}
        shape = (r["image"], r["image"], 1)
        params = dj.init_params(dj.ResNetEnergy(**net), k_init, shape)
        x0 = 0.5 + jax.random.normal(k_x, (cfg["chains"], *shape))
        impls = m.get("langevin_resnet_impls",
                      (("canonical", False, True), ("canonical", True, False), ("matmul", True, False)))
        variants = {_jax_name(impl, ynn): (dj.ResNetEnergy(**net, conv_impl=impl), ynn, loop)
                    for impl, ynn, loop in impls}
        t_model = ti.resnet_from_flax(params, **net, image_size=r["image"])
        tx0 = ti.nchw(x0)
    n_steps = cfg["steps"]
    fns, infos = {}, {}
    for name, (module, ynn, with_loop) in variants.items():
        efn = dj.energy_fn_of(module)
        scan, info = _jax_compile(dj.langevin(efn, LANGEVIN_STEP, n_steps), params, k_run, x0, ynn_fusions=ynn)
        scan_call = lambda scan=scan: scan(params, k_run, x0).block_until_ready()  # noqa: E731
        info.update(_first_call(scan_call))
        fns[f"{name} lax.scan"], infos[f"{name} lax.scan"] = scan_call, info
        if not with_loop:
            continue
        init, _ = _jax_compile(lambda p, x: dj.init_chain(efn, p, x), params, x0, ynn_fusions=ynn)
        kernel = dj.langevin_kernel(efn)
        state0 = init(params, x0)
        one, info = _jax_compile(lambda p, k, s: kernel(p, k, s, LANGEVIN_STEP, 1.0)[0], params, k_run, state0,
                                 ynn_fusions=ynn)
        keys = list(jax.random.split(k_run, n_steps))

        def loop_call(init=init, one=one, keys=keys):
            s = init(params, x0)
            for k in keys:
                s = one(params, k, s)
            s.x.block_until_ready()

        info["flops"] = info["flops"] * n_steps if info.get("flops") else None
        info.update(_first_call(loop_call))
        fns[f"{name} python loop"], infos[f"{name} python loop"] = loop_call, info

    def torch_call():
        return ti.langevin_chain(t_model, tx0, n_steps, LANGEVIN_STEP)

    infos["torch python loop"] = _first_call(torch_call)
    fns["torch python loop"] = torch_call
    timings = interleaved(fns, m["langevin_repeats"], m["block_s"])
    loop_flops = next((v["flops"] for k, v in infos.items() if k.endswith("python loop") and v.get("flops")), None)
    impls = {}
    for k in fns:
        impls[k] = dict(infos[k], **timings[k])
        impls[k]["flops"] = loop_flops  # the same n_steps chain steps for every implementation
        impls[k]["chain_steps_per_s"] = cfg["chains"] * n_steps / timings[k]["median_s"]
    return dict(impls=impls, sizes=cfg, unit="chain", items_per_call=cfg["chains"] * n_steps)


RUNNERS = {"peak": run_peak, "train_mlp": run_train, "train_resnet": run_train, "conv_ops": run_conv_ops,
           "langevin_mlp": run_langevin, "langevin_resnet": run_langevin}


def run_row(spec: dict) -> dict:
    t0 = time.perf_counter()
    threads = MODES[spec["mode"]].get("torch_threads")
    if threads:
        import torch

        torch.set_num_threads(threads)
    out = RUNNERS[spec["kind"]](spec)
    out.update(name=spec["name"], kind=spec["kind"], xla_flags=os.environ.get("XLA_FLAGS", ""),
               env={k: os.environ.get(k) for k in spec.get("env", {})}, wall_s=time.perf_counter() - t0)
    return out


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
        if row["kind"] == "conv_ops":
            row["totals"] = conv_totals(row)
        if row["kind"].startswith("langevin"):
            for k, v in row["impls"].items():  # a scan against the Python loop of the same jax variant
                loop = row["impls"].get(k.replace(" lax.scan", " python loop")) if k.endswith(" lax.scan") else None
                v["speedup_vs_jax_python_loop"] = paired_speedup(loop, v) if loop else None


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
             "", "| row | implementation | median | min | throughput | vs torch | GFLOP/s | % peak | compile s | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        for name, v in row["impls"].items():
            if row["kind"] == "peak":
                thr = f"{v['gflops_per_s']:.1f} GFLOP/s"
            elif row["kind"].startswith("langevin"):
                thr = f"{v['chain_steps_per_s']:,.0f} chain-steps/s"
                if v.get("speedup_vs_jax_python_loop"):
                    thr += f" ({v['speedup_vs_jax_python_loop']:.2f}× its loop)"
            else:
                thr = f"{row['items_per_call'] / v['median_s']:,.0f} examples/s"
            fmt = lambda a, f="{:.2f}": "–" if a is None else f.format(a)  # noqa: E731
            lines.append(
                f"| {row['name']} | {name} | {v['median_s'] * 1e3:.1f} ms | {v['min_s'] * 1e3:.1f} ms | {thr} | "
                f"{fmt(v.get('speedup_vs_torch'), '{:.2f}×')} | {fmt(v.get('gflops_per_s'), '{:.1f}')} | "
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
    if checks:
        lines.append("")
        for name, c in checks:
            lines.append(f"{name}: first-step loss jax {c['loss_jax']:.6g} torch {c['loss_torch']:.6g} "
                         f"(rel {c['loss_rel_err']:.1e}), max parameter-gradient rel err {c['grad_max_rel_err']:.1e}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller batches/chains, fewer repeats (< 5 min)")
    ap.add_argument("--tiny", action="store_true", help="toy sizes: every code path in seconds (tests)")
    ap.add_argument("--out", default=None, help="directory for benchmarks.json")
    ap.add_argument("--rows", default=None, help="comma-separated row names to run (default: all; without "
                    "'peak' there is no %% of peak)")
    ap.add_argument("--in-process", action="store_true", help="run rows in this process (no per-row isolation)")
    ap.add_argument("--_row", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._row is not None:  # child process: one row, result on stdout
        print("BENCH_ROW " + json.dumps(run_row(json.loads(args._row))), flush=True)
        return {}
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    specs = row_specs(mode)
    if args.rows:
        keep = set(args.rows.split(","))
        unknown = keep - {s["name"] for s in specs}
        if unknown:
            raise SystemExit(f"--rows: unknown {sorted(unknown)}; choose from {[s['name'] for s in specs]}")
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
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    main()
