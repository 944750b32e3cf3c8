"""Value types passed between stages and to the sinks, and the state enums, defined once.

Everything here is frozen and free of I/O: frames, boxes, match results, and the items of the
daemon's event stream (`StreamItem`): identity events, presence changes, the enrolled people
(for Home Assistant discovery) and health reports. Enums are `StrEnum`s, so they compare equal to
(and serialise as) their string values in payloads and logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np


class EventKind(StrEnum):
    """What an identity event says about a track."""

    RECOGNIZED = "recognized"
    UNKNOWN = "unknown"
    LEFT = "left"


class PresenceState(StrEnum):
    PRESENT = "present"
    ABSENT = "absent"


class SourceState(StrEnum):
    """What a camera grabber is doing."""

    STARTING = "starting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    #: End of a video file (without `loop`).
    ENDED = "ended"
    #: Unusable as configured (e.g. the region of interest lies outside the frame).
    FAILED = "failed"
    STOPPED = "stopped"


class UnknownReason(StrEnum):
    """Why a face was not named."""

    #: Farther than the threshold from every enrolled person.
    TOO_FAR = "too far"
    #: Within the threshold, but not clearly nearer to the candidate than to others (margin test).
    AMBIGUOUS = "ambiguous"
    #: Nearer to the ignore list (a poster, a face on the TV) than to anyone enrolled.
    IGNORED = "ignored"
    #: Too small, blurred, turned away or cut off to be named.
    LOW_QUALITY = "low quality"
    EMPTY_GALLERY = "nobody enrolled"


@dataclass(frozen=True, slots=True)
class Box:
    """A face box in pixel coordinates (right/bottom exclusive) with a detector score."""

    left: int
    top: int
    right: int
    bottom: int
    score: float = 1.0

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def area(self) -> int:
        return max(0, self.width) * max(0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.left + self.right) / 2.0, (self.top + self.bottom) / 2.0)

    def as_list(self) -> list[int]:
        return [self.left, self.top, self.right, self.bottom]

    def scaled(self, factor: float) -> Box:
        """The same box in an image resized by `factor`."""
        return Box(
            round(self.left * factor),
            round(self.top * factor),
            round(self.right * factor),
            round(self.bottom * factor),
            self.score,
        )

    def clipped(self, width: int, height: int) -> Box:
        """The box clipped to an image of the given size."""
        return Box(
            min(max(self.left, 0), width),
            min(max(self.top, 0), height),
            min(max(self.right, 0), width),
            min(max(self.bottom, 0), height),
            self.score,
        )

    def expanded(self, factor: float, width: int, height: int) -> Box:
        """The box grown by `factor` of its size on every side, clipped to a `width` x `height` image."""
        dx, dy = round(self.width * factor), round(self.height * factor)
        return Box(self.left - dx, self.top - dy, self.right + dx, self.bottom + dy, self.score).clipped(width, height)

    def iou(self, other: Box) -> float:
        """Intersection over union with another box (0 when disjoint)."""
        ix = max(0, min(self.right, other.right) - max(self.left, other.left))
        iy = max(0, min(self.bottom, other.bottom) - max(self.top, other.top))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Frame:
    """One RGB frame and when it was taken."""

    image: np.ndarray
    #: Running frame number of this source (keeps counting across reconnects and loops).
    index: int
    #: Timeline seconds: video time for files, `time.monotonic()` at capture for live sources.
    t: float
    #: Wall-clock time (epoch seconds) at capture.
    wall: float


@dataclass(frozen=True)
class Observation:
    """A tracked face on one frame."""

    track_id: int
    box: Box
    #: The person this track is held as, "unknown", or None while undecided.
    identity: str | None
    #: The box comes from a detection on this frame (not from the correlation tracker).
    detected: bool


@dataclass(frozen=True)
class MatchResult:
    """The verdict of the gallery for one face."""

    #: The person named, or None (unknown).
    name: str | None
    #: Squared L2 to the candidate's score (its nearest sample, or the mean of its k nearest).
    distance: float
    confidence: float
    #: The nearest person, named or not.
    candidate: str | None
    #: The runner-up person's score (None with fewer than two people enrolled).
    second: float | None = None
    #: What `distance` is compared with for the margin test: the runner-up or the nearest known strangers.
    reference: float | None = None
    #: distance / reference (the margin test; lower = clearer).
    ratio: float | None = None
    #: Why the face was not named (None when it was).
    reason: UnknownReason | None = None
    #: The ignore-list label the face matched.
    ignored: str | None = None
    #: The threshold that applied (the candidate's, with an adaptive rule).
    threshold: float | None = None


@dataclass(frozen=True)
class FaceSample:
    """One good view of a tracked face, kept for the unknown-visitor store: its embedding and canonical crop."""

    embedding: np.ndarray = field(repr=False)
    #: The embedder-independent canonical crop (`edged.gallery.enroll.canonical_crop`), RGB uint8.
    crop: np.ndarray | None = field(repr=False)
    face_px: int
    #: Variance of the Laplacian of the canonical crop's face region (as `edged enroll` measures it).
    sharpness: float

    @property
    def quality(self) -> float:
        """Ranking: bigger and sharper is better (as for enrollment from video)."""
        return float(self.face_px) * float(np.sqrt(max(self.sharpness, 0.0)))


@dataclass(frozen=True)
class IdentityEvent:
    """A decision about a track, published once."""

    kind: EventKind
    track_id: int
    person: str | None
    distance: float
    confidence: float
    box: Box
    frame: int
    t: float
    wall: float
    #: The nearest enrolled person (for `unknown`: who it was not, so a user can see why).
    candidate: str | None = None
    #: `unknown` only: why the track was not named.
    reason: UnknownReason | None = None
    #: The frame the decision was made on (recognized / unknown; a reference, not a copy), for the sinks
    #: that show the face (snapshots). The event stream strips it for sinks that do not ask for images.
    image: np.ndarray | None = field(default=None, compare=False, repr=False)
    #: `recognized`: how many of the track's last M recognitions agreed on the person.
    votes: int = field(default=0, compare=False)
    #: The visit: shared by a `recognized` (or `unknown`) and the `left` that closes it, even when another track
    #: took the person over in between.
    visit_id: int = 0
    #: `unknown`: the track's best views so far (best first), for the unknown-visitor store.
    samples: tuple[FaceSample, ...] = field(default=(), compare=False, repr=False)
    #: Timeline seconds and wall-clock time the track was first seen.
    first_t: float | None = field(default=None, compare=False)
    first_wall: float | None = field(default=None, compare=False)
    #: `recognized`: the track's liveness verdict when it was named (liveness enabled; often still undecided).
    liveness: LivenessReport | None = field(default=None, compare=False)
    #: `recognized` of a new track of a person whose visit goes on (the person's earlier track was taken over):
    #: for per-track decisions (door access); not published as a new recognition. Also a track of a person whose
    #: visit at the same door goes on at another camera (its `left` too, while another camera still sees them).
    resumed: bool = field(default=False, compare=False)
    #: The camera (`camera.name`) the track is on; "" before the daemon stamps it.
    camera: str = ""
    #: Every camera of the door that saw this visit so far (several cameras on one entrance), in order.
    cameras: tuple[str, ...] = ()


@dataclass(frozen=True)
class PresenceChange:
    """A person became present or absent; `last_seen` is the wall-clock time of the last sighting."""

    person: str
    state: PresenceState
    last_seen: float


@dataclass(frozen=True)
class PersonEntity:
    """An enrolled person as the outputs see them."""

    name: str
    display_name: str
    #: The gallery's stable person id (0 when unknown): entities keyed on it survive a rename.
    id: int = 0


@dataclass(frozen=True)
class PeopleChanged:
    """The enrolled people after the gallery (re)loaded, sorted by name."""

    people: tuple[PersonEntity, ...]


@dataclass(frozen=True)
class Health:
    """The daemon's state, reported every `service.status_every_s` and when something changes."""

    #: One line for logs and systemd's STATUS=.
    status: str
    fps: float
    camera: SourceState
    tracks: int
    last_person: str | None
    wall: float
    #: A live camera that stopped delivering frames without failing.
    camera_stalled: bool = False
    #: Frames the camera delivered that processing could not keep up with.
    frames_dropped: int = 0
    #: Of the frames of the last minute, the percentage dropped; and whether that is over the limit.
    dropped_percent: float = 0.0
    overloaded: bool = False
    #: The detector's interval now (frames; raised under load).
    detect_every_n: int = 0
    #: Several cameras: each one's state (the fields above then describe the first camera, or the daemon).
    cameras: tuple[CameraHealth, ...] = ()


