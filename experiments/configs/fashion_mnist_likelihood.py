"""fashion_mnist_likelihood's config (log Z and the test log-likelihood of a trained Fashion-MNIST
energy): the run to score, the AIS/IS budgets (0 = the per-model default in :data:`AUTO`), and
the heuristic trust thresholds."""
from __future__ import annotations

import dataclasses

from dsm_jax import config as cfgs
from dsm_jax import nets


@dataclasses.dataclass(frozen=True)
class LikelihoodConfig:
    run_dir: str = "runs/fashion_mnist_dde-default"
    seed: int = 0
    data_dir: str = ""        # default: the run's own data_dir / cache_dir
    cache_dir: str = ""
    train_limit: int = 0      # training images for the Gaussian fit (0: all 60,000)
    test_limit: int = 0       # test images scored (0: all 10,000)
    eval_sigma: float = 0.0   # 0: the run's σ (DDE) or sigma_min (MDSM)
    conv_impl: str = ""       # a conv net's convolution (nets.CONV_IMPLS; same parameters); "": the run's own
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
            choices={"proposal": ("full", "diag"), "conv_impl": (*nets.CONV_IMPLS, "")},
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
