"""The daemon: camera grabber thread -> recognition pipeline -> MQTT, with systemd integration.

Threads: one grabber per source (`edged.camera.Grabber`), paho's network thread
(`edged.mqtt.MqttPublisher`), and the caller's thread running the processing loop. One
`threading.Event` stops everything; every loop waits on it or on a short timeout.

Signals (installed when `run()` is called on the main thread): SIGTERM and SIGINT stop cleanly
(offline published, threads joined) within 2 s; SIGHUP reloads the gallery. The gallery's
change counter is also polled every `gallery.reload_check_s`, so `edged enroll` in another
process is picked up without a restart.

systemd (`Type=notify`): READY=1 once the camera delivered a frame, the gallery is loaded and the
broker accepted the connection; WATCHDOG=1 from the frame loop only while frames flow; STATUS=
every `service.status_every_s`; STOPPING=1 on shutdown.

`Daemon(config).run()` returns `RunStats` (also written by `edged run --stats-json FILE`).
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import sqlite3
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edged.camera import CameraError, CaptureFactory, Frame, Grabber
from edged.config import Config, mqtt_password
from edged.embed.base import Embedder
from edged.errors import GalleryError
from edged.gallery import Gallery
from edged.imageio import encode_jpeg
from edged.match import Matcher
from edged.mqtt import MqttPublisher, PersonEntity, event_payload
from edged.pipeline import STAGES, RecognitionPipeline
from edged.service import Notifier
from edged.sysinfo import peak_rss_mb
from edged.types import Box
from edged.vote import IdentityEvent, PresenceChange

log = logging.getLogger(__name__)

#: Seconds the processing loop waits for a frame before doing housekeeping.
POLL_S = 0.1
#: Budget for the MQTT shutdown (flush in-flight messages, publish offline).
MQTT_STOP_S = 1.0
#: Keep this many recent event payloads in memory for programmatic users.
RECENT_EVENTS = 10_000


@dataclass
class PersonTiming:
    """When a person's face was first detected (start of the track) and when they were announced."""

    first_detected_frame: int
    first_detected_t: float
    recognized_frame: int
    recognized_t: float

    @property
    def latency_s(self) -> float:
        return self.recognized_t - self.first_detected_t


@dataclass
class RunStats:
    """What one run did and what it cost."""

    exit_reason: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    frames_read: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    #: Processed frames per wall-clock second.
    fps: float = 0.0
    #: Seconds from the first frame to the end of processing (wall_s minus start-up and shutdown).
    processing_s: float = 0.0
    #: Video files: seconds of video processed per second of processing (>= 1 keeps up with real time).
    realtime_factor: float | None = None
    detector_runs: int = 0
    small_face_scans: int = 0
    faces_detected: int = 0
    tracks: int = 0
    embeds: int = 0
    embed_batches: int = 0
    #: Per-stage totals in seconds: decode, detect, track, align, embed, match, publish.
    seconds: dict[str, float] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    people: dict[str, PersonTiming] = field(default_factory=dict)
    source_reconnects: int = 0
    source_state: str = ""
    gallery_reloads: int = 0
    mqtt: dict[str, int] = field(default_factory=dict)
    ready: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name, timing in self.people.items():
            out["people"][name]["latency_s"] = round(timing.latency_s, 4)
        return out


