"""The parts of ``experiments.accelerator_check``: each ``part(sizes) -> dict`` runs one check
on the default device and returns what it measured (raising on failure).

Nothing here needs tensorflow-datasets, blackjax or PyTorch: the image presets train on
synthetic arrays of their image shape, and the benchmark rows run their jax side only (the
PyTorch twins and first-step checks stay in ``experiments.benchmarks``). Every training part
calls the experiment's own ``train`` (the same step, optimiser, data iterator and ``fit``
chunks as a real run), for ``warm + timed`` steps in chunks of ``warm`` (50 + 200 on an
accelerator): the first chunk compiles, the rest are timed, and steps/s is extrapolated to the preset's own step count.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import sys
import tempfile

import numpy as np

# Sizes per mode: "gpu" is the real check (paper sizes), "dry" runs every code path on a CPU in seconds.
SIZES = {
    "gpu": dict(bench="full", resnet_rows=True, convs=("xla", "canonical"), warm=50, timed=200, synthetic_n=1024, toy_eval=4096,
                toy_methods=("dde", "mdsm", "dde-generator"), train_cifar10=True),
    "dry": dict(bench="tiny", resnet_rows=False, convs=("canonical",), warm=2, timed=4, synthetic_n=64, toy_eval=256,
                toy_methods=("dde", "dde-generator"),  # mdsm: the same train_energy as dde
                train_cifar10=False),  # the preset is resolved and checked; training as mdsm_fashion_mnist
}
# Small networks and batches for the dry run, as config changes; the GPU run keeps the presets.
DRY_CHANGES = {
    "fashion_mnist": {"model.width": 4, "model.n_stages": 1, "model.blocks_per_stage": 1, "train.batch_size": 8},
    "fashion_mnist_dde": {"model.depth": 2, "model.growth": 8, "gen.depth": 2, "gen.growth": 8,
                          "train.batch_size": 8},
    "toy2d": {"model.depth": 2, "model.width": 8, "gen.depth": 2, "gen.width": 8, "train.batch_size": 64,
              "gen.batch_size": 64},
}
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "numpy", "tensorflow-datasets",
            "blackjax", "torch", "scipy", "matplotlib", "tqdm", "pytest", "pytest-xdist")
_MODULES = {"orbax-checkpoint": "orbax.checkpoint", "tensorflow-datasets": "tensorflow_datasets",
            "pytest-xdist": "xdist"}


def peak_device_bytes() -> int | None:
    """The default device's peak allocation so far (None where the backend keeps no stats, e.g. CPU)."""
    import jax

    stats = jax.local_devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


# ---------------------------------------------------------------------------------------
# (a) what is installed, and the devices
# ---------------------------------------------------------------------------------------
def _package(name: str) -> dict:
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        version = None
    try:  # found without importing it (torch alone takes seconds); a blocked module is not found
        importable = importlib.util.find_spec(_MODULES.get(name, name)) is not None
    except (ImportError, ValueError):
        importable = False
    return {"version": version, "importable": importable}


def environment(sizes) -> dict:
    import jax

    import dsm_jax

    plugins = sorted(d.metadata["Name"] for d in importlib.metadata.distributions()
                     if re.match(r"jax[-_]cuda\d*[-_](plugin|pjrt)|libtpu", d.metadata["Name"] or ""))
    devices = []
    for d in jax.devices():
        stats = d.memory_stats() or {}
        devices.append({"id": d.id, "platform": d.platform, "kind": d.device_kind, "process": d.process_index,
                        "memory_bytes": stats.get("bytes_limit")})
    for d in devices:
        print(f"[accel]   device {d['id']}: {d['kind']} ({d['platform']}), "
              f"{'?' if d['memory_bytes'] is None else round(d['memory_bytes'] / 2**30, 1)} GiB", flush=True)
    return {"python": platform.python_version(), "platform": platform.platform(),
            "packages": {n: _package(n) for n in PACKAGES}, "accelerator_plugins": plugins,
            "backend": jax.default_backend(), "device_count": jax.device_count(),
            "local_device_count": jax.local_device_count(), "process_count": jax.process_count(),
            "devices": devices, "dsm_jax_from": os.path.dirname(dsm_jax.__file__),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "executable": sys.executable,
            "summary": f"jax {jax.__version__} on {jax.default_backend()}, {jax.device_count()} device(s) "
                       f"({', '.join(sorted({d['kind'] for d in devices}))})"}


