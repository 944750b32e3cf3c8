"""The daemon end to end: real video, real SQLite gallery (made with `edged enroll`), real mosquitto,
a real sd_notify socket, real signals; plus the systemd unit file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from edged.config import parse_config
from edged.embed.faces import FacePipeline
from edged.gallery.match import Matcher
from edged.gallery.store import Gallery
from edged.runtime.daemon import Daemon
from edged.runtime.mqtt import MqttSink, event_payload
from edged.runtime.pipeline import RecognitionPipeline
from edged.runtime.sinks import RecordingSink
from edged.runtime.stats import RunStats
from edged.runtime.systemd import Notifier, setup_logging
from edged.types import Frame
from edged.vision.detect import FaceDetector
from tests.conftest import CLIP_FPS as FPS
from tests.conftest import LIN, ROOT, enroll_cli, run_cli, wait_until
from tests.mosquitto import Broker, Subscriber, require_mosquitto


@pytest.fixture(scope="module")
def lin_gallery_file(tmp_path_factory: pytest.TempPathFactory, fr_dir: Path) -> Path:
    """A gallery holding lin-manuel-miranda.png, made the way a user would."""
    path = tmp_path_factory.mktemp("gallery") / "gallery.db"
    enroll_cli(path, LIN, fr_dir / "lin-manuel-miranda.png")
    return path


@pytest.fixture
def lin_gallery(tmp_path: Path, lin_gallery_file: Path) -> Path:
    copy = tmp_path / "gallery.db"
    shutil.copy(lin_gallery_file, copy)
    return copy


@pytest.fixture(scope="module")
def first_detectable_frame(clip: Path, lin_gallery_file: Path, dlib_embedder) -> int:
    """Ground truth, independent of the daemon: the first frame where HOG at upsample 1 (faces from
    ~40 px; the daemon's cheap runs use upsample 0, its small-face scans upsample 1) finds a face
    within the threshold of Lin-Manuel's enrolled sample (searched in frames 0-120). On this clip he
    is first a small figure on a stage."""
    with Gallery(lin_gallery_file, create=False) as g:
        matcher = Matcher(g.snapshot(dlib_embedder.version), dlib_embedder.threshold)
    pipeline = FacePipeline(dlib_embedder, FaceDetector("hog", upsample=1))
    cap = cv2.VideoCapture(str(clip))
    try:
        for index in range(121):
            ok, bgr = cap.read()
            assert ok
            boxes = [b for b in pipeline.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)) if b.width >= 40]
            if boxes:
                faces = pipeline.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), boxes)
                if any(r.name == LIN for r in matcher.match([f.embedding for f in faces])):
                    return index
    finally:
        cap.release()
    raise AssertionError("Lin-Manuel never detectable in the first 120 frames")


@pytest.mark.parametrize("every", [0, 15])
def test_small_face_scans_find_a_distant_face(clip: Path, lin_gallery_file: Path, dlib_embedder, every: int) -> None:
    """Frames 0-19 show Lin-Manuel small, on a stage (~53 px): the cheap upsample-0 runs miss him,
    the periodic upsample-1 scan (on the first frame, then every 15th) finds and names him."""
    cfg = parse_config(config_text(clip, lin_gallery_file, 1883, detector={"small_faces_every_n_frames": every}))
    pipeline = RecognitionPipeline.from_config(cfg, dlib_embedder)
    with Gallery(lin_gallery_file, create=False) as g:
        pipeline.set_matcher(Matcher(g.snapshot(dlib_embedder.version), dlib_embedder.threshold))
    cap = cv2.VideoCapture(str(clip))
    results = []
    try:
        for index in range(16):
            ok, bgr = cap.read()
            assert ok
            results.append(pipeline.process(Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), index, index / FPS, 0.0)))
    finally:
        cap.release()
    stats = pipeline.stats
    assert stats.detector_runs == 6  # frames 0, 3, 6, 9, 12, 15: the scans replace the cheap runs
    if every == 0:
        assert stats.small_face_scans == 0 and stats.tracks_started == 0 and stats.recognized == {}
        return
    assert stats.small_face_scans == 2 and stats.tracks_started == 1
    assert results[0].observations and results[0].observations[0].box.width < 60  # a small face
    assert LIN in stats.recognized and stats.recognized[LIN][0] <= 2
    assert any(e.kind == "recognized" and e.person == LIN for r in results for e in r.events)


def config_text(source: Path | str, gallery: Path, port: int, **sections: dict[str, Any]) -> str:
    raw: dict[str, Any] = {"device_id": "door", "camera": {"source": str(source), "name": "stage"},
                           "gallery": {"path": str(gallery), "reload_check_s": 0.2},
                           "mqtt": {"host": "127.0.0.1", "port": port, "reconnect_max_s": 1.0}}
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    return yaml.safe_dump(raw)


class NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET; records every datagram."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def lines(self, prefix: str = "") -> list[str]:
        return [m for _, m in list(self.messages) if m.startswith(prefix)]

    def first(self, line: str) -> float | None:
        return next((t for t, m in list(self.messages) if m == line), None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.sock.close()


class DaemonThread:
    """Runs `Daemon.run()` on a thread (signals are the subprocess test's business)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.stats: RunStats | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.stats = self.daemon.run()
        except BaseException as exc:
            self.error = exc

    def stop(self, timeout: float = 10.0) -> RunStats:
        self.daemon.request_stop("test")
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "daemon did not stop"
        if self.error:
            raise self.error
        assert self.stats is not None
        return self.stats


def events_of(sub: Subscriber) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in sub.on("edged/door/event")]


def test_run_hamilton_clip_as_a_service(tmp_path: Path, lin_gallery: Path, clip: Path) -> None:
    """The acceptance scenario through `edged run`, as systemd would run it: password from the
    environment, NOTIFY_SOCKET and a watchdog, SIGHUP reload, SIGTERM stop."""
    require_mosquitto()
    password = "Door-Cam-Pa55w0rd"
    with Broker(tmp_path / "broker", users={"edged": password}) as broker:
        sub = Subscriber(broker.port, ["edged/#", "homeassistant/#"], username="edged", password=password)
        cfg = tmp_path / "edged.yaml"
        cfg.write_text(config_text(clip, lin_gallery, broker.port, mqtt={"username": "edged"},
                                   service={"status_every_s": 0.5}))
        notify = NotifySocket(tmp_path / "notify.sock")
        log_file = tmp_path / "edged.log"
        stats_file = tmp_path / "stats.json"
        env = {**os.environ, "EDGED_MQTT_PASSWORD": password, "NOTIFY_SOCKET": str(notify.path),
               "WATCHDOG_USEC": "1000000"}
        with open(log_file, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "edged", "--config", str(cfg), "-vv", "run",
                                     "--stats-json", str(stats_file)], cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            assert sub.wait_for(lambda ms: any(e["type"] == "recognized" for e in events_of(sub)), 90), \
                log_file.read_text()[-3000:]
            assert wait_until(lambda: any(f"last: {LIN}" in s for s in notify.lines("STATUS=")), 5)
            assert wait_until(lambda: len(notify.lines("WATCHDOG=1")) >= 2, 5)  # repeated while frames flow
            proc.send_signal(signal.SIGHUP)
            assert wait_until(lambda: "SIGHUP; reloading" in log_file.read_text(), 10)
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(15)
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
        sub.wait_for(lambda ms: ms and ms[-1].payload == b"offline", 5)
        sub.close()
        notify.close()
    log_text = log_file.read_text()
    assert rc == 0, log_text[-3000:]
    assert took < 2.0, f"SIGTERM to exit took {took:.2f} s"
    assert password not in log_text and password not in stats_file.read_text()

    availability = [m.payload for m in sub.on("edged/door/availability")]
    assert availability[0] == b"online" and availability[-1] == b"offline"
    configs = {m.topic: json.loads(m.payload) for m in sub.all() if m.topic.startswith("homeassistant/") and m.payload}
    assert {"homeassistant/event/edged_door/face/config", "homeassistant/sensor/edged_door/last_person/config",
            "homeassistant/binary_sensor/edged_door/person_1/config"} <= set(configs)
    def availability_topics(config: dict) -> set[str]:
        if "availability_topic" in config:
            return {config["availability_topic"]}
        return {a["topic"] for a in config.get("availability", [])}
    entities = {t: c for t, c in configs.items() if "device_automation" not in t}
    assert all("edged/door/availability" in availability_topics(c) for c in entities.values())
    # what needs the camera is unavailable while the camera is down
    assert availability_topics(configs["homeassistant/event/edged_door/face/config"]) == {
        "edged/door/availability", "edged/door/camera/stage/availability"}

    events = events_of(sub)
    recognized = [e for e in events if e["type"] == "recognized"]
    assert [e["person"] for e in recognized] == [LIN]
    assert recognized[0]["camera"] == "stage" and recognized[0]["distance"] < 0.18
    # events per track, not per frame: each (track, type) at most once
    assert len({(e["track_id"], e["type"]) for e in events}) == len(events) <= 6
    presence = [json.loads(m.payload) for m in sub.on(f"edged/door/person/{LIN}")]
    # absent (never seen) from the start, then present
    assert [p["state"] for p in presence[:2]] == ["absent", "present"] and presence[0]["last_seen"] is None

    ready, stopping = notify.first("READY=1"), notify.first("STOPPING=1")
    assert ready is not None and stopping is not None and ready < stopping
    assert len(notify.lines("WATCHDOG=1")) >= 2
    status = notify.lines("STATUS=")
    assert any("fps" in s and "camera streaming" in s and "mqtt connected" in s for s in status), status

    stats = json.loads(stats_file.read_text())
    assert stats["exit_reason"] == "SIGTERM" and stats["ready"] and stats["frames_processed"] > 5
    assert stats["gallery_reloads"] >= 1 and stats["sinks"]["mqtt"]["dropped"] == 0
    assert stats["sinks"]["mqtt"]["queue"]["dropped"] == 0 and stats["sinks"]["mqtt"]["queue"]["errors"] == 0
    assert stats["people"][LIN]["recognized_frame"] >= stats["people"][LIN]["first_detected_frame"]


def test_whole_clip_events_latency_and_presence(tmp_path: Path, lin_gallery: Path, clip: Path, dlib_embedder,
                                                first_detectable_frame: int) -> None:
    require_mosquitto()
    with Broker(tmp_path / "broker") as broker:
        sub = Subscriber(broker.port, ["edged/door/#"])
        cfg = parse_config(config_text(clip, lin_gallery, broker.port, camera={"realtime": False},
                                       presence={"absent_after_s": 1.0}, snapshots={"enabled": True}))
        recorder = RecordingSink()
        stats = Daemon(cfg, embedder=dlib_embedder, sinks=[recorder]).run()
        assert sub.wait_for(lambda ms: ms[-1].payload == b"offline", 5)
        sub.close()
    assert stats.exit_reason == "end of video"
    assert stats.frames_read == stats.frames_processed == 275 and stats.frames_dropped == 0
    assert stats.pipeline.embeds < 20, "faces must not be embedded on every frame"
    assert stats.pipeline.detector_runs < 275 and all(stats.seconds[k] > 0 for k in ("decode", "detect", "embed"))
    assert stats.peak_rss_mb > 50 and stats.cpu_s > 0 and stats.realtime_factor > 0

    events = events_of(sub)
    # the recording sink saw exactly what the MQTT sink delivered to a real broker, in the same order
    assert [event_payload(e, "door", "stage") for e in recorder.events] == events
    assert all(s["queue"]["dropped"] == 0 and s["queue"]["errors"] == 0 for s in stats.sinks.values())
    kinds = [(e["type"], e["person"]) for e in events]
    # two visits: a small figure on the stage (frames 0-~20, found by the small-face scans), then
    # close up from frame ~82, more than left_after_s later: each visit is recognized once, then left
    lin = [kind for kind, person in kinds if person == LIN]
    assert lin == ["recognized", "left"] * 2, kinds
    assert len({(e["track_id"], e["type"]) for e in events}) == len(events)
    for e in (e for e in events if e["type"] == "unknown"):  # the man at the end is not in the gallery
        assert e["person"] is None and e["distance"] > dlib_embedder.threshold, json.dumps(e)
        assert ("left", None) in kinds
    rec = next(e for e in events if e["type"] == "recognized")
    assert 0 <= rec["frame"] - first_detectable_frame <= round(0.5 * FPS), (rec["frame"], first_detectable_frame)
    timing = stats.people[LIN]
    assert timing.recognized_frame == rec["frame"] and timing.latency_s <= 0.5
    presence = sub.on(f"edged/door/person/{LIN}")
    # absent until first seen (published at start), then two visits
    assert [json.loads(m.payload)["state"] for m in presence] == ["absent"] + ["present", "absent"] * 2
    # absent 1 s (video time) after the last sighting, before the video ended (the unknown man's
    # track lasts to the end, so his "left" only comes when the stream ends)
    messages = sub.all()
    unknown_left = next(i for i, m in enumerate(messages) if m.topic == "edged/door/event"
                        and json.loads(m.payload)["type"] == "left" and json.loads(m.payload)["person"] is None)
    assert messages.index(presence[-1]) < unknown_left
    # a snapshot (the face with a margin) for the recognized and the unknown event
    snaps = sub.on("edged/door/snapshot")
    assert len(snaps) == len([e for e in events if e["type"] in ("recognized", "unknown")])
    face = cv2.imdecode(np.frombuffer(snaps[0].payload, np.uint8), cv2.IMREAD_COLOR)
    left, top, right, bottom = rec["box"]
    assert face.shape[1] == pytest.approx(1.5 * (right - left), abs=4)
    assert face.shape[0] == pytest.approx(1.5 * (bottom - top), abs=4)


def test_broker_outage_loses_no_events(tmp_path: Path, lin_gallery: Path, clip: Path, dlib_embedder) -> None:
    """Events produced while the broker is down are delivered after it is back (QoS 1, at least once)."""
    require_mosquitto()
    broker = Broker(tmp_path / "broker").start()
    try:
        # a persistent subscriber (clean session off): the broker keeps its QoS-1 messages across the restart
        sub = Subscriber(broker.port, ["edged/door/event"], client_id="test-listener")
        cfg = parse_config(config_text(clip, lin_gallery, broker.port, camera={"realtime": True}))
        recorder = RecordingSink()
        daemon = Daemon(cfg, embedder=dlib_embedder, sinks=[recorder])
        runner = DaemonThread(daemon)
        assert wait_until(lambda: any(isinstance(s, MqttSink) and s.ready for s in daemon.stream.sinks), 30)
        publisher = next(s for s in daemon.stream.sinks if isinstance(s, MqttSink)).publisher
        broker.stop()
        assert wait_until(lambda: any(e.kind == "recognized" for e in recorder.events), 30)
        assert wait_until(lambda: publisher.queued >= 1, 5) and not publisher.connected
        broker.start()
        assert sub.wait_connected(10)
        assert wait_until(lambda: publisher.connected and publisher.queued == 0, 15)
        stats = runner.stop()
        expected = [(e.track_id, e.kind) for e in recorder.events]
        assert sub.wait_for(lambda ms: len({(json.loads(m.payload)["track_id"], json.loads(m.payload)["type"])
                                            for m in ms}) >= len(expected), 10)
        sub.close()
    finally:
        broker.stop()
    received = [(json.loads(m.payload)["track_id"], json.loads(m.payload)["type"]) for m in sub.all()]
    assert ("recognized" in [t for _, t in expected]) and set(received) == set(expected)
    # in order, and a repeat only as a QoS-1 redelivery
    assert [r for i, r in enumerate(received) if r not in received[:i]] == expected
    repeats = [m for i, m in enumerate(sub.all()) if (json.loads(m.payload)["track_id"], json.loads(m.payload)["type"])
               in received[:i]]
    assert all(m.dup for m in repeats)
    mqtt = stats.sinks["mqtt"]
    assert mqtt["disconnects"] >= 1 and mqtt["connects"] >= 2 and mqtt["dropped"] == 0


def test_missing_source_reconnects_and_reports(tmp_path: Path, lin_gallery: Path, clip: Path, dlib_embedder,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    require_mosquitto()
    source = tmp_path / "camera.mp4"  # not there yet
    with Broker(tmp_path / "broker") as broker:  # started first: mosquitto would notify the socket too
        notify = NotifySocket(tmp_path / "notify.sock")
        monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
        monkeypatch.setenv("WATCHDOG_USEC", "400000")
        cfg = parse_config(config_text(source, lin_gallery, broker.port,
                                       camera={"realtime": True, "wait_for_file": True},
                                       service={"status_every_s": 0.5}))
        daemon = Daemon(cfg, embedder=dlib_embedder)
        runner = DaemonThread(daemon)
        assert wait_until(lambda: any("attempt 3" in s for s in notify.lines("STATUS=")), 20), notify.lines()
        status = [s for s in notify.lines("STATUS=") if "attempt 3" in s][-1]
        assert "camera reconnecting" in status and "no such video file" in status and "retry in 2.0 s" in status
        assert notify.lines("READY=1") == [] and notify.lines("WATCHDOG=1") == [], notify.messages
        shutil.copy(clip, source)
        assert wait_until(lambda: notify.lines("READY=1") != [], 20)
        assert wait_until(lambda: notify.lines("WATCHDOG=1") != [], 5)
        stats = runner.stop()
    notify.close()
    assert stats.source.reconnects >= 3 and stats.frames_processed > 0 and stats.ready
    assert notify.lines("STOPPING=1")


def test_enroll_while_running_is_picked_up(tmp_path: Path, clip: Path, fr_dir: Path, dlib_embedder) -> None:
    """Start with an empty gallery: Lin-Manuel is unknown; `edged enroll` in another process;
    the daemon reloads, updates Home Assistant and recognises him without a restart."""
    require_mosquitto()
    gallery = tmp_path / "gallery.db"
    Gallery(gallery).close()
    with Broker(tmp_path / "broker") as broker:
        sub = Subscriber(broker.port, ["edged/door/event", "homeassistant/binary_sensor/#"])
        cfg = parse_config(config_text(clip, gallery, broker.port, camera={"realtime": False, "loop": True}))
        daemon = Daemon(cfg, embedder=dlib_embedder)
        runner = DaemonThread(daemon)
        try:
            assert sub.wait_for(lambda ms: any(e["type"] == "unknown" for e in events_of(sub)), 60)
            enroll_cli(gallery, LIN, fr_dir / "lin-manuel-miranda.png")
            assert sub.wait_for(lambda ms: any(e["type"] == "recognized" and e["person"] == LIN
                                               for e in events_of(sub)), 60)
            assert sub.on("homeassistant/binary_sensor/edged_door/person_1/config")
        finally:
            stats = runner.stop()
        sub.close()
    assert stats.gallery_reloads >= 1


class StallingCamera:
    """Stands in for cv2.VideoCapture on /dev/video0 (no camera hardware here): real frames, then
    a read that blocks (a hung USB camera) until `release_block` is set."""

    def __init__(self, frames: list[np.ndarray], stall_after: int) -> None:
        self.frames, self.stall_after, self.reads = frames, stall_after, 0
        self.release_block = threading.Event()

    def isOpened(self) -> bool:
        return True

    def read(self):
        if self.reads >= self.stall_after:
            self.release_block.wait()
        time.sleep(1 / 30)
        self.reads += 1
        return True, self.frames[self.reads % len(self.frames)]

    def get(self, prop: int) -> float:
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def set(self, prop: int, value: float) -> bool:
        return True

    def release(self) -> None:
        self.release_block.set()


def test_stalled_camera_is_reported(tmp_path: Path, lin_gallery: Path, clip: Path, dlib_embedder,
                                    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    cap = cv2.VideoCapture(str(clip))
    frames = [cap.read()[1] for _ in range(5)]
    cap.release()
    camera = StallingCamera(frames, stall_after=10)
    notify = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    cfg = parse_config(config_text("0", lin_gallery, 1, camera={"read_timeout_s": 0.5},
                                   service={"status_every_s": 0.2}))
    daemon = Daemon(cfg, embedder=dlib_embedder, capture_factory=lambda source, api: camera)
    caplog.set_level("INFO", logger="edged.runtime.daemon")
    runner = DaemonThread(daemon)
    try:
        assert wait_until(lambda: any("camera stalled" in m for m in notify.lines("STATUS=")), 20), notify.lines()
        assert "no frame for" in caplog.text
        camera.release_block.set()
        assert wait_until(lambda: "frames flow again" in caplog.text, 5)
    finally:
        camera.release_block.set()
        stats = runner.stop()
        notify.close()
    assert stats.frames_read > 10 and stats.frames_processed >= 2 and not stats.ready  # no broker: never READY
    assert notify.lines("READY=1") == []


def test_run_without_config_or_with_bad_gallery_fails_cleanly(tmp_path: Path, clip: Path) -> None:
    done = run_cli("run", env={"EDGED_CONFIG": ""})
    assert done.returncode == 2 and done.stderr.startswith("edged: error: edged run needs a config file")
    not_a_gallery = tmp_path / "gallery.db"
    not_a_gallery.write_text("hello")
    cfg = tmp_path / "edged.yaml"
    cfg.write_text(config_text(clip, not_a_gallery, 1))
    done = run_cli("--config", str(cfg), "run", timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"edged: error: {not_a_gallery}")


def test_systemd_unit_verifies() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    unit = (ROOT / "systemd" / "edged.service").read_text()
    for key in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StateDirectory=edged", "LoadCredential=",
                "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                "SupplementaryGroups=video"):
        assert key in unit
    # The unit runs /opt/edged/.venv/bin/edged (scripts/install-service.sh puts it there). verify checks
    # that ExecStart exists, so check a copy pointing at this checkout's entry point; everything else as is.
    copy = Path(os.environ.get("TMPDIR", "/tmp")) / f"edged-verify-{os.getpid()}.service"
    copy.write_text(unit.replace("/opt/edged/.venv/bin/edged", str(ROOT / ".venv" / "bin" / "edged")))
    try:
        done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stdout.strip() == "" and done.stderr.strip() == "", done.stderr
        # the check is real: a broken unit is reported
        copy.write_text(unit.replace("WatchdogSec=30", "WatchdogSec=thirty"))
        done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
        assert "WatchdogSec" in done.stderr or "thirty" in done.stderr
    finally:
        copy.unlink(missing_ok=True)


def test_logging_target_and_watchdog_settings() -> None:
    import logging

    root = logging.getLogger()
    paho = logging.getLogger("edged.runtime.mqtt.paho")
    saved = (root.handlers[:], root.level, paho.level)
    try:
        assert setup_logging("INFO", "auto", {"INVOCATION_ID": "abc"}) == "journald"
        assert type(root.handlers[0]).__name__ == "JournalHandler"
        assert paho.level == logging.WARNING
        assert setup_logging("DEBUG", "auto", {}) == "stderr" and root.level == logging.DEBUG
        assert paho.level == logging.NOTSET
    finally:
        root.handlers[:], _, _ = saved
        root.setLevel(saved[1])
        paho.setLevel(saved[2])
    assert Notifier({}).enabled is False and Notifier({}).ready() is False
    sock = {"NOTIFY_SOCKET": "/run/x"}
    assert Notifier({**sock, "WATCHDOG_USEC": "30000000"}).watchdog_interval_s == 15.0
    assert Notifier({**sock, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval_s is None
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval_s is None
