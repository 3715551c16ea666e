"""fashion_mnist_dde's results table and loss figure (from its ``metrics.json`` / ``metrics.jsonl``)."""
from __future__ import annotations

import os

from dsm_jax import plotting
from experiments.common import markdown_table, read_json


def plot_losses(path, history, monitor=()):
    """E_p's and E_q's DSM losses in one panel (trained alike, they should track each other), the
    KL surrogate E_p − E_q in the next, and the monitored FD and classes under 2 % of G's samples."""
    curves = {"energies": history, "generator": history, "generator FD": monitor, "generator classes": monitor}
    series = {"energies": {"E_p DSM loss": "p_loss", "E_q DSM loss": "q_loss"},
              "generator": {"surrogate E_p − E_q": "gen_loss"}, "generator FD": {"FD (n = monitor_n)": "fd"},
              "generator classes": {"classes < 2 %": "classes_under"}}
    plotting.loss_curves(path, curves, "fashion_mnist_dde", series)


def read_mdsm(path: str, ours: dict):
    """The MDSM run's metrics when they are comparable: same classifier (same test accuracy)
    and the same FD sample size; else None."""
    if not path or not os.path.exists(path):
        return None
    m = read_json(path)
    if m.get("n") != ours["n"] or m.get("classifier_accuracy") != ours["classifier_accuracy"]:
        return None
    return m


def results_table(m: dict, mdsm: dict | None = None) -> str:
    """Markdown rows: FD / IS / class coverage / wall-clock per 1,000 samples of the generator,
    the DDE density sampled by Langevin, MDSM (when given), the floor and the Gaussian baseline,
    and the per-pixel std across samples (a mode-collapse check against the test set's)."""
    def std(r):
        return f"{r['pixel_std_across_samples']:.3f}" if r and "pixel_std_across_samples" in r else "–"

    def classes(r):
        if not r or "classes_under" not in r:
            return "– | –"
        return f"{r['class_min']:.3f} ({r['classes_under']} < {r['min_fraction']:.0%}) | {r['class_kl']:.3f}"

    rows = [["DDE generator (one forward pass)", f"{m['fd']:.2f}", f"{m['inception_score']:.2f}", classes(m),
             f"{m['sample_seconds_per_1k']:.3f}", "1 forward", std(m)]]
    d = m.get("dde_density")
    if d:
        rows.append([f"DDE density E_p: {d['sampler_steps']} Langevin steps + Tweedie", f"{d['fd']:.2f}",
                     f"{d['inception_score']:.2f}", classes(d), f"{d['sample_seconds_per_1k']:.2f}",
                     f"{d['sampler_steps'] + 1} gradients", std(d)])
    if mdsm:
        per_1k = mdsm["sample_seconds"] * 1000.0 / mdsm["n_samples"]
        rows.append([f"MDSM: {mdsm['sampler_steps']} annealed Langevin steps + denoise", f"{mdsm['fd']:.2f}",
                     f"{mdsm['inception_score']:.2f}", classes(mdsm), f"{per_1k:.2f}",
                     f"{mdsm['sampler_steps'] + 1} gradients", "–"])
    test_std = f"{m['pixel_std_test_set']:.3f} (test set)" if "pixel_std_test_set" in m else "–"
    rows += [["floor: training subset vs test", f"{m['fd_floor']:.2f}", f"{m['inception_score_test']:.2f} (test set)",
              "– | –", "–", "–", test_std],
             [f"full-covariance Gaussian fit ({m['baseline_draws']} draws)",
              f"{m['fd_gaussian_baseline']:.2f} ± {m['fd_gaussian_baseline_std']:.2f}", "–", "– | –", "–", "–", "–"]]
    return markdown_table([f"Fashion-MNIST, FD n = {m['n']}", "FD", "IS analogue", "smallest class share", "class KL",
                           "seconds / 1,000 samples", "network passes / sample", "pixel std across samples"], rows)