# ---------------------------------------------------------------------------------------
# data parallelism over every local device
# ---------------------------------------------------------------------------------------
def multi_device(sizes) -> dict:
    """The data-parallel training step and sharded chains on a mesh of all local devices
    agree with the one-device programs (float tolerance: the gradient all-reduce sums in
    another order)."""
    import jax
    import jax.numpy as jnp

    import dsm_jax as dj
    from dsm_jax import data, parallel, toy

    devices = jax.local_devices()
    mesh = parallel.data_mesh(devices)
    module = dj.MLPEnergy(3, 32)
    energy_fn = dj.energy_fn_of(module)
    opt = dj.adam(1e-3)
    loss = dj.dsm_loss(energy_fn, 0.2)
    batch = 64 * len(devices)
    x = np.asarray(toy.get_toy("eight_gaussians").sample(jax.random.key(0), 16 * batch))
    state0 = dj.init_train_state(dj.init_params(module, jax.random.key(1), (2,)), opt, jax.random.key(2))
    finals = {}
    for name, m in (("one_device", None), ("mesh", mesh)):
        step = dj.make_train_step(loss, opt, mesh=m)
        batches = data.BatchIterator(x, batch, seed=0)
        finals[name], _ = dj.fit(step, state0, 10, steps_per_call=10, batches=batches, progress=False, mesh=m)
    train_err = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                    zip(jax.tree.leaves(finals["one_device"].params), jax.tree.leaves(finals["mesh"].params)))
    chain = dj.langevin(energy_fn, 1e-3, 10)
    x0 = jax.random.normal(jax.random.key(3), (batch, 2))
    one = np.asarray(parallel.shard_chains(chain, None)(finals["mesh"].params, jax.random.key(4), x0))
    split = np.asarray(parallel.shard_chains(chain, mesh)(finals["mesh"].params, jax.random.key(4), x0))
    chain_err = float(np.max(np.abs(one - split)))
    if not (train_err < 1e-4 and chain_err < 1e-4):
        raise AssertionError(f"mesh of {len(devices)} devices differs from one device: params by {train_err:.2e}, "
                             f"chains by {chain_err:.2e} (tolerance 1e-4)")
    return {"n_devices": len(devices), "params_max_abs_diff": train_err, "chains_max_abs_diff": chain_err,
            "summary": f"{len(devices)} device(s): params agree to {train_err:.1e}, chains to {chain_err:.1e}"}


# ---------------------------------------------------------------------------------------
# (c) the benchmark's training and sampling rows, jax side only
# ---------------------------------------------------------------------------------------
def _time_compiled(call, compile_info: dict, repeats: int, block_s: float) -> dict:
    from experiments.benchmarks.harness import _first_call, interleaved

    info = dict(compile_info, **_first_call(call))
    timing = interleaved({"jax": call}, repeats, block_s)["jax"]
    return dict(info, median_s=timing["median_s"], min_s=timing["min_s"])


def _cpu_reference(row: str, sizes) -> dict | None:
    """The fastest jax implementation of ``row`` in the committed CPU table (docs/benchmarks/),
    when it was measured at the sizes of this run."""
    import json

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "benchmarks",
                        "benchmarks.json")
    try:
        with open(path) as f:
            saved = json.load(f)
    except OSError:
        return None
    for r in saved["rows"]:
        if r["name"] == row and saved["mode"] == sizes["bench"]:
            name, v = min(((k, v) for k, v in r["impls"].items() if k.startswith("jax")),
                          key=lambda kv: kv[1]["median_s"])
            return {"impl": name, "median_s": v["median_s"], "machine": saved["machine"].get("cpu_model"),
                    "cores": saved["machine"].get("cpus_usable"), "jax": saved["machine"].get("jax")}
    return None


def _step_timings(make_loss, params, x, opt, m: dict, repeats: int, variants: dict) -> dict:
    """Median time of one ``make_train_step`` step per variant (name -> module arguments)."""
    import jax

    import dsm_jax as dj
    from experiments.benchmarks.harness import _jax_compile

    out = {}
    for name, loss_fn in ((n, make_loss(v)) for n, v in variants.items()):
        step = dj.make_train_step(loss_fn, opt)
        state = [dj.init_train_state(params, opt, jax.random.key(1))]
        compiled, info = _jax_compile(step, state[0], x)

        def call(compiled=compiled, state=state):
            state[0], metrics = compiled(state[0], x)
            jax.block_until_ready(metrics)

        out[name] = _time_compiled(call, info, repeats, m["block_s"])
        out[name]["steps_per_s"] = 1.0 / out[name]["median_s"]
    return out


