"""Training steps and the ``fit`` loop: step counts, JSONL logs, checkpoint resume, NaN stop."""
from __future__ import annotations

import json
import math
import os
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dsm_jax as dj
from conftest import diag_quadratic_energy, tree_equal
from dsm_jax.data import BatchIterator

M = np.array([1.0, -2.0], np.float32)


def _data_fn(key):
    return M + 0.5 * jax.random.normal(key, (128, 2))


def _dsm_setup(lr=1e-2):
    opt = optax.adam(lr)
    step = dj.make_train_step(dj.dsm_loss(diag_quadratic_energy, 0.5), opt, _data_fn)
    params = {"b": jnp.zeros(2), "log_prec": jnp.zeros(2)}
    return step, dj.init_train_state(params, opt, jax.random.PRNGKey(0))


def test_fit_reaches_n_steps_and_writes_jsonl(tmp_path):
    step, state = _dsm_setup()
    log = tmp_path / "log.jsonl"
    final, history = dj.fit(step, state, 25, steps_per_call=10, progress=False,
                            log_path=str(log), log_extra={"run": "unit"})
    assert int(final.step) == 25
    assert [h["step"] for h in history] == [10, 20, 25]

    # The same 25 steps one at a time: same parameters, and the logged loss is the
    # chunk mean of the per-step losses.
    jstep = jax.jit(step)
    s, losses = state, []
    for _ in range(25):
        s, metrics = jstep(s)
        losses.append(float(metrics["loss"]))
    chex.assert_trees_all_close(final.params, s.params, rtol=1e-5, atol=1e-6)
    assert tree_equal(final.key, s.key)

    lines = log.read_text().splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records] == [10, 20, 25]
    for r, chunk in zip(records, (losses[:10], losses[10:20], losses[20:])):
        assert {"step", "loss", "grad_norm", "steps_per_s", "run"} <= set(r)
        assert r["run"] == "unit"
        assert math.isfinite(r["grad_norm"]) and r["steps_per_s"] > 0
        np.testing.assert_allclose(r["loss"], np.mean(chunk), rtol=1e-5)
    assert records == [{k: v for k, v in h.items()} for h in history]

    # A second call appends to the log and continues from the state it is given.
    final2, history2 = dj.fit(step, final, 30, steps_per_call=10, progress=False, log_path=str(log))
    assert int(final2.step) == 30 and [h["step"] for h in history2] == [30]
    assert len(log.read_text().splitlines()) == 4


def test_checkpoint_resume_is_bit_identical(tmp_path):
    step, state = _dsm_setup()
    straight, _ = dj.fit(step, state, 100, steps_per_call=20, progress=False)

    ckpt = str(tmp_path / "ckpt")
    first, _ = dj.fit(step, state, 60, steps_per_call=20, progress=False,
                      checkpoint_dir=ckpt, checkpoint_every=20)
    assert int(first.step) == 60
    # Resume: given the *initial* state, fit restores step 60 from the directory.
    resumed, history = dj.fit(step, state, 100, steps_per_call=20, progress=False,
                              checkpoint_dir=ckpt, checkpoint_every=20)
    assert [h["step"] for h in history] == [80, 100]
    assert int(resumed.step) == 100
    assert tree_equal(resumed, straight)  # params, optimiser state and key, bit for bit
    assert not tree_equal(resumed.params, state.params)

    # Nothing left to do: the latest checkpoint (100) comes back unchanged.
    again, history = dj.fit(step, state, 100, steps_per_call=20, progress=False, checkpoint_dir=ckpt)
    assert history == [] and tree_equal(again, straight)


def _nan_at(bad_step):
    """A step whose loss is NaN exactly at (1-based) step ``bad_step``."""

    def step(state):
        new = state._replace(step=state.step + 1, params=state.params + 1.0)
        loss = jnp.where(new.step == bad_step, jnp.nan, 1.0)
        return new, {"loss": loss}

    return step


def test_nan_loss_raises_naming_the_step(tmp_path):
    state = dj.TrainState(jnp.zeros((), jnp.int32), jnp.zeros(()), jnp.zeros(()), jax.random.PRNGKey(0))
    with pytest.raises(FloatingPointError, match=r"non-finite loss in steps 7\.\.7"):
        dj.fit(_nan_at(7), state, 20, steps_per_call=1, progress=False)
    # In chunks: the chunk holding step 7 is named; the checkpoint before it is kept.
    ckpt = str(tmp_path / "ckpt")
    with pytest.raises(FloatingPointError, match=r"steps 6\.\.10"):
        dj.fit(_nan_at(7), state, 20, steps_per_call=5, progress=False,
               checkpoint_dir=ckpt, checkpoint_every=5)
    restored, history = dj.fit(_nan_at(7), state, 5, steps_per_call=5, progress=False,
                               checkpoint_dir=ckpt)
    assert history == [] and int(restored.step) == 5 and float(restored.params) == 5.0


