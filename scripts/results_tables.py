"""Render the results tables of README.md and docs/*.md from the runs' JSON.

Every generated table sits between ``<!-- table:NAME -->`` and ``<!-- /table -->``; its
numbers come only from ``docs/results/<run>.json`` (small copies of the runs' metrics with
the command that produced them) or ``docs/benchmarks/benchmarks.json``, so a table cannot
drift from its run. A table whose run JSON is not committed yet is marked
``<!-- table:NAME static=<commit> -->``: it is kept as written at that commit and rendered
as soon as the JSON is collected.

    python scripts/results_tables.py              # rewrite the tables in place
    python scripts/results_tables.py --check      # exit 1 when a table differs from its JSON
    python scripts/results_tables.py --collect runs   # copy runs/<run>/metrics.json → docs/results/
    python scripts/results_tables.py --collect RUN=DIR   # run RUN from its own directory DIR

A collected file takes its ``command`` and ``commit`` from the run's own ``run.json`` (written
by the experiment when it started); a run older than those records gets :data:`COMMANDS`'s
command and this checkout's HEAD, each marked as collected, not recorded.

Only the standard library: it runs without jax.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "docs", "results")
BENCHMARKS = os.path.join(ROOT, "docs", "benchmarks", "benchmarks.json")
PEERS = os.path.join(ROOT, "docs", "benchmarks", "peers.json")  # `--rows peak,peers` run of experiments.benchmarks
TOYS = ("eight_gaussians", "two_spirals", "checkerboard", "rings")

# run name -> the command that writes runs/<run>/ (same flags as when it was measured); recorded
# for a collected run only when its directory has no run.json (runs made before they recorded it)
COMMANDS = {
    "toy2d-default": "python -m experiments.toy2d",
    "toy2d-default-20k": "python -m experiments.toy2d --set gen.iters=20000 --set gen.monitor_every=1000 "
                         "--out runs/toy2d-default-20k",
    "toy2d-dde-study": "python -m experiments.toy2d_dde_study --set gen.iters=10000",
    "fashion_mnist-default": "python -m experiments.fashion_mnist",
    "fashion_mnist_dde-default": "python -m experiments.fashion_mnist_dde",
    "fashion_mnist-study": "python -m experiments.fashion_mnist_study --dde_run runs/fashion_mnist_dde-default",
    "fashion_mnist-chains": "python -m experiments.fashion_mnist_chains --run_dir runs/fashion_mnist-study/row2",
}
RUN_FILE = "run.json"  # experiments.common.rundir.RUN_FILE: the run's commit and command
NOT_RECORDED = "(collected; run did not record its {})"
SUMMARIES = {"fashion_mnist-study": "study.json", "toy2d-dde-study": "study.json",
             "fashion_mnist-chains": "chains.json"}  # runs whose file is not metrics.json

MARKER = re.compile(r"<!-- table:(?P<name>[\w-]+)(?: static=(?P<static>\w+))? -->\n(?P<body>.*?)<!-- /table -->",
                    re.S)


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------
def load(run: str) -> dict | None:
    """docs/results/<run>.json, or None when that run has not been collected."""
    path = os.path.join(RESULTS, f"{run}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def needs(*runs):
    """Decorator: call the table with the loaded run JSONs, or return None when one is missing."""
    def wrap(table):
        def render_table():
            loaded = [load(run) for run in runs]
            return None if any(r is None for r in loaded) else table(*loaded)
        render_table.__name__, render_table.__doc__ = table.__name__, table.__doc__
        return render_table
    return wrap


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header, rows) -> str:
    return "\n".join([_row(header), "|---" * len(header) + "|", *(_row(r) for r in rows)]) + "\n"


def _pm(value, err, fmt=".4f") -> str:
    return f"{value:{fmt}} ± {err:{fmt}}"


def _weights(m) -> str:
    return f"{m['mode_weight_min']:.2f}–{m['mode_weight_max']:.2f}"


# --------------------------------------------------------------------------------------
# Tables: each takes nothing and returns Markdown, or None when its JSON is missing
# --------------------------------------------------------------------------------------
@needs("toy2d-default")
def toy2d(run):
    """README / docs/results.md: one cell per toy and method, KL ± stderr and wall-clock."""
    m = run["metrics"]
    rows = []
    for toy in TOYS:
        d, g, s = m[f"{toy}/dde"], m[f"{toy}/dde-generator"], m[f"{toy}/mdsm"]
        rows.append([toy, f"{_pm(d['kl'], d['kl_stderr'])}, {d['seconds']:.0f} s",
                     f"{_pm(g['kl'], g['kl_stderr'])} (floor {g['kl_floor']:.4f}), {g['seconds']:.0f} s",
                     f"{_pm(s['kl'], s['kl_stderr'])} (floor {s['kl_floor']:.4f}), {s['seconds']:.0f} s"])
    return _table(["toy", "dde: density KL(p̂‖p_model)", "dde-generator: sample KL", "mdsm: sample KL"], rows)


@needs("toy2d-default")
def toy2d_coverage(run):
    """docs/dde.md: both directions of the sample KL and the mode coverage."""
    rows = []
    for toy in TOYS:
        for method in ("dde-generator", "mdsm"):
            r = run["metrics"][f"{toy}/{method}"]
            rows.append([toy, method, _pm(r["kl"], r["kl_stderr"]), f"{r['kl_reverse']:.4f}", f"{r['kl_floor']:.4f}",
                         _weights(r), f"{r['off_support']:.4f}", f"{r.get('train_seconds', r['seconds']):.0f}",
                         f"{r['sample_seconds']:.2f}"])
    return _table(["toy", "method", "KL(p̂‖q̂)", "KL(q̂‖p̂)", "floor", "mode weights (min–max, 1 = uniform)",
                   "off support", "train s", "sampling s"], rows)


@needs("toy2d-default")
def toy2d_likelihood(run):
    """docs/results.md: log Z by AIS and grid, test log-likelihoods, and the exact p̂_σ's own."""
    rows = []
    for toy in TOYS:
        r = run["metrics"][f"{toy}/dde"]
        rows.append([toy, _pm(r["log_z_ais"], r["log_z_ais_stderr"]), f"{r['log_z_grid']:.4f}",
                     _pm(r["test_ll_ais"], r["test_ll_ais_stderr"]), _pm(r["test_ll_grid"], r["test_ll_grid_stderr"]),
                     f"{r['test_ll_true']:.4f}"])
    return _table(["toy", "log Z (AIS)", "log Z (grid)", "test LL, AIS", "test LL, grid", "exact p̂_σ"], rows)


