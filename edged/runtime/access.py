"""Door access: one decision per track, with its reasons; a lockout after failed attempts; the lock's actions.

A sink on the event stream. For every track at a door's camera it decides once:

* `recognized` -> **granted** when a rule (`access.rules`) lets that person in at that door now (weekday and
  time windows in `access.timezone`), the track was seen for `min_track_s` with `min_votes` agreeing
  recognitions, and, where the rule requires it, the track's liveness verdict says live (it waits up to
  `access.liveness_wait_s` for one); otherwise **denied** naming every reason (not allowed now, no rule,
  liveness failed / not decided, too short, too few votes, locked out);
* `unknown` -> **denied** ("unknown", with why the face was not named);
* one grant per person and door per `access.cooldown_s` (a person standing at the door is not re-granted).

Denials that look like an attack (a near-match: unknown but within the threshold of someone; failed
liveness) count towards the **lockout** (one attempt seen by two cameras of the door counts once,
`SAME_ATTEMPT_S`): `lockout.attempts` of them at one door within `lockout.window_s` lock the door for
`lockout.base_s`, doubling with every further one (up to `lockout.max_s`), and raise an
**alarm**; the state is stored in the gallery database (`edged.gallery.audit`) and survives a restart.

A grant **acts**: it publishes the door's MQTT command (not queued: a door must never open late, so it is
sent only while the broker is connected) and/or pulses its relay through libgpiod (`GpiodRelay`; tests inject
a `Relay`). Decisions go back into the stream as `AccessDecision` items: the MQTT sink publishes them on
`edged/<device>/access` (and Home Assistant's access event entity), the audit sink records them.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

import numpy as np

from edged.config import DAYS, AccessConfig, AccessRule, Config, GpioAction, GpioInput
from edged.errors import ConfigError, GalleryError
from edged.gallery import audit
from edged.gallery.store import Gallery
from edged.runtime.sinks import EventSink
from edged.types import (
    AccessDecision,
    AccessOutcome,
    EventKind,
    Health,
    IdentityEvent,
    LivenessReport,
    StreamItem,
    UnknownReason,
)

log = logging.getLogger(__name__)

#: Tracks remembered (decided, liveness verdicts) at most; a track taken over never sees its `left`.
MAX_TRACKS = 4096
#: A failure at a door's other camera for the same person (or near-match candidate) within this many seconds is
#: the same attempt, seen twice: it is denied on both cameras but counts once towards the lockout.
SAME_ATTEMPT_S = 10.0


def config_version(cfg: Config) -> str:
    """A short fingerprint of the whole configuration (recorded with every audit row)."""
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16]


def check_people(cfg: AccessConfig, enrolled: set[str]) -> None:
    """Every person a rule or group names must be enrolled (ConfigError naming the first who is not)."""
    for group, members in cfg.groups.items():
        for person in members:
            if person not in enrolled:
                raise ConfigError(f"access.groups.{group}: {person!r} is not enrolled in the gallery")
    for i, rule in enumerate(cfg.rules):
        for person in rule.people:
            if person not in enrolled:
                raise ConfigError(f"access.rules.{i} ({rule.name}): {person!r} is not enrolled in the gallery")


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


class Policy:
    """Who may enter where and when (pure; the time is passed in)."""

    def __init__(self, cfg: AccessConfig, camera: str | Mapping[str, str]) -> None:
        """`camera`: the one camera (doors listing no camera are its doors), or camera name -> door."""
        self.cfg = cfg
        self.tz = ZoneInfo(cfg.timezone)
        self._door_of = (dict(camera) if not isinstance(camera, str) else
                         {c: door for door, d in cfg.doors.items() for c in (d.cameras or [camera])})

    def door_of(self, camera: str) -> str | None:
        return self._door_of.get(camera)

    def _names(self, rule: AccessRule) -> set[str]:
        return set(rule.people) | {p for g in rule.groups for p in self.cfg.groups.get(g, [])}

    def rules_for(self, person: str, door: str) -> list[AccessRule]:
        return [r for r in self.cfg.rules if person in self._names(r) and (not r.doors or door in r.doors)]

    def open_now(self, rule: AccessRule, wall: float) -> bool:
        if not rule.windows:
            return True
        local = datetime.fromtimestamp(wall, self.tz)
        day, minute = DAYS[local.weekday()], local.hour * 60 + local.minute
        return any((not w.days or day in w.days) and _minutes(w.start) <= minute < _minutes(w.end)
                   for w in rule.windows)


@dataclass
class Lockout:
    """One door's failed attempts and cool-down (pure; epoch seconds passed in)."""

    attempts: int
    window_s: float
    base_s: float
    max_s: float
    failures: int = 0
    window_start: float | None = None
    level: int = 0
    locked_until: float | None = None

    def seconds_left(self, now: float) -> float:
        return max(0.0, (self.locked_until or 0.0) - now)

    def failure(self, now: float) -> bool:
        """Count one failed attempt; True when it starts (or extends) a lockout (raise the alarm)."""
        if self.window_start is None or now - self.window_start > self.window_s:
            self.window_start, self.failures = now, 0
        self.failures += 1
        if self.failures < self.attempts:
            return False
        self.locked_until = now + min(self.max_s, self.base_s * 2.0 ** self.level)
        self.level += 1
        return True

    def success(self) -> None:
        self.failures, self.window_start, self.level, self.locked_until = 0, None, 0, None

    def state(self, door: str) -> audit.DoorState:
        return audit.DoorState(door, self.failures, self.window_start, self.level, self.locked_until)

    def restore(self, state: audit.DoorState) -> None:
        self.failures, self.window_start = state.failures, state.window_start
        self.level, self.locked_until = state.level, state.locked_until


