"""MDSM's quality against training wall-clock on Fashion-MNIST: which energy, learning rate and σ
range give the best FD within the default preset's time budget.

Runs ``experiments.fashion_mnist`` once per row (``--set`` overrides of the preset) into
``--out/row<i>`` with its FD monitor on (``train.monitor_every_seconds``, ``--every``): every
``--every`` seconds of training, and once at the end, FD and class coverage of ``data.fd_n``
samples of the row's annealed chain (same key each time) with the shared FD classifier
(``data.classifier_dir``, trained once). Writes under ``--out``: ``study.json`` (per row: its
overrides, ``fd_curve``, final FD, class coverage, train/sample seconds, steps, steps/s),
``study.md`` (the table) and ``quality_vs_time.png`` (FD against training minutes, one line per
row, beside the Gaussian-baseline FD ± 2 std and the floor; with ``--dde_run DIR`` also the DDE
generator's curve from that run's ``generator_monitor`` records). A row whose directory already
holds a finished run of the same config is read, not rerun, so an interrupted study resumes.

    python -m experiments.fashion_mnist_study                         # every row, default preset
    python -m experiments.fashion_mnist_study --rows 0,2 --every 120  # a subset, a point every 2 min
    python -m experiments.fashion_mnist_study --dde_run runs/fashion_mnist_dde-default
"""
from __future__ import annotations

import argparse
import json
import os

from dsm_jax import config as cfgs
from dsm_jax import plotting, runlog
from experiments import common, fashion_mnist

# name -> the --set overrides of the preset that make the row. The DenseNet rows train the MDSM loss
# on the DDE experiment's DenseNet MLP energy, ~15x more steps per second on CPU than the ResNet
# (with YNNPACK's fusions on, which the MLP prefers), and sample ~8x faster, so they take 10x the
# ResNet's steps and a point every 2 minutes; a ResNet point costs a full 1,000-chain run (~8 min
# on 2 cores), so the ResNet rows take one every 5 minutes.
# The ResNet rows keep MDSM's own step size η = 0.02² (the default preset's 1.6e-3 was chosen for the DenseNet).
RESNET = ("model.kind=resnet", "train.steps=4000", "train.ynn_fusions=false", "train.monitor_every_seconds=300",
          "sampler.step_size=4e-4")
DENSENET_EVERY = "train.monitor_every_seconds=120"
ROWS = {  # the default preset is row 2's energy, chosen by this study; row 0 was the default before it
    "ResNet, 4k steps (MDSM's network)": RESNET,
    "ResNet, 4k steps, lr 2e-3": (*RESNET, "train.lr=2e-3"),
    "DenseNet MLP energy, 40k steps (default preset)": (DENSENET_EVERY,),
    "DenseNet MLP energy, 40k steps, σ ∈ [0.05, 1.2] linear": (
        DENSENET_EVERY, "train.sigma_min=0.05", "train.sigma_max=1.2", "train.sigma_spacing=linear"),
    # the rest of the 60-minute budget: the default's cosine schedule stretched 2.5x (~35 train min)
    "DenseNet MLP energy, 100k steps": ("train.monitor_every_seconds=300", "train.steps=100000"),
}
ROW_FIELDS = ("fd", "class_min", "classes_under", "class_kl", "train_seconds", "sample_seconds", "train_steps",
              "fd_floor", "fd_gaussian_baseline", "fd_gaussian_baseline_std")


def pick_rows(spec: str | None) -> dict:
    """The rows named by ``--rows`` (comma-separated indices into :data:`ROWS`; None: all)."""
    names = list(ROWS)
    if spec is None:
        return dict(ROWS)
    try:
        picked = [int(i) for i in spec.split(",") if i.strip()]
    except ValueError:
        picked = None
    if not picked or any(not 0 <= i < len(names) for i in picked):
        raise ValueError(f"`--rows` must be comma-separated row indices in 0..{len(names) - 1}, got {spec!r}; "
                         f"e.g. --rows 0,1. Rows: {dict(enumerate(names))}")
    return {names[i]: ROWS[names[i]] for i in picked}


def row_result(metrics: dict, overrides) -> dict:
    """A row of study.json from its run's metrics.json."""
    row = {"overrides": list(overrides), **{k: metrics.get(k) for k in ROW_FIELDS},
           "fd_curve": metrics.get("fd_curve", [])}
    seconds = row["train_seconds"]
    row["steps_per_s"] = row["train_steps"] / seconds if seconds else None
    return row


