"""Data parallelism over every device: parameters replicated, the batch axis split.

One mesh axis, ``"data"``, spans the devices (all of them, across hosts, by default).
Training states and sampler parameters are *replicated* on it; training batches and
sampler chains are *sharded* on their batch axis, so each device computes its slice and
XLA inserts the all-reduce of the mean loss's gradient. Nothing else changes: the step
functions stay the same pure functions, and because JAX's threefry PRNG is
*partitionable* (``jax_threefry_partitionable``, the default since JAX 0.5) the noise a
sharded step draws is bit-for-bit the noise the one-device step draws, so one step on
8 devices equals the one-device step up to float summation order.

The pieces:

* :func:`data_mesh` — the mesh; :func:`resolve_mesh` turns ``"auto"`` into it when there
  is more than one device (``None`` on one device: the unsharded code path, unchanged).
  The mesh is always an *argument* (of :func:`dsm_jax.make_train_step`,
  :func:`dsm_jax.make_dde_step`, :func:`shard_chains`, :func:`dsm_jax.fit`), resolved on the
  host when the factory is built; nothing reads an ambient mesh at trace time, so
  ``jax.jit``'s cache (which keys on the function and its arguments) always sees it.
* :func:`replicate`, :func:`shard_batch` (a *global* array, the same on every process),
  :func:`shard_local_batch` (this process's rows of the global batch, e.g. from
  :class:`dsm_jax.data.BatchIterator`), :func:`constrain_batch` (inside jit: split data a
  step draws itself, such as ``with_data`` batches or DDE latents, over a given mesh).
* :func:`shard_chains` — any sampler of this package with its chains split over devices.
* :func:`maybe_initialize_distributed` — ``jax.distributed.initialize()`` when the
  launcher's environment says this is one process of several (see :func:`launcher`).

Every split refuses a batch that does not divide by the number of devices on the data
axis, naming the argument and the sizes that would work.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dsm_jax import validation

DATA_AXIS = "data"


# ---------------------------------------------------------------------------------------
# Mesh
# ---------------------------------------------------------------------------------------
def data_mesh(devices=None, axis: str = DATA_AXIS) -> Mesh:
    """A 1-D mesh named ``axis`` over ``devices`` (default ``jax.devices()``: every device
    of every process, so a multi-host run splits its global batch over all of them)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("`devices` is empty; pass at least one device (e.g. jax.devices()[:1]).")
    return Mesh(np.asarray(devices, dtype=object), (axis,))


def resolve_mesh(mesh="auto") -> Mesh | None:
    """``"auto"``: :func:`data_mesh` when there is more than one device, else None;
    ``None``: no mesh (plain jit on the default device); a ``Mesh`` with a ``"data"`` axis:
    itself."""
    if isinstance(mesh, str):
        if mesh != "auto":
            raise ValueError(f"`mesh` must be 'auto', None or a jax.sharding.Mesh, got {mesh!r}.")
        return data_mesh() if jax.device_count() > 1 else None
    if mesh is None:
        return None
    if not isinstance(mesh, Mesh):
        raise TypeError(f"`mesh` must be 'auto', None or a jax.sharding.Mesh, got {type(mesh).__name__}.")
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(
            f"`mesh` has axes {mesh.axis_names} but no {DATA_AXIS!r} axis to split batches over; "
            f"build it with dsm_jax.parallel.data_mesh(devices)."
        )
    return mesh