class Relay(Protocol):
    """An output line driving a door relay."""

    def pulse(self, seconds: float) -> None: ...


class Contact(Protocol):
    """A door-contact input."""

    def closed(self) -> bool: ...


class GpiodRelay:
    """A relay on a GPIO line, through libgpiod v2 (`gpiod` Python binding); the line is requested per pulse."""

    def __init__(self, pin: GpioAction) -> None:
        self.pin = pin

    def pulse(self, seconds: float) -> None:
        import gpiod
        from gpiod.line import Direction, Value

        settings = gpiod.LineSettings(direction=Direction.OUTPUT, active_low=self.pin.active_low,
                                      output_value=Value.INACTIVE)
        with gpiod.request_lines(self.pin.chip, consumer="edged", config={self.pin.line: settings}) as request:
            request.set_value(self.pin.line, Value.ACTIVE)
            time.sleep(seconds)
            request.set_value(self.pin.line, Value.INACTIVE)


class GpiodContact:
    def __init__(self, pin: GpioInput) -> None:
        self.pin = pin

    def closed(self) -> bool:
        import gpiod
        from gpiod.line import Direction, Value

        settings = gpiod.LineSettings(direction=Direction.INPUT, active_low=self.pin.active_low)
        with gpiod.request_lines(self.pin.chip, consumer="edged", config={self.pin.line: settings}) as request:
            return request.get_value(self.pin.line) == Value.ACTIVE


class CommandSender(Protocol):
    """Publishes a lock command now or not at all (`MqttPublisher.publish_command`)."""

    def publish_command(self, topic: str, payload: str, qos: int) -> bool: ...


@dataclass
class _Pending:
    event: IdentityEvent
    door: str
    since: float  # monotonic clock when recognised
    crop: np.ndarray | None = field(default=None, repr=False)


