"""DDE on Fashion-MNIST: a generator trained against denoising density estimators, sampled in
one forward pass, beside the DDE density itself sampled by Langevin dynamics.

The loop (Bigdeli et al.; ``dsm_jax.make_dde_step``, one jitted function per iteration):
E_p takes a DSM step at σ on a real batch; E_q — warm-started on the initial generator's
samples, never re-initialised — takes a DSM step on fresh generator samples; every
``gen_every`` iterations G takes a step on the KL surrogate E_p(G(z)+ε) − E_q(G(z)+ε).
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

    python experiments/fashion_mnist_dde.py                  # default CPU preset (< 60 min, 2 cores)
    python experiments/fashion_mnist_dde.py --preset smoke   # < 3 min: a few steps of everything
    python experiments/fashion_mnist_dde.py --preset paper   # the DDE paper's settings (GPU/TPU)
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
from dsm_jax import coverage, data, image_metrics, nets, parallel, plotting, training  # noqa: E402

IMAGE_SHAPE = (32, 32, 1)
ARCHS = ("densenet", "conv")
# what image_metrics.fd_report(..., test_labels=...) adds: the classifier's class split of the samples
CLASS_FIELDS = ("class_histogram", "class_kl", "classes_under", "class_min", "min_fraction")


@dataclasses.dataclass(frozen=True)
class DDEFashionConfig:
    seed: int = 0
    data_dir: str = ""        # IDX files (default: Debian's /usr/share/datasets/fashion-mnist)
    cache_dir: str = ""       # prepared TFDS data (default: $DSM_JAX_TFDS_DIR or ~/.cache/dsm_jax)
    classifier_dir: str = "runs/classifier"  # the FD classifier's checkpoints, shared with fashion_mnist.py
    train_limit: int = 0      # use only the first N training / test images (0: all; smoke preset only)
    test_limit: int = 0
    # Networks. "densenet": the DDE paper's DenseNet MLPs (16 layers, growth 256 for E_p/E_q and
    # 64 for G, 16-d latent, softplus; preset "paper"). The CPU preset keeps depth 16 and the
    # generator, with growth 64 for the energies (1.5M instead of 12M parameters, ~10x faster).
    # "conv": ResNetEnergy (MDSM's energy) and a DCGAN-like ConvGenerator.
    arch: str = "densenet"
    depth: int = 16
    growth: int = 64
    # A learned diagonal Gaussian term in the energies (DenseNetEnergy(quadratic=True); not in
    # the paper): without it a softplus MLP's DSM loss plateaus far above the mean-image level.
    quadratic: bool = True
    gen_depth: int = 16
    gen_growth: int = 64
    latent_dim: int = 16
    gen_init_scale: float = 3.0  # DenseNetGenerator(readout_init_scale=...): > 1 starts G more diverse
    activation: str = "softplus"
    conv_width: int = 16      # arch "conv": ResNetEnergy width / stages / blocks per stage
    conv_stages: int = 3
    conv_blocks: int = 1
    gen_conv_width: int = 32  # arch "conv": ConvGenerator channels at full resolution
    conv_impl: str = "matmul"  # MatmulConv: no XLA:CPU slowdown inside scanned chunks
    # XLA:CPU's YNNPACK fusions (dsm_jax.compiler_options): on for the DenseNet (its
    # 1808 x 64 layers run 1.5x slower without them); arch "conv" runs faster with false.
    ynn_fusions: bool = True
    # Training (DDE: batch 100, Adam 1e-3 for all three networks, σ = 0.5, G every 10 steps).
    steps: int = 25_000       # ≈ 11.6 steps/s on 2 CPU cores: ~36 min
    batch_size: int = 100
    lr: float = 1e-3
    gen_lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    gen_b1: float = 0.9
    gen_b2: float = 0.999
    sigma: float = 0.5
    sigma_start: float = 0.5  # > sigma: σ anneals geometrically to sigma over anneal_frac·steps
    anneal_frac: float = 0.5
    gen_every: int = 10
    # The DDE code's lockstep recipe: E_p and E_q from random weights, one DSM step each per
    # iteration, no warm-ups. Kept as options: E_p alone on real batches first, then E_q alone
    # on the initial generator's samples.
    p_warmup_steps: int = 0
    q_warmup_steps: int = 0
    steps_per_call: int = 50   # MLPs have no CPU scan cliff; arch "conv" with conv_impl "xla": use 1
    checkpoint_every: int = 2500
    keep_checkpoints: int = 3
    grid_every: int = 2500     # generator sample grid PNG during training (0: never)
    # watching the generator: FD (against the test set's features) and class coverage of
    # monitor_n samples of fixed latents every monitor_every steps (0: never), logged as run
    # "generator_monitor" in metrics.jsonl and plotted in loss.png
    monitor_every: int = 2500
    monitor_n: int = 1000
    # Evaluation
    n_samples: int = 1000
    fd_n: int = 1000
    classifier_steps: int = 3000
    # DDE-density variant: E_p sampled by Langevin (T from density_t_high down to 1), then
    # one Tweedie denoise at σ.
    density: bool = True
    density_step_size: float = 0.02
    density_n_constant: int = 50
    density_n_exponential: int = 250
    density_n_final: int = 200   # steps at T = 1 (sampling p̂_σ itself)
    density_t_high: float = 10.0
    density_init_mean: float = 0.5
    density_init_std: float = 0.5
    density_n_samples: int = 1000
    density_chunk: int = 250
    # The MDSM run to compare with in the printed table (read only; skipped if absent or if its
    # FD used another classifier or n).
    mdsm_metrics: str = "runs/fashion_mnist-default/metrics.json"
    # Skip (and count) training steps with a NaN/inf loss or update instead of stopping.
    skip_nonfinite: bool = False

    def validate(self) -> None:
        cfgs.check_fields(
            self,
            positive_int=("depth", "growth", "gen_depth", "gen_growth", "latent_dim", "conv_width", "conv_stages",
                          "conv_blocks", "gen_conv_width", "steps", "batch_size", "gen_every", "steps_per_call",
                          "keep_checkpoints", "n_samples", "fd_n", "classifier_steps", "density_n_samples",
                          "density_chunk", "monitor_n"),
            nonnegative_int=("seed", "train_limit", "test_limit", "p_warmup_steps", "q_warmup_steps",
                             "checkpoint_every", "grid_every", "monitor_every", "density_n_constant",
                             "density_n_exponential", "density_n_final"),
            positive=("gen_init_scale", "lr", "gen_lr", "sigma", "sigma_start", "density_step_size",
                      "density_t_high", "density_init_std"),
            open_unit=("b1", "b2", "gen_b1", "gen_b2"),
            unit_interval=("anneal_frac",),
            within_limit=(("batch_size", "train_limit"),),
            choices={"arch": ARCHS, "conv_impl": nets.CONV_IMPLS, "activation": tuple(sorted(nets.ACTIVATIONS))},
        )


# Fields that do not change the training run (paths, sampling, evaluation, bookkeeping): a
# checkpoint written under other values of these still resumes; other changes are refused.
RESUME_IGNORED = ("data_dir", "cache_dir", "classifier_dir", "test_limit", "steps_per_call", "ynn_fusions",
                  "checkpoint_every", "monitor_every", "monitor_n",
                  "keep_checkpoints", "grid_every", "n_samples", "fd_n", "classifier_steps", "density",
                  "density_step_size", "density_n_constant", "density_n_exponential", "density_n_final",
                  "density_t_high", "density_init_mean", "density_init_std", "density_n_samples", "density_chunk",
                  "mdsm_metrics", "skip_nonfinite")


def refuse_nonfinite(samples, what: str, fix: str) -> None:
    """Never write or score NaN images: raise naming how many samples are non-finite."""
    finite = np.isfinite(np.asarray(samples)).reshape(len(samples), -1).all(axis=1)
    if not finite.all():
        raise FloatingPointError(f"{int((~finite).sum())} of {len(samples)} {what} are non-finite (first at "
                                 f"index {int(np.argmin(finite))}); nothing was written. {fix}")


PRESETS = {
    "default": {},
    "smoke": dict(
        train_limit=2000, test_limit=1000, depth=3, growth=16, gen_depth=3, gen_growth=16, steps=40, batch_size=16,
        steps_per_call=10, gen_every=5, checkpoint_every=20, grid_every=20, monitor_every=20, monitor_n=64,
        n_samples=64, fd_n=64,
        classifier_steps=60, density_n_constant=5, density_n_exponential=10, density_n_final=5,
        density_n_samples=64, density_chunk=32, ynn_fusions=False,
    ),
    "paper": dict(
        depth=16, growth=nets.DDE_DENSENET_PAPER["energy_growth"], gen_depth=16,
        gen_growth=nets.DDE_DENSENET_PAPER["generator_growth"], latent_dim=nets.DDE_DENSENET_PAPER["latent_dim"],
        quadratic=False, gen_init_scale=1.0,
        steps=30_000, batch_size=100, lr=1e-3, gen_lr=1e-3, p_warmup_steps=0, q_warmup_steps=0,  # 50 epochs
        steps_per_call=500, checkpoint_every=5000, grid_every=5000, n_samples=10_000, fd_n=10_000,
        density_n_constant=200, density_n_exponential=1000, density_n_final=800, density_n_samples=10_000,
        density_chunk=1000,
    ),
}


# ---------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------
def energy_module(cfg):
    if cfg.arch == "densenet":
        return nets.DenseNetEnergy(cfg.depth, cfg.growth, cfg.activation, quadratic=cfg.quadratic)
    if cfg.arch == "conv":
        return dj.ResNetEnergy(width=cfg.conv_width, n_stages=cfg.conv_stages, blocks_per_stage=cfg.conv_blocks,
                               conv_impl=cfg.conv_impl)
    raise ValueError(f"Unknown `arch` {cfg.arch!r}; choose one of {ARCHS}.")


def generator_module(cfg):
    if cfg.arch == "densenet":
        return nets.DenseNetGenerator(cfg.gen_depth, cfg.gen_growth, IMAGE_SHAPE, cfg.activation, cfg.gen_init_scale)
    if cfg.arch == "conv":
        return nets.ConvGenerator(cfg.gen_conv_width, 3, IMAGE_SHAPE, conv_impl=cfg.conv_impl)
    raise ValueError(f"Unknown `arch` {cfg.arch!r}; choose one of {ARCHS}.")


def latent_sampler(cfg, n: int):
    """``latent_fn(key) -> z`` of shape (n, latent_dim), z ~ N(0, I)."""
    return lambda key: jax.random.normal(key, (n, cfg.latent_dim))


def sigma_of(cfg):
    """σ, or the annealing schedule σ(step) when ``sigma_start`` differs from ``sigma``."""
    if cfg.sigma_start == cfg.sigma:
        return cfg.sigma
    return dj.geometric_sigma_schedule(cfg.sigma_start, cfg.sigma, max(1, int(cfg.anneal_frac * cfg.steps)))


def optimizers(cfg):
    """(generator Adam, energy Adam): E_p and E_q get separate states of the energy one."""
    return dj.adam(cfg.gen_lr, cfg.gen_b1, cfg.gen_b2), dj.adam(cfg.lr, cfg.b1, cfg.b2)


def init_state(cfg) -> dj.DDEState:
    k_g, k_p, k_q, k_state = jax.random.split(jax.random.key(cfg.seed), 4)
    gen_opt, energy_opt = optimizers(cfg)
    energy = energy_module(cfg)
    return dj.init_dde_state(
        dj.init_params(generator_module(cfg), k_g, (cfg.latent_dim,)),
        dj.init_params(energy, k_p, IMAGE_SHAPE), dj.init_params(energy, k_q, IMAGE_SHAPE),
        gen_opt, energy_opt, k_state)


def n_params(tree) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(tree)))


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------
def generator_monitor(cfg, generator_fn, clf_params, x_test, y_test):
    """``record(state, step, seconds) -> dict``: FD and class coverage of ``monitor_n`` generator
    samples of fixed latents (clipped to [0, 1], as scored at the end) against the test set's
    classifier features, computed once here. One forward pass of G and of the classifier."""
    test_stats = image_metrics.gaussian_stats(image_metrics.classifier_features(clf_params, x_test))
    z = latent_sampler(cfg, cfg.monitor_n)(jax.random.key(cfg.seed + 2))
    generate = jax.jit(generator_fn)

    def record(state, step, seconds):
        x = np.asarray(generate(state.gen.params, z))
        if not np.all(np.isfinite(x)):
            return {"step": step, "run": "generator_monitor", "nonfinite": True}
        x = np.clip(x, 0.0, 1.0)
        fd = image_metrics.frechet_distance(*image_metrics.gaussian_stats(
            image_metrics.classifier_features(clf_params, x)), *test_stats)
        classes = coverage.class_coverage(np.argmax(image_metrics.classifier_logits(clf_params, x), 1), y_test)
        return {"step": step, "run": "generator_monitor", "fd": fd, "train_seconds": seconds,
                **{k: classes[k] for k in ("classes_under", "class_min", "class_kl")}}

    return record


def train(cfg, x_train, out, progress, monitor=None):
    """E_p then E_q warm-ups (skipped when resuming), then the DDE loop through ``fit`` with real batches
    from a :class:`data.BatchIterator` (its position is checkpointed). ``monitor`` (see
    :func:`generator_monitor`) is called every ``monitor_every`` steps and its record appended
    to ``metrics.jsonl``; its time is not counted in the returned seconds. Returns the final
    state, the loop's history and the wall-clock of this call."""
    energy_fn = dj.energy_fn_of(energy_module(cfg))
    generator_fn = generator_module(cfg).apply
    gen_opt, energy_opt = optimizers(cfg)
    latent_fn = latent_sampler(cfg, cfg.batch_size)
    state = init_state(cfg)
    ckpt_dir = os.path.join(out, "checkpoints")
    t0 = time.perf_counter()
    batches = data.BatchIterator(x_train, cfg.batch_size, seed=cfg.seed, prefetch=2)
    resuming = training.latest_step(ckpt_dir) is not None
    options = dj.compiler_options(cfg.ynn_fusions)
    if cfg.p_warmup_steps and not resuming:
        warmup = dj.make_p_warmup_step(energy_fn, cfg.sigma_start, energy_opt)
        state, _ = dj.fit(warmup, state, cfg.p_warmup_steps, steps_per_call=cfg.steps_per_call, batches=batches,
                          compiler_options=options,
                          desc="E_p warm-up", progress=progress)
    if cfg.q_warmup_steps and not resuming:
        warmup = dj.make_q_warmup_step(energy_fn, generator_fn, cfg.sigma_start, latent_fn, energy_opt)
        state, _ = dj.fit(warmup, state, cfg.q_warmup_steps, steps_per_call=cfg.steps_per_call,
                          compiler_options=options,
                          desc="E_q warm-up", progress=progress)
    step = dj.make_dde_step(energy_fn, generator_fn, sigma_of(cfg), latent_fn, gen_opt, energy_opt,
                            gen_every=cfg.gen_every)
    if cfg.skip_nonfinite:
        step = dj.skip_nonfinite_steps(step)
    grid_z = latent_sampler(cfg, 36)(jax.random.key(1))
    generate = jax.jit(generator_fn)

    log_path = os.path.join(out, "metrics.jsonl")
    monitor_s = [0.0]

    def callback(state, record):
        save_grid(state, record)
        if monitor and cfg.monitor_every and (record["step"] % cfg.monitor_every < cfg.steps_per_call
                                              or record["step"] == cfg.steps):
            t_m = time.perf_counter()
            entry = monitor(state, record["step"], t_m - t0 - monitor_s[0])
            with open(log_path, "a") as f:
                f.write(json.dumps(entry) + "\n")
            monitor_s[0] += time.perf_counter() - t_m

    def save_grid(state, record):
        if cfg.grid_every and record["step"] % cfg.grid_every < cfg.steps_per_call:
            x = np.asarray(generate(state.gen.params, grid_z))
            try:
                plotting.image_grid(os.path.join(out, f"train_grid_{record['step']:06d}.png"), x, n_cols=6,
                                    title=f"step {record['step']}, {int(state.gen_updates)} G updates")
            except FloatingPointError as err:  # a diagnostic grid: report, keep training
                warnings.warn(str(err), RuntimeWarning)

    try:
        state, history = dj.fit(
            step, state, cfg.steps, steps_per_call=cfg.steps_per_call, batches=batches, desc="dde train",
            progress=progress, log_path=log_path, log_extra={"run": "dde"}, checkpoint_dir=ckpt_dir,
            checkpoint_every=cfg.checkpoint_every, keep_checkpoints=cfg.keep_checkpoints, callback=callback,
            fingerprint=cfgs.fingerprint(cfg, RESUME_IGNORED), compiler_options=options,
        )
    finally:
        batches.close()
    return state, history, time.perf_counter() - t0 - monitor_s[0]


