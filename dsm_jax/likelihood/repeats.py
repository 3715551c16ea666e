"""Repeated AIS runs: a pooled log Z, the between-run spread, the trend with the number of
temperatures, and a lower bound on log Z that holds however far AIS is from converging."""
from __future__ import annotations

import math
import time

import jax
import numpy as np

from dsm_jax import validation
from dsm_jax.core import EnergyFn
from dsm_jax.likelihood.ais import make_ais_log_z


def pool_log_z(log_zs, stderrs) -> dict:
    """Pool independent equal-sized runs: ``value = log mean_r Ẑ_r`` (each Ẑ_r unbiased for Z),
    ``stderr = max(within-run error, std over runs / sqrt(runs))``; plain floats."""
    values = np.asarray(log_zs, np.float64)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"`log_zs` must hold >= 2 runs for a spread, got shape {values.shape}.")
    validation.check_all_finite("log_zs", values)
    within = math.sqrt(float(np.sum(np.square(stderrs)))) / values.size
    spread = float(np.std(values, ddof=1))
    between = spread / math.sqrt(values.size)
    return {"value": float(np.logaddexp.reduce(values) - math.log(values.size)), "stderr": max(within, between),
            "stderr_within_chains": within, "stderr_between_repeats": between, "repeat_std": spread}


def log_z_lower_bound(log_zs, confidence: float = 0.95) -> float:
    """A lower bound on log Z that holds however far AIS is from converging: each run's Ẑ is
    unbiased, so by Markov's inequality P(log Ẑ_r ≥ log Z + t) ≤ e^(−t); with a union bound over
    the runs, log Z ≥ max_r log Ẑ_r − log(runs / (1 − confidence)) with that probability."""
    confidence = validation.check_float_in("confidence", confidence, 0.0, 1.0)
    values = np.asarray(log_zs, np.float64)
    return float(values.max() - math.log(values.size / (1.0 - confidence)))


def repeated_ais_log_z(energy_fn: EnergyFn, params, key, event_shape, *, n_repeats: int = 3,
                       check_temps_divisor: int = 4, log_z_offset: float = 0.0, confidence: float = 0.95,
                       on_run=None, **config) -> dict:
    """``n_repeats`` independent AIS runs (one compiled estimator, keys ``fold_in(key, r)``), pooled
    by :func:`pool_log_z`; with ``check_temps_divisor`` one more run at ``n_temps // divisor``
    temperatures (key ``fold_in(key, 1000)``) whose ``trend`` = pooled − its log Z shows whether
    K suffices; ``lower_bound`` by :func:`log_z_lower_bound` over all runs. ``log_z_offset`` is
    added to every run (e.g. ``log|det L|`` after :func:`whiten`). ``config`` as in
    :func:`make_ais_log_z`; ``on_run(run_dict)`` is called after each run. Plain floats."""
    n_repeats = validation.check_positive_int("n_repeats", n_repeats, 2)
    divisor = validation.check_positive_int("check_temps_divisor", check_temps_divisor, 0)
    n_temps = config.pop("n_temps", 256)
    on_run = on_run or (lambda run: None)

    def runs(k_temps, keys):
        estimate = make_ais_log_z(energy_fn, event_shape, n_temps=k_temps, **config)
        for k in keys:
            t0 = time.perf_counter()
            log_z, se, info = estimate(params, k)
            run = {"log_z": float(log_z) + log_z_offset, "stderr": float(se), "ess": float(info["ess"]),
                   "n_nonfinite": int(info["n_nonfinite"]), "log_weight_std": float(np.std(info["log_weights"])),
                   "acceptance_mean": float(np.mean(info["acceptance"])),
                   "step_size_final": float(info["step_sizes"][-1]), "n_temps": k_temps,
                   "seconds": time.perf_counter() - t0}
            on_run(run)
            yield run

    repeats = list(runs(n_temps, [jax.random.fold_in(key, r) for r in range(n_repeats)]))
    out = {"method": "ais", **pool_log_z([r["log_z"] for r in repeats], [r["stderr"] for r in repeats]),
           "n_temps": n_temps, "n_repeats": n_repeats, "repeats": repeats,
           "stderr_rule": "max(delta-method error over all chains, std over repeats / sqrt(n_repeats))"}
    all_runs = [r["log_z"] for r in repeats]
    if divisor and n_temps // divisor >= 1:
        check = next(runs(n_temps // divisor, [jax.random.fold_in(key, 1000)]))
        check["trend"] = out["value"] - check["log_z"]
        out["k_trend_check"] = check
        all_runs.append(check["log_z"])
    out["lower_bound"] = log_z_lower_bound(all_runs, confidence)
    out["lower_bound_rule"] = (f"max over the {len(all_runs)} AIS runs of log Ẑ minus log({len(all_runs)}/"
                               f"{1 - confidence:.2g}): log Z is above it with probability ≥ {confidence:.0%} "
                               f"(Markov's inequality on each unbiased Ẑ, union bound)")
    return out


def convergence_notes(report: dict, *, max_repeat_std: float = 1.0, max_k_trend: float = 1.0,
                      min_ess: float = 10.0) -> list[str]:
    """Heuristic checks of a :func:`repeated_ais_log_z` report, one note per failed check (empty:
    all passed, which does not prove convergence): repeats agree within ``max_repeat_std`` nats,
    the K-trend run moves log Z by at most ``max_k_trend``, every repeat has ESS >= ``min_ess``,
    no chain went non-finite."""
    notes = []
    if report["repeat_std"] > max_repeat_std:
        notes.append(f"AIS repeats disagree: std {report['repeat_std']:.2f} nats > {max_repeat_std}")
    check = report.get("k_trend_check")
    if check is not None and abs(check["trend"]) > max_k_trend:
        notes.append(f"not converged in K: {report['n_temps']} temperatures give {check['trend']:+.2f} nats over "
                     f"{check['n_temps']} (> {max_k_trend}); log Z still rising")
    low_ess = [f"{r['ess']:.1f}" for r in report["repeats"] if r["ess"] < min_ess]
    if low_ess:
        notes.append(f"AIS effective sample size below {min_ess} in {len(low_ess)} repeat(s) ({', '.join(low_ess)})")
    if any(r["n_nonfinite"] for r in report["repeats"]):
        notes.append("some AIS chains went non-finite")
    return notes
