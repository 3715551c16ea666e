"""Exact resume and guards: a SIGKILLed run restarts bit-identical, unreadable checkpoints
fall back, incompatible ones are refused, non-finite steps stop (or are skipped and
counted) without ever being checkpointed, and bad input is refused before compute."""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dsm_jax as dj
from conftest import diag_quadratic_energy, tree_equal
from dsm_jax import checkpoint, config, data, plotting, runlog
from experiments import fashion_mnist, fashion_mnist_dde, toy2d

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = os.path.join(ROOT, "tests", "_resume_worker.py")
M = np.array([1.0, -2.0], np.float32)


# ---------------------------------------------------------------------------------------
# Kill -9 and restart
# ---------------------------------------------------------------------------------------
def _finalized_steps(ckpt_dir) -> list[int]:
    """Step directories orbax has finished (renamed from their temporary name)."""
    if not os.path.isdir(ckpt_dir):
        return []
    return sorted(int(n) for n in os.listdir(ckpt_dir) if n.isdigit())


def _worker(out, *extra):
    return [sys.executable, WORKER, "--out", str(out), *extra]


def test_sigkill_then_restart_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for d in (straight, killed):
        d.mkdir()
    done = subprocess.run(_worker(straight), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    # Slow chunks on the host (no computed value changes) so the kill lands mid-run, right
    # after the first checkpoint is finalized; an async save may be in flight at that moment.
    proc = subprocess.Popen(_worker(killed, "--chunk_sleep", "0.4"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not _finalized_steps(killed / "ckpt"):
        assert proc.poll() is None, f"worker ended before its first checkpoint: {proc.communicate()[1][-3000:]}"
        assert time.time() < deadline, "no checkpoint within 240 s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    at_kill = _finalized_steps(killed / "ckpt")
    assert max(at_kill) < 60 and not (killed / "final.npz").exists(), at_kill

    resumed = subprocess.run(_worker(killed), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    info = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert info["first_chunk_end"] == max(at_kill) + 5  # it resumed, it did not start over

    a, b = np.load(straight / "final.npz"), np.load(killed / "final.npz")
    assert sorted(a.files) == sorted(b.files) and len(a.files) == info["n_leaves"]
    for name in a.files:  # params, Adam moments, EMA, step, RNG key: bit for bit
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name
    # The log holds every chunk once after de-duplication (the killed run's tail is redone).
    assert [r["step"] for r in runlog.read_log(str(killed / "log.jsonl"))] == list(range(5, 65, 5))


# ---------------------------------------------------------------------------------------
# Unreadable and incompatible checkpoints
# ---------------------------------------------------------------------------------------
def _data_fn(key):
    return M + 0.5 * jax.random.normal(key, (64, 2))


def _setup():
    """DSM on a diagonal quadratic, plus a 2,048-float leaf of random values that the loss
    ignores: big enough that orbax writes it to a data file of its own (small arrays are
    inlined in the index), and incompressible, so a flipped byte changes a value."""
    opt = optax.adam(1e-2)
    loss = dj.dsm_loss(diag_quadratic_energy, 0.5)
    step = dj.make_train_step(lambda p, k, x: loss(p["q"], k, x), opt, _data_fn)
    params = {"q": {"b": jnp.zeros(2), "log_prec": jnp.zeros(2)},
              "pad": jax.random.normal(jax.random.PRNGKey(5), (2048,))}
    return step, dj.init_train_state(params, opt, jax.random.PRNGKey(0))


def _flip_largest_data_file(step_dir):
    files = [f for f in glob.glob(os.path.join(step_dir, "state", "**"), recursive=True)
             if os.path.isfile(f) and os.sep + "d" + os.sep in f]
    path = max(files, key=os.path.getsize)
    raw = bytearray(open(path, "rb").read())
    raw[len(raw) // 2] ^= 0xFF
    open(path, "wb").write(bytes(raw))


def _truncate_state_files(step_dir):
    for f in glob.glob(os.path.join(step_dir, "state", "**"), recursive=True):
        if os.path.isfile(f):
            os.truncate(f, os.path.getsize(f) // 2)


@pytest.mark.parametrize("damage", ["flipped_byte", "truncated"])
def test_unreadable_newest_checkpoint_is_reported_and_the_previous_one_used(tmp_path, damage):
    step, state = _setup()
    straight, _ = dj.fit(step, state, 40, steps_per_call=10, progress=False)
    ckpt = tmp_path / "ckpt"
    dj.fit(step, state, 30, steps_per_call=10, progress=False, checkpoint_dir=str(ckpt), checkpoint_every=10)
    assert _finalized_steps(ckpt) == [10, 20, 30]
    (_flip_largest_data_file if damage == "flipped_byte" else _truncate_state_files)(str(ckpt / "30"))
    # A save killed mid-write leaves a temporary directory: never taken for a checkpoint.
    (ckpt / "35.orbax-checkpoint-tmp-1234").mkdir()

    with pytest.warns(RuntimeWarning, match=r"step 30 .* unreadable .*Resuming from the previous"):
        resumed, history = dj.fit(step, state, 40, steps_per_call=10, progress=False,
                                  checkpoint_dir=str(ckpt), checkpoint_every=10)
    assert [h["step"] for h in history] == [30, 40]  # restarted from 20
    assert tree_equal(resumed, straight)
    assert glob.glob(str(ckpt / "unreadable-step-30-*"))  # kept for inspection, out of orbax's view
    assert _finalized_steps(ckpt) == [20, 30, 40] and not (ckpt / "35.orbax-checkpoint-tmp-1234").exists()


def test_checksum_catches_what_orbax_reads_back_silently(tmp_path):
    # Orbax's chunks carry no checksum: with the saved digest ignored, the flipped byte
    # restores without error to different values. That is what the digest is for.
    step, state = _setup()
    ckpt = checkpoint.Checkpoints(str(tmp_path))
    ckpt.save(1, state)
    ckpt.close()
    _flip_largest_data_file(str(tmp_path / "1"))
    meta = tmp_path / "1" / "extra" / "metadata"
    extra = json.loads(meta.read_text())
    meta.write_text(json.dumps({**extra, "digest": None}))
    ckpt = checkpoint.Checkpoints(str(tmp_path))
    silently, _ = ckpt.restore_latest(state)
    ckpt.close()
    assert not tree_equal(silently, state)

    meta.write_text(json.dumps(extra))  # the digest back: now refused
    ckpt = checkpoint.Checkpoints(str(tmp_path))
    with pytest.raises(RuntimeError, match=r"No checkpoint .* could be read .*step 1: ValueError: checksum mismatch"):
        ckpt.restore_latest(state)
    ckpt.close()


def test_incompatible_checkpoint_is_refused_naming_the_differences(tmp_path):
    step, state = _setup()
    ckpt = str(tmp_path / "ckpt")
    fp = {"lr": 0.01, "width": 16, "toys": ("rings",)}
    dj.fit(step, state, 10, steps_per_call=10, progress=False, checkpoint_dir=ckpt, checkpoint_every=10,
           fingerprint=fp)
    # Same fingerprint (tuples read back from JSON as lists): resumes.
    again, history = dj.fit(step, state, 10, progress=False, checkpoint_dir=ckpt, fingerprint=dict(fp))
    assert history == [] and int(again.step) == 10
    with pytest.raises(dj.IncompatibleCheckpointError, match=r"lr: checkpoint 0\.01, now 0\.02.*new --out"):
        dj.fit(step, state, 20, progress=False, checkpoint_dir=ckpt, fingerprint={**fp, "lr": 0.02})
    # No fingerprint, but parameters of another shape: the saved layout names the leaf.
    wider = state._replace(params={**state.params, "pad": jnp.zeros(4096)})
    wider = wider._replace(opt_state=optax.adam(1e-2).init(wider.params))
    with pytest.raises(dj.IncompatibleCheckpointError, match=r"state\.params\['pad'\]: checkpoint '\(2048,\)"):
        dj.fit(step, wider, 20, progress=False, checkpoint_dir=ckpt)
    assert _finalized_steps(tmp_path / "ckpt") == [10]  # nothing was moved or overwritten


# ---------------------------------------------------------------------------------------
# Non-finite steps: stop by default, or skip and count
# ---------------------------------------------------------------------------------------
def _batches_with_nan_at(bad_steps):
    """``batches(n)`` over a fixed stream: 1-based steps in ``bad_steps`` get a NaN batch."""
    rng = np.random.default_rng(0)
    taken = [0]

    def batches(n):
        out = (M + 0.5 * rng.normal(size=(n, 32, 2))).astype(np.float32)
        for i in range(n):
            if taken[0] + i + 1 in bad_steps:
                out[i, 0, 0] = np.nan
        taken[0] += n
        return out

    return batches


def _quadratic_step(skip=False, loss=None):
    opt = optax.sgd(0.1)
    loss = loss or (lambda params, key, x: jnp.mean(jnp.sum((x - params) ** 2, axis=1)))
    state = dj.init_train_state(jnp.zeros(2), opt, jax.random.PRNGKey(0))
    return dj.make_train_step(loss, opt, skip_nonfinite=skip), state


def test_nonfinite_loss_or_gradient_stops_naming_the_step_and_quantity(tmp_path):
    step, state = _quadratic_step()
    ckpt = str(tmp_path / "ckpt")
    with pytest.raises(FloatingPointError, match=r"non-finite grad_norm, loss in steps 6\.\.10, first at step 7 "
                                                 r".*last good checkpoint \(step 5\)"):
        dj.fit(step, state, 20, steps_per_call=5, batches=_batches_with_nan_at({7}), progress=False,
               checkpoint_dir=ckpt, checkpoint_every=5)
    assert _finalized_steps(ckpt) == [5]
    # A finite loss with a NaN gradient: sqrt(|w|) at w = 0 (derivative 0 · ∞).
    step, state = _quadratic_step(loss=lambda p, k, x: jnp.sum(jnp.sqrt(jnp.abs(p))))
    with pytest.raises(FloatingPointError, match=r"non-finite grad_norm in steps 1\.\.1, first at step 1"):
        dj.fit(step, state, 3, steps_per_call=1, batches=_batches_with_nan_at(set()), progress=False)


def test_a_nonfinite_state_is_never_checkpointed(tmp_path):
    # Finite metrics but NaN parameters after step 10 (as when the last step of a chunk
    # takes a NaN gradient): the save is refused and step 5 stays the latest checkpoint.
    def step(state):
        params = jnp.where(state.step + 1 == 10, jnp.nan, state.params + 1.0)
        return state._replace(step=state.step + 1, params=params), {"loss": jnp.ones(())}

    state = dj.TrainState(jnp.zeros((), jnp.int32), jnp.zeros(3), jnp.zeros(()), jax.random.PRNGKey(0))
    ckpt = str(tmp_path / "ckpt")
    with pytest.raises(FloatingPointError, match=r"non-finite values in state\.params after step 10.*not saved.*"
                                                 r"last good checkpoint \(step 5\)"):
        dj.fit(step, state, 20, steps_per_call=5, progress=False, checkpoint_dir=ckpt, checkpoint_every=5)
    assert _finalized_steps(ckpt) == [5]


def test_skip_nonfinite_keeps_the_state_and_counts_the_skips(tmp_path):
    step, state = _quadratic_step(skip=True)
    states, log = {}, tmp_path / "log.jsonl"
    final, history = dj.fit(step, state, 12, steps_per_call=3, batches=_batches_with_nan_at({4, 8, 9}),
                            progress=False, log_path=str(log),
                            callback=lambda s, r: states.__setitem__(r["step"], s))
    assert int(final.step) == 12
    assert [h["skipped"] for h in history] == [0, 1, 2, 0]
    assert [h["skipped_total"] for h in history] == [0, 1, 3, 3]
    assert all(np.isfinite(h["loss"]) and np.isfinite(h["grad_norm"]) for h in history)  # skipped steps left out
    assert [json.loads(line)["skipped"] for line in log.read_text().splitlines()] == [0, 1, 2, 0]
    # SGD at lr 0.1 contracts p − mean(x) by 0.8 per step taken: 9 of the 12 were.
    np.testing.assert_allclose(final.params, M * (1 - 0.8**9), atol=0.06)

    # Step by step: a skipped step keeps params and optimiser state, but step and key advance.
    jstep = jax.jit(step)
    batches = _batches_with_nan_at({2})
    s0 = state
    s1, m1 = jstep(s0, batches(1)[0])
    s2, m2 = jstep(s1, batches(1)[0])
    assert float(m1["skipped"]) == 0 and float(m2["skipped"]) == 1 and not np.isfinite(float(m2["loss"]))
    assert tree_equal(s2.params, s1.params) and tree_equal(s2.opt_state, s1.opt_state)
    assert int(s2.step) == 2 and not tree_equal(s2.key, s1.key)


def test_too_many_consecutive_skips_stop_the_run():
    step, state = _quadratic_step(skip=True)
    with pytest.raises(FloatingPointError, match=r"4 consecutive steps up to step 9 were non-finite"):
        dj.fit(step, state, 20, steps_per_call=4, batches=_batches_with_nan_at(set(range(6, 21))),
               progress=False, max_consecutive_skips=3)


def test_skip_wrapper_works_on_dde_states():
    # Any state with step/key fields: here a DDE step whose generator update goes NaN.
    def step(state):
        gen = state.gen._replace(params=state.gen.params * jnp.nan)
        return state._replace(step=state.step + 1, gen=gen, key=jax.random.split(state.key)[0]), {"gen_loss": 0.0}

    s0 = dj.init_dde_state(jnp.ones(2), jnp.ones(2), jnp.ones(2), optax.sgd(1.0), optax.sgd(1.0),
                           jax.random.PRNGKey(0))
    s1, m = jax.jit(dj.skip_nonfinite_steps(step))(s0)
    assert float(m["skipped"]) == 1 and int(s1.step) == 1 and tree_equal(s1.gen, s0.gen)


def test_read_log_deduplicates_resumed_steps_and_survives_a_cut_line(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 5, "loss": 1.0, "run": "a"}\n{"step": 10, "loss": 2.0, "run": "a"}\n{"step": 5, "lo')
    step, state = _quadratic_step()
    dj.fit(step, state, 10, steps_per_call=5, batches=_batches_with_nan_at(set()), progress=False,
           log_path=str(log), log_extra={"run": "a"})
    records = runlog.read_log(str(log), run="a")
    assert [r["step"] for r in records] == [5, 10] and records[1]["loss"] != 2.0  # the rerun's record wins
    assert runlog.read_log(str(log), run="b") == []


# ---------------------------------------------------------------------------------------
# Bad input refused before compute
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("keep, error, message", [
    (0, ValueError, r"`keep` must be an int >= 1, or None \(keep every checkpoint\), got 0"),  # orbax: delete each save
    (-1, ValueError, r"`keep` must be an int >= 1"),
    (2.0, TypeError, r"`keep` must be an int >= 1"),
])
def test_checkpoints_refuse_a_keep_that_would_delete_them(tmp_path, keep, error, message):
    with pytest.raises(error, match=message):
        checkpoint.Checkpoints(str(tmp_path / "ckpt"), keep=keep)
    assert not (tmp_path / "ckpt").exists()


def test_checkpoints_refuse_a_directory_that_is_a_file(tmp_path):
    path = tmp_path / "ckpt"
    path.write_text("a file")
    with pytest.raises(ValueError, match=r"`directory` = .*ckpt' is an existing file, not a directory"):
        checkpoint.Checkpoints(str(path))
    with pytest.raises(TypeError, match=r"`directory` must be a non-empty path"):
        checkpoint.Checkpoints(None)
    with pytest.raises(ValueError, match=r"`directory` = .*ckpt' is an existing file"):
        dj.latest_step(str(path))  # was None: "no checkpoint" for a path that can never hold one
    assert dj.latest_step(str(tmp_path / "not-yet")) is None
    assert path.read_text() == "a file"


def test_checkpoint_save_refuses_a_bad_step_or_extra_before_writing(tmp_path):
    _, state = _setup()
    store = checkpoint.Checkpoints(str(tmp_path / "ckpt"))
    with pytest.raises(ValueError, match=r"`step` must be an int >= 0, got -1"):
        store.save(-1, state)
    with pytest.raises(TypeError, match=r"`extra` must be JSON-able"):
        store.save(1, state, {"position": np.zeros(2)})
    with pytest.raises(TypeError, match=r"`fingerprint` must be a dict"):
        store.save(1, state, fingerprint=["lr"])
    store.close()
    assert _finalized_steps(tmp_path / "ckpt") == []


def test_a_checkpoint_written_before_the_split_still_loads_and_resumes(tmp_path):
    # tests/data/checkpoint_before_split/6 was written by dsm_jax.training.fit before it was
    # split into train_step/loop/checkpoint (6 steps of Adam + EMA over a BatchIterator,
    # fingerprint {"width": 2}). The new code restores it (layout, digest, fingerprint and data
    # position) and resumes it to 12 steps bit-identical to an uninterrupted run.
    import shutil

    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    opt = dj.adam(1e-2)
    step = dj.make_train_step(lambda p, k, b: jnp.mean((p["w"] - b) ** 2), opt, ema_decay=0.9)
    state = dj.init_train_state({"w": jnp.zeros(2)}, opt, jax.random.key(0), ema=True)
    ckpt = tmp_path / "ckpt"
    shutil.copytree(os.path.join(ROOT, "tests", "data", "checkpoint_before_split"), ckpt)
    store = checkpoint.Checkpoints(str(ckpt))
    restored, extra = store.restore_latest(state, fingerprint={"width": 2})
    store.close()
    assert int(restored.step) == 6 and extra["data_position"] == {"epoch": 1, "index": 1}, extra
    np.testing.assert_array_equal(restored.params["w"], np.float32([0.0577455572783947, 0.05793483555316925]))
    np.testing.assert_array_equal(restored.ema["w"], np.float32([0.017283562570810318, 0.017328087240457535]))
    run = dict(steps_per_call=3, progress=False, fingerprint={"width": 2})
    resumed, history = dj.fit(step, state, 12, batches=data.BatchIterator(x, 4, seed=1), checkpoint_dir=str(ckpt),
                              checkpoint_every=3, **run)
    straight, _ = dj.fit(step, state, 12, batches=data.BatchIterator(x, 4, seed=1), **run)
    assert [h["step"] for h in history] == [9, 12]
    chex.assert_trees_all_equal(resumed, straight)


def test_check_images_refuses_bad_data_naming_the_fix():
    good = np.full((4, 32, 32, 1), 0.5, np.float32)
    assert data.check_images("x", good, (32, 32, 1)) is not None
    with pytest.raises(ValueError, match=r"`x` must have shape \(n, H, W, C\).*x\[\.\.\., None\]"):
        data.check_images("x", good[..., 0])
    with pytest.raises(ValueError, match=r"images of shape \(32, 32, 1\), got \(28, 28, 1\).*to_model_input"):
        data.check_images("x", good[:, :28, :28], (32, 32, 1))
    with pytest.raises(TypeError, match=r"floating-point array, got dtype uint8.*/ 255"):
        data.check_images("x", (good * 255).astype(np.uint8))
    bad = good.copy()
    bad[2, 3, 4, 0] = np.nan
    with pytest.raises(ValueError, match=r"1 images with NaN/inf values \(first at index 2\)"):
        data.check_images("x", bad)
    with pytest.raises(ValueError, match=r"values must lie in \[0\.0, 1\.0\], got \[127\.5, 127\.5\].*/ 255"):
        data.check_images("x", good * 255)


@pytest.mark.parametrize("module, base, overrides, message", [
    (toy2d, toy2d.ToyConfig, ["sigma_min=2.0", "sigma_max=1.0"], r"`sigma_min` \(2\.0\) must be <= `sigma_max`"),
    (toy2d, toy2d.ToyConfig, ["dde_steps=-5"], r"`dde_steps` must be an int >= 1, got -5; fix it with --set"),
    (toy2d, toy2d.ToyConfig, ["toys=rings,moons"], r"`toys` .* \(unknown: \['moons'\]\)"),
    (toy2d, toy2d.ToyConfig, ["n_constant=0", "n_exponential=0"], r"sampler has no steps"),
    (fashion_mnist, fashion_mnist.FashionConfig, ["batch_size=0"], r"`batch_size` must be an int >= 1"),
    (fashion_mnist, fashion_mnist.FashionConfig, ["lr=nan"], r"`lr` must be a finite number > 0"),
    (fashion_mnist, fashion_mnist.FashionConfig, ["ema_decay=1.0"], r"`ema_decay` must be in \[0, 1\)"),
    (fashion_mnist, fashion_mnist.FashionConfig, ["train_limit=10"], r"`batch_size` \(16\) exceeds `train_limit`"),
    (fashion_mnist_dde, fashion_mnist_dde.DDEFashionConfig, ["arch=mlp"], r"`arch` must be one of \('densenet'"),
    (fashion_mnist_dde, fashion_mnist_dde.DDEFashionConfig, ["steps=0"], r"`steps` must be an int >= 1"),
    (fashion_mnist_dde, fashion_mnist_dde.DDEFashionConfig, ["train_limit=10"],
     r"`batch_size` \(16\) exceeds `train_limit` \(10\); fix it with --set batch_size=10 or --set train_limit=0"),
])
def test_inconsistent_config_is_refused_by_parse_args(module, base, overrides, message):
    argv = ["--preset", "smoke", *[a for o in overrides for a in ("--set", o)]]
    with pytest.raises(ValueError, match=message):
        config.parse_args(base(), module.PRESETS, "", argv)


@pytest.mark.parametrize("module, base", [(fashion_mnist, fashion_mnist.FashionConfig),
                                          (fashion_mnist_dde, fashion_mnist_dde.DDEFashionConfig)])
def test_train_limit_zero_means_no_limit_on_the_batch(module, base):
    cfg, _ = config.parse_args(base(), module.PRESETS, "", ["--preset", "smoke", "--set", "train_limit=0",
                                                             "--set", "batch_size=100000"])
    assert (cfg.train_limit, cfg.batch_size) == (0, 100000)


@pytest.mark.parametrize("module, base", [(toy2d, toy2d.ToyConfig), (fashion_mnist, fashion_mnist.FashionConfig),
                                          (fashion_mnist_dde, fashion_mnist_dde.DDEFashionConfig)])
def test_every_preset_validates_and_resume_fields_exist(module, base):
    for name in module.PRESETS:
        cfg, _ = config.parse_args(base(), module.PRESETS, "", ["--preset", name])
        assert cfg.skip_nonfinite is False
    assert set(module.RESUME_IGNORED) <= set(config.to_dict(base()))


def test_experiments_refuse_to_write_or_score_nonfinite_samples(tmp_path):
    samples = np.zeros((10, 2), np.float32)
    samples[[3, 7]] = np.nan
    with pytest.raises(FloatingPointError, match="2 of 10 samples are non-finite"):
        toy2d._sample_metrics(toy2d.ToyConfig(), toy2d.toys.get_toy("rings"), samples, {}, 0.0, 1)
    images = np.full((6, 32, 32, 1), 0.5, np.float32)
    images[4, 0, 0, 0] = np.inf
    with pytest.raises(FloatingPointError, match=r"1 of 6 generator samples are non-finite \(first at index 4\)"):
        fashion_mnist_dde.refuse_nonfinite(images, "generator samples", "")
    with pytest.raises(FloatingPointError, match="1 of 6 images .* not written"):
        plotting.image_grid(str(tmp_path / "grid.png"), images)
    assert not (tmp_path / "grid.png").exists()


def test_toy2d_resumes_from_its_checkpoints_and_refuses_a_changed_training_config(tmp_path, capsys):
    out = tmp_path / "toy"
    argv = ["--preset", "smoke", "--out", str(out), "--no-progress", "--set", "toys=eight_gaussians",
            "--set", "methods=mdsm", "--set", "mdsm_steps=20", "--set", "steps_per_call=10",
            "--set", "checkpoint_every=10", "--set", "n_samples=200", "--set", "n_eval=500", "--set", "grid_n=32",
            "--set", "n_constant=5", "--set", "n_exponential=10"]
    first = toy2d.main(argv)["eight_gaussians/mdsm"]
    assert _finalized_steps(out / "checkpoints" / "eight_gaussians" / "mdsm") == [10, 20]
    # Same command (plus a bookkeeping field, which may change): nothing is retrained, the
    # step-20 checkpoint is restored and the evaluation gives the same numbers.
    again = toy2d.main([*argv, "--set", "keep_checkpoints=3"])["eight_gaussians/mdsm"]
    assert "mdsm: resuming from step 20" in capsys.readouterr().err
    assert again["kl"] == first["kl"] and again["kl_reverse"] == first["kl_reverse"]
    assert [r["step"] for r in runlog.read_log(str(out / "metrics.jsonl"), run="eight_gaussians/mdsm")] == [10, 20]
    with pytest.raises(dj.IncompatibleCheckpointError, match=r"lr: checkpoint 0\.001, now 0\.002"):
        toy2d.main([*argv, "--set", "lr=0.002"])
