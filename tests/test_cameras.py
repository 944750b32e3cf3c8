"""Several cameras in one daemon: the `cameras:` config, one visit per door over its cameras, presence over all
cameras; end to end with real videos (the hamilton clip, the 1080p pedestrians video), a real gallery made with
`edged enroll` and a real mosquitto."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from edged.config import ConfigErrors, parse_config
from edged.runtime.cameras import DoorVisits, PresenceMerge
from edged.runtime.daemon import Daemon
from edged.runtime.discovery import Topics, discovery_messages
from edged.runtime.sinks import RecordingSink
from edged.types import Box, EventKind, IdentityEvent, PersonEntity, PresenceChange, PresenceState
from tests.conftest import LIN, ROOT, enroll_cli, run_cli, wait_until
from tests.mosquitto import Broker, Subscriber, require_mosquitto


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as err:
        parse_config(text, "edged.yaml")
    return err.value.problems


# ---- config ----

def test_cameras_list_and_the_single_camera_form() -> None:
    one = parse_config("device_id: d\ncamera: {source: 0, name: front}\n")
    assert [c.name for c in one.cameras] == ["front"] and one.camera is one.cameras[0] and not one.multi_camera
    many = parse_config("device_id: d\ncameras:\n  - {source: 0, name: front, door: entrance}\n"
                        "  - {source: b.mp4, name: porch, door: entrance, every_n_frames: 6}\n"
                        "  - {source: c.mp4, name: garage}\n")
    assert [c.name for c in many.cameras] == ["front", "porch", "garage"] and many.camera.name == "front"
    assert many.multi_camera and many.cameras[1].every_n_frames == 6
    assert [many.entrance_of(c.name) for c in many.cameras] == ["entrance", "entrance", "garage"]
    moved = many.model_copy(update={"camera": many.camera.model_copy(update={"source": 5})})
    assert moved.cameras[0].source == 5 and [c.name for c in moved.cameras] == ["front", "porch", "garage"]


def test_camera_problems_name_the_key_and_line() -> None:
    assert problems("device_id: d\ncameras:\n  - {source: 0}\n  - {source: 1}\n") == [
        "edged.yaml: line 4: cameras.1.name: duplicate camera name 'camera' (also cameras.0); every camera needs "
        "its own name"]
    assert problems("device_id: d\ncamera: {source: 0}\ncameras:\n  - {source: 1}\n") == [
        "edged.yaml: line 3: cameras: give either camera: (one camera) or cameras: (a list of cameras), not both"]
    assert problems("device_id: d\ncameras: []\n") == ["edged.yaml: line 2: cameras: must list at least one camera"]
    # a wrong value in one camera and the others still checked: every problem at once
    found = problems("device_id: d\ncameras:\n  - {source: 0, name: a, roi: [1, 2]}\n"
                     "  - {source: x.mp4, name: b, max_width: 3}\n  - {source: -1, name: c}\n")
    assert found == ["edged.yaml: line 3: cameras.0.roi: must be [left, top, right, bottom] in pixels (>= 0) with "
                     "right > left and bottom > top", "edged.yaml: line 4: cameras.1.max_width: must be >= 64, got 3",
                     "edged.yaml: line 5: cameras.2.source: a camera index must be >= 0, got -1"]


def test_doors_and_cameras_must_match() -> None:
    text = ("device_id: d\naccess:\n  enabled: true\n  doors:\n    front: {}\n    back: {cameras: [garage]}\n"
            "cameras:\n  - {source: 0, name: a, door: side}\n  - {source: 1, name: b}\n")
    assert problems(text) == [
        "edged.yaml: line 5: access.doors.front: door 'front' has no camera: list them in "
        "access.doors.front.cameras or set door: front on a camera",
        "edged.yaml: line 6: access.doors.back.cameras.0: no camera named 'garage' (cameras: a, b)",
        "edged.yaml: line 8: cameras.0.door: no door named 'side' in access.doors (front, back)"]
    ok = parse_config(text.replace("[garage]", "[b]").replace("door: side", "door: front"))
    assert ok.entrance_of("a") == "front" and ok.entrance_of("b") == "back"


def test_check_config_and_run_refuse_bad_camera_lists(tmp_path: Path) -> None:
    bad = tmp_path / "edged.yaml"
    bad.write_text("device_id: d\ncameras:\n  - {source: 0, name: front}\n  - {source: 1, name: front}\n")
    done = run_cli("check-config", str(bad))
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout
    assert f"{bad}: line 4: cameras.1.name: duplicate camera name 'front'" in done.stdout + done.stderr
    good = tmp_path / "two.yaml"
    good.write_text("device_id: d\ncameras:\n  - {source: 0, name: front}\n  - {source: 1, name: back}\n"
                    "mqtt: {enabled: false}\n")
    done = run_cli("--config", str(good), "run", "--source", "clip.mp4")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--source replaces the camera's source, but this config has 2 cameras" in done.stderr


# ---- joining the cameras' outputs (pure) ----

def event(kind: EventKind, camera: str, track: int, visit: int, wall: float, person: str | None = "ann",
          resumed: bool = False) -> IdentityEvent:
    return IdentityEvent(kind, track, person, 0.05, 0.9, Box(0, 0, 10, 10), 1, wall, wall, visit_id=visit,
                         camera=camera, resumed=resumed)


R, L = EventKind.RECOGNIZED, EventKind.LEFT


def test_door_visits_one_recognized_per_person_over_a_doors_cameras() -> None:
    visits = DoorVisits({"front": "door", "porch": "door", "garage": "garage"}, window_s=5.0)
    out = visits.route(event(R, "front", 1, 1, 100.0))
    assert [(e.resumed, e.cameras) for e in out] == [(False, ("front",))]
    visit = out[0].visit_id
    joined = visits.route(event(R, "porch", 1, 1, 101.0))  # the other camera of the door: same visit
    assert [(e.resumed, e.visit_id, e.cameras) for e in joined] == [(True, visit, ("front", "porch"))]
    assert visits.route(event(L, "front", 1, 1, 102.0))[0].resumed  # porch still sees her
    assert visits.route(event(L, "porch", 1, 1, 103.0)) == []  # held for the window
    assert visits.due(107.9) == []
    # she comes back at the front within the window: the same visit, nothing announced
    back = visits.route(event(R, "front", 2, 2, 106.0))
    assert back[0].resumed and back[0].visit_id == visit
    assert visits.route(event(L, "front", 2, 2, 108.0)) == []
    [left] = visits.due(113.0)
    assert (left.kind, left.visit_id, left.cameras, left.resumed) == (L, visit, ("front", "porch"), False)
    # another entrance, and a new visit after the window: each announced, unique visit ids
    garage = visits.route(event(R, "garage", 1, 1, 120.0))
    again = visits.route(event(R, "porch", 3, 3, 121.0))
    assert not garage[0].resumed and not again[0].resumed
    assert len({visit, garage[0].visit_id, again[0].visit_id}) == 3 and visits.joined == 2
    # unknown faces are each camera's own (a stranger has no identity to join on)
    unknown = visits.route(event(EventKind.UNKNOWN, "porch", 9, 9, 122.0, person=None))
    assert not unknown[0].resumed
    assert [e.kind for e in visits.flush()] == []  # nothing held: the porch visit is still open


def test_presence_merge_absent_only_when_every_camera_lets_go() -> None:
    merge = PresenceMerge()
    present = PresenceChange("ann", PresenceState.PRESENT, 1.0)
    absent = PresenceChange("ann", PresenceState.ABSENT, 2.0)
    assert merge.update("front", present) == present
    assert merge.update("porch", present) is None
    assert merge.update("front", absent) is None
    assert merge.update("porch", absent) == absent


def test_discovery_has_each_cameras_entities() -> None:
    cfg = parse_config("device_id: d\ncameras:\n  - {source: 0, name: front}\n  - {source: 1, name: garage}\n")
    topics = Topics(cfg.mqtt, cfg.homeassistant, "d")
    configs = discovery_messages(topics, "d", "front", [PersonEntity("ann", "Ann", 1)], snapshots=False,
                                 cameras=["front", "garage"])
    for name in ("front", "garage"):
        sensor = configs[f"homeassistant/binary_sensor/edged_d/camera_{name}/config"]
        assert sensor["state_topic"] == f"edged/d/camera/{name}/availability"
        assert f'["{name}"]' in configs[f"homeassistant/sensor/edged_d/camera_{name}_fps/config"]["value_template"]
        event = configs[f"homeassistant/event/edged_d/camera_{name}_face/config"]
        assert event["state_topic"] == f"edged/d/camera/{name}/event" and event["name"] == f"Camera {name} face"
        assert {a["topic"] for a in event["availability"]} == {"edged/d/availability",
                                                              f"edged/d/camera/{name}/availability"}
    face = configs["homeassistant/event/edged_d/face/config"]
    assert {a["topic"] for a in face["availability"]} == {"edged/d/availability", "edged/d/cameras/availability"}
    assert "homeassistant/binary_sensor/edged_d/camera/config" not in configs


# ---- end to end ----

@pytest.fixture(scope="module")
def lin_gallery_file(tmp_path_factory: pytest.TempPathFactory, fr_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("gallery") / "gallery.db"
    enroll_cli(path, LIN, fr_dir / "lin-manuel-miranda.png")
    return path


def text_of(path: Path) -> str:
    return path.read_text()[-3000:]


def config(gallery: Path, port: int, cameras: list[dict[str, Any]], **sections: dict[str, Any]) -> str:
    raw: dict[str, Any] = {"device_id": "home", "cameras": cameras, "gallery": {"path": str(gallery)},
                           "mqtt": {"host": "127.0.0.1", "port": port, "reconnect_max_s": 1.0},
                           "detector": {"backend": "hog"}}
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    return yaml.safe_dump(raw)


def test_two_cameras_in_one_daemon_under_overload(tmp_path: Path, lin_gallery_file: Path, clip: Path,
                                                  shared: Path) -> None:
    """`edged run` with the hamilton clip and the 1080p pedestrians video, both looped and paced like live cameras: each
    camera's events carry its name, each has its stats and Home Assistant entities, and neither starves."""
    require_mosquitto()
    gallery = tmp_path / "gallery.db"
    gallery.write_bytes(lin_gallery_file.read_bytes())
    pedestrians = shared / "data" / "pedestrians" / "video.mp4"
    with Broker(tmp_path / "broker") as broker:
        sub = Subscriber(broker.port, ["edged/#", "homeassistant/#"])
        cfg = tmp_path / "edged.yaml"
        cfg.write_text(config(gallery, broker.port, [
            {"name": "stage", "source": str(clip), "loop": True},
            {"name": "street", "source": str(pedestrians), "loop": True}],
            service={"status_every_s": 0.5}))
        stats_file, log_file = tmp_path / "stats.json", tmp_path / "edged.log"
        with open(log_file, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "edged", "--config", str(cfg), "-v", "run",
                                     "--stats-json", str(stats_file)], cwd=ROOT, env=os.environ, stdout=log,
                                    stderr=log)
        try:
            # both videos loop until stopped: under overload each camera gets about half the frames, Lin-Manuel
            # is named on the stage sooner or later
            assert wait_until(lambda: any(json.loads(m.payload)["camera"] == "stage" and
                                          json.loads(m.payload)["type"] == "recognized"
                                          for m in sub.on("edged/home/event")), 120), text_of(log_file)
            assert wait_until(lambda: any(json.loads(m.payload).get("cameras", {}).get("street", {}).get("fps", 0)
                                          > 0 for m in sub.on("edged/home/status")), 10)
            # the street video loops: the passers-by (strangers) are announced sooner or later
            assert wait_until(lambda: any(json.loads(m.payload)["camera"] == "street" and
                                          json.loads(m.payload)["type"] == "unknown"
                                          for m in sub.on("edged/home/event")), 90), text_of(log_file)
            # and the overload is said per camera (after a second of it: the events can come sooner)
            assert wait_until(lambda: "camera stage: overloaded" in log_file.read_text(), 30), text_of(log_file)
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
        sub.close()
    text = log_file.read_text()
    assert rc == 0, text[-3000:]
    events = [json.loads(m.payload) for m in sub.on("edged/home/event")]
    recognized = [e for e in events if e["type"] == "recognized"]
    assert [(e["person"], e["camera"]) for e in recognized] == [(LIN, "stage")] * len(recognized) and recognized
    assert {e["camera"] for e in events} == {"stage", "street"}
    # each camera's events also on its own topic (the same payloads)
    for name in ("stage", "street"):
        own = [json.loads(m.payload) for m in sub.on(f"edged/home/camera/{name}/event")]
        assert own and own == [e for e in events if e["camera"] == name][:len(own)], name

    stats = json.loads(stats_file.read_text())
    cams = stats["cameras"]
    assert set(cams) == {"stage", "street"}
    processed = {name: c["frames_processed"] for name, c in cams.items()}
    dropped = {name: c["frames_dropped"] for name, c in cams.items()}
    assert sum(dropped.values()) > 0, "both cameras at their own pace must overload 2 cores"
    fair = sum(processed.values()) / 2
    # round-robin: neither camera gets less than half its fair share (unless it had fewer frames)
    for name in cams:
        assert processed[name] >= min(fair, cams[name]["frames_read"]) / 2, (processed, dropped)
    print("processed", processed, "dropped", dropped, "realtime", {n: c["realtime_factor"] for n, c in cams.items()})
    assert cams["stage"]["pipeline"]["recognized"][LIN][0] >= 0

    status = [json.loads(m.payload) for m in sub.on("edged/home/status")]
    assert any(set(s.get("cameras", {})) == {"stage", "street"} for s in status)
    assert b"online" in [m.payload for m in sub.on("edged/home/camera/street/availability")]
    configs = {m.topic for m in sub.all() if m.topic.startswith("homeassistant/") and m.payload}
    assert {"homeassistant/binary_sensor/edged_home/camera_stage/config",
            "homeassistant/binary_sensor/edged_home/camera_street/config"} <= configs
    assert "STATUS" not in text and "stage: " in text


