"""Several cameras in one daemon: what joins their outputs (pure; wall-clock seconds passed in).

* `PresenceMerge`: a person is present while at least one camera has them present, absent when the last camera
  lets them go (each camera's pipeline keeps its own presence timers on its own timeline).
* `DoorVisits`: cameras of one entrance (`camera.door`, `Config.entrance_of`) make one visit of a person: the first
  camera's `recognized` opens it and is published; the other cameras' recognitions of the person join it (marked
  `resumed`: the door still decides per track, nothing new is announced); the visit's `left` is published once,
  `tracking.door_visit_s` after its last track left, carrying every camera that saw the visit. A camera that
  recognizes the person within that window joins the visit instead of starting a new one. Visit ids are renumbered
  so that they are unique across cameras.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from edged.types import EventKind, IdentityEvent, PresenceChange, PresenceState


class PresenceMerge:
    """Per-camera presence changes -> the person's presence over every camera."""

    def __init__(self) -> None:
        self._at: dict[str, set[str]] = {}  # person -> cameras where they are present

    def update(self, camera: str, change: PresenceChange) -> PresenceChange | None:
        """The merged change (None: nothing changes over all cameras)."""
        cameras = self._at.setdefault(change.person, set())
        was = bool(cameras)
        if change.state == PresenceState.PRESENT:
            cameras.add(camera)
        else:
            cameras.discard(camera)
        if not cameras:
            del self._at[change.person]
        return change if bool(cameras) != was else None


@dataclass
class _Visit:
    id: int
    cameras: list[str]
    #: (camera, local visit id) of the cameras' own visits joined into this one.
    parts: set[tuple[str, int]] = field(default_factory=set)
    #: The `left` of the visit's last part, held until `due` (None: a part is still open).
    pending_left: IdentityEvent | None = None
    left_at: float = 0.0


class DoorVisits:
    """One visit per person and entrance over the entrance's cameras (see the module)."""

    def __init__(self, entrance_of: dict[str, str], window_s: float) -> None:
        """`entrance_of`: camera name -> its entrance; `window_s`: how long a visit waits for another camera after
        its last track left (0: join only while a part is open)."""
        self.entrance_of = entrance_of
        self.window_s = window_s
        self._shared = {e for e in entrance_of.values() if list(entrance_of.values()).count(e) > 1}
        self._visits: dict[tuple[str, str], _Visit] = {}  # (entrance, person) -> open or pending visit
        self._ids: dict[tuple[str, int], int] = {}  # (camera, local visit id) -> visit id (one-camera entrances)
        self._next = 0
        #: `recognized` events that joined a visit another camera had opened.
        self.joined = 0

    def _new_id(self) -> int:
        self._next += 1
        return self._next

    def route(self, event: IdentityEvent) -> list[IdentityEvent]:
        """The events to emit for one camera's event (stamped with its camera)."""
        entrance = self.entrance_of.get(event.camera, event.camera)
        if entrance not in self._shared or event.person is None or event.kind == EventKind.UNKNOWN:
            return [self._renumbered(event)]
        key, part = (entrance, event.person), (event.camera, event.visit_id)
        visit = self._visits.get(key)
        if event.kind == EventKind.RECOGNIZED:
            if visit is None:
                visit = self._visits[key] = _Visit(self._new_id(), [event.camera])
                visit.parts.add(part)
                return [replace(event, visit_id=visit.id, cameras=(event.camera,))]
            joins = part not in visit.parts and not event.resumed
            visit.parts.add(part)
            visit.pending_left = None
            if event.camera not in visit.cameras:
                visit.cameras.append(event.camera)
            self.joined += joins
            return [replace(event, visit_id=visit.id, cameras=tuple(visit.cameras), resumed=True if joins
                            else event.resumed)]
        if event.kind == EventKind.LEFT and visit is not None and part in visit.parts:
            visit.parts.discard(part)
            if visit.parts:  # another camera still sees the person: the visit goes on
                return [replace(event, visit_id=visit.id, cameras=tuple(visit.cameras), resumed=True)]
            visit.pending_left = replace(event, visit_id=visit.id, cameras=tuple(visit.cameras))
            visit.left_at = event.wall
            return self.due(event.wall) if self.window_s <= 0 else []
        return [self._renumbered(event)]

    def due(self, wall: float) -> list[IdentityEvent]:
        """The held `left` events whose window has passed."""
        out = []
        for key, visit in list(self._visits.items()):
            if visit.pending_left is not None and wall - visit.left_at >= self.window_s:
                out.append(visit.pending_left)
                del self._visits[key]
        return out

    def flush(self) -> list[IdentityEvent]:
        """Every held `left` now (the end of the run)."""
        return self.due(float("inf"))

    def _renumbered(self, event: IdentityEvent) -> IdentityEvent:
        if not event.visit_id:
            return event
        key = (event.camera, event.visit_id)
        if key not in self._ids:
            self._ids[key] = self._new_id()
        visit = self._ids.pop(key) if event.kind == EventKind.LEFT else self._ids[key]
        return replace(event, visit_id=visit, cameras=(event.camera,))