def test_nan_from_a_diverging_loss():
    # log(w) with SGD at lr 1: w = 0.5 → 0.5 − 1/0.5 = −1.5, so the 2nd loss is NaN.
    loss_fn = lambda params, key, x: jnp.log(params["w"])  # noqa: E731
    opt = optax.sgd(1.0)
    step = dj.make_train_step(loss_fn, opt, lambda key: jnp.zeros((1, 1)))
    state = dj.init_train_state({"w": jnp.asarray(0.5)}, opt, jax.random.PRNGKey(0))
    with pytest.raises(FloatingPointError, match=r"steps 2\.\.2"):
        dj.fit(step, state, 10, steps_per_call=1, progress=False)


def test_fit_with_host_batches():
    # step(state, batch) with batches(n) stacked on a leading axis; least squares → mean.
    opt = optax.sgd(0.1)
    loss_fn = lambda params, key, x: jnp.mean(jnp.sum((x - params) ** 2, axis=1))  # noqa: E731
    step = dj.make_train_step(loss_fn, opt)
    rng = np.random.default_rng(0)
    calls = []

    def batches(n):
        calls.append(n)
        return (M + 0.1 * rng.normal(size=(n, 64, 2))).astype(np.float32)

    state = dj.init_train_state(jnp.zeros(2), opt, jax.random.PRNGKey(0))
    final, history = dj.fit(step, state, 70, steps_per_call=30, batches=batches, progress=False)
    assert calls == [30, 30, 10]
    assert int(final.step) == 70 and [h["step"] for h in history] == [30, 60, 70]
    np.testing.assert_allclose(final.params, M, atol=0.02)


def test_train_step_updates_step_and_key():
    step, state = _dsm_setup()
    new, metrics = jax.jit(step)(state)
    assert int(new.step) == 1
    assert not tree_equal(new.key, state.key)
    assert not tree_equal(new.params, state.params)
    assert set(metrics) == {"loss", "grad_norm"}
    chex.assert_shape(metrics["loss"], ())


def test_adam_cosine_schedule_and_bad_arguments():
    # Constant gradient: Adam's bias-corrected step is lr_t·g/|g|, so the updates trace
    # the cosine schedule lr_t = init·((1 − α)·½(1 + cos(πt/T)) + α), α = final/init.
    opt = dj.adam(1.0, total_steps=10, final_lr=0.1)
    params = jnp.zeros(())
    opt_state = opt.init(params)
    updates = []
    for _ in range(12):
        u, opt_state = opt.update(jnp.ones(()), opt_state, params)
        updates.append(float(u))
    t = np.minimum(np.arange(12), 10)
    expected = -(0.9 * 0.5 * (1 + np.cos(np.pi * t / 10)) + 0.1)
    np.testing.assert_allclose(updates, expected, rtol=1e-4)  # Adam eps, float32
    clipped = dj.adam(1e-3, clip_norm=1.0)
    u, _ = clipped.update({"w": jnp.full(4, 100.0)}, clipped.init({"w": jnp.zeros(4)}))
    chex.assert_tree_all_finite(u)

    with pytest.raises(ValueError, match="`learning_rate`"):
        dj.adam(0.0)
    step, state = _dsm_setup()
    with pytest.raises(ValueError, match="`n_steps`"):
        dj.fit(step, state, 0, progress=False)
    with pytest.raises(ValueError, match="`steps_per_call`"):
        dj.fit(step, state, 10, steps_per_call=0, progress=False)


def test_progress_bar_shows_every_loss_by_name(capsys):
    # A step reporting p_loss / q_loss / gen_loss (the DDE step) must not show a made-up loss=nan.
    class S(NamedTuple):
        step: jax.Array

    def step(state):
        return S(state.step + 1), {"p_loss": jnp.float32(1.5), "q_loss": jnp.float32(2.5),
                                   "gen_loss": jnp.float32(-0.25), "grad_norm": jnp.float32(9.0)}

    dj.fit(step, S(jnp.zeros((), jnp.int32)), 4, steps_per_call=2, progress=True, desc="dde")
    bar = capsys.readouterr().err
    assert "p_loss=1.5" in bar and "q_loss=2.5" in bar and "gen_loss=-0.25" in bar
    assert "nan" not in bar and "grad_norm" not in bar


