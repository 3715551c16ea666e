"""MDSM on Fashion-MNIST: train the ResNet energy, sample with annealed Langevin, inpaint,
and score the samples with a classifier-feature Fréchet distance.

Writes to ``--out``: ``metrics.json`` (fd, fd_floor, fd_gaussian_baseline, fd_train,
classifier_accuracy, inception_score, inpainting_psnr per mask with its baselines,
train_steps, train_seconds, sample_seconds, ...), ``metrics.jsonl`` (training curve),
``samples.png`` + ``samples.npz``, ``inpainting.png``, ``train_grid_<step>.png`` grids during
training, ``loss.png``, and orbax checkpoints under ``checkpoints/`` (a rerun resumes).

    python experiments/fashion_mnist.py                  # default CPU preset (< 60 min, 2 cores)
    python experiments/fashion_mnist.py --preset smoke   # < 3 min: a few steps of everything
    python experiments/fashion_mnist.py --preset paper   # MDSM's settings (GPU/TPU)
    python experiments/fashion_mnist.py --data_dir DIR   # IDX files from elsewhere
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dsm_jax as dj  # noqa: E402
from dsm_jax import config as cfgs  # noqa: E402
from dsm_jax import data, image_metrics, inpainting, nets, parallel, plotting, training  # noqa: E402


@dataclasses.dataclass(frozen=True)
class FashionConfig:
    seed: int = 0
    data_dir: str = ""        # IDX files (default: Debian's /usr/share/datasets/fashion-mnist)
    cache_dir: str = ""       # prepared TFDS data (default: $DSM_JAX_TFDS_DIR or ~/.cache/dsm_jax)
    classifier_dir: str = "runs/classifier"  # the FD classifier's checkpoints, shared by runs
    train_limit: int = 0      # use only the first N training images (0: all 60,000)
    # Energy network (MDSM's Fashion-MNIST net is width 64, 2 blocks per stage: preset "paper").
    width: int = 16
    n_stages: int = 3
    blocks_per_stage: int = 1
    # Convolutions (same parameters either way): XLA's own conv trains fastest outside loops;
    # inside the scanned Langevin chain XLA:CPU's conv gradients fall off a cliff
    # (jax-ml/jax#12868), so the CPU presets sample with dsm_jax.nets.MatmulConv. "canonical"
    # (CanonicalConv) avoids the cliff with XLA's own kernels: with ynn_fusions=false its
    # chain steps are 1.8x faster than MatmulConv's (README, Performance); the default preset
    # keeps the settings its README numbers were measured with.
    train_conv: str = "xla"
    sample_conv: str = "matmul"
    # XLA:CPU's YNNPACK fusions (dsm_jax.compiler_options): off trains this ResNet 14% faster
    # and samples with CanonicalConv 21% faster; only float rounding changes.
    ynn_fusions: bool = True
    # Training (MDSM: Adam β = (0.9, 0.95), cosine decay to 1e-6, σ ∈ [0.1, 3] log-spaced).
    steps: int = 4000
    batch_size: int = 64
    lr: float = 1e-3
    final_lr: float = 1e-6
    b1: float = 0.9
    b2: float = 0.95
    sigma_min: float = 0.1
    sigma_max: float = 3.0
    sigma0: float = 0.1
    ema_decay: float = 0.999  # 0 disables the parameter EMA
    steps_per_call: int = 1   # > 1 scans steps in one dispatch (GPU/TPU); 1 avoids the CPU conv cliff
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    grid_every: int = 2000    # sample grid PNG during training (0: never), current (not EMA) params
    grid_samples: int = 16
    # Annealed Langevin (MDSM: 500 at T=100, 2000 exponential to T=1, 200 linear to 0; η = 0.02²).
    n_constant: int = 150
    n_exponential: int = 450
    n_linear: int = 50
    t_high: float = 100.0
    step_size: float = 4e-4
    init_mean: float = 0.5
    init_std: float = 1.0
    n_samples: int = 1000
    sample_chunk: int = 250
    # Inpainting
    n_inpaint: int = 50
    inpaint_masks: tuple[str, ...] = inpainting.MASK_KINDS
    # Metric
    classifier_steps: int = 3000
    fd_n: int = 1000
    # Skip (and count) training steps with a NaN/inf loss or update instead of stopping.
    skip_nonfinite: bool = False

    def validate(self) -> None:
        cfgs.check_fields(
            self,
            positive_int=("width", "n_stages", "blocks_per_stage", "steps", "batch_size", "steps_per_call",
                          "keep_checkpoints", "grid_samples", "n_samples", "sample_chunk", "n_inpaint",
                          "classifier_steps", "fd_n"),
            nonnegative_int=("seed", "train_limit", "checkpoint_every", "grid_every", "n_constant", "n_exponential",
                             "n_linear"),
            positive=("lr", "final_lr", "sigma_min", "sigma_max", "sigma0", "t_high", "step_size", "init_std"),
            open_unit=("b1", "b2", "ema_decay"),
            ordered=(("sigma_min", "sigma_max"),),
            within_limit=(("batch_size", "train_limit"),),
            choices={"train_conv": nets.CONV_IMPLS, "sample_conv": nets.CONV_IMPLS},
            subsets={"inpaint_masks": inpainting.MASK_KINDS},
        )
        if self.n_constant + self.n_exponential + self.n_linear < 1:
            raise ValueError("The annealed Langevin chain has no steps: set one of n_constant, n_exponential, "
                             "n_linear > 0 (e.g. --set n_exponential=450).")


# Fields that do not change the training run (paths, sampling, evaluation, bookkeeping): a
# checkpoint written under other values of these still resumes; other changes are refused.
RESUME_IGNORED = ("data_dir", "cache_dir", "classifier_dir", "sample_conv", "steps_per_call", "ynn_fusions",
                  "checkpoint_every",
                  "keep_checkpoints", "grid_every", "grid_samples", "n_constant", "n_exponential", "n_linear",
                  "t_high", "step_size", "init_mean", "init_std", "n_samples", "sample_chunk", "n_inpaint",
                  "inpaint_masks", "classifier_steps", "fd_n", "skip_nonfinite")


PRESETS = {
    "default": {},
    "smoke": dict(
        train_limit=2000, width=8, steps=30, batch_size=16, checkpoint_every=10, grid_every=20,
        n_constant=5, n_exponential=10, n_linear=5, n_samples=64, sample_chunk=32,
        n_inpaint=8, classifier_steps=60, fd_n=64, sample_conv="canonical", ynn_fusions=False,
    ),
    "paper": dict(
        width=64, blocks_per_stage=2, steps=100_000, batch_size=128, lr=1e-4, steps_per_call=500,
        train_conv="xla", sample_conv="xla", ynn_fusions=False,
        checkpoint_every=5000, grid_every=5000, grid_samples=36, n_constant=500, n_exponential=2000,
        n_linear=200, n_samples=10_000, sample_chunk=1000, n_inpaint=1000, fd_n=10_000,
    ),
}


def energy_module(cfg, conv_impl: str) -> dj.ResNetEnergy:
    return dj.ResNetEnergy(width=cfg.width, n_stages=cfg.n_stages, blocks_per_stage=cfg.blocks_per_stage,
                           conv_impl=conv_impl)


def make_sampler(cfg, energy_fn, mesh=None):
    """The jitted annealed chain (returns ``(x, StepInfo)``) and its number of steps; with
    ``mesh="auto"`` its chains are split over all devices (:func:`parallel.shard_chains`)."""
    temps = dj.mdsm_temperature_schedule(cfg.n_constant, cfg.n_exponential, cfg.n_linear, cfg.t_high, 1.0)
    chain = dj.annealed_langevin(energy_fn, cfg.step_size, temps, cfg.sigma0, return_info=True)
    options = dj.compiler_options(cfg.ynn_fusions)
    return parallel.shard_chains(chain, mesh, compiler_options=options), int(temps.shape[0])


def optimizer(cfg):
    """MDSM's Adam with cosine decay to ``final_lr``."""
    return dj.adam(cfg.lr, cfg.b1, cfg.b2, total_steps=cfg.steps, final_lr=cfg.final_lr)


