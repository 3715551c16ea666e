"""2-D reproduction of DDE and MDSM on toys with exact smoothed densities.

For every toy × method, train, evaluate with exact metrics and write to ``--out``:
``metrics.json`` ("<toy>/<method>" → kl, kl_stderr, steps, seconds, ...), ``metrics.jsonl``
(training curves), and PNG figures (densities, samples, loss curves).

Methods:
  dde            E by ``dsm_loss`` at σ; metric: density KL(p̂_σ ‖ exp(−E)/Z), Z on a grid.
  dde-generator  the DDE code's lockstep recipe: E_p (real data) and E_q (fresh generator
                 samples) from random weights, one DSM step each per iteration, G = MLP(z) + z
                 a step on the KL surrogate every ``gen.every``; metric: sample KL of G(z).
  mdsm           E by ``mdsm_loss``; samples by annealed Langevin + one denoise; metric:
                 sample KL.

Every sample KL comes with mode coverage (``dsm_jax.coverage.toy_coverage``: the share of
samples per mixture component and the fraction off the data's support) and KL(q̂‖p̂).
The config (groups model, train, dde, gen, mdsm, sampler, eval) is in
``experiments/configs/toy2d.py``.

    python -m experiments.toy2d                   # default CPU preset (~28 min on 2 cores)
    python -m experiments.toy2d --preset smoke    # whole grid in < 3 min
    python -m experiments.toy2d --preset paper    # the DDE code's toy settings (GPU)
    python -m experiments.toy2d --set toys=rings --set gen.iters=4000
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import dsm_jax as dj
from dsm_jax import config as cfgs
from dsm_jax import checkpoint, coverage, metrics, parallel, plotting, toy as toys
from experiments import common
from experiments.configs.toy2d import METHODS, PRESETS, ToyConfig
from experiments.toy2d_report import likelihood_table, loss_figure, markdown_table, sampler_table

__all__ = ["METHODS", "PRESETS", "ToyConfig", "main", "likelihood_table", "markdown_table", "sampler_table"]
RESUME_IGNORED = cfgs.resume_ignored(ToyConfig)  # deprecated: read the `resume` field metadata instead


def _energy(cfg):
    m = cfg.model
    return dj.MLPEnergy(m.depth, m.width, m.activation, m.weight_init)


def train_energy(cfg, loss_fn, data_fn, key, n_steps, desc, run):
    module = _energy(cfg)
    k_init, k_train = jax.random.split(key)
    opt = dj.adam(cfg.train.lr, total_steps=n_steps, final_lr=cfg.train.final_lr)
    state = dj.init_train_state(dj.init_params(module, k_init, (2,)), opt, k_train)
    step = dj.make_train_step(loss_fn, opt, data_fn, skip_nonfinite=cfg.train.skip_nonfinite, mesh=run["mesh"])
    t0 = time.perf_counter()
    state, history = dj.fit(step, state, n_steps, steps_per_call=cfg.train.steps_per_call, desc=desc, **run)
    return state.params, history, time.perf_counter() - t0


def run_dde(cfg, toy, key, ctx, run):
    energy_fn = dj.energy_fn_of(_energy(cfg))
    data_fn = lambda k: toy.sample(k, cfg.train.batch_size)  # noqa: E731
    params, history, seconds = train_energy(
        cfg, dj.dsm_loss(energy_fn, cfg.sigma), data_fn, key, cfg.dde.steps, f"{toy.name}/dde", run)
    # Normalise on a grid twice as wide as the plotting bounds: a learned energy can put mass
    # where the data has none, and Z missing that mass would make the KL look better than it is.
    log_z_wide = metrics.grid_log_normalizer(energy_fn, params, ctx["norm_grid"])
    log_model = lambda x: dj.log_likelihood(energy_fn, params, x, log_z_wide)  # noqa: E731
    kl, se = metrics.density_kl(ctx["log_true"], log_model, ctx["x_eval"])
    log_z_bounds = metrics.grid_log_normalizer(energy_fn, params, ctx["grid"])
    ctx["dde_params"] = params
    result = {"kl": float(kl), "kl_stderr": float(se), "steps": cfg.dde.steps, "seconds": seconds,
              "mass_outside_bounds": float(1.0 - jnp.exp(log_z_bounds - log_z_wide))}
    # Test log-likelihood of the σ-smoothed model: log Z by AIS, cross-checked by the grid,
    # beside the exact p̂_σ's own log-likelihood (the best any model can do on these points).
    x_test = ctx["x_eval"]
    log_z_ais, log_z_se = dj.estimate_log_z(energy_fn, params, jax.random.fold_in(key, 7), (2,), method="ais",
                                            data=x_test, n_chains=cfg.eval.ais_chains, n_temps=cfg.eval.ais_temps)
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
    data_fn = lambda k: toy.sample(k, cfg.train.batch_size)  # noqa: E731
    m, s = cfg.mdsm, cfg.sampler
    loss_fn = dj.mdsm_loss(energy_fn, m.sigma_min, m.sigma_max, m.sigma0)
    params, history, train_s = train_energy(cfg, loss_fn, data_fn, k_train, m.steps, f"{toy.name}/mdsm", run)
    temps = dj.mdsm_temperature_schedule(s.n_constant, s.n_exponential, s.n_linear, s.t_high, 1.0)
    sampler = parallel.shard_chains(  # chains split over all devices (plain jit on one)
        dj.annealed_langevin_with_info(energy_fn, s.step_size, temperatures=temps, sigma0=m.sigma0),
        run["mesh"], compiler_options=run["compiler_options"])
    x0 = s.init_scale * jax.random.normal(k_init, (cfg.eval.n_samples, 2))
    t0 = time.perf_counter()
    samples, info = sampler(params, k_sample, x0)
    samples = np.asarray(samples)
    sample_s = time.perf_counter() - t0
    result = _sample_metrics(cfg, toy, samples, ctx, train_s + sample_s, m.steps,
                             train_seconds=train_s, sample_seconds=sample_s, sampler_steps=int(temps.shape[0]))
    return result, {"samples": samples}, history


def _gen_activation(cfg, toy_name):
    by_toy = dict(item.split(":", 1) for item in cfg.gen.activation_by_toy)
    return by_toy.get(toy_name, cfg.gen.activation)


def _generator_monitor(cfg, generator_fn, key, ctx, log_path, name, start):
    """The sample KL of G on fixed latents every ``gen.monitor_every`` iterations, logged as
    run ``<name>/monitor`` (a :class:`common.Monitor`: its seconds are kept apart)."""
    z = jax.random.normal(key, (cfg.gen.monitor_samples, 2))
    generate = jax.jit(generator_fn)

    def measure(state, step, _seconds):
        samples = np.asarray(generate(state.gen.params, z))
        if not np.all(np.isfinite(samples)):
            return None
        sk = metrics.sample_kl(samples, ctx["log_true"], cfg.sigma, ctx["grid"], n_boot=2, key=key)
        return {"step": step, "sample_kl": float(sk["kl"]), "sample_kl_reverse": float(sk["kl_reverse"]),
                "run": f"{name}/monitor"}

    return common.Monitor(measure, log_path, start)


def run_dde_generator(cfg, toy, key, ctx, run):
    g = cfg.gen
    energy = _energy(cfg)
    energy_fn = dj.energy_fn_of(energy)
    gen = dj.ResidualMLPGenerator(g.depth, g.width, _gen_activation(cfg, toy.name), cfg.model.weight_init)
    generator_fn = gen.apply
    k_g, k_p, k_q, k_state, k_eval, k_monitor = jax.random.split(key, 6)
    latent_fn = lambda k: jax.random.normal(k, (g.batch_size, 2))  # noqa: E731
    data_fn = lambda k: toy.sample(k, g.batch_size)  # noqa: E731
    p_params = ctx["dde_params"] if g.p_pretrained else dj.init_params(energy, k_p, (2,))
    q_params = p_params if g.q_init == "copy_p" else dj.init_params(energy, k_q, (2,))
    # One optimiser for E_p and E_q (lockstep: trained alike); G's differs only in β1 if asked.
    decay = dict(final_lr=cfg.train.final_lr) if g.lr_decay else {}
    gen_opt = dj.adam(g.lr, b1=g.b1, total_steps=max(1, g.iters // g.every) if decay else None, **decay)
    energy_opt = dj.adam(cfg.train.lr, total_steps=g.iters if decay else None, **decay)
    state = dj.init_dde_state(dj.init_params(gen, k_g, (2,)), p_params, q_params, gen_opt, energy_opt, k_state)
    sigma = cfg.sigma
    if g.anneal_sigma:
        sigma = dj.geometric_sigma_schedule(g.sigma_start, cfg.sigma, max(1, int(g.anneal_frac * g.iters)))
    t0 = time.perf_counter()
    # The warm-up leaves state.step at 0, so it is not checkpointed; a resumed run restores
    # the main loop's checkpoint instead (which already holds the warmed-up E_q).
    if g.q_warmup_steps and checkpoint.latest_step(run["checkpoint_dir"]) is None:
        warmup = dj.make_q_warmup_step(energy_fn, generator_fn, g.sigma_start if g.anneal_sigma else cfg.sigma,
                                       latent_fn, energy_opt, mesh=run["mesh"])
        state, _ = dj.fit(warmup, state, g.q_warmup_steps, steps_per_call=cfg.train.steps_per_call,
                          desc=f"{toy.name}/E_q warm-up", progress=run["progress"],
                          compiler_options=run["compiler_options"], mesh=run["mesh"])
    step = dj.make_dde_step(energy_fn, generator_fn, sigma, latent_fn, gen_opt, energy_opt,
                            gen_every=g.every, data_fn=data_fn, mesh=run["mesh"])
    if cfg.train.skip_nonfinite:
        step = dj.skip_nonfinite_steps(step)
    monitor = _generator_monitor(cfg, generator_fn, k_monitor, ctx, run["log_path"], f"{toy.name}/dde-generator", t0)
    state, history = dj.fit(step, state, g.iters, steps_per_call=cfg.train.steps_per_call,
                            desc=f"{toy.name}/dde-generator",
                            callback=dj.Every(g.monitor_every or 0, monitor, at_end=True), **run)
    seconds = monitor.train_seconds()
    t1 = time.perf_counter()
    samples = np.asarray(jax.jit(generator_fn)(state.gen.params, jax.random.normal(k_eval, (cfg.eval.n_samples, 2))))
    sample_s = time.perf_counter() - t1
    result = _sample_metrics(cfg, toy, samples, ctx, seconds, g.iters, generator_updates=int(state.gen_updates),
                             p_init="dde" if g.p_pretrained else "scratch", sample_seconds=sample_s,
                             monitor_seconds=monitor.seconds)
    return result, {"samples": samples}, history


RUNNERS = {"dde": run_dde, "dde-generator": run_dde_generator, "mdsm": run_mdsm}


def toy_context(cfg, toy, k_eval, k_floor):
    """What every method of one toy is scored against: grids, the exact log p̂_σ, evaluation
    points from p̂_σ and the finite-sample floor of the sample KL."""
    grid = metrics.make_grid(toy.bounds, cfg.eval.grid_n)
    return {
        "grid": grid,
        "norm_grid": metrics.make_grid(tuple(2.0 * b for b in toy.bounds), 2 * cfg.eval.grid_n),
        "log_true": lambda x: toy.log_density(x, cfg.sigma),
        "x_eval": toys.sample_smoothed(toy, k_eval, cfg.eval.n_eval, cfg.sigma),
        "floor": float(metrics.kl_floor(toy, k_floor, cfg.eval.n_samples, cfg.sigma, grid)["kl"]),
    }


def fit_options(cfg, out, name, log_path, progress, mesh) -> dict:
    """``fit``'s keyword arguments for the run ``name`` (``"<toy>/<method>"``): the shared log
    (records tagged with ``name``), its own checkpoints under ``<out>/checkpoints/<toy>/<method>``
    and fingerprint, the compile options and the mesh."""
    return {"progress": progress, "log_path": log_path, "log_extra": {"run": name},
            "checkpoint_dir": os.path.join(out, "checkpoints", *name.split("/")),
            "checkpoint_every": cfg.train.checkpoint_every, "keep_checkpoints": cfg.train.keep_checkpoints,
            "fingerprint": {**cfgs.fingerprint(cfg), "run": name},
            "compiler_options": dj.compiler_options(cfg.train.ynn_fusions), "mesh": mesh}


def main(argv=None):
    cfg, args, out = common.start(ToyConfig(), PRESETS, __doc__, argv, script="toy2d")
    # Training (fit) and the MDSM chains run data-parallel over all devices: batches must split evenly.
    parallel.check_batches({"train.batch_size": cfg.train.batch_size, "gen.batch_size": cfg.gen.batch_size,
                            "eval.n_samples": cfg.eval.n_samples})
    log_path = os.path.join(out, "metrics.jsonl")
    if not os.path.isdir(os.path.join(out, "checkpoints")):  # a resumed run keeps the curves it does not redo
        open(log_path, "w").close()
    results, key = {}, jax.random.PRNGKey(cfg.seed)
    mesh = parallel.resolve_mesh("auto")  # one mesh for every step and chain (None on one device)
    for toy_name in cfg.toys:
        toy = toys.get_toy(toy_name)
        key, k_eval, k_floor = jax.random.split(key, 3)
        ctx = toy_context(cfg, toy, k_eval, k_floor)
        panels = {}
        for method in cfg.methods:
            key, k_run = jax.random.split(key)
            name = f"{toy_name}/{method}"
            run = fit_options(cfg, out, name, log_path, not args.no_progress, mesh)
            results[name], panels[method], _ = RUNNERS[method](cfg, toy, k_run, ctx, run)
            print(f"{name}: KL {results[name]['kl']:.4f} ± {results[name]['kl_stderr']:.4f} "
                  f"({results[name]['seconds']:.0f} s)", flush=True)
            common.write_json(os.path.join(out, "metrics.json"), results)
        plotting.toy_figure(os.path.join(out, f"{toy_name}.png"), toy, cfg.sigma, ctx["grid"], panels, results, toy_name)
        loss_figure(out, toy_name, cfg.methods)
    print(markdown_table(results, cfg.toys, cfg.methods))
    print(sampler_table(results, cfg.toys))
    print(likelihood_table(results, cfg.toys))
    print(f"wrote {out}/metrics.json")
    return results


if __name__ == "__main__":
    main()
