"""experiments/benchmarks: the PyTorch twins compute what dsm_jax computes, the entry point
runs end to end and writes valid JSON; and the library changes behind its rows:
dsm_jax.nets.CanonicalConv (same results as nn.Conv, canonical convolutions inside scans)
and dsm_jax.compiler_options (no YNNPACK fusions in that one computation, same results)."""
from __future__ import annotations

import json
import os
import re
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dsm_jax as dj

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CANONICAL = "b01f_01io->b01f"


def _conv_labels(compiled_text: str) -> list[str]:
    return re.findall(r" convolution\(.*?dim_labels=([^,\s]+)", compiled_text)


def _tiny_resnet(conv_impl, n_stages=1):
    return dj.ResNetEnergy(width=4, n_stages=n_stages, blocks_per_stage=1, conv_impl=conv_impl)


# ---------------------------------------------------------------------------------------
# Library: CanonicalConv.
# ---------------------------------------------------------------------------------------
def test_canonical_conv_matches_nn_conv_through_the_mdsm_loss():
    """Energy, input gradient, and the MDSM loss with its parameter gradient (a derivative
    of the input gradient: second order) equal nn.Conv's."""
    key = jax.random.key(0)
    x = jax.random.uniform(key, (3, 8, 8, 1))
    params = dj.init_params(_tiny_resnet("xla"), key, (8, 8, 1))
    results = {}
    for impl in ("xla", "canonical"):
        efn = dj.energy_fn_of(_tiny_resnet(impl))
        loss = dj.mdsm_loss(efn, 0.1, 3.0, 0.1)
        results[impl] = jax.jit(lambda p: (efn(p, x), dj.core.energy_grad(efn, p, x),  # noqa: B023
                                           jax.value_and_grad(loss)(p, key, x)))(params)  # noqa: B023
    chex.assert_trees_all_close(results["canonical"], results["xla"], rtol=2e-5, atol=1e-6)
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(results["xla"][2][1])) > 0  # not trivially equal
    with pytest.raises(ValueError, match="conv_impl"):
        _tiny_resnet("eigen").init(key, x)