def bench_train(sizes) -> dict:
    """train_mlp (DDE toy MLP DSM step) and train_resnet (MDSM's Fashion-MNIST ResNet step)."""
    import jax

    import dsm_jax as dj
    from dsm_jax import toy
    from experiments.benchmarks.harness import _jax_name
    from experiments.benchmarks.modes import DSM_SIGMA, MDSM_SIGMA0, MDSM_SIGMAS, MODES

    m = MODES[sizes["bench"]]
    rows = {}
    c = m["mlp"]
    x = toy.get_toy("eight_gaussians").sample(jax.random.key(0), c["batch"])
    module = dj.MLPEnergy(c["depth"], c["width"])
    impls = _step_timings(lambda mod: dj.dsm_loss(dj.energy_fn_of(mod), DSM_SIGMA),
                          dj.init_params(module, jax.random.key(2), (2,)), x, dj.adam(1e-3), m, m["mlp_repeats"],
                          {"jax": module})
    rows["train_mlp"] = {"sizes": c, "impls": impls, "cpu": _cpu_reference("train_mlp", sizes)}
    if not sizes["resnet_rows"]:  # the dry run: the same timing code as the MLP row
        return {"rows": rows, "summary": _bench_summary(rows, "steps_per_s", "steps/s")}
    r = m["resnet"]
    net = {k: r[k] for k in ("width", "n_stages", "blocks_per_stage")}
    shape = (r["image"], r["image"], 1)
    batch = m["resnet_batches"][0]
    x = jax.random.uniform(jax.random.key(0), (batch, *shape))
    params = dj.init_params(dj.ResNetEnergy(**net), jax.random.key(2), shape)
    impls = _step_timings(lambda mod: dj.mdsm_loss(dj.energy_fn_of(mod), *MDSM_SIGMAS, MDSM_SIGMA0), params, x,
                          dj.adam(1e-4, 0.9, 0.95), m, m["resnet_repeats"],
                          {_jax_name(conv): dj.ResNetEnergy(**net, conv_impl=conv) for conv in sizes["convs"]})
    rows[f"train_resnet_b{batch}"] = {"sizes": dict(r, batch=batch), "impls": impls,
                                      "cpu": _cpu_reference(f"train_resnet_b{batch}", sizes)}
    return {"rows": rows, "summary": _bench_summary(rows, "steps_per_s", "steps/s")}


def bench_langevin(sizes) -> dict:
    """langevin_mlp (10,000 chains × 200 steps) and langevin_resnet (256 chains × 3 steps): one lax.scan."""
    import jax

    import dsm_jax as dj
    from experiments.benchmarks.harness import _jax_compile, _jax_name
    from experiments.benchmarks.modes import LANGEVIN_STEP, MODES

    m = MODES[sizes["bench"]]
    r = m["resnet"]
    net = {k: r[k] for k in ("width", "n_stages", "blocks_per_stage")}
    shape = (r["image"], r["image"], 1)
    cases = {
        "langevin_mlp": (dict(m["langevin_mlp"], depth=m["mlp"]["depth"], width=m["mlp"]["width"]), (2,), 0.0,
                         {"jax": dj.MLPEnergy(m["mlp"]["depth"], m["mlp"]["width"])}),
        "langevin_resnet": (dict(m["langevin_resnet"], **r), shape, 0.5,
                            {_jax_name(conv): dj.ResNetEnergy(**net, conv_impl=conv) for conv in sizes["convs"]}),
    }
    if not sizes["resnet_rows"]:  # the dry run: the same timing code as the MLP row
        del cases["langevin_resnet"]
    rows = {}
    for row, (cfg, event, mean, modules) in cases.items():
        params = dj.init_params(next(iter(modules.values())), jax.random.key(0), event)
        x0 = mean + jax.random.normal(jax.random.key(1), (cfg["chains"], *event))
        impls = {}
        for name, module in modules.items():
            scan, info = _jax_compile(dj.langevin(dj.energy_fn_of(module), LANGEVIN_STEP, cfg["steps"]),
                                      params, jax.random.key(2), x0)
            call = lambda scan=scan: scan(params, jax.random.key(2), x0).block_until_ready()  # noqa: E731
            impls[name] = _time_compiled(call, info, m["langevin_repeats"], m["block_s"])
            impls[name]["chain_steps_per_s"] = cfg["chains"] * cfg["steps"] / impls[name]["median_s"]
        cpu = _cpu_reference(row, sizes)
        if cpu:
            cpu["chain_steps_per_s"] = cfg["chains"] * cfg["steps"] / cpu["median_s"]
        rows[row] = {"sizes": cfg, "impls": impls, "cpu": cpu}
    return {"rows": rows, "summary": _bench_summary(rows, "chain_steps_per_s", "chain-steps/s")}


