"""Typed, validated settings loaded from YAML.

Every problem names the key path, the YAML line and what is wrong; all problems are
collected before failing (`ConfigErrors`). Unknown keys are rejected. Secrets (the MQTT
password) come from the file, `$EDGED_MQTT_PASSWORD`, a `password_file`, or systemd's
`$CREDENTIALS_DIRECTORY/mqtt_password`, and are never part of repr(), logs or error messages.

The sections are frozen pydantic models (strict: YAML `"1"` is not an integer, `yes please` is
not a boolean; finite numbers only). `parse_config` reads YAML with line numbers (`_compose`,
which refuses anchors/aliases, non-standard tags and deep nesting), validates with pydantic and
words each of pydantic's errors as one `"<file>: line N: key.path: message"` problem.
Copy a section with changes with `section.model_copy(update={...})`.
"""

from __future__ import annotations

import contextlib
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edged.errors import ConfigError

DEFAULT_GALLERY = "~/.local/share/edged/gallery.db"
DEFAULT_MODELS_DIR = "~/.local/share/edged/models"
SERVICE_GALLERY = "/var/lib/edged/gallery.db"
SERVICE_MODELS_DIR = "/var/lib/edged/models"
CREDENTIAL_NAME = "mqtt_password"
#: A config file is a few KB; anything larger is refused before parsing.
MAX_CONFIG_BYTES = 1 << 20
#: Mappings/sequences nested deeper than this are refused (the schema needs 3).
MAX_YAML_DEPTH = 32

_TOPIC_HINT = "an MQTT topic without spaces, '#' or '+'"


def _hint(text: str) -> dict[str, Any]:
    """Field metadata: the wording used when a value does not match the field's `pattern`."""
    return {"hint": text}


