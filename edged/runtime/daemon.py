"""The daemon: camera grabber thread -> recognition pipeline -> event stream -> sinks, with systemd integration.

The daemon only wires: it owns the threads, the one stop `threading.Event` and the loop that feeds
frames to the `RecognitionPipeline` and what comes out of it to the `EventStream`. Every output
(MQTT and Home Assistant, tests' and the bench's recorders, ...) is an `EventSink` with its own
bounded queue and thread (`edged.runtime.sinks`), so a slow output never stalls the frame loop.

Threads: one grabber per camera (`edged.camera.grabber.Grabber`), one per sink (and paho's network
thread inside the MQTT sink), and the caller's thread running the processing loop. Every loop waits
on the stop event or on a short timeout.

Several cameras (`cameras:`) share the one embedder, detector and landmark models and the gallery snapshot;
each has its own grabber, pipeline (tracker, voter, presence timers), load window and statistics
(`CameraRun`). The loop is round-robin: each pass takes at most one frame from every camera, starting one
camera further each time, and each grabber keeps only its newest frame (dropping and counting the rest), so
under overload every camera gets its share of frames instead of one starving the others. Presence is merged
over the cameras and the cameras of one door make one visit of a person (`edged.runtime.cameras`). The web
page's live view shows the first camera.

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
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edged.camera.grabber import Grabber
from edged.camera.source import CameraError, CaptureFactory
from edged.config import CameraConfig, Config
from edged.embed.base import Embedder
from edged.errors import GalleryError
from edged.gallery.match import MatchRule
from edged.gallery.store import Gallery
from edged.gallery.unknowns import site_matcher, unknowns_counter
from edged.machine import cpu_seconds, peak_rss_mb
from edged.models.embedders import embedder_from_config
from edged.runtime.access import check_people
from edged.runtime.cameras import DoorVisits, PresenceMerge
from edged.runtime.outputs import build_sinks
from edged.runtime.overload import Governor, Load, LoadWindow, OverloadWatch
from edged.runtime.pipeline import FrameResult, RecognitionPipeline, finish_steps
from edged.runtime.sinks import EventSink, EventStream
from edged.runtime.stats import CameraStats, RunStats
from edged.runtime.systemd import Notifier
from edged.types import (
    Box,
    CameraHealth,
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


class CameraRun:
    """One camera of the daemon: its grabber, its recognition pipeline, its load window and detector governor."""

    def __init__(self, cfg: Config, camera: CameraConfig, pipeline: RecognitionPipeline) -> None:
        self.cfg = cfg
        self.camera = camera
        self.name = camera.name
        self.pipeline = pipeline
        self.grabber: Grabber | None = None
        self.stats = CameraStats(name=camera.name, pipeline=pipeline.stats)
        #: Overload: the last minute's frames and the loop's busy time, the detector cadence governor, the warning.
        self.load_window = LoadWindow(LOAD_WINDOW_S)
        self.governor = Governor(max_factor=cfg.detector.max_cadence_factor)
        self.overload = OverloadWatch(cfg.service.overload_drop_fraction, OVERLOAD_LOG_EVERY_S)
        self.load = Load(0.0, 0, 0, 0.0)
        self.first_frame_at: float | None = None
        self.last_frame_at: float | None = None
        self.stalled = False
        self.next_idle = 0.0
        self.fps_window: deque[float] = deque(maxlen=60)
        #: The source ended (end of file) and its last events were emitted.
        self.done = False

    def start(self, stop: threading.Event, capture_factory: CaptureFactory | None, notify: threading.Event) -> None:
        self.grabber = Grabber(self.camera, stop, capture_factory, notify=notify)
        self.stats.is_file = self.grabber.is_file
        self.grabber.start()

    def check_stalled(self) -> None:
        """A live source that stopped delivering without failing (a blocked read): report it once."""
        assert self.grabber is not None
        since = self.last_frame_at or self.first_frame_at
        stalled = (self.grabber.status().state == SourceState.STREAMING and since is not None
                   and time.monotonic() - since > self.camera.read_timeout_s)
        if stalled and not self.stalled:
            log.warning("camera %s: no frame for %.1f s (camera.read_timeout_s); waiting for it",
                        self.name, time.monotonic() - since)
        self.stalled = stalled

    def fps(self) -> float:
        window = self.fps_window
        fps = 0.0
        if len(window) >= 2 and window[-1] > window[0]:
            fps = (len(window) - 1) / (window[-1] - window[0])
        if window and time.monotonic() - window[-1] > 2.0:
            fps = 0.0
        return fps

    def health(self, fps: float) -> CameraHealth:
        assert self.grabber is not None
        source = self.grabber.status()
        return CameraHealth(self.name, round(fps, 2), source.state, self.stalled, len(self.pipeline.tracker.tracks),
                            self.pipeline.stats.frames, source.frames_dropped,
                            round(100 * self.load.dropped_fraction, 1), self.overload.overloaded(self.load),
                            self.pipeline.detect_every_n)

    def state_line(self) -> str:
        """This camera's state for the status line."""
        assert self.grabber is not None
        source = self.grabber.status()
        line = "camera stalled (no frames)" if self.stalled else f"camera {source.state}"
        if source.state == SourceState.RECONNECTING:
            line += f" ({source.detail}; attempt {source.failures}, retry in {source.retry_in_s:.1f} s)"
        if self.overload.overloaded(self.load):
            line += (f"; overloaded: {100 * self.load.dropped_fraction:.0f}% of frames dropped in the last "
                     f"{self.load.seconds:.0f} s")
        return line

    def watch_load(self, now: float, busy_s: float) -> None:
        """Once a second: the last minute's dropped frames and the loop's busy time; adapt the detector cadence
        (live sources and realtime files) and say so when frames are being dropped."""
        assert self.grabber is not None
        source = self.grabber.status()
        self.load = self.load_window.add(now, source.frames_read, source.frames_dropped, busy_s)
        if self.grabber.is_file and not self.camera.realtime:
            return  # read as fast as processing goes: nothing is dropped, the cadence stays as configured
        factor = self.governor.update(now, self.load)
        if factor is not None:
            before = self.pipeline.detect_every_n
            self.pipeline.cadence_factor = factor
            self.stats.cadence_changes += 1
            self.stats.max_cadence_factor = max(self.stats.max_cadence_factor, factor)
            log.info("camera %s: the frame loop is %d%% busy, %d frames dropped in the last %.0f s: the detector "
                     "now runs every %d frames (was %d)", self.name, round(100 * self.load.busy),
                     self.load.dropped, self.load.seconds, self.pipeline.detect_every_n, before)
        warning = self.overload.warning(now, self.load, self.name, self.pipeline.detect_every_n)
        if warning:
            self.stats.overload_warnings += 1
            log.warning("%s", warning)

    def finish_stats(self) -> None:
        if self.first_frame_at is not None:
            self.stats.processing_s = round((self.last_frame_at or self.first_frame_at) - self.first_frame_at, 4)
        if self.grabber is not None:
            self.stats.source = self.grabber.status()
            self.stats.decode_s = self.grabber.decode_s