class AccessController(EventSink):
    """Decides access per track and acts; decisions go back into the stream through `emit`."""

    name = "access"

    def __init__(self, cfg: Config, gallery_path: Path, emit: Callable[[StreamItem], None],
                 commands: CommandSender | None = None, relays: Mapping[str, Relay] | None = None,
                 contacts: Mapping[str, Contact] | None = None, clock: Callable[[], float] = time.monotonic,
                 liveness_enabled: bool = False) -> None:
        self.cfg = cfg.access
        doors = {c.name: cfg.entrance_of(c.name) for c in cfg.cameras}
        self.policy = Policy(cfg.access, {c: d for c, d in doors.items() if d in cfg.access.doors}
                             if cfg.multi_camera else cfg.camera.name)
        self.camera = cfg.camera.name
        self.gallery_path = gallery_path
        self._emit = emit
        self._commands = commands
        self._relays = dict(relays) if relays is not None else {
            door: GpiodRelay(d.unlock_gpio) for door, d in cfg.access.doors.items() if d.unlock_gpio is not None}
        self._contacts = dict(contacts) if contacts is not None else {
            door: GpiodContact(d.contact) for door, d in cfg.access.doors.items() if d.contact is not None}
        self._clock = clock
        self.liveness_enabled = liveness_enabled
        self.wants_images = True  # the face of a decision, for the audit log
        lo = cfg.access.lockout
        self.lockouts = {door: Lockout(lo.attempts, lo.window_s, lo.base_s, lo.max_s) for door in cfg.access.doors}
        #: Keyed by (camera, track id): each camera numbers its own tracks.
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._liveness: dict[tuple[str, int], LivenessReport] = {}
        #: Tracks decided (insertion order; bounded: a taken-over track never sees its `left`).
        self._decided: dict[tuple[str, int], None] = {}
        self._granted: dict[tuple[str, str], float] = {}  # (person, door) -> wall time of the last grant
        #: (door, who) -> (camera, wall time) of the last failure counted towards the lockout
        self._failed: dict[tuple[str, str | None], tuple[str, float]] = {}
        self._gallery: Gallery | None = None
        self._lock = threading.Lock()
        self.counts = {"granted": 0, "denied": 0, "alarm": 0}

    # ---- sink ----

    def start(self) -> None:
        self._gallery = Gallery(self.gallery_path, create=False)
        for door, lockout in self.lockouts.items():
            state = audit.load_state(self._gallery, door)
            if state is not None:
                lockout.restore(state)
                if lockout.seconds_left(time.time()) > 0:
                    log.warning("access: door %s is locked out for %.0f s more (from before the restart)", door,
                                lockout.seconds_left(time.time()))

    def close(self, timeout: float) -> None:
        if self._gallery is not None:
            self._gallery.close()
            self._gallery = None

    def stats(self) -> dict[str, object]:
        return dict(self.counts)

    def handle(self, item: StreamItem) -> None:
        if isinstance(item, IdentityEvent):
            self._on_event(item)
        elif isinstance(item, LivenessReport):
            key = (item.camera or self.camera, item.track_id)
            self._liveness[key] = item
            while len(self._liveness) > MAX_TRACKS:
                del self._liveness[next(iter(self._liveness))]
            if key in self._pending and item.live is not None:
                self._decide(self._pending.pop(key))
        elif isinstance(item, Health):
            self._expire()

    # ---- decisions ----

    def _key(self, event: IdentityEvent) -> tuple[str, int]:
        return (event.camera or self.camera, event.track_id)

    def _mark_decided(self, track: tuple[str, int]) -> None:
        self._decided[track] = None
        while len(self._decided) > MAX_TRACKS:
            del self._decided[next(iter(self._decided))]

    def _on_event(self, event: IdentityEvent) -> None:
        door = self.policy.door_of(event.camera or self.camera)
        if door is None:
            return
        track = self._key(event)
        if event.kind == EventKind.LEFT:
            pending = self._pending.pop(track, None)
            if pending is not None:
                self._decide(pending, forced=True)
            self._liveness.pop(track, None)
            self._decided.pop(track, None)
            return
        if track in self._decided:
            return
        crop = _face(event)
        if event.kind == EventKind.UNKNOWN:
            why = "unknown" + (f" ({event.reason})" if event.reason is not None else "")
            near = event.reason == UnknownReason.AMBIGUOUS
            self._publish(AccessOutcome.DENIED, door, event, [why], count_failure=near, crop=crop)
            return
        if event.kind == EventKind.RECOGNIZED:
            self._expire()
            self._decide(_Pending(event, door, self._clock(), crop))

    def _expire(self) -> None:
        now = self._clock()
        for track, pending in list(self._pending.items()):
            if now - pending.since >= self.cfg.liveness_wait_s:
                del self._pending[track]
                self._decide(pending, forced=True)

    def _decide(self, pending: _Pending, forced: bool = False) -> None:
        """Grant or deny a recognized track; wait (keep it pending) for a liveness verdict a rule needs."""
        event, door = pending.event, pending.door
        person = event.person or ""
        rules = self.policy.rules_for(person, door)
        open_rules = [r for r in rules if self.policy.open_now(r, event.wall)]
        reasons: list[str] = []
        if not rules:
            reasons.append(f"not allowed: no rule lets {person} in at {door}")
        elif not open_rules:
            reasons.append(f"not allowed now: {', '.join(sorted(r.name for r in rules))} closed at this time")
        liveness = self._liveness.get(self._key(event))
        needs_liveness = all(r.require_liveness for r in open_rules)  # one rule without it is enough
        if open_rules and needs_liveness:
            if not self.liveness_enabled:
                reasons.append("liveness required but liveness.enabled is false")
            elif liveness is None or liveness.live is None:
                if not forced:
                    self._pending[self._key(event)] = pending
                    return
                reasons.append("liveness: no verdict in time")
            elif not liveness.live:
                reasons.append("liveness failed: " + "; ".join(liveness.reasons or ("not live",)))
        if open_rules:
            best = max(open_rules, key=lambda r: (not r.require_liveness, -r.min_track_s, -r.min_votes))
            seen = event.t - (event.first_t if event.first_t is not None else event.t)
            if seen < best.min_track_s:
                reasons.append(f"track too short ({seen:.1f} s < {best.min_track_s:g} s)")
            if event.votes < best.min_votes:
                reasons.append(f"too few agreeing recognitions ({event.votes} < {best.min_votes})")
        lockout = self.lockouts[door]
        left = lockout.seconds_left(event.wall)
        if left > 0:
            reasons.append(f"locked out ({left:.0f} s left)")
        if reasons:
            failure = any(r.startswith("liveness failed") for r in reasons)
            self._publish(AccessOutcome.DENIED, door, event, reasons, count_failure=failure, crop=pending.crop,
                          liveness=liveness)
            return
        last = self._granted.get((person, door))
        if last is not None and event.wall - last < self.cfg.cooldown_s:
            self._mark_decided(self._key(event))  # already let in a moment ago: nothing to do
            return
        self._granted[(person, door)] = event.wall
        rule = open_rules[0]
        self._publish(AccessOutcome.GRANTED, door, event, [f"allowed by rule {rule.name!r}"], crop=pending.crop,
                      liveness=liveness, act=True)

    def _publish(self, outcome: AccessOutcome, door: str, event: IdentityEvent, reasons: list[str], *,
                 count_failure: bool = False, crop: np.ndarray | None = None, liveness: LivenessReport | None = None,
                 act: bool = False) -> None:
        self._mark_decided(self._key(event))
        actions = self._act(door) if act else []
        lockout = self.lockouts[door]
        if outcome == AccessOutcome.GRANTED:
            lockout.success()
        decision = AccessDecision(outcome, door, event.camera or self.camera, event.person, event.track_id,
                                  tuple(reasons),
                                  float(event.distance), float(event.confidence), liveness, tuple(actions), event.t,
                                  event.wall, crop)
        self.counts[str(outcome)] += 1
        log.info("access %s at %s: %s (%s)", outcome, door, event.person or "-", "; ".join(reasons))
        self._emit(decision)
        if count_failure and self._seen_by_another_camera(door, event):
            count_failure = False  # one attempt, seen by two cameras of the door: it counts once
        alarm = count_failure and lockout.failure(event.wall)
        if alarm:
            self.counts["alarm"] += 1
            why = (f"lockout: {lockout.failures} denied attempts within {lockout.window_s:g} s; "
                   f"locked for {lockout.seconds_left(event.wall):.0f} s")
            log.warning("access alarm at %s: %s", door, why)
            self._emit(replace(decision, outcome=AccessOutcome.ALARM, reasons=(why,), actions=()))
        if count_failure or outcome == AccessOutcome.GRANTED:
            self._save(door)

    def _seen_by_another_camera(self, door: str, event: IdentityEvent) -> bool:
        """Whether this failure is one already counted at the door from another of its cameras (the same person
        or near-match candidate within `SAME_ATTEMPT_S`); records it otherwise."""
        camera = event.camera or self.camera
        key = (door, event.person or event.candidate)
        last = self._failed.get(key)
        if last is not None and last[0] != camera and abs(event.wall - last[1]) <= SAME_ATTEMPT_S:
            return True
        self._failed[key] = (camera, event.wall)
        while len(self._failed) > MAX_TRACKS:
            del self._failed[next(iter(self._failed))]
        return False

    def _save(self, door: str) -> None:
        if self._gallery is None:
            return
        try:
            audit.save_state(self._gallery, self.lockouts[door].state(door))
        except GalleryError as exc:  # the decision stands; the state is kept in memory
            log.error("access: cannot store the lockout state of %s: %s", door, exc)

    def _act(self, door: str) -> list[str]:
        """Open the door: the MQTT command (only while connected) and/or the relay pulse (not while it is open)."""
        d = self.cfg.doors[door]
        done: list[str] = []
        contact = self._contacts.get(door)
        if contact is not None:
            try:
                if not contact.closed():
                    return ["door already open: nothing sent"]
            except (OSError, ImportError) as exc:
                done.append(f"door contact unreadable ({exc})")
        if d.unlock_mqtt is not None:
            sent = self._commands is not None and self._commands.publish_command(
                d.unlock_mqtt.topic, d.unlock_mqtt.payload, d.unlock_mqtt.qos)
            done.append(f"mqtt {d.unlock_mqtt.topic}" if sent else
                        f"mqtt {d.unlock_mqtt.topic} NOT sent: broker not connected")
        relay = self._relays.get(door)
        if relay is not None and d.unlock_gpio is not None:
            try:
                relay.pulse(d.unlock_gpio.pulse_s)
                done.append(f"gpio {d.unlock_gpio.chip}:{d.unlock_gpio.line} {d.unlock_gpio.pulse_s:g} s")
            except (OSError, ImportError) as exc:
                done.append(f"gpio {d.unlock_gpio.chip}:{d.unlock_gpio.line} failed ({exc})")
        return done


def _face(event: IdentityEvent) -> np.ndarray | None:
    """The face of an event with a margin, from its frame (None without one)."""
    if event.image is None:
        return None
    h, w = event.image.shape[:2]
    b = event.box.expanded(0.25, w, h)
    return np.ascontiguousarray(event.image[b.top:b.bottom, b.left:b.right])
