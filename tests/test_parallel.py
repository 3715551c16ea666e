"""Data parallelism (dsm_jax.parallel): 8 CPU devices and 2 processes against one device.

The multi-device checks need ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` set
before JAX starts, so they run in one subprocess (this file run as a script: one JAX
import, one set of compiles) that prints its measurements as JSON; the tests assert on
them. The two-process run (2 × 2 CPU devices, gloo collectives, a real
``jax.distributed.initialize()`` through :func:`parallel.maybe_initialize_distributed`)
is two more subprocesses. The launcher detection and the per-process batch rows are
checked in this process.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from dsm_jax import parallel

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
TOL = 1e-5  # float32 sums in another order: ~1e-7 measured; anything real is >> 1e-5


def _env(n_devices: int, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    # of the suite's XLA_FLAGS only its optimisation level (conftest: level 0, compiles at half the CPU)
    level = [f for f in os.environ.get("XLA_FLAGS", "").split() if f.startswith("--xla_backend_optimization_level")]
    env.update(XLA_FLAGS=" ".join([f"--xla_force_host_platform_device_count={n_devices}", *level]), JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""), **extra)
    return env


def _last_json(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


# ---------------------------------------------------------------------------------------
# Workers (run in subprocesses)
# ---------------------------------------------------------------------------------------
def _max_diff(a, b) -> float:
    import jax

    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _error(fn) -> str:
    try:
        fn()
    except ValueError as e:
        return str(e)
    return "no error"


def _worker_eight_devices() -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    import dsm_jax as dj
    from dsm_jax import toy as toys
    from dsm_jax.loop import _compile_chunk

    assert jax.device_count() == 8, jax.devices()
    mesh = parallel.data_mesh()
    out = {"auto_devices": parallel.n_data(parallel.resolve_mesh("auto"))}
    module = dj.MLPEnergy(2, 16, "softplus")
    efn = dj.energy_fn_of(module)
    params = dj.init_params(module, jax.random.PRNGKey(0), (2,))
    opt = optax.sgd(1.0)  # plain SGD: an update is the gradient, so the check is on the gradient itself

    # 1. One step through fit (default mesh="auto") on a fixed global batch of 96 from a
    #    callable, with the EMA, against fit(mesh=None).
    x = np.random.default_rng(0).normal(size=(1, 96, 2)).astype(np.float32)
    step = dj.make_train_step(dj.dsm_loss(efn, 0.2), opt, ema_decay=0.9)
    state0 = dj.init_train_state(params, opt, jax.random.PRNGKey(1), ema=True)
    (s1, h1), (s8, h8) = (dj.fit(step, state0, 1, steps_per_call=1, batches=lambda n: x[:n], progress=False,
                                 **kw) for kw in ({"mesh": None}, {}))
    out["batch_step"] = {"params": _max_diff(s1.params, s8.params), "ema": _max_diff(s1.ema, s8.ema),
                         "loss": abs(h1[0]["loss"] - h8[0]["loss"]), "grad_norm": h1[0]["grad_norm"],
                         "grad_norm_diff": abs(h1[0]["grad_norm"] - h8[0]["grad_norm"]),
                         "moved": _max_diff(s1.params, params),
                         "state_devices": len(jax.tree.leaves(s8.params)[0].sharding.device_set)}

    # 2. The DDE step, 2 steps in one scan: the real batch drawn inside (with_data, as toy2d
    #    draws its batches) and the latents both split by the step built with mesh=.
    toy = toys.get_toy("eight_gaussians")
    gen_params = {"a": jnp.ones(2), "b": jnp.zeros(2)}
    generator_fn = lambda p, z: p["a"] * z[:, :2] + p["b"] + z[:, 2:]  # noqa: E731  (3-d latents: unmistakable in HLO)
    dde_state = dj.init_dde_state(gen_params, params, params, opt, opt, jax.random.PRNGKey(2))
    dde_args = (efn, generator_fn, 0.3, lambda k: jax.random.normal(k, (96, 3)), opt, opt)
    dde_kw = dict(gen_every=1, data_fn=lambda k: toy.sample(k, 96))
    d1, _ = jax.jit(_compile_chunk(dj.make_dde_step(*dde_args, **dde_kw), 2, False))(dde_state)
    dde = dj.make_dde_step(*dde_args, **dde_kw, mesh=mesh)  # as fit runs it: replicated state
    compiled = _compile_chunk(dde, 2, False, mesh).lower(parallel.replicate(dde_state, mesh)).compile()
    d8, _ = compiled(parallel.replicate(dde_state, mesh))
    hlo = compiled.as_text()
    out["dde_step"] = {"state": _max_diff(d1, d8), "moved": _max_diff(d1.gen.params, gen_params),
                       "full_batch_in_hlo": "f32[96,2]" in hlo, "slice_in_hlo": "f32[12,2]" in hlo,
                       "full_latents_in_hlo": "f32[96,3]" in hlo, "latent_slice_in_hlo": "f32[12,3]" in hlo}

    # 3. A sampler (MALA, with a per-example inpainting mask): the same chains on 8 devices.
    x0 = 2.0 * jax.random.normal(jax.random.PRNGKey(3), (64, 2))
    free = (jax.random.uniform(jax.random.PRNGKey(5), x0.shape) < 0.5).astype(jnp.float32)
    key = jax.random.PRNGKey(4)
    # A confining energy, so that MALA rejects some proposals and the accept decisions are tested too.
    mala = dj.mala_with_info(lambda p, x: efn(p, x) + 0.5 * jnp.sum(x**2, axis=1), 1.0, 30)
    (a, ia), (b, ib) = jax.jit(mala)(params, key, x0, free), parallel.shard_chains(mala)(params, key, x0, free)
    fixed = np.asarray(free) == 0
    out["mala"] = {"x": _max_diff(a, b), "acceptance": _max_diff(ia.acceptance_rate, ib.acceptance_rate),
                   "moved": _max_diff(a, x0), "acceptance_mean": float(jnp.mean(ia.acceptance_rate)),
                   "fixed_kept": bool(np.array_equal(np.asarray(b)[fixed], np.asarray(x0)[fixed])),
                   "out_devices": len(b.sharding.device_set)}

    # 4. A global batch that does not split over 8 devices: clear errors, before compute.
    step60 = dj.make_train_step(dj.dsm_loss(efn, 0.2), opt, data_fn=lambda k: jax.random.normal(k, (60, 2)),
                                mesh=mesh)
    out["errors"] = {
        "batches": _error(lambda: dj.fit(step, state0, 1, batches=lambda n: np.zeros((n, 60, 2)), progress=False)),
        "data_fn": _error(lambda: dj.fit(step60, state0, 1, progress=False)),
        "chains": _error(lambda: parallel.shard_chains(mala)(params, key, x0[:60])),
        "config": _error(lambda: parallel.check_batches({"batch_size": 100, "n_samples": 64})),
    }

    # 5. The mesh is an argument, never ambient state. A step built with mesh= is its own
    #    program, split 96 -> 12 rows a device; the same step built without one stays the
    #    one-device program (two jitted functions, one cache entry each). On the old code the
    #    mesh came from parallel.active_mesh, read at trace time: a step jitted once reused
    #    its unsharded program inside the block (cache size stayed 1).
    loss = dj.dsm_loss(efn, 0.2)
    draw96 = lambda k: jax.random.normal(k, (96, 2))  # noqa: E731
    plain = jax.jit(dj.make_train_step(loss, opt, data_fn=draw96))
    meshed = jax.jit(dj.make_train_step(loss, opt, data_fn=draw96, mesh=mesh))
    on_batch = jax.jit(dj.make_train_step(loss, opt, mesh=mesh))  # step(state, x): x split as given
    s0 = dj.init_train_state(params, opt, jax.random.PRNGKey(6))
    (p_state, p_metrics), (m_state, m_metrics) = plain(s0), meshed(s0)
    plain(s0), meshed(s0)  # called again: each reuses its own program
    hlo = {name: fn.lower(*args).compile().as_text()
           for name, fn, args in (("plain", plain, (s0,)), ("meshed", meshed, (s0,)),
                                  ("on_batch", on_batch, (s0, x[0])))}
    fit_state, _ = dj.fit(dj.make_train_step(loss, opt, data_fn=draw96, mesh=mesh), s0, 2, steps_per_call=2,
                          progress=False, mesh=mesh)
    fit_none, _ = dj.fit(dj.make_train_step(loss, opt, data_fn=draw96), s0, 2, steps_per_call=2,
                         progress=False, mesh=None)
    chains_none = parallel.shard_chains(mala, None)(params, key, x0, free)[0]
    chains_mesh = parallel.shard_chains(mala, mesh)(params, key, x0, free)[0]
    try:
        with parallel.active_mesh(mesh):
            plain(s0)
        ambient = "no error"
    except RuntimeError as err:
        ambient = str(err)
    out["mesh_argument"] = {
        "slices": {name: "f32[12,2]" in text for name, text in hlo.items()},
        "full": {name: "f32[96,2]" in text for name, text in hlo.items()},
        "cache_sizes": [plain._cache_size(), meshed._cache_size()],
        "state": _max_diff(p_state, m_state), "loss": abs(float(p_metrics["loss"]) - float(m_metrics["loss"])),
        "moved": _max_diff(p_state.params, params),
        "fit_devices": [len(jax.tree.leaves(s.params)[0].sharding.device_set) for s in (fit_none, fit_state)],
        "fit_state": _max_diff(fit_none, fit_state),
        "chain_devices": [len(c.sharding.device_set) for c in (chains_none, chains_mesh)],
        "chains": _max_diff(chains_none, chains_mesh),
        "active_mesh": ambient,
    }
    return out


def _worker_process(ckpt_dir: str) -> dict:
    """One of two processes (2 CPU devices each): fit over the 4 global devices with each
    process reading its own rows from a BatchIterator, stopped after 2 steps and resumed
    from the checkpoint both processes wrote, against 4 steps on one device."""
    launched = parallel.maybe_initialize_distributed()  # before any JAX computation
    import jax
    import optax

    import dsm_jax as dj
    from dsm_jax.data import BatchIterator

    module = dj.MLPEnergy(2, 16, "softplus")
    efn = dj.energy_fn_of(module)
    params = dj.init_params(module, jax.random.PRNGKey(0), (2,))
    opt = optax.sgd(1.0)
    state0 = dj.init_train_state(params, opt, jax.random.PRNGKey(1))
    step = dj.make_train_step(dj.dsm_loss(efn, 0.2), opt)
    data = np.random.default_rng(0).normal(size=(256, 2)).astype(np.float32)
    run = dict(steps_per_call=2, progress=False, checkpoint_dir=ckpt_dir, checkpoint_every=2)
    dj.fit(step, state0, 2, batches=BatchIterator(data, 64, seed=0), **run)
    batches = BatchIterator(data, 64, seed=0)  # a fresh start: the data position comes from the checkpoint
    s_mp, h_mp = dj.fit(step, state0, 4, batches=batches, **run)
    one = BatchIterator(data, 64, seed=0, process_index=0, process_count=1)
    s_1, h_1 = dj.fit(step, state0, 4, steps_per_call=2, batches=one, progress=False, mesh=None)
    x0 = jax.random.normal(jax.random.PRNGKey(3), (32, 2))
    sampler = dj.langevin(efn, 0.05, 20)
    chains = parallel.shard_chains(sampler)(s_mp.params, jax.random.PRNGKey(4), x0)
    return {"launched": launched, "process_count": jax.process_count(), "device_count": jax.device_count(),
            "resumed_steps": [h["step"] for h in h_mp],
            "local_batch": batches.local_batch_size, "position": batches.position,
            "params": _max_diff(s_mp.params, s_1.params), "loss": abs(h_mp[-1]["loss"] - h_1[-1]["loss"]),
            "moved": _max_diff(s_1.params, params),
            "chains": _max_diff(chains, jax.jit(sampler)(s_1.params, jax.random.PRNGKey(4), x0))}


if __name__ == "__main__":
    print(json.dumps(_worker_eight_devices() if sys.argv[1] == "eight" else _worker_process(sys.argv[2])), flush=True)


# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eight_devices() -> dict:
    """The 8-device worker's measurements (one subprocess for every test that reads them)."""
    proc = subprocess.run([sys.executable, HERE, "eight"], env=_env(8), capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return _last_json(proc.stdout)


def test_eight_devices_match_one_device(eight_devices):
    r = eight_devices
    assert r["auto_devices"] == 8  # mesh="auto" (fit's default) uses every device

    b = r["batch_step"]
    assert b["state_devices"] == 8, "fit(mesh='auto') should leave the state replicated on all 8 devices"
    assert b["moved"] > 1e-4  # the step did something, so agreeing means something
    assert b["params"] < TOL and b["ema"] < TOL, b
    assert b["loss"] < TOL and b["grad_norm_diff"] < TOL * max(1.0, b["grad_norm"]), b

    g = r["dde_step"]
    assert g["moved"] > 1e-3 and g["state"] < TOL, g
    # What the step draws itself is split: each device holds 96 / 8 = 12 rows, never all 96.
    assert g["slice_in_hlo"] and not g["full_batch_in_hlo"], g
    assert g["latent_slice_in_hlo"] and not g["full_latents_in_hlo"], g

    m = r["mala"]
    assert m["moved"] > 0.1 and 0.1 < m["acceptance_mean"] < 0.97, m
    assert m["x"] < TOL and m["acceptance"] < TOL, m  # same chains, same accept decisions
    assert m["fixed_kept"] and m["out_devices"] == 8, m

    e = r["errors"]
    assert "`batch_size` = 60 does not divide by the 8 devices" in e["batches"] and "56 or 64" in e["batches"], e
    assert "`data_fn(key) batch` = 60 does not divide by the 8 devices" in e["data_fn"], e
    assert "`x0` = 60 does not divide by the 8 devices" in e["chains"], e
    # The experiments' up-front check names the offending config field and a --set fix, only that one.
    assert "`batch_size` = 100 (--set batch_size=96)" in e["config"] and "n_samples" not in e["config"], e


def test_mesh_is_an_argument_so_sharded_and_unsharded_steps_are_two_programs(eight_devices):
    """Fails on the old code (mesh read from a ContextVar at trace time): there,
    make_train_step had no mesh= and a step jitted once ran its cached unsharded program
    inside parallel.active_mesh. Here the mesh given as argument shards the computation
    (each of 8 devices draws 96 / 8 = 12 rows), the step built without it does not, both
    compute the same values, and the ambient-mesh API refuses with a pointer to mesh=."""
    r = eight_devices["mesh_argument"]
    assert r["slices"] == {"plain": False, "meshed": True, "on_batch": True}, r
    assert r["full"]["plain"] and not r["full"]["meshed"], r
    assert r["cache_sizes"] == [1, 1], r  # two functions, one program each, each reused
    assert r["moved"] > 1e-4 and r["state"] < TOL and r["loss"] < TOL, r
    assert r["fit_devices"] == [1, 8] and r["fit_state"] < TOL, r
    assert r["chain_devices"] == [1, 8] and r["chains"] < TOL, r
    assert "mesh=" in r["active_mesh"] and "make_train_step" in r["active_mesh"], r


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_device(tmp_path):
    port = _free_port()
    procs = [
        subprocess.Popen([sys.executable, HERE, "process", str(tmp_path / "ckpt")], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env=_env(2, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                                  JAX_PROCESS_ID=str(i), JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo"))
        for i in range(2)
    ]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
    for stdout, _ in outs:
        r = _last_json(stdout)
        assert r["launched"] and r["process_count"] == 2 and r["device_count"] == 4, r
        assert r["local_batch"] == 32 and r["position"] == {"epoch": 1, "index": 0}, r
        assert r["resumed_steps"] == [4], r  # the second fit resumed at step 2 and ran one chunk
        assert r["moved"] > 1e-3 and r["params"] < TOL and r["loss"] < TOL, r
        assert r["chains"] < TOL, r


# ---------------------------------------------------------------------------------------
# In-process: launcher detection, per-process rows, mesh arguments
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, None),
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "1"}, "env"),
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "1"}, None),
        ({"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2", "SLURM_PROCID": "0",
          "SLURM_LOCALID": "0"}, "slurm"),
        ({"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
          "SLURM_LOCALID": "0"}, None),  # one task: a single-process job
        ({"OMPI_MCA_orte_hnp_uri": "x;tcp://10.0.0.1:5", "OMPI_COMM_WORLD_SIZE": "8"}, "ompi"),
        ({"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}, "tpu"),
        ({"TPU_WORKER_HOSTNAMES": "localhost"}, None),  # a single TPU VM
        ({"DSM_JAX_DISTRIBUTED": "1"}, "forced"),
        ({"DSM_JAX_DISTRIBUTED": "0", "TPU_WORKER_HOSTNAMES": "t0,t1"}, None),
    ],
)
def test_launcher_detection(env, expected):
    assert parallel.launcher(env) == expected
    if expected is None:  # nothing to initialise: no call into jax.distributed
        assert parallel.maybe_initialize_distributed(env) is False


