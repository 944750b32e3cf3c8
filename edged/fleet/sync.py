"""The fleet over MQTT: every item's record retained on the broker, each box's health retained, one sync thread.

Topics (`<f>` = `fleet.topic_prefix/fleet.id`):

* `<f>/item/person/<name>`, `<f>/item/ignore/<label>`: the item's current record (`edged.fleet.records`), retained.
  A box subscribes to `<f>/item/#`; the broker (and every bridge) hands it the current record of every item,
  also after it was offline or when it joins late.
* `<f>/revoked`: the root's revocation list (box keys whose records are refused), retained; every box keeps the
  newest version it has seen and republishes it when the broker's is older.
* `<f>/box/<box>/health`: the box's health, retained (the broker's will sets `online: false`).
* `<f>/box/<box>/ping`: this box's own marker: after subscribing it publishes a nonce there; when the nonce comes
  back, every retained record was delivered before it, and only then does the box publish its local changes
  (so a box that was offline first learns what changed meanwhile).

The thread: apply received records (verified, each in one SQLite transaction; a stale one is answered by
republishing the stored, better record), publish local changes (found by content digest, `edged.fleet.state`),
publish health. A refused message on an item's topic (a forgery replacing the retained record) is answered by
republishing this box's good record of that item. Received messages wait in a bounded queue (oldest dropped and
counted: the retained records come again at the next connect). Refused records are logged, at most
`LOG_REFUSED_PER_MIN` a minute.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from edged import __version__
from edged.config import FleetConfig, MQTTConfig
from edged.fleet.keys import BoxKeys, FleetError, Revocations, load_revocations, store_revocations
from edged.fleet.records import KINDS, RecordRefused, open_record, sign_record
from edged.fleet.state import apply, local_changes, record_published, synced_item, synced_items
from edged.gallery.store import Gallery, utc_now
from edged.runtime.mqtt import make_client

log = logging.getLogger(__name__)

INBOX_MAX = 100_000
LOG_REFUSED_PER_MIN = 10
HEAL_EVERY_S = 5.0


def fleet_prefix(cfg: FleetConfig) -> str:
    return f"{cfg.topic_prefix.rstrip('/')}/{cfg.id}"


def item_topic(prefix: str, kind: str, key: str) -> str:
    return f"{prefix}/item/{kind}/{key}"


def health_topic(prefix: str, box: str) -> str:
    return f"{prefix}/box/{box}/health"


def items_digest(gallery: Gallery) -> str:
    """A short digest of every item's rank this box holds: equal on boxes that have converged."""
    import hashlib

    items = sorted((k, v.version, v.origin, v.deleted) for k, v in synced_items(gallery).items())
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:12]


@dataclass
class FleetStats:
    published: int = 0
    applied: int = 0
    same: int = 0
    stale: int = 0
    republished: int = 0
    refused: int = 0
    inbox_dropped: int = 0
    connects: int = 0
    errors: int = 0
    last_applied: str | None = None


