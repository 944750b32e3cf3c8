"""The audit log as a sink: every access decision, with its reasons and scores, appended to the hash chain.

Rows go to the gallery database (`edged.gallery.audit`: append-only, each row carrying the hash of the one
before, `edged audit verify` names an edited or deleted row). The face crop is kept only with
`audit.keep_crops` (biometric data); retention (`audit.retention_days`) is applied at start and hourly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from edged.config import AuditConfig
from edged.errors import GalleryError
from edged.gallery import audit
from edged.gallery.store import Gallery
from edged.runtime.sinks import EventSink
from edged.types import AccessDecision, StreamItem
from edged.vision.imageio import encode_png

log = logging.getLogger(__name__)

PURGE_EVERY_S = 3600.0


class AuditSink(EventSink):
    name = "audit"

    def __init__(self, gallery_path: Path, cfg: AuditConfig, config_version: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.gallery_path = gallery_path
        self.cfg = cfg
        self.config_version = config_version
        self.wants_images = cfg.keep_crops
        self._clock = clock
        self._gallery: Gallery | None = None
        self._next_purge = 0.0
        self.appended = 0

    def start(self) -> None:
        self._gallery = Gallery(self.gallery_path, create=False)

    def handle(self, item: StreamItem) -> None:
        if not isinstance(item, AccessDecision) or self._gallery is None:
            return
        if self._clock() >= self._next_purge:
            self._next_purge = self._clock() + PURGE_EVERY_S
            try:
                audit.purge(self._gallery, self.cfg.retention_days)
            except GalleryError as exc:  # a broken chain is kept as evidence: no purge, keep appending
                log.error("audit: retention skipped: %s", exc)
        scores: dict[str, object] = {"distance": item.distance, "confidence": item.confidence}
        if item.liveness is not None:
            scores.update({f"liveness_{k}": v for k, v in item.liveness.as_dict().items() if k != "reasons"})
        crop = encode_png(item.crop) if self.cfg.keep_crops and item.crop is not None and item.crop.size else None
        audit.append(self._gallery, audit.AuditEntry(
            item.door, item.camera, str(item.outcome), item.person, item.track_id,
            (*item.reasons, *(f"action: {a}" for a in item.actions)), scores, crop, self.config_version,
            item.wall))
        self.appended += 1

    def close(self, timeout: float) -> None:
        if self._gallery is not None:
            self._gallery.close()
            self._gallery = None

    def stats(self) -> dict[str, object]:
        return {"appended": self.appended}
