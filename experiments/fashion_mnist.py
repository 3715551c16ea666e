"""MDSM on Fashion-MNIST: train the energy (MDSM's ResNet, or with ``--set model.kind=densenet``
the DDE paper's DenseNet MLP), sample with annealed Langevin, inpaint, and score the samples
with a classifier-feature Fréchet distance.

Any prepared image set runs with ``--set data.dataset=NAME`` (``mnist``, ``cifar10``, ...;
docs/datasets.md): shapes and channels follow the data, and the FD classifier is trained
on that set.

Writes to ``--out``: ``metrics.json`` (fd, fd_floor, fd_gaussian_baseline, fd_train,
classifier_accuracy, inception_score, inpainting_psnr per mask with its baselines,
train_steps, train_seconds, sample_seconds, ...), ``metrics.jsonl`` (training curve),
``samples.png`` + ``samples.npz``, ``inpainting.png``, ``train_grid_<step>.png`` grids during
training, ``loss.png``, and orbax checkpoints under ``checkpoints/`` (a rerun resumes).
The config (groups data, model, train, sampler, inpaint) is in
``experiments/configs/fashion_mnist.py``.

    python -m experiments.fashion_mnist                  # default CPU preset (< 60 min, 2 cores)
    python -m experiments.fashion_mnist --preset smoke   # < 3 min: a few steps of everything
    python -m experiments.fashion_mnist --preset paper   # MDSM's run as their code has it, no EMA (GPU/TPU)
    python -m experiments.fashion_mnist --preset cifar10 # MDSM's CIFAR-10 paper run (GPU/TPU, TFDS cifar10)
    python -m experiments.fashion_mnist --data_dir DIR   # IDX files from elsewhere
"""
from __future__ import annotations

import os
import time
import warnings

import jax
import numpy as np

import dsm_jax as dj
from dsm_jax import config as cfgs
from dsm_jax import data, inpainting, parallel, plotting, runlog
from experiments import common
from experiments.configs.fashion_mnist import PRESETS, FashionConfig

__all__ = ["FashionConfig", "PRESETS", "main", "train", "load_run", "make_sampler", "sampling_keys", "results_table",
           "data"]
RESUME_IGNORED = cfgs.resume_ignored(FashionConfig)  # deprecated: read the `resume` field metadata instead


def energy_module(cfg):
    """The run's energy network: ``model.kind`` "resnet" (MDSM's, its convolutions ``model.conv``)
    or "densenet" (the DDE paper's softplus DenseNet MLP)."""
    m = cfg.model
    if m.kind == "densenet":
        return dj.DenseNetEnergy(m.depth, m.growth, "softplus", quadratic=m.quadratic)
    return dj.ResNetEnergy(width=m.width, n_stages=m.n_stages, blocks_per_stage=m.blocks_per_stage, conv_impl=m.conv)


def temperatures(cfg):
    s = cfg.sampler
    return dj.mdsm_temperature_schedule(s.n_constant, s.n_exponential, s.n_linear, s.t_high, 1.0)


def sampling_keys(cfg):
    """``(k_sample, k_inpaint, k_fd)``: the final chains' key (also the FD monitor's), the
    inpainting key and the FD report's, all from ``seed``."""
    return jax.random.split(jax.random.key(cfg.seed + 1), 3)


def make_sampler(cfg, energy_fn, mesh=None):
    """The jitted annealed chain (returns ``(x, StepInfo)``) and its number of steps; with
    ``mesh="auto"`` its chains are split over all devices (:func:`parallel.shard_chains`)."""
    temps = temperatures(cfg)
    chain = dj.annealed_langevin_with_info(energy_fn, cfg.sampler.step_size, temperatures=temps, sigma0=cfg.train.sigma0)
    options = dj.compiler_options(cfg.train.ynn_fusions)
    return parallel.shard_chains(chain, mesh, compiler_options=options), int(temps.shape[0])


