"""Test log-likelihood of a trained Fashion-MNIST energy (DDE's E_p or MDSM's ResNet): log Z by
AIS (IS as a cross-check), the σ-smoothed test set, nats/image and bits/dim, with error bars.

What is measured (also written, word for word, into the JSON's ``definition``):

* The model density is ``p(x) = exp(−E(x)) / Z`` over the 32×32 = 1,024 numbers the network
  sees (T = 1, the training temperature). For DDE's E_p, trained by DSM at σ, it models the
  σ-smoothed data ``p̂_σ``. MDSM's multi-scale energy is not −log p̂ at any single σ; near the
  data it behaves like the smoothing at ``sigma_min`` (= σ₀ here), so its ``exp(−E)``,
  normalised, is scored on the data smoothed at ``sigma_min``.
* Test points: every test image (zero-padded to 32×32, pixels in [0, 1]) plus ``n_noise``
  independent draws of N(0, σ²I₁₀₂₄) — noise on all 1,024 coordinates, padding included, as
  in training. ``log_likelihood = mean over images and draws of log p(x + ε)``: a Monte-Carlo
  estimate of ``E_{p̂_σ}[log p]``, the likelihood of the σ-smoothed test distribution. Its
  error combines the test-sample error (over images, each averaged over its draws) and the
  error of log Z.
* Bits/dim, continuous convention on [0, 1] pixels: ``bpd = −log_likelihood / (D ln 2)``.
  ``bpd_256 = bpd + 8`` is the same density in 0..255 pixel units (the usual dequantised
  convention adds log2 256) — but these are smoothed, not dequantised, data: not comparable
  with published clean-data bits/dim.
* D: ``model`` rows use D = 1,024 (what p is a density over). The 240 padding pixels are
  exactly N(0, σ²) in p̂_σ, independent of the image; ``image_pixels`` rows subtract that
  exact log density and use D = 784. That number is a lower bound (in expectation) on the
  model's marginal likelihood of the 784 image pixels, equal when the model's padding
  factor is exactly N(0, σ²).
* References: ``ceiling`` = −(D/2)·log(2πeσ²), an exact upper bound on any density's
  expected log-likelihood of σ-smoothed data (adding independent noise cannot lower the
  entropy below the noise's); ``gaussian_fit`` = a full-covariance Gaussian fitted to the
  training images with σ²I added, scored on the same noisy test points (exact).

log Z: AIS (``dsm_jax.estimate_log_z``, MALA, sigmoid schedule, step sizes from a pilot run)
started from ``proposal`` — by default that full-covariance Gaussian N(μ, C + σ²I): AIS runs
on z with x = μ + Lz (L its Cholesky factor) and log Z = log Z_z + log|det L|. AIS's log Ẑ
is biased low (Z is unbiased), so the reported likelihoods are biased high until AIS
converges: ``n_repeats`` independent runs give the spread, a run with ``n_temps / 4``
temperatures shows the trend with K, and ``trustworthy`` says whether the estimate passed
the stated checks. IS from the same Gaussian is a second (lower, in expectation) estimate.

    python experiments/fashion_mnist_likelihood.py --run_dir runs/fashion_mnist_dde-default
    python experiments/fashion_mnist_likelihood.py --run_dir runs/fashion_mnist-default
    python experiments/fashion_mnist_likelihood.py --run_dir DIR --preset smoke   # seconds

Writes ``likelihood.json`` into the run directory (or ``--out``).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dsm_jax as dj  # noqa: E402
from dsm_jax import config as cfgs  # noqa: E402
from dsm_jax import data  # noqa: E402

IMAGE_SHAPE = (32, 32, 1)
RAW_SIZE = 28  # Fashion-MNIST; data.to_model_input pads 2 pixels on every side
KINDS = ("dde", "mdsm")


@dataclasses.dataclass(frozen=True)
class LikelihoodConfig:
    run_dir: str = "runs/fashion_mnist_dde-default"
    seed: int = 0
    data_dir: str = ""        # default: the run's own data_dir / cache_dir
    cache_dir: str = ""
    train_limit: int = 0      # training images for the Gaussian fit (0: all 60,000)
    test_limit: int = 0       # test images scored (0: all 10,000)
    eval_sigma: float = 0.0   # 0: the run's σ (DDE) or sigma_min (MDSM)
    conv_impl: str = "matmul"  # conv nets inside AIS's scan: MatmulConv on CPU (jax-ml/jax#12868)
    proposal: str = "full"    # AIS/IS start: "full" N(μ, C + σ²I) or "diag" N(μ, diag(var + σ²))
    proposal_inflation: float = 1.0
    # 0 = the per-model default in AUTO (the costs differ ~50x between the two networks).
    n_temps: int = 0
    n_chains: int = 0
    chains_per_chunk: int = 0
    n_repeats: int = 0
    pilot_chains: int = 0
    n_noise: int = 0          # noise draws per test image
    is_samples: int = 0
    check_temps_divisor: int = 4  # the convergence run uses n_temps // this (0: skip it)
    is_chunk: int = 1000
    eval_chunk: int = 500
    # Heuristic trust thresholds (nats), recorded in the JSON beside the verdict.
    max_repeat_std: float = 1.0
    max_k_trend: float = 1.0
    min_ess: float = 10.0

    def validate(self) -> None:
        cfgs.check_fields(
            self,
            nonnegative_int=("seed", "train_limit", "test_limit", "n_temps", "n_chains", "chains_per_chunk",
                             "n_repeats", "pilot_chains", "n_noise", "is_samples", "check_temps_divisor"),
            positive_int=("is_chunk", "eval_chunk"),
            nonnegative=("eval_sigma", "min_ess"),
            positive=("proposal_inflation", "max_repeat_std", "max_k_trend"),
            choices={"proposal": ("full", "diag"), "conv_impl": ("matmul", "xla")},
        )
        if self.test_limit == 1:
            raise ValueError("`test_limit` must be 0 (all) or >= 2 for a standard error; --set test_limit=100.")


# Per-model defaults for the CPU (2 shared cores, < ~15 min each; measured numbers in the README).
AUTO = {
    "dde": dict(n_temps=1000, n_chains=256, chains_per_chunk=256, n_repeats=3, pilot_chains=64, n_noise=4,
                is_samples=100_000),
    "mdsm": dict(n_temps=500, n_chains=32, chains_per_chunk=32, n_repeats=3, pilot_chains=16, n_noise=1,
                 is_samples=5_000),
}

PRESETS = {
    "default": {},
    "smoke": dict(train_limit=500, test_limit=64, n_temps=40, n_chains=32, chains_per_chunk=32, n_repeats=2,
                  pilot_chains=16, n_noise=2, is_samples=2000, is_chunk=500, eval_chunk=64),
}


# ---------------------------------------------------------------------------------------
# The trained model
# ---------------------------------------------------------------------------------------
def detect_kind(run_config: dict) -> str:
    """``"mdsm"`` for experiments/fashion_mnist.py runs, ``"dde"`` for fashion_mnist_dde.py."""
    if "sigma_min" in run_config and "sigma0" in run_config:
        return "mdsm"
    if "gen_every" in run_config and "sigma" in run_config:
        return "dde"
    raise ValueError(
        "Cannot tell which experiment wrote this run's config.json (expected the fields of "
        "experiments/fashion_mnist.py or experiments/fashion_mnist_dde.py); pass --run_dir of such a run.")


def load_model(run_dir: str, conv_impl: str):
    """``(kind, run_cfg, energy_fn, params, step)`` from the run's config.json and its latest
    orbax checkpoint: DDE's E_p, or MDSM's EMA parameters (its sampling parameters)."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No config.json in --run_dir {run_dir!r}: pass the output directory of "
                                f"experiments/fashion_mnist.py or experiments/fashion_mnist_dde.py.")
    with open(path) as f:
        kind = detect_kind(json.load(f))
    if kind == "dde":
        import fashion_mnist_dde as exp

        run_cfg, state = exp.load_run(run_dir)
        run_cfg = dataclasses.replace(run_cfg, conv_impl=conv_impl)  # same parameters whatever the conv
        return kind, run_cfg, dj.energy_fn_of(exp.energy_module(run_cfg)), state.p.params, int(state.step)
    import fashion_mnist as exp

    run_cfg, energy_fn, params, step = exp.load_run(run_dir, conv_impl)
    return kind, run_cfg, energy_fn, params, step


