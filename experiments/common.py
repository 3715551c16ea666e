"""What every experiment's ``main`` shares: the run directory and its ``config.json``, JSON
and JSONL records, a monitor that fit calls every N steps (its time kept apart from the
training time), one timing harness, markdown tables, and image data loading (Fashion-MNIST
or any prepared TFDS image set, ``data.dataset``) and classifier scoring. Library logic stays
in ``dsm_jax``; this is host-side scaffolding."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Callable

import jax
import numpy as np

from dsm_jax import config as cfgs
from dsm_jax import data, image_metrics, parallel, runlog, validation
from dsm_jax.config import field


# ---------------------------------------------------------------------------------------
# Run directory, config and records
# ---------------------------------------------------------------------------------------
def start(base, presets: dict, doc: str, argv=None, *, script: str, flags=(), distributed: bool = True):
    """Parse ``--preset``/``--set`` (validated), make the run directory (default
    ``runs/<script>-<preset>``) and write its ``config.json``; returns ``(cfg, args, out)``.
    ``distributed``: initialise multi-host JAX first (multi-host launches only; before any
    JAX computation)."""
    if distributed:
        parallel.maybe_initialize_distributed()
    cfg, args = cfgs.parse_args(base, presets, doc.splitlines()[0], argv, flags=flags)
    out = args.out or os.path.join("runs", f"{script}-{args.preset}")
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "config.json"), {"preset": args.preset, **cfgs.to_dict(cfg)})
    return cfg, args, out


def experiment_of(config_json: dict) -> str:
    """Which image experiment wrote a run's ``config.json``: ``"mdsm"`` (fashion_mnist) or
    ``"dde"`` (fashion_mnist_dde); reads the nested names and the flat ones of earlier runs."""
    keys = set(config_json)
    if {"train.sigma_min", "train.sigma0"} <= keys or {"sigma_min", "sigma0"} <= keys:
        return "mdsm"
    if {"gen.every", "train.sigma"} <= keys or {"gen_every", "sigma"} <= keys:
        return "dde"
    raise ValueError("Cannot tell which experiment wrote this run's config.json (expected the fields of "
                     "experiments.fashion_mnist or experiments.fashion_mnist_dde); pass the run directory of one.")


def write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def write_summary(out: str, stem: str, summary, table: str) -> None:
    """A study's two files: ``<out>/<stem>.json`` (``summary``) and ``<out>/<stem>.md`` (``table``)."""
    write_json(os.path.join(out, f"{stem}.json"), summary)
    with open(os.path.join(out, f"{stem}.md"), "w") as f:
        f.write(table + "\n")


def read_json(path: str):
    with open(path) as f:
        return json.load(f)


