"""MQTT output: availability, identity events, presence, snapshots, access decisions and Home Assistant discovery.

paho-mqtt 2.x (`CallbackAPIVersion.VERSION2`), `connect_async` + `loop_start`, QoS 1 by default,
clean session off with a stable client id, Last Will `offline` (retained).

Delivery of events (identity events, access decisions): each goes into a durable **outbox** (SQLite beside
the gallery, `<gallery>.outbox`, 0600; bounded by `mqtt.queue_max`, the oldest dropped and counted) and leaves
it only when the broker acknowledges it (PUBACK). While the broker is unreachable they wait there, in order,
and are sent after the next CONNACK, also after edged restarts. So events are delivered at least once: a
message in flight when the connection broke may arrive twice (with the same `visit_id` and timestamp).

**State** (availability, presence of every enrolled person, last person, camera, status, the snapshot) is
never replayed stale: it is republished from the current values after every connect, and on a start every
enrolled person is published `absent` until seen (a `present` left behind by a crash is overwritten).
Retained topics of people no longer enrolled (renamed or removed while edged was stopped) are found by
subscribing to this device's own retained topics and cleared. Lock commands are never queued: they are sent
while connected or not at all.

Topics (`<p>` = `mqtt.topic_prefix/device_id`):
  `<p>/availability`    online | offline (retained; offline is also the Last Will)
  `<p>/event`           JSON identity event (recognized | unknown | left)
  `<p>/person/<name>`   retained JSON presence {"state": "present" | "absent", "last_seen": ... | null}
  `<p>/last_person`     retained JSON {"person": ..., "timestamp": ...} of the last recognition
  `<p>/snapshot`        retained JPEG of the face (or frame) of the last recognized/unknown event
  `<p>/access`          JSON access decision (granted | denied | alarm)
  `<p>/status`          retained JSON diagnostics (fps, camera, queue, people, dropped frames, unknowns today)
  `<p>/camera/<name>/availability`, `/state`   retained: online while the camera delivers frames
  `<p>/trigger/recognized/<name>`, `<p>/trigger/unknown`   Home Assistant device triggers
The MQTT password is passed in by the caller and never logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import ssl
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edged.config import HomeAssistantConfig, MQTTConfig, SnapshotConfig
from edged.runtime.discovery import OFFLINE, ONLINE, Topics, discovery_messages
from edged.runtime.sinks import EventSink
from edged.runtime.systemd import PAHO_LOGGER
from edged.types import (
    AccessDecision,
    EventKind,
    Health,
    IdentityEvent,
    PeopleChanged,
    PersonEntity,
    PresenceChange,
    PresenceState,
    SourceState,
    StreamItem,
)
from edged.vision.imageio import encode_jpeg

log = logging.getLogger(__name__)

EVENT_SCHEMA = 1
#: A removed person's state topics are cleared this long after their discovery configs, so Home Assistant has
#: dropped the entity (and its subscription) before the empty payload arrives.
CLEAR_DELAY_S = 2.0


def iso8601(epoch: float) -> str:
    """UTC timestamp with milliseconds, e.g. 2024-05-01T12:00:00.123Z."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_payload(event: IdentityEvent, device: str, camera: str) -> dict[str, Any]:
    """The JSON body of `<p>/event` (schema 1; `candidate` and `reason` added in edged 0.2: for `unknown`, the
    nearest enrolled person and why the face was not named)."""
    return {
        "schema": EVENT_SCHEMA, "type": str(event.kind), "device": device, "camera": event.camera or camera,
        "person": event.person, "distance": round(float(event.distance), 4),
        "confidence": round(float(event.confidence), 4), "track_id": event.track_id,
        "box": event.box.as_list(), "frame": event.frame, "timestamp": iso8601(event.wall),
        "candidate": event.candidate, "reason": None if event.reason is None else str(event.reason),
        "visit_id": event.visit_id or None,
        "liveness": None if event.liveness is None else event.liveness.as_dict(),
        # several cameras on one door: every camera that saw the visit (edged 0.3)
        **({"cameras": list(event.cameras)} if len(event.cameras) > 1 else {}),
    }


