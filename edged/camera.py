"""Frame sources: V4L2 cameras, RTSP/HTTP streams and video files, all through OpenCV.

`FrameSource` wraps one `cv2.VideoCapture` (no threads). `Grabber` owns one thread per source:
it opens the source, reads frames, applies the region of interest and resize, and hands frames
to the processing loop through a `FrameSlot`:

* live sources (cameras, streams) and video files with `realtime: true` keep only the newest
  frame: an unconsumed older frame is dropped and counted, so processing never falls behind;
* video files with `realtime: false` hand over every frame with backpressure (no drops).

A source that cannot be opened, stops delivering, or (video files with `loop: true`) vanishes
is reopened with exponential backoff (`camera.reconnect_min_s` doubling up to
`camera.reconnect_max_s`); every attempt is logged and visible in `Grabber.status()`.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from edged.config import CameraConfig
from edged.errors import EdgedError

log = logging.getLogger(__name__)

_V4L2_PATH = re.compile(r"^/dev/video\d+$")
_URL = re.compile(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp)://", re.IGNORECASE)


class CameraError(EdgedError):
    """A frame source cannot be opened or read."""


class Capture(Protocol):
    """The part of `cv2.VideoCapture` the sources use."""

    def isOpened(self) -> bool: ...
    def read(self) -> tuple[bool, Any]: ...
    def get(self, prop: int) -> float: ...
    def set(self, prop: int, value: float) -> bool: ...
    def release(self) -> None: ...


#: Builds a capture from (source, OpenCV API preference); tests substitute a fake camera here.
CaptureFactory = Callable[[int | str, int], Capture]


def opencv_capture(source: int | str, api: int, timeout_s: float = 5.0) -> Capture:
    """A `cv2.VideoCapture`; network streams get open and read timeouts so a dead stream fails instead of hanging."""
    if isinstance(source, str) and _URL.match(source):
        ms = int(timeout_s * 1000)
        return cv2.VideoCapture(source, api, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
    return cv2.VideoCapture(source, api)


@dataclass(frozen=True)
class Frame:
    """One RGB frame and when it was taken."""

    image: np.ndarray
    #: Running frame number of this source (keeps counting across reconnects and loops).
    index: int
    #: Timeline seconds: video time for files, `time.monotonic()` at capture for live sources.
    t: float
    #: Wall-clock time (epoch seconds) at capture.
    wall: float


def source_kind(source: int | str) -> str:
    """"v4l2" (index or /dev/videoN), "stream" (URL) or "file"."""
    if isinstance(source, int) or (isinstance(source, str) and source.strip().isdigit()):
        return "v4l2"
    if _V4L2_PATH.match(source):
        return "v4l2"
    if _URL.match(source):
        return "stream"
    return "file"


def redact_url(source: int | str) -> str:
    """The source for logs: credentials in a URL (rtsp://user:pass@host) are masked."""
    return re.sub(r"(://)[^/@\s]+@", r"\1***@", str(source))


def crop_and_resize(image: np.ndarray, roi: list[int] | None, max_width: int | None) -> np.ndarray:
    """Cut the region of interest (clipped to the image), then downscale to at most `max_width`."""
    if roi is not None:
        h, w = image.shape[:2]
        left, top = min(max(roi[0], 0), w), min(max(roi[1], 0), h)
        right, bottom = min(max(roi[2], 0), w), min(max(roi[3], 0), h)
        if right <= left or bottom <= top:
            raise CameraError(f"camera.roi {roi} lies outside the {w}x{h} frame")
        image = image[top:bottom, left:right]
    if max_width is not None and image.shape[1] > max_width:
        h, w = image.shape[:2]
        image = cv2.resize(image, (max_width, max(1, round(h * max_width / w))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


class FrameSource:
    """One opened OpenCV capture: `open()`, `read()` RGB frames, `close()`. Not thread-safe."""

    def __init__(self, cfg: CameraConfig, capture_factory: CaptureFactory | None = None) -> None:
        self.cfg = cfg
        self.kind = source_kind(cfg.source)
        self.name = redact_url(cfg.source)
        self._factory = capture_factory or (lambda src, api: opencv_capture(src, api, cfg.read_timeout_s))
        self._cap: Capture | None = None
        #: Frames per second reported by the source (0 when unknown).
        self.fps = 0.0

    def open(self) -> None:
        """Open the source or raise `CameraError` saying why not."""
        self.close()
        source: int | str = self.cfg.source
        api = cv2.CAP_ANY
        if self.kind == "v4l2":
            api = cv2.CAP_V4L2
            if isinstance(source, str) and source.strip().isdigit():
                source = int(source)
            if isinstance(source, str) and not os.path.exists(source):
                raise CameraError(f"{source}: no such camera device")
        elif self.kind == "stream":
            api = cv2.CAP_FFMPEG
        else:
            path = Path(str(source)).expanduser()
            if not path.exists():
                raise CameraError(f"{source}: no such video file")
            if not path.is_file():
                raise CameraError(f"{source}: not a video file")
            if not os.access(path, os.R_OK):
                raise CameraError(f"{source}: permission denied")
            source = str(path)
        cap = self._factory(source, api)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"{self.name}: cannot open {self.kind} source")
        if self.kind == "v4l2":
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a stale buffered one
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.0 < fps < 1000.0 else 0.0
        self._cap = cap

    @property
    def is_open(self) -> bool:
        return self._cap is not None

    def read(self) -> np.ndarray | None:
        """The next frame as RGB uint8 after ROI/resize, or None at end of file / on a read failure."""
        if self._cap is None:
            return None
        ok, bgr = self._cap.read()
        if not ok or bgr is None or getattr(bgr, "size", 0) == 0:
            return None
        if bgr.ndim == 2:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
        else:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGB if bgr.shape[2] == 4 else cv2.COLOR_BGR2RGB)
        return crop_and_resize(rgb, self.cfg.roi, self.cfg.max_width)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FrameSlot:
    """A bounded hand-over between the grabber and the processing loop.

    `put(frame, wait=False)` drops the oldest frame when full (counted in `dropped`);
    `put(frame, wait=True)` waits for space instead (backpressure) until `stop` is set.
    """

    def __init__(self, capacity: int = 1) -> None:
        self.capacity = max(1, capacity)
        self._frames: deque[Frame] = deque()
        self._cond = threading.Condition()
        self.dropped = 0
        self.closed = False

    def put(self, frame: Frame, wait: bool, stop: threading.Event) -> bool:
        """Add a frame; False when `stop` was set while waiting for space."""
        with self._cond:
            while wait and len(self._frames) >= self.capacity:
                if stop.is_set():
                    return False
                self._cond.wait(0.05)
            if len(self._frames) >= self.capacity:
                self._frames.popleft()
                self.dropped += 1
            self._frames.append(frame)
            self._cond.notify_all()
            return True

    def get(self, timeout: float) -> Frame | None:
        """The oldest waiting frame, or None after `timeout` seconds (or at once when closed and empty)."""
        with self._cond:
            if not self._frames and not self.closed:
                self._cond.wait(timeout)
            if not self._frames:
                return None
            frame = self._frames.popleft()
            self._cond.notify_all()
            return frame

    def close(self) -> None:
        """No more frames will come (end of file); wakes a waiting `get`."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._frames)


@dataclass(frozen=True)
class SourceStatus:
    """What a grabber is doing, for logs, systemd STATUS= and run statistics."""

    #: starting | streaming | reconnecting | ended (end of video) | failed (unusable) | stopped
    state: str
    detail: str = ""
    frames_read: int = 0
    frames_dropped: int = 0
    #: Failed open/read attempts since the source last delivered a frame.
    failures: int = 0
    #: Reconnect attempts over the whole run.
    reconnects: int = 0
    #: Seconds until the next reconnect attempt (while reconnecting).
    retry_in_s: float = 0.0
    fps: float = 0.0


class Grabber:
    """Reads one source on its own thread and hands frames to the processing loop via a `FrameSlot`."""

    def __init__(self, cfg: CameraConfig, stop: threading.Event, capture_factory: CaptureFactory | None = None,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.stop = stop
        self.source = FrameSource(cfg, capture_factory)
        self.is_file = self.source.kind == "file"
        self.backpressure = self.is_file and not cfg.realtime
        self.slot = FrameSlot(capacity=4 if self.backpressure else 1)
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._status = SourceStatus("starting")
        self._thread: threading.Thread | None = None
        self._index = 0  # running frame number
        self._video_offset = 0.0  # files: video seconds of earlier loops
        self.decode_s = 0.0  # time spent reading + converting frames

    # ---- public ----

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edged-grabber", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when it has ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def get(self, timeout: float) -> Frame | None:
        return self.slot.get(timeout)

    @property
    def finished(self) -> bool:
        """The source has ended (end of file without loop) and every frame was taken."""
        return self.slot.closed and len(self.slot) == 0

    def status(self) -> SourceStatus:
        with self._lock:
            return replace(self._status, frames_dropped=self.slot.dropped)

    # ---- thread ----

    def _set(self, **changes: Any) -> None:
        with self._lock:
            self._status = replace(self._status, **changes)

    def _run(self) -> None:
        delay = self.cfg.reconnect_min_s
        try:
            while not self.stop.is_set():
                try:
                    self.source.open()
                except CameraError as exc:
                    delay = self._backoff(str(exc), delay)
                    continue
                log.info("camera %s opened (%s%s)", self.source.name, self.source.kind,
                         f", {self.source.fps:.2f} fps" if self.source.fps else "")
                outcome = self._stream()
                self.source.close()
                if outcome == "delivered":
                    delay = self.cfg.reconnect_min_s
                if outcome == "stopped":
                    break
                if outcome == "delivered" and self.is_file:
                    if not self.cfg.loop:
                        log.info("camera %s: end of video after %d frames", self.source.name, self._index)
                        self._set(state="ended", detail="end of video")
                        return
                    log.info("camera %s: end of video, starting again (loop)", self.source.name)
                    continue
                reason = "no frames from source" if outcome == "empty" else "source stopped delivering frames"
                delay = self._backoff(f"{self.source.name}: {reason}", delay)
        except CameraError as exc:  # unusable as configured (e.g. the ROI lies outside the frame)
            log.error("camera: %s", exc)
            self._set(state="failed", detail=str(exc))
        except Exception as exc:  # a bug or an OpenCV failure: report it, end the source
            log.exception("camera %s: grabber failed", self.source.name)
            self._set(state="failed", detail=f"grabber failed: {exc}")
        finally:
            self.source.close()
            if self.stop.is_set() and self._status.state not in ("ended", "failed"):
                self._set(state="stopped", detail="")
            self.slot.close()

    def _backoff(self, reason: str, delay: float) -> float:
        """Record a failed attempt, wait `delay` (or until stop) and return the next delay."""
        with self._lock:
            failures = self._status.failures + 1
            reconnects = self._status.reconnects + 1
        self._set(state="reconnecting", detail=reason, failures=failures, reconnects=reconnects, retry_in_s=delay)
        log.warning("camera: %s; retrying in %.1f s (attempt %d)", reason, delay, failures)
        self.stop.wait(delay)
        return min(delay * 2.0, self.cfg.reconnect_max_s)

    def _stream(self) -> str:
        """Read until stop or end: "stopped", "delivered" (ended after some frames) or "empty" (none)."""
        fps = self.source.fps or 30.0
        start_clock = self._clock()
        delivered = 0
        while not self.stop.is_set():
            t0 = time.perf_counter()
            image = self.source.read()
            self.decode_s += time.perf_counter() - t0
            if image is None:
                if delivered:
                    self._video_offset += delivered / fps
                    return "delivered"
                return "empty"
            if delivered == 0:
                self._set(state="streaming", detail="", failures=0, retry_in_s=0.0, fps=self.source.fps)
            if self.is_file:
                t = self._video_offset + delivered / fps
                if self.cfg.realtime:  # pace like a live camera
                    due = start_clock + delivered / fps
                    wait = due - self._clock()
                    if wait > 0 and self.stop.wait(wait):
                        return "stopped"
            else:
                t = self._clock()
            frame = Frame(image, self._index, t, self._wall())
            self._index += 1
            delivered += 1
            with self._lock:
                self._status = replace(self._status, frames_read=self._status.frames_read + 1)
            if not self.slot.put(frame, wait=self.backpressure, stop=self.stop):
                return "stopped"
        return "stopped"
