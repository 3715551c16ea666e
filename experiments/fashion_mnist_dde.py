"""DDE on Fashion-MNIST: a generator trained against denoising density estimators, sampled in
one forward pass, beside the DDE density itself sampled by Langevin dynamics.

The loop (Bigdeli et al.; ``dsm_jax.make_dde_step``, one jitted function per iteration):
E_p takes a DSM step at σ on a real batch; E_q — warm-started on the initial generator's
samples, never re-initialised — takes a DSM step on fresh generator samples; every
``gen.every`` iterations G takes a step on the KL surrogate E_p(G(z)+ε) − E_q(G(z)+ε).
Separate Adam optimisers for G, E_p and E_q.

The DDE-density variant needs no extra training: E_p is trained on real data only, by
``dsm_loss`` at σ, so it *is* the DDE density estimate (E_p ≈ −log p̂_σ). It is sampled with
a Langevin chain (``dsm_jax.langevin``, temperatures annealed to T = 1). Its samples follow
p̂_σ — clean images plus N(0, σ²) noise, very visible at σ = 0.5 — so they are finished with
one Tweedie step x − σ²∇E_p(x) (``dsm_jax.denoiser(energy_fn, σ)``), the posterior mean
E[x | x̃]: denoised, somewhat blurred images.

Both are scored with the MDSM experiment's classifier and ``image_metrics.fd_report``
(same cache directory and steps, so the classifier is reused; samples clipped to [0, 1]).

Writes to ``--out``: ``metrics.json`` (fd, fd_floor, fd_gaussian_baseline, inception_score,
train_seconds, sample_seconds_per_1k, ..., and ``dde_density`` with the Langevin variant's
fd and sample_seconds_per_1k), ``metrics.jsonl`` (training curve), ``samples.png`` +
``density_samples.png`` + ``samples.npz``, ``train_grid_<step>.png`` generator grids during
training, ``loss.png``, and orbax checkpoints under ``checkpoints/`` (a rerun resumes).
The config (groups data, model, gen, train, monitor, density) is in
``experiments/configs/fashion_mnist_dde.py``.

    python -m experiments.fashion_mnist_dde                  # default CPU preset (< 60 min, 2 cores)
    python -m experiments.fashion_mnist_dde --preset smoke   # < 3 min: a few steps of everything
    python -m experiments.fashion_mnist_dde --preset paper   # the DDE paper's settings (GPU/TPU)
"""
from __future__ import annotations

import os
import time
import warnings

import jax
import numpy as np

import dsm_jax as dj
from dsm_jax import config as cfgs
from dsm_jax import checkpoint, data, parallel, plotting, runlog
from experiments import common
from experiments.common import n_params, refuse_nonfinite
from experiments.configs.fashion_mnist_dde import ARCHS, PRESETS, DDEFashionConfig
from experiments.fashion_mnist_dde_nets import (energy_module, generator_module, init_state, latent_sampler,
                                                 optimizers, sigma_of, to_data_images, to_model_images)
from experiments.fashion_mnist_dde_report import plot_losses, read_mdsm, results_table
from experiments.fashion_mnist_dde_sampling import (CLASS_FIELDS, density_temperatures, generate_samples,
                                                    make_density_sampler, score_density)

__all__ = ["ARCHS", "CLASS_FIELDS", "PRESETS", "DDEFashionConfig", "main", "train", "load_run", "init_state",
           "energy_module", "generator_module", "latent_sampler", "optimizers", "sigma_of", "density_temperatures",
           "make_density_sampler", "results_table", "refuse_nonfinite", "data"]
RESUME_IGNORED = cfgs.resume_ignored(DDEFashionConfig)  # deprecated: read the `resume` field metadata instead


