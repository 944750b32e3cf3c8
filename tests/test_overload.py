"""Honest overload: frames dropped are said (log once a minute, STATUS, MQTT status, Home Assistant's sensor)
and the detector cadence adapts under load before more frames are lost."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest
import yaml

from edged.config import parse_config
from edged.runtime.daemon import Daemon
from edged.runtime.overload import Governor, Load, LoadWindow, OverloadWatch
from edged.runtime.sinks import RecordingSink
from edged.types import Health
from tests.conftest import enroll_cli
from tests.mosquitto import Broker, Subscriber, require_mosquitto


def test_load_window_counts_the_last_minute_only() -> None:
    window = LoadWindow(60.0)
    assert window.add(0.0, 0, 0, 0.0) == Load(0.0, 0, 0, 0.0)
    window.add(30.0, 750, 300, 29.0)
    load = window.add(60.0, 1500, 600, 59.0)
    assert (load.read, load.dropped, round(load.dropped_fraction, 2), round(load.busy, 2)) == (1500, 600, 0.4, 0.98)
    load = window.add(90.0, 2250, 600, 60.0)  # the first sample left the window; the last 30 s were calm
    assert (load.seconds, load.read, load.dropped, round(load.busy, 2)) == (60.0, 1500, 300, 0.52)


def test_governor_slows_the_detector_under_load_and_comes_back() -> None:
    gov = Governor(max_factor=4, every_s=5.0)
    busy, calm = Load(10.0, 250, 0, 0.95), Load(10.0, 250, 0, 0.3)
    assert gov.update(0.0, busy) is None  # not before every_s
    assert gov.update(5.0, busy) == 2 and gov.update(7.0, busy) is None and gov.update(10.0, busy) == 4
    assert gov.update(20.0, busy) is None  # at the limit
    assert gov.update(25.0, Load(10.0, 250, 3, 0.7)) is None  # dropping frames: never back while that goes on
    assert gov.update(30.0, calm) == 2 and gov.update(35.0, calm) == 1 and gov.update(40.0, calm) is None
    assert Governor(max_factor=1).update(10.0, busy) is None


def test_overload_warning_at_most_once_a_minute() -> None:
    watch = OverloadWatch(0.05, 60.0)
    heavy = Load(60.0, 1500, 900, 1.0)
    line = watch.warning(10.0, heavy, "door", 6)
    assert line == ("camera door: overloaded: 900 of 1500 frames dropped (60%) in the last 60 s, the loop 100% "
                    "busy; the detector runs every 6 frames (detector.scale, camera.max_width or camera.roi make a "
                    "frame cheaper)")
    assert watch.warning(40.0, heavy, "door", 6) is None and watch.warning(70.5, heavy, "door", 6) is not None
    assert watch.warning(200.0, Load(60.0, 1500, 75, 0.9), "door", 6) is None  # 5%: not over the limit
    assert not watch.overloaded(Load(0.0, 0, 0, 0.0))


@pytest.mark.slow
def test_a_camera_too_heavy_for_the_box_says_so(tmp_path: Path, shared: Path, fr_dir: Path, dlib_embedder,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """The 1080p pedestrians video paced like a live camera (25 fps, looped) with HOG upsample 1 on full frames
    (~1 s a detection here): frames are dropped, the log says so once, STATUS and the retained MQTT status carry
    the dropped percentage, and the detector cadence goes up."""
    require_mosquitto()
    gallery = tmp_path / "gallery.db"
    enroll_cli(gallery, "obama", fr_dir / "obama.jpg")
    with Broker(tmp_path / "broker") as broker:
        sub = Subscriber(broker.port, ["edged/door/status"])
        cfg = parse_config(yaml.safe_dump({
            "device_id": "door", "camera": {"source": str(shared / "data" / "pedestrians" / "video.mp4"),
                                            "realtime": True, "loop": True},
            "gallery": {"path": str(gallery)}, "mqtt": {"host": "127.0.0.1", "port": broker.port},
            "detector": {"backend": "hog", "upsample": 1, "scale": 1.0, "every_n_frames": 1,
                         "motion_gate": False},
            "service": {"status_every_s": 1.0}}))
        recorder = RecordingSink()
        daemon = Daemon(cfg, embedder=dlib_embedder, sinks=[recorder])
        timer = threading.Timer(14.0, daemon.request_stop)
        timer.start()
        with caplog.at_level(logging.INFO, logger="edged"):
            stats = daemon.run()
        timer.cancel()
        statuses = [json.loads(m.payload) for m in sub.on("edged/door/status")]
        sub.close()
    warnings = [r.getMessage() for r in caplog.records if "overloaded:" in r.getMessage()]
    assert len(warnings) == 1 and stats.overload_warnings == 1, warnings
    assert warnings[0].startswith("camera camera: overloaded: ") and "frames dropped" in warnings[0]
    assert stats.frames_dropped > stats.frames_processed  # far behind a 25 fps camera
    assert stats.cadence_changes >= 1 and stats.max_cadence_factor >= 2
    assert any("the detector now runs every 2 frames (was 1)" in r.getMessage() for r in caplog.records)
    health = recorder.of_type(Health)
    assert health[-1].overloaded and health[-1].dropped_percent > 50 and "overloaded: " in health[-1].status
    assert health[-1].detect_every_n >= 2
    last = statuses[-1]
    assert last["overloaded"] is True and last["frames_dropped_percent"] > 50 and last["detect_every_n"] >= 2
