"""Fashion-MNIST side by side: MDSM's annealed Langevin sampler, the DDE generator, and the DDE
density E_p sampled by Langevin + Tweedie — quality and the wall-clock to make 1,000 samples.

Quality (FD, Inception-score analogue) comes from each run's ``metrics.json`` (the same classifier
and n are checked); the timings are measured here, in one process, interleaved over ``repeats``
rounds (median; the compiling first call reported apart), so all three see the same machine load.
Writes ``comparison.json`` and ``comparison.md`` to ``--out``.

    python -m experiments.fashion_mnist && python -m experiments.fashion_mnist_dde   # the two runs
    python -m experiments.fashion_mnist_compare          # runs/fashion_mnist_compare-default/
"""
from __future__ import annotations

import dataclasses
import os

import jax

import dsm_jax as dj
from dsm_jax import config as cfgs
from dsm_jax.config import field
from experiments import common
from experiments import fashion_mnist as mdsm_exp
from experiments import fashion_mnist_dde as dde_exp


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    mdsm_run: str = field("runs/fashion_mnist-default")
    dde_run: str = field("runs/fashion_mnist_dde-default")
    repeats: int = field(3)            # interleaved timing rounds (median)
    mdsm_chunk: int = field(100)       # samples per timed call (cost is linear in chains beyond ~100)
    density_chunk: int = field(250)
    generator_chunk: int = field(1000)
    seed: int = field(0)

    def validate(self) -> None:
        cfgs.check_fields(self, positive_int=("repeats", "mdsm_chunk", "density_chunk", "generator_chunk"),
                          nonnegative_int=("seed",))


PRESETS = {"default": {}, "smoke": dict(repeats=1, mdsm_chunk=4, density_chunk=4, generator_chunk=16)}


def build_calls(cfg: CompareConfig):
    """The three timed sampler calls and what each is (network passes per sample, chunk)."""
    k_mdsm, k_gen, k_density = jax.random.split(jax.random.key(cfg.seed), 3)
    m_cfg, m_energy_fn, m_params, _ = mdsm_exp.load_run(cfg.mdsm_run)
    m_sampler, m_steps = mdsm_exp.make_sampler(m_cfg, m_energy_fn)
    m_x0 = mdsm_exp.init_fn(m_cfg)(k_mdsm, cfg.mdsm_chunk)

    d_cfg, state = dde_exp.load_run(cfg.dde_run)
    generate = jax.jit(dde_exp.generator_module(d_cfg).apply)
    z = dde_exp.latent_sampler(d_cfg, cfg.generator_chunk)(k_gen)
    d_sampler, d_steps = dde_exp.make_density_sampler(d_cfg, dj.energy_fn_of(dde_exp.energy_module(d_cfg)))
    d = d_cfg.density
    d_x0 = d.init_mean + d.init_std * jax.random.normal(k_density,
                                                        (cfg.density_chunk, *common.image_shape(d_cfg.data)))

    calls = {
        "mdsm": lambda: m_sampler(m_params, k_mdsm, m_x0)[0],
        "dde_generator": lambda: generate(state.gen.params, z),
        "dde_density": lambda: d_sampler(state.p.params, k_density, d_x0)[0],
    }
    about = {
        "mdsm": {"label": f"MDSM: {m_steps} annealed Langevin steps + denoise", "passes": f"{m_steps + 1} gradients",
                 "chunk": cfg.mdsm_chunk},
        "dde_generator": {"label": "DDE generator (one forward pass)", "passes": "1 forward",
                          "chunk": cfg.generator_chunk},
        "dde_density": {"label": f"DDE density E_p: {d_steps} Langevin steps + Tweedie",
                        "passes": f"{d_steps + 1} gradients", "chunk": cfg.density_chunk},
    }
    return calls, about