def resolve(cfg: LikelihoodConfig, kind: str, run_cfg) -> LikelihoodConfig:
    """Fill the 0 ("auto") fields from :data:`AUTO` and the evaluation σ from the run."""
    changes = {k: v for k, v in AUTO[kind].items() if getattr(cfg, k) == 0}
    if cfg.eval_sigma == 0:
        changes["eval_sigma"] = float(run_cfg.sigma if kind == "dde" else run_cfg.sigma_min)
    cfg = dataclasses.replace(cfg, **changes)
    if cfg.n_chains % cfg.chains_per_chunk:
        raise ValueError(f"`n_chains` ({cfg.n_chains}) must be a multiple of `chains_per_chunk` "
                         f"({cfg.chains_per_chunk}); e.g. --set chains_per_chunk={cfg.n_chains}.")
    if cfg.n_repeats < 2 and cfg.n_repeats != 0:
        raise ValueError(f"`n_repeats` must be >= 2 for a spread over repeats, got {cfg.n_repeats}; --set n_repeats=2.")
    return cfg


# ---------------------------------------------------------------------------------------
# Gaussian fit: AIS/IS proposal and baseline
# ---------------------------------------------------------------------------------------
def gaussian_fit(x_train, sigma: float, kind: str = "full"):
    """``(mean, L)`` of N(μ, C + σ²I) fitted to the training images (L lower-triangular,
    LLᵀ = C + σ²I), or its diagonal (L = diag(sqrt(var + σ²))). float64 numpy."""
    xf = x_train.reshape(len(x_train), -1).astype(np.float64)
    mean = xf.mean(0)
    if kind == "diag":
        return mean, np.diag(np.sqrt(xf.var(0) + sigma**2))
    cov = np.cov(xf, rowvar=False) + sigma**2 * np.eye(xf.shape[1])
    return mean, np.linalg.cholesky(cov)


