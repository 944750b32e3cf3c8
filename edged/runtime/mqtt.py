"""MQTT output: availability, identity events, presence, snapshots and Home Assistant discovery.

paho-mqtt 2.x (`CallbackAPIVersion.VERSION2`), `connect_async` + `loop_start`, QoS 1 by default,
clean session off with a stable client id, Last Will `offline` (retained).

Delivery: while connected every message goes straight to paho, which keeps QoS-1 messages until
the broker's PUBACK and resends unacknowledged ones (DUP) after a reconnect. While disconnected,
events and presence updates wait in a bounded in-process queue (the oldest is dropped and counted
beyond `mqtt.queue_max`) and are sent in order after the next successful CONNACK. So events are
delivered at least once: none is lost while the process lives and the queue does not overflow,
and a message in flight when the connection broke may arrive twice.

Topics (`<p>` = `mqtt.topic_prefix/device_id`):
  `<p>/availability`    online | offline (retained; offline is also the Last Will)
  `<p>/event`           JSON identity event (recognized | unknown | left)
  `<p>/person/<name>`   retained JSON presence {"state": "present" | "absent", "last_seen": ...}
  `<p>/last_person`     retained JSON {"person": ..., "timestamp": ...} of the last recognition
  `<p>/snapshot`        retained JPEG of the face (or frame) of the last recognized/unknown event
The MQTT password is passed in by the caller and never logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edged.config import HomeAssistantConfig, MQTTConfig, SnapshotConfig
from edged.runtime.discovery import OFFLINE, ONLINE, Topics, discovery_messages
from edged.runtime.sinks import EventSink
from edged.runtime.systemd import PAHO_LOGGER
from edged.types import EventKind, IdentityEvent, PeopleChanged, PersonEntity, PresenceChange, StreamItem
from edged.vision.imageio import encode_jpeg

log = logging.getLogger(__name__)

EVENT_SCHEMA = 1


def iso8601(epoch: float) -> str:
    """UTC timestamp with milliseconds, e.g. 2024-05-01T12:00:00.123Z."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_payload(event: IdentityEvent, device: str, camera: str) -> dict[str, Any]:
    """The JSON body of `<p>/event` (schema 1; `candidate` and `reason` added in edged 0.2: for `unknown`, the
    nearest enrolled person and why the face was not named)."""
    return {
        "schema": EVENT_SCHEMA, "type": str(event.kind), "device": device, "camera": camera,
        "person": event.person, "distance": round(float(event.distance), 4),
        "confidence": round(float(event.confidence), 4), "track_id": event.track_id,
        "box": event.box.as_list(), "frame": event.frame, "timestamp": iso8601(event.wall),
        "candidate": event.candidate, "reason": None if event.reason is None else str(event.reason),
    }


def last_person_payload(event: IdentityEvent) -> dict[str, Any]:
    """The retained body of `<p>/last_person` after a `recognized` event."""
    return {"person": event.person, "confidence": round(float(event.confidence), 4),
            "timestamp": iso8601(event.wall)}


def presence_payload(change: PresenceChange) -> dict[str, Any]:
    """The retained body of `<p>/person/<name>`."""
    return {"state": str(change.state), "last_seen": iso8601(change.last_seen)}