def test_two_cameras_of_one_door_give_one_recognized_per_visit(tmp_path: Path, lin_gallery_file: Path, clip: Path,
                                                              dlib_embedder) -> None:
    """The same clip on two cameras of one door (as two cameras on one entrance see one person): each visit of
    Lin-Manuel is announced once, with both cameras; the door's access decides once too."""
    require_mosquitto()
    gallery = tmp_path / "gallery.db"
    gallery.write_bytes(lin_gallery_file.read_bytes())
    with Broker(tmp_path / "broker") as broker:
        sub = Subscriber(broker.port, ["edged/home/event", "edged/home/person/#"])
        cameras = [{"name": name, "source": str(clip), "realtime": False, "door": "entrance"}
                   for name in ("left", "right")]
        cfg = parse_config(config(gallery, broker.port, cameras, tracking={"door_visit_s": 0.0},
                                  presence={"absent_after_s": 1.0}))
        recorder = RecordingSink()
        stats = Daemon(cfg, embedder=dlib_embedder, sinks=[recorder]).run()
        assert sub.wait_for(lambda ms: any(json.loads(m.payload)["type"] == "left" for m in ms
                                           if m.topic.endswith("/event")), 5)
        sub.close()
    assert stats.exit_reason == "end of video"
    assert {n: c.frames_processed for n, c in stats.cameras.items()} == {"left": 275, "right": 275}
    # one embedder for both: when both cameras had a frame in a pass, their faces went into one batch (measured:
    # 5 of the 9 batches of each camera; a pass sees only one camera's frame when the other is still decoding)
    batches = {n: c.pipeline.embed_batches for n, c in stats.cameras.items()}
    assert 0 < stats.shared_embed_batches <= min(batches.values()), (batches, stats.shared_embed_batches)
    events = [json.loads(m.payload) for m in sub.on("edged/home/event")]
    lin = [e for e in events if e["person"] == LIN]
    # one visit on the stage, one close up: each recognized once over both cameras, then left
    assert [e["type"] for e in lin] == ["recognized", "left"] * 2, lin
    # the left names both cameras, in the order they recognized him (either camera can be first: they run apart)
    assert all(sorted(e["cameras"]) == ["left", "right"] and e["cameras"][0] == r["camera"]
               for r, e in zip(lin[0::2], lin[1::2], strict=True)), lin
    assert lin[0]["visit_id"] == lin[1]["visit_id"] != lin[2]["visit_id"] == lin[3]["visit_id"]
    # each camera's own recognition is still there for the door (resumed), not announced
    resumed = [e for e in recorder.of_type(IdentityEvent) if e.resumed and e.kind == EventKind.RECOGNIZED]
    assert {e.camera for e in resumed} >= {"right"} or {e.camera for e in resumed} >= {"left"}
    presence = [json.loads(m.payload)["state"] for m in sub.on(f"edged/home/person/{LIN}")]
    assert presence == ["absent"] + ["present", "absent"] * 2, presence


