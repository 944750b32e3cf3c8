"""Honest overload: how much of the camera's stream processing keeps up with, and what to do about it.

Pure computation, time passed in. `LoadWindow` keeps (t, frames read, frames dropped, busy seconds) samples
over the last `window_s` seconds and says which fraction of frames was dropped and how busy the frame loop
was; `Governor` turns that into a detector cadence: when the loop is busy (>= `busy_high`) or frames are
being dropped, the detector runs half as often (up to `max_factor` times the configured interval), and
back when there is room again (< `busy_low`, nothing dropped) — cheaper detection before frames are lost.
`OverloadWatch` says, at most once per `log_every_s`, that frames are being dropped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Load:
    """The last window: frames read and dropped, the dropped fraction, and the busy fraction of the loop."""

    seconds: float
    read: int
    dropped: int
    busy: float

    @property
    def dropped_fraction(self) -> float:
        return self.dropped / self.read if self.read else 0.0


class LoadWindow:
    """Samples of cumulative counters; `load()` is the difference over the last `window_s` seconds."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int, int, float]] = deque()

    def add(self, t: float, read: int, dropped: int, busy_s: float) -> Load:
        self._samples.append((t, read, dropped, busy_s))
        while len(self._samples) > 2 and t - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        return self.load()

    def load(self) -> Load:
        if len(self._samples) < 2:
            return Load(0.0, 0, 0, 0.0)
        (t0, r0, d0, b0), (t1, r1, d1, b1) = self._samples[0], self._samples[-1]
        span = t1 - t0
        return Load(span, r1 - r0, d1 - d0, min(1.0, (b1 - b0) / span) if span > 0 else 0.0)


class Governor:
    """The detector's interval multiplier (1, 2, 4... up to `max_factor`), changed at most every `every_s`."""

    def __init__(self, max_factor: int = 4, busy_high: float = 0.9, busy_low: float = 0.6, every_s: float = 5.0
                 ) -> None:
        self.max_factor = max(1, max_factor)
        self.busy_high, self.busy_low, self.every_s = busy_high, busy_low, every_s
        self.factor = 1
        self._changed_at: float | None = None

    def update(self, t: float, load: Load) -> int | None:
        """The new factor when it changes now, else None."""
        if self._changed_at is None:
            self._changed_at = t
        if t - self._changed_at < self.every_s or load.seconds < self.every_s:
            return None
        factor = self.factor
        if (load.busy >= self.busy_high or load.dropped) and factor < self.max_factor:
            factor = min(self.max_factor, factor * 2)
        elif load.busy < self.busy_low and not load.dropped and factor > 1:
            factor //= 2
        if factor == self.factor:
            return None
        self.factor, self._changed_at = factor, t
        return factor


class OverloadWatch:
    """Whether the dropped fraction is over `threshold`, and a warning at most once per `log_every_s`."""

    def __init__(self, threshold: float = 0.05, log_every_s: float = 60.0) -> None:
        self.threshold = threshold
        self.log_every_s = log_every_s
        self._warned_at: float | None = None

    def overloaded(self, load: Load) -> bool:
        return load.read > 0 and load.dropped_fraction > self.threshold

    def warning(self, t: float, load: Load, camera: str, every_n: int) -> str | None:
        """The line to log now (overloaded, and none logged in the last `log_every_s`), else None."""
        if not self.overloaded(load):
            return None
        if self._warned_at is not None and t - self._warned_at < self.log_every_s:
            return None
        self._warned_at = t
        return (f"camera {camera}: overloaded: {load.dropped} of {load.read} frames dropped "
                f"({100 * load.dropped_fraction:.0f}%) in the last {load.seconds:.0f} s, the loop "
                f"{100 * load.busy:.0f}% busy; the detector runs every {every_n} frames (detector.scale, "
                f"camera.max_width or camera.roi make a frame cheaper)")