class _Section(BaseModel):
    """Base of every config section: frozen, unknown keys rejected, no type coercion, finite numbers only."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False,
                              hide_input_in_errors=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # `tracking:` with nothing under it (null) means all defaults, like `tracking: {}`.
        if isinstance(data, dict):
            empty = {name: {} for name, f in cls.model_fields.items()
                     if name in data and data[name] is None and _is_section(f.annotation)}
            if empty:
                return {**data, **empty}
        return data


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


#: `detector.scale: auto` detects on frames at most this wide: RetinaFace there finds every face track of the
#: 1080p pedestrians video that HOG finds on the full frames (`edged bench`, detector rows).
AUTO_DETECT_WIDTH = 960


class CameraConfig(_Section):
    #: V4L2 index (0) or device (/dev/video0), rtsp:// or http(s):// URL, or a video file.
    source: int | str
    #: Name of the camera in events.
    name: str = Field("camera", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                      json_schema_extra=_hint("1-64 letters, digits, '_', '.' or '-'"))
    #: Video files: pace at the file's fps like a live camera (true) or every frame at full speed (false).
    realtime: bool = True
    #: Video files: start again at the end instead of stopping.
    loop: bool = False
    #: Video files: a file that is missing or cannot be opened is waited for (reopened with backoff) instead of
    #: ending the daemon with an error.
    wait_for_file: bool = False
    #: Downscale frames wider than this (pixels); null keeps the source size.
    max_width: int | None = Field(None, ge=64, le=8192)
    #: Region of interest [left, top, right, bottom] in source pixels; null = whole frame.
    roi: list[int] | None = None
    #: First pause before reconnecting a lost source; doubles on every failed attempt...
    reconnect_min_s: float = Field(0.5, ge=0.05, le=600)
    #: ...up to this longest pause (seconds).
    reconnect_max_s: float = Field(10.0, ge=0.05, le=600)
    #: Consider the source lost after this long without a frame.
    read_timeout_s: float = Field(5.0, ge=0.5, le=600)
    #: The entrance this camera watches: cameras with the same door make one visit of a person (one
    #: `recognized`), and the access decision uses that door (a key of `access.doors`). null: its own entrance,
    #: or the door of `access.doors` that lists it.
    door: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                             json_schema_extra=_hint("1-64 letters, digits, '_', '.' or '-'"))
    #: This camera's detector cadence (frames); null: `detector.every_n_frames`.
    every_n_frames: int | None = Field(None, ge=1, le=1000)


class DetectorConfig(_Section):
    #: auto: retinaface when its model is installed (`edged models fetch retinaface`), else hog.
    backend: Literal["auto", "retinaface", "hog", "mmod", "haar"] = "auto"
    #: Image doublings before detection (0 = fastest; 1 finds faces down to ~40 px). RetinaFace finds faces
    #: from ~16 px at 0 and is never enlarged beyond the frame (its steps undo `scale` only).
    upsample: int = Field(0, ge=0, le=3)
    #: What runs RetinaFace: onnxruntime (its network rewritten as ONNX from the installed files, checked against
    #: OpenCV DNN, cached in the models directory; faster), opencv (OpenCV DNN), auto (onnxruntime, else opencv).
    runtime: Literal["auto", "onnxruntime", "opencv"] = "auto"
    #: Detect on the frame scaled by this factor (boxes are mapped back; faces are aligned and embedded from
    #: the full frame); auto: at most `AUTO_DETECT_WIDTH` pixels wide (1080p: 0.5, 720p: 0.75, smaller: 1).
    scale: float | Literal["auto"] = "auto"
    #: Detections weaker than this are dropped; null: the backend's default (hog 0, retinaface 0.7).
    min_score: float | None = Field(None, ge=-2.0, le=1.0)
    #: Run the detector every N frames, tracking in between (sooner when a track is lost).
    every_n_frames: int = Field(3, ge=1, le=1000)
    #: Every N processed frames (and on the first) detect with one more upsample step instead:
    #: finds faces half the size (from ~40 px at upsample 0) at ~4x the cost; 0 = never.
    small_faces_every_n_frames: int = Field(30, ge=0, le=100000)
    #: Ignore faces smaller than this (pixels, full-frame coordinates).
    min_face_px: int = Field(40, ge=8, le=4096)
    #: Under load (the frame loop >= 90% busy, or frames dropped) the detector runs 2x, then 4x... less often,
    #: up to this factor of `every_n_frames`, and back when there is room (1 = never adapt). Live cameras and
    #: `realtime` files only: a file read as fast as possible never drops a frame.
    max_cadence_factor: int = Field(4, ge=1, le=64)
    #: Motion gating: while no face is tracked, detect only on frames where something moved (frame
    #: differencing at ~160 px wide; `edged.vision.motion`). An empty porch then costs almost nothing.
    motion_gate: bool = True
    #: ...a pixel "moved" when its grey level changed by more than this...
    motion_pixel_threshold: int = Field(16, ge=1, le=255)
    #: ...and the picture moved when at least this fraction of its pixels did; the gate closes once the picture
    #: has been still (and no face tracked) for this long (seconds): repeated frames of a moving scene, a
    #: camera's duplicate frames, keep the usual cadence.
    motion_min_fraction: float = Field(0.002, ge=0.0, le=1.0)
    motion_idle_after_s: float = Field(1.0, ge=0.0, le=3600)

    @field_validator("scale")
    @classmethod
    def _scale_range(cls, value: float | str) -> float | str:
        if isinstance(value, float) and not 0.1 <= value <= 1.0:
            raise ValueError(f"must be 'auto' or a number from 0.1 to 1.0, got {value}")
        return value

    def scale_for(self, width: int) -> float:
        """The detection scale for frames `width` pixels wide."""
        if self.scale != "auto":
            return float(self.scale)
        return min(1.0, AUTO_DETECT_WIDTH / max(1, width))


class EmbedderConfig(_Section):
    name: Literal["dlib", "nn4"] = "dlib"
    #: nn4 only: a model name from `edged models list` or a weights file; null = best installed.
    weights: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: How the network runs. nn4: torch (the network as defined; CUDA or CPU), onnxruntime (its exact rewrite
    #: exported to ONNX, CPU only, fastest there), onnxruntime-int8 (the statically quantised model beside the
    #: weights, `<stem>.int8.onnx` from `edged train quantize`; CPU only). dlib: dlib (dlib's own code, one
    #: core) or onnxruntime (dlib's network read from its model file and run on ONNX Runtime: the same
    #: descriptors, ~20x faster). auto: onnxruntime when installed (else torch / dlib).
    backend: Literal["auto", "torch", "onnxruntime", "onnxruntime-int8", "dlib"] = "auto"
    #: CPU threads (torch, or onnxruntime's per-run threads); 0 = all cores.
    threads: int = Field(0, ge=0, le=256)
    #: The door's match threshold (squared L2 to a person's template, one person with 3+ samples; adaptive with
    #: `match.adaptive`); null = the embedder's own (`edged eval openset`: dlib 0.125).
    threshold: float | None = Field(None, gt=0.0, le=4.0)


class GalleryConfig(_Section):
    path: str = DEFAULT_GALLERY
    #: How often the daemon checks the gallery for changes (seconds).
    reload_check_s: float = Field(2.0, ge=0.1, le=3600)


class MatchConfig(_Section):
    #: knn: nearest identity (default); svm: scikit-learn linear SVM picks the candidate (OpenFace's demo).
    method: Literal["knn", "svm"] = "knn"
    #: Per-person score: centroid (distance to the person's template, the normalised mean of their samples),
    #: min (nearest sample) or mean_k (mean of the person's k nearest samples); null = the embedder's.
    score: Literal["min", "mean_k", "centroid"] | None = None
    k: int = Field(3, ge=1, le=100)
    #: Margin test: name a face only when it is clearly nearer to the candidate than to any other identity
    #: (the runner-up person, or the nearest strangers the site has stored). false = threshold only.
    margin: bool = True
    #: The margin: the candidate's score must be at most this fraction of the distance to the next identity;
    #: null = the embedder's door default (dlib 0.6).
    max_ratio: float | None = Field(None, gt=0.0, le=10.0)
    #: The threshold follows the gallery: strictest with many people enrolled (a stranger meets every one of
    #: them), a little looser for people with only one or two samples. false = one threshold for everyone.
    adaptive: bool = True


class TrackingConfig(_Section):
    #: Minimum IoU to associate a detection with a track.
    iou_min: float = Field(0.3, ge=0.0, le=1.0)
    #: Drop a track not confirmed by a detection for this long (seconds).
    max_age_s: float = Field(1.0, ge=0.05, le=600)
    #: Follow faces between detections with dlib's correlation tracker.
    correlation: bool = True
    #: Re-recognise a settled track every this many seconds (0 = never).
    recognize_every_s: float = Field(10.0, ge=0.0, le=3600)
    #: Re-recognise a track held as unknown this often (seconds): a face that turns towards the camera, or comes
    #: closer, may still be named.
    recheck_unknown_s: float = Field(0.25, ge=0.0, le=3600)
    #: ...and after each re-check that still finds no one, twice as long up to this (seconds; a face that grows
    #: by half, someone coming closer, is re-checked at once). A stranger waiting at the door then costs ~1
    #: embedding per this many seconds instead of 4 per second.
    recheck_unknown_max_s: float = Field(2.0, ge=0.0, le=3600)
    #: A person "left" once their track is gone for this long (seconds); if the same person is
    #: recognised again within this window the new track continues the old one (no new event).
    left_after_s: float = Field(2.0, ge=0.0, le=3600)
    #: Several cameras on one door (`camera.door`): after a person's last track there left, their visit waits
    #: this long (seconds) for another of the door's cameras before its `left`; a recognition meanwhile joins
    #: the visit (one `recognized` per person and visit over the door's cameras).
    door_visit_s: float = Field(10.0, ge=0.0, le=3600)
    #: Correlation tracker: a peak-to-sidelobe ratio below this marks the track lost (detect next frame).
    lost_psr: float = Field(5.0, ge=0.0, le=100)


class VoteConfig(_Section):
    #: A name is given when K of the last M recognitions of a track agree.
    k: int = Field(2, ge=1, le=100)
    m: int = Field(3, ge=1, le=100)


class EnrollConfig(_Section):
    min_face_px: int = Field(80, ge=8, le=4096)
    #: Variance of the Laplacian on the aligned crop below this = too blurry.
    blur_min: float = Field(40.0, ge=0.0)
    #: Squared-L2 distance below which a new sample duplicates a stored one.
    duplicate_max: float = Field(0.01, ge=0.0, le=4.0)
    #: Video sources: keep at most this many distinct faces.
    video_samples: int = Field(10, ge=1, le=1000)
    #: Keep aligned crops in the gallery (needed for `gallery reembed`).
    keep_crops: bool = True
    #: Store each sample's embedding averaged with its mirror image's (twice the embedding time at enrollment,
    #: none at the door): LFW, 100 people x 3 photos, the same share of strangers named, +2 points of enrolled
    #: people named (`edged eval openset --enroll-mirror`).
    mirror: bool = True


class QualityConfig(_Section):
    #: Faces too poor to be named are "unknown (low quality)" (measures: `edged.vision.quality`).
    #: Faces smaller than this (the smaller side of the detector box, pixels of the processed frame).
    min_face_px: int = Field(40, ge=8, le=4096)
    #: Variance of the Laplacian of the face box resampled to 64x64 grey levels below this = blurred.
    min_sharpness: float = Field(40.0, ge=0.0, le=100000)
    #: Head turn (degrees, estimated from the landmarks) beyond which a face is turned away.
    max_yaw: float = Field(45.0, ge=0.0, le=90)
    #: Name faces whose box or landmarks reach the image edge (false: "cut off by the image edge").
    allow_truncated: bool = False


class UnknownsConfig(_Section):
    #: Store unknown visitors (each unknown track's best face samples) in the gallery file for review.
    enabled: bool = True
    #: `edged unknowns purge` (and the daemon) delete visits last seen longer ago than this (days).
    retention_days: float = Field(30.0, gt=0.0, le=3650)
    #: Keep at most this many visits; the oldest go first.
    max_visits: int = Field(5000, ge=1, le=1_000_000)
    #: Store the canonical face crops (for review and naming); false = embeddings only.
    keep_crops: bool = True
    #: Best samples (face size x sqrt(sharpness)) stored per unknown track.
    samples_per_visit: int = Field(3, ge=1, le=50)
    #: `edged unknowns cluster`: DBSCAN radius, the mean squared L2 between two visits' samples (measured
    #: for dlib on LFW, see docs/unknowns.md; nn4 needs its own).
    cluster_eps: float = Field(0.11, gt=0.0, le=4.0)


class AuditConfig(_Section):
    #: Record every access decision of the door in the hash-chained audit log (`edged audit`).
    enabled: bool = True
    #: Store the face crop of each decision with it (false: no raw faces in the log unless asked).
    keep_crops: bool = False
    #: `edged audit purge` (and the access controller) delete decisions older than this (days).
    retention_days: float = Field(365.0, gt=0.0, le=36500)


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$"


class TimeWindow(_Section):
    #: Weekdays the window is open (mon..sun); empty = every day.
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(default_factory=list)
    #: Local time (access.timezone) the window opens, "HH:MM".
    start: str = Field("00:00", pattern=_TIME, json_schema_extra=_hint("a time HH:MM, 00:00 to 24:00"))
    #: Local time it closes, "HH:MM" (24:00 = midnight at the end of the day).
    end: str = Field("24:00", pattern=_TIME, json_schema_extra=_hint("a time HH:MM, 00:00 to 24:00"))


class AccessRule(_Section):
    #: A name for logs and the audit log.
    name: str = Field(pattern=r"^[A-Za-z0-9_. -]{1,64}$",
                      json_schema_extra=_hint("1-64 letters, digits, ' ', '_', '.', '-'"))
    #: Enrolled people this rule lets in...
    people: list[str] = Field(default_factory=list)
    #: ...and groups (access.groups) of people.
    groups: list[str] = Field(default_factory=list)
    #: Doors (access.doors) it applies to; empty = every door.
    doors: list[str] = Field(default_factory=list)
    #: When; empty = always.
    windows: list[TimeWindow] = Field(default_factory=list)
    #: Grant only to a live face (liveness verdict of the track; needs liveness.enabled).
    require_liveness: bool = True
    #: Grant only to a track seen for at least this long (seconds).
    min_track_s: float = Field(0.0, ge=0.0, le=60)
    #: Grant only when at least this many of the track's recognitions agreed (see vote.k).
    min_votes: int = Field(2, ge=1, le=100)


class MqttAction(_Section):
    #: Topic of the lock's command, e.g. zigbee2mqtt/front_lock/set.
    topic: str = Field(pattern=r"^[^#+\s]+$", json_schema_extra=_hint(_TOPIC_HINT))
    #: Payload to publish, e.g. '{"state": "UNLOCK"}'.
    payload: str = '{"state": "UNLOCK"}'
    qos: int = Field(1, ge=0, le=2)
    #: Not sent when the broker has been unreachable for longer than this (seconds): a door never opens late.
    max_delay_s: float = Field(2.0, gt=0.0, le=60)


class GpioAction(_Section):
    #: GPIO character device of the relay, e.g. /dev/gpiochip0 (libgpiod v2).
    chip: str
    #: Line offset on that chip.
    line: int = Field(ge=0, le=1023)
    #: Seconds the relay stays energised.
    pulse_s: float = Field(1.0, gt=0.0, le=30)
    active_low: bool = False


class GpioInput(_Section):
    #: GPIO character device of the door contact.
    chip: str
    line: int = Field(ge=0, le=1023)
    #: The contact reads active when the door is closed.
    active_low: bool = False


class DoorConfig(_Section):
    #: Cameras (camera.name) watching this door; empty = the camera.
    cameras: list[str] = Field(default_factory=list)
    #: Publish a command to open the lock...
    unlock_mqtt: MqttAction | None = None
    #: ...and/or pulse a relay.
    unlock_gpio: GpioAction | None = None
    #: A door contact: no pulse while the door is open.
    contact: GpioInput | None = None


class LockoutConfig(_Section):
    #: Denied attempts (near-matches, failed liveness) at one door within window_s that start a lockout.
    attempts: int = Field(5, ge=1, le=1000)
    window_s: float = Field(300.0, gt=0.0, le=86400)
    #: First cool-down (seconds); it doubles with every further denied attempt, up to max_s.
    base_s: float = Field(30.0, gt=0.0, le=86400)
    max_s: float = Field(3600.0, gt=0.0, le=7 * 86400)


class AccessConfig(_Section):
    #: Decide access per track and publish it on edged/<device_id>/access (granted / denied / alarm).
    enabled: bool = False
    #: IANA time zone of the rules' windows, e.g. Europe/Berlin.
    timezone: str = "UTC"
    doors: dict[str, DoorConfig] = Field(default_factory=lambda: {"door": DoorConfig()})
    #: Named groups of enrolled people, used by rules.
    groups: dict[str, list[str]] = Field(default_factory=dict)
    #: Who may enter where and when; a person matching no rule is denied ("not allowed").
    rules: list[AccessRule] = Field(default_factory=list)
    #: One grant per person and door within this many seconds.
    cooldown_s: float = Field(10.0, ge=0.0, le=86400)
    #: How long a recognized track waits for its liveness verdict before it is denied (seconds).
    liveness_wait_s: float = Field(5.0, gt=0.0, le=120)
    lockout: LockoutConfig = Field(default_factory=LockoutConfig)


class LivenessConfig(_Section):
    #: Passive liveness over each face track (`edged.vision.liveness`): a printed photo or a screen is not a
    #: live person. Needs the MiniFASNet models (`edged models fetch minifasnet`) and dlib's 68-point landmarks.
    enabled: bool = False
    #: What a "live" verdict needs: texture (MiniFASNet) and motion (a blink or 3-D parallax) = texture+motion;
    #: texture+blink; texture alone; motion alone.
    require: Literal["texture+motion", "texture+blink", "texture", "motion"] = "texture+motion"
    #: Feed every Nth processed frame of a track to liveness (blinks last 0.1-0.3 s: keep >= 12 per second).
    every_n_frames: int = Field(1, ge=1, le=100)
    #: Run the texture models on every Nth fed frame only (7-15 ms per face on one core, on a worker thread in the
    #: daemon; blink + parallax ~0.7 ms).
    texture_every_n: int = Field(10, ge=1, le=1000)
    #: No verdict before this many fed frames...
    min_frames: int = Field(5, ge=1, le=10000)
    #: ...and this long after the track's first fed frame (seconds).
    min_seconds: float = Field(0.5, ge=0.0, le=600)
    #: Refused (live false) when the motion cue has shown nothing this long after the first fed frame (seconds);
    #: a blink later still turns the verdict live.
    max_seconds: float = Field(5.0, ge=0.1, le=3600)
    #: Texture passes when the median real-probability of the track's recent samples is at least this.
    texture_min: float = Field(0.5, ge=0.0, le=1.0)
    #: Texture samples needed before the texture cue decides.
    texture_samples: int = Field(3, ge=1, le=1000)
    #: Parallax passes at this score: the landmarks' residual to one homography between frames (a plane's
    #: motion) in units of the track's own landmark noise (photos measured 1.2-2.4, live people 3.6-6.2).
    parallax_min: float = Field(3.0, ge=1.0, le=100.0)
    #: ONNX Runtime threads of the texture models (per call).
    threads: int = Field(1, ge=1, le=64)
    #: The 68-point landmarks of the blink and parallax cues: the first `landmark_stages` of the 15 stages of
    #: dlib's model, each with its first `landmark_trees` of 500 regression trees (`edged.vision.landmark_trees`).
    #: Fewer is faster (15 x 150: ~4x) but weakens the motion cue where the daemon follows a face between
    #: detections (motion alone accepted 1 of 83 photo attacks with the full model, 4 at 15 x 250, 9 at 15 x 150;
    #: texture+motion refused all 83 at 15 x 150): for slow boxes that keep texture+motion (docs/liveness.md).
    landmark_stages: int = Field(15, ge=1, le=15)
    landmark_trees: int = Field(500, ge=10, le=500)


class TLSConfig(_Section):
    enabled: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    #: Skip hostname verification (test setups only).
    insecure: bool = False


class MQTTConfig(_Section):
    #: Publish to a broker (off: events go only to the other outputs).
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    #: Stable client id (clean session off): default edged-<device_id>.
    client_id: str | None = None
    username: str | None = None
    #: Secret: never in repr() nor in any error message (see `mqtt_password` for the other sources).
    password: str | None = Field(None, repr=False, json_schema_extra={"secret": True})
    password_file: str | None = None
    tls: TLSConfig = Field(default_factory=TLSConfig)
    keepalive_s: int = Field(30, ge=5, le=3600)
    topic_prefix: str = Field("edged", pattern=r"^[^#+\s]+$", json_schema_extra=_hint(_TOPIC_HINT))
    qos: int = Field(1, ge=0, le=2)
    #: Events kept in memory while the broker is unreachable (oldest dropped beyond).
    queue_max: int = Field(1000, ge=1, le=1_000_000)
    #: Longest pause between reconnect attempts to the broker (seconds, backoff from 1 s).
    reconnect_max_s: float = Field(30.0, ge=1.0, le=3600)


class HomeAssistantConfig(_Section):
    enabled: bool = True
    discovery_prefix: str = Field("homeassistant", pattern=r"^[^#+\s]+$", json_schema_extra=_hint(_TOPIC_HINT))


class PresenceConfig(_Section):
    #: A person goes "absent" after this long without a sighting (seconds).
    absent_after_s: float = Field(60.0, ge=1.0, le=86400)


class SnapshotConfig(_Section):
    enabled: bool = False
    #: face: the face crop; frame: the whole frame.
    kind: Literal["face", "frame"] = "face"
    jpeg_quality: int = Field(85, ge=10, le=100)


class WebTLSConfig(_Section):
    #: PEM certificate and key; with both, the page is served over HTTPS (and the session cookie is Secure).
    cert_file: str | None = None
    key_file: str | None = None


class WebConfig(_Section):
    """The local web page and REST API (`edged.web`): off unless enabled, loopback unless `bind` says otherwise."""

    enabled: bool = False
    bind: str = Field("127.0.0.1", min_length=1, max_length=255)
    port: int = Field(8080, ge=1, le=65535)
    tls: WebTLSConfig = Field(default_factory=WebTLSConfig)
    #: The password hash and API tokens (argon2 / SHA-256, 0600); default: beside the gallery, `<gallery>.web-auth`.
    auth_file: str | None = None
    #: A login session lasts this long (hours).
    session_hours: float = Field(12.0, gt=0.0, le=24 * 90)
    #: Live view frames per second sent to each browser (JPEG), at most.
    live_fps: float = Field(5.0, ge=0.5, le=30.0)
    #: JPEG quality of the live view.
    live_jpeg_quality: int = Field(70, ge=10, le=100)
    #: Events kept in the gallery file for the page (the oldest beyond are deleted), and for how long (days).
    events_max: int = Field(10_000, ge=10, le=1_000_000)
    events_retention_days: float = Field(30.0, gt=0.0, le=3650)
    #: Keep a small face thumbnail (112 px JPEG) with each recognized/unknown event (biometric data).
    event_thumbnails: bool = True
    #: Largest upload (one photo), MiB.
    upload_max_mib: float = Field(10.0, gt=0.0, le=64.0)
    #: Failed logins from one address before it must wait (doubling from `login_backoff_s`).
    login_attempts: int = Field(5, ge=1, le=1000)
    login_backoff_s: float = Field(30.0, gt=0.0, le=86400)


class FleetConfig(_Section):
    """Boxes with the same `id` share their gallery over the MQTT broker (`edged.fleet`); off unless enabled."""

    enabled: bool = False
    id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$",
                           json_schema_extra=_hint("1-64 letters, digits, '_' or '-'"))
    #: This box's name in the fleet (default: `device_id`).
    box_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$",
                               json_schema_extra=_hint("1-64 letters, digits, '_' or '-'"))
    #: The keys (`edged fleet init/join`); default: beside the gallery, `<gallery dir>/fleet`.
    dir: str | None = None
    #: Records are retained under `<topic_prefix>/<id>/...`.
    topic_prefix: str = Field("edged/fleet", pattern=r"^[^#+\s]+$", json_schema_extra=_hint(_TOPIC_HINT))
    #: Send the enrolled face crops too (lets another box re-embed; more data, and more biometric data moving).
    sync_crops: bool = False
    #: How often the box looks for local gallery changes to publish (seconds).
    poll_s: float = Field(1.0, ge=0.1, le=3600)
    #: How often the box publishes its health (retained), and when `edged fleet status` calls a box stale.
    health_every_s: float = Field(30.0, ge=1.0, le=86400)
    stale_after_s: float = Field(120.0, ge=2.0, le=7 * 86400)
    #: Largest record accepted (KiB); a person with 10 samples is ~8 KiB without crops.
    max_record_kib: int = Field(4096, ge=16, le=65536)


class ModelsConfig(_Section):
    dir: str | None = None


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: auto: journald when started by systemd, else stderr.
    target: Literal["auto", "journald", "stderr"] = "auto"


class ServiceConfig(_Section):
    #: How often `edged run` updates systemd's STATUS= line and logs a summary (seconds).
    status_every_s: float = Field(5.0, ge=0.1, le=3600)
    #: A camera is "overloaded" when more than this fraction of its frames were dropped in the last minute:
    #: said in the log (once a minute), STATUS=, the MQTT status and Home Assistant's diagnostics.
    overload_drop_fraction: float = Field(0.05, ge=0.0, le=1.0)


class Config(_Section):
    device_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$",
                           json_schema_extra=_hint("1-64 letters, digits, '_' or '-'"))
    #: One camera; or `cameras:`, a list of them in one daemon (give one of the two). After validation both
    #: are set: `camera` is the first camera, `cameras` every camera.
    camera: CameraConfig | None = None
    cameras: list[CameraConfig] = Field(default_factory=list, max_length=64)
    gallery: GalleryConfig = Field(default_factory=GalleryConfig)
    mqtt: MQTTConfig = Field(default_factory=MQTTConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    match: MatchConfig = Field(default_factory=MatchConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    vote: VoteConfig = Field(default_factory=VoteConfig)
    enroll: EnrollConfig = Field(default_factory=EnrollConfig)
    unknowns: UnknownsConfig = Field(default_factory=UnknownsConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    liveness: LivenessConfig = Field(default_factory=LivenessConfig)
    access: AccessConfig = Field(default_factory=AccessConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    homeassistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig)
    presence: PresenceConfig = Field(default_factory=PresenceConfig)
    snapshots: SnapshotConfig = Field(default_factory=SnapshotConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)

    @model_validator(mode="after")
    def _one_camera_form(self) -> Config:
        if self.camera is None and self.cameras:
            self.__dict__["camera"] = self.cameras[0]
        elif self.camera is not None and not self.cameras:
            self.__dict__["cameras"] = [self.camera]
        elif self.camera is None:
            raise ValueError("needs camera: (one camera) or cameras: (a list of cameras)")
        return self

    def model_copy(self, *, update: typing.Mapping[str, Any] | None = None, deep: bool = False) -> Config:
        """A copy with changes; `camera` (the first camera) and `cameras` stay in step."""
        changes = dict(update or {})
        if "camera" in changes and "cameras" not in changes:
            changes["cameras"] = [changes["camera"], *self.cameras[1:]]
        elif "cameras" in changes and "camera" not in changes:
            changes["camera"] = changes["cameras"][0]
        return super().model_copy(update=changes, deep=deep)

    @property
    def multi_camera(self) -> bool:
        return len(self.cameras) > 1

    def camera_named(self, name: str) -> CameraConfig:
        return next(c for c in self.cameras if c.name == name)

    def entrance_of(self, camera: str) -> str:
        """The entrance (door) a camera watches: its `door:`, else the access door that lists it, else (one camera
        and a door listing none) that door, else the camera's own name."""
        cam = self.camera_named(camera)
        if cam.door:
            return cam.door
        for door, d in self.access.doors.items():
            if camera in d.cameras:
                return door
        if not self.multi_camera:
            for door, d in self.access.doors.items():
                if not d.cameras:
                    return door
        return camera