def quality(cfg: CompareConfig) -> dict:
    """FD / IS per sampler from the runs' metrics.json, with the shared floor and baseline;
    raises when the two runs were scored with different classifiers or n."""
    m = common.read_json(os.path.join(cfg.mdsm_run, "metrics.json"))
    d = common.read_json(os.path.join(cfg.dde_run, "metrics.json"))
    for key in ("n", "classifier_accuracy"):
        if m.get(key) != d.get(key):
            raise ValueError(f"The runs' FDs are not comparable: `{key}` is {m.get(key)} in {cfg.mdsm_run} and "
                             f"{d.get(key)} in {cfg.dde_run}; score both with the same classifier and n.")
    density = d.get("dde_density") or {}
    pick = lambda r: {"fd": r.get("fd"), "inception_score": r.get("inception_score"),  # noqa: E731
                      "inception_score_std": r.get("inception_score_std"), "classes_under": r.get("classes_under"),
                      "class_kl": r.get("class_kl")}
    return {
        "samplers": {"mdsm": pick(m), "dde_generator": pick(d), "dde_density": pick(density)},
        "n": m["n"], "fd_floor": m["fd_floor"], "fd_gaussian_baseline": m["fd_gaussian_baseline"],
        "fd_gaussian_baseline_std": m.get("fd_gaussian_baseline_std"), "classifier_accuracy": m["classifier_accuracy"],
        "inception_score_test": m["inception_score_test"],
    }


def results_table(result: dict) -> str:
    q = result
    fmt = lambda v, spec: "–" if v is None else format(v, spec)  # noqa: E731
    rows = [[r["label"], fmt(r.get("fd"), ".1f"), fmt(r.get("inception_score"), ".2f"), fmt(r.get("classes_under"), "d"),
             fmt(r.get("class_kl"), ".3f"), f"{r['seconds_per_1k']:.3g}", r["passes"]] for r in q["samplers"].values()]
    base = f"{q['fd_gaussian_baseline']:.1f}" + (f" ± {q['fd_gaussian_baseline_std']:.1f}"
                                                 if q.get("fd_gaussian_baseline_std") is not None else "")
    rows += [["floor: 1,000 training images", f"{q['fd_floor']:.2f}", f"{q['inception_score_test']:.2f} (test set)",
              "–", "–", "–", "–"],
             ["full-covariance Gaussian fit", base, "–", "–", "–", "–", "–"]]
    return common.markdown_table([f"Fashion-MNIST, FD n = {q['n']}", "FD", "IS analogue", "classes < 2 %", "class KL",
                                  "seconds / 1,000 samples", "network passes / sample"], rows)


def main(argv=None):
    cfg, _, out = common.start(CompareConfig(), PRESETS, __doc__, argv, script="fashion_mnist_compare",
                               distributed=False)
    result = quality(cfg)
    calls, about = build_calls(cfg)
    timings = common.time_calls(calls, cfg.repeats)
    for name, (compile_s, seconds) in timings.items():
        chunk = about[name]["chunk"]
        result["samplers"][name].update(about[name], compile_seconds=compile_s, seconds_per_call=seconds,
                                        seconds_per_1k=seconds * 1000.0 / chunk)
    s = result["samplers"]
    result["generator_speedup_vs_mdsm"] = s["mdsm"]["seconds_per_1k"] / s["dde_generator"]["seconds_per_1k"]
    if s["mdsm"]["fd"] and s["dde_generator"]["fd"]:
        result["generator_fd_over_mdsm_fd"] = s["dde_generator"]["fd"] / s["mdsm"]["fd"]
    result.update(config=cfgs.to_dict(cfg), device=jax.devices()[0].device_kind, repeats=cfg.repeats)
    common.write_json(os.path.join(out, "comparison.json"), result)
    table = results_table(result)
    with open(os.path.join(out, "comparison.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    print(f"generator: {result['generator_speedup_vs_mdsm']:.0f}x faster than MDSM per sample"
          + (f", FD {result['generator_fd_over_mdsm_fd']:.2f}x MDSM's" if "generator_fd_over_mdsm_fd" in result else ""))
    print(f"wrote {out}/comparison.json")
    return result


if __name__ == "__main__":
    main()
