"""The benchmark's peers compute what dsm_jax computes: torchebm's DSM loss is dsm_loss / 2σ⁴,
and one Langevin / MALA step of torchebm and blackjax with step size h = η/2 and the same noise
is dsm_jax's step with η (passing η itself is the trap the checks catch). Also the HLO kernel
count and the per-kernel-class profile behind the scan-vs-loop figure and the MLP-step cost.
Skipped when the `bench` extra's peers are not installed."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import dsm_jax as dj

CFG = dict(depth=1, width=8)  # tiny: the checks, not the sizes, are under test


@pytest.fixture(scope="module")
def mlp():
    from experiments.benchmarks import peers

    efn, params = peers._mlp(CFG, jax.random.key(0))
    return efn, params, jax.random.normal(jax.random.key(1), (16, 2))


@pytest.fixture(scope="module")
def torchebm():
    pytest.importorskip("torch", reason="the `bench` extra (PyTorch) is not installed")
    pytest.importorskip("torchebm", reason="the `bench` extra (torchebm) is not installed")
    import torch

    torch.set_num_threads(1)  # tiny ops; 2 OpenMP threads stall on a busy machine


@pytest.fixture(scope="module")
def blackjax():
    return pytest.importorskip("blackjax", reason="the `bench` extra (blackjax) is not installed")


def test_torchebm_dsm_loss_times_2_sigma4_is_dsm_loss_and_gradients_agree(torchebm, mlp):
    from experiments.benchmarks import peers

    efn, params, x = mlp
    c = peers.check_torchebm_dsm(efn, params, CFG, x, sigma=0.2)
    assert c["expected_ratio"] == pytest.approx(2 * 0.2**4)
    assert c["ratio_rel_err"] < 1e-5 and c["grad_max_rel_err"] < 1e-5, c
    # torchebm on noise of its own: the check fails.
    other = peers.check_torchebm_dsm(efn, params, CFG, x, sigma=0.2, share_noise=False)
    assert other["ratio_rel_err"] > 1e-3 and other["grad_max_rel_err"] > 1e-3, other


def test_torchebm_langevin_step_with_h_half_eta_and_shared_noise_is_ours(torchebm, mlp):
    from experiments.benchmarks import peers

    efn, params, x = mlp
    c = peers.check_torchebm_langevin(efn, params, CFG, x, step_size=1e-2)
    assert c["peer_step_size"] == 5e-3 and c["x_rel_err"] < 1e-6 and c["move_rel_err"] < 1e-5, c
    assert c["public_sample_rel_err"] < 1e-6, c  # the integrator call is what sample() does
    trap = peers.check_torchebm_langevin(efn, params, CFG, x, step_size=1e-2, peer_step_size=1e-2)
    assert trap["move_rel_err"] > 0.1, trap


def test_blackjax_mala_step_per_chain_with_shared_keys_is_ours(blackjax, mlp):
    from experiments.benchmarks import peers

    efn, params, x = mlp
    energy = peers.mala_energy(efn)
    c = peers.check_blackjax_mala(energy, params, x, step_size=1.5)
    assert c["x_rel_err"] < 1e-6 and c["accept_mismatches"] == 0 and c["accept_prob_max_abs_diff"] < 1e-5, c
    assert 0 < c["acceptance_ours"] < 1, c  # some proposals rejected: the accept path is exercised
    trap = peers.check_blackjax_mala(energy, params, x, step_size=1.5, peer_step_size=1.5)
    assert trap["x_rel_err"] > 0.1 and trap["accept_prob_max_abs_diff"] > 0.1, trap


def test_blackjax_sgld_with_exact_gradient_is_our_ula_step(blackjax, mlp):
    from experiments.benchmarks import peers

    efn, params, x = mlp
    c = peers.check_blackjax_sgld(efn, params, x, step_size=1e-2)
    assert c["x_rel_err"] < 1e-6 and c["move_rel_err"] < 1e-5, c
    assert peers.check_blackjax_sgld(efn, params, x, step_size=1e-2, peer_step_size=1e-2)["move_rel_err"] > 0.1


def test_hlo_kernel_count_is_per_step_and_independent_of_n_steps(mlp):
    """The scan's while runs n_steps trips of one fixed body, about the jitted step's kernels."""
    from experiments.benchmarks.harness import hlo_kernels

    efn, params, x = mlp
    counts = {}
    for n in (3, 7):
        text = jax.jit(dj.langevin(efn, 1e-3, n)).lower(params, jax.random.key(0), x).compile().as_text()
        counts[n] = max(k for trips, k in hlo_kernels(text)["whiles"] if trips == n)
    kernel = dj.langevin_kernel(efn)
    one = jax.jit(lambda p, k, s: kernel(p, k, s, 1e-3, 1.0)[0]).lower(
        params, jax.random.key(0), dj.init_chain(efn, params, x)).compile()
    per_step = hlo_kernels(one.as_text())["entry"]
    assert counts[3] == counts[7] > 5 and abs(per_step - counts[3]) <= 5, (counts, per_step)
    plain = hlo_kernels(jax.jit(lambda a: jnp.sin(a) @ a.T).lower(x).compile().as_text())
    assert plain == dict(entry=plain["entry"], whiles=[]) and 1 <= plain["entry"] <= 3


def test_op_profile_attributes_the_step_time_to_its_dots_and_elementwise_kernels(mlp):
    from experiments.benchmarks.op_profile import profile_compiled

    efn, params, x = mlp
    loss = dj.dsm_loss(efn, 0.2)
    compiled = jax.jit(jax.grad(loss)).lower(params, jax.random.key(0), x).compile()
    prof = profile_compiled(compiled, (params, jax.random.key(0), x), calls=2)
    assert sum(v["share"] for v in prof["classes"].values()) == pytest.approx(1.0)
    dots = [v for k, v in prof["classes"].items() if k.startswith("dot")]
    assert dots and all(v["gflops_per_s"] > 0 for v in dots if v["gflops_per_s"] is not None)
    assert any(k.startswith("elementwise") for k in prof["classes"]) and prof["largest"] in prof["classes"]


def test_a_peer_row_runs_tiny_and_the_peers_group_selects_them(torchebm, tmp_path, capsys):
    from experiments.benchmarks import run

    (dsm,) = run.main(["--tiny", "--in-process", "--rows", "peer_dsm_torchebm", "--out", str(tmp_path)])["rows"]
    assert dsm["check"]["ratio_rel_err"] < 1e-5 and dsm["vs_peer"] == {"jax": "torchebm", "jax ynn-off": "torchebm"}
    assert dsm["impls"]["jax"]["speedup_vs_peer"] > 0 and dsm["impls"]["jax"]["fraction_of_peak"] is None
    assert "× torchebm |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"unknown \['nope'\]"):
        run.main(["--tiny", "--rows", "peers,nope", "--out", str(tmp_path)])