def _bench_summary(rows: dict, key: str, unit: str) -> str:
    return "; ".join(f"{row}: " + ", ".join(f"{n} {v[key]:,.0f} {unit}" for n, v in r["impls"].items())
                     for row, r in rows.items())


# ---------------------------------------------------------------------------------------
# (d) 200 steps of each paper preset, extrapolated to the preset's step count
# ---------------------------------------------------------------------------------------
def _preset(module_name: str, base, presets: dict, name: str, sizes, changes: dict):
    """``(cfg, preset_steps_source)``: preset ``name`` with ``changes`` (and the dry run's
    small networks); raises when the preset does not exist."""
    from dsm_jax import config as cfgs

    if name not in presets:
        raise LookupError(f"preset not available: experiments.configs.{module_name}.PRESETS has no {name!r} "
                          f"(it has {sorted(presets)})")
    cfg = cfgs.with_preset(base, presets, name)
    dry = DRY_CHANGES[module_name] if sizes is SIZES["dry"] else {}
    cfg = cfgs.replace(cfg, {**dry, **changes})
    cfg.validate()
    return cfg


def _rate(history: list[dict], warm: int) -> dict:
    """steps/s over the chunks after the first (which compiled), from fit's per-chunk records."""
    timed = history[1:]
    seconds = sum((h["step"] - p["step"]) / h["steps_per_s"] for p, h in zip(history, timed))
    steps = history[-1]["step"] - history[0]["step"]
    return {"first_chunk_s": warm / history[0]["steps_per_s"], "timed_steps": steps, "timed_s": seconds,
            "steps_per_s": steps / seconds}


def _extrapolate(rate: dict, paper_steps: int) -> dict:
    return dict(rate, paper_steps=paper_steps, paper_hours=paper_steps / rate["steps_per_s"] / 3600.0)


def _image_shape(cfg) -> tuple:
    """The experiment's input shape for ``cfg``'s data set (known sets need no data files)."""
    from experiments import common

    return tuple(common.image_shape(cfg.data))