def whitened(energy_fn):
    """``E_z(params, z) = E(μ + Lz)`` with ``params = (model_params, μ, L)``: AIS/IS from N(0, I)
    in z is AIS/IS from N(μ, LLᵀ) in x, and log Z_x = log Z_z + log|det L|."""

    def energy_z(params, z):
        model_params, mean, chol = params
        x = mean + z.reshape(z.shape[0], -1) @ chol.T
        return energy_fn(model_params, x.reshape((z.shape[0], *IMAGE_SHAPE)))

    return energy_z


# ---------------------------------------------------------------------------------------
# log Z
# ---------------------------------------------------------------------------------------
def ais_run(energy_z, zparams, key, cfg, n_temps):
    t0 = time.perf_counter()
    log_z, se, info = dj.estimate_log_z(
        energy_z, zparams, key, (zparams[2].shape[0],), method="ais", n_temps=n_temps, n_chains=cfg.n_chains,
        chains_per_chunk=cfg.chains_per_chunk, pilot_chains=cfg.pilot_chains, pilot_steps=1, return_info=True)
    log_z = float(log_z)  # blocks
    return {
        "log_z_whitened": log_z, "stderr": float(se), "ess": float(info["ess"]),
        "n_nonfinite": int(info["n_nonfinite"]), "log_weight_std": float(np.std(np.asarray(info["log_weights"]))),
        "acceptance_mean": float(np.mean(np.asarray(info["acceptance"]))),
        "step_size_final": float(np.asarray(info["step_sizes"])[-1]), "n_temps": n_temps,
        "seconds": time.perf_counter() - t0,
    }


