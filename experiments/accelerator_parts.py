"""The parts of ``experiments.accelerator_check``: each ``part(sizes) -> dict`` runs one check
on the default device and returns what it measured (raising on failure).

Nothing here needs tensorflow-datasets, blackjax or PyTorch: the image presets train on
synthetic arrays of their image shape, and the benchmark rows run their jax side only (the
PyTorch twins and first-step checks stay in ``experiments.benchmarks``). Every training part
calls the experiment's own ``train`` (the same step, optimiser, data iterator and ``fit``
chunks as a real run), for ``warm + timed`` steps in chunks of ``warm`` (50 + 200 on an
accelerator): the first chunk compiles, the rest are timed, and steps/s is extrapolated to the preset's own step count.

Here: the sizes, the environment and multi-device parts, and :data:`PARTS`; the benchmark rows
are in :mod:`experiments.accelerator_bench`, the presets' training rates in
:mod:`experiments.accelerator_presets`.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import sys

import numpy as np

from experiments.accelerator_bench import bench_langevin, bench_train
from experiments.accelerator_presets import dde_fashion_mnist, mdsm_cifar10, mdsm_fashion_mnist, toy2d

# Sizes per mode: "gpu" is the real check (paper sizes), "dry" runs every code path on a CPU in seconds
# (with the small networks of accelerator_presets.DRY_CHANGES).
SIZES = {
    "gpu": dict(dry=False, bench="full", resnet_rows=True, convs=("xla", "canonical"), warm=50, timed=200,
                synthetic_n=1024, toy_eval=4096, toy_methods=("dde", "mdsm", "dde-generator"), train_cifar10=True),
    "dry": dict(dry=True, bench="tiny", resnet_rows=False, convs=("canonical",), warm=2, timed=4, synthetic_n=64,
                toy_eval=256,
                toy_methods=("dde", "dde-generator"),  # mdsm: the same train_energy as dde
                train_cifar10=False),  # the preset is resolved and checked; training as mdsm_fashion_mnist
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