def load_run(run_dir: str):
    """A finished (or checkpointed) run of this script: ``(cfg, state)`` with the
    :class:`dsm_jax.DDEState` (generator, E_p, E_q) of the latest checkpoint in ``run_dir``."""
    cfg = cfgs.load(DDEFashionConfig(), os.path.join(run_dir, "config.json"))
    ckpt = dj.Checkpoints(os.path.join(run_dir, "checkpoints"))
    try:
        restored = ckpt.restore_latest(init_state(cfg))
    finally:
        ckpt.close()
    if restored is None:
        raise FileNotFoundError(f"No checkpoint under {run_dir}/checkpoints; train first: "
                                f"python experiments/fashion_mnist_dde.py --out {run_dir}")
    return cfg, restored[0]


# ---------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------
def generate_samples(cfg, generator_fn, gen_params, key, n: int, timed_n: int = 1000, repeats: int = 3):
    """``n`` generator samples (one forward pass), and the wall-clock seconds to produce
    ``timed_n`` = 1,000: the median of ``repeats`` timed calls after a compiling call, each
    ended by ``block_until_ready``."""
    generate = jax.jit(generator_fn)
    k_samples, k_timed = jax.random.split(key)
    samples = np.asarray(generate(gen_params, latent_sampler(cfg, n)(k_samples)))
    z = latent_sampler(cfg, timed_n)(k_timed)
    generate(gen_params, z).block_until_ready()  # compiles for this shape
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        generate(gen_params, z).block_until_ready()
        times.append(time.perf_counter() - t0)
    return samples, float(np.median(times)) * 1000.0 / timed_n


