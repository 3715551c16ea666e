"""experiments/benchmarks: the PyTorch twins compute what dsm_jax computes, the entry point
runs end to end and writes valid JSON. (The library changes behind its rows, CanonicalConv
and compiler_options, are tested in test_xla_conv.py.)"""
from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

import dsm_jax as dj


def _tiny_resnet(conv_impl, n_stages=1):
    return dj.ResNetEnergy(width=4, n_stages=n_stages, blocks_per_stage=1, conv_impl=conv_impl)


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

    # The peer rows and the op profile have tests of their own (test_peer_checks.py).
    rows = "peak,train_mlp,train_resnet_b4,conv_ops_b4,langevin_mlp,langevin_resnet"
    result = run.main(["--tiny", "--in-process", "--rows", rows, "--out", str(tmp_path)])
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
    # The scan-vs-loop figure: kernels per step from the HLO, measured dispatch, per-step overhead.
    assert langevin["jax lax.scan"]["kernels_per_step"] > 10 and langevin["jax python loop"]["dispatch_s"] > 0
    assert langevin["jax lax.scan"]["loop_overhead_per_step_s"] == pytest.approx(
        (langevin["jax python loop"]["median_s"] - langevin["jax lax.scan"]["median_s"]) / 2)
    assert result["rows"][2]["sizes"]["batch"] == 4
    out = capsys.readouterr().out
    assert "| train_resnet_b4 | jax[canonical] ynn-off |" in out and "its loop)" in out and "benchmarks.json" in out
    assert "conv_ops_b4: Σ count × time" in out
    assert "langevin_mlp jax: " in out and "kernels per step in the scan" in out and "scan ≥ loop: " in out


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
