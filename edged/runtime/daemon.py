"""The daemon: camera grabber thread -> recognition pipeline -> event stream -> sinks, with systemd integration.

The daemon only wires: it owns the threads, the one stop `threading.Event` and the loop that feeds
frames to the `RecognitionPipeline` and what comes out of it to the `EventStream`. Every output
(MQTT and Home Assistant, tests' and the bench's recorders, ...) is an `EventSink` with its own
bounded queue and thread (`edged.runtime.sinks`), so a slow output never stalls the frame loop.

Threads: one grabber per source (`edged.camera.grabber.Grabber`), one per sink (and paho's network
thread inside the MQTT sink), and the caller's thread running the processing loop. Every loop waits
on the stop event or on a short timeout.

Signals (installed when `run()` is called on the main thread): SIGTERM and SIGINT stop cleanly
(offline published, threads joined) within 2 s; SIGHUP reloads the gallery. The gallery's
change counter is also polled every `gallery.reload_check_s`, so `edged enroll` in another
process is picked up without a restart.

systemd (`Type=notify`): READY=1 once the camera delivered a frame, the gallery is loaded and every
sink is ready (the broker accepted the connection); WATCHDOG=1 from the frame loop only while frames
flow; STATUS= every `service.status_every_s`; STOPPING=1 on shutdown.

`Daemon(config).run()` returns `RunStats` (also written by `edged run --stats-json FILE`).
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edged.camera.grabber import Grabber
from edged.camera.source import CameraError, CaptureFactory
from edged.config import Config
from edged.embed.base import Embedder
from edged.errors import GalleryError
from edged.gallery.match import MatchRule
from edged.gallery.store import Gallery
from edged.gallery.unknowns import site_matcher, unknowns_counter
from edged.machine import cpu_seconds, peak_rss_mb
from edged.models.embedders import embedder_from_config
from edged.runtime.access import check_people
from edged.runtime.outputs import build_sinks
from edged.runtime.overload import Governor, Load, LoadWindow, OverloadWatch
from edged.runtime.pipeline import RecognitionPipeline
from edged.runtime.sinks import EventSink, EventStream
from edged.runtime.stats import RunStats
from edged.runtime.systemd import Notifier
from edged.types import (
    Box,
    EventKind,
    Frame,
    Health,
    IdentityEvent,
    PeopleChanged,
    PersonEntity,
    PresenceChange,
    SourceState,
)

log = logging.getLogger(__name__)

#: Seconds the processing loop waits for a frame before doing housekeeping.
POLL_S = 0.1
#: Overload: the load is sampled this often (seconds), over this window; the warning at most this often.
LOAD_SAMPLE_S = 1.0
LOAD_WINDOW_S = 60.0
OVERLOAD_LOG_EVERY_S = 60.0
#: Budget for closing each sink (flush in-flight messages, publish offline).
SINK_CLOSE_S = 1.0
#: How often newly stored strangers are taken into the margin test (seconds).
COHORT_REFRESH_S = 300.0


class Daemon:
    """One camera, one gallery, the configured sinks: `run()` until stopped or the video ends."""

    def __init__(self, cfg: Config, *, gallery_path: str | os.PathLike[str] | None = None,
                 embedder: Embedder | None = None, capture_factory: CaptureFactory | None = None,
                 notifier: Notifier | None = None, stop: threading.Event | None = None,
                 sinks: Sequence[EventSink] = (), create: bool = True) -> None:
        """`sinks`: outputs besides those the config enables (`edged.runtime.outputs.build_sinks`);
        `create`: start with an empty gallery when there is none (`edged run` refuses unless --create)."""
        self.cfg = cfg
        self.gallery_path = Path(gallery_path or cfg.gallery.path).expanduser()
        self.create = create
        self.embedder = embedder or embedder_from_config(cfg)
        self.rule = MatchRule.of(self.embedder, cfg.embedder, cfg.match)
        self.notifier = notifier or Notifier()
        self.stop_event = stop or threading.Event()
        self.capture_factory = capture_factory
        self.extra_sinks = list(sinks)
        self.stream = EventStream()
        self.stats = RunStats()
        self._reload_requested = threading.Event()
        self._stop_reason = ""
        self._gallery: Gallery | None = None
        self._people: dict[str, PersonEntity] = {}
        self._counter = -1
        self._unknowns_counter = -1
        self._next_cohort_check = 0.0
        self._grabber: Grabber | None = None
        self._pipeline: RecognitionPipeline | None = None
        self._event_counts: Counter[str] = Counter()
        self._ready = False
        self._last_person: str | None = None
        self._first_frame_at: float | None = None
        self._stalled = False
        self._last_frame_at: float | None = None
        #: Overload: the last minute's frames and busy time, the detector cadence governor, the warning.
        self._load_window = LoadWindow(LOAD_WINDOW_S)
        self._governor = Governor(max_factor=cfg.detector.max_cadence_factor)
        self._overload = OverloadWatch(cfg.service.overload_drop_fraction, OVERLOAD_LOG_EVERY_S)
        self._load = Load(0.0, 0, 0, 0.0)
        self._busy_s = 0.0

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
        started, cpu0 = time.monotonic(), cpu_seconds()
        previous = self._install_signals()
        cfg = self.cfg
        try:
            log.info("edged starting: device %s, camera %s, gallery %s, embedder %s (threshold %.3f, margin %s)",
                     cfg.device_id, cfg.camera.name, self.gallery_path, self.embedder.name, self.rule.threshold,
                     self.rule.max_ratio if self.rule.max_ratio is not None else "off")
            self._pipeline = RecognitionPipeline.from_config(cfg, self.embedder)
            if self._pipeline.detector_note:
                log.warning("%s", self._pipeline.detector_note)
            log.info("detector: %s, detection scale %s", self._pipeline.detector.backend, cfg.detector.scale)
            self.stats.pipeline = self._pipeline.stats
            self._gallery = Gallery(self.gallery_path, create=self.create)
            sinks = build_sinks(cfg, self.gallery_path, self.embedder, emit=lambda item: self.stream.emit(item),
                                liveness=self._pipeline.liveness_enabled)
            self.stream = EventStream([*sinks, *self.extra_sinks])
            if cfg.access.enabled:
                check_people(cfg.access, {p.name for p in self._gallery.people()})
            self._load_gallery()
            self._warm_up()
            self.stream.start()
            self._grabber = Grabber(cfg.camera, self.stop_event, self.capture_factory)
            self.stats.is_file = self._grabber.is_file
            self._grabber.start()
            self._loop()
        finally:
            self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._finish_stats(time.monotonic() - started, cpu_seconds() - cpu0)
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
        next_load = time.monotonic() + LOAD_SAMPLE_S
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now >= next_load:
                self._watch_load(now)
                next_load = now + LOAD_SAMPLE_S
            if self._reload_requested.is_set() or now >= next_reload_check:
                self._maybe_reload(forced=self._reload_requested.is_set())
                next_reload_check = now + self.cfg.gallery.reload_check_s
            frame = self._grabber.get(POLL_S)
            if frame is None:
                if self._grabber.finished:
                    source = self._grabber.status()
                    if source.state == SourceState.FAILED:
                        raise CameraError(source.detail)
                    self._finish_stream()
                    self.request_stop(source.detail or "source ended")
                    break
                if not self._grabber.is_file:
                    self._check_stalled()
                    if self._grabber.status().state != SourceState.STREAMING or self._stalled:
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
        stalled = (self._grabber.status().state == SourceState.STREAMING and since is not None
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
        started = time.monotonic()
        result = self._pipeline.process(frame)
        self._busy_s += time.monotonic() - started
        for report in result.liveness:
            log.info("liveness: track %d %s (%s)", report.track_id,
                     {True: "live", False: "refused", None: "undecided"}[report.live], "; ".join(report.reasons[:3]))
            self.stream.emit(report)
        self._emit(result.events, result.presence)
        self.stream.offer_frame(frame, result.observations)
        self._last_frame_at = time.monotonic()

    def _idle(self, t: float) -> None:
        """No frames (camera lost): live-source timers still run (left events, absence)."""
        assert self._pipeline is not None
        self._emit(*self._pipeline.idle(t))

    def _finish_stream(self) -> None:
        assert self._pipeline is not None
        self._emit(*self._pipeline.finish())

    def _emit(self, events: list[IdentityEvent], presence: list[PresenceChange]) -> None:
        for event in events:
            if event.resumed:  # a new track of a person whose visit goes on: for the door only
                log.info("recognized: %s again (track %d, same visit %d)", event.person, event.track_id,
                         event.visit_id)
                self.stream.emit(event)
                continue
            self._event_counts[event.kind] += 1
            if event.kind == EventKind.RECOGNIZED:
                self._last_person = event.person
            why = (f"; nearest {event.candidate or '-'}: {event.reason}" if event.kind == EventKind.UNKNOWN
                   and event.reason is not None else "")
            log.info("%s: %s (track %d, distance %.3f, frame %d%s)", event.kind,
                     event.person if event.person is not None else "-", event.track_id, event.distance, event.frame,
                     why)
            self.stream.emit(event)
        for change in presence:
            log.info("presence: %s %s", change.person, change.state)
            self.stream.emit(change)

    # ---- gallery ----

    def _load_gallery(self) -> None:
        assert self._gallery is not None and self._pipeline is not None
        snapshot = self._gallery.snapshot(self.embedder.version)
        people = {p.name: PersonEntity(p.name, p.display_name, p.id) for p in self._gallery.people()}
        matcher = site_matcher(self._gallery, self.rule, snapshot, self.embedder.version)
        self._unknowns_counter = unknowns_counter(self._gallery)
        removed = set(self._people) - set(people)
        left, presence = self._pipeline.set_matcher(matcher, removed)
        changed_people = people != self._people or self._counter < 0
        self._people = people
        self._counter = snapshot.change_counter
        log.info("gallery %s: %d people, %d samples (change %d)", self.gallery_path, len(snapshot.names),
                 len(snapshot.labels), snapshot.change_counter)
        if not snapshot.names:
            log.warning("gallery %s is empty: every face is unknown until someone is enrolled "
                        "(edged --gallery %s enroll NAME PHOTO)", self.gallery_path, self.gallery_path)
        self._emit(left, presence)
        if changed_people:
            self.stream.emit(PeopleChanged(tuple(people[name] for name in sorted(people))))

    def _maybe_reload(self, forced: bool) -> None:
        assert self._gallery is not None
        self._reload_requested.clear()
        try:
            counter = self._gallery.change_counter()
            if not forced and counter == self._counter:
                self._maybe_refresh_cohort()
                return
            log.info("gallery %s: %s; reloading", self.gallery_path, "SIGHUP" if forced else "changed")
            self._load_gallery()
            self.stats.gallery_reloads += 1
        except (GalleryError, sqlite3.Error, OSError, ValueError) as exc:  # a bad reload must not stop us
            log.error("gallery reload failed, keeping the previous one: %s", exc)

    def _maybe_refresh_cohort(self) -> None:
        """New stored strangers strengthen the margin test: rebuild the matcher now and then (not per visit)."""
        assert self._gallery is not None and self._pipeline is not None
        now = time.monotonic()
        if now < self._next_cohort_check:
            return
        self._next_cohort_check = now + COHORT_REFRESH_S
        counter = unknowns_counter(self._gallery)
        if counter != self._unknowns_counter:
            snapshot = self._gallery.snapshot(self.embedder.version)
            self._pipeline.matcher = site_matcher(self._gallery, self.rule, snapshot, self.embedder.version)
            self._unknowns_counter = counter
            log.info("gallery %s: margin test now knows %d stranger faces", self.gallery_path,
                     self._pipeline.matcher.cohort_size)

    # ---- readiness, status, shutdown ----

    def _check_ready(self) -> None:
        if self.stream.ready:
            self._ready = True
            self.notifier.ready(self._health(0.0).status)
            log.info("edged ready: camera streaming, gallery loaded (%d people)%s", len(self._people),
                     ", every output ready" if self.stream.sinks else "")

    def _health(self, fps: float) -> Health:
        assert self._grabber is not None and self._pipeline is not None
        source = self._grabber.status()
        tracks = len(self._pipeline.tracker.tracks)
        camera = "camera stalled (no frames)" if self._stalled else f"camera {source.state}"
        if source.state == SourceState.RECONNECTING:
            camera += f" ({source.detail}; attempt {source.failures}, retry in {source.retry_in_s:.1f} s)"
        outputs = self.stream.status
        load = self._load
        overloaded = self._overload.overloaded(load)
        if overloaded:
            camera += (f"; overloaded: {100 * load.dropped_fraction:.0f}% of frames dropped in the last "
                       f"{load.seconds:.0f} s")
        line = (f"{fps:.1f} fps, {tracks} track{'s' if tracks != 1 else ''}, last: {self._last_person or '-'}; "
                f"{camera}" + (f"; {outputs}" if outputs else ""))
        return Health(line, round(fps, 2), source.state, tracks, self._last_person, time.time(), self._stalled,
                      source.frames_dropped, round(100 * load.dropped_fraction, 1), overloaded,
                      self._pipeline.detect_every_n)

    def _watch_load(self, now: float) -> None:
        """Once a second: the last minute's dropped frames and busy time; adapt the detector cadence (live
        sources and realtime files) and say so when frames are being dropped."""
        assert self._grabber is not None and self._pipeline is not None
        source = self._grabber.status()
        self._load = self._load_window.add(now, source.frames_read, source.frames_dropped, self._busy_s)
        if self._grabber.is_file and not self.cfg.camera.realtime:
            return  # read as fast as processing goes: nothing is dropped, the cadence stays as configured
        factor = self._governor.update(now, self._load)
        if factor is not None:
            before = self._pipeline.detect_every_n
            self._pipeline.cadence_factor = factor
            self.stats.cadence_changes += 1
            self.stats.max_cadence_factor = max(self.stats.max_cadence_factor, factor)
            log.info("camera %s: the frame loop is %d%% busy, %d frames dropped in the last %.0f s: the detector "
                     "now runs every %d frames (was %d)", self.cfg.camera.name, round(100 * self._load.busy),
                     self._load.dropped, self._load.seconds, self._pipeline.detect_every_n, before)
        warning = self._overload.warning(now, self._load, self.cfg.camera.name, self._pipeline.detect_every_n)
        if warning:
            self.stats.overload_warnings += 1
            log.warning("%s", warning)

    def _report_status(self, fps_window: deque[float]) -> None:
        fps = 0.0
        if len(fps_window) >= 2 and fps_window[-1] > fps_window[0]:
            fps = (len(fps_window) - 1) / (fps_window[-1] - fps_window[0])
        if fps_window and time.monotonic() - fps_window[-1] > 2.0:
            fps = 0.0
        health = self._health(fps)
        self.notifier.status(health.status)
        self.stream.emit(health)
        log.debug("status: %s", health.status)

    def _shutdown(self) -> None:
        reason = self._stop_reason or "stopping"
        self.stop_event.set()
        self.notifier.stopping(f"stopping: {reason}")
        log.info("edged stopping (%s)", reason)
        if self._grabber is not None and not self._grabber.join(1.0):
            log.warning("camera grabber did not stop within 1 s (blocked in a read); leaving it")
        self.stream.close(SINK_CLOSE_S)
        if self._gallery is not None:
            self._gallery.close()

    def _finish_stats(self, wall: float, cpu: float) -> None:
        s = self.stats
        s.exit_reason = self._stop_reason
        s.wall_s = round(wall, 4)
        s.cpu_s = round(cpu, 3)
        s.peak_rss_mb = peak_rss_mb()
        s.ready = self._ready
        if self._first_frame_at is not None:
            s.processing_s = round((self._last_frame_at or self._first_frame_at) - self._first_frame_at, 4)
        s.events = dict(self._event_counts)
        if self._grabber is not None:
            s.source = self._grabber.status()
            s.decode_s = self._grabber.decode_s
        s.sinks = self.stream.stats()