def estimate_log_z(energy_z, zparams, log_det, key, cfg, say):
    """AIS repeats (pooled), the K/divisor trend run and IS; a dict for the JSON."""
    repeats = []
    for r in range(cfg.n_repeats):
        run = ais_run(energy_z, zparams, jax.random.fold_in(key, r), cfg, cfg.n_temps)
        run["log_z"] = run.pop("log_z_whitened") + log_det
        repeats.append(run)
        say(f"AIS repeat {r + 1}/{cfg.n_repeats}: log Z = {run['log_z']:.3f} ± {run['stderr']:.3f} "
            f"(ESS {run['ess']:.1f} of {cfg.n_chains}, log-weight std {run['log_weight_std']:.2f}, "
            f"{run['seconds']:.0f} s)")
    values = np.array([r["log_z"] for r in repeats])
    # Pooled: log of the mean of the repeats' Ẑ (all equal-sized, each unbiased for Z).
    log_z = float(np.logaddexp.reduce(values) - math.log(len(values)))
    se_within = math.sqrt(sum(r["stderr"] ** 2 for r in repeats)) / len(repeats)
    spread = float(np.std(values, ddof=1))
    se_between = spread / math.sqrt(len(values))
    out = {
        "method": "ais", "value": log_z, "stderr": max(se_within, se_between),
        "stderr_within_chains": se_within, "stderr_between_repeats": se_between, "repeat_std": spread,
        "n_temps": cfg.n_temps, "n_chains": cfg.n_chains, "n_repeats": cfg.n_repeats,
        "kernel": "mala, 1 step per temperature, step sizes from a pilot run", "schedule": "sigmoid",
        "proposal": cfg.proposal, "log_det_proposal": log_det, "repeats": repeats,
        "stderr_rule": "max(delta-method error over all chains, std over repeats / sqrt(n_repeats))",
    }
    if cfg.check_temps_divisor and cfg.n_temps // cfg.check_temps_divisor >= 1:
        k = cfg.n_temps // cfg.check_temps_divisor
        check = ais_run(energy_z, zparams, jax.random.fold_in(key, 1000), cfg, k)
        check["log_z"] = check.pop("log_z_whitened") + log_det
        check["trend"] = log_z - check["log_z"]
        out["k_trend_check"] = check
        say(f"AIS with {k} temperatures: log Z = {check['log_z']:.3f} ± {check['stderr']:.3f}; "
            f"{cfg.n_temps} temperatures add {check['trend']:+.3f}")
    # Every run's Ẑ is unbiased for Z, so by Markov's inequality P(log Ẑ_r ≥ log Z + t) ≤ e^(−t):
    # a bound on log Z from below that holds however far AIS is from converging.
    runs = [r["log_z"] for r in repeats] + ([out["k_trend_check"]["log_z"]] if "k_trend_check" in out else [])
    out["lower_bound_95"] = max(runs) - math.log(len(runs) / 0.05)
    out["lower_bound_rule"] = (f"max over the {len(runs)} AIS runs of log Ẑ minus log({len(runs)}/0.05): log Z is "
                               f"above it with probability ≥ 95% (Markov's inequality on each unbiased Ẑ, union bound)")
    return out


