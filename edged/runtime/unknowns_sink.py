"""The unknown-visitor store as a sink: each unknown track's best views go into the gallery file for review.

An `unknown` event carries the track's best face samples (embedding + canonical crop, chosen by size and
sharpness in the pipeline); this sink stores them as one visit (`edged.gallery.unknowns.add_visit`), moves
the visit's `last_seen` when the track's `left` event arrives, withdraws it when the same track is recognized
later (a better view named an enrolled person), and applies retention
(`unknowns.retention_days`, `unknowns.max_visits`) at start and every `PURGE_EVERY_S`. Biometric data: the
crops are kept only with `unknowns.keep_crops`, in the 0600 gallery file; `edged unknowns purge` and the
retention limits delete them. A write that fails (gallery busy, disk full) is logged and counted, never fatal.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from edged.config import UnknownsConfig
from edged.errors import GalleryError
from edged.gallery import unknowns
from edged.gallery.enroll import CROP_FORMAT
from edged.gallery.store import Gallery
from edged.runtime.sinks import EventSink
from edged.types import EventKind, IdentityEvent, StreamItem
from edged.vision.imageio import encode_png

log = logging.getLogger(__name__)

#: Seconds between retention passes while running.
PURGE_EVERY_S = 3600.0


class UnknownsSink(EventSink):
    """Stores unknown visits in the gallery database (its own SQLite connection, on the sink's thread)."""

    name = "unknowns"

    def __init__(self, gallery_path: Path, cfg: UnknownsConfig, camera: str, embedder: str, embedder_version: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.gallery_path = gallery_path
        self.cfg = cfg
        self.camera = camera
        self.embedder = embedder
        self.embedder_version = embedder_version
        self._clock = clock
        self._gallery: Gallery | None = None
        self._visits: dict[tuple[str, int], int] = {}  # (camera, track id) -> visit id
        self._next_purge = 0.0
        self.stored = 0
        self.purged = 0
        self.withdrawn = 0

    def start(self) -> None:
        self._gallery = Gallery(self.gallery_path, create=False)

    def handle(self, item: StreamItem) -> None:
        if not isinstance(item, IdentityEvent) or self._gallery is None:
            return
        if self._clock() >= self._next_purge:
            self._next_purge = self._clock() + PURGE_EVERY_S
            removed = unknowns.purge(self._gallery, self.cfg.retention_days, self.cfg.max_visits)
            self.purged += removed
            if removed:
                log.info("unknowns: retention removed %d visit(s)", removed)
        if item.kind == EventKind.UNKNOWN and item.samples:
            self._store(item)
        elif item.kind == EventKind.RECOGNIZED and self._key(item) in self._visits:
            # the visitor turned out to be enrolled after all (a better view came): not a stranger, and their
            # faces must not join the margin test's cohort against themselves
            with contextlib.suppress(GalleryError):  # purged or named meanwhile
                unknowns.delete(self._gallery, [self._visits.pop(self._key(item))])
                self.withdrawn += 1
        elif item.kind == EventKind.LEFT and item.person is None and self._key(item) in self._visits:
            unknowns.touch_visit(self._gallery, self._visits.pop(self._key(item)), item.wall)

    def _key(self, event: IdentityEvent) -> tuple[str, int]:
        """A track of one camera (several cameras number their tracks each from 1)."""
        return (event.camera or self.camera, event.track_id)

    def _store(self, event: IdentityEvent) -> None:
        assert self._gallery is not None
        samples = [unknowns.UnknownSample(
            s.embedding, self.embedder, self.embedder_version, s.face_px, s.sharpness,
            encode_png(s.crop) if self.cfg.keep_crops and s.crop is not None else None,
            CROP_FORMAT if self.cfg.keep_crops and s.crop is not None else None) for s in event.samples]
        visit = unknowns.UnknownVisit(event.camera or self.camera, event.first_wall or event.wall, event.wall,
                                      event.track_id,
                                      event.candidate, float(event.distance),
                                      str(event.reason) if event.reason is not None else None)
        self._visits[self._key(event)] = unknowns.add_visit(self._gallery, visit, samples)
        self.stored += 1
        if len(self._visits) > 10_000:  # tracks that never sent `left` (a crash of the stream): forget the oldest
            self._visits.pop(next(iter(self._visits)))

    def close(self, timeout: float) -> None:
        if self._gallery is not None:
            self._gallery.close()
            self._gallery = None

    def stats(self) -> dict[str, object]:
        return {"visits_stored": self.stored, "visits_purged": self.purged, "visits_withdrawn": self.withdrawn}
