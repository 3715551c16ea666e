"""What each deviation from the DDE code's lockstep recipe costs the generator, on one toy.

Runs ``experiments.toy2d``'s ``dde-generator`` once with the default preset (the recipe) and once per
deviation, each alone (plus all of them together: this project's recipe before the change),
then writes ``study.json`` and ``study.md`` (a table: sample KL both ways, mode weights,
off-support fraction) under ``--out``; each row's own run directory sits beside it.

    python -m experiments.toy2d_dde_study                     # eight_gaussians, ~45 min on 2 cores
    python -m experiments.toy2d_dde_study --set gen.iters=10000   # the README's table, ~25 min
    python -m experiments.toy2d_dde_study --toy rings --set gen.iters=10000
"""
from __future__ import annotations

import argparse
import os

from dsm_jax import toy as toys
from experiments import common, toy2d

# name -> the --set overrides of the default preset that make the deviation
DEVIATIONS = {
    "recipe (default preset)": (),
    "constant learning rates (the DDE code)": ("gen.lr_decay=false",),
    "σ annealed 1.0 → σ over half the run": ("gen.anneal_sigma=true",),
    "E_p pre-trained (3,000 DSM steps)": ("gen.p_pretrained=true",),
    "E_q warm-up (500 steps on the initial G)": ("gen.q_warmup_steps=500",),
    "generator Adam β1 = 0.5": ("gen.b1=0.5",),
    "softplus generator": ("gen.activation=softplus",),
    "all of them: constant rate, σ annealing, pre-trained E_p, E_q warm-up, β1 = 0.5, softplus (the old default)": (
        "gen.lr_decay=false", "gen.anneal_sigma=true", "gen.p_pretrained=true", "gen.q_warmup_steps=500", "gen.b1=0.5",
        "gen.activation=softplus"),
}


def study_table(rows: dict) -> str:
    # quality only: the rows' seconds are in study.json, comparable only when run on an idle machine
    return common.markdown_table(
        ["deviation from the recipe", "KL(p̂‖q̂)", "KL(q̂‖p̂)", "mode weights (min–max)", "off support"],
        [[name, f"{r['kl']:.4f} ± {r['kl_stderr']:.4f}", f"{r['kl_reverse']:.4f}",
          f"{r['mode_weight_min']:.2f}–{r['mode_weight_max']:.2f}", f"{r['off_support']:.4f}"] for name, r in rows.items()])


def row_methods(deviation) -> str:
    """The methods a row runs: the pre-trained E_p needs the `dde` density first."""
    return "dde,dde-generator" if "gen.p_pretrained=true" in deviation else "dde-generator"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", default="eight_gaussians", choices=toys.TOY_NAMES)
    parser.add_argument("--out", default=os.path.join("runs", "toy2d-dde-study"))
    parser.add_argument("--preset", default="default", choices=sorted(toy2d.PRESETS))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="applied to every row (e.g. gen.iters=10000)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    common.record_run(args.out, "experiments.toy2d_dde_study", argv)  # each row's directory records its own
    rows = {}
    for i, (name, deviation) in enumerate(DEVIATIONS.items()):
        sets = [f"toys={args.toy}", f"methods={row_methods(deviation)}", *args.overrides, *deviation]
        argv_row = ["--preset", args.preset, "--out", os.path.join(args.out, f"row{i}")]
        argv_row += [a for s in sets for a in ("--set", s)] + (["--no-progress"] if args.no_progress else [])
        print(f"study: {name}: {' '.join(sets)}", flush=True)
        rows[name] = {**toy2d.main(argv_row)[f"{args.toy}/dde-generator"], "overrides": list(deviation)}
    table = study_table(rows)
    common.write_summary(args.out, "study", {"toy": args.toy, "preset": args.preset, "overrides": args.overrides,
                                             "rows": rows}, table)
    print(table)
    return rows


if __name__ == "__main__":
    main()