@needs("toy2d-default", "toy2d-default-20k")
def toy2d_20k(short, long):
    """docs/dde.md: the generator's sample KL at the default 16,000 iterations and at 20,000."""
    rows = [[toy, _pm(short["metrics"][f"{toy}/dde-generator"]["kl"], short["metrics"][f"{toy}/dde-generator"]["kl_stderr"]),
             _pm(long["metrics"][f"{toy}/dde-generator"]["kl"], long["metrics"][f"{toy}/dde-generator"]["kl_stderr"])]
            for toy in TOYS]
    return _table(["toy", "sample KL, 16,000 iterations (default)", "sample KL, 20,000 iterations"], rows)


@needs("toy2d-dde-study")
def dde_study(run):
    """README / docs/dde.md: what each deviation from the lockstep recipe costs (one toy)."""
    rows = [[r["label"], _pm(r["metrics"]["kl"], r["metrics"]["kl_stderr"]), f"{r['metrics']['kl_reverse']:.4f}",
             _weights(r["metrics"]), f"{r['metrics']['off_support']:.4f}"] for r in run["rows"]]
    return _table(["deviation from the recipe", "KL(p̂‖q̂)", "KL(q̂‖p̂)", "mode weights (min–max)", "off support"], rows)


def _classes(m) -> str:
    return f"{m['class_min']:.3f} ({m['classes_under']} < {m['min_fraction']:.0%})"


