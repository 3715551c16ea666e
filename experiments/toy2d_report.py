"""toy2d's tables and loss figure, read from its results (``metrics.json``) and log
(``metrics.jsonl``): the README's tables come from here."""
from __future__ import annotations

import os

from dsm_jax import plotting, runlog
from experiments.common import markdown_table as _table

KINDS = {"dde": "dde: density KL(p̂‖p_model)", "dde-generator": "dde-generator: sample KL",
         "mdsm": "mdsm: sample KL"}


def likelihood_table(results: dict, toy_names) -> str:
    """Test log-likelihood (nats) of the DDE density: AIS vs grid vs the exact p̂_σ."""
    rows = []
    for t in toy_names:
        r = results.get(f"{t}/dde")
        if r is None or "test_ll_ais" not in r:
            continue
        rows.append([t, f"{r['log_z_ais']:.4f} ± {r['log_z_ais_stderr']:.4f}", f"{r['log_z_grid']:.4f}",
                     f"{r['test_ll_ais']:.4f} ± {r['test_ll_ais_stderr']:.4f}",
                     f"{r['test_ll_grid']:.4f} ± {r['test_ll_grid_stderr']:.4f}", f"{r['test_ll_true']:.4f}"])
    return _table(["toy", "log Z (AIS)", "log Z (grid)", "test LL, AIS", "test LL, grid", "exact p̂_σ"], rows)


def markdown_table(results: dict, toy_names, methods) -> str:
    """The README's results table: KL ± stderr (and the finite-sample floor for sample KLs)."""
    rows = []
    for t in toy_names:
        cells = [t]
        for m in methods:
            r = results.get(f"{t}/{m}")
            if r is None:
                cells.append("–")
                continue
            floor = f" (floor {r['kl_floor']:.4f})" if "kl_floor" in r else ""
            cells.append(f"{r['kl']:.4f} ± {r['kl_stderr']:.4f}{floor}, {r['seconds']:.0f} s")
        rows.append(cells)
    return _table(["toy", *(KINDS.get(m, m) for m in methods)], rows)


def sampler_table(results: dict, toy_names) -> str:
    """Generator vs MDSM's sampler on each toy: both KLs, mode coverage, and the cost."""
    rows = []
    for t in toy_names:
        for m in ("dde-generator", "mdsm"):
            r = results.get(f"{t}/{m}")
            if r is None:
                continue
            train_s = r.get("train_seconds", r["seconds"])
            rows.append([t, m, f"{r['kl']:.4f} ± {r['kl_stderr']:.4f}", f"{r['kl_reverse']:.4f}", f"{r['kl_floor']:.4f}",
                         f"{r['mode_weight_min']:.2f}–{r['mode_weight_max']:.2f}", f"{r['off_support']:.4f}",
                         f"{train_s:.0f}", f"{r['sample_seconds']:.2f}"])
    return _table(["toy", "method", "KL(p̂‖q̂)", "KL(q̂‖p̂)", "floor", "mode weights (min–max, 1 = uniform)",
                   "off support", "train s", "sampling s"], rows)


def loss_figure(out, toy_name, methods) -> None:
    """``<out>/<toy>_loss.png`` from the run's log (not one call's history: a resumed run only
    ran its tail): each method's loss; for the generator E_p's and E_q's DSM losses (trained
    alike, they track each other), the surrogate, and the monitored sample KL."""
    log_path = os.path.join(out, "metrics.jsonl")
    curves, series = {}, {}
    for method in methods:
        name = f"{toy_name}/{method}"
        if method != "dde-generator":
            curves[method] = runlog.read_log(log_path, run=name)
            continue
        curves["E_p, E_q"] = curves["surrogate"] = runlog.read_log(log_path, run=name)
        series["E_p, E_q"] = {"E_p DSM loss": "p_loss", "E_q DSM loss": "q_loss"}
        series["surrogate"] = {"surrogate E_p − E_q": "gen_loss"}
        curves["G sample KL"] = runlog.read_log(log_path, run=f"{name}/monitor")
        series["G sample KL"] = {"KL(p̂‖q̂)": "sample_kl", "KL(q̂‖p̂)": "sample_kl_reverse"}
    plotting.loss_curves(os.path.join(out, f"{toy_name}_loss.png"), curves, toy_name, series)
