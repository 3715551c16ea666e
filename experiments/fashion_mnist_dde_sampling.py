"""fashion_mnist_dde's samplers: the generator (one forward pass, timed) and the DDE density
E_p sampled by Langevin + one Tweedie denoise, with its scored record."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

import dsm_jax as dj
from dsm_jax import parallel, plotting
from experiments import common
from experiments.fashion_mnist_dde_nets import energy_module, latent_sampler, model_shape, to_data_images

# what image_metrics.fd_report(..., test_labels=...) adds: the classifier's class split of the samples
CLASS_FIELDS = ("class_histogram", "class_kl", "classes_under", "class_min", "min_fraction")


def generate_samples(cfg, generator_fn, gen_params, key, n: int, timed_n: int = 1000, repeats: int = 3):
    """``n`` generator samples (one forward pass), and the wall-clock seconds to produce
    ``timed_n`` = 1,000 (:func:`common.time_calls`: the median of ``repeats`` calls after a
    compiling one)."""
    generate = jax.jit(generator_fn)
    k_samples, k_timed = jax.random.split(key)
    samples = np.asarray(generate(gen_params, latent_sampler(cfg, n)(k_samples)))
    z = latent_sampler(cfg, timed_n)(k_timed)
    _, seconds = common.time_calls({"generator": lambda: generate(gen_params, z)}, repeats)["generator"]
    return samples, seconds * 1000.0 / timed_n


def density_temperatures(cfg):
    """T: ``density.n_constant`` steps at ``density.t_high``, ``density.n_exponential`` steps
    decaying geometrically to exactly 1 (T = t_high^(1 − k/n), k = 1 … n), then ``density.n_final``
    steps at T = 1. Not MDSM's indexing (:func:`dj.mdsm_temperature_schedule` stops one step above
    its t_low): this chain samples E_p itself at T = 1 before the Tweedie step."""
    d = cfg.density
    frac = jnp.arange(1, d.n_exponential + 1, dtype=jnp.float32) / max(d.n_exponential, 1)
    return jnp.concatenate([jnp.full((d.n_constant,), d.t_high, jnp.float32), d.t_high * (1.0 / d.t_high) ** frac,
                            jnp.ones((d.n_final,), jnp.float32)])


def make_density_sampler(cfg, energy_fn, mesh=None):
    """``sample_fn(params, key, x0) -> (x, StepInfo)``, jitted: a Langevin chain on E_p (the DDE
    density of the σ-smoothed data) and one Tweedie denoise x − σ²∇E_p(x) of its noisy samples;
    with ``mesh="auto"`` the chains are split over all devices (:func:`parallel.shard_chains`)."""
    temps = density_temperatures(cfg)
    if temps.shape[0] == 0:
        raise ValueError("The density sampler has no steps: make one of density.n_constant, "
                         "density.n_exponential, density.n_final > 0.")
    chain = dj.langevin_with_info(energy_fn, cfg.density.step_size, int(temps.shape[0]), temps)
    denoise = dj.denoiser(energy_fn, cfg.train.sigma)

    def sample_fn(params, key, x0):
        x, info = chain(params, key, x0)
        return denoise(params, x), info

    options = dj.compiler_options(cfg.train.ynn_fusions)
    return parallel.shard_chains(sample_fn, mesh, compiler_options=options), int(temps.shape[0])


def density_samples(cfg, energy_fn, p_params, key, progress):
    """E_p's Langevin + Tweedie samples and the seconds per 1,000 (after a compiling chunk)."""
    d = cfg.density
    sampler, n_steps = make_density_sampler(cfg, energy_fn, mesh="auto")  # plain jit on one device
    init = lambda k, m: d.init_mean + d.init_std * jax.random.normal(k, (m, *model_shape(cfg)))  # noqa: E731
    chunk = min(d.chunk, d.n_samples)
    out = {}

    def run():
        out["samples"], out["info"] = dj.sample_in_chunks(sampler, p_params, key, init, d.n_samples, chunk,
                                                          with_info=True, progress=progress, desc="E_p Langevin")
        return out["samples"]

    _, seconds = common.time_calls({"density": run}, 1, warmup={"density": lambda: sampler(p_params, key,
                                                                                          init(key, chunk))})["density"]
    if out["info"]["n_nonfinite"]:
        raise FloatingPointError(
            f"{out['info']['n_nonfinite']} of {d.n_samples} Langevin chains on E_p went non-finite (first at "
            f"step {out['info']['first_nonfinite_step']}); lower `density.step_size` or `density.t_high`.")
    return out["samples"], seconds * 1000.0 / d.n_samples, n_steps


def score_density(cfg, images, p_params, key, k_fd, progress, out):
    """The DDE-density variant's samples, figure and report (the ``dde_density`` record)."""
    energy_fn = dj.energy_fn_of(energy_module(cfg))
    samples, s_per_1k, steps = density_samples(cfg, energy_fn, p_params, key, progress)
    samples = to_data_images(cfg, samples)
    plotting.image_grid(os.path.join(out, "density_samples.png"), samples[:100], n_cols=10,
                        title=f"DDE density E_p: {steps} Langevin steps + Tweedie denoise (σ = {cfg.train.sigma})")
    fd = images.score(samples, k_fd)
    return samples, {
        "fd": fd["fd"], "fd_floor": fd["fd_floor"], "n": fd["n"],
        "inception_score": fd["inception_score"], "inception_score_std": fd["inception_score_std"],
        **{k: fd[k] for k in CLASS_FIELDS},
        "sample_seconds_per_1k": s_per_1k, "sampler_steps": steps, "step_size": cfg.density.step_size,
        "pixel_std_across_samples": float(np.mean(np.std(samples, axis=0))),
        "n_samples": cfg.density.n_samples, "denoise": f"Tweedie at sigma={cfg.train.sigma}",
    }