@needs("fashion_mnist_dde-default")
def fashion_mnist_dde(run):
    """README / docs/results.md: the DDE generator and the DDE density sampled by Langevin."""
    m = run["metrics"]
    d = m["dde_density"]
    rows = [
        ["DDE generator (one forward pass)", f"{m['fd']:.2f}", f"{m['inception_score']:.2f}", _classes(m),
         f"{m['class_kl']:.3f}", f"{m['sample_seconds_per_1k']:.3f}", "1 forward", f"{m['pixel_std_across_samples']:.3f}"],
        [f"DDE density E_p: {d['sampler_steps']} Langevin steps + Tweedie", f"{d['fd']:.2f}",
         f"{d['inception_score']:.2f}", _classes(d), f"{d['class_kl']:.3f}", f"{d['sample_seconds_per_1k']:.2f}",
         f"{d['sampler_steps'] + 1} gradients", f"{d['pixel_std_across_samples']:.3f}"],
        ["floor: training subset vs test", f"{m['fd_floor']:.2f}", f"{m['inception_score_test']:.2f} (test set)",
         "–", "–", "–", "–", f"{m['pixel_std_test_set']:.3f} (test set)"],
        [f"full-covariance Gaussian fit ({m['baseline_draws']} draws)",
         _pm(m["fd_gaussian_baseline"], m["fd_gaussian_baseline_std"], ".2f"), "–", "–", "–", "–", "–", "–"],
    ]
    return _table([f"Fashion-MNIST, FD n = {m['n']}", "FD", "IS analogue", "smallest class share", "class KL",
                   "seconds / 1,000 samples", "network passes / sample", "pixel std across samples"], rows)


@needs("fashion_mnist_dde-default")
def fashion_mnist_dde_monitor(run):
    """docs/dde.md: the generator monitor logged every 2,500 steps (FD, classes under 2 %)."""
    mon = run["generator_monitor"]
    return _table(["step", *(f"{r['step']:,}" for r in mon)],
                  [["FD", *(f"{r['fd']:.0f}" for r in mon)], ["classes < 2 %", *(r["classes_under"] for r in mon)]])


@needs("fashion_mnist-default")
def fashion_mnist_mdsm(run):
    """README / docs/results.md: FD of MDSM's samples against the floor and the baselines."""
    m = run["metrics"]
    rows = [
        ["**MDSM samples** (clipped to [0, 1])", f"**{m['fd']:.1f}**"],
        [f"floor: {m['n']:,} training images vs test", f"{m['fd_floor']:.2f}"],
        [f"full-covariance Gaussian fitted to the training set (unclipped; mean ± std over {m['baseline_draws']} draws)",
         _pm(m["fd_gaussian_baseline"], m["fd_gaussian_baseline_std"], ".1f")],
        ["whole training set (60k) vs test", f"{m['fd_train']:.2f}"],
        ["Inception-score analogue: samples / test set", f"{_pm(m['inception_score'], m['inception_score_std'], '.2f')} / "
                                                         f"{_pm(m['inception_score_test'], m['inception_score_test_std'], '.2f')}"],
        *([["class coverage: smallest class share (classes under 2 %) / class KL to the test split",
            f"{_classes(m)} / {m['class_kl']:.3f}"]] if "class_kl" in m else []),  # older runs lack it
        ["FD classifier's test accuracy (3,000 steps, seed 0)", f"{100 * m['classifier_accuracy']:.1f} %"],
    ]
    return _table([f"FD on classifier features, n = {m['n']:,} vs the test set", "value"], rows)


@needs("fashion_mnist-study")
def fashion_mnist_study(run):
    """README / docs/results.md: the MDSM budget study, FD against training minutes per row."""
    rows = []
    for name, r in run["rows"].items():
        curve = ", ".join(f"{p['fd']:.0f} @ {p['train_seconds'] / 60:.1f}" for p in r["fd_curve"] if "fd" in p)
        rows.append([name, f"{r['train_steps']:,}", f"{r['steps_per_s']:.1f}", f"{r['train_seconds'] / 60:.1f}",
                     f"**{r['fd']:.1f}**", f"{r['class_min']:.3f} ({r['classes_under']})", f"{r['class_kl']:.3f}",
                     f"{r['sample_seconds'] / 60:.1f}", curve])
    return _table(["row", "steps", "steps/s", "train min", "final FD", "smallest class (< 2 %)", "class KL",
                   "sampling min (1,000)", "FD @ training minute"], rows)