class ConfigErrors(ConfigError):
    """All problems of one config file; `problems` holds one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(problems[0] if len(problems) == 1 else f"{len(problems)} problems: " + "; ".join(problems))


# ---- YAML with line numbers ----

_STD_TAG = "tag:yaml.org,2002:"
#: Explicit tags a config may use (`!!str 0123`); any other (`!!python/name:...`, `!local`, `!!binary`) is refused.
_ALLOWED_TAGS = {None, "!", *(_STD_TAG + t for t in ("str", "int", "float", "bool", "null", "seq", "map"))}


class _Refused(Exception):
    """YAML a config never needs (an alias, a foreign tag, deep nesting), at `mark`."""

    def __init__(self, mark: yaml.Mark, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


def _short_tag(tag: str | None) -> str:
    tag = tag or "?"
    return "!!" + tag[len(_STD_TAG):] if tag.startswith(_STD_TAG) else tag


class _Loader(yaml.SafeLoader):
    """SafeLoader that composes only plain data: no anchors or aliases (so no "billion laughs"), only the
    standard scalar/collection tags, at most `MAX_YAML_DEPTH` levels of nesting. Checked on the event stream,
    before anything is built."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(event.start_mark, f"YAML aliases are not allowed (*{event.anchor})")
        if event.anchor is not None:
            raise _Refused(event.start_mark, f"YAML aliases are not allowed (anchor &{event.anchor})")
        tag = getattr(event, "tag", None)
        if tag not in _ALLOWED_TAGS:
            raise _Refused(event.start_mark, f"YAML tag {_short_tag(tag)} is not allowed")
        if not isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _Refused(event.start_mark, f"YAML nested deeper than {MAX_YAML_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _compose(text: str, name: str) -> tuple[Any, dict[tuple[str, ...], int]]:
    """Parse YAML into plain values and a map from key path to (1-based) line."""
    loader: _Loader | None = None
    try:
        try:
            loader = _Loader(text)
            node = loader.get_single_node()
        except _Refused as exc:
            raise ConfigErrors([f"{name}: line {exc.mark.line + 1}: {exc.message}"]) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}:" if mark else ""
            what = " ".join(str(getattr(exc, "problem", None) or exc).split())
            raise ConfigErrors([f"{name}:{where} invalid YAML: {what}"]) from None  # its snippet may hold a secret
        lines: dict[tuple[str, ...], int] = {}
        if node is None:
            return {}, lines
        return _plain(node, loader, name, lines), lines
    finally:
        if loader is not None:
            loader.dispose()