def is_log_z(energy_z, zparams, log_det, key, cfg):
    if not cfg.is_samples:
        return None
    t0 = time.perf_counter()
    n = cfg.is_samples - cfg.is_samples % 10
    log_z, se, info = dj.estimate_log_z(energy_z, zparams, key, (zparams[2].shape[0],), method="is", n_samples=n,
                                        n_batches=10, chunk_size=min(cfg.is_chunk, n // 10), return_info=True)
    return {"method": "is", "value": float(log_z) + log_det, "stderr": float(se), "ess": float(info["ess"]),
            "n_samples": n, "seconds": time.perf_counter() - t0,
            "note": "same Gaussian proposal; log Ẑ biased low like AIS's, and its stderr is meaningless when "
                    "ESS is a handful of samples (then it only says log Z ≳ this value)"}


# ---------------------------------------------------------------------------------------
# Test set
# ---------------------------------------------------------------------------------------
def image_pixel_mask() -> np.ndarray:
    """1 on the 28×28 image pixels, 0 on the padding of the 32×32 model input."""
    pad = (IMAGE_SHAPE[0] - RAW_SIZE) // 2
    mask = np.zeros(IMAGE_SHAPE, np.float32)
    mask[pad:pad + RAW_SIZE, pad:pad + RAW_SIZE] = 1.0
    return mask


def make_scorer(energy_fn, mean, chol, sigma: float):
    """``score(params, x, key) -> (E(x̃), log N_pad(x̃), log p_gauss(x̃))`` for x̃ = x + σε (σ > 0;
    σ = 0 scores x itself)."""
    pad = jnp.asarray(1.0 - image_pixel_mask()).reshape(-1)
    mean = jnp.asarray(mean, jnp.float32)
    inv_chol = jnp.asarray(np.linalg.inv(chol), jnp.float32)
    log_det = float(np.sum(np.log(np.diag(chol))))
    d = mean.shape[0]

    @jax.jit
    def score(params, x, key):
        x = x + sigma * jax.random.normal(key, x.shape, x.dtype)
        flat = x.reshape(x.shape[0], -1)
        e = energy_fn(params, x)
        if sigma > 0:
            log_pad = jnp.sum(pad * (-0.5 * jnp.square(flat / sigma) - math.log(sigma) - 0.5 * math.log(2 * math.pi)),
                              axis=1)
        else:
            log_pad = jnp.zeros(x.shape[0])
        z = (flat - mean) @ inv_chol.T
        log_gauss = -0.5 * jnp.sum(jnp.square(z), axis=1) - log_det - 0.5 * d * math.log(2 * math.pi)
        return e, log_pad, log_gauss

    return score


def score_test_set(score, params, x_test, key, n_noise: int, chunk: int):
    """Arrays (n_noise, n) of E, the padding's exact log density and the Gaussian fit's log density."""
    rows = []
    for j in range(n_noise):
        parts = []
        for i, start in enumerate(range(0, len(x_test), chunk)):
            k = jax.random.fold_in(jax.random.fold_in(key, j), i)
            parts.append([np.asarray(a, np.float64) for a in score(params, jnp.asarray(x_test[start:start + chunk]), k)])
        rows.append([np.concatenate(col) for col in zip(*parts)])
    return [np.stack(col) for col in zip(*rows)]


def mean_and_stderr(values):
    """``values`` (n_noise, n_images): the mean, and its stderr over images (draws averaged first)."""
    per_image = values.mean(0)
    return float(per_image.mean()), float(per_image.std(ddof=1) / math.sqrt(len(per_image)))


def bits(ll: float, se: float, d: int) -> dict:
    bpd = -ll / (d * math.log(2.0))
    return {"log_likelihood": ll, "stderr": se, "dim": d, "bits_per_dim": bpd,
            "bits_per_dim_stderr": se / (d * math.log(2.0)), "bits_per_dim_256": bpd + 8.0}


def ceiling(sigma: float, d: int) -> float:
    """−(d/2)·log(2πeσ²): no density's expected log-likelihood of σ-smoothed data exceeds it."""
    return -0.5 * d * math.log(2.0 * math.pi * math.e * sigma**2)


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------
def definition(kind: str, sigma: float, n_noise: int) -> str:
    model = ("DDE's E_p, trained by DSM at this σ: exp(−E)/Z models the σ-smoothed data" if kind == "dde" else
             "MDSM's multi-scale energy, exp(−E)/Z at T = 1 (not −log p̂ at any single σ), scored on the data "
             "smoothed at sigma_min, the scale it models near the data")
    return (f"log_likelihood = mean over test images x and {n_noise} draws ε ~ N(0, σ²I_1024) (σ = {sigma}, on all "
            f"1,024 coordinates incl. the zero padding) of log p(x + ε), p = exp(−E)/Z over R^1024; {model}. "
            f"'model' rows: D = 1024. 'image_pixels' rows: minus the padding's exact log N(0, σ²), D = 784 — a lower "
            f"bound on the model's 784-pixel marginal likelihood. bits_per_dim = −log_likelihood/(D ln 2) for pixels "
            f"in [0, 1]; bits_per_dim_256 = bits_per_dim + 8 (0..255 units). log Z by AIS is biased low until it "
            f"converges, so these likelihoods are biased high: see trustworthy/trust_notes.")


def trust(report: dict, cfg) -> tuple[bool, list[str]]:
    notes = []
    lz = report["log_z"]
    if lz["repeat_std"] > cfg.max_repeat_std:
        notes.append(f"AIS repeats disagree: std {lz['repeat_std']:.2f} nats > {cfg.max_repeat_std}")
    if "k_trend_check" in lz and abs(lz["k_trend_check"]["trend"]) > cfg.max_k_trend:
        notes.append(f"not converged in K: {lz['n_temps']} temperatures give {lz['k_trend_check']['trend']:+.2f} "
                     f"nats over {lz['k_trend_check']['n_temps']} (> {cfg.max_k_trend}); log Z still rising")
    low_ess = [r["ess"] for r in lz["repeats"] if r["ess"] < cfg.min_ess]
    if low_ess:
        notes.append(f"AIS effective sample size below {cfg.min_ess} in {len(low_ess)} repeat(s) "
                     f"({', '.join(f'{e:.1f}' for e in low_ess)}): the chain stderr is unreliable")
    for name in ("model", "image_pixels"):
        row, top = report[name], report["references"]["ceiling"][name]
        if row["log_likelihood"] - 3 * row["stderr"] > top["log_likelihood"]:
            notes.append(f"{name}: log-likelihood {row['log_likelihood']:.1f} exceeds the exact ceiling "
                         f"{top['log_likelihood']:.1f}: log Z is under-estimated by at least the difference")
    if any(r["n_nonfinite"] for r in lz["repeats"]):
        notes.append("some AIS chains went non-finite")
    return not notes, notes


def main(argv=None):
    cfg, args = cfgs.parse_args(LikelihoodConfig(), PRESETS, __doc__.splitlines()[0], argv,
                                flags=("run_dir", "data_dir", "cache_dir"))
    say = (lambda *a: None) if args.no_progress else (lambda msg: print(msg, flush=True))  # noqa: E731
    t_start = time.perf_counter()
    kind, run_cfg, energy_fn, params, step = load_model(cfg.run_dir, cfg.conv_impl)
    cfg = resolve(cfg, kind, run_cfg)
    sigma = cfg.eval_sigma
    out = args.out or cfg.run_dir
    os.makedirs(out, exist_ok=True)
    say(f"{kind} energy from {cfg.run_dir} (step {step}); σ = {sigma}")

    load = dict(data_dir=cfg.data_dir or run_cfg.data_dir or None, cache_dir=cfg.cache_dir or run_cfg.cache_dir or None)
    x_train, _ = data.load_arrays("fashion_mnist", "train", limit=cfg.train_limit or None, **load)
    x_test, _ = data.load_arrays("fashion_mnist", "test", limit=cfg.test_limit or None, **load)
    if x_train.shape[1:] != IMAGE_SHAPE or np.any(x_train * (1.0 - image_pixel_mask()) != 0):
        raise ValueError(f"Expected zero-padded {IMAGE_SHAPE} images; got {x_train.shape[1:]} with non-zero padding.")
    seconds = {}

    t0 = time.perf_counter()
    mean, chol_fit = gaussian_fit(x_train, sigma, "full")
    if cfg.proposal == "full":
        chol = chol_fit
    else:
        chol = gaussian_fit(x_train, sigma, "diag")[1]
    chol = chol * cfg.proposal_inflation
    log_det = float(np.sum(np.log(np.diag(chol))))
    zparams = (params, jnp.asarray(mean, jnp.float32), jnp.asarray(chol, jnp.float32))
    energy_z = whitened(energy_fn)
    seconds["gaussian_fit"] = time.perf_counter() - t0

    key = jax.random.key(cfg.seed)
    k_ais, k_is, k_test = jax.random.split(key, 3)
    t0 = time.perf_counter()
    log_z = estimate_log_z(energy_z, zparams, log_det, k_ais, cfg, say)
    seconds["ais"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    log_z_is = is_log_z(energy_z, zparams, log_det, k_is, cfg)
    seconds["is"] = time.perf_counter() - t0
    if log_z_is:
        say(f"IS ({log_z_is['n_samples']} samples): log Z = {log_z_is['value']:.3f} (ESS {log_z_is['ess']:.1f})")

    t0 = time.perf_counter()
    chunk = min(cfg.eval_chunk, len(x_test))
    e, log_pad, log_gauss = score_test_set(make_scorer(energy_fn, mean, chol_fit, sigma), params, x_test, k_test,
                                           cfg.n_noise, chunk)
    e_clean, _, _ = score_test_set(make_scorer(energy_fn, mean, chol_fit, 0.0), params, x_test, k_test, 1, chunk)
    seconds["test_set"] = time.perf_counter() - t0
    if not np.all(np.isfinite(e)):
        raise FloatingPointError("The energy is not finite on some test points; check the checkpoint.")

    lz, lz_se = log_z["value"], log_z["stderr"]
    d_model, d_image = int(np.prod(IMAGE_SHAPE)), RAW_SIZE * RAW_SIZE

    def row(values, d, with_log_z=True):
        m, se = mean_and_stderr(values)
        if not with_log_z:
            return {**bits(m, se, d), "stderr_test": se}
        ll, upper = m - lz, m + 2.0 * se - log_z["lower_bound_95"]
        return {**bits(ll, math.sqrt(se**2 + lz_se**2), d), "stderr_test": se, "stderr_log_z": lz_se,
                # valid even when AIS has not converged: log Z's 95% lower bound and the test mean + 2 stderr
                "log_likelihood_upper_bound": upper, "bits_per_dim_lower_bound": -upper / (d * math.log(2.0))}

    report = {
        "run_dir": cfg.run_dir, "kind": kind, "checkpoint_step": step, "eval_sigma": sigma,
        "temperature": 1.0, "definition": definition(kind, sigma, cfg.n_noise),
        "n_test_images": len(x_test), "n_noise_draws": cfg.n_noise, "n_train_images_for_fit": len(x_train),
        "model": row(-e, d_model),
        "image_pixels": row(-e - log_pad, d_image),
        "log_z": log_z, "log_z_is": log_z_is,
        "references": {
            "ceiling": {"model": bits(ceiling(sigma, d_model), 0.0, d_model),
                        "image_pixels": bits(ceiling(sigma, d_image), 0.0, d_image),
                        "note": "exact upper bound on any density's expected log-likelihood of σ-smoothed data"},
            "gaussian_fit": {"model": row(log_gauss, d_model, False),
                             "image_pixels": row(log_gauss - log_pad, d_image, False),
                             "note": "N(μ, C + σ²I) fitted to the training images, on the same noisy test points"},
        },
        "log_density_at_clean_test_images": {
            **mean_and_stderr_dict(-e_clean[0] - lz, lz_se),
            "note": "log p at the clean (un-noised) test images: a density value, not a likelihood of the "
                    "σ-smoothed data; for comparison only",
        },
        "mean_energy_noisy_test": float(e.mean()),
    }
    report["trustworthy"], report["trust_notes"] = trust(report, cfg)
    report["bound_note"] = ("log_likelihood_upper_bound / bits_per_dim_lower_bound hold whether or not AIS has "
                            "converged, with probability ≥ 92%: log Z ≥ log_z.lower_bound_95 (≥ 95%, see "
                            "log_z.lower_bound_rule) and the test mean ≤ its estimate + 2 stderr (≈ 97.7%, normal "
                            "approximation). When trustworthy is false, quote these bounds, not the point estimate.")
    report["trust_rule"] = (f"trustworthy iff AIS repeats agree within {cfg.max_repeat_std} nats (std), "
                            + (f"n_temps/{cfg.check_temps_divisor} → n_temps changes log Z by ≤ {cfg.max_k_trend} nats, "
                               if cfg.check_temps_divisor else "(K-trend run skipped: check_temps_divisor=0), ")
                            + f"ESS ≥ {cfg.min_ess} per repeat, both likelihoods within 3 stderr below the exact "
                            f"ceiling, no non-finite chain (heuristic: passing them does not prove convergence)")
    seconds["total"] = time.perf_counter() - t_start
    report["seconds"] = seconds
    report["config"] = {"preset": args.preset, **cfgs.to_dict(cfg)}
    report["device"] = jax.devices()[0].device_kind
    path = os.path.join(out, "likelihood.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    say(summary(report))
    say(f"wrote {path}")
    return report


def mean_and_stderr_dict(values, lz_se):
    m, se = float(np.mean(values)), float(np.std(values, ddof=1) / math.sqrt(len(values)))
    return {"log_likelihood": m, "stderr": math.sqrt(se**2 + lz_se**2)}


def summary(r: dict) -> str:
    """One README-style row per measure."""
    lz, m, im = r["log_z"], r["model"], r["image_pixels"]
    g, top = r["references"]["gaussian_fit"], r["references"]["ceiling"]
    lines = [
        f"| {r['kind']} (σ = {r['eval_sigma']}) | log Z (AIS) | nats / image (D = 1024) | bits/dim (1024) "
        f"| bits/dim (784 image pixels) | bits/dim (784), bound ≥ | Gaussian fit bits/dim (784) | ceiling bits/dim (784) "
        f"| trustworthy |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {r['run_dir']} | {lz['value']:.2f} ± {lz['stderr']:.2f} (repeats std {lz['repeat_std']:.2f}) | "
        f"{m['log_likelihood']:.2f} ± {m['stderr']:.2f} | {m['bits_per_dim']:.4f} ± {m['bits_per_dim_stderr']:.4f} | "
        f"{im['bits_per_dim']:.4f} ± {im['bits_per_dim_stderr']:.4f} | {im['bits_per_dim_lower_bound']:.4f} | "
        f"{g['image_pixels']['bits_per_dim']:.4f} | "
        f"{top['image_pixels']['bits_per_dim']:.4f} | {r['trustworthy']} |",
    ]
    if r["log_z_is"]:
        lines.append(f"IS cross-check: log Z = {r['log_z_is']['value']:.2f} (ESS {r['log_z_is']['ess']:.1f} of "
                     f"{r['log_z_is']['n_samples']})")
    lines += [f"note: {n}" for n in r["trust_notes"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