def test_launcher_errors_are_clear():
    with pytest.raises(ValueError, match="JAX_PROCESS_ID"):
        parallel.maybe_initialize_distributed({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"})
    with pytest.raises(ValueError, match="DSM_JAX_DISTRIBUTED"):
        parallel.launcher({"DSM_JAX_DISTRIBUTED": "maybe"})


def test_batch_iterator_processes_read_their_own_rows():
    from dsm_jax.data import BatchIterator

    x = np.arange(100, dtype=np.float32)[:, None]
    whole = BatchIterator(x, 12, seed=3, process_index=0, process_count=1)
    parts = [BatchIterator(x, 12, seed=3, process_index=i, process_count=3) for i in range(3)]
    for _ in range(10):  # crosses an epoch boundary (8 batches per epoch)
        expected = whole.next_stacked(2)
        got = [p.next_stacked(2) for p in parts]
        assert all(g.shape == (2, 4, 1) for g in got)
        np.testing.assert_array_equal(np.concatenate(got, axis=1), expected)
        assert all(p.position == whole.position for p in parts)
    with pytest.raises(ValueError, match="does not split over 3 processes"):
        BatchIterator(x, 10, process_index=0, process_count=3)
    with pytest.raises(ValueError, match="process_index"):
        BatchIterator(x, 12, process_index=3, process_count=3)


def test_mesh_argument_errors():
    import jax

    assert parallel.resolve_mesh(None) is None
    # One device (the usual test process): "auto" is the unsharded path, unchanged.
    assert (parallel.resolve_mesh("auto") is None) == (jax.device_count() == 1)
    with pytest.raises(ValueError, match="no 'data' axis"):
        parallel.resolve_mesh(jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("model",)))
    with pytest.raises(ValueError, match="'auto', None or a jax.sharding.Mesh"):
        parallel.resolve_mesh("all")


def test_shard_chains_refuses_bad_arguments_when_built():
    import jax

    sampler = lambda params, key, x0: x0  # noqa: E731
    with pytest.raises(TypeError, match=r"`sample_fn` must be a function \(params, key, x0, \*masks\)"):
        parallel.shard_chains(None)
    with pytest.raises(TypeError, match=r"`mesh` must be 'auto', None or a jax.sharding.Mesh, got int"):
        parallel.shard_chains(sampler, 8)
    with pytest.raises(TypeError, match=r"`compiler_options` must be a dict or None"):
        parallel.shard_chains(sampler, None, compiler_options=["fast"])
    # mesh=None: plain jit on the default device, resolved when built (no ambient mesh).
    x0 = np.ones((4, 2), np.float32)
    np.testing.assert_array_equal(parallel.shard_chains(sampler, None)(None, jax.random.PRNGKey(0), x0), x0)


def test_the_ambient_mesh_api_is_refused_pointing_at_mesh_arguments():
    for removed in (lambda: parallel.active_mesh(None), parallel.current_mesh):
        with pytest.raises(RuntimeError, match=r"was removed.*jax.jit's cache.*make_train_step\(\.\.\., mesh=mesh\)"):
            removed()
    assert not hasattr(parallel, "_ACTIVE_MESH")


def test_placement_functions_refuse_what_is_not_a_data_mesh():
    import jax

    x = np.ones((4, 2), np.float32)
    for place in (lambda m: parallel.replicate(x, m), lambda m: parallel.shard_batch(x, m),
                  lambda m: parallel.constrain_batch(x, m)):
        with pytest.raises(TypeError, match=r"`mesh` must be a jax.sharding.Mesh here .*got str"):
            place("auto")
        with pytest.raises(ValueError, match="no 'data' axis"):
            place(jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("model",)))
    assert parallel.constrain_batch(x, None) is x  # no mesh: the one-device program, untouched
    one = parallel.data_mesh(jax.devices()[:1])
    np.testing.assert_array_equal(parallel.shard_batch(x, one), x)