def init_fn(cfg):
    return lambda key, n: cfg.init_mean + cfg.init_std * jax.random.normal(key, (n, 32, 32, 1))


def train(cfg, x_train, out, progress):
    """MDSM training with EMA, checkpoints every ``checkpoint_every`` steps (resumes), JSONL
    logs and sample grids; returns the sampling params and the training history."""
    module = energy_module(cfg, cfg.train_conv)
    energy_fn = dj.energy_fn_of(module)
    k_init, k_train = jax.random.split(jax.random.key(cfg.seed))
    opt = optimizer(cfg)
    use_ema = cfg.ema_decay > 0
    state = dj.init_train_state(dj.init_params(module, k_init, (32, 32, 1)), opt, k_train, ema=use_ema)
    loss_fn = dj.mdsm_loss(energy_fn, cfg.sigma_min, cfg.sigma_max, cfg.sigma0)
    step = dj.make_train_step(loss_fn, opt, ema_decay=cfg.ema_decay if use_ema else None,
                              skip_nonfinite=cfg.skip_nonfinite)
    batches = data.BatchIterator(x_train, cfg.batch_size, seed=cfg.seed, prefetch=2)
    sample_energy_fn = dj.energy_fn_of(energy_module(cfg, cfg.sample_conv))
    grid_sampler, _ = make_sampler(cfg, sample_energy_fn)

    def save_grid(state, record):
        # The current params, not the EMA: early in training the EMA still carries the init.
        if cfg.grid_every and record["step"] % cfg.grid_every < cfg.steps_per_call:
            x = grid_sampler(state.params, jax.random.key(1), init_fn(cfg)(jax.random.key(2), cfg.grid_samples))[0]
            try:
                plotting.image_grid(os.path.join(out, f"train_grid_{record['step']:06d}.png"), np.asarray(x),
                                    n_cols=min(8, cfg.grid_samples), title=f"step {record['step']}")
            except FloatingPointError as err:  # a diagnostic grid: report, keep training
                warnings.warn(f"{err} Lower `step_size` or `t_high` for sampling.", RuntimeWarning)

    t0 = time.perf_counter()
    state, history = dj.fit(
        step, state, cfg.steps, steps_per_call=cfg.steps_per_call, batches=batches, desc="mdsm train",
        progress=progress, log_path=os.path.join(out, "metrics.jsonl"),
        checkpoint_dir=os.path.join(out, "checkpoints"), checkpoint_every=cfg.checkpoint_every,
        keep_checkpoints=cfg.keep_checkpoints, callback=save_grid,
        fingerprint=cfgs.fingerprint(cfg, RESUME_IGNORED), compiler_options=dj.compiler_options(cfg.ynn_fusions),
    )
    batches.close()
    return (state.ema if use_ema else state.params), history, time.perf_counter() - t0