def generator_monitor(cfg, generator_fn, clf_params, x_test, y_test):
    """``record(state, step, seconds) -> dict``: FD and class coverage of ``monitor.n`` generator
    samples of fixed latents (clipped to [0, 1], as scored at the end) against the test set's
    classifier features (:func:`common.sample_scorer`). One forward pass of G and of the classifier."""
    score = common.sample_scorer(clf_params, x_test, y_test)
    z = latent_sampler(cfg, cfg.monitor.n)(jax.random.key(cfg.seed + 2))
    generate = jax.jit(generator_fn)

    def record(state, step, seconds):
        scores = score(to_data_images(cfg, generate(state.gen.params, z)))
        if scores is None:
            return {"step": step, "run": "generator_monitor", "nonfinite": True}
        return {"step": step, "run": "generator_monitor", "fd": scores["fd"], "train_seconds": seconds,
                **{k: scores[k] for k in ("classes_under", "class_min", "class_kl")}}

    return record


def train(cfg, x_train, out, progress, monitor=None):
    """E_p then E_q warm-ups (skipped when resuming), then the DDE loop through ``fit`` with real
    batches from a :class:`data.BatchIterator` (its position is checkpointed). ``monitor`` (see
    :func:`generator_monitor`) runs every ``monitor.every`` steps (and ``monitor.every_seconds``
    of training, :class:`common.EverySeconds`) through a :class:`common.Monitor`
    (record appended to ``metrics.jsonl``, its time not counted). Returns the final state, the
    loop's history and the wall-clock of this call."""
    t = cfg.train
    energy_fn = dj.energy_fn_of(energy_module(cfg))
    generator_fn = generator_module(cfg).apply
    gen_opt, energy_opt = optimizers(cfg)
    latent_fn = latent_sampler(cfg, t.batch_size)
    state = init_state(cfg)
    ckpt_dir = os.path.join(out, "checkpoints")
    t0 = time.perf_counter()
    batches = data.BatchIterator(x_train, t.batch_size, seed=cfg.seed, prefetch=2)
    resuming = checkpoint.latest_step(ckpt_dir) is not None
    mesh = parallel.resolve_mesh("auto")  # data-parallel over all devices (None on one device)
    options = dj.compiler_options(t.ynn_fusions)
    warm = dict(steps_per_call=t.steps_per_call, compiler_options=options, progress=progress, mesh=mesh)
    if t.p_warmup_steps and not resuming:
        warmup = dj.make_p_warmup_step(energy_fn, t.sigma_start, energy_opt, mesh=mesh)
        state, _ = dj.fit(warmup, state, t.p_warmup_steps, batches=batches, desc="E_p warm-up", **warm)
    if t.q_warmup_steps and not resuming:
        warmup = dj.make_q_warmup_step(energy_fn, generator_fn, t.sigma_start, latent_fn, energy_opt, mesh=mesh)
        state, _ = dj.fit(warmup, state, t.q_warmup_steps, desc="E_q warm-up", **warm)
    step = dj.make_dde_step(energy_fn, generator_fn, sigma_of(cfg), latent_fn, gen_opt, energy_opt,
                            gen_every=cfg.gen.every, mesh=mesh)
    if t.skip_nonfinite:
        step = dj.skip_nonfinite_steps(step)
    grid_z = latent_sampler(cfg, 36)(jax.random.key(1))
    generate = jax.jit(generator_fn)
    log_path = os.path.join(out, "metrics.jsonl")
    watch = common.Monitor(monitor, log_path, t0)

    def save_grid(state, record):
        x = np.asarray(generate(state.gen.params, grid_z))
        try:
            plotting.image_grid(os.path.join(out, f"train_grid_{record['step']:06d}.png"), x, n_cols=6,
                                title=f"step {record['step']}, {int(state.gen_updates)} G updates")
        except FloatingPointError as err:  # a diagnostic grid: report, keep training
            warnings.warn(str(err), RuntimeWarning)

    try:
        state, history = dj.fit(
            step, state, t.steps, steps_per_call=t.steps_per_call, batches=batches, desc="dde train",
            progress=progress, log_path=log_path, log_extra={"run": "dde"}, checkpoint_dir=ckpt_dir,
            checkpoint_every=t.checkpoint_every, keep_checkpoints=t.keep_checkpoints, mesh=mesh,
            callback=[dj.Every(t.grid_every or 0, save_grid),
                      dj.Every((cfg.monitor.every or 0) if monitor else 0, watch, at_end=True),
                      *([common.EverySeconds(cfg.monitor.every_seconds, watch, t.steps)]
                        if monitor and cfg.monitor.every_seconds is not None else [])],
            fingerprint=cfgs.fingerprint(cfg),
            compiler_options=options,
        )
    finally:
        batches.close()
    return state, history, watch.train_seconds()