def density_temperatures(cfg):
    """T: ``density_n_constant`` steps at ``density_t_high``, ``density_n_exponential`` steps
    decaying geometrically to 1, then ``density_n_final`` steps at T = 1."""
    parts = dj.mdsm_temperature_schedule(cfg.density_n_constant, cfg.density_n_exponential, 0,
                                         cfg.density_t_high, 1.0) \
        if cfg.density_n_constant + cfg.density_n_exponential else jnp.zeros((0,), jnp.float32)
    return jnp.concatenate([parts, jnp.ones((cfg.density_n_final,), jnp.float32)])


def make_density_sampler(cfg, energy_fn, mesh=None):
    """``sample_fn(params, key, x0) -> (x, StepInfo)``, jitted: a Langevin chain on E_p (the DDE
    density of the σ-smoothed data) and one Tweedie denoise x − σ²∇E_p(x) of its noisy samples;
    with ``mesh="auto"`` the chains are split over all devices (:func:`parallel.shard_chains`)."""
    temps = density_temperatures(cfg)
    if temps.shape[0] == 0:
        raise ValueError("The density sampler has no steps: make one of density_n_constant, "
                         "density_n_exponential, density_n_final > 0.")
    chain = dj.langevin(energy_fn, cfg.density_step_size, int(temps.shape[0]), temps, return_info=True)
    denoise = dj.denoiser(energy_fn, cfg.sigma)

    def sample_fn(params, key, x0):
        x, info = chain(params, key, x0)
        return denoise(params, x), info

    options = dj.compiler_options(cfg.ynn_fusions)
    return parallel.shard_chains(sample_fn, mesh, compiler_options=options), int(temps.shape[0])