def _plain(node: yaml.Node, loader: _Loader, name: str, lines: dict[tuple[str, ...], int]) -> Any:
    """The plain value of a composed `node`, recording the line of every key in `lines`."""

    def where(n: yaml.Node, path: tuple[str, ...]) -> str:
        return f"{name}: line {n.start_mark.line + 1}: {'.'.join(map(_key, path)) or '(top level)'}"

    def walk(n: yaml.Node, path: tuple[str, ...]) -> Any:
        lines[path] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in n.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise ConfigErrors([f"{where(key_node, path)}: a key must be a plain name, not a "
                                        f"{'list' if isinstance(key_node, yaml.SequenceNode) else 'mapping'}"])
                key = str(key_node.value)
                lines[(*path, key)] = key_node.start_mark.line + 1
                if key in out:
                    raise ConfigErrors([f"{where(key_node, (*path, key))}: duplicate key"])
                out[key] = walk(value_node, (*path, key))
                lines[(*path, key)] = key_node.start_mark.line + 1  # the key's line, not its value's
            return out
        if isinstance(n, yaml.SequenceNode):
            return [walk(v, (*path, str(i))) for i, v in enumerate(n.value)]
        with contextlib.suppress(Exception):  # a bad `!!int x`, an impossible date...: one problem, no traceback
            return loader.construct_object(n, deep=True)
        # raised outside the failure, so no chained exception carries the value (it may be a secret)
        raise ConfigErrors([f"{where(n, path)}: cannot read the value as {_short_tag(n.tag)} "
                            f"(quote it to make it a string)"])

    return walk(node, ())


