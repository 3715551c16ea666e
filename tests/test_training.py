"""Training steps and the ``fit`` loop: step counts, JSONL logs, checkpoint resume, NaN stop."""
from __future__ import annotations

import json
import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dsm_jax as dj
from conftest import diag_quadratic_energy, tree_equal

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