def load_run(run_dir: str, conv_impl: str | None = None):
    """A finished (or checkpointed) run of this script: ``(cfg, energy_fn, params, step)``, the
    sampling params (EMA when tracked) from the latest checkpoint in ``run_dir/checkpoints``,
    its step, and the energy built with ``conv_impl`` (default: the run's ``sample_conv``)."""
    cfg = cfgs.load(FashionConfig(), os.path.join(run_dir, "config.json"))
    module = energy_module(cfg, conv_impl or cfg.sample_conv)
    like = dj.init_train_state(dj.init_params(module, jax.random.key(0), (32, 32, 1)), optimizer(cfg),
                               jax.random.key(0), ema=cfg.ema_decay > 0)
    ckpt = dj.Checkpoints(os.path.join(run_dir, "checkpoints"))
    try:
        restored = ckpt.restore_latest(like)
    finally:
        ckpt.close()
    if restored is None:
        raise FileNotFoundError(f"No checkpoint under {run_dir}/checkpoints; train first: "
                                f"python experiments/fashion_mnist.py --out {run_dir}")
    state = restored[0]
    return cfg, dj.energy_fn_of(module), (state.ema if cfg.ema_decay > 0 else state.params), int(state.step)


def inpaint(cfg, energy_fn, params, x_test, x_train, key):
    """Inpaint ``n_inpaint`` test images under every mask; PSNR on the missing pixels beside
    the mean-image and nearest-visible-training-image baselines."""
    temps = dj.mdsm_temperature_schedule(cfg.n_constant, cfg.n_exponential, cfg.n_linear, cfg.t_high, 1.0)
    fill = jax.jit(dj.inpainter(energy_fn, cfg.step_size, temps, cfg.sigma0),
                   compiler_options=dj.compiler_options(cfg.ynn_fusions))
    truth = x_test[: cfg.n_inpaint]
    results, rows = {}, []
    for i, kind in enumerate(cfg.inpaint_masks):
        k_mask, k_init, k_run = jax.random.split(jax.random.fold_in(key, i), 3)
        observed = inpainting.observed_mask(kind, truth.shape, k_mask)
        start = np.where(observed > 0, truth, np.asarray(init_fn(cfg)(k_init, len(truth))))
        ours = np.asarray(fill(params, k_run, jnp.asarray(start), jnp.asarray(observed)))
        mean_fill = inpainting.mean_image_fill(truth, observed, x_train)
        nearest = inpainting.nearest_visible_fill(truth, observed, x_train)
        results[kind] = {
            name: float(np.mean(inpainting.psnr(est, truth, observed)))
            for name, est in (("mdsm", ours), ("mean_image", mean_fill), ("nearest_train", nearest))
        }
        shown = slice(0, 8)
        masked_view = np.where(observed > 0, truth, 0.5)
        rows += [truth[shown], masked_view[shown], ours[shown], nearest[shown]]
    return results, np.concatenate(rows)