def study_table(rows: dict) -> str:
    # seconds are comparable only between rows run on the same idle machine
    return common.markdown_table(
        ["row", "final FD", "smallest class (classes < 2 %)", "class KL", "train min", "sample s", "steps",
         "steps/s", "curve points"],
        [[name, f"{r['fd']:.1f}", f"{r['class_min']:.3f} ({r['classes_under']})", f"{r['class_kl']:.3f}",
          f"{r['train_seconds'] / 60:.1f}", f"{r['sample_seconds']:.0f}", r["train_steps"],
          f"{r['steps_per_s']:.1f}" if r["steps_per_s"] else "–", len(r["fd_curve"])] for name, r in rows.items()])


def finished_row(out: str, argv_row: list[str]) -> dict | None:
    """The ``metrics.json`` of a row already run into ``out`` with the config ``argv_row`` gives
    (its ``config.json`` equal, its metrics written after it), so a rerun of a study skips the rows
    it finished; None otherwise."""
    config_path, metrics_path = os.path.join(out, "config.json"), os.path.join(out, "metrics.json")
    if not (os.path.exists(config_path) and os.path.exists(metrics_path)):
        return None
    cfg, args = cfgs.parse_args(fashion_mnist.FashionConfig(), fashion_mnist.PRESETS, "", argv_row)
    wanted = json.loads(json.dumps({"preset": args.preset, **cfgs.to_dict(cfg)}))  # tuples as JSON lists
    if common.read_json(config_path) != wanted or os.path.getmtime(metrics_path) < os.path.getmtime(config_path):
        return None
    return common.read_json(metrics_path)


def dde_curve(run_dir: str) -> list[dict]:
    """The DDE generator's monitor records (step, fd, train_seconds) of a fashion_mnist_dde run."""
    records = [r for r in runlog.read_log(os.path.join(run_dir, "metrics.jsonl"), run="generator_monitor")
               if "fd" in r]
    if not records:
        raise FileNotFoundError(f"`--dde_run` {run_dir!r} has no generator_monitor records with an FD in "
                                "metrics.jsonl; pass the directory of a python -m experiments.fashion_mnist_dde run.")
    return records


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("runs", "fashion_mnist-study"))
    parser.add_argument("--preset", default="default", choices=sorted(fashion_mnist.PRESETS))
    parser.add_argument("--every", type=float, default=300.0, help="seconds of training between FD points")
    parser.add_argument("--rows", default=None, help="comma-separated row indices (default: all)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="applied to every row, after its own overrides")
    parser.add_argument("--dde_run", default=None, help="a fashion_mnist_dde run directory: plot its generator's curve")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    picked = pick_rows(args.rows)  # refused before anything runs
    dde = dde_curve(args.dde_run) if args.dde_run else None
    os.makedirs(args.out, exist_ok=True)
    common.record_run(args.out, "experiments.fashion_mnist_study", argv)  # each row's directory records its own
    rows = {}
    for name, overrides in picked.items():
        i = list(ROWS).index(name)
        sets = [f"train.monitor_every_seconds={args.every}", *overrides, *args.overrides]
        row_out = os.path.join(args.out, f"row{i}")
        argv_row = ["--preset", args.preset, "--out", row_out]
        argv_row += [a for s in sets for a in ("--set", s)] + (["--no-progress"] if args.no_progress else [])
        done = finished_row(row_out, argv_row)
        print(f"study: row{i} {name}: {' '.join(sets)}{' (finished: read, not rerun)' if done else ''}", flush=True)
        rows[name] = row_result(done or fashion_mnist.main(argv_row), overrides)
    first = next(iter(rows.values()))
    study = {"preset": args.preset, "overrides": args.overrides, "every_seconds": args.every, "rows": rows,
             "fd_floor": first["fd_floor"], "fd_gaussian_baseline": first["fd_gaussian_baseline"],
             "fd_gaussian_baseline_std": first["fd_gaussian_baseline_std"],
             "dde_generator_curve": dde}
    table = study_table(rows)
    common.write_summary(args.out, "study", study, table)
    curves = {name: r["fd_curve"] for name, r in rows.items()}
    if dde:
        curves["DDE generator"] = dde
    plotting.quality_vs_time(os.path.join(args.out, "quality_vs_time.png"), curves,
                             baseline=(study["fd_gaussian_baseline"], study["fd_gaussian_baseline_std"]),
                             floor=study["fd_floor"], title=f"MDSM on Fashion-MNIST ({args.preset} preset)")
    print(table)
    print(f"wrote {args.out}/study.json, study.md, quality_vs_time.png")
    return study


if __name__ == "__main__":
    main()