def density_samples(cfg, energy_fn, p_params, key, progress):
    """E_p's Langevin + Tweedie samples and the seconds per 1,000 (after a compiling chunk)."""
    sampler, n_steps = make_density_sampler(cfg, energy_fn, mesh="auto")  # plain jit on one device
    init = lambda k, m: cfg.density_init_mean + cfg.density_init_std * jax.random.normal(k, (m, *IMAGE_SHAPE))  # noqa: E731
    chunk = min(cfg.density_chunk, cfg.density_n_samples)
    jax.block_until_ready(sampler(p_params, key, init(key, chunk)))  # compiles
    t0 = time.perf_counter()
    samples, info = dj.sample_in_chunks(sampler, p_params, key, init, cfg.density_n_samples, chunk,
                                        progress=progress, desc="E_p Langevin")
    seconds = time.perf_counter() - t0
    if info["n_nonfinite"]:
        raise FloatingPointError(
            f"{info['n_nonfinite']} of {cfg.density_n_samples} Langevin chains on E_p went non-finite (first at "
            f"step {info['first_nonfinite_step']}); lower `density_step_size` or `density_t_high`.")
    return samples, seconds * 1000.0 / cfg.density_n_samples, n_steps


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------
def main(argv=None):
    parallel.maybe_initialize_distributed()  # multi-host launches only; before any JAX computation
    cfg, args = cfgs.parse_args(DDEFashionConfig(), PRESETS, __doc__.splitlines()[0], argv)
    # Training (fit) and the E_p chains run data-parallel over all devices: batches must split evenly.
    parallel.check_batches({"batch_size": cfg.batch_size,
                            "density_chunk": min(cfg.density_chunk, cfg.density_n_samples)})
    if cfg.arch not in ARCHS:
        raise ValueError(f"Unknown `arch` {cfg.arch!r}; choose one of {ARCHS} (--set arch=densenet).")
    out = args.out or os.path.join("runs", f"fashion_mnist_dde-{args.preset}")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"preset": args.preset, **cfgs.to_dict(cfg)}, f, indent=2)
    progress = not args.no_progress
    load = dict(data_dir=cfg.data_dir or None, cache_dir=cfg.cache_dir or None)
    x_train, y_train = data.load_arrays("fashion_mnist", "train", limit=cfg.train_limit or None, **load)
    x_test, y_test = data.load_arrays("fashion_mnist", "test", limit=cfg.test_limit or None, **load)
    data.check_images("x_train", x_train, IMAGE_SHAPE)
    data.check_images("x_test", x_test, IMAGE_SHAPE)

    # The metric's classifier, shared with fashion_mnist.py through its cache.
    clf_params, clf_info = image_metrics.cached_classifier(
        x_train, y_train, x_test, y_test, root=cfg.classifier_dir, steps=cfg.classifier_steps, seed=cfg.seed,
        progress=progress)

    generator_fn = generator_module(cfg).apply
    monitor = generator_monitor(cfg, generator_fn, clf_params, x_test, y_test)
    state, history, train_s = train(cfg, x_train, out, progress, monitor)
    k_gen, k_density, k_fd, k_fd_density = jax.random.split(jax.random.key(cfg.seed + 1), 4)
    samples, gen_s_per_1k = generate_samples(cfg, generator_fn, state.gen.params, k_gen, cfg.n_samples)
    refuse_nonfinite(samples, "generator samples", "Retrain with a lower gen_lr, or --set skip_nonfinite=true.")
    plotting.image_grid(os.path.join(out, "samples.png"), samples[:100], n_cols=10,
                        title=f"DDE generator, {cfg.steps} steps ({int(state.gen_updates)} G updates), one forward pass")
    # Scored as displayed: clipped to [0, 1] (a no-op for the sigmoid generator), as fashion_mnist.py does.
    fd = image_metrics.fd_report(clf_params, samples, x_train, x_test, n=min(cfg.fd_n, len(samples)), key=k_fd,
                                 clip_samples=True, test_labels=y_test)
    saved = {"generator": samples}

    density = None
    if cfg.density:
        energy_fn = dj.energy_fn_of(energy_module(cfg))
        d_samples, d_s_per_1k, d_steps = density_samples(cfg, energy_fn, state.p.params, k_density, progress)
        plotting.image_grid(os.path.join(out, "density_samples.png"), d_samples[:100], n_cols=10,
                            title=f"DDE density E_p: {d_steps} Langevin steps + Tweedie denoise (σ = {cfg.sigma})")
        d_fd = image_metrics.fd_report(clf_params, d_samples, x_train, x_test, n=min(cfg.fd_n, len(d_samples)),
                                       key=k_fd_density, clip_samples=True, test_labels=y_test)
        density = {
            "fd": d_fd["fd"], "fd_floor": d_fd["fd_floor"], "n": d_fd["n"],
            "inception_score": d_fd["inception_score"], "inception_score_std": d_fd["inception_score_std"],
            **{k: d_fd[k] for k in CLASS_FIELDS},
            "sample_seconds_per_1k": d_s_per_1k, "sampler_steps": d_steps, "step_size": cfg.density_step_size,
            "pixel_std_across_samples": float(np.mean(np.std(d_samples, axis=0))),
            "n_samples": cfg.density_n_samples, "denoise": f"Tweedie at sigma={cfg.sigma}",
        }
        saved["density"] = d_samples
    np.savez_compressed(os.path.join(out, "samples.npz"), **saved)
    log = os.path.join(out, "metrics.jsonl")
    plot_losses(os.path.join(out, "loss.png"), training.read_log(log, run="dde"),
                training.read_log(log, run="generator_monitor"))

    metrics = {
        **fd,
        "classifier_accuracy": clf_info["test_accuracy"],
        "arch": cfg.arch,
        "n_params": {"generator": n_params(state.gen.params), "energy": n_params(state.p.params)},
        "train_steps": cfg.steps,
        "generator_updates": int(state.gen_updates),
        "p_warmup_steps": cfg.p_warmup_steps,
        "q_warmup_steps": cfg.q_warmup_steps,
        "train_seconds": train_s,
        "train_steps_per_s": float(np.mean([h["steps_per_s"] for h in history])) if history else None,
        "sample_seconds_per_1k": gen_s_per_1k,
        "n_samples": cfg.n_samples,
        # Mode-collapse check: per-pixel std across samples, averaged over pixels, beside the test set's.
        "pixel_std_across_samples": float(np.mean(np.std(samples, axis=0))),
        "pixel_std_test_set": float(np.mean(np.std(x_test, axis=0))),
        "final_p_loss": history[-1].get("p_loss") if history else None,
        "final_q_loss": history[-1].get("q_loss") if history else None,
        "final_gen_loss": history[-1].get("gen_loss") if history else None,
        "dde_density": density,
        "device": jax.devices()[0].device_kind,
    }
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(results_table(metrics, read_mdsm(cfg.mdsm_metrics, metrics)))
    print(f"wrote {out}/metrics.json")
    return metrics


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
    with open(path) as f:
        m = json.load(f)
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

    lines = [
        f"| Fashion-MNIST, FD n = {m['n']} | FD | IS analogue | smallest class share | class KL | "
        "seconds / 1,000 samples | network passes / sample | pixel std across samples |",
        "|---|---|---|---|---|---|---|---|",
        f"| DDE generator (one forward pass) | {m['fd']:.2f} | {m['inception_score']:.2f} | {classes(m)} | "
        f"{m['sample_seconds_per_1k']:.3f} | 1 forward | {std(m)} |",
    ]
    d = m.get("dde_density")
    if d:
        lines.append(f"| DDE density E_p: {d['sampler_steps']} Langevin steps + Tweedie | {d['fd']:.2f} | "
                     f"{d['inception_score']:.2f} | {classes(d)} | {d['sample_seconds_per_1k']:.2f} | "
                     f"{d['sampler_steps'] + 1} gradients | {std(d)} |")
    if mdsm:
        per_1k = mdsm["sample_seconds"] * 1000.0 / mdsm["n_samples"]
        lines.append(f"| MDSM: {mdsm['sampler_steps']} annealed Langevin steps + denoise | {mdsm['fd']:.2f} | "
                     f"{mdsm['inception_score']:.2f} | {classes(mdsm)} | {per_1k:.2f} | {mdsm['sampler_steps'] + 1} "
                     f"gradients | – |")
    test_std = f"{m['pixel_std_test_set']:.3f} (test set)" if "pixel_std_test_set" in m else "–"
    lines += [
        f"| floor: training subset vs test | {m['fd_floor']:.2f} | {m['inception_score_test']:.2f} (test set) | – | – "
        f"| – | – | {test_std} |",
        f"| full-covariance Gaussian fit ({m['baseline_draws']} draws) | {m['fd_gaussian_baseline']:.2f} ± "
        f"{m['fd_gaussian_baseline_std']:.2f} | – | – | – | – | – | – |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