def main(argv=None):
    parallel.maybe_initialize_distributed()  # multi-host launches only; before any JAX computation
    cfg, args = cfgs.parse_args(FashionConfig(), PRESETS, __doc__.splitlines()[0], argv,
                                flags=("data_dir", "cache_dir"))
    # Training (fit) and the sampling chunks run data-parallel over all devices: batches must split evenly.
    parallel.check_batches({"batch_size": cfg.batch_size, "sample_chunk": min(cfg.sample_chunk, cfg.n_samples)})
    out = args.out or os.path.join("runs", f"fashion_mnist-{args.preset}")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"preset": args.preset, **cfgs.to_dict(cfg)}, f, indent=2)
    progress = not args.no_progress
    load = dict(data_dir=cfg.data_dir or None, cache_dir=cfg.cache_dir or None)
    x_train, y_train = data.load_arrays("fashion_mnist", "train", limit=cfg.train_limit or None, **load)
    x_test, y_test = data.load_arrays("fashion_mnist", "test", **load)
    data.check_images("x_train", x_train, (32, 32, 1))
    data.check_images("x_test", x_test, (32, 32, 1))

    # The metric's classifier, shared with fashion_mnist_dde.py through its cache.
    clf_params, clf_info = image_metrics.cached_classifier(
        x_train, y_train, x_test, y_test, root=cfg.classifier_dir, steps=cfg.classifier_steps, seed=cfg.seed,
        progress=progress)

    params, history, train_s = train(cfg, x_train, out, progress)
    energy_fn = dj.energy_fn_of(energy_module(cfg, cfg.sample_conv))
    key = jax.random.key(cfg.seed + 1)
    k_sample, k_inpaint, k_fd = jax.random.split(key, 3)

    sampler, n_sampler_steps = make_sampler(cfg, energy_fn, mesh="auto")  # plain jit on one device
    t0 = time.perf_counter()
    samples, sample_info = dj.sample_in_chunks(sampler, params, k_sample, init_fn(cfg), cfg.n_samples,
                                               cfg.sample_chunk, progress=progress, desc="annealed Langevin")
    sample_s = time.perf_counter() - t0
    if sample_info["n_nonfinite"]:
        raise FloatingPointError(
            f"{sample_info['n_nonfinite']} of {cfg.n_samples} chains went non-finite (first at sampler step "
            f"{sample_info['first_nonfinite_step']}); lower `step_size` or `t_high`.")
    np.savez_compressed(os.path.join(out, "samples.npz"), samples=samples)
    plotting.image_grid(os.path.join(out, "samples.png"), samples[:100], n_cols=10,
                        title=f"MDSM, {cfg.steps} steps, {n_sampler_steps} Langevin steps")

    # Scored as displayed: clipped to the data range [0, 1] (the chain itself never clips, as MDSM).
    fd = image_metrics.fd_report(clf_params, samples, x_train, x_test, n=min(cfg.fd_n, len(samples)), key=k_fd,
                                 clip_samples=True, test_labels=y_test)
    psnr, inpaint_rows = inpaint(cfg, energy_fn, params, x_test, x_train, k_inpaint)
    plotting.image_grid(os.path.join(out, "inpainting.png"), inpaint_rows, n_cols=8,
                        title="per mask: truth / observed / MDSM / nearest training image")
    # The curve from the log, not this call's history: a resumed run only ran its tail.
    plotting.loss_curves(os.path.join(out, "loss.png"), {"mdsm": training.read_log(os.path.join(out, "metrics.jsonl"))},
                         "fashion_mnist")

    metrics = {
        **fd,
        "classifier_accuracy": clf_info["test_accuracy"],
        "inpainting_psnr": psnr,
        "train_steps": cfg.steps,
        "train_seconds": train_s,
        "sample_seconds": sample_s,
        "n_samples": cfg.n_samples,
        "sampler_steps": n_sampler_steps,
        "final_loss": history[-1].get("loss") if history else None,
    }
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(results_table(metrics))
    print(f"wrote {out}/metrics.json")
    return metrics


