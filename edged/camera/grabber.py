"""The grabber: one thread per frame source, handing frames to the processing loop.

`Grabber` opens its `FrameSource`, reads frames and hands them over through a `FrameSlot`:

* live sources (cameras, streams) and video files with `realtime: true` keep only the newest
  frame: an unconsumed older frame is dropped and counted, so processing never falls behind;
  a `realtime` file whose reader falls behind its schedule skips (and counts) the late frames,
  as a live camera would have shown them meanwhile: video time keeps pace with the wall clock;
* video files with `realtime: false` hand over every frame with backpressure (no drops).

A source that cannot be opened, stops delivering, or (video files with `loop: true`) vanishes
is reopened with exponential backoff (`camera.reconnect_min_s` doubling up to
`camera.reconnect_max_s`); every attempt is logged and visible in `Grabber.status()`.

A video file that is missing or cannot be opened before it ever delivered a frame is a configuration
problem, not an outage: the grabber ends with state FAILED and the reason (the daemon then exits with
one error line), unless `camera.wait_for_file: true` asks to wait for it (reopened with the backoff).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from edged.camera.source import CameraError, CaptureFactory, FrameSource
from edged.config import CameraConfig
from edged.types import Frame, SourceState

log = logging.getLogger(__name__)


class FrameSlot:
    """A bounded hand-over between the grabber and the processing loop.

    `put(frame, wait=False)` drops the oldest frame when full (counted in `dropped`);
    `put(frame, wait=True)` waits for space instead (backpressure) until `stop` is set.
    """

    def __init__(self, capacity: int = 1, notify: threading.Event | None = None) -> None:
        """`notify`: set whenever a frame arrives or the slot closes (one event can watch several slots)."""
        self.capacity = max(1, capacity)
        self._notify = notify
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
        if self._notify is not None:
            self._notify.set()
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
        if self._notify is not None:
            self._notify.set()

    def __len__(self) -> int:
        with self._cond:
            return len(self._frames)


@dataclass(frozen=True)
class SourceStatus:
    """What a grabber is doing, for logs, systemd STATUS= and run statistics."""

    state: SourceState
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
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time,
                 pause: Callable[[float], bool] | None = None, notify: threading.Event | None = None) -> None:
        """`clock` (timeline of live sources and of pacing), `wall_clock` (event stamps) and `pause(seconds)`
        (the pacing wait of `realtime` files; True = stop requested) are injectable for tests; `notify` is set
        when a frame is handed over (several cameras: the processing loop waits on one event)."""
        self.cfg = cfg
        self.stop = stop
        self.source = FrameSource(cfg, capture_factory)
        self.is_file = self.source.kind == "file"
        self.backpressure = self.is_file and not cfg.realtime
        self.slot = FrameSlot(capacity=4 if self.backpressure else 1, notify=notify)
        self._clock = clock
        self._pause = pause or stop.wait
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._status = SourceStatus(SourceState.STARTING)
        self._thread: threading.Thread | None = None
        self._index = 0  # running frame number
        self._video_offset = 0.0  # files: video seconds of earlier loops
        self.decode_s = 0.0  # time spent reading + converting frames
        self.skipped = 0  # realtime files: frames passed over to keep up with the wall clock

    # ---- public ----

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"edged-grabber-{self.cfg.name}", daemon=True)
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
            return replace(self._status, frames_dropped=self.slot.dropped + self.skipped)

    # ---- thread ----

    def _set(self, **changes: Any) -> None:
        with self._lock:
            self._status = replace(self._status, **changes)

    def _run(self) -> None:
        delay = self.cfg.reconnect_min_s
        delivered_once = False
        try:
            while not self.stop.is_set():
                try:
                    self.source.open()
                except CameraError as exc:
                    if self.is_file and not delivered_once and not self.cfg.wait_for_file:
                        raise CameraError(f"{exc} (camera.wait_for_file: true waits for the file)") from exc
                    delay = self._backoff(str(exc), delay)
                    continue
                log.info("camera %s opened (%s%s)", self.source.name, self.source.kind,
                         f", {self.source.reported_fps:.2f} fps" if self.source.reported_fps else "")
                outcome = self._stream()
                self.source.close()
                if outcome == "delivered":
                    delay = self.cfg.reconnect_min_s
                    delivered_once = True
                elif outcome == "empty" and self.is_file and not delivered_once and not self.cfg.wait_for_file:
                    raise CameraError(f"{self.source.name}: no frames in the video file "
                                      f"(camera.wait_for_file: true waits for the file)")
                if outcome == "stopped":
                    break
                if outcome == "delivered" and self.is_file:
                    if not self.cfg.loop:
                        log.info("camera %s: end of video after %d frames", self.source.name, self._index)
                        self._set(state=SourceState.ENDED, detail="end of video")
                        return
                    log.info("camera %s: end of video, starting again (loop)", self.source.name)
                    continue
                reason = "no frames from source" if outcome == "empty" else "source stopped delivering frames"
                delay = self._backoff(f"{self.source.name}: {reason}", delay)
        except CameraError as exc:  # unusable as configured (e.g. the ROI lies outside the frame)
            log.error("camera: %s", exc)
            self._set(state=SourceState.FAILED, detail=str(exc))
        except Exception as exc:  # a bug or an OpenCV failure: report it, end the source
            log.exception("camera %s: grabber failed", self.source.name)
            self._set(state=SourceState.FAILED, detail=f"grabber failed: {exc}")
        finally:
            self.source.close()
            if self.stop.is_set() and self._status.state not in (SourceState.ENDED, SourceState.FAILED):
                self._set(state=SourceState.STOPPED, detail="")
            self.slot.close()

    def _backoff(self, reason: str, delay: float) -> float:
        """Record a failed attempt, wait `delay` (or until stop) and return the next delay."""
        with self._lock:
            failures = self._status.failures + 1
            reconnects = self._status.reconnects + 1
        self._set(state=SourceState.RECONNECTING, detail=reason, failures=failures, reconnects=reconnects,
                  retry_in_s=delay)
        log.warning("camera: %s; retrying in %.1f s (attempt %d)", reason, delay, failures)
        self.stop.wait(delay)
        return min(delay * 2.0, self.cfg.reconnect_max_s)

    def _catch_up(self, start_clock: float, delivered: int, fps: float) -> tuple[int, bool]:
        """A `realtime` file that fell behind its schedule (a starved reader) skips the frames a live camera
        would have shown meanwhile, so video time keeps pace with the wall clock instead of racing to catch
        up later (presence timing and liveness motion read video time). Returns the frames of this pass so
        far and whether the file ended."""
        for _ in range(int((self._clock() - start_clock) * fps) - delivered):
            if not self.source.skip():
                return delivered, True
            delivered += 1
            self._index += 1
            with self._lock:
                self.skipped += 1
                self._status = replace(self._status, frames_read=self._status.frames_read + 1)
        return delivered, False

    def _stream(self) -> str:
        """Read until stop or end: "stopped", "delivered" (ended after some frames) or "empty" (none)."""
        fps = self.source.fps
        start_clock = self._clock()
        delivered = 0
        while not self.stop.is_set():
            if self.is_file and self.cfg.realtime and delivered:
                delivered, ended = self._catch_up(start_clock, delivered, fps)
                if ended:
                    self._video_offset += delivered / fps
                    return "delivered"
            t0 = time.perf_counter()
            image = self.source.read()
            self.decode_s += time.perf_counter() - t0
            if image is None:
                if delivered:
                    self._video_offset += delivered / fps
                    return "delivered"
                return "empty"
            if delivered == 0:
                self._set(state=SourceState.STREAMING, detail="", failures=0, retry_in_s=0.0,
                          fps=self.source.reported_fps)
            if self.is_file:
                t = self._video_offset + delivered / fps
                if self.cfg.realtime:  # pace like a live camera
                    due = start_clock + delivered / fps
                    wait = due - self._clock()
                    if wait > 0 and self._pause(wait):
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