def last_person_payload(event: IdentityEvent) -> dict[str, Any]:
    """The retained body of `<p>/last_person` after a `recognized` event."""
    return {"person": event.person, "confidence": round(float(event.confidence), 4),
            "timestamp": iso8601(event.wall)}


def presence_payload(change: PresenceChange) -> dict[str, Any]:
    """The retained body of `<p>/person/<name>` (`last_seen` null for someone not seen since enrolled)."""
    return {"state": str(change.state), "last_seen": iso8601(change.last_seen) if change.last_seen else None}


def access_payload(decision: AccessDecision, device: str) -> dict[str, Any]:
    """The JSON body of `<p>/access` (schema 1): one access decision and its reasons."""
    return {
        "schema": EVENT_SCHEMA, "decision": str(decision.outcome), "device": device, "door": decision.door,
        "camera": decision.camera, "person": decision.person, "track_id": decision.track_id,
        "reasons": list(decision.reasons), "actions": list(decision.actions),
        "distance": None if decision.distance is None else round(decision.distance, 4),
        "confidence": None if decision.confidence is None else round(decision.confidence, 4),
        "liveness": None if decision.liveness is None else decision.liveness.as_dict(),
        "timestamp": iso8601(decision.wall),
    }


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
    #: Events found in the outbox at start (left by the previous run) and delivered now.
    recovered: int = 0
    #: Stale retained topics (people no longer enrolled) cleared.
    cleared: int = 0


