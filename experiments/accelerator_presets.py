"""The accelerator check's preset parts (``experiments.accelerator_parts``): ``warm + timed``
steps of each paper preset through its experiment's own ``train`` on synthetic data of its
image shape, steps/s extrapolated to the preset's step count."""
from __future__ import annotations

import os
import tempfile

import numpy as np

# Small networks and batches for the dry run, as config changes; the GPU run keeps the presets.
DRY_CHANGES = {
    "fashion_mnist": {"model.width": 4, "model.n_stages": 1, "model.blocks_per_stage": 1, "train.batch_size": 8},
    "fashion_mnist_dde": {"model.depth": 2, "model.growth": 8, "gen.depth": 2, "gen.growth": 8,
                          "train.batch_size": 8},
    "toy2d": {"model.depth": 2, "model.width": 8, "gen.depth": 2, "gen.width": 8, "train.batch_size": 64,
              "gen.batch_size": 64},
}


def _preset(module_name: str, base, presets: dict, name: str, sizes, changes: dict):
    """``(cfg, preset_steps_source)``: preset ``name`` with ``changes`` (and the dry run's
    small networks); raises when the preset does not exist."""
    from dsm_jax import config as cfgs

    if name not in presets:
        raise LookupError(f"preset not available: experiments.configs.{module_name}.PRESETS has no {name!r} "
                          f"(it has {sorted(presets)})")
    cfg = cfgs.with_preset(base, presets, name)
    dry = DRY_CHANGES[module_name] if sizes["dry"] else {}
    cfg = cfgs.replace(cfg, {**dry, **changes})
    cfg.validate()
    return cfg


def _rate(history: list[dict], warm: int) -> dict:
    """steps/s over the chunks after the first (which compiled), from fit's per-chunk records."""
    timed = history[1:]
    seconds = sum((h["step"] - p["step"]) / h["steps_per_s"] for p, h in zip(history, timed))
    steps = history[-1]["step"] - history[0]["step"]
    return {"first_chunk_s": warm / history[0]["steps_per_s"], "timed_steps": steps, "timed_s": seconds,
            "steps_per_s": steps / seconds}


def _extrapolate(rate: dict, paper_steps: int) -> dict:
    return dict(rate, paper_steps=paper_steps, paper_hours=paper_steps / rate["steps_per_s"] / 3600.0)


def _image_shape(cfg) -> tuple:
    """The experiment's input shape for ``cfg``'s data set (known sets need no data files)."""
    from experiments import common

    return tuple(common.image_shape(cfg.data))