class Monitor:
    """A ``fit`` callback (wrap it in ``dj.Every(n, monitor, at_end=True)`` or
    :class:`EverySeconds` to choose when) that calls ``measure(state, step, train_seconds) ->
    record | None``, appends the record to ``log_path`` and keeps the seconds it spends
    apart: :meth:`train_seconds` is the wall-clock since ``start`` minus the monitor's own
    time. ``clock`` (seconds, default ``time.perf_counter``) is there for tests."""

    def __init__(self, measure: Callable, log_path: str | None, start: float | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.measure, self.log_path, self.clock = measure, log_path, clock
        self.start = clock() if start is None else start
        self.seconds = 0.0

    def train_seconds(self) -> float:
        return self.clock() - self.start - self.seconds

    def __call__(self, state, record) -> None:
        t0 = self.clock()
        entry = self.measure(state, record["step"], t0 - self.start - self.seconds)
        if entry is not None and self.log_path:
            runlog.append_record(self.log_path, entry)
        self.seconds += self.clock() - t0


class EverySeconds:
    """A plain ``fit`` callback (fit calls it at every chunk end) that runs ``monitor`` (a
    :class:`Monitor`) at the first chunk end where its training seconds (the monitor's own
    time excluded) reach the next multiple of ``seconds``, and, with ``at_end``, at step
    ``n_steps``. A chunk that spans several multiples gives one point; the next is due at the
    multiple after the current time. ``seconds`` 0 runs it at every chunk end."""

    def __init__(self, seconds: float, monitor: Monitor, n_steps: int, at_end: bool = False):
        if not validation.is_real_number(seconds) or not 0 <= seconds < float("inf"):
            raise ValueError(f"`seconds` (the monitor's period) must be a finite number >= 0, got {seconds!r}; "
                             "e.g. --set train.monitor_every_seconds=300.")
        self.seconds, self.monitor, self.n_steps, self.at_end = float(seconds), monitor, n_steps, at_end
        self.due_at = self.seconds

    def __call__(self, state, record) -> None:
        now = self.monitor.train_seconds()
        if now >= self.due_at or (self.at_end and record["step"] >= self.n_steps):
            self.monitor(state, record)
            if self.seconds > 0:
                self.due_at = (np.floor(now / self.seconds) + 1) * self.seconds


MONITOR_FIELDS = ("fd", "classes_under", "class_min", "class_kl")  # what a monitor's record scores


def sample_scorer(clf_params, x_test, y_test) -> Callable:
    """``score(samples) -> {fd, classes_under, class_min, class_kl}``
    (:func:`dsm_jax.image_metrics.make_sample_scorer`, the monitor's fields): the FD of the
    samples clipped to [0, 1], as :meth:`Images.score` scores them, against the test set's
    classifier features, and their class coverage against ``y_test`` — the same numbers as
    :meth:`Images.score`'s ``fd`` and coverage fields, without its floor, baselines and
    training-set features (~40 s), so training monitors can call it often. ``None`` when a
    sample is non-finite."""
    scorer = image_metrics.make_sample_scorer(clf_params, x_test, y_test)

    def score(samples):
        scores = scorer(samples)
        return None if scores is None else {k: scores[k] for k in MONITOR_FIELDS}

    return score


# ---------------------------------------------------------------------------------------
# Timing: the one harness
# ---------------------------------------------------------------------------------------
def time_calls(calls: dict[str, Callable], repeats: int, warmup: dict[str, Callable] | None = None) -> dict:
    """``{name: (first_call_seconds, median_seconds)}`` of zero-argument ``calls`` (each
    returns arrays, waited for with ``block_until_ready``). The first call of each (or of
    its ``warmup`` twin, e.g. one chunk of a long run) compiles and is reported apart; then
    ``repeats`` rounds run round-robin, so slow drifts in machine load hit all of them alike."""
    warmup = warmup or calls
    first = {name: _seconds(warmup.get(name, call)) for name, call in calls.items()}
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            times[name].append(_seconds(call))
    return {name: (first[name], float(np.median(times[name]))) for name in calls}


def _seconds(call: Callable) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------
# Tables and checks of results
# ---------------------------------------------------------------------------------------
def markdown_table(header: list[str], rows: list[list]) -> str:
    """A markdown table: ``header`` cells, then one line per row of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def refuse_nonfinite(samples, what: str, fix: str) -> None:
    """Never write or score NaN images: raise naming how many samples are non-finite."""
    finite = np.isfinite(np.asarray(samples)).reshape(len(samples), -1).all(axis=1)
    if not finite.all():
        raise FloatingPointError(f"{int((~finite).sum())} of {len(samples)} {what} are non-finite (first at "
                                 f"index {int(np.argmin(finite))}); nothing was written. {fix}")


def n_params(tree) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(tree)))


# ---------------------------------------------------------------------------------------
# Image data (Fashion-MNIST by default) and classifier scoring (shared by the image experiments)
# ---------------------------------------------------------------------------------------
OFF = dict(resume=False)
PAD_TO = 32  # MDSM zero-pads 28×28 sets to 32×32 so its nets halve cleanly; larger images keep their size
REFUSED = {  # data sets refused up front, and why (docs/datasets.md)
    "celeb_a": "its 218x178 images need MDSM's crop-and-resize to 64x64, which is not implemented, and it has no "
               "class labels for the FD classifier",
}


@dataclasses.dataclass(frozen=True)
class ImageData:
    """Where the images and the FD classifier come from, and how samples are scored."""
    # fashion_mnist (default), mnist, cifar10, or any prepared TFDS image set with labels 0..9 (docs/datasets.md)
    dataset: str = field("fashion_mnist", added=True)
    data_dir: str | None = field(None, legacy_none="", **OFF)   # IDX files (None: Debian's /usr/share/datasets/fashion-mnist)
    cache_dir: str | None = field(None, legacy_none="", **OFF)  # prepared TFDS data (None: $DSM_JAX_TFDS_DIR or ~/.cache/dsm_jax)
    classifier_dir: str = field("runs/classifier", **OFF)       # FD classifiers' checkpoints (one per set), shared by runs
    train_limit: int | None = field(None, legacy_none=0)        # only the first N training images (None: all)
    test_limit: int | None = field(None, legacy_none=0, **OFF)  # only the first N test images (None: all; smoke only)
    classifier_steps: int = field(3000, **OFF)
    fd_n: int = field(1000, **OFF)


def check_image_data(d: ImageData) -> None:
    """Refuse a data set the image experiments cannot run on, before anything loads."""
    if not isinstance(d.dataset, str) or not d.dataset:
        raise ValueError(f"`data.dataset` must be a data set name, got {d.dataset!r}; fix it with "
                         "--set data.dataset=fashion_mnist.")
    if d.dataset in REFUSED:
        raise ValueError(f"`data.dataset` {d.dataset!r} is refused: {REFUSED[d.dataset]}. Use fashion_mnist, mnist, "
                         "cifar10 or another prepared TFDS image set of at most 32x32 pixels with labels 0..9.")


def _pad_to(raw_shape) -> int | None:
    return PAD_TO if max(raw_shape[:2]) <= PAD_TO else None


@functools.lru_cache(maxsize=None)
def _raw_shape(name: str, data_dir, cache_dir) -> tuple[int, ...]:
    return data.image_shape(name, data_dir=data_dir, cache_dir=cache_dir)


def image_shape(d: ImageData) -> tuple[int, int, int]:
    """The models' input shape (H, W, C) for ``d.dataset``: (32, 32, 1) for Fashion-MNIST and
    MNIST (padded), (32, 32, 3) for CIFAR-10; known sets need no data, others are read from
    their first image (:func:`dsm_jax.data.image_shape`)."""
    raw = _raw_shape(d.dataset, d.data_dir, d.cache_dir)
    return data.padded_shape(raw, _pad_to(raw))


def classifier_root(d: ImageData) -> str:
    """Where ``d.dataset``'s FD classifiers are cached: one directory per data set (Fashion-MNIST
    keeps ``classifier_dir`` itself, where earlier runs cached theirs), so a classifier trained
    on one set is never reused for another."""
    return d.classifier_dir if d.dataset == "fashion_mnist" else os.path.join(d.classifier_dir, d.dataset)


def load_images(d: ImageData):
    """``(x_train, y_train, x_test, y_test)`` of ``d.dataset``, checked to be (n, *image_shape(d))
    images in [0, 1] with class labels (the FD classifier needs them)."""
    check_image_data(d)
    shape, raw = image_shape(d), _raw_shape(d.dataset, d.data_dir, d.cache_dir)
    where = dict(data_dir=d.data_dir, cache_dir=d.cache_dir, pad_to=_pad_to(raw))
    x_train, y_train = data.load_arrays(d.dataset, "train", limit=d.train_limit, **where)
    x_test, y_test = data.load_arrays(d.dataset, "test", limit=d.test_limit, **where)
    data.check_images("x_train", x_train, shape)
    data.check_images("x_test", x_test, shape)
    if min(y_train.min(), y_test.min()) < 0:
        raise ValueError(f"`data.dataset` {d.dataset!r} has no 'label' feature; the FD classifier trains on class "
                         "labels 0..9, so pick a labelled image set.")
    return x_train, y_train, x_test, y_test


load_fashion = load_images  # its name before other data sets


@dataclasses.dataclass(frozen=True)
class Images:
    """The data set and its classifier, loaded once by :func:`images`; :meth:`score` gives a
    sample set's FD report (floor, Gaussian baseline, IS analogue, class coverage)."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    clf_params: dict
    clf_info: dict
    fd_n: int

    def score(self, samples, key) -> dict:
        # Scored as displayed: clipped to the data range [0, 1] (the chains themselves never clip).
        return image_metrics.fd_report(self.clf_params, samples, self.x_train, self.x_test,
                                       n=min(self.fd_n, len(samples)), key=key, clip_samples=True,
                                       test_labels=self.y_test)


def images(d: ImageData, seed: int, progress: bool) -> Images:
    """``d.dataset`` and the metric's classifier trained on it, once, and cached under
    :func:`classifier_root` (shared by every image experiment)."""
    x_train, y_train, x_test, y_test = load_images(d)
    clf_params, clf_info = image_metrics.cached_classifier(
        x_train, y_train, x_test, y_test, root=classifier_root(d), steps=d.classifier_steps, seed=seed,
        progress=progress)
    return Images(x_train, y_train, x_test, y_test, clf_params, clf_info, d.fd_n)
