"""ROC plot of a verification evaluation, drawn with OpenCV (no plotting library needed).

The false positive rate axis is logarithmic (1e-3 .. 1 by default) and the true positive rate axis
starts at the lowest tenth the curves reach: on LFW, accurate embedders reach TPR near 1 at FPR
0.01, which linear 0..1 axes squeeze into a corner. FPRs below the axis minimum (including 0) are
drawn at the left edge. Pure: arrays in, an RGB uint8 image out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from edged.evaluate import tpr_at

#: RGB colours.
MEAN_COLOUR = (31, 119, 180)
FOLD_COLOUR = (170, 170, 170)
CHANCE_COLOUR = (90, 90, 90)
GRID_COLOUR = (225, 225, 225)
AXIS_COLOUR = (0, 0, 0)
BACKGROUND = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class RocFrame:
    """Maps (fpr, tpr) to pixel coordinates of the plot area."""

    width: int = 800
    height: int = 600
    left: int = 80
    right: int = 30
    top: int = 60
    bottom: int = 70
    fpr_min: float = 1e-3
    tpr_min: float = 0.0

    @classmethod
    def for_curves(cls, curves: Sequence[tuple[np.ndarray, np.ndarray]], fpr_min: float = 1e-3) -> RocFrame:
        """A frame whose TPR axis starts at the lowest tenth any curve reaches inside the plot (0 to 0.9)."""
        lowest = min((float(tpr_at(fpr, tpr, np.array([fpr_min]))[0]) for fpr, tpr in curves), default=0.0)
        return cls(fpr_min=fpr_min, tpr_min=min(0.9, max(0.0, np.floor(lowest * 10 - 1e-9) / 10)))

    def tpr_ticks(self) -> np.ndarray:
        span = 1.0 - self.tpr_min
        step = 0.1 if span > 0.45 else 0.05 if span > 0.15 else 0.01
        return np.round(np.arange(1.0, self.tpr_min - 1e-9, -step)[::-1], 6)

    def x(self, fpr: np.ndarray | float) -> np.ndarray:
        lo = np.log10(self.fpr_min)
        f = (np.log10(np.clip(np.asarray(fpr, dtype=np.float64), self.fpr_min, 1.0)) - lo) / -lo
        return self.left + f * (self.width - self.left - self.right)

    def y(self, tpr: np.ndarray | float) -> np.ndarray:
        t = (np.clip(np.asarray(tpr, dtype=np.float64), self.tpr_min, 1.0) - self.tpr_min) / (1.0 - self.tpr_min)
        return self.height - self.bottom - t * (self.height - self.top - self.bottom)

    def points(self, fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
        return np.stack([self.x(fpr), self.y(tpr)], axis=1).round().astype(np.int32)


def mean_roc(curves: Sequence[tuple[np.ndarray, np.ndarray]], grid: np.ndarray) -> np.ndarray:
    """Mean over curves of the TPR reachable at each grid FPR."""
    return np.mean([tpr_at(fpr, tpr, grid) for fpr, tpr in curves], axis=0)


def _step(fpr: np.ndarray, tpr: np.ndarray, frame: RocFrame) -> tuple[np.ndarray, np.ndarray]:
    """A curve sampled densely on the log axis, so the drawn line follows the ROC's steps."""
    grid = np.concatenate([[frame.fpr_min], np.logspace(np.log10(frame.fpr_min), 0, 600)])
    fpr = np.asarray(fpr, dtype=np.float64)
    grid = np.unique(np.concatenate([grid, np.clip(fpr, frame.fpr_min, 1.0)]))
    return grid, tpr_at(np.clip(fpr, frame.fpr_min, 1.0), tpr, grid)


