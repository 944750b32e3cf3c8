"""Face tracks across frames: IoU association of detections, dlib correlation tracking in between.

Pure computation on RGB frames: the caller passes the frame number and timeline seconds `t`.
A track ends when no detection confirmed it for `max_age_s`. Between detections each track's
box follows the face with dlib's correlation tracker (when enabled); a peak-to-sidelobe ratio
below `lost_psr` marks the track lost, which asks the caller to run the detector again.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edged.types import Box

log = logging.getLogger(__name__)


@dataclass
class Track:
    """One face followed over time (mutable: updated in place by `Tracker`)."""

    id: int
    box: Box
    first_frame: int
    first_t: float
    last_frame: int
    #: Timeline seconds of the last detection confirming this track.
    last_detected_t: float
    #: Detections matched to this track (1 when it starts).
    hits: int = 1
    #: The correlation tracker lost the face; the box is stale until the next detection.
    lost: bool = False
    #: Last peak-to-sidelobe ratio of the correlation tracker (0 on detection frames).
    psr: float = 0.0
    #: The box is current on this frame: detected on it, or followed to it by the correlation tracker.
    current: bool = True
    _correlation: Any = field(default=None, repr=False)
    #: The correlation tracker was started on this face and updated on every frame since.
    _chained: bool = field(default=False, repr=False)


@dataclass(frozen=True)
class TrackUpdate:
    """The tracks after one frame: all live ones, those that started and those that ended."""

    tracks: list[Track]
    started: list[Track]
    ended: list[Track]


def associate(tracks: list[Box], detections: list[Box], iou_min: float) -> list[tuple[int, int]]:
    """Greedy IoU matching: (track index, detection index) pairs with IoU >= iou_min, best first."""
    if not tracks or not detections:
        return []
    iou = np.array([[t.iou(d) for d in detections] for t in tracks], dtype=np.float64)
    pairs: list[tuple[int, int]] = []
    used_t: set[int] = set()
    used_d: set[int] = set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        ti, di = divmod(int(flat), len(detections))
        if iou[ti, di] < iou_min or iou[ti, di] <= 0.0:
            break
        if ti in used_t or di in used_d:
            continue
        pairs.append((ti, di))
        used_t.add(ti)
        used_d.add(di)
    return pairs


class Tracker:
    """Keeps tracks of faces: `update(image, detections or None, frame, t)` once per processed frame."""

    def __init__(self, iou_min: float = 0.3, max_age_s: float = 1.0, correlation: bool = True,
                 lost_psr: float = 5.0) -> None:
        self.iou_min = iou_min
        self.max_age_s = max_age_s
        self.correlation = correlation
        self.lost_psr = lost_psr
        self.tracks: list[Track] = []
        self._next_id = 1

    @property
    def any_lost(self) -> bool:
        """A track lost its face since the last detection (the caller should detect soon)."""
        return any(t.lost for t in self.tracks)

    def update(self, image: np.ndarray, detections: list[Box] | None, frame: int, t: float,
               follow: Collection[int] | None = None) -> TrackUpdate:
        """Advance all tracks to this frame; `detections` None means no detector run on this frame.

        `follow`: ids of the tracks whose boxes must be followed between detections (default all).
        Others keep their last detected box (`current` False) until the next detection re-associates
        them, which saves the correlation tracker's cost for faces that need no recognition now.
        """
        for track in self.tracks:
            track.current = not self.correlation  # without correlation tracking a box is as good as it gets
        if self.correlation:
            self._follow(image, follow)
        started: list[Track] = []
        if detections is not None:
            started = self._associate(image, detections, frame, t, follow)
        for track in self.tracks:
            if track.current:
                track.last_frame = frame
        ended = self.expire(t)
        return TrackUpdate(list(self.tracks), started, ended)

    def expire(self, t: float) -> list[Track]:
        """End the tracks no detection confirmed for `max_age_s`; returns them."""
        ended = [tr for tr in self.tracks if t - tr.last_detected_t > self.max_age_s]
        if ended:
            self.tracks = [tr for tr in self.tracks if tr not in ended]
        return ended

    def end_all(self) -> list[Track]:
        """End every track (the stream ended)."""
        ended, self.tracks = self.tracks, []
        return ended

    def _follow(self, image: np.ndarray, follow: Collection[int] | None) -> None:
        h, w = image.shape[:2]
        for track in self.tracks:
            if not track._chained or track.lost:
                continue
            if follow is not None and track.id not in follow:
                track._chained = False  # skipped a frame: restart at its next detection
                continue
            track.psr = float(track._correlation.update(image))
            pos = track._correlation.get_position()
            box = Box(round(pos.left()), round(pos.top()), round(pos.right()), round(pos.bottom()),
                      track.box.score).clipped(w, h)
            if not track.psr >= self.lost_psr or box.width < 2 or box.height < 2:  # NaN on a blank frame
                track.lost = True
                track._chained = False
                log.debug("track %d lost (psr %.1f)", track.id, track.psr)
            else:
                track.box = box
                track.current = True

    def _associate(self, image: np.ndarray, detections: list[Box], frame: int, t: float,
                   follow: Collection[int] | None) -> list[Track]:
        pairs = associate([tr.box for tr in self.tracks], detections, self.iou_min)
        matched = {di for _, di in pairs}
        for ti, di in pairs:
            track = self.tracks[ti]
            track.box = detections[di]
            track.last_detected_t = t
            track.hits += 1
            track.lost = False
            track.psr = 0.0
            track.current = True
            if follow is None or track.id in follow:
                self._restart(track, image)
            else:
                track._chained = False
        started = []
        for di, box in enumerate(detections):
            if di in matched:
                continue
            track = Track(self._next_id, box, frame, t, frame, t)
            self._next_id += 1
            self._restart(track, image)
            self.tracks.append(track)
            started.append(track)
        return started

    def _restart(self, track: Track, image: np.ndarray) -> None:
        if not self.correlation:
            return
        import dlib

        if track._correlation is None:
            track._correlation = dlib.correlation_tracker()
        b = track.box
        track._correlation.start_track(image, dlib.rectangle(b.left, b.top, b.right - 1, b.bottom - 1))
        track._chained = True