def compact(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


@dataclass
class MqttStats:
    published: int = 0
    acknowledged: int = 0
    dropped: int = 0
    queued_peak: int = 0
    connects: int = 0
    disconnects: int = 0


class MqttPublisher:
    """Publishes one device's events to a broker; thread-safe, never blocks the caller for the network."""

    def __init__(self, cfg: MQTTConfig, device_id: str, camera: str, password: str | None = None,
                 ha: HomeAssistantConfig | None = None, snapshots: bool = False) -> None:
        self.cfg = cfg
        self.device_id = device_id
        self.camera = camera
        self.ha = ha or HomeAssistantConfig()
        self.snapshots = snapshots
        self.topics = Topics(cfg, self.ha, device_id)
        self.client_id = cfg.client_id or f"edged-{device_id}"
        self.stats = MqttStats()
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._queue: deque[tuple[str, bytes, bool]] = deque()
        self._latest_snapshot: bytes | None = None
        self._people: list[PersonEntity] = []
        self._published_configs: set[str] = set()
        self._state_topics: dict[str, str] = {}  # binary_sensor config topic -> its presence topic
        self._inflight: set[int] = set()
        self._inflight_lock = threading.Lock()
        self._refused: str | None = None
        self._stopping = False
        self._failures = 0
        self._client = self._make_client(password)

    # ---- setup ----

    def _make_client(self, password: str | None) -> paho.Client:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False,
                             protocol=paho.MQTTv311)
        paho_log = logging.getLogger(PAHO_LOGGER)
        paho_log.addFilter(self._drop_noise)
        client.enable_logger(paho_log)
        if self.cfg.username is not None:
            client.username_pw_set(self.cfg.username, password)
        tls = self.cfg.tls
        if tls.enabled:
            client.tls_set(ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file,
                           cert_reqs=ssl.CERT_REQUIRED)
            client.tls_insecure_set(tls.insecure)
        client.will_set(self.topics.availability, OFFLINE, qos=self.cfg.qos, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=max(1, round(self.cfg.reconnect_max_s)))
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    @staticmethod
    def _drop_noise(record: logging.LogRecord) -> bool:
        """paho 2.2 logs "Client is not connected" as an ERROR on every loop pass while the broker is
        unreachable (and once after a clean disconnect); our own log reports the connection state."""
        return not record.getMessage().startswith("Client is not connected")

    def start(self) -> None:
        """Connect in the background; messages are queued until the broker accepts the connection."""
        log.info("mqtt: connecting to %s:%d as %s%s", self.cfg.host, self.cfg.port, self.client_id,
                 " (TLS)" if self.cfg.tls.enabled else "")
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self._client.loop_start()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    @property
    def status(self) -> str:
        """One line for logs and systemd STATUS=."""
        if self.connected:
            return "mqtt connected"
        if self._refused:
            return f"mqtt refused: {self._refused}"
        return f"mqtt disconnected ({self.queued} queued)"

    # ---- publishing ----

    def publish_event(self, event: IdentityEvent) -> None:
        self._send(self.topics.event, compact(event_payload(event, self.device_id, self.camera)), retain=False)
        if event.kind == EventKind.RECOGNIZED:
            self._send(self.topics.last_person, json.dumps(last_person_payload(event)).encode(), retain=True)

    def publish_presence(self, change: PresenceChange) -> None:
        self._send(self.topics.person(change.person), json.dumps(presence_payload(change)).encode(), retain=True)

    def publish_snapshot(self, jpeg: bytes) -> None:
        """The latest snapshot (retained); while offline only the newest one is kept."""
        with self._lock:
            if not self._connected.is_set():
                self._latest_snapshot = jpeg
                return
            self._publish_locked(self.topics.snapshot, jpeg, retain=True)

    def set_people(self, people: Iterable[PersonEntity]) -> None:
        """The enrolled people: (re)publish discovery, clearing entities of people no longer enrolled."""
        with self._lock:
            self._people = sorted(people, key=lambda p: p.name)
            if self._connected.is_set() and self.ha.enabled:
                self._publish_discovery_locked()

    def _send(self, topic: str, payload: bytes, retain: bool) -> None:
        with self._lock:
            if self._connected.is_set():
                self._publish_locked(topic, payload, retain)
                return
            self._queue.append((topic, payload, retain))
            if len(self._queue) > self.cfg.queue_max:
                self._queue.popleft()
                self.stats.dropped += 1
                if self.stats.dropped == 1 or self.stats.dropped % 100 == 0:
                    log.warning("mqtt: offline queue full (%d); dropped %d oldest message(s) so far",
                                self.cfg.queue_max, self.stats.dropped)
            self.stats.queued_peak = max(self.stats.queued_peak, len(self._queue))

    def _publish_locked(self, topic: str, payload: bytes | str, retain: bool) -> None:
        info = self._client.publish(topic, payload, qos=self.cfg.qos, retain=retain)
        self.stats.published += 1
        if self.cfg.qos > 0:
            with self._inflight_lock:
                self._inflight.add(info.mid)

    def _publish_discovery_locked(self) -> None:
        messages = discovery_messages(self.topics, self.device_id, self.camera, self._people, self.snapshots)
        for topic, payload in messages.items():
            self._publish_locked(topic, compact(payload), retain=True)
        for topic in sorted(self._published_configs - set(messages)):
            self._publish_locked(topic, b"", retain=True)  # an empty retained config removes the entity
            state_topic = self._state_topics.pop(topic, None)
            if state_topic is not None:
                self._publish_locked(state_topic, b"", retain=True)  # and its retained presence
        self._published_configs = set(messages)
        self._state_topics.update({t: m["state_topic"] for t, m in messages.items() if "/binary_sensor/" in t})
        log.info("mqtt: published Home Assistant discovery (%d entities, %d people)", len(messages), len(self._people))

    # ---- paho callbacks (paho's thread) ----

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            log.error("mqtt: broker %s:%d refused the connection: %s", self.cfg.host, self.cfg.port, reason)
            return
        self._refused = None
        self._failures = 0
        with self._lock:
            self.stats.connects += 1
            if self.ha.enabled:
                client.subscribe(self.topics.ha_status, qos=1)
            self._publish_locked(self.topics.availability, ONLINE, retain=True)
            if self.ha.enabled:
                self._publish_discovery_locked()
            flushed = len(self._queue)
            while self._queue:
                topic, payload, retain = self._queue.popleft()
                self._publish_locked(topic, payload, retain)
            if self._latest_snapshot is not None:
                self._publish_locked(self.topics.snapshot, self._latest_snapshot, retain=True)
                self._latest_snapshot = None
            self._connected.set()
        log.info("mqtt: connected to %s:%d (session present: %s)%s", self.cfg.host, self.cfg.port,
                 bool(flags.session_present), f"; sent {flushed} queued message(s)" if flushed else "")

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._failures += 1
        level = logging.WARNING if self._failures == 1 else logging.DEBUG
        log.log(level, "mqtt: cannot reach broker %s:%d (attempt %d); retrying", self.cfg.host, self.cfg.port,
                self._failures)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        was = self._connected.is_set()
        with self._lock:
            self._connected.clear()
            if was:
                self.stats.disconnects += 1
        if was and not self._stopping:
            log.warning("mqtt: disconnected from %s:%d (%s); queueing until reconnected", self.cfg.host,
                        self.cfg.port, reason)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if message.topic == self.topics.ha_status and message.payload.strip().lower() == b"online":
            log.info("mqtt: Home Assistant came online; re-publishing discovery")
            with self._lock:
                if self._connected.is_set():
                    self._publish_discovery_locked()

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._inflight_lock:
            if mid in self._inflight:
                self._inflight.discard(mid)
                self.stats.acknowledged += 1

    # ---- shutdown ----

    def stop(self, timeout: float = 1.0) -> None:
        """Wait (up to `timeout`) for in-flight messages, publish `offline`, disconnect, stop the thread."""
        deadline = time.monotonic() + timeout
        if self.connected:
            while time.monotonic() < deadline:
                with self._inflight_lock:
                    if not self._inflight:
                        break
                time.sleep(0.01)
            with self._lock:
                info = self._client.publish(self.topics.availability, OFFLINE, qos=self.cfg.qos, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):  # not sent: connection lost meanwhile
                info.wait_for_publish(max(0.05, deadline - time.monotonic() + 0.5))
        with self._lock:
            lost = len(self._queue)
        with self._inflight_lock:
            unacked = len(self._inflight)
        if lost or unacked:
            log.warning("mqtt: stopping with %d queued and %d unacknowledged message(s) not delivered", lost, unacked)
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()