def load_run(run_dir: str):
    """A finished (or checkpointed) run of this script: ``(cfg, state)`` with the
    :class:`dsm_jax.DDEState` (generator, E_p, E_q) of the latest checkpoint in ``run_dir``.
    Runs written before configs were nested load too."""
    cfg = cfgs.load(DDEFashionConfig(), os.path.join(run_dir, "config.json"))
    return cfg, common.restore_latest(run_dir, init_state(cfg), "fashion_mnist_dde")


def main(argv=None):
    cfg, args, out = common.start(DDEFashionConfig(), PRESETS, __doc__, argv, script="fashion_mnist_dde")
    # Training (fit) and the E_p chains run data-parallel over all devices: batches must split evenly.
    parallel.check_batches({"train.batch_size": cfg.train.batch_size,
                            "density.chunk": min(cfg.density.chunk, cfg.density.n_samples)})
    progress = not args.no_progress
    images = common.images(cfg.data, cfg.seed, progress)  # the metric's classifier, shared through its cache
    generator_fn = generator_module(cfg).apply
    monitor = generator_monitor(cfg, generator_fn, images.clf_params, images.x_test, images.y_test)
    state, history, train_s = train(cfg, to_model_images(cfg, images.x_train), out, progress, monitor)
    k_gen, k_density, k_fd, k_fd_density = jax.random.split(jax.random.key(cfg.seed + 1), 4)
    samples, gen_s_per_1k = generate_samples(cfg, generator_fn, state.gen.params, k_gen, cfg.n_samples)
    samples = to_data_images(cfg, samples)  # what the classifier scores (and samples.npz keeps)
    refuse_nonfinite(samples, "generator samples", "Retrain with a lower gen.lr, or --set train.skip_nonfinite=true.")
    plotting.image_grid(os.path.join(out, "samples.png"), samples[:100], n_cols=10,
                        title=f"DDE generator, {cfg.train.steps} steps ({int(state.gen_updates)} G updates), "
                              "one forward pass")
    fd = images.score(samples, k_fd)  # clipped to [0, 1]: a no-op for the sigmoid generator
    saved, density = {"generator": samples}, None
    if cfg.density.enabled:
        saved["density"], density = score_density(cfg, images, state.p.params, k_density, k_fd_density, progress, out)
    np.savez_compressed(os.path.join(out, "samples.npz"), **saved)
    log = os.path.join(out, "metrics.jsonl")
    plot_losses(os.path.join(out, "loss.png"), runlog.read_log(log, run="dde"),
                runlog.read_log(log, run="generator_monitor"))
    last = history[-1] if history else {}
    metrics = {
        **fd, "classifier_accuracy": images.clf_info["test_accuracy"], "arch": cfg.model.arch,
        "n_params": {"generator": n_params(state.gen.params), "energy": n_params(state.p.params)},
        "train_steps": cfg.train.steps, "generator_updates": int(state.gen_updates),
        "p_warmup_steps": cfg.train.p_warmup_steps, "q_warmup_steps": cfg.train.q_warmup_steps,
        "train_seconds": train_s,
        "train_steps_per_s": float(np.mean([h["steps_per_s"] for h in history])) if history else None,
        "sample_seconds_per_1k": gen_s_per_1k, "n_samples": cfg.n_samples,
        # Mode-collapse check: per-pixel std across samples, averaged over pixels, beside the test set's.
        "pixel_std_across_samples": float(np.mean(np.std(samples, axis=0))),
        "pixel_std_test_set": float(np.mean(np.std(images.x_test, axis=0))),
        "final_p_loss": last.get("p_loss"), "final_q_loss": last.get("q_loss"), "final_gen_loss": last.get("gen_loss"),
        "dde_density": density, "device": jax.devices()[0].device_kind,
    }
    common.write_json(os.path.join(out, "metrics.json"), metrics)
    print(results_table(metrics, read_mdsm(cfg.mdsm_metrics, metrics)))
    print(f"wrote {out}/metrics.json")
    return metrics


if __name__ == "__main__":
    main()