def test_unknown_visits_of_two_cameras_with_the_same_track_number_stay_apart(tmp_path: Path,
                                                                            lin_gallery_file: Path) -> None:
    """Each camera numbers its tracks from 1: Lin-Manuel named on the garage's track 1 must not withdraw the stranger
    that the front camera's track 1 stored (the unknowns sink keys its visits by camera and track)."""
    from edged.config import UnknownsConfig
    from edged.gallery import unknowns
    from edged.gallery.store import Gallery
    from edged.runtime.unknowns_sink import UnknownsSink
    from edged.types import FaceSample

    gallery = tmp_path / "gallery.db"
    gallery.write_bytes(lin_gallery_file.read_bytes())
    with Gallery(gallery) as g:
        [real] = g.samples(LIN)  # a real embedding stands in for the stranger's view
    sink = UnknownsSink(gallery, UnknownsConfig(keep_crops=False), "front", real.embedder, real.embedder_version)
    sink.start()
    view = FaceSample(real.embedding, None, 120, 200.0)
    sink.handle(dataclasses.replace(event(EventKind.UNKNOWN, "front", 1, 1, 100.0, person=None), samples=(view,)))
    sink.handle(event(EventKind.RECOGNIZED, "garage", 1, 1, 101.0))
    sink.handle(event(EventKind.LEFT, "garage", 1, 1, 102.0))
    with Gallery(gallery) as g:
        stored = unknowns.visits(g)
    sink.close(1.0)
    assert [(v.camera, v.track_id) for v in stored] == [("front", 1)] and sink.withdrawn == 0