def optimizer(cfg):
    """MDSM's Adam with cosine decay to ``train.final_lr``."""
    t = cfg.train
    return dj.adam(t.lr, t.b1, t.b2, total_steps=t.steps, final_lr=t.final_lr)


def init_fn(cfg):
    s, shape = cfg.sampler, common.image_shape(cfg.data)  # the data's shape: (32, 32, 1), (32, 32, 3), ...
    return dj.gaussian_start(shape, s.init_mean, s.init_std)  # MDSM's start: 0.5 + N(0, I)


def _init_state(cfg, module, k_init, k_train):
    params = dj.init_params(module, k_init, common.image_shape(cfg.data))
    return dj.init_train_state(params, optimizer(cfg), k_train,
                               ema=cfg.train.ema_decay is not None)


def fd_monitor(cfg, sampler, images, key):
    """``record(state, step, seconds) -> dict`` for :func:`train`'s monitor: FD and class coverage
    (:func:`common.sample_scorer`, the run's classifier) of ``data.fd_n`` samples drawn by the run's
    annealed ``sampler`` from the sampling params (EMA when tracked) with the same ``key`` and
    starts each time (the main run's, so the curve's points are comparable with its final FD)."""
    score = common.sample_scorer(images.clf_params, images.x_test, images.y_test)

    def record(state, step, seconds):
        params = state.ema if cfg.train.ema_decay is not None else state.params
        x, _ = dj.sample_in_chunks(sampler, params, key, init_fn(cfg), cfg.data.fd_n, cfg.sampler.sample_chunk,
                                   with_info=True)
        scores = score(x)
        return {"run": "fd_monitor", "step": step, "train_seconds": seconds,
                **(scores if scores is not None else {"nonfinite": True})}

    return record


def train(cfg, x_train, out, progress, monitor=None):
    """MDSM training (with an EMA when ``train.ema_decay`` is set), checkpoints every
    ``train.checkpoint_every`` steps (resumes), JSONL logs and sample grids; returns the sampling
    params, the training history and the training seconds. ``monitor`` (see :func:`fd_monitor`) runs every
    ``train.monitor_every_seconds`` of training through a :class:`common.Monitor` (record
    appended to ``metrics.jsonl``; its time is not counted)."""
    t = cfg.train
    module = energy_module(cfg)
    k_init, k_train = jax.random.split(jax.random.key(cfg.seed))
    state = _init_state(cfg, module, k_init, k_train)
    loss_fn = dj.mdsm_loss(dj.energy_fn_of(module), t.sigma_min, t.sigma_max, t.sigma0, spacing=t.sigma_spacing)
    mesh = parallel.resolve_mesh("auto")  # data-parallel over all devices (None on one device)
    step = dj.make_train_step(loss_fn, optimizer(cfg), ema_decay=t.ema_decay, skip_nonfinite=t.skip_nonfinite,
                              mesh=mesh)
    batches = data.BatchIterator(x_train, t.batch_size, seed=cfg.seed, prefetch=2)
    grid_sampler, _ = make_sampler(cfg, dj.energy_fn_of(module))

    def save_grid(state, record):
        # The current params, not the EMA: early in training the EMA still carries the init.
        x = grid_sampler(state.params, jax.random.key(1), init_fn(cfg)(jax.random.key(2), t.grid_samples))[0]
        try:
            plotting.image_grid(os.path.join(out, f"train_grid_{record['step']:06d}.png"), np.asarray(x),
                                n_cols=min(8, t.grid_samples), title=f"step {record['step']}")
        except FloatingPointError as err:  # a diagnostic grid: report, keep training
            warnings.warn(f"{err} Lower `sampler.step_size` or `sampler.t_high` for sampling.", RuntimeWarning)

    t0 = time.perf_counter()
    log_path = os.path.join(out, "metrics.jsonl")
    watch = common.Monitor(monitor, log_path, t0)
    timed = monitor is not None and t.monitor_every_seconds is not None
    try:
        state, history = dj.fit(
            step, state, t.steps, steps_per_call=t.steps_per_call, batches=batches, desc="mdsm train",
            progress=progress, log_path=log_path,
            checkpoint_dir=os.path.join(out, "checkpoints"), checkpoint_every=t.checkpoint_every,
            keep_checkpoints=t.keep_checkpoints, mesh=mesh,
            callback=[dj.Every(t.grid_every or 0, save_grid),
                      *([common.EverySeconds(t.monitor_every_seconds, watch, t.steps)] if timed else [])],
            fingerprint=cfgs.fingerprint(cfg), compiler_options=dj.compiler_options(t.ynn_fusions),
        )
    finally:
        batches.close()
    return (state.ema if t.ema_decay is not None else state.params), history, watch.train_seconds()


