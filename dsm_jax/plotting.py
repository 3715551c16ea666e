"""PNG figures of what the models produce (matplotlib, headless).

Figures are built with the object-oriented API (``matplotlib.figure.Figure``, which
renders to PNG through Agg on ``savefig``), never through pyplot: importing this module
leaves the user's backend alone (a notebook keeps its inline figures) and headless runs
need no display.
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from dsm_jax import metrics, validation


def _heat(ax, image, bounds, title):
    lo, hi = bounds
    ax.imshow(image, origin="lower", extent=(lo, hi, lo, hi), cmap="viridis")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def toy_figure(path, toy, sigma, grid, panels: dict, results: dict, toy_name: str) -> None:
    """True p̂_σ, then per method the learned density or the samples over the true density."""
    if not isinstance(panels, dict):
        raise TypeError(f"`panels` must be a dict method -> {{'log_density': fn}} or {{'samples': array}}, "
                        f"got {type(panels).__name__}.")
    true_img = np.exp(metrics.log_density_grid_image(lambda x: toy.log_density(x, sigma), grid))
    fig = Figure(figsize=(3.2 * (1 + len(panels)), 3.4))
    axes = np.atleast_1d(fig.subplots(1, 1 + len(panels)))
    _heat(axes[0], true_img, grid.bounds, f"true p̂ (σ={sigma})")
    for ax, (method, panel) in zip(axes[1:], panels.items()):
        r = results[f"{toy_name}/{method}"]
        label = f"{method}\nKL {r['kl']:.3f} ± {r['kl_stderr']:.3f}"
        if "log_density" in panel:
            _heat(ax, np.exp(metrics.log_density_grid_image(panel["log_density"], grid)), grid.bounds, label)
        else:
            _heat(ax, true_img, grid.bounds, label)
            s = panel["samples"][:3000]
            ax.scatter(s[:, 0], s[:, 1], s=1.0, c="red", alpha=0.6, linewidths=0)
            ax.set_xlim(*grid.bounds)
            ax.set_ylim(*grid.bounds)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def loss_curves(path, curves: dict, title: str, series: dict | None = None) -> None:
    """One panel per run: named metric curves against the step. ``curves[name]`` is a list of
    records ``{"step": ..., metric: value, ...}`` (a :func:`dsm_jax.runlog.read_log`
    result); ``series[name]`` maps each legend label to the metric it plots (default
    ``{"loss": "loss"}``). A panel whose metrics are all KLs is drawn on a log scale."""
    if not isinstance(curves, dict) or not curves:
        raise ValueError(f"`curves` must be a non-empty dict run name -> list of records, got {curves!r:.80}.")
    series = series or {}
    fig = Figure(figsize=(3.8 * len(curves), 2.9))
    axes = fig.subplots(1, len(curves), squeeze=False)
    for ax, (name, history) in zip(axes[0], curves.items()):
        lines = series.get(name, {"loss": "loss"})
        for label, key in lines.items():
            rows = [(h["step"], h[key]) for h in history if key in h]
            if rows:
                ax.plot(*zip(*rows), lw=1, label=label)
        if all("kl" in key for key in lines.values()):
            ax.set_yscale("log")
        if len(lines) > 1:
            ax.legend(fontsize=7)
        ax.set_title(f"{title}/{name}", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel(next(iter(lines)) if len(lines) == 1 else "value")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def quality_vs_time(path, curves: dict, *, baseline: tuple[float, float] | None = None, floor: float | None = None,
                    title: str = "") -> None:
    """FD against training minutes, one line per run: ``curves[name]`` is a list of monitor
    records with ``train_seconds`` and ``fd`` (records without an ``fd``, e.g. non-finite
    points, are left out). ``baseline`` ``(mean, std)``: the Gaussian-baseline FD as a line with
    its ±2 std band; ``floor``: the FD floor as a dashed line. FD on a log scale, so the floor
    and the curves share one panel."""
    if not isinstance(curves, dict) or not curves:
        raise ValueError(f"`curves` must be a non-empty dict run name -> list of records, got {curves!r:.80}.")
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    for name, records in curves.items():
        points = sorted((r["train_seconds"] / 60, r["fd"]) for r in records if "fd" in r and "train_seconds" in r)
        if points:
            ax.plot(*zip(*points), marker="o", ms=3, lw=1.2, label=name)
    if baseline is not None:
        mean, std = baseline
        ax.axhspan(max(mean - 2 * std, 1e-6), mean + 2 * std, color="0.85", zorder=0)
        ax.axhline(mean, color="0.4", lw=1, label=f"Gaussian baseline {mean:.1f} ± 2·{std:.1f}")
    if floor is not None:
        ax.axhline(floor, color="0.4", lw=1, ls="--", label=f"floor (training subset) {floor:.2f}")
    ax.set_yscale("log")
    ax.set_xlabel("training minutes (monitor time excluded)")
    ax.set_ylabel("FD (classifier features)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def image_grid(path, images, n_cols: int = 10, title: str | None = None) -> None:
    """Save ``images`` (n, H, W) or (n, H, W, C) in [0, 1] as one PNG grid. Non-finite images
    raise ``FloatingPointError`` (clipping would hide them) and nothing is written."""
    n_cols = validation.check_positive_int("n_cols", n_cols)
    images = np.asarray(images)
    if images.ndim not in (3, 4) or len(images) == 0 or not np.issubdtype(images.dtype, np.number):
        raise ValueError(f"`images` must be a non-empty numeric array (n, H, W) or (n, H, W, C), got shape "
                         f"{images.shape} and dtype {images.dtype}.")
    finite = np.isfinite(images).reshape(len(images), -1).all(axis=1)
    if not finite.all():
        raise FloatingPointError(f"{int((~finite).sum())} of {len(images)} images for {path} are non-finite "
                                 f"(first at index {int(np.argmin(finite))}); the grid was not written.")
    images = np.clip(images, 0.0, 1.0)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    n = images.shape[0]
    n_rows = -(-n // n_cols)
    h, w = images.shape[1:3]
    canvas = np.ones((n_rows * (h + 1) + 1, n_cols * (w + 1) + 1) + images.shape[3:], np.float32)
    for i in range(n):
        r, c = divmod(i, n_cols)
        canvas[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + c * (w + 1): 1 + c * (w + 1) + w] = images[i]
    fig = Figure(figsize=(canvas.shape[1] / 40, canvas.shape[0] / 40 + (0.3 if title else 0)))
    ax = fig.add_subplot()
    ax.imshow(canvas, cmap="gray" if canvas.ndim == 2 else None, vmin=0, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