# ---- validation: pydantic's errors in our words ----

def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if _is_section(tp):
        return "mapping"
    return {int: "integer", float: "number", str: "string", bool: "true/false"}.get(tp, str(tp))


def _without_none(tp: Any) -> Any:
    """`X | None` -> X (pydantic validates it as a nullable X: no union member in the error's loc)."""
    if get_origin(tp) in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if len(options) == 1:
            return options[0]
    return tp


#: Longest value echoed into a problem (longer ones are cut, saying how long they were).
SHOW_MAX = 80


def _show(raw: Any) -> str:
    """A value for a problem line: printable, one line, bounded (a huge integer has no repr past 4,300 digits)."""
    if isinstance(raw, dict):
        return "a mapping"
    if isinstance(raw, list):
        return "a list"
    if raw is None:
        return "nothing (null)"
    try:
        text = repr(raw)
    except ValueError:
        return "an integer too large to show"
    return text if len(text) <= SHOW_MAX else f"{text[:SHOW_MAX - 20]}... ({len(text)} characters)"


def _key(part: str) -> str:
    """One key of a problem's path, printable on one line."""
    text = part if part.isprintable() else repr(part)
    return text if len(text) <= SHOW_MAX else f"{text[:SHOW_MAX - 20]}... ({len(text)} characters)"