def _synthetic_images(shape, n: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(0.0, 1.0, (n, *shape)).astype(np.float32)


def _mdsm(sizes, preset: str) -> dict:
    from experiments import fashion_mnist
    from experiments.configs import fashion_mnist as configs

    w = sizes["warm"]
    base = fashion_mnist.FashionConfig()
    paper = _preset("fashion_mnist", base, configs.PRESETS, preset, sizes, {})
    cfg = _preset("fashion_mnist", base, configs.PRESETS, preset, sizes,
                  {"train.steps": w + sizes["timed"], "train.steps_per_call": w})
    shape = _image_shape(cfg)
    if preset == "cifar10" and not sizes["train_cifar10"]:
        return {"image_shape": list(shape), "paper_steps": paper.train.steps, "trained": False,
                "summary": f"preset found ({paper.train.steps:,} steps, images {shape}); not trained in the dry run"}
    x = _synthetic_images(shape, max(sizes["synthetic_n"], cfg.train.batch_size))
    with tempfile.TemporaryDirectory() as out:
        _, history, _ = fashion_mnist.train(cfg, x, out, False)
    rate = _extrapolate(_rate(history, w), paper.train.steps)
    return dict(rate, image_shape=list(shape), batch_size=cfg.train.batch_size, width=cfg.model.width,
                blocks_per_stage=cfg.model.blocks_per_stage, final_loss=history[-1].get("loss"),
                summary=_rate_summary(rate))


def mdsm_fashion_mnist(sizes) -> dict:
    return _mdsm(sizes, "paper")


def mdsm_cifar10(sizes) -> dict:
    return _mdsm(sizes, "cifar10")


def dde_fashion_mnist(sizes) -> dict:
    from experiments import fashion_mnist_dde
    from experiments.configs import fashion_mnist_dde as configs

    w = sizes["warm"]
    base = fashion_mnist_dde.DDEFashionConfig()
    paper = _preset("fashion_mnist_dde", base, configs.PRESETS, "paper", sizes, {})
    cfg = _preset("fashion_mnist_dde", base, configs.PRESETS, "paper", sizes,
                  {"train.steps": w + sizes["timed"], "train.steps_per_call": w})
    x = _synthetic_images(_image_shape(cfg), max(sizes["synthetic_n"], cfg.train.batch_size))
    with tempfile.TemporaryDirectory() as out:
        _, history, _ = fashion_mnist_dde.train(cfg, x, out, False)
    rate = _extrapolate(_rate(history, w), paper.train.steps)
    return dict(rate, batch_size=cfg.train.batch_size, final_gen_loss=history[-1].get("gen_loss"),
                summary=_rate_summary(rate))


def toy2d(sizes) -> dict:
    """The toy2d paper preset on eight_gaussians: the DSM density (dde), MDSM and the DDE generator."""
    import jax

    import dsm_jax as dj
    from dsm_jax import config as cfgs
    from dsm_jax import parallel, toy as toys
    from experiments import toy2d as experiment
    from experiments.configs import toy2d as configs

    w, n = sizes["warm"], sizes["warm"] + sizes["timed"]
    base = experiment.ToyConfig()
    paper = _preset("toy2d", base, configs.PRESETS, "paper", sizes, {})
    e = sizes["toy_eval"]
    cfg = _preset("toy2d", base, configs.PRESETS, "paper", sizes, {
        "train.steps_per_call": w, "dde.steps": n, "mdsm.steps": n, "gen.iters": n, "gen.monitor_every": None,
        "eval.n_samples": e, "eval.n_eval": e, "eval.grid_n": 64, "toys": ("eight_gaussians",)})
    toy = toys.get_toy("eight_gaussians")
    energy_fn = dj.energy_fn_of(experiment._energy(cfg))
    data_fn = lambda k: toy.sample(k, cfg.train.batch_size)  # noqa: E731
    m = cfg.mdsm
    losses = {"dde": dj.dsm_loss(energy_fn, cfg.sigma), "mdsm": dj.mdsm_loss(energy_fn, m.sigma_min, m.sigma_max, m.sigma0)}
    paper_steps = {"dde": paper.dde.steps, "mdsm": paper.mdsm.steps, "dde-generator": paper.gen.iters}
    runs, mesh = {}, parallel.resolve_mesh("auto")
    with tempfile.TemporaryDirectory() as out:
        def run(name):
            return {"progress": False, "log_path": os.path.join(out, "metrics.jsonl"), "log_extra": {"run": name},
                    "checkpoint_dir": os.path.join(out, "checkpoints", name),
                    "checkpoint_every": cfg.train.checkpoint_every, "keep_checkpoints": cfg.train.keep_checkpoints,
                    "fingerprint": {**cfgs.fingerprint(cfg), "run": name},
                    "compiler_options": dj.compiler_options(cfg.train.ynn_fusions), "mesh": mesh}

        for i, (name, loss) in enumerate((k, v) for k, v in losses.items() if k in sizes["toy_methods"]):
            _, history, _ = experiment.train_energy(cfg, loss, data_fn, jax.random.key(i), n, name, run(name))
            runs[name] = _extrapolate(_rate(history, w), paper_steps[name])
        ctx = experiment.toy_context(cfg, toy, jax.random.key(10), jax.random.key(11))
        history = experiment.run_dde_generator(cfg, toy, jax.random.key(12), ctx, run("dde-generator"))[2]
        runs["dde-generator"] = _extrapolate(_rate(history, w), paper_steps["dde-generator"])
    hours = sum(r["paper_hours"] for r in runs.values())
    return {"runs": runs, "paper_hours": hours, "batch_size": cfg.train.batch_size,
            "summary": "; ".join(f"{k} {_rate_summary(r)}" for k, r in runs.items())}


def _rate_summary(rate: dict) -> str:
    return (f"{rate['steps_per_s']:,.1f} steps/s -> {rate['paper_steps']:,} steps in "
            f"{rate['paper_hours']:.2f} h")


PARTS = {
    "environment": environment,
    "multi_device": multi_device,
    "bench_train": bench_train,
    "bench_langevin": bench_langevin,
    "mdsm_fashion_mnist": mdsm_fashion_mnist,
    "mdsm_cifar10": mdsm_cifar10,
    "dde_fashion_mnist": dde_fashion_mnist,
    "toy2d": toy2d,
}