@needs("fashion_mnist-chains")
def fashion_mnist_chains(run):
    """docs/results.md: the chain study on the default energy; the chosen row (lowest FD against
    training images) in bold."""
    def fmt(v, spec):
        return "–" if v is None else format(v, spec)

    rows = []
    for name, r in run["rows"].items():
        label = f"**{name}**" if name == run["chosen"] else name
        sets = " ".join(o.removeprefix("sampler.") for o in r["overrides"])
        classes = "–" if r["class_min"] is None else f"{r['class_min']:.3f} ({r['classes_under']})"
        rows.append([label, sets, f"{r['sampler_steps']:,}", fmt(r["fd_select"], ".1f"), fmt(r["fd"], ".1f"), classes,
                     fmt(r["class_kl"], ".3f")])
    return _table(["chain", "sampler.*", "steps", f"FD vs {run['select_n']:,} training images (chooses)",
                   f"FD vs test (n = {run['n']:,})", "smallest class (< 2 %)", "class KL"], rows)


MASK_LABELS = {"lower_half": "lower half missing", "centre_square": "centre 16×16 square missing",
               "random_half": "50 % random pixels missing"}


@needs("fashion_mnist-default")
def fashion_mnist_inpainting(run):
    """docs/results.md: PSNR on the missing pixels, MDSM against two baselines."""
    rows = [[MASK_LABELS.get(kind, kind), f"{r['mdsm']:.2f}", f"{r['mean_image']:.2f}", f"{r['nearest_train']:.2f}"]
            for kind, r in run["metrics"]["inpainting_psnr"].items()]
    return _table(["inpainting, 50 test images per mask, PSNR (dB) on the missing pixels", "MDSM", "mean training image",
                   "nearest training image on the visible pixels"], rows)


def _bench(path=BENCHMARKS):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _ms(impl) -> str:
    s = impl["median_s"]
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def _rate(impl) -> str:
    return f"{_ms(impl)} ({impl['gflops_per_s']:.0f} GFLOP/s, {100 * impl['fraction_of_peak']:.0f} %)"


def _k(impl) -> str:
    return f"{impl['chain_steps_per_s'] / 1e3:.0f}k"