def _kind(raw: Any) -> str:
    """What `raw` is, without its value (for secrets)."""
    if isinstance(raw, bool):
        return "true/false"
    if isinstance(raw, int):
        return "an integer"
    if isinstance(raw, float):
        return "a number"
    if isinstance(raw, str):
        return "a string"
    return _show(raw) if isinstance(raw, dict | list) or raw is None else f"a {type(raw).__name__}"


class _Report:
    """The problems of one file, one line each: `"<file>: line N: key.path: message"`."""

    def __init__(self, name: str, lines: dict[tuple[str, ...], int]) -> None:
        self.name = name
        self.lines = lines
        self.problems: list[str] = []

    def problem(self, path: tuple[str, ...], message: str) -> None:
        probe = path  # the line of the key, else of the nearest enclosing key that is in the file
        while probe and probe not in self.lines:
            probe = probe[:-1]
        line = self.lines.get(probe)
        where = f" line {line}:" if line else ""
        self.problems.append(f"{self.name}:{where} {'.'.join(map(_key, path)) or '(top level)'}: {message}")


class _Where(typing.NamedTuple):
    path: tuple[str, ...]     # the key path in the file (pydantic's union member tags dropped)
    key_len: int              # path[:key_len] is the deepest section key (what `_partial` replaces)
    tp: Any                   # the declared type of what failed (None: an unknown key)
    field: Any                # its pydantic FieldInfo when it is a section key itself, else None
    owner: type[BaseModel]    # the section holding the last key


def _locate(loc: tuple[int | str, ...]) -> _Where:
    """Follow an error's `loc` through the schema, from `Config`."""
    tp: Any = Config
    owner: type[BaseModel] = Config
    field: Any = None
    path: list[str] = []
    key_len = 0
    for item in loc:
        here = _without_none(tp)
        field = None
        if _is_section(here):
            owner = here
            field = here.model_fields.get(str(item))
            tp = field.annotation if field is not None else None
            path.append(str(item))
            key_len = len(path)
        elif get_origin(here) is list:
            tp = get_args(here)[0]
            path.append(str(item))
        elif get_origin(here) in (Union, types.UnionType) and isinstance(item, str):
            continue  # pydantic names the union member it tried: `camera.source.int`
        else:
            tp = None
            path.append(str(item))
    return _Where(tuple(path), key_len, tp, field, owner)


_BOUNDS = {"greater_than_equal": (">=", "ge"), "less_than_equal": ("<=", "le"),
           "greater_than": (">", "gt"), "less_than": ("<", "lt")}


def _extra(field: Any, key: str) -> Any:
    extra = getattr(field, "json_schema_extra", None)
    return extra.get(key) if isinstance(extra, dict) else None


def _message(err: Any, at: _Where) -> str:
    kind, raw, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "missing":
        return "required key missing"
    if kind == "extra_forbidden":
        known = list(at.owner.model_fields)
        close = [k for k in known if k.startswith(at.path[-1][:3])]
        return "unknown key" + (f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(known)})")
    secret = bool(_extra(at.field, "secret"))
    shown = f"{_kind(raw)} (not shown)" if secret else _show(raw)
    base = _without_none(at.tp)
    if kind in _BOUNDS:
        op, name = _BOUNDS[kind]
        # the bound as written in the schema (pydantic's ctx has it converted to the field's type)
        bound = next((getattr(m, name) for m in getattr(at.field, "metadata", ()) if hasattr(m, name)),
                     ctx.get(name))
        try:
            value = float(raw) if base is float and isinstance(raw, int | float) else raw
        except OverflowError:
            value = raw
        return f"must be {op} {bound}, got {'a value (not shown)' if secret else _show(value)}"
    if kind == "string_pattern_mismatch":
        return f"{shown} is not allowed: {_extra(at.field, 'hint') or 'must match ' + str(ctx.get('pattern'))}"
    if kind == "finite_number":
        return f"must be a finite number, got {shown}"
    if _is_section(base):
        return f"expected a mapping, got {shown}"
    if get_origin(base) is Literal:
        return f"must be one of {', '.join(map(str, get_args(base)))}, got {shown}"
    if kind == "value_error" and ctx.get("error") is not None:
        return str(ctx["error"])
    if at.tp is not None and (kind.endswith("_type") or kind.endswith("_parsing")):
        return f"expected {_type_name(at.tp)}, got {shown}"
    msg = str(err.get("msg") or kind)
    return msg[:1].lower() + msg[1:]


