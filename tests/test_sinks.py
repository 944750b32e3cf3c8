"""The event stream: every sink isolated behind its own bounded queue; payloads of the MQTT sink pinned."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from edged.config import HomeAssistantConfig, MQTTConfig, SnapshotConfig
from edged.runtime.discovery import Topics, discovery_messages
from edged.runtime.mqtt import event_payload, last_person_payload, presence_payload, snapshot_jpeg
from edged.runtime.sinks import EventSink, EventStream, RecordingSink, SinkWorker
from edged.types import Box, EventKind, IdentityEvent, PersonEntity, PresenceChange, PresenceState, UnknownReason
from tests.conftest import wait_until

pytestmark = pytest.mark.pure

WALL = 1_700_000_000.25


def event(kind: EventKind, person: str | None, track: int = 1, image: np.ndarray | None = None) -> IdentityEvent:
    return IdentityEvent(kind, track, person, 0.12345, 0.66, Box(10, 20, 110, 120), 10, 0.333, WALL, image=image)


class SlowSink(EventSink):
    name = "slow"
    queue_max = 5

    def __init__(self) -> None:
        self.release = threading.Event()
        self.seen: list[object] = []

    def handle(self, item: object) -> None:
        self.release.wait(10)
        self.seen.append(item)


class FailingSink(EventSink):
    name = "failing"

    def handle(self, item: object) -> None:
        raise RuntimeError("broken output")


def test_a_slow_sink_never_stalls_the_stream_or_the_others() -> None:
    slow, fast = SlowSink(), RecordingSink()
    stream = EventStream([slow, fast])
    stream.start()
    start = time.perf_counter()
    for i in range(50):
        stream.emit(event(EventKind.RECOGNIZED, "alice", track=i))
    emit_s = time.perf_counter() - start
    assert emit_s < 0.5, f"emit blocked for {emit_s:.2f} s"
    assert wait_until(lambda: len(fast.events) == 50, 5)  # the fast sink got everything meanwhile
    stats = stream.stats()
    # the slow sink holds at most 5 waiting (+1 being handled): the oldest were dropped and counted
    assert stats["slow"]["queue"]["dropped"] >= 50 - 5 - 1
    assert stats["recording"]["queue"]["dropped"] == 0
    slow.release.set()
    assert stream.drain(5)
    kept = [e.track_id for e in slow.seen]
    assert kept == sorted(kept) and kept[-1] == 49  # the newest survive, in order
    assert len(kept) + stats["slow"]["queue"]["dropped"] == 50
    stream.close(1.0)


def test_a_failing_sink_is_counted_and_the_others_carry_on(caplog: pytest.LogCaptureFixture) -> None:
    good = RecordingSink()
    stream = EventStream([FailingSink(), good])
    stream.start()
    for i in range(3):
        stream.emit(event(EventKind.UNKNOWN, None, track=i))
    assert stream.drain(5)
    stats = stream.stats()
    assert stats["failing"]["queue"]["errors"] == 3 and stats["failing"]["queue"]["handled"] == 3
    assert len(good.events) == 3
    assert "broken output" in caplog.text  # logged (with its traceback in the log, never to a user)
    stream.close(1.0)


def test_images_reach_only_the_sinks_that_ask_for_them() -> None:
    frame = np.zeros((40, 40, 3), np.uint8)
    with_images, without = RecordingSink(wants_images=True), RecordingSink()
    stream = EventStream([with_images, without])
    stream.start()
    stream.emit(event(EventKind.RECOGNIZED, "alice", image=frame))
    assert stream.drain(5)
    assert with_images.events[0].image is frame  # a reference, not a copy
    assert without.events[0].image is None
    stream.close(1.0)


def test_close_handles_what_is_queued_then_stops_the_thread() -> None:
    sink = RecordingSink()
    worker = SinkWorker(sink)
    worker.start()
    for i in range(100):
        worker.offer(event(EventKind.LEFT, None, track=i))
    worker.close(2.0)
    assert len(sink.events) == 100 and worker.stats.handled == 100 and worker.pending == 0
    assert worker._thread is not None and not worker._thread.is_alive()


def test_mqtt_payloads_are_pinned() -> None:
    """The bytes Home Assistant and users' automations read; a change here is a breaking change."""
    rec = event(EventKind.RECOGNIZED, "alice")
    assert json.dumps(event_payload(rec, "door", "front"), separators=(",", ":")) == (
        '{"schema":1,"type":"recognized","device":"door","camera":"front","person":"alice","distance":0.1235,'
        '"confidence":0.66,"track_id":1,"box":[10,20,110,120],"frame":10,"timestamp":"2023-11-14T22:13:20.250Z",'
        '"candidate":null,"reason":null,"visit_id":null,"liveness":null}')
    unknown = IdentityEvent(EventKind.UNKNOWN, 2, None, 0.31, 0.2, Box(1, 2, 3, 4), 5, 0.2, WALL, "alice",
                            UnknownReason.AMBIGUOUS)
    body = event_payload(unknown, "door", "front")
    assert body["person"] is None and body["candidate"] == "alice" and body["reason"] == "ambiguous"
    assert json.dumps(last_person_payload(rec)) == \
        '{"person": "alice", "confidence": 0.66, "timestamp": "2023-11-14T22:13:20.250Z"}'
    assert json.dumps(presence_payload(PresenceChange("alice", PresenceState.PRESENT, WALL))) == \
        '{"state": "present", "last_seen": "2023-11-14T22:13:20.250Z"}'
    topics = Topics(MQTTConfig(), HomeAssistantConfig(), "door")
    configs = discovery_messages(topics, "door", "front", [PersonEntity("alice", "Alice A.", 7)], snapshots=False)
    assert {t.split("/")[1] + "/" + t.split("/")[3] for t in configs} == {
        "binary_sensor/person_7", "sensor/person_7_last_seen", "device_automation/recognized_person_7",
        "event/face", "sensor/last_person", "sensor/unknown_visitors", "binary_sensor/camera",
        "device_automation/unknown", "sensor/fps", "sensor/camera_state", "sensor/queue", "sensor/gallery",
        "sensor/dropped", "sensor/dropped_percent"}
    alice = configs["homeassistant/binary_sensor/edged_door/person_7/config"]
    device = {"identifiers": ["edged_door"], "name": "edged door", "manufacturer": "edged",
              "model": "edged face recognition", "sw_version": alice["device"]["sw_version"]}
    origin = {"name": "edged", "sw_version": alice["device"]["sw_version"]}
    assert alice == {"device": device, "origin": origin, "qos": 1, "availability_mode": "all",
                     "availability": [{"topic": "edged/door/availability", "payload_available": "online",
                                       "payload_not_available": "offline"},
                                      {"topic": "edged/door/camera/front/availability", "payload_available": "online",
                                       "payload_not_available": "offline"}],
                     "name": "Alice A.", "unique_id": "edged_door_person_7", "device_class": "presence",
                     "state_topic": "edged/door/person/alice",
                     "value_template": "{{ value_json.state if value_json is defined else '' }}",
                     "payload_on": "present", "payload_off": "absent",
                     "json_attributes_topic": "edged/door/person/alice",
                     "json_attributes_template": "{{ value_json | tojson if value_json is defined else '{}' }}"}
    seen = configs["homeassistant/sensor/edged_door/person_7_last_seen/config"]
    assert seen["device_class"] == "timestamp" and seen["state_topic"] == "edged/door/person/alice/last_seen"
    assert "value_template" not in seen  # the payload is the ISO 8601 time itself, published once seen
    trigger = configs["homeassistant/device_automation/edged_door/recognized_person_7/config"]
    assert trigger["topic"] == "edged/door/trigger/recognized/alice" and trigger["type"] == "recognized"
    assert all(c["qos"] == 1 and c["origin"]["name"] == "edged" for c in configs.values())
    face = configs["homeassistant/event/edged_door/face/config"]
    assert face["event_types"] == ["recognized", "unknown", "left"] and face["state_topic"] == "edged/door/event"