@dataclass(frozen=True)
class CameraHealth:
    """One camera's part of `Health` (several cameras in one daemon)."""

    name: str
    fps: float
    state: SourceState
    stalled: bool
    tracks: int
    frames_processed: int
    frames_dropped: int
    dropped_percent: float
    overloaded: bool
    detect_every_n: int

    @property
    def streaming(self) -> bool:
        return self.state == SourceState.STREAMING and not self.stalled


class AccessOutcome(StrEnum):
    GRANTED = "granted"
    DENIED = "denied"
    #: Too many denied attempts at a door: the lockout started.
    ALARM = "alarm"


@dataclass(frozen=True)
class LivenessReport:
    """A track's liveness verdict (`edged.vision.liveness`): live True / False, or None while undecided."""

    track_id: int
    live: bool | None
    score: float
    texture: float | None
    blink: bool | None
    parallax: float | None
    frames: int
    seconds: float
    reasons: tuple[str, ...]
    t: float
    wall: float
    #: The camera of the track; "" before the daemon stamps it.
    camera: str = ""

    def as_dict(self) -> dict[str, object]:
        return liveness_dict(self)


def liveness_dict(v: Any) -> dict[str, object]:
    """The JSON form of a liveness verdict or report (MQTT, the audit log, `--json`): rounded scores, reasons."""
    return {"live": v.live, "score": round(v.score, 4),
            "texture": None if v.texture is None else round(v.texture, 4), "blink": v.blink,
            "parallax": None if v.parallax is None else round(v.parallax, 4), "frames": v.frames,
            "seconds": round(v.seconds, 3), "reasons": list(v.reasons)}


@dataclass(frozen=True)
class AccessDecision:
    """What the door decided for one track (once per track), and why."""

    outcome: AccessOutcome
    door: str
    camera: str
    person: str | None
    track_id: int | None
    reasons: tuple[str, ...]
    distance: float | None
    confidence: float | None
    liveness: LivenessReport | None
    #: What was done about it: e.g. "mqtt zigbee2mqtt/front/set", "gpio gpiochip0:17 1.0 s", or why not.
    actions: tuple[str, ...]
    t: float
    wall: float
    #: The face of the decision (canonical crop RGB, or None), for the audit log when it keeps crops.
    crop: np.ndarray | None = field(default=None, compare=False, repr=False)


#: What flows to the sinks.
StreamItem = IdentityEvent | PresenceChange | PeopleChanged | Health | LivenessReport | AccessDecision
