"""MqttPublisher against a real mosquitto broker: availability/LWT, events, presence, HA discovery,
offline queue, credentials (never logged) and TLS."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.config import HomeAssistantConfig, MQTTConfig, TLSConfig
from edged.runtime.mqtt import MqttPublisher
from edged.types import Box, IdentityEvent, PersonEntity, PresenceChange
from edged.vision.imageio import encode_jpeg, load_image
from tests.conftest import wait_until
from tests.mosquitto import Broker, Subscriber, make_tls_files

ROOT = Path(__file__).resolve().parents[1]


def event(kind: str, person: str | None, track: int = 1, frame: int = 10) -> IdentityEvent:
    return IdentityEvent(kind, track, person, 0.1234567, 0.66, Box(10, 20, 110, 120), frame, frame / 30.0,
                         1_700_000_000.25)


def cfg(port: int, **kw) -> MQTTConfig:
    return MQTTConfig(host="127.0.0.1", port=port, **kw)


@pytest.fixture
def broker(tmp_path: Path):
    with Broker(tmp_path / "broker") as b:
        yield b


def retained(port: int, topics: list[str], settle: float = 0.5) -> dict[str, bytes]:
    """What a fresh subscriber gets as retained messages."""
    sub = Subscriber(port, topics)
    time.sleep(settle)
    sub.close()
    return {m.topic: m.payload for m in sub.all() if m.retain}


def test_events_presence_discovery_and_offline(broker: Broker, openface_dir: Path) -> None:
    sub = Subscriber(broker.port, ["edged/#", "homeassistant/#"])
    pub = MqttPublisher(cfg(broker.port), "door", "front", ha=HomeAssistantConfig(), snapshots=True)
    pub.set_people([PersonEntity("alice", "Alice A."), PersonEntity("bob", "Bob")])
    pub.start()
    assert pub.wait_connected(10)
    face = load_image(openface_dir / "lennon-1.jpg")[100:300, 100:300]
    pub.publish_event(event("recognized", "alice"))
    pub.publish_presence(PresenceChange("alice", "present", 1_700_000_000.25))
    pub.publish_snapshot(encode_jpeg(face))
    assert sub.wait_for(lambda ms: any(m.topic == "edged/door/snapshot" for m in ms))

    body = json.loads(sub.on("edged/door/event")[0].payload)
    assert body == {"schema": 1, "type": "recognized", "device": "door", "camera": "front", "person": "alice",
                    "distance": 0.1235, "confidence": 0.66, "track_id": 1, "box": [10, 20, 110, 120], "frame": 10,
                    "timestamp": "2023-11-14T22:13:20.250Z", "candidate": None, "reason": None,
                    "visit_id": None, "liveness": None}
    assert datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00")).timestamp() == 1_700_000_000.25
    jpeg = sub.on("edged/door/snapshot")[0].payload
    assert jpeg[:2] == b"\xff\xd8" and cv2.imdecode(np.frombuffer(jpeg, "uint8"), 1).shape[:2] == \
        (200, 200)

    kept = retained(broker.port, ["edged/#", "homeassistant/#"])
    assert kept["edged/door/availability"] == b"online"
    assert json.loads(kept["edged/door/person/alice"]) == {"state": "present", "last_seen": "2023-11-14T22:13:20.250Z"}
    assert json.loads(kept["edged/door/last_person"])["person"] == "alice"
    configs = {t: json.loads(p) for t, p in kept.items() if t.startswith("homeassistant/") and p}
    expected = {"homeassistant/event/edged_door/face/config", "homeassistant/sensor/edged_door/last_person/config",
                "homeassistant/image/edged_door/snapshot/config",
                "homeassistant/binary_sensor/edged_door/person_alice/config",
                "homeassistant/binary_sensor/edged_door/person_bob/config"}
    assert expected <= set(configs)
    for c in configs.values():
        topics = ([c["availability_topic"]] if "availability_topic" in c
                  else [a["topic"] for a in c.get("availability", [])])
        assert "edged/door/availability" in topics or c.get("automation_type") == "trigger"
        assert c["device"]["identifiers"] == ["edged_door"] and c["qos"] == 1
    entities = [c for c in configs.values() if "unique_id" in c]
    assert all(c["unique_id"].startswith("edged_door_") for c in entities)
    assert len({c["unique_id"] for c in entities}) == len(entities)
    alice = configs["homeassistant/binary_sensor/edged_door/person_alice/config"]
    assert alice["name"] == "Alice A." and alice["state_topic"] == "edged/door/person/alice"
    assert alice["payload_on"] == "present" and alice["device_class"] == "presence"
    ev = configs["homeassistant/event/edged_door/face/config"]
    assert ev["state_topic"] == "edged/door/event" and {"recognized", "unknown"} <= set(ev["event_types"])
    assert configs["homeassistant/image/edged_door/snapshot/config"]["image_topic"] == "edged/door/snapshot"

    # bob is removed from the gallery: his entity and presence are cleared (empty retained payloads)
    pub.publish_presence(PresenceChange("bob", "present", 1_700_000_001.0))
    pub.set_people([PersonEntity("alice", "Alice A.")])
    bob_cfg = "homeassistant/binary_sensor/edged_door/person_bob/config"
    bob_state = "edged/door/person/bob"
    assert sub.wait_for(lambda ms: {m.topic for m in ms if m.payload == b""} >= {bob_state, f"{bob_state}/last_seen"},
                        10)
    # his entity goes first, his state topics after (so Home Assistant never parses an empty state)
    removal = [m.topic for m in sub.all() if m.payload == b"" and "bob" in m.topic]
    assert removal.index(bob_cfg) < removal.index(bob_state)
    assert f"{bob_state}/last_seen" in removal
    kept = retained(broker.port, ["edged/#", "homeassistant/#"])
    assert not [t for t in kept if "bob" in t]
    assert "homeassistant/binary_sensor/edged_door/person_alice/config" in kept

    # Home Assistant restarts: its birth message makes us re-publish discovery
    before = len(sub.on("homeassistant/event/edged_door/face/config"))
    ha = Subscriber(broker.port, [])
    ha.client.publish("homeassistant/status", "online", qos=1)
    assert sub.wait_for(lambda ms: len([m for m in ms if m.topic == "homeassistant/event/edged_door/face/config"])
                        > before)
    ha.close()

    pub.stop()
    assert sub.wait_for(lambda ms: any(m.topic == "edged/door/availability" and m.payload == b"offline" for m in ms))
    assert retained(broker.port, ["edged/door/availability"])["edged/door/availability"] == b"offline"
    assert pub.stats.published == pub.stats.acknowledged
    sub.close()


def test_last_will_marks_offline_when_killed(broker: Broker) -> None:
    script = textwrap.dedent(f"""
        import time
        from edged.config import MQTTConfig
        from edged.runtime.mqtt import MqttPublisher
        pub = MqttPublisher(MQTTConfig(host="127.0.0.1", port={broker.port}, keepalive_s=5), "lwt", "cam")
        pub.start()
        assert pub.wait_connected(10)
        print("up", flush=True)
        time.sleep(60)
    """)
    sub = Subscriber(broker.port, ["edged/lwt/availability"])
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=ROOT, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        assert sub.wait_for(lambda ms: any(m.payload == b"online" for m in ms))
    finally:
        proc.kill()  # no DISCONNECT: the broker must publish the Last Will
        proc.wait()
    assert sub.wait_for(lambda ms: ms[-1].payload == b"offline", timeout=10)
    assert retained(broker.port, ["edged/lwt/availability"])["edged/lwt/availability"] == b"offline"
    sub.close()


def test_offline_queue_keeps_newest_and_delivers_in_order(tmp_path: Path) -> None:
    b = Broker(tmp_path / "broker")  # port reserved, broker not running yet
    pub = MqttPublisher(cfg(b.port, queue_max=3, reconnect_max_s=1.0), "q", "cam",
                        ha=HomeAssistantConfig(enabled=False))
    pub.start()
    for i in range(5):
        pub.publish_event(event("unknown", None, track=i))
    assert not pub.connected
    assert pub.queued == 3 and pub.stats.dropped == 2
    with b:
        sub = Subscriber(b.port, ["edged/q/event"])
        assert pub.wait_connected(10)
        assert sub.wait_for(lambda ms: len(ms) >= 3)
        time.sleep(0.3)
        assert [json.loads(m.payload)["track_id"] for m in sub.all()] == [2, 3, 4]
        pub.stop()
        sub.close()


def test_credentials_required_and_password_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    password = "Sup3r-S3cret-pw!"
    caplog.set_level(logging.DEBUG)
    with Broker(tmp_path / "broker", users={"edged": password}) as b:
        good = MqttPublisher(cfg(b.port, username="edged"), "auth", "cam", password=password)
        good.start()
        assert good.wait_connected(10)
        bad = MqttPublisher(cfg(b.port, username="edged", client_id="edged-bad"), "auth", "cam", password="wrong")
        bad.start()
        time.sleep(1.5)
        assert not bad.connected  # connected only on a successful CONNACK
        assert "refused" in bad.status
        bad.stop()
        good.publish_event(event("recognized", "x"))
        good.stop()
    assert any(r.name == "edged.runtime.mqtt.paho" for r in caplog.records)  # paho's own log was captured too
    assert "refused the connection" in caplog.text
    assert password not in caplog.text
    assert all(password not in repr(r.args) for r in caplog.records)
    assert password not in repr(MQTTConfig(password=password))


def test_tls_with_ca(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = make_tls_files(tmp_path / "tls")
    with Broker(tmp_path / "broker", tls=files) as b:
        sub = Subscriber(b.port, ["edged/tls/event"], ca_file=files["ca"])
        pub = MqttPublisher(cfg(b.port, tls=TLSConfig(enabled=True, ca_file=str(files["ca"]))), "tls", "cam")
        pub.start()
        assert pub.wait_connected(10)
        pub.publish_event(event("recognized", "x"))
        assert sub.wait_for(lambda ms: len(ms) == 1)
        pub.stop()
        # a client that does not trust this CA is never marked connected
        other = MqttPublisher(cfg(b.port, client_id="edged-untrusted", tls=TLSConfig(enabled=True)), "tls", "cam")
        with caplog.at_level(logging.WARNING, logger="edged.runtime.mqtt"):
            other.start()
            time.sleep(1.0)
            assert not other.connected
            # the log says why, in the SSL library's words (paho only says the connection failed)
            assert wait_until(lambda: any("TLS: CERTIFICATE_VERIFY_FAILED" in r.getMessage() for r in caplog.records),
                              10), [r.getMessage() for r in caplog.records]
        other.stop()
        sub.close()


def test_events_queued_while_the_broker_is_down_survive_a_restart_of_edged(tmp_path: Path) -> None:
    """Broker down, 20 events produced, edged stopped; broker and edged started again: all 20 are delivered to a
    QoS-1 subscriber with a persistent session, in order (the outbox file holds them in between)."""
    outbox = tmp_path / "gallery.db.outbox"
    broker = Broker(tmp_path / "broker").start()
    try:
        sub = Subscriber(broker.port, ["edged/o/event"], client_id="persistent-listener")
        broker.stop()
        first = MqttPublisher(cfg(broker.port, reconnect_max_s=1.0), "o", "cam",
                              ha=HomeAssistantConfig(enabled=False), outbox=outbox)
        first.start()
        for i in range(20):
            first.publish_event(event("unknown", None, track=i, frame=i))
        assert first.queued == 20 and not first.connected
        first.stop(0.5)  # SIGTERM with the broker still down
        assert outbox.exists() and (outbox.stat().st_mode & 0o777) == 0o600
        broker.start()
        assert sub.wait_connected(10)
        second = MqttPublisher(cfg(broker.port, reconnect_max_s=1.0), "o", "cam",
                               ha=HomeAssistantConfig(enabled=False), outbox=outbox)
        assert second.stats.recovered == 20
        second.start()
        assert sub.wait_for(lambda ms: len({json.loads(m.payload)["track_id"] for m in ms}) == 20, 15)
        assert wait_until(lambda: second.queued == 0, 10)  # acknowledged: gone from the outbox
        got = [json.loads(m.payload)["track_id"] for m in sub.on("edged/o/event")]
        assert [t for i, t in enumerate(got) if t not in got[:i]] == list(range(20))
        second.stop()
        sub.close()
    finally:
        broker.stop()


def test_presence_is_true_after_a_crash_and_stale_people_are_cleared(tmp_path: Path) -> None:
    """A crash left `present` retained for alice and topics of bob (removed while edged was stopped): on the next
    start alice is published absent (never seen since), bob's entity and presence are cleared."""
    with Broker(tmp_path / "broker") as b:
        crashed = MqttPublisher(cfg(b.port), "p", "cam")
        crashed.set_people([PersonEntity("alice", "Alice", 1), PersonEntity("bob", "Bob", 2)])
        crashed.start()
        assert crashed.wait_connected(10)
        crashed.publish_presence(PresenceChange("alice", "present", 1_700_000_000.0))
        crashed.publish_presence(PresenceChange("bob", "present", 1_700_000_000.0))
        time.sleep(0.5)
        crashed._client.loop_stop()  # dies without a word (the broker publishes its will)
        crashed._client.socket().close()
        kept = retained(b.port, ["edged/p/#", "homeassistant/#"])
        assert json.loads(kept["edged/p/person/alice"])["state"] == "present"
        assert "homeassistant/binary_sensor/edged_p/person_2/config" in kept
        restarted = MqttPublisher(cfg(b.port), "p", "cam")
        restarted.set_people([PersonEntity("alice", "Alice", 1)])  # bob was removed meanwhile
        restarted.start()
        assert restarted.wait_connected(10)

        def bob_gone() -> bool:
            kept = retained(b.port, ["edged/p/#", "homeassistant/#"])
            return "edged/p/person/bob" not in kept and not [t for t in kept if "person_2" in t]

        assert wait_until(bob_gone, 10)
        assert restarted.stats.cleared >= 2
        kept = retained(b.port, ["edged/p/#", "homeassistant/#"])
        assert json.loads(kept["edged/p/person/alice"]) == {"state": "absent", "last_seen": None}
        assert [t for t in kept if "person_1" in t]  # alice's entities stay
        assert kept["edged/p/availability"] == b"online"
        restarted.stop()