def load_run(run_dir: str, conv: str | None = None):
    """A finished (or checkpointed) run of this script: ``(cfg, energy_fn, params, step)``, the
    sampling params (EMA when tracked) from the latest checkpoint in ``run_dir/checkpoints``,
    its step, and the energy (a ResNet's built with ``conv``, default the run's ``model.conv``).
    Runs written before configs were nested, or with two convs, load too (:func:`dsm_jax.config.load`)."""
    cfg = cfgs.load(FashionConfig(), os.path.join(run_dir, "config.json"))
    if conv is not None:
        cfg = cfgs.replace(cfg, {"model.conv": conv})  # same parameters whatever the conv
    module = energy_module(cfg)
    state = common.restore_latest(run_dir, _init_state(cfg, module, jax.random.key(0), jax.random.key(0)),
                                  "fashion_mnist")
    return cfg, dj.energy_fn_of(module), (state.ema if cfg.train.ema_decay is not None else state.params), int(state.step)


def inpaint(cfg, energy_fn, params, x_test, x_train, key):
    """Inpaint ``inpaint.n`` test images under every mask (:func:`dsm_jax.inpainting.evaluate_inpainting`):
    PSNR on the missing pixels beside the mean-image and nearest-visible-training-image
    baselines, and the figure's rows (truth / observed / MDSM / nearest, 8 images per mask)."""
    fill = jax.jit(dj.inpainter(energy_fn, cfg.sampler.step_size, temperatures=temperatures(cfg), sigma0=cfg.train.sigma0),
                   compiler_options=dj.compiler_options(cfg.train.ynn_fusions))
    truth = x_test[: cfg.inpaint.n]
    scores = inpainting.evaluate_inpainting(fill, params, key, truth, x_train, init_fn(cfg), cfg.inpaint.masks)
    results = {kind: {"mdsm": r.psnr["model"], "mean_image": r.psnr["mean_image"], "nearest_train": r.psnr["nearest_train"]}
               for kind, r in scores.items()}
    shown = slice(0, 8)
    rows = [a[shown] for r in scores.values() for a in (truth, np.where(r.observed > 0, truth, 0.5), r.fill, r.nearest)]
    return results, np.concatenate(rows)