def benchmarks():
    """README / docs/performance.md: the summary of docs/benchmarks/benchmarks.json."""
    b = _bench()
    if b is None:
        return None
    rows = {r["name"]: r for r in b["rows"]}
    mlp = rows["train_mlp"]["impls"]
    out = [["DDE toy MLP DSM step (25 × 32 softplus, batch 2048)", _rate(mlp["jax ynn-off"]), _ms(mlp["jax"]),
            _ms(mlp["torch"]), f"**{mlp['jax ynn-off']['speedup_vs_torch']:.2f}×**"]]
    for name, label in (("train_resnet_b128", "MDSM ResNet step (6 blocks, width 64, 32×32), batch 128, `CanonicalConv`"),
                        ("train_resnet_b64", "same, batch 64")):
        r = rows[name]["impls"]
        out.append([label, _rate(r["jax[canonical] ynn-off"]), f"{_ms(r['jax[canonical]'])} (`nn.Conv` {_ms(r['jax[nn.Conv]'])})",
                    _ms(r["torch"]), f"{r['jax[canonical] ynn-off']['speedup_vs_torch']:.2f}×"])
    t = rows["conv_ops_b128"]["totals"]
    n_shapes = len(rows["conv_ops_b128"]["sizes"]["shapes"])
    out.append([f"the ResNet's convolutions alone, batch 128: Σ over its {n_shapes} conv shapes × count of forward + "
                "input gradient + kernel gradient",
                f"{t['all']['jax_s']:.2f} s (fwd {t['fwd']['jax_s']:.2f}, dx {t['dx']['jax_s']:.2f}, dK {t['dK']['jax_s']:.2f})", "",
                f"{t['all']['torch_s']:.2f} s ({t['fwd']['torch_s']:.2f}, {t['dx']['torch_s']:.2f}, {t['dK']['torch_s']:.2f})",
                f"{t['all']['speedup_vs_torch']:.2f}×"])
    lr = rows["langevin_resnet"]["impls"]
    out.append([f"Langevin, ResNet, {rows['langevin_resnet']['sizes']['chains']} chains × "
                f"{rows['langevin_resnet']['sizes']['steps']} steps, `lax.scan`",
                f"{lr['jax[canonical] ynn-off lax.scan']['chain_steps_per_s']:.0f} chain-steps/s",
                f"{lr['jax[canonical] lax.scan']['chain_steps_per_s']:.0f} (`MatmulConv` {lr['jax[matmul] lax.scan']['chain_steps_per_s']:.0f})",
                f"{lr['torch python loop']['chain_steps_per_s']:.0f} (loop)",
                f"**{lr['jax[canonical] ynn-off lax.scan']['speedup_vs_torch']:.2f}×**"])
    for name, label in (("langevin_mlp", "Langevin, toy MLP, 10,000 chains × 200 steps: `lax.scan` / jitted step in a Python loop"),
                        ("langevin_mlp_hugetlb", "same with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`"),
                        ("langevin_mlp_100chains", "Langevin, toy MLP, 100 chains × 200 steps: `lax.scan` / loop")):
        r = rows[name]["impls"]
        scan = r["jax ynn-off lax.scan"]
        ours = f"{_k(scan)} / {_k(r['jax ynn-off python loop'])} chain-steps/s (scan {scan['speedup_vs_jax_python_loop']:.2f}× its loop)"
        if name != "langevin_mlp":
            ours = f"{_k(scan)} / {_k(r['jax ynn-off python loop'])} ({scan['speedup_vs_jax_python_loop']:.2f}×)"
        out.append([label, ours, f"{_k(r['jax lax.scan'])} / {_k(r['jax python loop'])}", _k(r["torch python loop"]),
                    f"{scan['speedup_vs_torch']:.2f}×"])
    jax_impls = [(n, i) for r in b["rows"] if r["kind"] != "peak" for n, i in r["impls"].items() if "compile_s" in i
                 and r["kind"] != "conv_ops"]
    off = max(i["compile_s"] for n, i in jax_impls if "ynn-off" in n)
    default = max(i["compile_s"] for n, i in jax_impls if "ynn-off" not in n)
    out.append(["compile time, every jax row", f"≤ {off:.1f} s", f"≤ {default:.1f} s", "", ""])
    r = rows["train_resnet_b128"]["impls"]
    gib = 1 / 1024
    out.append(["peak RSS growth of one ResNet step, batch 128",
                f"{r['jax[canonical] ynn-off']['peak_rss_mib'] * gib:.2f} GiB (XLA temporaries "
                f"{r['jax[canonical] ynn-off']['xla_temp_mib'] * gib:.2f} GiB)",
                f"{r['jax[canonical]']['peak_rss_mib'] * gib:.2f} GiB", f"{r['torch']['peak_rss_mib'] * gib:.2f} GiB", ""])
    return _table(["computation", "dsm_jax, ynn-off", "dsm_jax, XLA defaults", "PyTorch", "ynn-off vs torch"], out)


def peers():
    """README / docs/performance.md: dsm_jax against torchebm and blackjax (docs/benchmarks/peers.json),
    each row checked equal before it was timed (the ``check`` of each row)."""
    b = _bench(PEERS)
    if b is None:
        return None
    rows = {r["name"]: r for r in b["rows"]}
    out = []
    specs = (("peer_dsm_torchebm", "DSM training step, 4 × 128 softplus MLP, batch 2,048", "torchebm", "≥ 1.5×"),
             ("peer_langevin_torchebm", "Langevin, same MLP, {chains:,} chains × {steps} steps", "torchebm", "≥ 1.25×"),
             ("peer_mala_blackjax", "MALA, same MLP + ½‖x‖², {chains:,} × {steps} (acceptance {acc})", "blackjax", "≥ 1.0×"),
             ("peer_ula_blackjax", "ULA, same MLP, {chains:,} × {steps} (blackjax: `sgld`, exact gradient)", "blackjax", "≥ 1.0×"))
    for name, label, peer, target in specs:
        r = rows[name]
        imp = r["impls"]
        ours, theirs = imp["jax ynn-off"], imp[r["vs_peer"]["jax ynn-off"]]
        value, unit = (_ms, "") if r["unit"] == "step" else (_k, " chain-steps/s")
        acc = r["check"].get("acceptance_run", {})
        acc = f"{acc.get('jax ynn-off', float('nan')):.3f} vs {acc.get(r['vs_peer']['jax ynn-off'], float('nan')):.3f}"
        out.append([label.format(acc=acc, **r["sizes"]), f"{value(ours)} / {value(imp['jax'])}{unit}",
                    f"{peer} {value(theirs)}{unit}",
                    f"**{ours['speedup_vs_peer']:.2f}×** / {imp['jax']['speedup_vs_peer']:.2f}×", target])
    return _table(["computation", "dsm_jax: ynn-off / XLA defaults", "peer", "dsm_jax vs peer", "target"], out)


