"""2-D reproduction of DDE and MDSM on toys with exact smoothed densities.

For every toy × method, train, evaluate with exact metrics and write to ``--out``:
``metrics.json`` ("<toy>/<method>" → kl, kl_stderr, steps, seconds, ...), ``metrics.jsonl``
(training curves), and PNG figures (densities, samples, loss curves).

Methods:
  dde            E by ``dsm_loss`` at σ; metric: density KL(p̂_σ ‖ exp(−E)/Z), Z on a grid.
  dde-generator  E_p (warm-started from the ``dde`` run when it ran), E_q warm-started on
                 generator samples, G = MLP(z) + z trained on the KL surrogate; metric:
                 sample KL of G(z).
  mdsm           E by ``mdsm_loss``; samples by annealed Langevin + one denoise; metric:
                 sample KL.

    python experiments/toy2d.py                   # default CPU preset (~14 min on 2 cores)
    python experiments/toy2d.py --preset smoke    # whole grid in < 3 min
    python experiments/toy2d.py --preset paper    # DDE paper settings (GPU)
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
from dsm_jax import metrics, parallel, plotting, training, toy as toys  # noqa: E402

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
    # XLA:CPU's YNNPACK fusions (dsm_jax.compiler_options): no effect on 4 x 128 MLPs; off makes
    # the 25 x 32 MLP's DSM step 1.5x faster (preset "paper"). Only float rounding changes.
    ynn_fusions: bool = True
    batch_size: int = 1024
    lr: float = 1e-3
    final_lr: float = 1e-5
    steps_per_call: int = 200
    # dde density
    dde_steps: int = 3000
    # dde generator (E_p warm-started from the dde run, E_q warm-started, σ annealed)
    gen_iters: int = 8000
    gen_every: int = 10
    gen_lr: float = 1e-3
    gen_batch_size: int = 1024
    q_warmup_steps: int = 500
    gen_sigma_start: float = 1.0   # σ annealing: start large, reach `sigma` at gen_anneal_frac
    gen_anneal_frac: float = 0.5
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
                          "n_eval", "grid_n", "ais_chains", "ais_temps", "keep_checkpoints"),
            nonnegative_int=("seed", "q_warmup_steps", "n_constant", "n_exponential", "n_linear",
                             "checkpoint_every"),
            positive=("sigma", "lr", "final_lr", "gen_lr", "gen_sigma_start", "sigma_min", "sigma_max", "sigma0",
                      "sampler_step_size", "t_high", "init_scale"),
            unit_interval=("gen_anneal_frac",),
            ordered=(("sigma_min", "sigma_max"),),
            subsets={"toys": toys.TOY_NAMES, "methods": METHODS},
        )
        if self.n_constant + self.n_exponential + self.n_linear < 1:
            raise ValueError("The MDSM sampler has no steps: set one of n_constant, n_exponential, n_linear "
                             "> 0 (e.g. --set n_exponential=1000).")


# Fields that do not change a training run (evaluation, sampling, bookkeeping): a checkpoint
# written under other values of these still resumes; any other change is refused.
RESUME_IGNORED = ("toys", "methods", "n_samples", "n_eval", "grid_n", "ais_chains", "ais_temps", "steps_per_call",
                  "ynn_fusions", "checkpoint_every", "keep_checkpoints", "skip_nonfinite", "sampler_step_size",
                  "n_constant", "n_exponential", "n_linear", "t_high", "init_scale")


PRESETS = {
    "default": {},
    "smoke": dict(
        depth=3, width=32, gen_depth=3, gen_width=32, batch_size=256, gen_batch_size=256,
        dde_steps=200, gen_iters=200, q_warmup_steps=50, mdsm_steps=200, steps_per_call=50,
        n_constant=20, n_exponential=80, n_samples=1000, n_eval=2000, grid_n=64,
        ais_chains=128, ais_temps=32, checkpoint_every=100, ynn_fusions=False,
    ),
    "paper": dict(
        depth=25, width=32, gen_depth=25, gen_width=32, batch_size=2048, gen_batch_size=2048,
        gen_every=10, dde_steps=100_000, gen_iters=100_000, mdsm_steps=100_000, q_warmup_steps=2000,
        gen_lr=1e-3, n_constant=500, n_exponential=2000, steps_per_call=1000, ynn_fusions=False,
        n_samples=20000, n_eval=100000, grid_n=300, checkpoint_every=10_000,
    ),
}


def _energy(cfg):
    return dj.MLPEnergy(cfg.depth, cfg.width, cfg.activation)


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


def _sample_metrics(cfg, samples, ctx, seconds, steps, **extra):
    if not np.all(np.isfinite(np.asarray(samples))):
        bad = int(np.sum(~np.all(np.isfinite(np.asarray(samples)), axis=1)))
        raise FloatingPointError(f"{bad} of {len(samples)} samples are non-finite; lower the step size.")
    sk = metrics.sample_kl(samples, ctx["log_true"], cfg.sigma, ctx["grid"])
    return {
        "kl": float(sk["kl"]), "kl_stderr": float(sk["kl_stderr"]),
        "kl_reverse": float(sk["kl_reverse"]), "kl_reverse_stderr": float(sk["kl_reverse_stderr"]),
        "kl_floor": ctx["floor"], "steps": steps, "seconds": seconds, **extra,
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
    result = _sample_metrics(cfg, samples, ctx, train_s + sample_s, cfg.mdsm_steps,
                             train_seconds=train_s, sample_seconds=sample_s, sampler_steps=int(temps.shape[0]))
    return result, {"samples": samples}, history


def run_dde_generator(cfg, toy, key, ctx, run):
    energy_fn = dj.energy_fn_of(_energy(cfg))
    gen = dj.ResidualMLPGenerator(cfg.gen_depth, cfg.gen_width, cfg.activation)
    generator_fn = gen.apply
    k_g, k_p, k_q, k_state, k_eval = jax.random.split(key, 5)
    latent_fn = lambda k: jax.random.normal(k, (cfg.gen_batch_size, 2))  # noqa: E731
    data_fn = lambda k: toy.sample(k, cfg.gen_batch_size)  # noqa: E731
    p_init = "dde" if "dde_params" in ctx else "scratch"
    p_params = ctx["dde_params"] if p_init == "dde" else dj.init_params(_energy(cfg), k_p, (2,))
    gen_opt = dj.adam(cfg.gen_lr, b1=0.5)
    energy_opt = dj.adam(cfg.lr)
    state = dj.init_dde_state(dj.init_params(gen, k_g, (2,)), p_params, dj.init_params(_energy(cfg), k_q, (2,)),
                              gen_opt, energy_opt, k_state)
    t0 = time.perf_counter()
    sigma_schedule = dj.geometric_sigma_schedule(
        cfg.gen_sigma_start, cfg.sigma, max(1, int(cfg.gen_anneal_frac * cfg.gen_iters)))
    # The warm-up leaves state.step at 0, so it is not checkpointed; a resumed run restores
    # the main loop's checkpoint instead (which already holds the warmed-up E_q).
    if cfg.q_warmup_steps and training.latest_step(run["checkpoint_dir"]) is None:
        warmup = dj.make_q_warmup_step(energy_fn, generator_fn, cfg.gen_sigma_start, latent_fn, energy_opt)
        state, _ = dj.fit(warmup, state, cfg.q_warmup_steps, steps_per_call=cfg.steps_per_call,
                          desc=f"{toy.name}/E_q warm-up", progress=run["progress"],
                          compiler_options=run["compiler_options"])
    step = dj.make_dde_step(energy_fn, generator_fn, sigma_schedule, latent_fn, gen_opt, energy_opt,
                            gen_every=cfg.gen_every, data_fn=data_fn)
    if cfg.skip_nonfinite:
        step = dj.skip_nonfinite_steps(step)
    state, history = dj.fit(step, state, cfg.gen_iters, steps_per_call=cfg.steps_per_call,
                            desc=f"{toy.name}/dde-generator", **run)
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    samples = np.asarray(jax.jit(generator_fn)(state.gen.params, jax.random.normal(k_eval, (cfg.n_samples, 2))))
    sample_s = time.perf_counter() - t1
    result = _sample_metrics(cfg, samples, ctx, seconds, cfg.gen_iters, generator_updates=int(state.gen_updates),
                             p_init=p_init, sample_seconds=sample_s)
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
        panels, curves = {}, {}
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
            # Curves from the log, not this call's history: a resumed run only ran its tail.
            curves[method] = [{**h, "loss": h.get("loss", h.get("gen_loss"))}
                              for h in training.read_log(log_path, run=name)]
            panels[method] = panel
            print(f"{toy_name}/{method}: KL {result['kl']:.4f} ± {result['kl_stderr']:.4f} "
                  f"({result['seconds']:.0f} s)", flush=True)
            with open(os.path.join(out, "metrics.json"), "w") as f:
                json.dump(results, f, indent=2)
        plotting.toy_figure(os.path.join(out, f"{toy_name}.png"), toy, cfg.sigma, grid, panels, results, toy_name)
        plotting.loss_curves(os.path.join(out, f"{toy_name}_loss.png"), curves, toy_name)
    print(markdown_table(results, cfg.toys, cfg.methods))
    print(likelihood_table(results, cfg.toys))
    print(f"wrote {out}/metrics.json")
    return results


if __name__ == "__main__":
    main()