def main(argv=None):
    cfg, args, out = common.start(FashionConfig(), PRESETS, __doc__, argv, script="fashion_mnist",
                                  flags=("data.data_dir", "data.cache_dir"))
    s = cfg.sampler
    # Training (fit) and the sampling chunks run data-parallel over all devices: batches must split evenly.
    parallel.check_batches({"train.batch_size": cfg.train.batch_size,
                            "sampler.sample_chunk": min(s.sample_chunk, s.n_samples)})
    progress = not args.no_progress
    images = common.images(cfg.data, cfg.seed, progress)  # the metric's classifier, shared through its cache

    energy_fn = dj.energy_fn_of(energy_module(cfg))
    k_sample, k_inpaint, k_fd = sampling_keys(cfg)
    sampler, n_sampler_steps = make_sampler(cfg, energy_fn, mesh="auto")  # plain jit on one device
    params, history, train_s = train(cfg, images.x_train, out, progress, fd_monitor(cfg, sampler, images, k_sample))
    t0 = time.perf_counter()
    samples, sample_info = dj.sample_in_chunks(sampler, params, k_sample, init_fn(cfg), s.n_samples,
                                               s.sample_chunk, with_info=True, progress=progress, desc="annealed Langevin")
    sample_s = time.perf_counter() - t0
    if sample_info["n_nonfinite"]:
        raise FloatingPointError(
            f"{sample_info['n_nonfinite']} of {s.n_samples} chains went non-finite (first at sampler step "
            f"{sample_info['first_nonfinite_step']}); lower `sampler.step_size` or `sampler.t_high`.")
    np.savez_compressed(os.path.join(out, "samples.npz"), samples=samples)
    plotting.image_grid(os.path.join(out, "samples.png"), samples[:100], n_cols=10,
                        title=f"MDSM on {cfg.data.dataset}, {cfg.train.steps} steps, {n_sampler_steps} Langevin steps")
    fd = images.score(samples, k_fd)
    log = os.path.join(out, "metrics.jsonl")
    if cfg.train.monitor_every_seconds is not None and history:
        # The curve's last point is this sampling run (same key and starts as the monitor's: the same
        # draws when sampler.n_samples = data.fd_n, as in every preset), not a second chain.
        runlog.append_record(log, {"run": "fd_monitor", "step": cfg.train.steps, "train_seconds": train_s,
                                   **{k: fd[k] for k in common.MONITOR_FIELDS}})
    psnr, inpaint_rows = inpaint(cfg, energy_fn, params, images.x_test, images.x_train, k_inpaint)
    plotting.image_grid(os.path.join(out, "inpainting.png"), inpaint_rows, n_cols=8,
                        title="per mask: truth / observed / MDSM / nearest training image")
    # The curve from the log, not this call's history (a resumed run only ran its tail); training
    # records carry no "run" field, so run=None leaves the monitor's out.
    plotting.loss_curves(os.path.join(out, "loss.png"), {"mdsm": runlog.read_log(log, run=None)},
                         cfg.data.dataset)
    metrics = {
        **fd, "classifier_accuracy": images.clf_info["test_accuracy"], "inpainting_psnr": psnr,
        "dataset": cfg.data.dataset, "train_steps": cfg.train.steps, "train_seconds": train_s,
        "sample_seconds": sample_s, "n_samples": s.n_samples, "sampler_steps": n_sampler_steps,
        "final_loss": history[-1].get("loss") if history else None,
        "fd_curve": runlog.read_log(log, run="fd_monitor"),
    }
    common.write_json(os.path.join(out, "metrics.json"), metrics)
    print(results_table(metrics))
    print(f"wrote {out}/metrics.json")
    return metrics


def results_table(m: dict) -> str:
    """The README's table: FD of the samples against the floor and the baselines, and PSNR."""
    rows = [
        ["MDSM samples", f"{m['fd']:.2f}"],
        ["floor: training subset vs test", f"{m['fd_floor']:.2f}"],
        [f"full-covariance Gaussian fit (mean ± std over {m['baseline_draws']} draws)",
         f"{m['fd_gaussian_baseline']:.2f} ± {m['fd_gaussian_baseline_std']:.2f}"],
        ["whole training set vs test", f"{m['fd_train']:.2f}"],
        ["Inception-score analogue (samples / test set)", f"{m['inception_score']:.2f} / {m['inception_score_test']:.2f}"],
        *([[f"class coverage: smallest class share (classes < {m['min_fraction']:.0%}) / KL to the test split",
            f"{m['class_min']:.3f} ({m['classes_under']}) / {m['class_kl']:.3f}"]] if "class_kl" in m else []),
        ["classifier test accuracy", f"{m['classifier_accuracy']:.4f}"],
    ]
    psnr = [[kind, f"{r['mdsm']:.2f}", f"{r['mean_image']:.2f}", f"{r['nearest_train']:.2f}"]
            for kind, r in m["inpainting_psnr"].items()]
    return "\n".join([common.markdown_table([f"FD (n = {m['n']})", "value"], rows), "",
                      common.markdown_table(["mask", "MDSM PSNR (dB)", "mean image", "nearest training image"], psnr)])


if __name__ == "__main__":
    main()