def test_snapshot_is_the_face_with_a_margin_or_the_frame() -> None:
    import cv2

    frame = np.full((200, 300, 3), 128, np.uint8)
    rec = event(EventKind.RECOGNIZED, "alice", image=frame)
    face = cv2.imdecode(np.frombuffer(snapshot_jpeg(rec, SnapshotConfig(enabled=True)), np.uint8), 1)
    assert face.shape[:2] == (145, 135)  # the 100 px box + 25 % on every side, clipped at the top-left corner
    inside = IdentityEvent(EventKind.UNKNOWN, 2, None, 0.5, 0.1, Box(100, 50, 200, 150), 3, 0.1, WALL, image=frame)
    face = cv2.imdecode(np.frombuffer(snapshot_jpeg(inside, SnapshotConfig(enabled=True)), np.uint8), 1)
    assert face.shape[:2] == (150, 150)
    whole = snapshot_jpeg(rec, SnapshotConfig(enabled=True, kind="frame"))
    assert cv2.imdecode(np.frombuffer(whole, np.uint8), 1).shape[:2] == (200, 300)
    assert snapshot_jpeg(event(EventKind.LEFT, "alice", image=frame), SnapshotConfig(enabled=True)) is None
    assert snapshot_jpeg(event(EventKind.RECOGNIZED, "alice"), SnapshotConfig(enabled=True)) is None