def snapshot_jpeg(event: IdentityEvent, cfg: SnapshotConfig) -> bytes | None:
    """The JPEG of a recognized/unknown event's face (with a margin of a quarter) or whole frame; None
    without an image."""
    image = event.image
    if image is None or event.kind not in (EventKind.RECOGNIZED, EventKind.UNKNOWN):
        return None
    if cfg.kind == "face":
        h, w = image.shape[:2]
        b = event.box.expanded(0.25, w, h)
        image = image[b.top:b.bottom, b.left:b.right]
    return encode_jpeg(np.ascontiguousarray(image), cfg.jpeg_quality)


class MqttSink(EventSink):
    """The event stream on MQTT: events, presence, last person, snapshots and Home Assistant discovery."""

    name = "mqtt"

    def __init__(self, publisher: MqttPublisher, snapshots: SnapshotConfig) -> None:
        self.publisher = publisher
        self.snapshots = snapshots
        self.wants_images = snapshots.enabled

    def start(self) -> None:
        self.publisher.start()

    def handle(self, item: StreamItem) -> None:
        if isinstance(item, IdentityEvent):
            self.publisher.publish_event(item)
            if self.snapshots.enabled:
                jpeg = snapshot_jpeg(item, self.snapshots)
                if jpeg is not None:
                    self.publisher.publish_snapshot(jpeg)
        elif isinstance(item, PresenceChange):
            self.publisher.publish_presence(item)
        elif isinstance(item, PeopleChanged):
            self.publisher.set_people(item.people)

    def close(self, timeout: float) -> None:
        self.publisher.stop(timeout)

    @property
    def ready(self) -> bool:
        return self.publisher.connected

    @property
    def status(self) -> str:
        return self.publisher.status

    def stats(self) -> dict[str, object]:
        return asdict(self.publisher.stats)