def test_canonical_conv_keeps_every_convolution_canonical_inside_a_scan():
    """The cause of jax-ml/jax#12868: inside a scanned MDSM training step nn.Conv's
    gradient convolutions keep non-canonical labels (XLA:CPU's slow path); CanonicalConv's
    never do. Asymmetric even kernels check the adjoint padding too."""
    key = jax.random.key(1)
    x = jax.random.uniform(key, (2, 6, 6, 1))
    opt = dj.adam(1e-3)
    module = _tiny_resnet("canonical")
    params = dj.init_params(module, key, (6, 6, 1))
    step = dj.make_train_step(dj.mdsm_loss(dj.energy_fn_of(module), 0.1, 1.0), opt)
    scanned = lambda s: jax.lax.scan(lambda c, _: step(c, x), s, None, length=2)  # noqa: E731
    labels = _conv_labels(jax.jit(scanned).lower(dj.init_train_state(params, opt, key)).compile().as_text())
    assert labels and set(labels) == {CANONICAL}
    if jax.default_backend() == "cpu":  # the problem itself: nn.Conv's input gradient in a scan
        efn = dj.energy_fn_of(_tiny_resnet("xla"))
        chain = lambda p, x0: jax.lax.scan(  # noqa: E731
            lambda z, _: (z - dj.core.energy_grad(efn, p, z), None), x0, None, length=2)[0]
        labels = _conv_labels(jax.jit(chain).lower(params, x).compile().as_text())
        assert set(labels) != {CANONICAL}, "nn.Conv no longer shows the XLA:CPU loop-body problem"

    # An even kernel: asymmetric 'SAME' padding, and its adjoint, against nn.Conv.
    import flax.linen as nn

    x = jax.random.normal(key, (2, 5, 5, 3))
    ref, ours = nn.Conv(4, (2, 4)), dj.nets.CanonicalConv(4, (2, 4))
    p = ref.init(key, x)
    def second_order(module):
        def input_grad_sq(p_, x_):
            gx = jax.grad(lambda z: jnp.sum(jnp.sin(module.apply(p_, z))))(x_)
            return jnp.sum(gx**2)
        return jax.jit(jax.grad(input_grad_sq, argnums=(0, 1)))(p, x)

    g_ref, g_ours = second_order(ref), second_order(ours)
    chex.assert_trees_all_close(g_ours, g_ref, rtol=2e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------
# Library: dsm_jax.compiler_options (XLA:CPU's YNNPACK fusions per computation).
# ---------------------------------------------------------------------------------------
def _ynn_fusions(compiled_text: str) -> int:
    return compiled_text.count('"__ynn_fusion"')


def test_compiler_options_turn_off_library_fusions_for_one_computation_only():
    """On CPU ``compiler_options(ynn_fusions=False)`` leaves no YNNPACK fusion in the
    compiled DSM step, changes its results only by rounding, and leaves other jits (XLA's
    defaults) alone; ``fit`` passes the options to its chunk."""
    assert dj.compiler_options() is None and dj.compiler_options(True) is None
    assert dj.compiler_options(False, backend="gpu") is None
    with pytest.raises(TypeError, match="ynn_fusions"):
        dj.compiler_options("false")
    if jax.default_backend() != "cpu":
        assert dj.compiler_options(False) is None
        return
    assert dj.compiler_options(False) == {"xla_cpu_experimental_ynn_fusion_type": ""}
    key = jax.random.key(0)
    module = dj.MLPEnergy(3, 32)
    params = dj.init_params(module, key, (2,))
    opt = dj.adam(1e-3)
    x = jax.random.normal(key, (256, 2))
    step = dj.make_train_step(dj.dsm_loss(dj.energy_fn_of(module), 0.2), opt)
    state = dj.init_train_state(params, opt, key)
    off = jax.jit(step, compiler_options=dj.compiler_options(False)).lower(state, x).compile()
    default = jax.jit(step).lower(state, x).compile()
    assert _ynn_fusions(off.as_text()) == 0
    if _ynn_fusions(default.as_text()) == 0:
        pytest.skip("this jaxlib emits no YNNPACK fusions by default: nothing to turn off")
    (s_off, m_off), (s_def, m_def) = off(state, x), default(state, x)
    chex.assert_trees_all_close((s_off.params, m_off), (s_def.params, m_def), rtol=1e-5, atol=1e-7)

    batches = lambda n: jnp.broadcast_to(x, (n, *x.shape))  # noqa: E731
    fitted = [dj.fit(step, state, 4, steps_per_call=2, batches=batches, progress=False, mesh=None,
                     compiler_options=options)[0].params for options in (dj.compiler_options(False), None)]
    chex.assert_trees_all_close(fitted[0], fitted[1], rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------
# Benchmarks.
# ---------------------------------------------------------------------------------------
def test_torch_resnet_takes_the_flax_weights_and_a_wrong_weight_shows():
    """The torch ResNet built from flax parameters (NHWC → NCHW, permuted read-out) gives
    the same energies, and one perturbed weight does not: the layout conversion that the
    first-step checks of the entry-point test (losses and every parameter gradient, toy MLP
    and ResNet) rely on, and evidence those checks can fail."""
    pytest.importorskip("torch")  # the optional `bench` extra
    import torch

    from experiments.benchmarks import torch_impl as ti

    key = jax.random.key(3)
    x = jax.random.uniform(key, (3, 8, 8, 1))
    params = dj.init_params(_tiny_resnet("xla", n_stages=2), key, (8, 8, 1))
    e_jax = np.asarray(jax.jit(dj.energy_fn_of(_tiny_resnet("xla", n_stages=2)))(params, x))
    torch.set_num_threads(1)  # tiny ops; 2 OpenMP threads stall on a busy machine
    xt = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).contiguous()
    good = ti.resnet_from_flax(params, 4, 2, 1, image_size=8)
    np.testing.assert_allclose(good(xt).detach().numpy(), e_jax, rtol=1e-5, atol=1e-5)
    bad = jax.tree.map(lambda a: a, params)
    bad["params"]["l1"]["kernel"] = bad["params"]["l1"]["kernel"] * 1.01
    assert not np.allclose(ti.resnet_from_flax(bad, 4, 2, 1, image_size=8)(xt).detach().numpy(), e_jax,
                           rtol=1e-5, atol=1e-5)


def _check_result(result, expected_rows):
    assert [r["name"] for r in result["rows"]] == expected_rows
    assert result["peak_gflops_per_s"] is None or result["peak_gflops_per_s"] > 0
    for row in result["rows"]:
        assert row["impls"], row["name"]
        for name, v in row["impls"].items():
            assert len(v["times_s"]) >= 2 and v["median_s"] > 0, (row["name"], name)
            if row["kind"] != "peak":
                assert v["flops"] > 0 and v["gflops_per_s"] > 0 and v["speedup_vs_torch"] > 0, (row["name"], name)
                assert (v["fraction_of_peak"] is None) == (result["peak_gflops_per_s"] is None)
            if name.startswith("jax") and row["kind"] != "peak":
                assert v["compile_s"] > 0, (row["name"], name)
        if "check" in row:
            assert row["check"]["loss_rel_err"] < 1e-5 and row["check"]["grad_max_rel_err"] < 1e-4, row["check"]
        if row["kind"].startswith("langevin"):
            assert all(v["chain_steps_per_s"] > 0 for v in row["impls"].values())
    for key in ("cpu_count", "jax", "jaxlib", "xla_flags", "torch"):
        assert key in result["machine"]


def test_benchmark_entry_point_runs_end_to_end_tiny(tmp_path, capsys):
    pytest.importorskip("torch")
    from experiments.benchmarks import run

    result = run.main(["--tiny", "--in-process", "--out", str(tmp_path)])
    with open(tmp_path / "benchmarks.json") as f:
        on_disk = json.load(f)
    assert on_disk["mode"] == "tiny"
    # --in-process cannot set a row's environment, so the hugetlb rows are skipped there.
    _check_result(on_disk, ["peak", "train_mlp", "train_resnet_b4", "conv_ops_b4", "langevin_mlp", "langevin_resnet"])
    assert {r["name"] for r in on_disk["rows"] if "check" in r} == {"train_mlp", "train_resnet_b4"}
    assert set(on_disk["rows"][1]["impls"]) == {"jax", "jax ynn-off", "torch"}
    conv = on_disk["rows"][3]
    # Every convolution of the tiny ResNet (stem, 3x3 and 1x1 shortcut), three ops each, both frameworks.
    shapes = run.resnet_conv_shapes({k: run.MODES["tiny"]["resnet"][k] for k in ("width", "n_stages", "blocks_per_stage")},
                                    run.MODES["tiny"]["resnet"]["image"])
    assert sum(shapes.values()) == 4 and len(conv["impls"]) == 2 * 3 * len(shapes)
    assert max(e for sh in conv["sizes"]["shapes"] for e in sh["rel_err"].values()) < 1e-5
    jax_fwd = next(k for k, v in conv["impls"].items() if v["framework"] == "jax ynn-off" and v["op"] == "fwd")
    pair = zip(conv["impls"][jax_fwd.replace("jax ynn-off", "torch")]["rounds_s"], conv["impls"][jax_fwd]["rounds_s"])
    assert conv["impls"][jax_fwd]["speedup_vs_torch"] == pytest.approx(float(np.median([t / j for t, j in pair])))
    totals = conv["totals"]["all"]
    assert totals["jax_s"] == pytest.approx(sum(conv["totals"][op]["jax_s"] for op in run.CONV_OPS))
    assert totals["speedup_vs_torch"] == pytest.approx(totals["torch_s"] / totals["jax_s"])
    langevin = on_disk["rows"][4]["impls"]
    assert set(langevin) == {f"jax{v} {how}" for v in ("", " ynn-off") for how in ("lax.scan", "python loop")} | {
        "torch python loop"}
    loop_ratio = langevin["jax lax.scan"]["speedup_vs_jax_python_loop"]
    rounds = zip(langevin["jax python loop"]["rounds_s"], langevin["jax lax.scan"]["rounds_s"])
    assert loop_ratio == pytest.approx(float(np.median([lp / sc for lp, sc in rounds])))
    assert langevin["jax python loop"]["speedup_vs_jax_python_loop"] is None
    assert result["rows"][2]["sizes"]["batch"] == 4
    out = capsys.readouterr().out
    assert "| train_resnet_b4 | jax[canonical] ynn-off |" in out and "its loop)" in out and "benchmarks.json" in out
    assert "conv_ops_b4: Σ count × time" in out


def test_benchmark_rows_run_in_subprocesses_with_their_environment(tmp_path):
    """A row's environment reaches its subprocess (and only it); unknown row names are refused."""
    pytest.importorskip("torch")
    from experiments.benchmarks import run

    row = run.run_row_subprocess(dict(name="peak", kind="peak", mode="tiny", env=run.HUGETLB_ENV))
    assert row["env"] == run.HUGETLB_ENV and "GLIBC_TUNABLES" not in os.environ
    conv = "conv 3x3 4x4 16->16 batch 2"
    assert row["peak_gflops_per_s"] > 0 and set(row["impls"]) == {
        "jax matmul 128", "torch matmul 128", f"jax ynn-off {conv}", f"torch {conv}"}
    specs = run.row_specs("full")
    assert {s["name"] for s in specs if s.get("env")} == {"langevin_mlp_hugetlb", "train_resnet_b128_hugetlb"}
    with pytest.raises(SystemExit, match="unknown"):
        run.main(["--tiny", "--rows", "no_such_row", "--out", str(tmp_path)])