#: Errors about a value of the right type (out of range, not matching the pattern): the old validator kept
#: such values for the semantic checks, and so does `_partial`.
_KEEP = {*_BOUNDS, "string_pattern_mismatch"}


def _validate(raw: dict[str, Any], report: _Report) -> Config | None:
    """The config, with every pydantic error reported. When there are errors: the config the semantic checks
    can still look at (`_partial`), or None when a required key is missing or unusable."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    seen: set[tuple[str, ...]] = set()
    bad: dict[tuple[str, ...], bool] = {}  # section key -> its value is unusable (else: kept, see _KEEP)
    for err in errors:
        if not err["loc"]:
            continue  # the camera form (`Config._one_camera_form`): said by `parse_config`
        at = _locate(err["loc"])
        message = _message(err, at)
        if at.path not in seen:  # a union reports once per member: the first (its type) says it
            seen.add(at.path)
            report.problem(at.path, message)
        key = at.path[:at.key_len]
        bad[key] = bad.get(key, False) or err["type"] not in _KEEP or len(at.path) > at.key_len
    return _partial(Config, raw, (), bad)


def _partial(cls: type[_Section], data: dict[str, Any], prefix: tuple[str, ...],
             bad: dict[tuple[str, ...], bool]) -> Any:
    """`cls` from data that failed validation, unvalidated (`model_construct`): an unusable value (wrong type,
    unknown choice) is replaced by its default, like the old validator did; None if that value is required."""
    values: dict[str, Any] = {}
    for name, f in cls.model_fields.items():
        path = (*prefix, name)
        if name not in data or bad.get(path):
            if f.is_required():
                return None
            continue
        value = data[name]
        tp = _without_none(f.annotation)
        if _is_section(tp) and (value is not None or tp is not f.annotation):
            value = None if value is None else _partial(tp, value or {}, path, bad)
            if value is None and tp is f.annotation:
                return None
        elif get_origin(tp) is list and _is_section(get_args(tp)[0]):
            if not isinstance(value, list):
                continue
            items = [_partial(get_args(tp)[0], item, (*path, str(i)), bad) if isinstance(item, dict) else None
                     for i, item in enumerate(value)]
            value = [item for item in items if item is not None]
        values[name] = value
    if cls is Config:
        if values.get("camera") is None and not values.get("cameras"):
            return None
        values.setdefault("cameras", [values["camera"]] if values.get("camera") is not None else [])
        if values.get("camera") is None:
            values["camera"] = values["cameras"][0]
    return cls.model_construct(**values)


def _camera_key(i: int, listed: bool) -> tuple[str, ...]:
    """The key path of the i-th camera: `cameras.<i>` (the list form) or `camera`."""
    return ("cameras", str(i)) if listed else ("camera",)


def _camera_checks(cfg: Config, v: _Report, listed: bool) -> None:
    """Each camera's values, and their names (unique: they key topics, stats and doors)."""
    first: dict[str, int] = {}
    for i, cam in enumerate(cfg.cameras):
        at = _camera_key(i, listed)
        roi = cam.roi
        if roi is not None and (len(roi) != 4 or any(not isinstance(x, int) for x in roi) or min(roi) < 0
                                or roi[2] <= roi[0] or roi[3] <= roi[1]):
            v.problem((*at, "roi"), "must be [left, top, right, bottom] in pixels (>= 0) with right > left "
                                    "and bottom > top")
        if isinstance(cam.source, int) and cam.source < 0:
            v.problem((*at, "source"), f"a camera index must be >= 0, got {cam.source}")
        if isinstance(cam.source, str) and not cam.source.strip():
            v.problem((*at, "source"), "must not be empty")
        if cam.reconnect_min_s > cam.reconnect_max_s:
            v.problem((*at, "reconnect_min_s"), f"must be <= {'.'.join(at)}.reconnect_max_s ({cam.reconnect_max_s})")
        if cam.name in first:
            v.problem((*at, "name"), f"duplicate camera name {cam.name!r} (also cameras.{first[cam.name]}); "
                                     "every camera needs its own name")
        first.setdefault(cam.name, i)


def _semantic_checks(cfg: Config, v: _Report, listed: bool = False) -> None:
    """Checks across keys; `listed`: the cameras came as `cameras:` (a list)."""
    _camera_checks(cfg, v, listed)
    if cfg.vote.k > cfg.vote.m:
        v.problem(("vote", "k"), f"must be <= vote.m ({cfg.vote.m}), got {cfg.vote.k}")
    allowed = {"dlib": ("auto", "onnxruntime", "dlib"), "nn4": ("auto", "torch", "onnxruntime", "onnxruntime-int8")}
    if cfg.embedder.backend not in allowed[cfg.embedder.name]:
        v.problem(("embedder", "backend"), f"{cfg.embedder.backend} is not a backend of the {cfg.embedder.name} "
                                           f"embedder (choose from {', '.join(allowed[cfg.embedder.name])})")
    tls = cfg.mqtt.tls
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key)
        if path and not Path(path).expanduser().is_file():
            v.problem(("mqtt", "tls", key), f"file not found: {path}")
    if bool(tls.cert_file) != bool(tls.key_file):
        v.problem(("mqtt", "tls", "cert_file"), "cert_file and key_file must be given together")
    if cfg.mqtt.password and cfg.mqtt.password_file:
        v.problem(("mqtt", "password_file"), "give either password or password_file, not both")
    if cfg.mqtt.password_file and not Path(cfg.mqtt.password_file).expanduser().is_file():
        v.problem(("mqtt", "password_file"), f"file not found: {cfg.mqtt.password_file}")
    wtls = cfg.web.tls
    for key in ("cert_file", "key_file"):
        path = getattr(wtls, key)
        if path and not Path(path).expanduser().is_file():
            v.problem(("web", "tls", key), f"file not found: {path}")
    if bool(wtls.cert_file) != bool(wtls.key_file):
        v.problem(("web", "tls", "cert_file"), "cert_file and key_file must be given together")
    _access_checks(cfg, v, listed)
    if cfg.fleet.enabled:
        if not cfg.fleet.id:
            v.problem(("fleet", "id"), "required when fleet.enabled is true (the id every box of the fleet shares)")
        if not cfg.mqtt.enabled:
            v.problem(("fleet", "enabled"), "the fleet syncs over MQTT: needs mqtt.enabled true")
    if cfg.fleet.stale_after_s <= cfg.fleet.health_every_s:
        v.problem(("fleet", "stale_after_s"), f"must be more than fleet.health_every_s ({cfg.fleet.health_every_s:g}):"
                                              " every box would look stale between two health messages")