def results_table(m: dict) -> str:
    """The README's table: FD of the samples against the floor and the baselines, and PSNR."""
    lines = [
        f"| FD (n = {m['n']}) | value |", "|---|---|",
        f"| MDSM samples | {m['fd']:.2f} |",
        f"| floor: training subset vs test | {m['fd_floor']:.2f} |",
        f"| full-covariance Gaussian fit (mean ± std over {m['baseline_draws']} draws) | "
        f"{m['fd_gaussian_baseline']:.2f} ± {m['fd_gaussian_baseline_std']:.2f} |",
        f"| whole training set vs test | {m['fd_train']:.2f} |",
        f"| Inception-score analogue (samples / test set) | {m['inception_score']:.2f} / {m['inception_score_test']:.2f} |",
        *([f"| class coverage: smallest class share (classes < {m['min_fraction']:.0%}) / KL to the test split | "
           f"{m['class_min']:.3f} ({m['classes_under']}) / {m['class_kl']:.3f} |"] if "class_kl" in m else []),
        f"| classifier test accuracy | {m['classifier_accuracy']:.4f} |",
        "", "| mask | MDSM PSNR (dB) | mean image | nearest training image |", "|---|---|---|---|",
    ]
    for kind, r in m["inpainting_psnr"].items():
        lines.append(f"| {kind} | {r['mdsm']:.2f} | {r['mean_image']:.2f} | {r['nearest_train']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
