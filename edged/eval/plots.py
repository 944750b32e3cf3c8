"""PNG plots drawn with matplotlib (the optional extra `edged[plots]`): curves, ROC, labelled scatter.

Used for FAR/FRR curves (`edged calibrate --plot`), the LFW ROC (`edged eval lfw --roc`), DIR vs FPIR
curves and the t-SNE/PCA map of the gallery (`edged gallery plot`). Only matplotlib's object-oriented API
is used (`Figure` + `FigureCanvasAgg`, never pyplot): no global figure registry, no GUI backend.
matplotlib is imported when a plot is drawn, so importing this module (and the CLI) stays cheap.

`*_figure` build a figure; `plot_*` also write it as a PNG file, atomically with mode 0644. Text is drawn
literally (no mathtext, so '$' in a name is just '$'); any character DejaVu Sans has is drawn as itself.
"""

from __future__ import annotations

import colorsys
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edged.errors import EdgedError
from edged.eval.lfw import tpr_at
from edged.fileio import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MISSING = "plots need matplotlib: pip install 'edged[plots]'"
#: RGB colours: matplotlib's tab10, then evenly spread hues.
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
#: ROC plot colours (RGB): the mean curve, the per-fold curves, the chance diagonal.
MEAN_COLOUR = PALETTE[0]
FOLD_COLOUR = (170, 170, 170)
CHANCE_COLOUR = (90, 90, 90)
GRID_COLOUR = (228, 228, 228)
#: Most legend entries drawn; the rest are summarised as "+N more".
LEGEND_MAX = 24
#: Left end of the ROC's logarithmic false positive rate axis.
FPR_MIN = 1e-3
DPI = 100


def colour(i: int) -> tuple[int, int, int]:
    """A distinct RGB colour for series/class number `i`."""
    if i < len(PALETTE):
        return PALETTE[i]
    h = (i * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.75, 0.85)
    return round(r * 255), round(g * 255), round(b * 255)


@dataclass(frozen=True)
class Series:
    """One curve: points (x[i], y[i]) joined by lines."""

    label: str
    x: np.ndarray
    y: np.ndarray
    colour: tuple[int, int, int] | None = None


def _rgb(c: tuple[int, int, int]) -> tuple[float, float, float]:
    return c[0] / 255, c[1] / 255, c[2] / 255