def _synthetic_images(shape, n: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(0.0, 1.0, (n, *shape)).astype(np.float32)


def _mdsm(sizes, preset: str) -> dict:
    from experiments import fashion_mnist
    from experiments.configs import fashion_mnist as configs

    w = sizes["warm"]
    base = fashion_mnist.FashionConfig()
    paper = _preset("fashion_mnist", base, configs.PRESETS, preset, sizes, {})
    cfg = _preset("fashion_mnist", base, configs.PRESETS, preset, sizes,
                  {"train.steps": w + sizes["timed"], "train.steps_per_call": w})
    shape = _image_shape(cfg)
    if preset == "cifar10" and not sizes["train_cifar10"]:
        return {"image_shape": list(shape), "paper_steps": paper.train.steps, "trained": False,
                "summary": f"preset found ({paper.train.steps:,} steps, images {shape}); not trained in the dry run"}
    x = _synthetic_images(shape, max(sizes["synthetic_n"], cfg.train.batch_size))
    with tempfile.TemporaryDirectory() as out:
        _, history, _ = fashion_mnist.train(cfg, x, out, False)
    rate = _extrapolate(_rate(history, w), paper.train.steps)
    return dict(rate, image_shape=list(shape), batch_size=cfg.train.batch_size, width=cfg.model.width,
                blocks_per_stage=cfg.model.blocks_per_stage, final_loss=history[-1].get("loss"),
                summary=_rate_summary(rate))


def mdsm_fashion_mnist(sizes) -> dict:
    return _mdsm(sizes, "paper")


def mdsm_cifar10(sizes) -> dict:
    return _mdsm(sizes, "cifar10")


def dde_fashion_mnist(sizes) -> dict:
    from experiments import fashion_mnist_dde
    from experiments.configs import fashion_mnist_dde as configs

    w = sizes["warm"]
    base = fashion_mnist_dde.DDEFashionConfig()
    paper = _preset("fashion_mnist_dde", base, configs.PRESETS, "paper", sizes, {})
    cfg = _preset("fashion_mnist_dde", base, configs.PRESETS, "paper", sizes,
                  {"train.steps": w + sizes["timed"], "train.steps_per_call": w})
    x = _synthetic_images(_image_shape(cfg), max(sizes["synthetic_n"], cfg.train.batch_size))
    with tempfile.TemporaryDirectory() as out:
        _, history, _ = fashion_mnist_dde.train(cfg, x, out, False)
    rate = _extrapolate(_rate(history, w), paper.train.steps)
    return dict(rate, batch_size=cfg.train.batch_size, final_gen_loss=history[-1].get("gen_loss"),
                summary=_rate_summary(rate))


def toy2d(sizes) -> dict:
    """The toy2d paper preset on eight_gaussians: the DSM density (dde), MDSM and the DDE generator."""
    import jax

    import dsm_jax as dj
    from dsm_jax import parallel, toy as toys
    from experiments import toy2d as experiment
    from experiments.configs import toy2d as configs

    w, n = sizes["warm"], sizes["warm"] + sizes["timed"]
    base = experiment.ToyConfig()
    paper = _preset("toy2d", base, configs.PRESETS, "paper", sizes, {})
    e = sizes["toy_eval"]
    cfg = _preset("toy2d", base, configs.PRESETS, "paper", sizes, {
        "train.steps_per_call": w, "dde.steps": n, "mdsm.steps": n, "gen.iters": n, "gen.monitor_every": None,
        "eval.n_samples": e, "eval.n_eval": e, "eval.grid_n": 64, "toys": ("eight_gaussians",)})
    toy = toys.get_toy("eight_gaussians")
    energy_fn = dj.energy_fn_of(experiment._energy(cfg))
    data_fn = lambda k: toy.sample(k, cfg.train.batch_size)  # noqa: E731
    m = cfg.mdsm
    losses = {"dde": dj.dsm_loss(energy_fn, cfg.sigma), "mdsm": dj.mdsm_loss(energy_fn, m.sigma_min, m.sigma_max, m.sigma0)}
    paper_steps = {"dde": paper.dde.steps, "mdsm": paper.mdsm.steps, "dde-generator": paper.gen.iters}
    runs, mesh = {}, parallel.resolve_mesh("auto")
    with tempfile.TemporaryDirectory() as out:
        def run(name):
            return experiment.fit_options(cfg, out, name, os.path.join(out, "metrics.jsonl"), False, mesh)

        for i, (name, loss) in enumerate((k, v) for k, v in losses.items() if k in sizes["toy_methods"]):
            _, history, _ = experiment.train_energy(cfg, loss, data_fn, jax.random.key(i), n, name, run(name))
            runs[name] = _extrapolate(_rate(history, w), paper_steps[name])
        ctx = experiment.toy_context(cfg, toy, jax.random.key(10), jax.random.key(11))
        history = experiment.run_dde_generator(cfg, toy, jax.random.key(12), ctx, run("dde-generator"))[2]
        runs["dde-generator"] = _extrapolate(_rate(history, w), paper_steps["dde-generator"])
    hours = sum(r["paper_hours"] for r in runs.values())
    return {"runs": runs, "paper_hours": hours, "batch_size": cfg.train.batch_size,
            "summary": "; ".join(f"{k} {_rate_summary(r)}" for k, r in runs.items())}


def _rate_summary(rate: dict) -> str:
    return (f"{rate['steps_per_s']:,.1f} steps/s -> {rate['paper_steps']:,} steps in "
            f"{rate['paper_hours']:.2f} h")