def fashion_mnist_likelihood():
    """docs/results.md: hand-copied (static) until a ``likelihood.json`` is collected and a renderer
    written for it; none was on the machine where this script was written."""
    return None


fashion_mnist_likelihood_summary = fashion_mnist_likelihood  # the README's two-row excerpt of it

TABLES = {f.__name__: f for f in (toy2d, toy2d_coverage, toy2d_likelihood, toy2d_20k, dde_study, fashion_mnist_dde,
                                  fashion_mnist_dde_monitor, fashion_mnist_mdsm, fashion_mnist_inpainting, fashion_mnist_study,
                                  fashion_mnist_chains,
                                  benchmarks, peers,
                                  fashion_mnist_likelihood)}
TABLES["fashion_mnist_likelihood_summary"] = fashion_mnist_likelihood_summary


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------
def documents() -> list[str]:
    docs = os.path.join(ROOT, "docs")
    return [os.path.join(ROOT, "README.md")] + sorted(
        os.path.join(docs, f) for f in os.listdir(docs) if f.endswith(".md"))


def render(text: str, path: str = "") -> str:
    """The text with every generated table replaced by the one its JSON gives now."""
    cache = {}

    def replace(match):
        name = match["name"]
        if name not in TABLES:
            raise SystemExit(f"{path}: unknown table {name!r} (known: {', '.join(TABLES)})")
        if name not in cache:
            cache[name] = TABLES[name]()
        table = cache[name]
        if table is None:
            if match["static"]:  # kept as written at that commit until its run JSON is collected
                return match[0]
            raise SystemExit(f"{path}: table {name!r} needs its run JSON in docs/results/ (or mark it static=<commit>)")
        return f"<!-- table:{name} -->\n{table}<!-- /table -->"

    return MARKER.sub(replace, text)


def _date(path: str) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(os.path.getmtime(path)))


def _head_commit() -> str:
    """The collecting checkout's commit, or "unknown": only for runs that did not record theirs."""
    try:
        out = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _source_label(directory: str) -> str:
    """How a collected file names its run directory: relative to the repository root (``runs/x``)."""
    rel = os.path.relpath(os.path.abspath(directory), ROOT)
    return os.path.abspath(directory) if rel.startswith("..") else rel


def provenance(run: str, src: str) -> dict:
    """A collected run's ``command`` and ``commit``: those its ``run.json`` recorded at its start
    (with ``dirty``, ``called_by`` and ``reruns`` when it has them), or, for a run without one,
    :data:`COMMANDS`'s command and this checkout's HEAD, each marked :data:`NOT_RECORDED`."""
    path = os.path.join(src, RUN_FILE)
    if not os.path.exists(path):
        return {"command": f"{COMMANDS[run]} {NOT_RECORDED.format('command')}",
                "commit": f"{_head_commit()} {NOT_RECORDED.format('commit')}"}
    with open(path) as f:
        record = json.load(f)
    return {"command": record["command"], "commit": record["commit"],
            **{k: record[k] for k in ("dirty", "called_by", "reruns") if k in record}}


