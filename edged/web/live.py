"""The web page's view of the daemon: a sink on the event stream plus a tap of processed frames.

`WebSink` stores every event in the gallery file (`edged.gallery.events`, with a small face thumbnail
encoded on the sink's own thread; retention applied at start and every `PURGE_EVERY` events), and keeps
the latest health line and what it knows of each track (confidence, liveness, the door's verdict). The
frame tap (`offer_frame`, on the frame loop's thread) only keeps a reference to the newest frame and its
tracked faces: drawing the boxes and the JPEG encoding happen in the web server's threads and only while
a browser watches, once per frame however many watch. A slow or absent browser costs the frame loop nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edged.config import WebConfig
from edged.errors import GalleryError
from edged.gallery import events as event_store
from edged.gallery.store import Gallery
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

log = logging.getLogger(__name__)

#: Events stored between two retention purges.
PURGE_EVERY = 200
#: Longest side of an event's face thumbnail (pixels).
THUMB_PX = 112
#: Live view frames wider than this are scaled down before encoding.
LIVE_MAX_WIDTH = 960
#: Tracks whose confidence, liveness and access verdict are remembered for the overlay.
NOTED_TRACKS = 256


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


@dataclass
class TrackNote:
    """What the page knows of a track beyond its box: the decision's confidence, liveness, the door's verdict."""

    confidence: float | None = None
    liveness: LivenessReport | None = None
    access: str | None = None


def _label(ob: Observation, note: TrackNote | None) -> tuple[str, tuple[int, int, int]]:
    name = ob.identity or "..."
    colour = (0, 200, 0) if ob.identity not in (None, "unknown") else (230, 160, 0) if ob.identity is None \
        else (220, 40, 40)
    text = f"#{ob.track_id} {name}"
    if note is not None:
        if note.confidence is not None and ob.identity not in (None, "unknown"):
            text += f" {note.confidence:.2f}"
        if note.liveness is not None:
            text += {True: " live", False: " SPOOF?", None: " liveness..."}[note.liveness.live]
            if note.liveness.live is False:
                colour = (220, 0, 220)
        if note.access is not None:
            text += f" [{note.access}]"
    return text, colour


def render_live(frame: Frame, observations: Sequence[Observation], notes: dict[int, TrackNote],
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
        text, colour = _label(ob, notes.get(ob.track_id))
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

    def __init__(self, device: str, camera: str, gallery_path: Path, cfg: WebConfig,
                 clock: Any = time.time, cameras: Sequence[str] = ()) -> None:
        """`camera`: the first (or only) camera; `cameras`: every camera of a daemon with several, each with its
        own live view."""
        self.device = device
        self.camera = camera
        self.cameras = tuple(cameras) or (camera,)
        self.gallery_path = gallery_path
        self.cfg = cfg
        self.jpeg_quality = cfg.live_jpeg_quality
        self._clock = clock
        self._gallery: Gallery | None = None
        self._since_purge = 0
        self._lock = threading.Lock()
        #: Per camera: its newest frame and faces, and that frame drawn and encoded.
        self._latest: dict[str, tuple[Frame, tuple[Observation, ...]]] = {}
        self._rendered: dict[str, tuple[int, bytes]] = {}
        self._render_lock = threading.Lock()
        #: (camera, track id) -> what the page shows beside the face (each camera numbers its tracks from 1).
        self._notes: dict[tuple[str, int], TrackNote] = {}
        self.health: Health | None = None
        self.people: tuple[str, ...] = ()
        self.started = clock()
        #: Events stored, live-view JPEGs encoded, and browsers watching now.
        self.stored = 0
        self.frames_encoded = 0
        self.watchers = 0
        self.server: Any = None  # the web server this sink feeds (set by edged.runtime.outputs.web_sink)

    # ---- the frame loop's thread ----

    def offer_frame(self, frame: Frame, observations: Sequence[Observation], camera: str = "") -> None:
        self._latest[camera or self.camera] = (frame, tuple(observations))

    # ---- the sink's thread ----

    def handle(self, item: StreamItem) -> None:
        camera = getattr(item, "camera", "") or self.camera
        if isinstance(item, IdentityEvent):
            if item.kind == EventKind.RECOGNIZED:
                self._note(camera, item.track_id).confidence = item.confidence
            if item.resumed:
                return
            thumb = (face_thumbnail(item) if self.cfg.event_thumbnails and item.kind != EventKind.LEFT else None)
            self._store(str(item.kind), event_payload(item, self.device, self.camera), item.wall, item.person, thumb,
                        item.camera or self.camera)
        elif isinstance(item, AccessDecision):
            if item.track_id is not None:
                self._note(camera, item.track_id).access = str(item.outcome)
            self._store("access", access_payload(item, self.device), item.wall, item.person, None, item.camera)
        elif isinstance(item, LivenessReport):
            self._note(camera, item.track_id).liveness = item
        elif isinstance(item, Health):
            self.health = item
        elif isinstance(item, PeopleChanged):
            self.people = tuple(p.name for p in item.people)

    def _note(self, camera: str, track_id: int) -> TrackNote:
        key = (camera, track_id)
        with self._lock:
            note = self._notes.get(key)
            if note is None:
                note = self._notes[key] = TrackNote()
                while len(self._notes) > NOTED_TRACKS:
                    self._notes.pop(next(iter(self._notes)))
            return note

    def _store(self, kind: str, payload: dict[str, Any], wall: float, person: str | None,
               thumb: bytes | None, camera: str = "") -> None:
        if self._gallery is None:
            return
        if self._since_purge >= PURGE_EVERY:
            self._purge()
        event_store.add(self._gallery, kind, person, camera or self.camera, wall, payload, thumb)
        self.stored += 1
        self._since_purge += 1

    def _purge(self) -> None:
        assert self._gallery is not None
        self._since_purge = 0
        try:
            gone = event_store.purge(self._gallery, self.cfg.events_retention_days, self.cfg.events_max, self._clock())
        except GalleryError as exc:
            log.warning("web: event retention skipped: %s", exc)
            return
        if gone:
            log.info("web: deleted %d event(s) beyond web.events_max / web.events_retention_days", gone)

    def start(self) -> None:
        self._gallery = Gallery(self.gallery_path, create=False)
        self._purge()
        if self.server is not None:
            self.server.start()

    def close(self, timeout: float) -> None:
        if self.server is not None:
            self.server.stop(timeout)
        if self._gallery is not None:
            self._gallery.close()
            self._gallery = None

    @property
    def ready(self) -> bool:
        return self.server is None or self.server.started

    def stats(self) -> dict[str, object]:
        return {"events_stored": self.stored, "live_frames_encoded": self.frames_encoded}

    # ---- the web server's threads ----

    def _notes_of(self, camera: str) -> dict[int, TrackNote]:
        with self._lock:
            return {track: note for (cam, track), note in self._notes.items() if cam == camera}

    def live_jpeg(self, camera: str | None = None) -> tuple[int, bytes] | None:
        """A camera's newest frame (default: the first camera) drawn and encoded (cached per frame: many watchers,
        one encoding)."""
        camera = camera or self.camera
        latest = self._latest.get(camera)
        if latest is None:
            return None
        frame, observations = latest
        with self._render_lock:
            rendered = self._rendered.get(camera)
            if rendered is not None and rendered[0] == frame.index:
                return rendered
            rendered = (frame.index, render_live(frame, observations, self._notes_of(camera), self.jpeg_quality))
            self._rendered[camera] = rendered
            self.frames_encoded += 1
            return rendered

    def tracks(self, camera: str | None = None) -> list[dict[str, Any]]:
        """The faces on a camera's newest frame (default: the first camera), for the page's table and the API."""
        camera = camera or self.camera
        latest = self._latest.get(camera)
        if latest is None:
            return []
        notes = self._notes_of(camera)
        out = []
        for ob in latest[1]:
            note = notes.get(ob.track_id, TrackNote())
            out.append({"track_id": ob.track_id, "identity": ob.identity, "box": ob.box.as_list(),
                        "confidence": None if note.confidence is None else round(note.confidence, 3),
                        "liveness": None if note.liveness is None else note.liveness.as_dict(),
                        "access": note.access})
        return out
