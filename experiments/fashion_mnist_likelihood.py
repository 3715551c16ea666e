"""Test log-likelihood of a trained Fashion-MNIST energy (DDE's E_p or MDSM's energy): log Z by
AIS (IS as a cross-check), the σ-smoothed test set, nats/image and bits/dim, with error bars.

``p(x) = exp(−E(x)) / Z`` over the 1,024 numbers the network sees (T = 1) is scored on the σ-smoothed
test set (σ: the DDE run's σ or MDSM's ``sigma_min``); ``image_pixels`` rows remove the padding's exact
N(0, σ²), D = 784. log Z: repeated AIS (``dsm_jax.likelihood.repeated_ais_log_z``) in whitened
coordinates of a Gaussian fit, with a K-trend run and a bound that holds without convergence. The JSON's
``definition`` says the rest; ``trustworthy`` says whether the stated checks passed.

    python -m experiments.fashion_mnist_likelihood --run_dir runs/fashion_mnist_dde-default
    python -m experiments.fashion_mnist_likelihood --run_dir runs/fashion_mnist-default
    python -m experiments.fashion_mnist_likelihood --run_dir DIR --preset smoke   # seconds

Writes ``likelihood.json`` into the run directory (or ``--out``).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from dsm_jax import config as cfgs
from dsm_jax import data
from dsm_jax import likelihood as lk
from experiments import common
from experiments.configs.fashion_mnist_likelihood import AUTO, PRESETS, LikelihoodConfig

__all__ = ["AUTO", "PRESETS", "LikelihoodConfig", "main", "load_model", "resolve", "image_pixel_mask", "summary"]

IMAGE_SHAPE = (32, 32, 1)
RAW_SIZE = 28  # Fashion-MNIST; data.to_model_input pads 2 pixels on every side
D_MODEL, D_IMAGE = 32 * 32, RAW_SIZE * RAW_SIZE


DEFINITION = ("log_likelihood = mean over test images x and {n_noise} draws ε ~ N(0, σ²I_1024) (σ = {sigma}, all "
              "1,024 coordinates incl. the zero padding) of log p(x + ε), p = exp(−E)/Z ({kind}): the likelihood of "
              "the σ-smoothed test set. 'model' rows D = 1024; 'image_pixels' rows minus the padding's exact "
              "log N(0, σ²), D = 784 (a lower bound on the 784-pixel marginal). bits_per_dim = "
              "−log_likelihood/(D ln 2) on [0, 1] pixels, bits_per_dim_256 = + 8 (smoothed, not dequantised, "
              "data). log Z by AIS is biased low until it converges, so these are biased high: see trustworthy.")


def load_model(run_dir: str, conv_impl: str = ""):
    """``(kind, run_cfg, energy_fn, params, step)``: DDE's E_p, or MDSM's sampling parameters (its
    EMA when it kept one); a conv net built with ``conv_impl`` ("": the run's own conv)."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No config.json in --run_dir {run_dir!r}: pass the output directory of "
                                f"experiments.fashion_mnist or experiments.fashion_mnist_dde.")
    with open(path) as f:
        kind = common.experiment_of(json.load(f))
    if kind == "dde":
        import dsm_jax as dj
        from experiments import fashion_mnist_dde as exp
        run_cfg, state = exp.load_run(run_dir)
        if conv_impl:
            run_cfg = cfgs.replace(run_cfg, {"model.conv_impl": conv_impl})  # same parameters whatever the conv
        return kind, run_cfg, dj.energy_fn_of(exp.energy_module(run_cfg)), state.p.params, int(state.step)
    from experiments import fashion_mnist as exp
    return (kind, *exp.load_run(run_dir, conv_impl or None))


def resolve(cfg: LikelihoodConfig, kind: str, run_cfg) -> LikelihoodConfig:
    """Fill the 0 ("auto") fields from :data:`AUTO` and the evaluation σ from the run."""
    changes = {k: v for k, v in AUTO[kind].items() if getattr(cfg, k) == 0}
    if cfg.eval_sigma == 0:
        changes["eval_sigma"] = float(run_cfg.train.sigma if kind == "dde" else run_cfg.train.sigma_min)
    return dataclasses.replace(cfg, **changes)  # AIS's own factory checks the counts before any compute


def image_pixel_mask() -> np.ndarray:
    """1 on the 28×28 image pixels, 0 on the padding of the 32×32 model input."""
    pad = (IMAGE_SHAPE[0] - RAW_SIZE) // 2
    return np.pad(np.ones((RAW_SIZE, RAW_SIZE, 1), np.float32), ((pad, pad), (pad, pad), (0, 0)))


