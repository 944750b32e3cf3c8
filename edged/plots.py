"""Small plots drawn with OpenCV (no plotting library): line curves and labelled scatter plots.

`render_*` are pure (arrays in, an RGB uint8 image out); `plot_*` also write the PNG atomically.
Used for FAR/FRR curves (`edged calibrate --plot`), ROC-style curves and t-SNE/PCA views of
the gallery (`edged gallery plot`). OpenCV's Hershey fonts are ASCII-only: other characters
are drawn as '?'.
"""

from __future__ import annotations

import colorsys
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edged.errors import EdgedError
from edged.fileio import atomic_write
from edged.imageio import encode_png

#: RGB colours: matplotlib's tab10, then evenly spread hues.
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
BACKGROUND = (255, 255, 255)
AXIS = (0, 0, 0)
GRID = (228, 228, 228)
FONT = cv2.FONT_HERSHEY_SIMPLEX
#: Most legend entries drawn; the rest are summarised as "+N more".
LEGEND_MAX = 24


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


@dataclass(frozen=True)
class _Axes:
    left: int
    top: int
    right: int
    bottom: int
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    log_x: bool = False
    log_y: bool = False

    def _frac(self, v: np.ndarray, lo: float, hi: float, log: bool) -> np.ndarray:
        v = np.asarray(v, np.float64)
        if log:
            v, lo, hi = np.log10(np.maximum(v, lo)), math.log10(lo), math.log10(hi)
        return (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)

    def px(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        fx = self._frac(x, *self.x_range, self.log_x)
        fy = self._frac(y, *self.y_range, self.log_y)
        xs = self.left + fx * (self.right - self.left)
        ys = self.bottom - fy * (self.bottom - self.top)
        return np.stack([xs, ys], axis=-1)


def _ascii(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.45,
          colour: tuple[int, int, int] = AXIS, anchor: str = "left") -> None:
    text = _ascii(text)
    (w, h), _ = cv2.getTextSize(text, FONT, scale, 1)
    x, y = org
    if anchor == "center":
        x -= w // 2
    elif anchor == "right":
        x -= w
    cv2.putText(img, text, (int(x), int(y + h // 2)), FONT, scale, colour, 1, cv2.LINE_AA)


def _vertical_text(img: np.ndarray, text: str, centre: tuple[int, int], scale: float = 0.5) -> None:
    text = _ascii(text)
    (w, h), base = cv2.getTextSize(text, FONT, scale, 1)
    tile = np.full((h + base + 4, w + 4, 3), BACKGROUND, np.uint8)
    cv2.putText(tile, text, (2, h + 2), FONT, scale, AXIS, 1, cv2.LINE_AA)
    tile = cv2.rotate(tile, cv2.ROTATE_90_COUNTERCLOCKWISE)
    th, tw = tile.shape[:2]
    x0, y0 = max(centre[0] - tw // 2, 0), max(centre[1] - th // 2, 0)
    region = img[y0:y0 + th, x0:x0 + tw]
    region[...] = np.minimum(region, tile[:region.shape[0], :region.shape[1]])


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    v = first
    while v <= hi + 1e-9 * step:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _log_ticks(lo: float, hi: float) -> list[float]:
    return [10.0 ** e for e in range(math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9) + 1)]


def _fmt(v: float) -> str:
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.0e}"
    return f"{v:.6g}"


def _frame(width: int, height: int, title: str, xlabel: str, ylabel: str, legend_width: int) -> tuple[np.ndarray,
                                                                                                    tuple[int, ...]]:
    img = np.full((height, width, 3), BACKGROUND, np.uint8)
    box = (78, 48, width - 24 - legend_width, height - 62)
    _text(img, title, (width // 2, 22), 0.6, anchor="center")
    _text(img, xlabel, ((box[0] + box[2]) // 2, height - 18), 0.5, anchor="center")
    _vertical_text(img, ylabel, (18, (box[1] + box[3]) // 2))
    return img, box


def _draw_axes(img: np.ndarray, ax: _Axes) -> None:
    xt = _log_ticks(*ax.x_range) if ax.log_x else nice_ticks(*ax.x_range)
    yt = _log_ticks(*ax.y_range) if ax.log_y else nice_ticks(*ax.y_range)
    for v in xt:
        x = round(ax.px(np.array([v]), np.array([ax.y_range[0]]))[0, 0])
        cv2.line(img, (x, ax.top), (x, ax.bottom), GRID, 1)
        cv2.line(img, (x, ax.bottom), (x, ax.bottom + 5), AXIS, 1)
        _text(img, _fmt(v), (x, ax.bottom + 16), anchor="center")
    for v in yt:
        y = round(ax.px(np.array([ax.x_range[0]]), np.array([v]))[0, 1])
        cv2.line(img, (ax.left, y), (ax.right, y), GRID, 1)
        cv2.line(img, (ax.left - 5, y), (ax.left, y), AXIS, 1)
        _text(img, _fmt(v), (ax.left - 8, y), anchor="right")
    cv2.rectangle(img, (ax.left, ax.top), (ax.right, ax.bottom), AXIS, 1)


def _legend(img: np.ndarray, entries: Sequence[tuple[str, tuple[int, int, int]]], x: int, y: int,
            marker: str) -> None:
    shown = list(entries[:LEGEND_MAX])
    for i, (label, col) in enumerate(shown):
        cy = y + 10 + i * 20
        if marker == "line":
            cv2.line(img, (x, cy), (x + 22, cy), col, 2, cv2.LINE_AA)
        else:
            cv2.circle(img, (x + 11, cy), 5, col, -1, cv2.LINE_AA)
        _text(img, label, (x + 30, cy))
    if len(entries) > LEGEND_MAX:
        _text(img, f"+{len(entries) - LEGEND_MAX} more", (x + 30, y + 10 + LEGEND_MAX * 20))


def _legend_width(labels: Sequence[str], most: int = 340) -> int:
    """Room for a legend of these labels (0 without labels)."""
    if not labels:
        return 0
    widest = max(cv2.getTextSize(_ascii(t), FONT, 0.45, 1)[0][0] for t in labels[:LEGEND_MAX])
    return min(most, widest + 50)


def _range(values: Sequence[np.ndarray], log: bool, pad: float) -> tuple[float, float]:
    finite = [np.asarray(v, np.float64)[np.isfinite(v)] for v in values]
    allv = np.concatenate([f for f in finite if f.size] or [np.array([0.0, 1.0])])
    if log:
        allv = allv[allv > 0]
        if not allv.size:
            return 1e-3, 1.0
        return float(10 ** math.floor(math.log10(allv.min()))), float(10 ** math.ceil(math.log10(allv.max())))
    lo, hi = float(allv.min()), float(allv.max())
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    span = hi - lo
    return lo - pad * span, hi + pad * span


def render_curves(series: Sequence[Series], title: str = "", xlabel: str = "", ylabel: str = "",
                  x_range: tuple[float, float] | None = None, y_range: tuple[float, float] | None = None,
                  log_x: bool = False, log_y: bool = False, vlines: Sequence[tuple[float, str]] = (),
                  size: tuple[int, int] = (900, 600)) -> np.ndarray:
    """Line plot of several series with a legend; `vlines` are labelled vertical markers."""
    width, height = size
    img, box = _frame(width, height, title, xlabel, ylabel, _legend_width([s.label for s in series]))
    ax = _Axes(*box, x_range or _range([s.x for s in series], log_x, 0.0),
               y_range or _range([s.y for s in series], log_y, 0.05), log_x, log_y)
    _draw_axes(img, ax)
    for x, label in vlines:
        px = round(ax.px(np.array([x]), np.array([ax.y_range[0]]))[0, 0])
        if ax.left <= px <= ax.right:
            cv2.line(img, (px, ax.top), (px, ax.bottom), (90, 90, 90), 1, cv2.LINE_AA)
            _text(img, label, (px + 4, ax.top + 10))
    entries = []
    cv2.rectangle(img, (ax.left, ax.top), (ax.right, ax.bottom), AXIS, 1)
    clip = img[ax.top:ax.bottom + 1, ax.left:ax.right + 1]
    for i, s in enumerate(series):
        col = s.colour or colour(i)
        pts = ax.px(s.x, s.y) - np.array([ax.left, ax.top])
        ok = np.all(np.isfinite(pts), axis=1)
        if ok.sum() >= 2:
            cv2.polylines(clip, [np.round(pts[ok]).astype(np.int32)], False, col, 2, cv2.LINE_AA)
        elif ok.sum() == 1:
            cv2.circle(clip, tuple(np.round(pts[ok][0]).astype(int)), 3, col, -1, cv2.LINE_AA)
        entries.append((s.label, col))
    _legend(img, entries, ax.right + 14, ax.top, "line")
    return img


def render_scatter(points: np.ndarray, labels: np.ndarray, names: Sequence[str], title: str = "",
                   xlabel: str = "", ylabel: str = "", size: tuple[int, int] = (900, 650)) -> np.ndarray:
    """2-D points coloured by class (`labels` index into `names`), with a legend of names."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    labels = np.asarray(labels, np.int64)
    if len(labels) != len(pts):
        raise ValueError(f"{len(pts)} points but {len(labels)} labels")
    width, height = size
    img, box = _frame(width, height, title, xlabel, ylabel, _legend_width([names[i] for i in set(labels.tolist())]))
    ax = _Axes(*box, _range([pts[:, 0]], False, 0.06), _range([pts[:, 1]], False, 0.06))
    _draw_axes(img, ax)
    xy = np.round(ax.px(pts[:, 0], pts[:, 1])).astype(int)
    for (x, y), lab in zip(xy, labels, strict=True):
        cv2.circle(img, (int(x), int(y)), 6, colour(int(lab)), -1, cv2.LINE_AA)
        cv2.circle(img, (int(x), int(y)), 6, (60, 60, 60), 1, cv2.LINE_AA)
    present = sorted(set(labels.tolist()))
    _legend(img, [(names[i], colour(i)) for i in present], ax.right + 14, ax.top, "dot")
    return img


def save_png(path: str | os.PathLike[str], rgb: np.ndarray) -> None:
    """Write an RGB image as PNG via temp file + rename."""
    p = Path(path)
    if p.suffix.lower() != ".png":
        raise EdgedError(f"{p}: plots are written as PNG; use a .png file name")
    atomic_write(p, encode_png(rgb), 0o644)


def plot_curves(path: str | os.PathLike[str], series: Sequence[Series], **kwargs: object) -> None:
    """`render_curves` written to a PNG file."""
    save_png(path, render_curves(series, **kwargs))  # type: ignore[arg-type]


def plot_scatter(path: str | os.PathLike[str], points: np.ndarray, labels: np.ndarray, names: Sequence[str],
                 **kwargs: object) -> None:
    """`render_scatter` written to a PNG file."""
    save_png(path, render_scatter(points, labels, names, **kwargs))  # type: ignore[arg-type]


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
