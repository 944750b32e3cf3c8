"""Motion gating: is anything moving in the picture? Cheap frame differencing at low resolution.

A door camera looks at an empty porch most of the day; while nothing moves and no face is tracked the
detector need not run. `MotionGate.moved(image)` subsamples the frame to about `width` pixels wide (every n-th
pixel: no resize of the full frame), blurs it against sensor noise and compares it with the frame it last
compared against: motion = at least `min_fraction` of the pixels changed by more than `pixel_threshold` grey
levels. Pure computation on numpy arrays; the first frame always counts as motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class MotionReading:
    """How much of the picture changed since the previous reading (fraction of pixels) and the verdict."""

    changed: float
    moved: bool


class MotionGate:
    """Frame differencing on a small grey copy of each frame."""

    def __init__(self, width: int = 160, pixel_threshold: int = 16, min_fraction: float = 0.002) -> None:
        if width < 16:
            raise ValueError(f"width must be >= 16, got {width}")
        self.width = width
        self.pixel_threshold = pixel_threshold
        self.min_fraction = min_fraction
        self._previous: np.ndarray | None = None

    def small(self, image: np.ndarray) -> np.ndarray:
        """The frame subsampled to about `width` pixels wide, grey and blurred (uint8)."""
        step = max(1, image.shape[1] // self.width)
        sub = np.ascontiguousarray(image[::step, ::step])
        grey = cv2.cvtColor(sub, cv2.COLOR_RGB2GRAY) if sub.ndim == 3 else sub
        return cv2.GaussianBlur(grey, (5, 5), 0)

    def read(self, image: np.ndarray) -> MotionReading:
        """Compare this frame with the previous one (which it then replaces)."""
        small = self.small(image)
        previous, self._previous = self._previous, small
        if previous is None or previous.shape != small.shape:
            return MotionReading(1.0, True)
        diff = cv2.absdiff(small, previous)
        changed = float(np.count_nonzero(diff > self.pixel_threshold)) / diff.size
        return MotionReading(changed, changed >= self.min_fraction)

    def moved(self, image: np.ndarray) -> bool:
        return self.read(image).moved

    def reset(self) -> None:
        self._previous = None
