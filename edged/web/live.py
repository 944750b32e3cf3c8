"""The web page's view of the daemon: a sink on the event stream plus a tap of processed frames.

`WebSink` keeps the recent events (with a small face thumbnail, encoded on the sink's own thread), the
latest health line and the liveness of each track. The frame tap (`offer_frame`, on the frame loop's
thread) only keeps a reference to the newest frame and its tracked faces: drawing the boxes and the JPEG
encoding happen in the web server's threads and only while a browser watches, once per frame however many
watch. A slow or absent browser costs the frame loop nothing.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from edged.runtime.mqtt import access_payload, event_payload
from edged.runtime.sinks import IMAGE_QUEUE_MAX, EventSink
from edged.types import (
    AccessDecision,
    EventKind,
    Frame,
    Health,
    IdentityEvent,
    LivenessReport,
    Observation,
    PeopleChanged,
    StreamItem,
)
from edged.vision.imageio import encode_jpeg

#: Longest side of an event's face thumbnail (pixels).
THUMB_PX = 112
#: Live view frames wider than this are scaled down before encoding.
LIVE_MAX_WIDTH = 960
#: Tracks whose liveness is remembered for the overlay.
LIVENESS_TRACKS = 256


@dataclass(frozen=True)
class EventView:
    """One event as the page lists it: the MQTT payload fields, an id and the face thumbnail."""

    id: int
    kind: str
    payload: dict[str, Any]
    wall: float
    person: str | None
    thumb: bytes | None = field(default=None, repr=False)


def face_thumbnail(event: IdentityEvent, quality: int = 80) -> bytes | None:
    """A JPEG of the event's face with a margin, at most THUMB_PX on its longer side (None without a frame)."""
    image = event.image
    if image is None:
        return None
    h, w = image.shape[:2]
    b = event.box.expanded(0.25, w, h)
    face = image[b.top:b.bottom, b.left:b.right]
    if face.size == 0:
        return None
    scale = THUMB_PX / max(face.shape[:2])
    if scale < 1.0:
        face = cv2.resize(face, (max(1, round(face.shape[1] * scale)), max(1, round(face.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
    return encode_jpeg(np.ascontiguousarray(face), quality)


def _label(ob: Observation, live: LivenessReport | None) -> tuple[str, tuple[int, int, int]]:
    name = ob.identity or "..."
    colour = (0, 200, 0) if ob.identity not in (None, "unknown") else (230, 160, 0) if ob.identity is None \
        else (220, 40, 40)
    text = f"#{ob.track_id} {name}"
    if live is not None:
        text += {True: " live", False: " SPOOF?", None: " liveness..."}[live.live]
        if live.live is False:
            colour = (220, 0, 220)
    return text, colour


def render_live(frame: Frame, observations: Sequence[Observation], liveness: dict[int, LivenessReport],
                quality: int) -> bytes:
    """The frame with a box and a label per tracked face, as JPEG (scaled to LIVE_MAX_WIDTH)."""
    image = frame.image
    scale = min(1.0, LIVE_MAX_WIDTH / image.shape[1])
    if scale < 1.0:
        out = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                         interpolation=cv2.INTER_AREA)
    else:
        out = image.copy()
    for ob in observations:
        text, colour = _label(ob, liveness.get(ob.track_id))
        b = ob.box
        p1 = (round(b.left * scale), round(b.top * scale))
        p2 = (round(b.right * scale), round(b.bottom * scale))
        cv2.rectangle(out, p1, p2, colour, 2)
        cv2.putText(out, text, (p1[0], max(12, p1[1] - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    return encode_jpeg(out, quality)


class WebSink(EventSink):
    """Recent events, health and the newest frame for the page (see the module docstring)."""

    name = "web"
    wants_images = True
    wants_frames = True
    queue_max = IMAGE_QUEUE_MAX

    def __init__(self, device: str, camera: str, events_max: int = 500, jpeg_quality: int = 70) -> None:
        self.device = device
        self.camera = camera
        self.jpeg_quality = jpeg_quality
        self._events: deque[EventView] = deque(maxlen=events_max)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._latest: tuple[Frame, tuple[Observation, ...]] | None = None
        self._rendered: tuple[int, bytes] | None = None
        self._render_lock = threading.Lock()
        self._liveness: dict[int, LivenessReport] = {}
        self.health: Health | None = None
        self.people: tuple[str, ...] = ()
        self.started = time.time()
        #: Live-view JPEGs encoded, and browsers watching now.
        self.frames_encoded = 0
        self.watchers = 0
        self.server: Any = None  # the web server this sink feeds (set by edged.web.server)

    # ---- the frame loop's thread ----

    def offer_frame(self, frame: Frame, observations: Sequence[Observation]) -> None:
        self._latest = (frame, tuple(observations))

    # ---- the sink's thread ----

    def handle(self, item: StreamItem) -> None:
        if isinstance(item, IdentityEvent):
            if item.resumed:
                return
            thumb = face_thumbnail(item) if item.kind != EventKind.LEFT else None
            self._add(str(item.kind), event_payload(item, self.device, self.camera), item.wall, item.person, thumb)
        elif isinstance(item, AccessDecision):
            self._add("access", access_payload(item, self.device), item.wall, item.person, None)
        elif isinstance(item, LivenessReport):
            with self._lock:
                self._liveness[item.track_id] = item
                while len(self._liveness) > LIVENESS_TRACKS:
                    self._liveness.pop(next(iter(self._liveness)))
        elif isinstance(item, Health):
            self.health = item
        elif isinstance(item, PeopleChanged):
            self.people = tuple(p.name for p in item.people)

    def _add(self, kind: str, payload: dict[str, Any], wall: float, person: str | None, thumb: bytes | None) -> None:
        with self._lock:
            self._events.append(EventView(next(self._ids), kind, payload, wall, person, thumb))

    def start(self) -> None:
        if self.server is not None:
            self.server.start()

    def close(self, timeout: float) -> None:
        if self.server is not None:
            self.server.stop(timeout)

    @property
    def ready(self) -> bool:
        return self.server is None or self.server.started

    def stats(self) -> dict[str, object]:
        return {"events": len(self._events), "live_frames_encoded": self.frames_encoded}

    # ---- the web server's threads ----

    def events(self, person: str | None = None, kind: str | None = None, since: float | None = None,
               limit: int = 200) -> list[EventView]:
        """Newest first, filtered."""
        with self._lock:
            found = list(self._events)
        out = [e for e in reversed(found) if (person is None or e.person == person)
               and (kind is None or e.kind == kind) and (since is None or e.wall >= since)]
        return out[:limit]

    def event(self, event_id: int) -> EventView | None:
        with self._lock:
            return next((e for e in self._events if e.id == event_id), None)

    def live_jpeg(self) -> tuple[int, bytes] | None:
        """The newest frame drawn and encoded (cached per frame: many watchers, one encoding)."""
        latest = self._latest
        if latest is None:
            return None
        frame, observations = latest
        with self._render_lock:
            if self._rendered is not None and self._rendered[0] == frame.index:
                return self._rendered
            with self._lock:
                liveness = dict(self._liveness)
            self._rendered = (frame.index, render_live(frame, observations, liveness, self.jpeg_quality))
            self.frames_encoded += 1
            return self._rendered

    def tracks(self) -> list[dict[str, Any]]:
        """The faces on the newest frame (for the page's table and the API)."""
        latest = self._latest
        if latest is None:
            return []
        with self._lock:
            liveness = dict(self._liveness)
        return [{"track_id": ob.track_id, "identity": ob.identity, "box": ob.box.as_list(),
                 "liveness": None if ob.track_id not in liveness else liveness[ob.track_id].as_dict()}
                for ob in latest[1]]