# ---------------------------------------------------------------------------------------
# EMA and data-order resume (moved from tests/test_images.py)
# ---------------------------------------------------------------------------------------
def test_ema_follows_params():
    loss = lambda p, key, x: jnp.sum((p["w"] - x) ** 2)  # noqa: E731
    opt = dj.adam(0.1)
    state = dj.init_train_state({"w": jnp.zeros(2)}, opt, jax.random.key(0), ema=True)
    step = jax.jit(dj.make_train_step(loss, opt, ema_decay=0.5))
    new, _ = step(state, jnp.ones(2))
    chex.assert_trees_all_close(new.ema["w"], 0.5 * state.ema["w"] + 0.5 * new.params["w"])
    with pytest.raises(ValueError, match="ema=True"):
        dj.make_train_step(loss, opt, ema_decay=0.9)(dj.init_train_state({"w": jnp.zeros(2)}, opt,
                                                                         jax.random.key(0)), jnp.ones(2))
    with pytest.raises(ValueError, match="ema_decay"):
        dj.make_train_step(loss, opt, ema_decay=1.5)


def test_resume_restores_data_position_and_ema(tmp_path):
    # A run stopped after 6 of 12 steps and resumed ends bit-identical to one run of 12:
    # params, optimiser state, EMA, key and the data order all come back.
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    loss = lambda p, key, b: jnp.mean((p["w"] - b) ** 2) + 0.01 * jax.random.normal(key, ())  # noqa: E731
    opt = dj.adam(0.05)
    step = dj.make_train_step(loss, opt, ema_decay=0.9)

    def run(n_steps, ckpt, it):
        state = dj.init_train_state({"w": jnp.zeros(2)}, opt, jax.random.key(0), ema=True)
        return dj.fit(step, state, n_steps, steps_per_call=3, batches=it, progress=False,
                      checkpoint_dir=ckpt, checkpoint_every=3)[0]

    full = run(12, None, BatchIterator(x, 4, seed=1))
    ckpt = str(tmp_path / "ck")
    run(6, ckpt, BatchIterator(x, 4, seed=1))
    resumed = run(12, ckpt, BatchIterator(x, 4, seed=1))  # a fresh iterator, as after a crash
    chex.assert_trees_all_equal(full, resumed)


def test_fit_callback_sees_every_chunk():
    step = dj.make_train_step(lambda p, k, x: jnp.sum(p**2), dj.adam(0.1), data_fn=lambda k: 0.0)
    seen = []
    dj.fit(step, dj.init_train_state(jnp.ones(()), dj.adam(0.1), jax.random.key(0)), 7, steps_per_call=3,
           progress=False, callback=lambda s, r: seen.append((int(s.step), r["step"])))
    assert seen == [(3, 3), (6, 6), (7, 7)]


# ---------------------------------------------------------------------------------------
# Chunk boundaries are explicit: checkpoints and Every callbacks land on them
# ---------------------------------------------------------------------------------------
def test_chunks_end_on_multiples_of_steps_per_call_after_an_unaligned_resume(tmp_path):
    # A run of 25 steps (chunk ends 10, 20, 25) continued to 50: ends 30, 40, 50, not 35, 45.
    step, state = _dsm_setup()
    ckpt = tmp_path / "ckpt"
    first, history = dj.fit(step, state, 25, steps_per_call=10, progress=False, checkpoint_dir=str(ckpt),
                            checkpoint_every=10)
    assert [h["step"] for h in history] == [10, 20, 25]
    _, history = dj.fit(step, state, 50, steps_per_call=10, progress=False, checkpoint_dir=str(ckpt),
                        checkpoint_every=10, keep_checkpoints=None)
    assert [h["step"] for h in history] == [30, 40, 50]
    assert sorted(int(n) for n in os.listdir(ckpt) if n.isdigit()) == [10, 20, 25, 30, 40, 50]  # None keeps all


def test_every_callback_runs_at_multiples_of_its_steps_and_at_the_end():
    step, state = _dsm_setup()
    seen, chunks = [], []
    dj.fit(step, state, 25, steps_per_call=5, progress=False,
           callback=[dj.Every(10, lambda s, r: seen.append((int(s.step), r["step"]))),
                     dj.Every(20, lambda s, r: seen.append(("at_end", r["step"])), at_end=True),
                     dj.Every(0, lambda s, r: seen.append("never")),
                     lambda s, r: chunks.append(r["step"])])
    assert seen == [(10, 10), (20, 20), ("at_end", 20), ("at_end", 25)]
    assert chunks == [5, 10, 15, 20, 25]