def _required(mesh) -> Mesh:
    """``mesh`` itself when it is a ``Mesh`` with a data axis; the placement functions below
    take no ``"auto"`` or None (the step factories and fit resolve those first)."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"`mesh` must be a jax.sharding.Mesh here (dsm_jax.parallel.data_mesh(), or "
                        f"resolve_mesh('auto') when it is not None), got {type(mesh).__name__}.")
    return resolve_mesh(mesh)


def n_data(mesh: Mesh) -> int:
    """Number of devices along the data axis (how many slices a batch is cut into)."""
    return int(_required(mesh).shape[DATA_AXIS])


_NO_AMBIENT_MESH = (
    "dsm_jax.parallel.{name} was removed: a mesh read from a context at trace time is invisible to "
    "jax.jit's cache, so a step jitted once silently kept its unsharded program inside the block. "
    "Pass the mesh as an argument instead: make_train_step(..., mesh=mesh), make_dde_step(..., mesh=mesh), "
    "make_q_warmup_step(..., mesh=mesh), shard_chains(sample_fn, mesh), fit(..., mesh=mesh)."
)


def active_mesh(mesh=None):
    """Deprecated and refused: raises, pointing at the ``mesh=`` arguments that replace it
    (a silent no-op would hide that a step no longer shards)."""
    raise RuntimeError(_NO_AMBIENT_MESH.format(name="active_mesh"))


def current_mesh():
    """Deprecated and refused, like :func:`active_mesh`: there is no ambient mesh."""
    raise RuntimeError(_NO_AMBIENT_MESH.format(name="current_mesh"))


# ---------------------------------------------------------------------------------------
# Shardings and placement
# ---------------------------------------------------------------------------------------
def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(_required(mesh), PartitionSpec())


def batch_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Split array axis ``axis`` over the data axis, every other axis whole."""
    return NamedSharding(_required(mesh), PartitionSpec(*([None] * axis), DATA_AXIS))