def collect(runs_dir: str | None = None, *, sources: dict[str, str] | None = None) -> list[str]:
    """Copy the metrics of every known run found under ``runs_dir`` (``runs_dir/<run>/``), and of
    each run named in ``sources`` (``{run: its directory}``, e.g. a study's row that was the
    default run), into docs/results/<run>.json, with the run's own command and commit
    (:func:`provenance`). A run named in ``sources`` must have its file there; under
    ``runs_dir`` missing runs are skipped."""
    sources = dict(sources or {})
    for run in sources:
        if run not in COMMANDS:
            raise ValueError(f"unknown run {run!r}: collect one of {sorted(COMMANDS)}.")
    dirs = {run: (os.path.join(runs_dir, run), f"runs/{run}") for run in COMMANDS if runs_dir}
    dirs.update({run: (d, _source_label(d)) for run, d in sources.items()})
    os.makedirs(RESULTS, exist_ok=True)
    written = []
    for run, (src, label) in dirs.items():
        name = SUMMARIES.get(run, "metrics.json")
        path = os.path.join(src, name)
        if not os.path.exists(path):
            if run in sources:
                raise FileNotFoundError(f"--collect {run}={sources[run]}: no {name} there.")
            continue
        made = provenance(run, src)
        head = {"command": made.pop("command"), "measured": _date(path), "commit": made.pop("commit"),
                "source": f"{label}/{name}", **made}
        with open(path) as f:
            found = json.load(f)
        if run in ("fashion_mnist-study", "fashion_mnist-chains"):
            payload = {**head, **found}
        elif run == "toy2d-dde-study":
            payload = {**head, "rows": [{"label": k, "overrides": v.pop("overrides", []),
                                         "metrics": {a: b for a, b in v.items() if a != "mode_weights"}}
                                        for k, v in found["rows"].items()]}
        else:
            payload = {**head, "metrics": found}
            log = os.path.join(src, "metrics.jsonl")
            if os.path.exists(log):
                with open(log) as f:
                    records = [json.loads(line) for line in f if '"generator_monitor"' in line]
                if records:  # a resumed run logs some steps twice: keep the later record
                    payload["generator_monitor"] = sorted({r["step"]: r for r in records}.values(), key=lambda r: r["step"])
        with open(os.path.join(RESULTS, f"{run}.json"), "w") as f:
            json.dump(payload, f, indent=1, ensure_ascii=False)
            f.write("\n")
        written.append(run)
    return written


def collect_args(collects: list[str]) -> dict:
    """``collect``'s keyword arguments from ``--collect`` values: one ``RUNS_DIR``, or any number
    of ``RUN=DIR``."""
    runs_dirs, sources = [], {}
    for value in collects:
        run, sep, directory = value.partition("=")
        if sep and (run in COMMANDS or not os.path.isdir(value)):
            if run not in COMMANDS:
                raise ValueError(f"--collect {value}: unknown run {run!r}; one of {sorted(COMMANDS)}.")
            sources[run] = directory
        else:
            runs_dirs.append(value)
    if len(runs_dirs) > 1:
        raise ValueError(f"--collect takes one RUNS_DIR, got {runs_dirs}; name other runs as RUN=DIR.")
    return {"runs_dir": runs_dirs[0] if runs_dirs else None, "sources": sources}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when a table differs from its JSON; change nothing")
    parser.add_argument("--collect", metavar="RUNS_DIR|RUN=DIR", action="append", default=[],
                        help="first copy the runs' metrics into docs/results/: every run under RUNS_DIR/<run>/, "
                             "or run RUN from DIR (repeatable)")
    args = parser.parse_args(argv)
    if args.collect:
        try:
            written = collect(**collect_args(args.collect))
        except (ValueError, FileNotFoundError) as err:
            parser.error(str(err))
        print("collected:", ", ".join(written) or "nothing")
    stale = []
    for path in documents():
        with open(path, encoding="utf-8") as f:
            text = f.read()
        new = render(text, path)
        if new == text:
            continue
        rel = os.path.relpath(path, ROOT)
        if args.check:
            stale.append(rel)
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True), rel, rel + " (from JSON)"))
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
            print(f"updated {rel}")
    if stale:
        print(f"\nstale tables in {', '.join(stale)}: run python scripts/results_tables.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