def ais_log_z(energy_z, zparams, log_det, key, cfg, say) -> dict:
    def report(run):
        say(f"AIS ({run['n_temps']} temperatures): log Z = {run['log_z']:.3f} ± {run['stderr']:.3f} (ESS "
            f"{run['ess']:.1f} of {cfg.n_chains}, log-weight std {run['log_weight_std']:.2f}, {run['seconds']:.0f} s)")
    out = lk.repeated_ais_log_z(energy_z, zparams, key, (D_MODEL,), n_repeats=cfg.n_repeats,
                                check_temps_divisor=cfg.check_temps_divisor, log_z_offset=log_det, on_run=report,
                                n_temps=cfg.n_temps, n_chains=cfg.n_chains, chains_per_chunk=cfg.chains_per_chunk,
                                pilot_chains=cfg.pilot_chains, pilot_steps=1)
    out["lower_bound_95"] = out.pop("lower_bound")
    return {**out, "n_chains": cfg.n_chains, "proposal": cfg.proposal, "log_det_proposal": log_det,
            "kernel": "mala, 1 step per temperature, step sizes from a pilot run", "schedule": "sigmoid"}


def is_log_z(energy_z, zparams, log_det, key, cfg):
    """IS from the same proposal: biased low like AIS's, its stderr meaningless when ESS is a handful."""
    n = cfg.is_samples - cfg.is_samples % 10
    log_z, se, info = lk.is_log_z_with_info(energy_z, zparams, key, (D_MODEL,), n_samples=n, n_batches=10,
                                            chunk_size=min(cfg.is_chunk, n // 10))
    return {"method": "is", "value": float(log_z) + log_det, "stderr": float(se), "ess": float(info["ess"]), "n_samples": n}


def test_set_scores(energy_fn, params, fit, x_test, key, sigma, n_noise, chunk):
    """(n_noise, n) arrays of E(x̃), the padding's exact log N(0, σ²) and the fit's log density."""
    pad = np.flatnonzero(image_pixel_mask().reshape(-1) == 0)

    def score(p, x):
        flat = x.reshape(x.shape[0], -1)
        log_pad = lk.gaussian_proposal_log_density(flat[:, pad], 0.0, sigma) if sigma > 0 else jnp.zeros(len(x))
        return energy_fn(p, x), log_pad, fit.log_density(x)

    return lk.noisy_test_scores(score, params, x_test, key, sigma, n_noise, chunk)


def trust(report: dict, cfg) -> tuple[bool, list[str]]:
    notes = lk.convergence_notes(report["log_z"], max_repeat_std=cfg.max_repeat_std, max_k_trend=cfg.max_k_trend,
                                 min_ess=cfg.min_ess)
    for name in ("model", "image_pixels"):
        row, top = report[name], report["references"]["ceiling"][name]
        if row["log_likelihood"] - 3 * row["stderr"] > top["log_likelihood"]:
            notes.append(f"{name}: log-likelihood {row['log_likelihood']:.1f} exceeds the exact ceiling "
                         f"{top['log_likelihood']:.1f}: log Z is under-estimated")
    return not notes, notes


def main(argv=None):
    cfg, args = cfgs.parse_args(LikelihoodConfig(), PRESETS, __doc__.splitlines()[0], argv,
                                flags=("run_dir", "data_dir", "cache_dir"))
    say = (lambda *a: None) if args.no_progress else (lambda msg: print(msg, flush=True))  # noqa: E731
    run = common.run_entry("experiments.fashion_mnist_likelihood", argv)  # into likelihood.json: out is the run's
    t_start, seconds = time.perf_counter(), {}
    kind, run_cfg, energy_fn, params, step = load_model(cfg.run_dir, cfg.conv_impl)
    cfg = resolve(cfg, kind, run_cfg)
    if run_cfg.data.dataset != "fashion_mnist":  # its pixel mask and bits/dim are Fashion-MNIST's
        raise ValueError(f"{cfg.run_dir} was trained on data.dataset={run_cfg.data.dataset!r}; this script scores "
                         "Fashion-MNIST runs only.")
    sigma, out = cfg.eval_sigma, args.out or cfg.run_dir
    os.makedirs(out, exist_ok=True)
    say(f"{kind} energy from {cfg.run_dir} (step {step}); σ = {sigma}")
    load = dict(data_dir=cfg.data_dir or run_cfg.data.data_dir or None, cache_dir=cfg.cache_dir or run_cfg.data.cache_dir or None)
    x_train, _ = data.load_arrays("fashion_mnist", "train", limit=cfg.train_limit or None, **load)
    x_test, _ = data.load_arrays("fashion_mnist", "test", limit=cfg.test_limit or None, **load)
    if x_train.shape[1:] != IMAGE_SHAPE or np.any(x_train * (1.0 - image_pixel_mask()) != 0):
        raise ValueError(f"Expected zero-padded {IMAGE_SHAPE} images; got {x_train.shape[1:]} with non-zero padding.")

    t0 = time.perf_counter()
    fit = lk.fit_gaussian(x_train, sigma, "full")
    proposal = lk.fit_gaussian(x_train, sigma, cfg.proposal, cfg.proposal_inflation)
    energy_z, zparams = lk.whiten(energy_fn, IMAGE_SHAPE), lk.whitened_params(params, proposal)
    seconds["gaussian_fit"], t0 = time.perf_counter() - t0, time.perf_counter()
    k_ais, k_is, k_test = jax.random.split(jax.random.key(cfg.seed), 3)
    log_z = ais_log_z(energy_z, zparams, proposal.log_det, k_ais, cfg, say)
    seconds["ais"], t0 = time.perf_counter() - t0, time.perf_counter()
    log_z_is = is_log_z(energy_z, zparams, proposal.log_det, k_is, cfg) if cfg.is_samples else None
    seconds["is"], t0 = time.perf_counter() - t0, time.perf_counter()
    if log_z_is:
        say(f"IS ({log_z_is['n_samples']} samples): log Z = {log_z_is['value']:.3f} (ESS {log_z_is['ess']:.1f})")
    chunk = min(cfg.eval_chunk, len(x_test))
    e, log_pad, log_gauss = test_set_scores(energy_fn, params, fit, x_test, k_test, sigma, cfg.n_noise, chunk)
    seconds["test_set"] = time.perf_counter() - t0
    if not np.all(np.isfinite(e)):
        raise FloatingPointError("The energy is not finite on some test points; check the checkpoint.")
    lz, lz_se = log_z["value"], log_z["stderr"]

    def row(values, d, with_log_z=True):
        return lk.likelihood_row(values, d, *((lz, lz_se, log_z["lower_bound_95"]) if with_log_z else ()))

    ceiling = {name: lk.bits_per_dim(lk.smoothed_entropy_ceiling(sigma, d), 0.0, d)
               for name, d in (("model", D_MODEL), ("image_pixels", D_IMAGE))}
    clean = -test_set_scores(energy_fn, params, fit, x_test, k_test, 0.0, 1, chunk)[0][0] - lz
    report = {
        "run_dir": cfg.run_dir, "kind": kind, "checkpoint_step": step, "eval_sigma": sigma, "temperature": 1.0,
        "definition": DEFINITION.format(n_noise=cfg.n_noise, sigma=sigma, kind=kind),
        "n_test_images": len(x_test), "n_noise_draws": cfg.n_noise, "n_train_images_for_fit": len(x_train),
        "model": row(-e, D_MODEL), "image_pixels": row(-e - log_pad, D_IMAGE), "log_z": log_z, "log_z_is": log_z_is,
        "references": {"ceiling": {**ceiling, "note": "exact upper bound for σ-smoothed data"},
                       "gaussian_fit": {"model": row(log_gauss, D_MODEL, False),
                                        "image_pixels": row(log_gauss - log_pad, D_IMAGE, False),
                                        "note": "N(μ, C + σ²I) fitted to the training images"}},
        "log_density_at_clean_test_images": {  # a density value, not a likelihood: for comparison only
            "log_likelihood": float(clean.mean()), "stderr": math.hypot(float(clean.std(ddof=1)) / len(clean)**.5, lz_se)},
        "mean_energy_noisy_test": float(e.mean()),
    }
    report["trustworthy"], report["trust_notes"] = trust(report, cfg)
    seconds["total"] = time.perf_counter() - t_start
    report.update(seconds=seconds, config={"preset": args.preset, **cfgs.to_dict(cfg)},
                  device=jax.devices()[0].device_kind, run=run)
    with open(os.path.join(out, "likelihood.json"), "w") as f:
        json.dump(report, f, indent=2)
    say(f"{summary(report)}\nwrote {f.name}")
    return report


def summary(r: dict) -> str:
    lz, m, im = r["log_z"], r["model"], r["image_pixels"]
    return "\n".join([
        f"{r['run_dir']} ({r['kind']}, σ = {r['eval_sigma']}): log Z {lz['value']:.2f} ± {lz['stderr']:.2f}; "
        f"{m['log_likelihood']:.2f} ± {m['stderr']:.2f} nats/image; bits/dim {m['bits_per_dim']:.4f} (1024), "
        f"{im['bits_per_dim']:.4f} ± {im['bits_per_dim_stderr']:.4f} (784; bound ≥ {im['bits_per_dim_lower_bound']:.4f});"
        f" trustworthy: {r['trustworthy']}",
        *([f"IS cross-check: log Z = {r['log_z_is']['value']:.2f} (ESS {r['log_z_is']['ess']:.1f})"] * bool(r["log_z_is"])),
        *[f"note: {n}" for n in r["trust_notes"]]])


if __name__ == "__main__":
    main()