class Daemon:
    """The cameras, one gallery, the configured sinks: `run()` until stopped or every video ends."""

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
        self._frame_ready = threading.Event()
        self._stop_reason = ""
        self._gallery: Gallery | None = None
        self._people: dict[str, PersonEntity] = {}
        self._counter = -1
        self._unknowns_counter = -1
        self._next_cohort_check = 0.0
        self._runs: list[CameraRun] = []
        self._event_counts: Counter[str] = Counter()
        self._ready = False
        self._last_person: str | None = None
        self._busy_s = 0.0
        #: Several cameras: presence over all of them, and one visit per person over a door's cameras.
        self._presence = PresenceMerge() if cfg.multi_camera else None
        self._visits = (DoorVisits({c.name: cfg.entrance_of(c.name) for c in cfg.cameras},
                                   cfg.tracking.door_visit_s) if cfg.multi_camera else None)

    @property
    def _pipeline(self) -> RecognitionPipeline | None:
        """The first camera's pipeline."""
        return self._runs[0].pipeline if self._runs else None

    @property
    def _grabber(self) -> Grabber | None:
        """The first camera's grabber."""
        return self._runs[0].grabber if self._runs else None

    # ---- control (any thread, signal handlers) ----

    def request_stop(self, reason: str = "stop requested") -> None:
        if not self.stop_event.is_set():
            self._stop_reason = reason
        self.stop_event.set()
        self._frame_ready.set()

    def request_reload(self) -> None:
        self._reload_requested.set()
        self._frame_ready.set()

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
        """Run until SIGTERM/SIGINT, `request_stop()`, or the end of every video file."""
        started, cpu0 = time.monotonic(), cpu_seconds()
        previous = self._install_signals()
        cfg = self.cfg
        try:
            log.info("edged starting: device %s, camera%s %s, gallery %s, embedder %s (threshold %.3f, margin %s)",
                     cfg.device_id, "s" if cfg.multi_camera else "", ", ".join(c.name for c in cfg.cameras),
                     self.gallery_path, self.embedder.name, self.rule.threshold,
                     self.rule.max_ratio if self.rule.max_ratio is not None else "off")
            first: RecognitionPipeline | None = None
            for camera in cfg.cameras:
                pipeline = RecognitionPipeline.from_config(cfg, self.embedder, camera=camera, share=first)
                first = first or pipeline
                self._runs.append(CameraRun(cfg, camera, pipeline))
            assert first is not None
            if first.detector_note:
                log.warning("%s", first.detector_note)
            first.detector.load()
            runtime = f" on {first.detector.runtime_used}" if first.detector.runtime_used else ""
            log.info("detector: %s%s, detection scale %s", first.detector.backend, runtime, cfg.detector.scale)
            self.stats.pipeline = first.stats
            self.stats.cameras = {run.name: run.stats for run in self._runs}
            self._gallery = Gallery(self.gallery_path, create=self.create)
            sinks = build_sinks(cfg, self.gallery_path, self.embedder, emit=lambda item: self.stream.emit(item),
                                liveness=first.liveness_enabled)
            self.stream = EventStream([*sinks, *self.extra_sinks])
            if cfg.access.enabled:
                check_people(cfg.access, {p.name for p in self._gallery.people()})
            self._load_gallery()
            self._warm_up()
            self.stream.start()
            for run in self._runs:
                run.start(self.stop_event, self.capture_factory, self._frame_ready)
            self.stats.is_file = self._runs[0].stats.is_file
            self._loop()
        finally:
            self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._finish_stats(time.monotonic() - started, cpu_seconds() - cpu0)
        return self.stats

    def _warm_up(self) -> None:
        """Load the detector, landmark and embedding models now, not on the first face."""
        pipeline = self._runs[0].pipeline
        blank = np.zeros((64, 64, 3), np.uint8)
        pipeline.detector.detect(blank)
        pipeline.aligner.landmarks(blank, Box(8, 8, 56, 56))
        size = self.embedder.alignment.size
        self.embedder.embed(np.zeros((1, size, size, 3), np.uint8))

    def _loop(self) -> None:
        status_every = self.cfg.service.status_every_s
        watchdog_every = self.notifier.watchdog_interval_s
        next_status = time.monotonic()
        last_watchdog = 0.0
        next_reload_check = time.monotonic() + self.cfg.gallery.reload_check_s
        next_load = time.monotonic() + LOAD_SAMPLE_S
        first = 0  # round-robin: the camera that goes first in this pass
        reported: tuple[SourceState, ...] = ()  # the cameras' states in the last status
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now >= next_load:
                for run in self._runs:
                    run.watch_load(now, self._busy_s)
                next_load = now + LOAD_SAMPLE_S
            if self._reload_requested.is_set() or now >= next_reload_check:
                self._maybe_reload(forced=self._reload_requested.is_set())
                next_reload_check = now + self.cfg.gallery.reload_check_s
            self._frame_ready.clear()
            count = len(self._runs)
            taken = [(run, frame) for run in (self._runs[(first + k) % count] for k in range(count))
                     if not run.done and (frame := self._take(run)) is not None]
            processed = bool(taken)
            if taken:
                self._process(taken)
            first = (first + 1) % count
            if processed:
                if watchdog_every and time.monotonic() - last_watchdog >= watchdog_every:
                    self.notifier.watchdog()
                    last_watchdog = time.monotonic()
                if not self._ready:
                    self._check_ready()
            if self._visits is not None:
                self._emit_routed(self._visits.due(time.time()))
            if all(run.done for run in self._runs):
                if self._visits is not None:
                    self._emit_routed(self._visits.flush())
                last = self._runs[-1].grabber
                self.request_stop((last.status().detail if last is not None else "") or "source ended")
                break
            if not processed:
                self._frame_ready.wait(POLL_S)
            states = tuple(run.grabber.status().state for run in self._runs if run.grabber is not None)
            if time.monotonic() >= next_status or states != reported:  # and at once when a camera's state changes
                self._report_status()
                next_status, reported = time.monotonic() + status_every, states

    def _take(self, run: CameraRun) -> Frame | None:
        """This camera's waiting frame; without one, the camera's end, loss or stall is handled."""
        assert run.grabber is not None
        frame = run.grabber.get(0.0)
        if frame is not None:
            return frame
        if run.grabber.finished:
            source = run.grabber.status()
            if source.state == SourceState.FAILED:
                raise CameraError(f"camera {run.name}: {source.detail}" if self.cfg.multi_camera else source.detail)
            self._emit(run, *run.pipeline.finish())
            run.done = True
        elif not run.grabber.is_file:
            run.check_stalled()
            now = time.monotonic()
            if (run.grabber.status().state != SourceState.STREAMING or run.stalled) and now >= run.next_idle:
                self._emit(run, *run.pipeline.idle(now))  # camera lost: timers still run (left, absence)
                run.next_idle = now + POLL_S
        return None

    def _process(self, taken: list[tuple[CameraRun, Frame]]) -> None:
        """One frame of each of these cameras, their faces embedded in one batch (one embedder for all)."""
        started = time.monotonic()
        for run, _frame in taken:
            if run.stalled:
                log.info("camera %s: frames flow again", run.name)
                run.stalled = False
            if run.first_frame_at is None:
                run.first_frame_at = started
        steps = [run.pipeline.steps(frame) for run, frame in taken]
        crops = [next(s) for s in steps]
        vectors, seconds = taken[0][0].pipeline.embed([c for cs in crops for c in cs])
        if sum(1 for cs in crops if cs) > 1:
            self.stats.shared_embed_batches += 1
        results, at = [], 0
        total = max(1, sum(len(cs) for cs in crops))
        for s, cs in zip(steps, crops, strict=True):  # each its own rows, and its share of the time
            results.append(finish_steps(s, (vectors[at:at + len(cs)], seconds * len(cs) / total)))
            at += len(cs)
        self._busy_s += time.monotonic() - started
        for (run, frame), result in zip(taken, results, strict=True):
            self._finish_frame(run, frame, result)

    def _finish_frame(self, run: CameraRun, frame: Frame, result: FrameResult) -> None:
        for report in result.liveness:
            log.info("liveness: %strack %d %s (%s)", f"{run.name} " if self.cfg.multi_camera else "",
                     report.track_id, {True: "live", False: "refused", None: "undecided"}[report.live],
                     "; ".join(report.reasons[:3]))
            self.stream.emit(replace(report, camera=run.name))
        self._emit(run, result.events, result.presence)
        self.stream.offer_frame(frame, result.observations, run.name)
        run.last_frame_at = time.monotonic()
        run.fps_window.append(run.last_frame_at)

    def _emit(self, run: CameraRun, events: list[IdentityEvent], presence: list[PresenceChange]) -> None:
        stamped = [replace(event, camera=run.name) for event in events]
        if self._visits is not None:
            stamped = [out for event in stamped for out in self._visits.route(event)]
        self._emit_routed(stamped)
        for change in presence:
            merged = change if self._presence is None else self._presence.update(run.name, change)
            if merged is not None:
                log.info("presence: %s %s", merged.person, merged.state)
                self.stream.emit(merged)

    def _emit_routed(self, events: list[IdentityEvent]) -> None:
        where = self.cfg.multi_camera
        for event in events:
            at = f" at {event.camera}" if where else ""
            if event.resumed:  # a new track of a person whose visit goes on: for the door only
                if event.kind == EventKind.RECOGNIZED:
                    log.info("recognized: %s again%s (track %d, same visit %d)", event.person, at, event.track_id,
                             event.visit_id)
                self.stream.emit(event)
                continue
            self._event_counts[event.kind] += 1
            if event.kind == EventKind.RECOGNIZED:
                self._last_person = event.person
            why = (f"; nearest {event.candidate or '-'}: {event.reason}" if event.kind == EventKind.UNKNOWN
                   and event.reason is not None else "")
            log.info("%s: %s%s (track %d, distance %.3f, frame %d%s)", event.kind,
                     event.person if event.person is not None else "-", at, event.track_id, event.distance,
                     event.frame, why)
            self.stream.emit(event)

    # ---- gallery ----

    def _load_gallery(self) -> None:
        assert self._gallery is not None
        snapshot = self._gallery.snapshot(self.embedder.version)
        people = {p.name: PersonEntity(p.name, p.display_name, p.id) for p in self._gallery.people()}
        matcher = site_matcher(self._gallery, self.rule, snapshot, self.embedder.version)
        self._unknowns_counter = unknowns_counter(self._gallery)
        removed = set(self._people) - set(people)
        changed_people = people != self._people or self._counter < 0
        self._people = people
        self._counter = snapshot.change_counter
        log.info("gallery %s: %d people, %d samples (change %d)", self.gallery_path, len(snapshot.names),
                 len(snapshot.labels), snapshot.change_counter)
        if not snapshot.names:
            log.warning("gallery %s is empty: every face is unknown until someone is enrolled "
                        "(edged --gallery %s enroll NAME PHOTO)", self.gallery_path, self.gallery_path)
        for run in self._runs:
            left, presence = run.pipeline.set_matcher(matcher, removed)
            self._emit(run, left, presence)
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
        assert self._gallery is not None
        now = time.monotonic()
        if now < self._next_cohort_check:
            return
        self._next_cohort_check = now + COHORT_REFRESH_S
        counter = unknowns_counter(self._gallery)
        if counter != self._unknowns_counter:
            snapshot = self._gallery.snapshot(self.embedder.version)
            matcher = site_matcher(self._gallery, self.rule, snapshot, self.embedder.version)
            for run in self._runs:
                run.pipeline.matcher = matcher
            self._unknowns_counter = counter
            log.info("gallery %s: margin test now knows %d stranger faces", self.gallery_path, matcher.cohort_size)

    # ---- readiness, status, shutdown ----

    def _check_ready(self) -> None:
        if self.stream.ready:
            self._ready = True
            self.notifier.ready(self._health().status)
            log.info("edged ready: camera streaming, gallery loaded (%d people)%s", len(self._people),
                     ", every output ready" if self.stream.sinks else "")

    def _health(self) -> Health:
        """The daemon's state; the top-level camera fields are the first camera's."""
        cameras = tuple(run.health(run.fps()) for run in self._runs)
        head, run = cameras[0], self._runs[0]
        tracks = sum(c.tracks for c in cameras)
        outputs = self.stream.status
        if self.cfg.multi_camera:
            where = "; ".join(f"{c.name}: {c.fps:.1f} fps, {r.state_line()}"
                              for c, r in zip(cameras, self._runs, strict=True))
            line = f"{tracks} track{'s' if tracks != 1 else ''}, last: {self._last_person or '-'}; {where}"
        else:
            line = (f"{head.fps:.1f} fps, {tracks} track{'s' if tracks != 1 else ''}, last: "
                    f"{self._last_person or '-'}; {run.state_line()}")
        line += f"; {outputs}" if outputs else ""
        return Health(line, head.fps, head.state, tracks, self._last_person, time.time(), head.stalled,
                      head.frames_dropped, head.dropped_percent, head.overloaded, head.detect_every_n,
                      cameras if self.cfg.multi_camera else ())

    def _report_status(self) -> None:
        health = self._health()
        self.notifier.status(health.status)
        self.stream.emit(health)
        log.debug("status: %s", health.status)

    def _shutdown(self) -> None:
        reason = self._stop_reason or "stopping"
        self.stop_event.set()
        self.notifier.stopping(f"stopping: {reason}")
        log.info("edged stopping (%s)", reason)
        for run in self._runs:
            if run.grabber is not None and not run.grabber.join(1.0):
                log.warning("camera %s: grabber did not stop within 1 s (blocked in a read); leaving it", run.name)
        self.stream.close(SINK_CLOSE_S)
        for run in self._runs:
            if run.pipeline.liveness is not None and run.pipeline.liveness.worker is not None:
                run.pipeline.liveness.worker.close()  # shared by the cameras: closing twice is fine
        if self._gallery is not None:
            self._gallery.close()

    def _finish_stats(self, wall: float, cpu: float) -> None:
        s = self.stats
        s.exit_reason = self._stop_reason
        s.wall_s = round(wall, 4)
        s.cpu_s = round(cpu, 3)
        s.peak_rss_mb = peak_rss_mb()
        s.ready = self._ready
        for run in self._runs:
            run.finish_stats()
        starts = [r.first_frame_at for r in self._runs if r.first_frame_at is not None]
        ends = [r.last_frame_at or r.first_frame_at for r in self._runs if r.first_frame_at is not None]
        if starts:
            s.processing_s = round(max(e for e in ends if e is not None) - min(starts), 4)
        s.events = dict(self._event_counts)
        if self._runs:
            head = self._runs[0].stats
            s.source, s.decode_s = head.source, head.decode_s
            s.overload_warnings = sum(r.stats.overload_warnings for r in self._runs)
            s.cadence_changes = sum(r.stats.cadence_changes for r in self._runs)
            s.max_cadence_factor = max(r.stats.max_cadence_factor for r in self._runs)
        s.sinks = self.stream.stats()