def _figure(size: tuple[int, int], title: str, xlabel: str, ylabel: str) -> tuple[Figure, Axes]:
    """A `size` (width, height) pixel figure with an Agg canvas and one titled, gridded axes."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise EdgedError(MISSING) from None
    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11, parse_math=False)
    ax.set_xlabel(xlabel, parse_math=False)
    ax.set_ylabel(ylabel, parse_math=False)
    ax.grid(True, which="major", color=_rgb(GRID_COLOUR), linewidth=0.8)
    ax.set_axisbelow(True)
    return fig, ax


def _legend(where: Any, handles: list[Any], labels: list[str], **kwargs: Any) -> None:
    """A legend of at most LEGEND_MAX entries (then "+N more"); labels drawn literally, even '_name'."""
    if not handles:
        return
    from matplotlib.lines import Line2D

    if len(handles) > LEGEND_MAX:
        more = len(handles) - LEGEND_MAX
        handles = [*handles[:LEGEND_MAX], Line2D([], [], linestyle="none")]
        labels = [*labels[:LEGEND_MAX], f"+{more} more"]
    legend = where.legend(handles, labels, fontsize=9, **kwargs)
    for text in legend.get_texts():
        text.set_parse_math(False)


def _png_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.suffix.lower() != ".png":
        raise EdgedError(f"{p}: plots are written as PNG; use a .png file name")
    return p


def save_png(path: str | os.PathLike[str], fig: Figure) -> None:
    """Render `fig` as PNG and write it via temp file + rename (mode 0644); one-line EdgedError on failure."""
    p = _png_path(path)
    buf = io.BytesIO()
    try:
        fig.canvas.print_png(buf)  # type: ignore[attr-defined]
    except (ValueError, RuntimeError, OverflowError) as exc:
        raise EdgedError(f"{p}: cannot draw the plot: {exc}") from None
    atomic_write(p, buf.getvalue(), 0o644)


# ---- line curves ----

def curves_figure(series: Sequence[Series], title: str = "", xlabel: str = "", ylabel: str = "",
                  log_x: bool = False, y_range: tuple[float, float] | None = None,
                  vlines: Sequence[tuple[float, str]] = (), size: tuple[int, int] = (900, 600)) -> Figure:
    """Line plot of several series with a legend; `vlines` are labelled vertical markers.

    With `log_x`, points with x <= 0 are left out (they have no place on a log axis: FPIR 0, threshold
    0); a series with no x > 0 at all is an EdgedError. Non-finite values break the line.
    """
    fig, ax = _figure(size, title, xlabel, ylabel)
    handles, labels = [], []
    for i, s in enumerate(series):
        x, y = np.asarray(s.x, np.float64).ravel(), np.asarray(s.y, np.float64).ravel()
        if len(x) != len(y):
            raise ValueError(f"series {s.label!r}: {len(x)} x values but {len(y)} y values")
        if log_x:
            keep = ~(x <= 0)  # NaN stays (a gap)
            if len(x) and not np.any(x[keep] > 0):
                raise EdgedError(f"series {s.label!r}: no x value > 0 to draw on a logarithmic x axis")
            x, y = x[keep], y[keep]
        (line,) = ax.plot(x, y, color=_rgb(s.colour or colour(i)), linewidth=2,
                          marker="o" if np.isfinite(x * y).sum() == 1 else None)
        handles.append(line)
        labels.append(s.label)
    if log_x:
        ax.set_xscale("log")
        ax.grid(True, which="minor", color=_rgb(GRID_COLOUR), linewidth=0.4)
    ax.margins(x=0)
    if y_range is not None:
        ax.set_ylim(*y_range)
    ax.autoscale_view()
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi)  # markers outside the curves' range are not drawn, and do not widen it
    for x, label in vlines:
        if lo <= x <= hi:
            ax.axvline(x, color=_rgb(CHANCE_COLOUR), linewidth=1, linestyle="--")
            ax.text(x, 0.99, f" {label}", transform=ax.get_xaxis_transform(), va="top", ha="left", fontsize=9,
                    parse_math=False)
    _legend(ax, handles, labels, loc="best")
    return fig


def plot_curves(path: str | os.PathLike[str], series: Sequence[Series], title: str = "", xlabel: str = "",
                ylabel: str = "", log_x: bool = False, y_range: tuple[float, float] | None = None,
                vlines: Sequence[tuple[float, str]] = ()) -> None:
    """`curves_figure` written to a PNG file (900x600)."""
    _png_path(path)
    save_png(path, curves_figure(series, title, xlabel, ylabel, log_x, y_range, vlines))


# ---- ROC ----

def mean_roc(curves: Sequence[tuple[np.ndarray, np.ndarray]], grid: np.ndarray) -> np.ndarray:
    """Mean over curves of the TPR reachable at each grid FPR."""
    return np.mean([tpr_at(fpr, tpr, grid) for fpr, tpr in curves], axis=0)


def roc_tpr_floor(curves: Sequence[tuple[np.ndarray, np.ndarray]], fpr_min: float = FPR_MIN) -> float:
    """Bottom of the TPR axis: the lowest tenth any curve reaches inside the plot (0 to 0.9).

    On LFW accurate embedders reach TPR near 1 at FPR 0.01, which a 0..1 axis squeezes into a corner.
    """
    lowest = min((float(tpr_at(fpr, tpr, np.array([fpr_min]))[0]) for fpr, tpr in curves), default=0.0)
    return float(min(0.9, max(0.0, math.floor(lowest * 10 - 1e-9) / 10)))


def roc_figure(curves: Sequence[tuple[np.ndarray, np.ndarray]], title: str, legend: str,
               fpr_min: float = FPR_MIN, size: tuple[int, int] = (800, 600)) -> Figure:
    """Per-fold ROC curves (grey), their mean (blue) and chance (dashed) on a log FPR axis.

    Curves are (fpr, tpr) arrays sorted by fpr (`roc_points`) and drawn as the step functions they are:
    the TPR reachable at FPR <= x. FPRs below `fpr_min` (0 included) are drawn at the left edge.
    """
    fig, ax = _figure(size, title, "false positive rate (log scale)", "true positive rate")
    from matplotlib.ticker import FuncFormatter

    floor = roc_tpr_floor(curves, fpr_min)
    diagonal = np.logspace(math.log10(fpr_min), 0, 200)
    (chance,) = ax.plot(diagonal, diagonal, color=_rgb(CHANCE_COLOUR), linewidth=1, linestyle="--")
    handles, labels = [], []
    breaks = [np.array([fpr_min, 1.0])]
    fold = None
    for fpr, tpr in curves:
        fx = np.clip(np.asarray(fpr, np.float64), fpr_min, 1.0)
        (fold,) = ax.step(fx, tpr, where="post", color=_rgb(FOLD_COLOUR), linewidth=1)
        breaks.append(fx)
    if curves:
        grid = np.unique(np.concatenate(breaks))
        (mean,) = ax.step(grid, mean_roc(curves, grid), where="post", color=_rgb(MEAN_COLOUR), linewidth=2)
        handles.append(mean)
        labels.append(legend)
    if fold is not None:
        handles.append(fold)
        labels.append("held-out folds")
    handles.append(chance)
    labels.append("chance")
    ax.set_xscale("log")
    ax.set_xlim(fpr_min, 1.0)
    ax.set_ylim(floor, 1.0 + (1.0 - floor) * 0.005)  # room for the line at TPR 1
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.grid(True, which="minor", color=_rgb(GRID_COLOUR), linewidth=0.4)
    _legend(ax, handles, labels, loc="lower right")
    return fig


def plot_roc(path: str | os.PathLike[str], curves: Sequence[tuple[np.ndarray, np.ndarray]], title: str,
             legend: str) -> None:
    """`roc_figure` written to a PNG file (800x600)."""
    _png_path(path)
    save_png(path, roc_figure(curves, title, legend))


# ---- scatter ----

def scatter_figure(points: np.ndarray, labels: np.ndarray, names: Sequence[str], title: str = "",
                   xlabel: str = "", ylabel: str = "", size: tuple[int, int] = (900, 650)) -> Figure:
    """2-D points coloured by class (`labels` index into `names`), with a legend of names."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    labels = np.asarray(labels, np.int64).ravel()
    if len(labels) != len(pts):
        raise ValueError(f"{len(pts)} points but {len(labels)} labels")
    fig, ax = _figure(size, title, xlabel, ylabel)
    handles, shown = [], []
    for i in sorted(set(labels.tolist())):
        mine = pts[labels == i]
        handles.append(ax.scatter(mine[:, 0], mine[:, 1], s=80, color=_rgb(colour(i)),
                                  edgecolors=[_rgb((60, 60, 60))], linewidths=0.8))
        shown.append(names[i])
    ax.margins(0.06)
    _legend(fig, handles, shown, loc="outside right upper", frameon=False)
    return fig


def plot_scatter(path: str | os.PathLike[str], points: np.ndarray, labels: np.ndarray, names: Sequence[str],
                 title: str = "", xlabel: str = "", ylabel: str = "") -> None:
    """`scatter_figure` written to a PNG file (900x650)."""
    _png_path(path)
    save_png(path, scatter_figure(points, labels, names, title, xlabel, ylabel))


def project_2d(vectors: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2) by PCA (numpy SVD) or t-SNE (scikit-learn; perplexity adapted to small N).

    t-SNE takes minutes for thousands of samples on a small CPU; use PCA there.
    """
    v = np.asarray(vectors, np.float64)
    n = len(v)
    if n == 0:
        return np.zeros((0, 2))
    if method == "pca" or n < 4:
        centred = v - v.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        out = centred @ vt[:2].T
        return np.pad(out, ((0, 0), (0, 2 - out.shape[1]))) if out.shape[1] < 2 else out
    if method != "tsne":
        raise ValueError(f"unknown projection {method!r} (tsne or pca)")
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    # Exact t-SNE is much faster than Barnes-Hut for small galleries (9 points: 0.2 s vs 15 s here).
    method_kind = "exact" if n <= 150 else "barnes_hut"
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                method=method_kind).fit_transform(v)