def embedder_from_config(cfg: Config) -> Embedder:
    """The configured embedder (loaded lazily on first use)."""
    from edged.embed import get_embedder

    e = cfg.embedder
    if e.name == "nn4":
        from edged.models import models_dir

        return get_embedder("nn4", weights=e.weights, device=e.device, threads=e.threads, backend=e.backend,
                            models_dir=str(models_dir(cfg.models.dir)))
    return get_embedder(e.name)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Daemon:
    """One camera, one gallery, one broker: `run()` until stopped or the video ends."""

    def __init__(self, cfg: Config, *, gallery_path: str | os.PathLike[str] | None = None,
                 embedder: Embedder | None = None, capture_factory: CaptureFactory | None = None,
                 notifier: Notifier | None = None, stop: threading.Event | None = None) -> None:
        self.cfg = cfg
        self.gallery_path = Path(gallery_path or cfg.gallery.path).expanduser()
        self.embedder = embedder or embedder_from_config(cfg)
        self.threshold = cfg.embedder.threshold if cfg.embedder.threshold is not None else self.embedder.threshold
        self.notifier = notifier or Notifier()
        self.stop_event = stop or threading.Event()
        self.capture_factory = capture_factory
        self.recent_events: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self.stats = RunStats()
        self._reload_requested = threading.Event()
        self._stop_reason = ""
        self._gallery: Gallery | None = None
        self._people: dict[str, PersonEntity] = {}
        self._counter = -1
        self._publisher: MqttPublisher | None = None
        self._grabber: Grabber | None = None
        self._pipeline: RecognitionPipeline | None = None
        self._publish_s = 0.0
        self._event_counts: Counter[str] = Counter()
        self._ready = False
        self._last_person: str | None = None
        self._first_frame_at: float | None = None
        self._stalled = False
        self._last_frame_at: float | None = None

    # ---- control (any thread, signal handlers) ----

    def request_stop(self, reason: str = "stop requested") -> None:
        if not self.stop_event.is_set():
            self._stop_reason = reason
        self.stop_event.set()

    def request_reload(self) -> None:
        self._reload_requested.set()

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        handlers = {signal.SIGTERM: lambda *_: self.request_stop("SIGTERM"),
                    signal.SIGINT: lambda *_: self.request_stop("SIGINT"),
                    signal.SIGHUP: lambda *_: self.request_reload()}
        for sig, handler in handlers.items():
            previous[sig] = signal.signal(sig, handler)
        return previous

    # ---- the run ----

    def run(self) -> RunStats:
        """Run until SIGTERM/SIGINT, `request_stop()`, or the end of a video file."""
        started, cpu0 = time.monotonic(), _cpu_seconds()
        previous = self._install_signals()
        cfg = self.cfg
        try:
            log.info("edged starting: device %s, camera %s, gallery %s, embedder %s (threshold %.3f)",
                     cfg.device_id, cfg.camera.name, self.gallery_path, self.embedder.name, self.threshold)
            self._pipeline = RecognitionPipeline(cfg, self.embedder)
            self._open_gallery()
            self._warm_up()
            self._publisher = MqttPublisher(cfg.mqtt, cfg.device_id, cfg.camera.name, mqtt_password(cfg.mqtt),
                                            cfg.homeassistant, cfg.snapshots.enabled)
            self._publisher.set_people(self._people.values())
            self._publisher.start()
            self._grabber = Grabber(cfg.camera, self.stop_event, self.capture_factory)
            self._grabber.start()
            self._loop()
        finally:
            self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._fill_stats(time.monotonic() - started, _cpu_seconds() - cpu0)
        return self.stats

    def _warm_up(self) -> None:
        """Load the detector, landmark and embedding models now, not on the first face."""
        assert self._pipeline is not None
        blank = np.zeros((64, 64, 3), np.uint8)
        self._pipeline.detector.detect(blank)
        self._pipeline.aligner.landmarks(blank, Box(8, 8, 56, 56))
        size = self.embedder.alignment.size
        self.embedder.embed(np.zeros((1, size, size, 3), np.uint8))

    def _loop(self) -> None:
        assert self._grabber is not None and self._pipeline is not None
        status_every = self.cfg.service.status_every_s
        watchdog_every = self.notifier.watchdog_interval_s
        next_status = time.monotonic()
        last_watchdog = 0.0
        next_reload_check = time.monotonic() + self.cfg.gallery.reload_check_s
        fps_window: deque[float] = deque(maxlen=60)
        while not self.stop_event.is_set():
            now = time.monotonic()
            if self._reload_requested.is_set() or now >= next_reload_check:
                self._maybe_reload(forced=self._reload_requested.is_set())
                next_reload_check = now + self.cfg.gallery.reload_check_s
            frame = self._grabber.get(POLL_S)
            if frame is None:
                if self._grabber.finished:
                    source = self._grabber.status()
                    if source.state == "failed":
                        raise CameraError(source.detail)
                    self._finish_stream()
                    self.request_stop(source.detail or "source ended")
                    break
                if not self._grabber.is_file:
                    self._check_stalled()
                    if self._grabber.status().state != "streaming" or self._stalled:
                        self._idle(time.monotonic())
            else:
                self._process(frame)
                fps_window.append(time.monotonic())
                if watchdog_every and time.monotonic() - last_watchdog >= watchdog_every:
                    self.notifier.watchdog()
                    last_watchdog = time.monotonic()
                if not self._ready:
                    self._check_ready()
            if time.monotonic() >= next_status:
                self._report_status(fps_window)
                next_status = time.monotonic() + status_every

    def _check_stalled(self) -> None:
        """A live source that stopped delivering without failing (a blocked read): report it once."""
        assert self._grabber is not None
        since = self._last_frame_at or self._first_frame_at
        stalled = (self._grabber.status().state == "streaming" and since is not None
                   and time.monotonic() - since > self.cfg.camera.read_timeout_s)
        if stalled and not self._stalled:
            log.warning("camera %s: no frame for %.1f s (camera.read_timeout_s); waiting for it",
                        self.cfg.camera.name, time.monotonic() - since)
        self._stalled = stalled

    def _process(self, frame: Frame) -> None:
        assert self._pipeline is not None
        if self._stalled:
            log.info("camera %s: frames flow again", self.cfg.camera.name)
            self._stalled = False
        if self._first_frame_at is None:
            self._first_frame_at = time.monotonic()
        result = self._pipeline.process(frame)
        if result.events or result.presence:
            self._publish(result.events, result.presence)
        self._last_frame_at = time.monotonic()

    def _idle(self, t: float) -> None:
        """No frames (camera lost): live-source timers still run (left events, absence)."""
        assert self._pipeline is not None
        events, presence = self._pipeline.idle(t)
        if events or presence:
            self._publish(events, presence)

    def _finish_stream(self) -> None:
        assert self._pipeline is not None
        events, presence = self._pipeline.finish()
        self._publish(events, presence)

    def _publish(self, events: list[IdentityEvent], presence: list[PresenceChange]) -> None:
        assert self._publisher is not None
        start = time.perf_counter()
        for event in events:
            self._publisher.publish_event(event)
            self._event_counts[event.kind] += 1
            self.recent_events.append(event_payload(event, self.cfg.device_id, self.cfg.camera.name))
            if event.kind == "recognized":
                self._last_person = event.person
            log.info("%s: %s (track %d, distance %.3f, frame %d)", event.kind,
                     event.person if event.person is not None else "-", event.track_id, event.distance, event.frame)
            if event.snapshot is not None:
                self._publisher.publish_snapshot(encode_jpeg(event.snapshot, self.cfg.snapshots.jpeg_quality))
        for change in presence:
            self._publisher.publish_presence(change)
            log.info("presence: %s %s", change.person, change.state)
        self._publish_s += time.perf_counter() - start

    # ---- gallery ----

    def _open_gallery(self) -> None:
        self._gallery = Gallery(self.gallery_path, create=True)
        self._load_gallery()

    def _load_gallery(self) -> None:
        assert self._gallery is not None and self._pipeline is not None
        snapshot = self._gallery.snapshot(self.embedder.version)
        people = {p.name: PersonEntity(p.name, p.display_name) for p in self._gallery.people()}
        m = self.cfg.match
        matcher = Matcher(snapshot, self.threshold, m.method, m.score, m.k)
        removed = set(self._people) - set(people)
        presence = self._pipeline.set_matcher(matcher, removed)
        changed_people = people != self._people
        self._people = people
        self._counter = snapshot.change_counter
        log.info("gallery %s: %d people, %d samples (change %d)", self.gallery_path, len(snapshot.names),
                 len(snapshot.labels), snapshot.change_counter)
        if not snapshot.names:
            log.warning("gallery %s is empty: every face is unknown until someone is enrolled "
                        "(edged --gallery %s enroll NAME PHOTO)", self.gallery_path, self.gallery_path)
        if self._publisher is not None:
            if presence:
                self._publish([], presence)
            if changed_people:
                self._publisher.set_people(people.values())

    def _maybe_reload(self, forced: bool) -> None:
        assert self._gallery is not None
        self._reload_requested.clear()
        try:
            counter = self._gallery.change_counter()
            if not forced and counter == self._counter:
                return
            log.info("gallery %s: %s; reloading", self.gallery_path, "SIGHUP" if forced else "changed")
            self._load_gallery()
            self.stats.gallery_reloads += 1
        except (GalleryError, sqlite3.Error, OSError, ValueError) as exc:  # a bad reload must not stop us
            log.error("gallery reload failed, keeping the previous one: %s", exc)

    # ---- readiness, status, shutdown ----

    def _check_ready(self) -> None:
        assert self._publisher is not None
        if self._publisher.connected:
            self._ready = True
            self.notifier.ready(self._status_line(0.0))
            log.info("edged ready: camera streaming, gallery loaded (%d people), broker connected",
                     len(self._people))

    def _status_line(self, fps: float) -> str:
        assert self._grabber is not None and self._pipeline is not None and self._publisher is not None
        source = self._grabber.status()
        tracks = len(self._pipeline.tracker.tracks)
        camera = "camera stalled (no frames)" if self._stalled else f"camera {source.state}"
        if source.state == "reconnecting":
            camera += f" ({source.detail}; attempt {source.failures}, retry in {source.retry_in_s:.1f} s)"
        last = self._last_person or "-"
        return (f"{fps:.1f} fps, {tracks} track{'s' if tracks != 1 else ''}, last: {last}; {camera}; "
                f"{self._publisher.status}")

    def _report_status(self, fps_window: deque[float]) -> None:
        fps = 0.0
        if len(fps_window) >= 2 and fps_window[-1] > fps_window[0]:
            fps = (len(fps_window) - 1) / (fps_window[-1] - fps_window[0])
        if fps_window and time.monotonic() - fps_window[-1] > 2.0:
            fps = 0.0
        line = self._status_line(fps)
        self.notifier.status(line)
        log.debug("status: %s", line)

    def _shutdown(self) -> None:
        reason = self._stop_reason or "stopping"
        self.stop_event.set()
        self.notifier.stopping(f"stopping: {reason}")
        log.info("edged stopping (%s)", reason)
        if self._grabber is not None and not self._grabber.join(1.0):
            log.warning("camera grabber did not stop within 1 s (blocked in a read); leaving it")
        if self._publisher is not None:
            self._publisher.stop(MQTT_STOP_S)
        if self._gallery is not None:
            self._gallery.close()

    def _fill_stats(self, wall: float, cpu: float) -> None:
        s = self.stats
        s.exit_reason = self._stop_reason
        s.wall_s = round(wall, 4)
        s.cpu_s = round(cpu, 3)
        s.peak_rss_mb = peak_rss_mb()
        s.ready = self._ready
        if self._first_frame_at is not None:
            s.processing_s = round((self._last_frame_at or self._first_frame_at) - self._first_frame_at, 4)
        s.events = dict(self._event_counts)
        s.seconds = {"decode": 0.0, **dict.fromkeys(STAGES, 0.0), "publish": round(self._publish_s, 4)}
        if self._grabber is not None:
            source = self._grabber.status()
            s.frames_read = source.frames_read
            s.frames_dropped = source.frames_dropped
            s.source_reconnects = source.reconnects
            s.source_state = source.state
            s.seconds["decode"] = round(self._grabber.decode_s, 4)
            if self._grabber.is_file and s.processing_s > 0 and source.fps:
                s.realtime_factor = round(source.frames_read / source.fps / s.processing_s, 3)
        if self._pipeline is not None:
            p = self._pipeline.stats
            s.frames_processed = p.frames
            s.detector_runs = p.detector_runs
            s.small_face_scans = p.small_face_scans
            s.faces_detected = p.faces_detected
            s.tracks = p.tracks_started
            s.embeds = p.embeds
            s.embed_batches = p.embed_batches
            s.seconds.update({k: round(v, 4) for k, v in p.seconds.items()})
            for person, (frame, t) in p.recognized.items():
                first_frame, first_t = p.first_detected[person]
                s.people[person] = PersonTiming(first_frame, round(first_t, 4), frame, round(t, 4))
        s.fps = round(s.frames_processed / s.processing_s, 2) if s.processing_s > 0 else 0.0
        if self._publisher is not None:
            s.mqtt = asdict(self._publisher.stats)

