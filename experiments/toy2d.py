"""2-D reproduction of DDE and MDSM on toys with exact smoothed densities.

For every toy × method, train, evaluate with exact metrics and write to ``--out``:
``metrics.json`` ("<toy>/<method>" → kl, kl_stderr, steps, seconds, ...), ``metrics.jsonl``
(training curves), and PNG figures (densities, samples, loss curves).

Methods:
  dde            E by ``dsm_loss`` at σ; metric: density KL(p̂_σ ‖ exp(−E)/Z), Z on a grid.
  dde-generator  the DDE code's lockstep recipe: E_p (real data) and E_q (fresh generator
                 samples) from random weights, one DSM step each per iteration, G = MLP(z) + z
                 a step on the KL surrogate every ``gen_every``; metric: sample KL of G(z).
  mdsm           E by ``mdsm_loss``; samples by annealed Langevin + one denoise; metric:
                 sample KL.

Every sample KL comes with mode coverage (``dsm_jax.coverage.toy_coverage``: the share of
samples per mixture component and the fraction off the data's support) and KL(q̂‖p̂).

    python experiments/toy2d.py                   # default CPU preset (~28 min on 2 cores)
    python experiments/toy2d.py --preset smoke    # whole grid in < 3 min
    python experiments/toy2d.py --preset paper    # the DDE code's toy settings (GPU)
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dsm_jax as dj  # noqa: E402
from dsm_jax import config as cfgs  # noqa: E402
from dsm_jax import coverage, metrics, nets, parallel, plotting, training, toy as toys  # noqa: E402

METHODS = ("dde", "dde-generator", "mdsm")


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    toys: tuple[str, ...] = toys.TOY_NAMES
    methods: tuple[str, ...] = METHODS
    seed: int = 0
    sigma: float = 0.2
    # Networks. The DDE paper's toy MLP is 25 x 32 softplus (preset "paper"); on 2 CPU cores a
    # shallow, wide MLP reaches far lower KL in the same minutes (4000 steps of 25 x 32 gave a
    # density KL of 0.22 on eight_gaussians, 3000 steps of 4 x 128 gave 0.003).
    depth: int = 4
    width: int = 128
    gen_depth: int = 4
    gen_width: int = 128
    activation: str = "softplus"
    weight_init: str = "lecun"  # dense-layer initialisation of every network (nets.DENSE_INITS); "xavier": DDE's code
    # XLA:CPU's YNNPACK fusions (dsm_jax.compiler_options): no effect on 4 x 128 MLPs; off makes
    # the 25 x 32 MLP's DSM step 1.5x faster (preset "paper"). Only float rounding changes.
    ynn_fusions: bool = True
    batch_size: int = 1024
    lr: float = 1e-3
    final_lr: float = 1e-5
    steps_per_call: int = 200
    # dde density
    dde_steps: int = 3000
    # dde generator: the DDE code's lockstep recipe. E_p and E_q start from random weights and
    # each takes one DSM step per iteration with the same optimiser (Adam lr, β = (0.9, 0.999));
    # G = z + MLP(z) takes one step every gen_every iterations; σ fixed. Trained alike, the two
    # energies' errors cancel in G's gradient (README: the study table of each deviation).
    gen_iters: int = 16000
    gen_every: int = 10
    gen_lr: float = 1e-3
    gen_b1: float = 0.9
    gen_batch_size: int = 1024
    gen_activation: str = "relu"
    gen_activation_by_toy: tuple[str, ...] = ()  # "toy:activation" exceptions, e.g. checkerboard:softplus
    gen_q_init: str = "scratch"  # "scratch": E_q from its own random weights; "copy_p": E_q starts as E_p
    # Cosine decay of all three learning rates to final_lr over the run (E_p and E_q on the same
    # schedule, G over its updates): not in the DDE code, whose constant rate leaves the generator
    # jittering at the end (checkerboard: 0.039 constant vs 0.022 decayed after 12,000 iterations).
    gen_lr_decay: bool = True
    # Deviations from the recipe, kept as options (each costs sample KL; see the study table):
    gen_p_pretrained: bool = False  # E_p starts from the `dde` run's trained density (needs method dde)
    q_warmup_steps: int = 0         # E_q alone on the initial generator's samples before the loop
    gen_anneal_sigma: bool = False  # σ decays from gen_sigma_start to sigma over gen_anneal_frac of the run
    gen_sigma_start: float = 1.0
    gen_anneal_frac: float = 0.5
    # watching the run: sample KL of G on gen_monitor_samples fixed latents every gen_monitor_every
    # iterations (0: never), logged as run "<toy>/dde-generator/monitor" and plotted in <toy>_loss.png
    gen_monitor_every: int = 2000
    gen_monitor_samples: int = 2000
    # mdsm
    mdsm_steps: int = 3000
    sigma_min: float = 0.05
    sigma_max: float = 1.0
    sigma0: float = 0.1
    sampler_step_size: float = 1e-3
    n_constant: int = 200
    n_exponential: int = 1000
    n_linear: int = 0
    t_high: float = 10.0
    init_scale: float = 3.0
    # evaluation
    n_samples: int = 10000
    n_eval: int = 20000
    grid_n: int = 200
    ais_chains: int = 1024
    ais_temps: int = 256
    # resilience: every run checkpoints under <out>/checkpoints/<toy>/<method> and resumes;
    # skip_nonfinite skips (and counts) steps with a NaN/inf loss or update instead of stopping.
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    skip_nonfinite: bool = False

    def validate(self) -> None:
        cfgs.check_fields(
            self,
            positive_int=("depth", "width", "gen_depth", "gen_width", "batch_size", "gen_batch_size",
                          "steps_per_call", "dde_steps", "gen_iters", "gen_every", "mdsm_steps", "n_samples",
                          "n_eval", "grid_n", "ais_chains", "ais_temps", "keep_checkpoints", "gen_monitor_samples"),
            nonnegative_int=("seed", "q_warmup_steps", "n_constant", "n_exponential", "n_linear",
                             "checkpoint_every", "gen_monitor_every"),
            positive=("sigma", "lr", "final_lr", "gen_lr", "gen_sigma_start", "sigma_min", "sigma_max", "sigma0",
                      "sampler_step_size", "t_high", "init_scale"),
            unit_interval=("gen_anneal_frac",),
            open_unit=("gen_b1",),
            ordered=(("sigma_min", "sigma_max"),),
            choices={"activation": sorted(nets.ACTIVATIONS), "gen_activation": sorted(nets.ACTIVATIONS),
                     "gen_q_init": ("scratch", "copy_p"), "weight_init": sorted(nets.DENSE_INITS)},
            subsets={"toys": toys.TOY_NAMES, "methods": METHODS},
        )
        for item in self.gen_activation_by_toy:
            toy_name, _, act = item.partition(":")
            if toy_name not in toys.TOY_NAMES or act not in nets.ACTIVATIONS:
                raise ValueError(f"config field `gen_activation_by_toy` entry {item!r} must be TOY:ACTIVATION with TOY "
                                 f"in {toys.TOY_NAMES} and ACTIVATION in {sorted(nets.ACTIVATIONS)}; fix it with "
                                 f"--set gen_activation_by_toy=checkerboard:softplus.")
        if self.gen_p_pretrained and "dde" not in self.methods:
            raise ValueError("config field `gen_p_pretrained` needs the `dde` method to pre-train E_p: add it "
                             "(--set methods=dde,dde-generator) or --set gen_p_pretrained=false.")
        if self.n_constant + self.n_exponential + self.n_linear < 1:
            raise ValueError("The MDSM sampler has no steps: set one of n_constant, n_exponential, n_linear "
                             "> 0 (e.g. --set n_exponential=1000).")


# Fields that do not change a training run (evaluation, sampling, bookkeeping): a checkpoint
# written under other values of these still resumes; any other change is refused.
RESUME_IGNORED = ("toys", "methods", "n_samples", "n_eval", "grid_n", "ais_chains", "ais_temps", "steps_per_call",
                  "ynn_fusions", "checkpoint_every", "keep_checkpoints", "skip_nonfinite", "sampler_step_size",
                  "n_constant", "n_exponential", "n_linear", "t_high", "init_scale", "gen_monitor_every",
                  "gen_monitor_samples")


PRESETS = {
    "default": {},
    "smoke": dict(
        depth=3, width=32, gen_depth=3, gen_width=32, batch_size=256, gen_batch_size=256,
        dde_steps=200, gen_iters=200, mdsm_steps=200, steps_per_call=50, gen_monitor_every=100,
        gen_monitor_samples=500, n_constant=20, n_exponential=80, n_samples=1000, n_eval=2000, grid_n=64,
        ais_chains=128, ais_temps=32, checkpoint_every=100, ynn_fusions=False,
    ),
    # The DDE code's toy recipe as coded (logchan/dde, dde.py defaults): 25 x 32 networks with
    # Xavier init, batch 2048, Adam 1e-3 for all three, G every 10, ReLU generator but softplus on
    # the checkerboard, 200 epochs of 25 batches = 5,000 iterations (their released checkpoints
    # trained longer: 5,000 reached a sample KL of 0.48 here).
    "paper": dict(
        depth=25, width=32, gen_depth=25, gen_width=32, weight_init="xavier", batch_size=2048, gen_batch_size=2048,
        gen_every=10, gen_iters=5000, gen_lr_decay=False, gen_activation="relu", gen_activation_by_toy=("checkerboard:softplus",),
        dde_steps=100_000, mdsm_steps=100_000, n_constant=500, n_exponential=2000, steps_per_call=1000,
        ynn_fusions=False, n_samples=20000, n_eval=100000, grid_n=300, checkpoint_every=10_000,
    ),
}


def _energy(cfg):
    return dj.MLPEnergy(cfg.depth, cfg.width, cfg.activation, cfg.weight_init)


def train_energy(cfg, loss_fn, data_fn, key, n_steps, desc, run):
    module = _energy(cfg)
    k_init, k_train = jax.random.split(key)
    opt = dj.adam(cfg.lr, total_steps=n_steps, final_lr=cfg.final_lr)
    state = dj.init_train_state(dj.init_params(module, k_init, (2,)), opt, k_train)
    step = dj.make_train_step(loss_fn, opt, data_fn, skip_nonfinite=cfg.skip_nonfinite)
    t0 = time.perf_counter()
    state, history = dj.fit(step, state, n_steps, steps_per_call=cfg.steps_per_call, desc=desc, **run)
    return state.params, history, time.perf_counter() - t0


def run_dde(cfg, toy, key, ctx, run):
    energy_fn = dj.energy_fn_of(_energy(cfg))
    data_fn = lambda k: toy.sample(k, cfg.batch_size)  # noqa: E731
    params, history, seconds = train_energy(
        cfg, dj.dsm_loss(energy_fn, cfg.sigma), data_fn, key, cfg.dde_steps, f"{toy.name}/dde", run)
    # Normalise on a grid twice as wide as the plotting bounds: a learned energy can put mass
    # where the data has none, and Z missing that mass would make the KL look better than it is.
    log_z_wide = metrics.grid_log_normalizer(energy_fn, params, ctx["norm_grid"])
    log_model = lambda x: dj.log_likelihood(energy_fn, params, x, log_z_wide)  # noqa: E731
    kl, se = metrics.density_kl(ctx["log_true"], log_model, ctx["x_eval"])
    log_z_bounds = metrics.grid_log_normalizer(energy_fn, params, ctx["grid"])
    ctx["dde_params"] = params
    result = {"kl": float(kl), "kl_stderr": float(se), "steps": cfg.dde_steps, "seconds": seconds,
              "mass_outside_bounds": float(1.0 - jnp.exp(log_z_bounds - log_z_wide))}
    # Test log-likelihood of the σ-smoothed model: log Z by AIS, cross-checked by the grid,
    # beside the exact p̂_σ's own log-likelihood (the best any model can do on these points).
    x_test = ctx["x_eval"]
    log_z_ais, log_z_se = dj.estimate_log_z(energy_fn, params, jax.random.fold_in(key, 7), (2,), method="ais",
                                            data=x_test, n_chains=cfg.ais_chains, n_temps=cfg.ais_temps)
    ll_ais = dj.evaluate_log_likelihood(energy_fn, params, x_test, log_z_ais, log_z_se)
    ll_grid = dj.evaluate_log_likelihood(energy_fn, params, x_test, log_z_wide, 0.0)
    result.update(
        test_ll_ais=ll_ais["log_likelihood"], test_ll_ais_stderr=ll_ais["log_likelihood_stderr"],
        test_ll_grid=ll_grid["log_likelihood"], test_ll_grid_stderr=ll_grid["log_likelihood_stderr"],
        test_ll_true=float(jnp.mean(ctx["log_true"](x_test))),
        log_z_ais=float(log_z_ais), log_z_ais_stderr=float(log_z_se), log_z_grid=float(log_z_wide),
    )
    return result, {"log_density": log_model}, history


def _sample_metrics(cfg, toy, samples, ctx, seconds, steps, **extra):
    if not np.all(np.isfinite(np.asarray(samples))):
        bad = int(np.sum(~np.all(np.isfinite(np.asarray(samples)), axis=1)))
        raise FloatingPointError(f"{bad} of {len(samples)} samples are non-finite; lower the step size.")
    sk = metrics.sample_kl(samples, ctx["log_true"], cfg.sigma, ctx["grid"], key=jax.random.PRNGKey(cfg.seed))
    return {
        "kl": float(sk["kl"]), "kl_stderr": float(sk["kl_stderr"]),
        "kl_reverse": float(sk["kl_reverse"]), "kl_reverse_stderr": float(sk["kl_reverse_stderr"]),
        "kl_floor": ctx["floor"], **coverage.toy_coverage(toy, samples, cfg.sigma),
        "steps": steps, "seconds": seconds, **extra,
    }


def run_mdsm(cfg, toy, key, ctx, run):
    energy_fn = dj.energy_fn_of(_energy(cfg))
    k_train, k_init, k_sample = jax.random.split(key, 3)
    data_fn = lambda k: toy.sample(k, cfg.batch_size)  # noqa: E731
    loss_fn = dj.mdsm_loss(energy_fn, cfg.sigma_min, cfg.sigma_max, cfg.sigma0)
    params, history, train_s = train_energy(cfg, loss_fn, data_fn, k_train, cfg.mdsm_steps, f"{toy.name}/mdsm", run)
    temps = dj.mdsm_temperature_schedule(cfg.n_constant, cfg.n_exponential, cfg.n_linear, cfg.t_high, 1.0)
    sampler = parallel.shard_chains(  # chains split over all devices (plain jit on one)
        dj.annealed_langevin(energy_fn, cfg.sampler_step_size, temps, cfg.sigma0, return_info=True),
        compiler_options=run["compiler_options"])
    x0 = cfg.init_scale * jax.random.normal(k_init, (cfg.n_samples, 2))
    t0 = time.perf_counter()
    samples, info = sampler(params, k_sample, x0)
    samples = np.asarray(samples)
    sample_s = time.perf_counter() - t0
    result = _sample_metrics(cfg, toy, samples, ctx, train_s + sample_s, cfg.mdsm_steps,
                             train_seconds=train_s, sample_seconds=sample_s, sampler_steps=int(temps.shape[0]))
    return result, {"samples": samples}, history


def _gen_activation(cfg, toy_name):
    by_toy = dict(item.split(":", 1) for item in cfg.gen_activation_by_toy)
    return by_toy.get(toy_name, cfg.gen_activation)


def _generator_monitor(cfg, generator_fn, key, ctx, log_path, name):
    """fit callback: the sample KL of G on fixed latents every ``gen_monitor_every`` iterations
    (logged as run ``<name>/monitor``); returns ``(callback, seconds spent)``."""
    z = jax.random.normal(key, (cfg.gen_monitor_samples, 2))
    generate = jax.jit(generator_fn)
    spent = [0.0]

    def callback(state, record):
        step = record["step"]
        if not cfg.gen_monitor_every or (step % cfg.gen_monitor_every >= cfg.steps_per_call and step != cfg.gen_iters):
            return
        t0 = time.perf_counter()
        samples = np.asarray(generate(state.gen.params, z))
        if np.all(np.isfinite(samples)):
            sk = metrics.sample_kl(samples, ctx["log_true"], cfg.sigma, ctx["grid"], n_boot=2, key=key)
            entry = {"step": step, "sample_kl": float(sk["kl"]), "sample_kl_reverse": float(sk["kl_reverse"]),
                     "run": f"{name}/monitor"}
            if log_path:
                with open(log_path, "a") as f:
                    f.write(json.dumps(entry) + "\n")
        spent[0] += time.perf_counter() - t0

    return callback, spent


def run_dde_generator(cfg, toy, key, ctx, run):
    energy = _energy(cfg)
    energy_fn = dj.energy_fn_of(energy)
    gen = dj.ResidualMLPGenerator(cfg.gen_depth, cfg.gen_width, _gen_activation(cfg, toy.name), cfg.weight_init)
    generator_fn = gen.apply
    k_g, k_p, k_q, k_state, k_eval, k_monitor = jax.random.split(key, 6)
    latent_fn = lambda k: jax.random.normal(k, (cfg.gen_batch_size, 2))  # noqa: E731
    data_fn = lambda k: toy.sample(k, cfg.gen_batch_size)  # noqa: E731
    p_params = ctx["dde_params"] if cfg.gen_p_pretrained else dj.init_params(energy, k_p, (2,))
    q_params = p_params if cfg.gen_q_init == "copy_p" else dj.init_params(energy, k_q, (2,))
    # One optimiser for E_p and E_q (lockstep: trained alike); G's differs only in β1 if asked.
    decay = dict(final_lr=cfg.final_lr) if cfg.gen_lr_decay else {}
    gen_opt = dj.adam(cfg.gen_lr, b1=cfg.gen_b1, total_steps=max(1, cfg.gen_iters // cfg.gen_every) if decay else None, **decay)
    energy_opt = dj.adam(cfg.lr, total_steps=cfg.gen_iters if decay else None, **decay)
    state = dj.init_dde_state(dj.init_params(gen, k_g, (2,)), p_params, q_params, gen_opt, energy_opt, k_state)
    sigma = cfg.sigma
    if cfg.gen_anneal_sigma:
        sigma = dj.geometric_sigma_schedule(cfg.gen_sigma_start, cfg.sigma,
                                            max(1, int(cfg.gen_anneal_frac * cfg.gen_iters)))
    t0 = time.perf_counter()
    # The warm-up leaves state.step at 0, so it is not checkpointed; a resumed run restores
    # the main loop's checkpoint instead (which already holds the warmed-up E_q).
    if cfg.q_warmup_steps and training.latest_step(run["checkpoint_dir"]) is None:
        warmup = dj.make_q_warmup_step(energy_fn, generator_fn, cfg.gen_sigma_start if cfg.gen_anneal_sigma
                                       else cfg.sigma, latent_fn, energy_opt)
        state, _ = dj.fit(warmup, state, cfg.q_warmup_steps, steps_per_call=cfg.steps_per_call,
                          desc=f"{toy.name}/E_q warm-up", progress=run["progress"],
                          compiler_options=run["compiler_options"])
    step = dj.make_dde_step(energy_fn, generator_fn, sigma, latent_fn, gen_opt, energy_opt,
                            gen_every=cfg.gen_every, data_fn=data_fn)
    if cfg.skip_nonfinite:
        step = dj.skip_nonfinite_steps(step)
    monitor, monitor_s = _generator_monitor(cfg, generator_fn, k_monitor, ctx, run["log_path"],
                                            f"{toy.name}/dde-generator")
    state, history = dj.fit(step, state, cfg.gen_iters, steps_per_call=cfg.steps_per_call,
                            desc=f"{toy.name}/dde-generator", callback=monitor, **run)
    seconds = time.perf_counter() - t0 - monitor_s[0]
    t1 = time.perf_counter()
    samples = np.asarray(jax.jit(generator_fn)(state.gen.params, jax.random.normal(k_eval, (cfg.n_samples, 2))))
    sample_s = time.perf_counter() - t1
    result = _sample_metrics(cfg, toy, samples, ctx, seconds, cfg.gen_iters, generator_updates=int(state.gen_updates),
                             p_init="dde" if cfg.gen_p_pretrained else "scratch", sample_seconds=sample_s,
                             monitor_seconds=monitor_s[0])
    return result, {"samples": samples}, history


def likelihood_table(results: dict, toy_names) -> str:
    """Test log-likelihood (nats) of the DDE density: AIS vs grid vs the exact p̂_σ."""
    lines = ["| toy | log Z (AIS) | log Z (grid) | test LL, AIS | test LL, grid | exact p̂_σ |", "|---" * 6 + "|"]
    for t in toy_names:
        r = results.get(f"{t}/dde")
        if r is None or "test_ll_ais" not in r:
            continue
        lines.append(
            f"| {t} | {r['log_z_ais']:.4f} ± {r['log_z_ais_stderr']:.4f} | {r['log_z_grid']:.4f} | "
            f"{r['test_ll_ais']:.4f} ± {r['test_ll_ais_stderr']:.4f} | "
            f"{r['test_ll_grid']:.4f} ± {r['test_ll_grid_stderr']:.4f} | {r['test_ll_true']:.4f} |"
        )
    return "\n".join(lines)


def markdown_table(results: dict, toy_names, methods) -> str:
    """The README's results table: KL ± stderr (and the finite-sample floor for sample KLs)."""
    kinds = {"dde": "dde: density KL(p̂‖p_model)", "dde-generator": "dde-generator: sample KL",
             "mdsm": "mdsm: sample KL"}
    lines = ["| toy | " + " | ".join(kinds.get(m, m) for m in methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for t in toy_names:
        cells = []
        for m in methods:
            r = results.get(f"{t}/{m}")
            if r is None:
                cells.append("–")
                continue
            floor = f" (floor {r['kl_floor']:.4f})" if "kl_floor" in r else ""
            cells.append(f"{r['kl']:.4f} ± {r['kl_stderr']:.4f}{floor}, {r['seconds']:.0f} s")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def loss_figure(out, toy_name, methods) -> None:
    """``<out>/<toy>_loss.png`` from the run's log (not one call's history: a resumed run only
    ran its tail): each method's loss; for the generator E_p's and E_q's DSM losses (trained
    alike, they track each other), the surrogate, and the monitored sample KL."""
    log_path = os.path.join(out, "metrics.jsonl")
    curves, series = {}, {}
    for method in methods:
        name = f"{toy_name}/{method}"
        if method != "dde-generator":
            curves[method] = training.read_log(log_path, run=name)
            continue
        curves["E_p, E_q"] = curves["surrogate"] = training.read_log(log_path, run=name)
        series["E_p, E_q"] = {"E_p DSM loss": "p_loss", "E_q DSM loss": "q_loss"}
        series["surrogate"] = {"surrogate E_p − E_q": "gen_loss"}
        curves["G sample KL"] = training.read_log(log_path, run=f"{name}/monitor")
        series["G sample KL"] = {"KL(p̂‖q̂)": "sample_kl", "KL(q̂‖p̂)": "sample_kl_reverse"}
    plotting.loss_curves(os.path.join(out, f"{toy_name}_loss.png"), curves, toy_name, series)


def sampler_table(results: dict, toy_names) -> str:
    """Generator vs MDSM's sampler on each toy: both KLs, mode coverage, and the cost."""
    lines = ["| toy | method | KL(p̂‖q̂) | KL(q̂‖p̂) | floor | mode weights (min–max, 1 = uniform) | "
             "off support | train s | sampling s |", "|---" * 9 + "|"]
    for t in toy_names:
        for m in ("dde-generator", "mdsm"):
            r = results.get(f"{t}/{m}")
            if r is None:
                continue
            train_s = r.get("train_seconds", r["seconds"])
            lines.append(f"| {t} | {m} | {r['kl']:.4f} ± {r['kl_stderr']:.4f} | {r['kl_reverse']:.4f} | "
                         f"{r['kl_floor']:.4f} | {r['mode_weight_min']:.2f}–{r['mode_weight_max']:.2f} | "
                         f"{r['off_support']:.4f} | {train_s:.0f} | {r['sample_seconds']:.2f} |")
    return "\n".join(lines)


RUNNERS = {"dde": run_dde, "dde-generator": run_dde_generator, "mdsm": run_mdsm}


def main(argv=None):
    parallel.maybe_initialize_distributed()  # multi-host launches only; before any JAX computation
    cfg, args = cfgs.parse_args(ToyConfig(), PRESETS, __doc__.splitlines()[0], argv)  # validates cfg
    # Training (fit) and the MDSM chains run data-parallel over all devices: batches must split evenly.
    parallel.check_batches({"batch_size": cfg.batch_size, "gen_batch_size": cfg.gen_batch_size,
                            "n_samples": cfg.n_samples})
    out = args.out or os.path.join("runs", f"toy2d-{args.preset}")
    resuming = os.path.isdir(os.path.join(out, "checkpoints"))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"preset": args.preset, **cfgs.to_dict(cfg)}, f, indent=2)
    log_path = os.path.join(out, "metrics.jsonl")
    if not resuming:  # a resumed run keeps the curves of the steps it does not redo
        open(log_path, "w").close()
    results, key = {}, jax.random.PRNGKey(cfg.seed)
    for toy_name in cfg.toys:
        toy = toys.get_toy(toy_name)
        key, k_eval, k_floor = jax.random.split(key, 3)
        grid = metrics.make_grid(toy.bounds, cfg.grid_n)
        ctx = {
            "grid": grid,
            "norm_grid": metrics.make_grid(tuple(2.0 * b for b in toy.bounds), 2 * cfg.grid_n),
            "log_true": lambda x, toy=toy: toy.log_density(x, cfg.sigma),
            "x_eval": toys.sample_smoothed(toy, k_eval, cfg.n_eval, cfg.sigma),
            "floor": float(metrics.kl_floor(toy, k_floor, cfg.n_samples, cfg.sigma, grid)["kl"]),
        }
        panels = {}
        for method in cfg.methods:
            key, k_run = jax.random.split(key)
            name = f"{toy_name}/{method}"
            run = {"progress": not args.no_progress, "log_path": log_path, "log_extra": {"run": name},
                   "checkpoint_dir": os.path.join(out, "checkpoints", toy_name, method),
                   "checkpoint_every": cfg.checkpoint_every, "keep_checkpoints": cfg.keep_checkpoints,
                   "fingerprint": {**cfgs.fingerprint(cfg, RESUME_IGNORED), "run": name},
                   "compiler_options": dj.compiler_options(cfg.ynn_fusions)}
            result, panel, _ = RUNNERS[method](cfg, toy, k_run, ctx, run)
            results[name] = result
            panels[method] = panel
            print(f"{toy_name}/{method}: KL {result['kl']:.4f} ± {result['kl_stderr']:.4f} "
                  f"({result['seconds']:.0f} s)", flush=True)
            with open(os.path.join(out, "metrics.json"), "w") as f:
                json.dump(results, f, indent=2)
        plotting.toy_figure(os.path.join(out, f"{toy_name}.png"), toy, cfg.sigma, grid, panels, results, toy_name)
        loss_figure(out, toy_name, cfg.methods)
    print(markdown_table(results, cfg.toys, cfg.methods))
    print(sampler_table(results, cfg.toys))
    print(likelihood_table(results, cfg.toys))
    print(f"wrote {out}/metrics.json")
    return results


if __name__ == "__main__":
    main()