def check_divisible(name: str, size: int, mesh: Mesh | None, *, per_process: bool = False) -> None:
    """Raise unless a global batch of ``size`` splits evenly over the mesh's data axis.

    With ``per_process=True`` ``size`` is one process's share; the message then also
    gives the global batch it implies."""
    if mesh is None:
        return
    n = n_data(mesh)
    if per_process:
        procs = jax.process_count()
        n_local = max(n // procs, 1)
        if size % n_local == 0:
            return
        raise ValueError(
            f"`{name}`: this process holds {size} rows of the global batch ({size * procs} over "
            f"{procs} processes), which do not split over its {n_local} devices. Make the global "
            f"batch a multiple of {n} (the devices on the data axis), e.g. {_nearest(size * procs, n)}."
        )
    if size % n:
        raise ValueError(
            f"`{name}` = {size} does not divide by the {n} devices on the data axis (each device "
            f"takes an equal slice of the global batch). Use a multiple of {n}, e.g. "
            f"{_nearest(size, n)}, or a mesh over fewer devices: dsm_jax.parallel.data_mesh(jax.devices()[:k])."
        )


def check_batches(sizes: Mapping[str, int], mesh="auto") -> None:
    """An experiment's up-front check: every ``{config field: batch size}`` splits over the
    data axis of ``mesh`` (default: all devices when there are several), before any data is
    loaded or anything compiled. The error lists each offending field with a ``--set`` fix."""
    mesh = resolve_mesh(mesh)
    if mesh is None:
        return
    n = n_data(mesh)
    bad = {name: int(size) for name, size in sizes.items() if int(size) % n}
    if bad:
        fixes = "; ".join(f"`{k}` = {v} (--set {k}={max(n, round(v / n) * n)})" for k, v in bad.items())
        raise ValueError(
            f"Data-parallel over {n} devices: each batch is split evenly across them, so every batch size "
            f"must be a multiple of {n}. Not so: {fixes}. Or run on fewer devices (e.g. CUDA_VISIBLE_DEVICES)."
        )


def _nearest(size: int, n: int) -> str:
    lo, hi = (size // n) * n, -(-size // n) * n
    return f"{hi}" if lo == 0 else f"{lo} or {hi}"


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _put_global(x, sharding: NamedSharding):
    """``x`` (the same value on every process) laid out as ``sharding``."""
    if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
        return x
    if _is_key(x):  # typed PRNG keys: move their raw data, re-wrap with the same impl
        data = _put_global(jax.random.key_data(x), sharding)  # the spec is a prefix: key axes stay whole
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    host = np.asarray(x)  # identical on every process: each device takes its own slice
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate(tree, mesh: Mesh):
    """Every array leaf of ``tree`` copied onto every device of ``mesh`` (params, optimiser
    state, keys: the same value on every process)."""
    sharding = replicated(mesh)
    return jax.tree.map(lambda x: _put_global(x, sharding), tree)


def _leaves_with_batch(tree, axis: int, name: str):
    leaves = jax.tree.leaves(tree)
    for leaf in leaves:
        if np.ndim(leaf) <= axis:
            raise ValueError(
                f"`{name}`: every array needs a batch axis at position {axis}, got shape {np.shape(leaf)}."
            )
    return leaves


def shard_batch(tree, mesh: Mesh, axis: int = 0, name: str = "batch"):
    """A *global* batch (the same on every process) split on array axis ``axis``."""
    for leaf in _leaves_with_batch(tree, axis, name):
        check_divisible(name, np.shape(leaf)[axis], mesh)
    sharding = batch_sharding(mesh, axis)
    return jax.tree.map(lambda x: _put_global(x, sharding), tree)


def shard_local_batch(tree, mesh: Mesh, axis: int = 0, name: str = "batch"):
    """This process's rows of a global batch (``BatchIterator`` gives each process its own
    share), assembled into one global array split on ``axis``. With one process it is the
    whole batch and this is :func:`shard_batch`."""
    if jax.process_count() == 1:
        return shard_batch(tree, mesh, axis, name)
    for leaf in _leaves_with_batch(tree, axis, name):
        check_divisible(name, np.shape(leaf)[axis], mesh, per_process=True)
    sharding = batch_sharding(mesh, axis)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def constrain_batch(tree, mesh: Mesh | None, *, axis: int = 0, name: str = "batch"):
    """Inside a jitted step: ask XLA to split ``tree`` (data the step draws itself) on
    ``axis`` over ``mesh``'s data axis, so each device generates and processes only its
    slice. ``mesh=None``: a no-op (the one-device program). Step factories call this with
    the mesh they were built with (their ``mesh=`` argument)."""
    if mesh is None:
        return tree
    _required(mesh)
    for leaf in _leaves_with_batch(tree, axis, name):
        check_divisible(name, np.shape(leaf)[axis], mesh)
    return jax.lax.with_sharding_constraint(tree, batch_sharding(mesh, axis))


# ---------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------
def shard_chains(sample_fn, mesh="auto", compiler_options: dict | None = None):
    """``sample_fn(params, key, x0, *masks, **masks)`` jitted with the chains (batch axis of ``x0``)
    split over the data axis and ``params``/``key`` replicated.

    Works for every sampler here (``langevin``, ``mala``, ``annealed_langevin``,
    ``inpainter``, whose ``free_mask=`` is passed by keyword): a per-example mask (shape of ``x0``) is split like ``x0``, a shared one
    (event shape) replicated. Outputs are gathered (replicated), so ``np.asarray`` works on
    every process. With partitionable threefry the chains are those of the one-device run.
    ``mesh``: as in :func:`resolve_mesh`, resolved here, once, when ``shard_chains`` is
    called (``None``: plain ``jax.jit`` on the default device). ``compiler_options`` go to
    ``jax.jit`` (see :func:`dsm_jax.compiler_options`).
    """
    validation.check_callable("sample_fn", sample_fn, "(params, key, x0, *masks) -> x")
    if compiler_options is not None and not isinstance(compiler_options, Mapping):
        raise TypeError(f"`compiler_options` must be a dict or None (e.g. dsm_jax.compiler_options()), "
                        f"got {type(compiler_options).__name__}.")
    m = resolve_mesh(mesh)
    shardings = {} if m is None else {"out_shardings": replicated(m)}
    jitted = jax.jit(sample_fn, compiler_options=compiler_options, **shardings)

    def run(params, key, x0, *masks, **named_masks):
        if m is None:
            return jitted(params, key, x0, *masks, **named_masks)

        def place(mask):  # per-example masks split like x0, shared ones replicated
            if mask is None:
                return None
            return shard_batch(mask, m, 0, "mask") if np.ndim(mask) == np.ndim(x0) else replicate(mask, m)

        return jitted(replicate(params, m), replicate(key, m), shard_batch(x0, m, 0, "x0"),
                      *map(place, masks), **{k: place(v) for k, v in named_masks.items()})

    return run


# ---------------------------------------------------------------------------------------
# Multi-process launch
# ---------------------------------------------------------------------------------------
def _int_env(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer.") from None


def launcher(environ: Mapping[str, str] | None = None) -> str | None:
    """Which multi-process launcher started this process, from its environment; None for a
    single-process run (then nothing is initialised). Checked in this order:

    * ``DSM_JAX_DISTRIBUTED=0`` → None (never initialise); ``=1`` → ``"forced"`` (call
      ``jax.distributed.initialize()`` with no arguments, e.g. on a Cloud TPU VM pod slice
      whose hosts are only known to the metadata server);
    * ``JAX_COORDINATOR_ADDRESS`` with ``JAX_NUM_PROCESSES`` > 1 (and ``JAX_PROCESS_ID``)
      → ``"env"``: any launcher (torchrun-style scripts, Kubernetes jobs, by hand);
    * SLURM with ``SLURM_NTASKS`` > 1 (``srun``, one task per host or per GPU) → ``"slurm"``;
    * Open MPI with ``OMPI_COMM_WORLD_SIZE`` > 1 (``mpirun``) → ``"ompi"``;
    * ``TPU_WORKER_HOSTNAMES`` / ``TPU_PROCESS_ADDRESSES`` listing more than one host
      (TPU pod slices on GKE) → ``"tpu"``.
    """
    env = os.environ if environ is None else environ
    forced = env.get("DSM_JAX_DISTRIBUTED", "").strip().lower()
    if forced in ("0", "false", "no", "off"):
        return None
    if forced in ("1", "true", "yes", "on"):
        return "forced"
    if forced:
        raise ValueError(f"DSM_JAX_DISTRIBUTED={forced!r}: use 1 (initialise) or 0 (never).")
    if env.get("JAX_COORDINATOR_ADDRESS") and (_int_env(env, "JAX_NUM_PROCESSES") or 1) > 1:
        return "env"
    slurm_vars = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID")
    if all(v in env for v in slurm_vars) and (_int_env(env, "SLURM_NTASKS") or 1) > 1:
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in env and (_int_env(env, "OMPI_COMM_WORLD_SIZE") or 1) > 1:
        return "ompi"
    hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
    if len([h for h in hosts.split(",") if h.strip()]) > 1:
        return "tpu"
    return None


def maybe_initialize_distributed(environ: Mapping[str, str] | None = None) -> bool:
    """Call ``jax.distributed.initialize()`` iff :func:`launcher` finds a multi-process
    launch; True when JAX's distributed system is (now) running. Call it first thing,
    before any JAX computation. Idempotent."""
    is_initialized = getattr(jax.distributed, "is_initialized", None)
    if is_initialized is not None and is_initialized():
        return True
    env = os.environ if environ is None else environ
    kind = launcher(env)
    if kind is None:
        return False
    kwargs = {}
    if kind == "env":  # JAX reads the address itself, but not the count or the id
        process_id = _int_env(env, "JAX_PROCESS_ID")
        if process_id is None:
            raise ValueError("JAX_COORDINATOR_ADDRESS and JAX_NUM_PROCESSES are set but JAX_PROCESS_ID is "
                             "not; set it to this process's rank (0 .. JAX_NUM_PROCESSES - 1).")
        kwargs = dict(coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                      num_processes=_int_env(env, "JAX_NUM_PROCESSES"), process_id=process_id)
    jax.distributed.initialize(**kwargs)
    return True