def test_checkpoint_every_must_be_a_multiple_of_steps_per_call(tmp_path):
    # Before: checkpoint_every=15 with chunks of 10 silently saved at 20, 30, ... Now refused
    # up front, naming both arguments and the multiples that would work.
    step, state = _dsm_setup()
    ckpt = tmp_path / "ckpt"
    with pytest.raises(ValueError, match=r"`checkpoint_every` = 15 is not a multiple of `steps_per_call` = 10.*"
                                         r"Use 10 or 20"):
        dj.fit(step, state, 40, steps_per_call=10, progress=False, checkpoint_dir=str(ckpt), checkpoint_every=15)
    with pytest.raises(ValueError, match=r"`callback Every.steps` = 7 is not a multiple of `steps_per_call` = 5"):
        dj.fit(step, state, 40, steps_per_call=5, progress=False, callback=dj.Every(7, lambda s, r: None))
    assert not ckpt.exists()


def test_append_record_starts_a_new_line_after_a_cut_one(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 5, "loss": 1.0}\n{"step": 10, "lo')
    dj.append_record(str(log), {"step": 10, "sample_kl": 0.5, "run": "monitor"})
    assert dj.read_log(str(log)) == [{"step": 5, "loss": 1.0}, {"step": 10, "sample_kl": 0.5, "run": "monitor"}]
    with pytest.raises(TypeError, match="`record` must be JSON-able"):
        dj.append_record(str(log), {"step": np.zeros(2)})
    with pytest.raises(ValueError, match="`path` .* is a directory"):
        dj.append_record(str(tmp_path), {"step": 1})


# ---------------------------------------------------------------------------------------
# Bad input refused before compute, naming the argument
# ---------------------------------------------------------------------------------------
def _untraced_step():
    """A step that records every trace: an argument error must come before the first one."""
    calls = []

    def step(state):
        calls.append(1)
        return state._replace(step=state.step + 1), {"loss": jnp.zeros(())}

    return step, calls


class _NoStep(NamedTuple):
    params: jax.Array


@pytest.mark.parametrize("kwargs, error, message", [
    ({"keep_checkpoints": -1}, ValueError, r"`keep_checkpoints` must be an int >= 1, or None"),
    ({"keep_checkpoints": 0}, ValueError, r"`keep_checkpoints` must be an int >= 1"),  # 0 deleted every checkpoint
    ({"keep_checkpoints": "3"}, TypeError, r"`keep_checkpoints` must be an int"),
    ({"checkpoint_every": -1}, ValueError, r"`checkpoint_every` must be an int >= 0, or None \(never save\)"),
    ({"checkpoint_every": 2.5}, TypeError, r"`checkpoint_every` must be an int"),
    ({"checkpoint_dir": "FILE"}, ValueError, r"`checkpoint_dir` = .* is an existing file, not a directory"),
    ({"checkpoint_dir": 3}, TypeError, r"`checkpoint_dir` must be a non-empty path"),
    ({"log_path": "DIR"}, ValueError, r"`log_path` = .* is a directory"),
    ({"log_extra": ["run"]}, TypeError, r"`log_extra` must be a dict"),
    ({"fingerprint": {"lr": object()}}, TypeError, r"`fingerprint` must be JSON-able"),
    ({"max_consecutive_skips": -1}, ValueError, r"`max_consecutive_skips` must be an int >= 0"),
    ({"callback": 3}, TypeError, r"`callback` must be a function \(state, record\)"),
    ({"callback": dj.Every(5, None)}, TypeError, r"`callback Every.fn` must be a function \(state, record\)"),
    ({"callback": [dj.Every(-5, print)]}, ValueError, r"`callback Every.steps` must be an int >= 0"),
    ({"batches": [1, 2]}, TypeError, r"`batches` must be None, a function batches\(n\)"),
    ({"desc": 3}, TypeError, r"`desc` must be a str"),
    ({"progress": "no"}, TypeError, r"`progress` must be True or False"),
    ({"compiler_options": "fast"}, TypeError, r"`compiler_options` must be a dict or None"),
    ({"mesh": "all"}, ValueError, r"`mesh` must be 'auto', None or a jax.sharding.Mesh"),
    ({"steps_per_call": -1}, ValueError, r"`steps_per_call` must be an int >= 1"),
    ({"n_steps": 2.5}, TypeError, r"`n_steps` must be an int >= 1"),
    ({"n_steps": True}, TypeError, r"`n_steps` must be an int >= 1"),
    ({"step_fn": None}, TypeError, r"`step_fn` must be a function"),
    # the wrong arity for the loop: refused up front, not a raw TypeError from inside the scan
    ({"batches": lambda n: None}, TypeError, r"`step_fn` must be a function \(state, batch\) -> \(state, metrics\), "
     r"as fit has `batches` taking 2 positional argument\(s\), got step\(state\)"),
    ({"step_fn": lambda state, batch: (state, {})}, TypeError,
     r"`step_fn` must be a function \(state\) -> \(state, metrics\), as fit has no `batches`"),
    ({"state": _NoStep(jnp.zeros(()))}, TypeError, r"`state` must have a `step` field"),
])
def test_fit_refuses_bad_arguments_before_compute(tmp_path, kwargs, error, message):
    step, calls = _untraced_step()
    (tmp_path / "FILE").write_text("not a directory")
    fix = {"FILE": str(tmp_path / "FILE"), "DIR": str(tmp_path)}
    kwargs = {k: fix.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    args = {"step_fn": step, "state": dj.TrainState(jnp.zeros((), jnp.int32), jnp.zeros(()), jnp.zeros(()),
                                                     jax.random.PRNGKey(0)), "n_steps": 10}
    args.update({k: kwargs.pop(k) for k in list(kwargs) if k in args})
    run = {"checkpoint_dir": str(tmp_path / "ckpt"), "checkpoint_every": 5, "steps_per_call": 5, **kwargs}
    with pytest.raises(error, match=message):
        dj.fit(args["step_fn"], args["state"], args["n_steps"], progress=run.pop("progress", False), **run)
    assert calls == [] and not (tmp_path / "ckpt").exists()  # nothing traced, nothing written


@pytest.mark.parametrize("kwargs, message", [
    ({"total_steps": 0, "final_lr": 1e-5}, r"`total_steps` must be an int >= 1"),  # was optax's raw error
    ({"b1": 1.5}, r"`b1` must be a number in \[0, 1\)"),  # was accepted
    ({"b1": -0.1}, r"`b1` must be a number in \[0, 1\)"),
    ({"b2": 1.0}, r"`b2` must be a number in \[0, 1\)"),
    ({"b2": float("nan")}, r"`b2` must be a number in \[0, 1\)"),
    ({"clip_norm": -1}, r"`clip_norm` must be finite and >= 0"),  # was accepted
    ({"clip_norm": float("nan")}, r"`clip_norm` must be finite and >= 0"),
    ({"final_lr": -1e-5, "total_steps": 10}, r"`final_lr` must be finite and >= 0"),
    ({"learning_rate": float("nan")}, r"`learning_rate` must be finite and > 0"),
    ({"learning_rate": -1e-3}, r"`learning_rate` must be finite and > 0"),
])
def test_adam_refuses_bad_arguments(kwargs, message):
    kwargs = {"learning_rate": 1e-3, **kwargs}
    with pytest.raises(ValueError, match=message):
        dj.adam(**kwargs)
    with pytest.raises(TypeError, match=r"`total_steps` must be an int >= 1"):  # a wrong type, never rounded
        dj.adam(1e-3, total_steps=2.5, final_lr=1e-5)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"loss_fn": None}, TypeError, r"`loss_fn` must be a function \(params, key, x\)"),
    ({"optimizer": "adam"}, TypeError, r"`optimizer` must be an optax.GradientTransformation"),
    ({"data_fn": 3}, TypeError, r"`data_fn` must be a function \(key\) -> x or None"),
    ({"ema_decay": float("nan")}, ValueError, r"`ema_decay` must be a number in \[0, 1\)"),
    ({"ema_decay": "0.9"}, ValueError, r"`ema_decay` must be a number in \[0, 1\)"),
    ({"ema_decay": -0.5}, ValueError, r"`ema_decay` must be a number in \[0, 1\)"),
    ({"skip_nonfinite": "yes"}, TypeError, r"`skip_nonfinite` must be True or False"),
    ({"mesh": 8}, TypeError, r"`mesh` must be 'auto', None or a jax.sharding.Mesh"),
])
def test_make_train_step_refuses_bad_arguments(kwargs, error, message):
    args = {"loss_fn": dj.dsm_loss(diag_quadratic_energy, 0.5), "optimizer": optax.sgd(0.1), **kwargs}
    with pytest.raises(error, match=message):
        dj.make_train_step(**args)
    with pytest.raises(TypeError, match="`optimizer` must be an optax.GradientTransformation"):
        dj.init_train_state(jnp.zeros(2), optax.sgd, jax.random.PRNGKey(0))

