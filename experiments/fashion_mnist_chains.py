"""Which annealed chain for a trained MDSM energy: FD of ``sampler.n_samples`` samples per chain
setting (step size, length, starting temperature), chosen on training images, reported on the test set.

Training fixes the energy; the chain that samples it is a separate choice (every ``sampler.*``
field is a resume-free option). For each row of :data:`CHAINS` (``sampler.*`` overrides of the
run's own config) this draws the run's final chains again — same key and starting points as
``experiments.fashion_mnist`` — and scores them twice with the run's FD classifier:

* ``fd_select``: FD against ``--select_n`` *training* images (a fixed subset). The chain is chosen
  on this, so the test set plays no part in the choice;
* ``fd`` and class coverage against the test set, as the run itself reports them (no floor or
  baselines; those are the run's).

Writes to ``--out`` (default ``<run_dir>/chains``): ``chains.json`` (per row: overrides, steps,
seconds, non-finite chains, fd_select, fd, class coverage; and ``chosen``, the row with the lowest
fd_select), ``chains.md`` and a 10×10 grid ``<row>.png`` per row.

    python -m experiments.fashion_mnist_chains --run_dir runs/fashion_mnist-default
    python -m experiments.fashion_mnist_chains --run_dir runs/fashion_mnist-study/row2 --rows step_4e-4,step_8e-4
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

import dsm_jax as dj
from dsm_jax import config as cfgs
from dsm_jax import image_metrics, plotting
from experiments import common
from experiments import fashion_mnist as fm

MDSM_CHAIN = ("sampler.n_constant=500", "sampler.n_exponential=2000", "sampler.n_linear=200")  # their 2,700 steps
CHAINS = {  # name -> sampler.* overrides of the run's config; the first rows vary the step size η alone
    "step_2e-4": ("sampler.step_size=2e-4",),
    "step_4e-4": ("sampler.step_size=4e-4",),   # MDSM's ε = 0.02 (η = ε²): the presets' value
    "step_8e-4": ("sampler.step_size=8e-4",),
    "step_1.6e-3": ("sampler.step_size=1.6e-3",),
    "step_3.2e-3": ("sampler.step_size=3.2e-3",),
    "mdsm_length_step_4e-4": (*MDSM_CHAIN, "sampler.step_size=4e-4"),
    "mdsm_length_step_8e-4": (*MDSM_CHAIN, "sampler.step_size=8e-4"),
}


def pick(spec: str | None) -> dict:
    """The rows named by ``--rows`` (comma-separated names of :data:`CHAINS`; None: all)."""
    if spec is None:
        return dict(CHAINS)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in CHAINS]
    if not names or unknown:
        raise ValueError(f"`--rows` takes comma-separated names of {list(CHAINS)}; got {spec!r}.")
    return {n: CHAINS[n] for n in names}


def chain_config(cfg, overrides):
    """``cfg`` with ``sampler.*`` overrides (``"field=value"``); any other field is refused: it
    would change the energy, not the chain."""
    for item in overrides:
        if not item.startswith("sampler.") or "=" not in item:
            raise ValueError(f"chain overrides set `sampler.*` fields as FIELD=VALUE, got {item!r}.")
    new = cfgs.apply_overrides(cfg, overrides)
    new.validate()
    return new


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", default=os.path.join("runs", "fashion_mnist-default"))
    parser.add_argument("--out", default=None, help="default: <run_dir>/chains")
    parser.add_argument("--rows", default=None, help=f"comma-separated names of {list(CHAINS)} (default: all)")
    parser.add_argument("--select_n", type=int, default=10_000, help="training images the chain is chosen on")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    rows = pick(args.rows)  # refused before anything loads
    if args.select_n < 2:
        raise ValueError(f"`--select_n` must be at least 2 (training images to choose the chain on), got {args.select_n}.")
    cfg, energy_fn, params, step = fm.load_run(args.run_dir)
    configs = {name: chain_config(cfg, sets) for name, sets in rows.items()}
    out = args.out or os.path.join(args.run_dir, "chains")
    os.makedirs(out, exist_ok=True)
    common.record_run(out, "experiments.fashion_mnist_chains", argv)
    images = common.images(cfg.data, cfg.seed, not args.no_progress)
    n_select = min(args.select_n, len(images.x_train))
    pick_idx = np.asarray(jax.random.choice(jax.random.key(cfg.seed + 7), len(images.x_train), (n_select,), replace=False))
    select = image_metrics.make_sample_scorer(images.clf_params, images.x_train[pick_idx], images.y_train[pick_idx])
    report = common.sample_scorer(images.clf_params, images.x_test, images.y_test)
    k_sample = fm.sampling_keys(cfg)[0]
    results = {}
    for name, c in configs.items():
        sampler, n_steps = fm.make_sampler(c, energy_fn, mesh="auto")
        t0 = time.perf_counter()
        x, info = dj.sample_in_chunks(sampler, params, k_sample, fm.init_fn(c), c.sampler.n_samples,
                                      c.sampler.sample_chunk, with_info=True, progress=not args.no_progress, desc=name)
        seconds = time.perf_counter() - t0
        scores, chosen_on = report(x), select(x)
        results[name] = {"overrides": list(rows[name]), "sampler_steps": n_steps, "sample_seconds": seconds,
                         "n_nonfinite": int(info["n_nonfinite"]),
                         "fd_select": None if chosen_on is None else chosen_on["fd"],
                         **(scores or dict.fromkeys(common.MONITOR_FIELDS))}  # None: a non-finite sample
        if scores is not None:
            plotting.image_grid(os.path.join(out, f"{name}.png"), x[:100], n_cols=10,
                                title=f"{name}: {n_steps} steps, FD {scores['fd']:.1f}")
        print(f"chains: {name}: {results[name]}", flush=True)
    finite = {n: r for n, r in results.items() if r["fd_select"] is not None}
    chosen = min(finite, key=lambda n: finite[n]["fd_select"]) if finite else None
    summary = {"run_dir": args.run_dir, "train_steps": step, "select_n": n_select, "n": cfg.sampler.n_samples,
               "chosen": chosen, "rows": results}
    table = chains_table(summary)
    common.write_summary(out, "chains", summary, table)
    print(table)
    print(f"wrote {out}/chains.json, chains.md")
    return summary


def chains_table(summary: dict) -> str:
    def cell(v, fmt):
        return "–" if v is None else format(v, fmt)

    return common.markdown_table(
        ["chain", "steps", "FD vs training images (selects)", "FD vs test", "smallest class (< 2 %)", "class KL",
         "sample s"],
        [[f"**{name}**" if name == summary["chosen"] else name, r["sampler_steps"], cell(r["fd_select"], ".1f"),
          cell(r["fd"], ".1f"),
          "–" if r["class_min"] is None else f"{r['class_min']:.3f} ({r['classes_under']})",
          cell(r["class_kl"], ".3f"), f"{r['sample_seconds']:.0f}"] for name, r in summary["rows"].items()])


if __name__ == "__main__":
    main()