class Outbox:
    """Events waiting for the broker's acknowledgement: SQLite (0600) or memory; bounded, oldest dropped."""

    def __init__(self, path: Path | None, limit: int) -> None:
        self.path = path
        self.limit = limit
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            os.chmod(path, 0o600)
        self._db = sqlite3.connect(str(path) if path is not None else ":memory:", check_same_thread=False,
                                   isolation_level=None, timeout=5.0)
        self._db.execute("PRAGMA journal_mode = WAL" if path is not None else "PRAGMA journal_mode = MEMORY")
        self._db.execute("CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, "
                         "payload BLOB NOT NULL, qos INTEGER NOT NULL, created REAL NOT NULL)")

    def add(self, topic: str, payload: bytes, qos: int) -> tuple[int, int]:
        """Store one message; returns (its id, how many oldest messages were dropped to make room)."""
        with self._lock:
            row = self._db.execute("INSERT INTO outbox (topic, payload, qos, created) VALUES (?, ?, ?, ?)",
                                   (topic, payload, qos, time.time())).lastrowid or 0
            over = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] - self.limit
            if over > 0:
                self._db.execute("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
                                 (over,))
            return int(row), max(0, over)

    def done(self, row: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE id = ?", (row,))

    def pending(self) -> list[tuple[int, str, bytes, int]]:
        with self._lock:
            return [(int(r[0]), r[1], bytes(r[2]), int(r[3]))
                    for r in self._db.execute("SELECT id, topic, payload, qos FROM outbox ORDER BY id")]

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _drop_noise(record: logging.LogRecord) -> bool:
    """paho 2.2 logs "Client is not connected" as an ERROR on every loop pass while the broker is
    unreachable (and once after a clean disconnect); our own log reports the connection state."""
    return not record.getMessage().startswith("Client is not connected")


def make_client(cfg: MQTTConfig, client_id: str, password: str | None, clean_session: bool = False) -> paho.Client:
    """A paho client with the broker settings of `cfg` (credentials, TLS, reconnect backoff); no callbacks."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session,
                         protocol=paho.MQTTv311)
    paho_log = logging.getLogger(PAHO_LOGGER)
    paho_log.addFilter(_drop_noise)
    client.enable_logger(paho_log)
    if cfg.username is not None:
        client.username_pw_set(cfg.username, password)
    tls = cfg.tls
    if tls.enabled:
        client.tls_set(ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file,
                       cert_reqs=ssl.CERT_REQUIRED)
        client.tls_insecure_set(tls.insecure)
    client.reconnect_delay_set(min_delay=1, max_delay=max(1, round(cfg.reconnect_max_s)))
    return client


def why_unreachable(cfg: MQTTConfig) -> str:
    """Why a connection failed, in words (paho does not say): refused, unknown host, or the TLS reason
    (e.g. certificate verify failed), found by one probe connection with the same TLS settings."""
    import socket

    try:
        sock = socket.create_connection((cfg.host, cfg.port), timeout=3.0)
    except OSError as exc:
        return exc.strerror or str(exc)
    with sock:
        tls = cfg.tls
        if not tls.enabled:
            return "connection closed by the broker"
        try:
            ctx = ssl.create_default_context(cafile=tls.ca_file)
            if tls.cert_file:
                ctx.load_cert_chain(tls.cert_file, tls.key_file)
            ctx.check_hostname = not tls.insecure
            with ctx.wrap_socket(sock, server_hostname=cfg.host):
                return "TLS handshake succeeded on a probe; the broker refused or closed the connection"
        except ssl.SSLError as exc:
            return f"TLS: {exc.reason or exc}" + (f" ({exc.verify_message})" if getattr(exc, "verify_message", None)
                                                  else "")
        except OSError as exc:
            return f"TLS: {exc.strerror or exc}"


class MqttPublisher:
    """Publishes one device's events and state to a broker; thread-safe, never blocks the caller for the network."""

    def __init__(self, cfg: MQTTConfig, device_id: str, camera: str, password: str | None = None,
                 ha: HomeAssistantConfig | None = None, snapshots: bool = False, access: bool = False,
                 outbox: Path | None = None, cameras: Sequence[str] = ()) -> None:
        """`outbox`: the file events wait in until acknowledged (None: memory, lost with the process); `cameras`:
        every camera of a daemon with several (`camera` is then the first)."""
        self.cfg = cfg
        self.device_id = device_id
        self.camera = camera
        self.cameras = tuple(cameras) if len(cameras) > 1 else ()
        self.ha = ha or HomeAssistantConfig()
        self.snapshots = snapshots
        self.access = access
        self.topics = Topics(cfg, self.ha, device_id)
        self.client_id = cfg.client_id or f"edged-{device_id}"
        self.stats = MqttStats()
        self._lock = threading.RLock()
        self._connected = threading.Event()
        self._outbox = Outbox(outbox, cfg.queue_max)
        self.stats.recovered = len(self._outbox)
        if self.stats.recovered:
            log.info("mqtt: %d event(s) from before the restart wait in %s", self.stats.recovered, outbox)
        #: Retained state: topic -> payload, republished after every connect.
        self._state: dict[str, bytes] = {}
        self._people: list[PersonEntity] = []
        self._people_known = False
        self._pending_clears: dict[str, float] = {}  # topic -> monotonic time to clear it
        self._clear_timer: threading.Timer | None = None
        self._presence: dict[str, tuple[PresenceState, float | None]] = {}
        self._published_configs: set[str] = set()
        self._inflight: dict[int, int | None] = {}  # mid -> outbox row (None: state, not stored)
        # paho calls on_publish holding its own lock, which publish() also takes: acknowledgements therefore use a
        # lock of their own that is never held while calling into paho (and may arrive before publish() returns)
        self._ack_lock = threading.Lock()
        self._early_acks: set[int] = set()
        self._refused: str | None = None
        self._stopping = False
        self._failures = 0
        self._client = self._make_client(password)

    # ---- setup ----

    def _make_client(self, password: str | None) -> paho.Client:
        client = make_client(self.cfg, self.client_id, password)
        client.will_set(self.topics.availability, OFFLINE, qos=self.cfg.qos, retain=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    def _why_unreachable(self) -> str:
        return why_unreachable(self.cfg)

    def start(self) -> None:
        """Connect in the background; events wait in the outbox until the broker accepts the connection."""
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
        """Events not yet acknowledged by the broker."""
        return len(self._outbox)

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
        payload = compact(event_payload(event, self.device_id, self.camera))
        self._send_event(self.topics.event, payload)
        if self.cameras and event.camera in self.cameras:  # several cameras: also on the camera's own topic
            self._send_event(self.topics.camera_event(event.camera), payload)
        if event.kind == EventKind.RECOGNIZED:
            self._set_state(self.topics.last_person, json.dumps(last_person_payload(event)).encode())
            if event.person is not None:
                self._trigger(self.topics.trigger("recognized", event.person), b"recognized")
        elif event.kind == EventKind.UNKNOWN:
            self._trigger(self.topics.trigger("unknown"), b"unknown")

    def publish_access(self, decision: AccessDecision) -> None:
        self._send_event(self.topics.access, compact(access_payload(decision, self.device_id)))

    def publish_command(self, topic: str, payload: str, qos: int = 1) -> bool:
        """A lock's command: sent now, while connected, or not at all (never queued: a door must not open late)."""
        with self._lock:
            if not self._connected.is_set():
                log.warning("mqtt: command for %s not sent: broker not connected", topic)
                return False
            self._client.publish(topic, payload, qos=qos, retain=False)
            self.stats.published += 1
            return True

    def publish_presence(self, change: PresenceChange) -> None:
        with self._lock:
            if self._people_known and change.person not in {p.name for p in self._people}:
                return  # renamed or removed meanwhile: its topic is cleared, not re-created
            self._presence[change.person] = (change.state, change.last_seen)
            self._set_state(self.topics.person(change.person), json.dumps(presence_payload(change)).encode())
            if change.last_seen:
                self._set_state(self.topics.last_seen(change.person), iso8601(change.last_seen))

    def publish_snapshot(self, jpeg: bytes) -> None:
        """The latest snapshot (retained); while offline only the newest one is kept."""
        self._set_state(self.topics.snapshot, jpeg)

    def publish_health(self, health: Health, queue: int, people: int, frames_dropped: int, unknown_today: int) -> None:
        """Diagnostics (retained status JSON) and the camera's availability."""
        if health.cameras:
            for cam in health.cameras:
                self._set_state(self.topics.camera_availability(cam.name), ONLINE if cam.streaming else OFFLINE)
                self._set_state(self.topics.camera_state(cam.name),
                                b"stalled" if cam.stalled else str(cam.state).encode())
            any_streaming = any(cam.streaming for cam in health.cameras)
            self._set_state(self.topics.cameras_availability, ONLINE if any_streaming else OFFLINE)
        else:
            streaming = health.camera == SourceState.STREAMING and not health.camera_stalled
            self._set_state(self.topics.camera_availability(self.camera), ONLINE if streaming else OFFLINE)
            self._set_state(self.topics.camera_state(self.camera),
                            b"stalled" if health.camera_stalled else str(health.camera).encode())
        status = {"fps": round(health.fps, 1), "camera": "stalled" if health.camera_stalled else str(health.camera),
                  "tracks": health.tracks, "last_person": health.last_person, "queue": queue, "people": people,
                  "frames_dropped": frames_dropped, "frames_dropped_percent": health.dropped_percent,
                  "overloaded": health.overloaded, "detect_every_n": health.detect_every_n,
                  "unknown_today": unknown_today,
                  "timestamp": iso8601(health.wall)}
        if health.cameras:  # several cameras: each one's part; the totals over all of them
            status["cameras"] = {cam.name: {
                "fps": round(cam.fps, 1), "state": "stalled" if cam.stalled else str(cam.state), "tracks": cam.tracks,
                "frames_processed": cam.frames_processed, "frames_dropped": cam.frames_dropped,
                "frames_dropped_percent": cam.dropped_percent, "overloaded": cam.overloaded,
                "detect_every_n": cam.detect_every_n} for cam in health.cameras}
            status["fps"] = round(sum(cam.fps for cam in health.cameras), 1)
            status["overloaded"] = any(cam.overloaded for cam in health.cameras)
            status["frames_dropped_percent"] = max(cam.dropped_percent for cam in health.cameras)
        self._set_state(self.topics.status, compact(status))

    def set_people(self, people: Iterable[PersonEntity]) -> None:
        """The enrolled people: (re)publish discovery and everyone's presence (absent until seen); clear the
        entities and presence topics of people no longer enrolled."""
        with self._lock:
            old_names = {p.id: p.name for p in self._people if p.id}
            before = {p.name for p in self._people}
            self._people = sorted(people, key=lambda p: p.name)
            self._people_known = True
            now = {p.name for p in self._people}
            for person in self._people:  # a rename keeps when the person was last seen
                old = old_names.get(person.id) if person.id else None
                if old and old != person.name and old in self._presence:
                    self._presence[person.name] = (PresenceState.ABSENT, self._presence[old][1])
            for gone in sorted(before - now):
                self._presence.pop(gone, None)
            for person in self._people:
                state, seen = self._presence.get(person.name, (PresenceState.ABSENT, None))
                self._set_state(self.topics.person(person.name),
                                json.dumps(presence_payload(PresenceChange(person.name, state, seen or 0.0))).encode())
                if seen:
                    self._set_state(self.topics.last_seen(person.name), iso8601(seen))
            if self._connected.is_set() and self.ha.enabled:
                self._publish_discovery_locked()  # the entities of people gone are removed first ...
            for gone in sorted(before - now):  # ... their state topics a little later
                self._clear_later(self.topics.person(gone))
                self._clear_later(self.topics.last_seen(gone))

    # ---- internals (callers hold no lock or the RLock) ----

    def _send_event(self, topic: str, payload: bytes) -> None:
        with self._lock:
            if self.cfg.qos == 0:
                if self._connected.is_set():
                    self._publish_locked(topic, payload, retain=False)
                return
            row, dropped = self._outbox.add(topic, payload, self.cfg.qos)
            if dropped:
                self.stats.dropped += dropped
                if self.stats.dropped == dropped or self.stats.dropped % 100 == 0:
                    log.warning("mqtt: outbox full (%d); dropped %d oldest event(s) so far", self.cfg.queue_max,
                                self.stats.dropped)
            self.stats.queued_peak = max(self.stats.queued_peak, len(self._outbox))
            if self._connected.is_set():
                self._publish_locked(topic, payload, retain=False, row=row)

    def _set_state(self, topic: str, payload: bytes | str) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        with self._lock:
            if self._state.get(topic) == data:
                return
            self._state[topic] = data
            if self._connected.is_set():
                self._publish_locked(topic, data, retain=True)

    def _clear(self, topic: str) -> None:
        with self._lock:
            self._state.pop(topic, None)
            if self._connected.is_set():
                self._publish_locked(topic, b"", retain=True)

    def _clear_later(self, topic: str) -> None:
        """Clear a retained state topic after CLEAR_DELAY_S (its entity's config is removed first)."""
        with self._lock:
            self._state.pop(topic, None)
            self._pending_clears[topic] = time.monotonic() + CLEAR_DELAY_S
            if self._clear_timer is None and not self._stopping:
                self._clear_timer = threading.Timer(CLEAR_DELAY_S, self._run_clears)
                self._clear_timer.daemon = True
                self._clear_timer.start()

    def _run_clears(self) -> None:
        with self._lock:
            self._clear_timer = None
            now = time.monotonic()
            expected = self._expected()
            for topic, due in sorted(self._pending_clears.items()):
                if due > now:
                    continue
                del self._pending_clears[topic]
                if topic not in expected:  # not enrolled again meanwhile
                    self._clear(topic)
            if self._pending_clears and not self._stopping:
                wait = max(0.05, min(self._pending_clears.values()) - now)
                self._clear_timer = threading.Timer(wait, self._run_clears)
                self._clear_timer.daemon = True
                self._clear_timer.start()

    def _trigger(self, topic: str, payload: bytes) -> None:
        """A device trigger fires now or never (an automation must not run on a stale visit)."""
        with self._lock:
            if self._connected.is_set() and self.ha.enabled:
                self._publish_locked(topic, payload, retain=False)

    def _publish_locked(self, topic: str, payload: bytes | str, retain: bool, row: int | None = None) -> None:
        info = self._client.publish(topic, payload, qos=self.cfg.qos, retain=retain)
        self.stats.published += 1
        if self.cfg.qos > 0:
            with self._ack_lock:
                if info.mid in self._early_acks:
                    self._early_acks.discard(info.mid)
                    self._acknowledged(row)
                else:
                    self._inflight[info.mid] = row

    def _acknowledged(self, row: int | None) -> None:
        self.stats.acknowledged += 1
        if row is not None:
            self._outbox.done(row)

    def _publish_discovery_locked(self) -> None:
        messages = discovery_messages(self.topics, self.device_id, self.camera, self._people, self.snapshots,
                                      self.access, self.cfg.qos, self.cameras)
        for topic, payload in messages.items():
            self._publish_locked(topic, compact(payload), retain=True)
        for topic in sorted(self._published_configs - set(messages)):
            self._publish_locked(topic, b"", retain=True)  # an empty retained config removes the entity
        self._published_configs = set(messages)
        log.info("mqtt: published Home Assistant discovery (%d entities, %d people)", len(messages), len(self._people))

    def _expected(self) -> set[str]:
        """Retained topics this device should have now."""
        configs = set(discovery_messages(self.topics, self.device_id, self.camera, self._people, self.snapshots,
                                         self.access, self.cfg.qos, self.cameras)) if self.ha.enabled else set()
        return (configs | {self.topics.person(p.name) for p in self._people}
                | {self.topics.last_seen(p.name) for p in self._people})

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
                client.subscribe(self.topics.own_configs, qos=1)
            client.subscribe(self.topics.own_people, qos=1)
            self._publish_locked(self.topics.availability, ONLINE, retain=True)
            if self.ha.enabled:
                self._publish_discovery_locked()
            for topic, data in self._state.items():  # the current state, not a stale replay
                self._publish_locked(topic, data, retain=True)
            waiting = self._outbox.pending()
            with self._ack_lock:
                rows = set(self._inflight.values())
            for row, topic, payload, _qos in waiting:
                if row not in rows:
                    self._publish_locked(topic, payload, retain=False, row=row)
            self._connected.set()
        log.info("mqtt: connected to %s:%d (session present: %s)%s", self.cfg.host, self.cfg.port,
                 bool(flags.session_present), f"; sent {len(waiting)} waiting event(s)" if waiting else "")

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._failures += 1
        if self._failures == 1 or self._failures % 50 == 0:
            why = self._why_unreachable()
            log.warning("mqtt: cannot reach broker %s:%d (attempt %d): %s; retrying", self.cfg.host, self.cfg.port,
                        self._failures, why)
        else:
            log.debug("mqtt: cannot reach broker %s:%d (attempt %d); retrying", self.cfg.host, self.cfg.port,
                      self._failures)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        was = self._connected.is_set()
        with self._lock:
            self._connected.clear()
            with self._ack_lock:
                self._inflight.clear()  # resent from the outbox after the next connect
                self._early_acks.clear()
            if was:
                self.stats.disconnects += 1
        if was and not self._stopping:
            log.warning("mqtt: disconnected from %s:%d (%s); events wait in the outbox", self.cfg.host,
                        self.cfg.port, reason)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if message.topic == self.topics.ha_status:
            if message.payload.strip().lower() == b"online":
                log.info("mqtt: Home Assistant came online; re-publishing discovery and state")
                with self._lock:
                    if self._connected.is_set():
                        self._publish_discovery_locked()
                        for topic, data in self._state.items():
                            self._publish_locked(topic, data, retain=True)
            return
        if not message.retain or not message.payload:
            return
        with self._lock:
            if message.topic not in self._expected() and message.topic not in self._pending_clears:
                # left behind by a person renamed or removed while edged was not running
                log.info("mqtt: clearing stale retained %s", message.topic)
                self.stats.cleared += 1
                if message.topic.startswith(self.topics.discovery + "/"):
                    self._publish_locked(message.topic, b"", retain=True)
                else:
                    self._clear_later(message.topic)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        if self.cfg.qos == 0:
            return
        with self._ack_lock:
            if mid in self._inflight:
                self._acknowledged(self._inflight.pop(mid))
            else:
                self._early_acks.add(mid)

    # ---- shutdown ----

    def stop(self, timeout: float = 1.0) -> None:
        """Wait (up to `timeout`) for in-flight messages, publish `offline`, disconnect, stop the thread."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._clear_timer is not None:
                self._clear_timer.cancel()
            self._stopping = True
            # not cleared now (Home Assistant may still be subscribed): the next start finds them stale
            self._pending_clears.clear()
        if self.connected:
            while time.monotonic() < deadline:
                with self._ack_lock:
                    if not self._inflight:
                        break
                time.sleep(0.01)
            with self._lock:
                info = self._client.publish(self.topics.availability, OFFLINE, qos=self.cfg.qos, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):  # not sent: connection lost meanwhile
                info.wait_for_publish(max(0.05, deadline - time.monotonic() + 0.5))
        waiting = len(self._outbox)
        if waiting:
            where = f"kept in {self._outbox.path} for the next start" if self._outbox.path else "lost"
            log.warning("mqtt: stopping with %d event(s) not acknowledged by the broker: %s", waiting, where)
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        self._outbox.close()


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
    """The event stream on MQTT: events, presence, last person, snapshots, access, diagnostics and discovery."""

    name = "mqtt"

    def __init__(self, publisher: MqttPublisher, snapshots: SnapshotConfig) -> None:
        self.publisher = publisher
        self.snapshots = snapshots
        self.wants_images = snapshots.enabled
        self._people = 0
        self._unknown_today = 0
        self._day = ""

    def start(self) -> None:
        self.publisher.start()

    def handle(self, item: StreamItem) -> None:
        if isinstance(item, IdentityEvent):
            if item.resumed:  # the visit goes on under a new track: nothing new to announce
                return
            self.publisher.publish_event(item)
            if item.kind == EventKind.UNKNOWN:
                self._count_unknown(item.wall)
            if self.snapshots.enabled:
                jpeg = snapshot_jpeg(item, self.snapshots)
                if jpeg is not None:
                    self.publisher.publish_snapshot(jpeg)
        elif isinstance(item, PresenceChange):
            self.publisher.publish_presence(item)
        elif isinstance(item, PeopleChanged):
            self._people = len(item.people)
            self.publisher.set_people(item.people)
        elif isinstance(item, AccessDecision):
            self.publisher.publish_access(item)
        elif isinstance(item, Health):
            self._count_unknown(item.wall, 0)
            dropped = sum(c.frames_dropped for c in item.cameras) if item.cameras else item.frames_dropped
            self.publisher.publish_health(item, self.publisher.queued, self._people, dropped,
                                          self._unknown_today)

    def _count_unknown(self, wall: float, n: int = 1) -> None:
        day = datetime.fromtimestamp(wall).strftime("%Y-%m-%d")  # local days, as the user counts them
        if day != self._day:
            self._day, self._unknown_today = day, 0
        self._unknown_today += n

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