def fleet_dir(cfg: Config, gallery: str | os.PathLike[str] | None = None) -> Path:
    """Where this box's fleet keys live: `fleet.dir`, else `fleet/` beside the gallery file."""
    if cfg.fleet.dir:
        return Path(cfg.fleet.dir).expanduser()
    return Path(gallery or cfg.gallery.path).expanduser().parent / "fleet"


def fleet_box(cfg: Config) -> str:
    """This box's id in the fleet: `fleet.box_id`, else `device_id`."""
    return cfg.fleet.box_id or cfg.device_id


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _access_checks(cfg: Config, v: _Report, listed: bool) -> None:
    """Doors, groups, windows, time zone and GPIO chips of the access section (people are checked against the
    gallery at start: `edged.runtime.access.check_people`)."""
    a = cfg.access
    if not a.enabled:
        return
    try:
        import zoneinfo

        zoneinfo.ZoneInfo(a.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        v.problem(("access", "timezone"), f"unknown time zone {a.timezone!r} (an IANA name like Europe/Berlin)")
    if not a.doors:
        v.problem(("access", "doors"), "needs at least one door")
    names = [c.name for c in cfg.cameras]
    for i, cam in enumerate(cfg.cameras):
        if cam.door is not None and cam.door not in a.doors:
            v.problem((*_camera_key(i, listed), "door"),
                      f"no door named {cam.door!r} in access.doors ({', '.join(a.doors)})")
    for door, d in a.doors.items():
        for i, camera in enumerate(d.cameras):
            if camera not in names:
                v.problem(("access", "doors", door, "cameras", str(i)),
                          f"no camera named {camera!r} (cameras: {', '.join(names)})")
        watched = d.cameras or [c.name for c in cfg.cameras if c.door == door]
        if not watched and cfg.multi_camera:
            v.problem(("access", "doors", door), f"door {door!r} has no camera: list them in "
                      f"access.doors.{door}.cameras or set door: {door} on a camera")
        for key, pin in (("unlock_gpio", d.unlock_gpio), ("contact", d.contact)):
            if pin is not None and not Path(pin.chip).exists():
                v.problem(("access", "doors", door, key, "chip"), f"no GPIO chip {pin.chip} on this machine")
    for group, members in a.groups.items():
        if not members:
            v.problem(("access", "groups", group), "a group needs at least one person")
    for i, rule in enumerate(a.rules):
        at = ("access", "rules", str(i))
        for j, door in enumerate(rule.doors):
            if door not in a.doors:
                v.problem((*at, "doors", str(j)), f"no door named {door!r} (access.doors: {', '.join(a.doors)})")
        for j, group in enumerate(rule.groups):
            if group not in a.groups:
                v.problem((*at, "groups", str(j)), f"no group named {group!r} in access.groups")
        if not rule.people and not rule.groups:
            v.problem(at, f"rule {rule.name!r} names nobody (people or groups)")
        if rule.require_liveness and not cfg.liveness.enabled:
            v.problem((*at, "require_liveness"), f"rule {rule.name!r} grants only to a live face but liveness.enabled "
                      "is false: enable liveness (edged models fetch minifasnet) or set require_liveness: false")
        spans: list[tuple[int, int, int, int]] = []
        for j, w in enumerate(rule.windows):
            start, end = _minutes(w.start), _minutes(w.end)
            if end <= start:
                v.problem((*at, "windows", str(j), "end"), f"must be after start ({w.start}), got {w.end}")
                continue
            for day in w.days or DAYS:
                for other_day, s, e, jj in spans:
                    if other_day == DAYS.index(day) and start < e and s < end:
                        v.problem((*at, "windows", str(j)), f"overlaps window {jj} on {day}")
                spans.append((DAYS.index(day), start, end, j))


def parse_config(text: str, name: str = "<config>") -> Config:
    """Validate YAML text; raises `ConfigErrors` listing every problem."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigErrors([f"{name}: too large ({len(text)} characters; a config is at most 1 MiB)"])
    raw, lines = _compose(text, name)
    v = _Report(name, lines)
    if not isinstance(raw, dict):
        v.problem((), f"expected a mapping at the top level, got {_show(raw)}")
        raise ConfigErrors(v.problems)
    cfg = _validate(raw, v)
    if "camera" in raw and "cameras" in raw:
        v.problem(("cameras",), "give either camera: (one camera) or cameras: (a list of cameras), not both")
    elif raw.get("camera") is None and not raw.get("cameras"):
        v.problem(("cameras",) if "cameras" in raw else ("camera",),
                  "must list at least one camera" if "cameras" in raw else
                  "required key missing (or cameras:, a list of cameras)")
    if cfg is not None:
        _semantic_checks(cfg, v, listed="cameras" in raw)
    if v.problems or cfg is None:
        raise ConfigErrors(sorted(v.problems, key=_line_of) or [f"{name}: invalid configuration"])
    return cfg


def _line_of(problem: str) -> int:
    found = re.search(r": line (\d+):", problem)
    return int(found.group(1)) if found else 0


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML config file."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)  # never more: /dev/zero or a huge file is refused, not read
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigErrors([f"{p}: too large (a config is at most 1 MiB)"])
        text = data.decode("utf-8")
    except FileNotFoundError as exc:
        raise ConfigErrors([f"{p}: no such file"]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigErrors([f"{p}: cannot read ({exc})"]) from exc
    return parse_config(text, str(p))


def mqtt_password(cfg: MQTTConfig, environ: typing.Mapping[str, str] | None = None) -> str | None:
    """The MQTT password: config, then $EDGED_MQTT_PASSWORD, password_file, $CREDENTIALS_DIRECTORY."""
    env = os.environ if environ is None else environ
    if cfg.password:
        return cfg.password
    if env.get("EDGED_MQTT_PASSWORD"):
        return env["EDGED_MQTT_PASSWORD"]
    candidates = []
    if cfg.password_file:
        candidates.append(Path(cfg.password_file).expanduser())
    if env.get("CREDENTIALS_DIRECTORY"):
        candidates.append(Path(env["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME)
    for path in candidates:
        if path.is_file():
            return path.read_text(encoding="utf-8").rstrip("\r\n")
    return None


def default_config(source: int | str = 0, device_id: str = "edged") -> Config:
    """A config with every default (for CLI commands run without a config file)."""
    return Config(device_id=device_id, camera=CameraConfig(source=source))