def draw_roc(curves: Sequence[tuple[np.ndarray, np.ndarray]], title: str, legend: str,
             frame: RocFrame | None = None) -> np.ndarray:
    """Per-fold ROC curves (grey), their mean (blue) and chance (dashed) -> RGB uint8 image."""
    frame = frame or RocFrame.for_curves(curves)
    img = np.full((frame.height, frame.width, 3), BACKGROUND, dtype=np.uint8)
    x0, x1 = int(frame.x(frame.fpr_min)), int(frame.x(1.0))
    y0, y1 = int(frame.y(0.0)), int(frame.y(1.0))
    decades = range(round(np.log10(frame.fpr_min)), 1)
    for d in decades:
        for m in range(1, 10):
            v = m * 10.0**d
            if frame.fpr_min <= v <= 1.0:
                xi = int(frame.x(v))
                cv2.line(img, (xi, y1), (xi, y0), GRID_COLOUR, 1)
                if m == 1:
                    cv2.line(img, (xi, y0), (xi, y0 + 6), AXIS_COLOUR, 1)
                    label = f"{v:g}"
                    (tw, _), _ = cv2.getTextSize(label, FONT, 0.45, 1)
                    cv2.putText(img, label, (xi - tw // 2, y0 + 22), FONT, 0.45, AXIS_COLOUR, 1, cv2.LINE_AA)
    ticks = frame.tpr_ticks()
    digits = 1 if np.allclose(ticks * 10, np.round(ticks * 10)) else 2
    for tick in ticks:
        yi = int(frame.y(tick))
        cv2.line(img, (x0, yi), (x1, yi), GRID_COLOUR, 1)
        cv2.line(img, (x0 - 6, yi), (x0, yi), AXIS_COLOUR, 1)
        cv2.putText(img, f"{tick:.{digits}f}", (x0 - 44, yi + 5), FONT, 0.45, AXIS_COLOUR, 1, cv2.LINE_AA)
    # chance: TPR = FPR (a curve on the log axis), dashed
    chance = np.logspace(np.log10(max(frame.fpr_min, frame.tpr_min)), 0, 200)
    pts = frame.points(chance, chance)
    for i in range(0, len(pts) - 1, 4):
        cv2.line(img, tuple(map(int, pts[i])), tuple(map(int, pts[i + 2])), CHANCE_COLOUR, 1, cv2.LINE_AA)
    for fpr, tpr in curves:
        gx, gy = _step(fpr, tpr, frame)
        cv2.polylines(img, [frame.points(gx, gy)], False, FOLD_COLOUR, 1, cv2.LINE_AA)
    if curves:
        grid = np.logspace(np.log10(frame.fpr_min), 0, 600)
        cv2.polylines(img, [frame.points(grid, mean_roc(curves, grid))], False, MEAN_COLOUR, 2, cv2.LINE_AA)
    cv2.rectangle(img, (x0, y1), (x1, y0), AXIS_COLOUR, 1)
    cv2.putText(img, title, (x0, 35), FONT, 0.6, AXIS_COLOUR, 1, cv2.LINE_AA)
    cv2.putText(img, "false positive rate (log scale)", ((x0 + x1) // 2 - 120, frame.height - 20), FONT, 0.5,
                AXIS_COLOUR, 1, cv2.LINE_AA)
    _vertical_text(img, "true positive rate", (18, (y0 + y1) // 2))
    entries = [(MEAN_COLOUR, 2, legend), (FOLD_COLOUR, 1, "held-out folds"), (CHANCE_COLOUR, 1, "chance")]
    text_width = max(cv2.getTextSize(text, FONT, 0.45, 1)[0][0] for _, _, text in entries)
    lx = x1 - text_width - 60
    cv2.rectangle(img, (lx - 8, y0 - 20 - 22 * len(entries)), (x1 - 8, y0 - 10), BACKGROUND, -1)
    cv2.rectangle(img, (lx - 8, y0 - 20 - 22 * len(entries)), (x1 - 8, y0 - 10), GRID_COLOUR, 1)
    for i, (colour, thickness, text) in enumerate(entries):
        ly = y0 - 20 - 22 * (len(entries) - 1 - i)
        cv2.line(img, (lx, ly - 4), (lx + 30, ly - 4), colour, thickness, cv2.LINE_AA)
        cv2.putText(img, text, (lx + 38, ly), FONT, 0.45, AXIS_COLOUR, 1, cv2.LINE_AA)
    return img


def _vertical_text(img: np.ndarray, text: str, centre: tuple[int, int]) -> None:
    """Text rotated 90 degrees counter-clockwise, centred at `centre`."""
    (tw, th), base = cv2.getTextSize(text, FONT, 0.5, 1)
    patch = np.full((th + base + 4, tw + 4, 3), BACKGROUND, dtype=np.uint8)
    cv2.putText(patch, text, (2, th + 2), FONT, 0.5, AXIS_COLOUR, 1, cv2.LINE_AA)
    patch = np.ascontiguousarray(np.rot90(patch))
    h, w = patch.shape[:2]
    top, left = max(0, centre[1] - h // 2), max(0, centre[0] - w // 2)
    h, w = min(h, img.shape[0] - top), min(w, img.shape[1] - left)
    img[top:top + h, left:left + w] = patch[:h, :w]