class FleetSync:
    """Keeps this box's gallery in step with the fleet; `start()`, then `stop()`."""

    def __init__(self, cfg: FleetConfig, mqtt: MQTTConfig, password: str | None, keys: BoxKeys,
                 gallery_path: str | os.PathLike[str], embedder_version: str,
                 health: Callable[[], dict[str, Any]] | None = None) -> None:
        self.cfg = cfg
        self.keys = keys
        self.prefix = fleet_prefix(cfg)
        self.embedder_version = embedder_version
        self.health_extra = health
        self.gallery = Gallery(Path(gallery_path))
        self.stats = FleetStats()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._caught_up = threading.Event()
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(INBOX_MAX)
        self._nonce = ""
        self._dirty = True
        self._counter: int | None = None
        self._last_health = 0.0
        self._refused_log: list[float] = []
        self._healed: dict[tuple[str, str], float] = {}
        self._thread: threading.Thread | None = None
        self._client = make_client(mqtt, f"edged-{keys.box}-fleet", password)
        self._client.will_set(health_topic(self.prefix, keys.box),
                              json.dumps({"box": keys.box, "fleet": keys.fleet, "online": False}), qos=1, retain=True)
        self._revocations: Revocations | None = None
        self._revoked_mtime: float | None = None
        self._broker_revocations = 0  # the newest revocation list version seen on the broker
        self._load_revocations()
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._mqtt = mqtt

    # ---- lifecycle ----

    def start(self) -> None:
        log.info("fleet: box %s of fleet %s, syncing over %s:%d", self.keys.box, self.keys.fleet, self._mqtt.host,
                 self._mqtt.port)
        self._client.connect_async(self._mqtt.host, self._mqtt.port, keepalive=self._mqtt.keepalive_s)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="fleet-sync", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            if self._client.is_connected():
                info = self._client.publish(health_topic(self.prefix, self.keys.box),
                                            json.dumps({**self._health(), "online": False}), qos=1, retain=True)
                info.wait_for_publish(timeout)
            self._client.disconnect()
        except (RuntimeError, ValueError, OSError):
            pass
        self._client.loop_stop()
        self.gallery.close()

    @property
    def caught_up(self) -> bool:
        return self._caught_up.is_set()

    def wait_caught_up(self, timeout: float) -> bool:
        return self._caught_up.wait(timeout)

    @property
    def status(self) -> str:
        if not self._client.is_connected():
            return "fleet disconnected"
        return "fleet in sync" if self.caught_up else "fleet catching up"

    # ---- MQTT callbacks (paho's thread) ----

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("fleet: broker refused the connection: %s", reason)
            return
        self.stats.connects += 1
        self._caught_up.clear()
        self._nonce = os.urandom(8).hex()
        # the revocation list first: the broker sends each filter's retained messages in order, so a box that joins
        # late knows which keys are revoked before the first record arrives
        client.subscribe([(f"{self.prefix}/revoked", 1), (f"{self.prefix}/item/#", 1),
                          (f"{self.prefix}/box/{self.keys.box}/ping", 1)])

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        client.publish(f"{self.prefix}/box/{self.keys.box}/ping", self._nonce, qos=1)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self._caught_up.is_set() and not self._stop.is_set():
            log.warning("fleet: disconnected from the broker (%s); local changes wait", reason)
        self._caught_up.clear()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if message.topic.endswith("/ping"):
            if bytes(message.payload).decode("ascii", "replace") == self._nonce:
                self._caught_up.set()
                self._dirty = True
                self._last_health = 0.0
                self._wake.set()
            return
        if not message.payload:
            return
        while True:
            try:
                self._inbox.put_nowait((message.topic, bytes(message.payload)))
                break
            except queue.Full:
                try:
                    self._inbox.get_nowait()
                    self.stats.inbox_dropped += 1
                except queue.Empty:
                    pass
        self._wake.set()

    # ---- the sync thread ----

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.cfg.poll_s)
            self._wake.clear()
            try:
                self.step()
            except Exception:  # a bug must not end the sync thread; the next pass retries (logged 1st, every 100th)
                self.stats.errors += 1
                if self.stats.errors == 1 or self.stats.errors % 100 == 0:
                    log.exception("fleet: sync pass failed (%d failure(s) so far)", self.stats.errors)

    @property
    def revoked(self) -> frozenset[bytes]:
        return self._revocations.revoked if self._revocations is not None else frozenset()

    def _load_revocations(self) -> None:
        """This box's revocation list, again when its file changed (`edged fleet revoke` on the root's box)."""
        directory = self.keys.directory
        if directory is None:
            return
        path = directory / "revoked.json"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return
        if mtime == self._revoked_mtime:
            return
        self._revoked_mtime = mtime
        try:
            rev = load_revocations(directory)
        except FleetError as exc:
            log.warning("fleet: %s", exc)
            return
        if rev is not None and (self._revocations is None or rev.version > self._revocations.version):
            self._revocations = rev
            log.info("fleet: revocation list version %d: %s revoked", rev.version,
                     ", ".join(sorted(set(rev.keys.values()))))

    def _receive_revocations(self, payload: bytes) -> None:
        try:
            rev = Revocations.from_dict(json.loads(payload), self.keys.root, self.keys.fleet)
        except (FleetError, ValueError, UnicodeDecodeError) as exc:
            self._refuse(f"revocation list: {exc}")
            self._broker_revocations = 0  # put this box's list back in its place
            return
        self._broker_revocations = max(self._broker_revocations, rev.version)
        if self._revocations is None or rev.version > self._revocations.version:
            self._revocations = rev
            if self.keys.directory is not None:
                store_revocations(self.keys.directory, rev)
                self._revoked_mtime = (self.keys.directory / "revoked.json").stat().st_mtime
            log.warning("fleet: revocation list version %d: records of %s are refused from now on", rev.version,
                        ", ".join(sorted(set(rev.keys.values()))))

    def step(self, now: float | None = None) -> None:
        """One pass: received records, then local changes (once caught up), then health when due."""
        self._load_revocations()
        self._drain()
        rev = self._revocations
        if self.caught_up and rev is not None and rev.version > self._broker_revocations:
            self._client.publish(f"{self.prefix}/revoked", json.dumps(rev.as_dict()), qos=1, retain=True)
            self._broker_revocations = rev.version
        counter = self.gallery.change_counter()
        if self.caught_up and (self._dirty or counter != self._counter):
            self._counter = counter
            self._dirty = not self._publish_local()
        wall = time.time() if now is None else now
        if self._client.is_connected() and wall - self._last_health >= self.cfg.health_every_s:
            self._last_health = wall
            self._client.publish(health_topic(self.prefix, self.keys.box), json.dumps(self._health(wall)), qos=1,
                                 retain=True)

    def _drain(self) -> None:
        while True:
            try:
                topic, payload = self._inbox.get_nowait()
            except queue.Empty:
                return
            self._receive(topic, payload)

    def _topic_item(self, topic: str) -> tuple[str, str] | None:
        head = f"{self.prefix}/item/"
        if not topic.startswith(head):
            return None
        kind, _, key = topic[len(head):].partition("/")
        return (kind, key) if kind in KINDS and key else None

    def _receive(self, topic: str, payload: bytes) -> None:
        if topic == f"{self.prefix}/revoked":
            self._receive_revocations(payload)
            return
        item = self._topic_item(topic)
        if item is None:
            self._refuse(f"message on {topic!a}: not an item topic")
            return
        try:
            record = open_record(payload, self.keys.root, self.keys.fleet, self.cfg.max_record_kib * 1024, item,
                                 self.revoked)
        except RecordRefused as exc:
            self._refuse(str(exc))
            self._heal(topic, item)
            return
        result = apply(self.gallery, record, self.embedder_version)
        what = f"{record.state.kind} {record.state.key!r} version {record.version} from {record.origin}"
        if result.outcome == "applied":
            self.stats.applied += 1
            self.stats.last_applied = utc_now()
            log.info("fleet: %s %s", "removed" if record.state.deleted else "applied", what)
        elif result.outcome == "same":
            self.stats.same += 1
        elif result.outcome == "stale":
            self.stats.stale += 1
            log.info("fleet: %s is older than this box's (%s); republishing this box's", what, result.why)
            if result.better is not None and self._client.is_connected():
                self._client.publish(topic, result.better, qos=1, retain=True)
                self.stats.republished += 1
        else:
            self._refuse(f"{what}: not applied: {result.why}")

    def _heal(self, topic: str, item: tuple[str, str]) -> None:
        """A refused message took the place of an item's retained record: put this box's good one back (at most
        once per `HEAL_EVERY_S` per item, so a flood of forgeries cannot make the box flood the broker)."""
        row = synced_item(self.gallery, *item)
        now = time.monotonic()
        if row is None or now - self._healed.get(item, -HEAL_EVERY_S) < HEAL_EVERY_S or not self._client.is_connected():
            return
        self._healed[item] = now
        self._client.publish(topic, row.raw, qos=1, retain=True)
        self.stats.republished += 1
        log.info("fleet: republished this box's record of %s %r over the refused one", item[0], item[1])

    def _refuse(self, why: str) -> None:
        self.stats.refused += 1
        now = time.monotonic()
        self._refused_log = [t for t in self._refused_log if now - t < 60.0]
        if len(self._refused_log) < LOG_REFUSED_PER_MIN:
            self._refused_log.append(now)
            log.warning("fleet: refused %s", why)

    def _publish_local(self) -> bool:
        """Publish every local change; True when all went out."""
        ok = True
        for change in local_changes(self.gallery, self.cfg.sync_crops):
            record = sign_record(self.keys, change.state, change.version, utc_now(), self.cfg.sync_crops)
            topic = item_topic(self.prefix, change.state.kind, change.state.key)
            info = self._client.publish(topic, record.raw, qos=1, retain=True)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                ok = False
                continue
            record_published(self.gallery, record)
            self.stats.published += 1
            log.info("fleet: published %s %s%r version %d", change.state.kind,
                     "removal of " if change.state.deleted else "", change.state.key, change.version)
        return ok

    def _health(self, wall: float | None = None) -> dict[str, Any]:
        wall = time.time() if wall is None else wall
        people = self.gallery.people()
        out: dict[str, Any] = {
            "box": self.keys.box, "fleet": self.keys.fleet, "online": True, "edged": __version__,
            "wall": round(wall, 3), "updated": datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "embedder": self.embedder_version,
            "gallery": {"people": len(people), "items": items_digest(self.gallery)},
            "sync": asdict(self.stats)}
        if self.health_extra is not None:
            try:
                out.update(self.health_extra())
            except Exception:  # the daemon's health must never stop the fleet's
                log.exception("fleet: health source failed")
        return out
