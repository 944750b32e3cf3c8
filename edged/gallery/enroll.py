"""Enrollment: turning images, folders and videos into gallery samples, with quality gates.

The stored crop ("canonical crop") is embedder-independent so that `gallery reembed` can serve
any embedder: the image rotated about the face-box centre so the eyes are level (roll
corrected) and scaled so the detector box is `CROP_FACE_PX` wide, centred in a
`CROP_SIZE` x `CROP_SIZE` RGB crop. That leaves half a face of margin on every side, enough
for dlib's 150 px chip (25 % padding) and OpenFace's 96 px alignment. At re-embed time the
target embedder's landmark predictor runs on the crop inside `CROP_FACE_BOX` and its own
alignment follows, exactly as on a full photo. No full photo is ever stored.

Quality gates (in this order; the first that fails is the reason): no face; more than one face
(unless `largest`); face smaller than `min_face_px`; too blurry (variance of the Laplacian
of the face region of the canonical crop below `blur_min`); near-duplicate (squared L2 below
`duplicate_max`) of a stored sample or of one accepted earlier in the same command.

Videos: every k-th frame is examined (at most ~5 per second, k also grows for long videos so
about 6 x `video_samples` frames are looked at); frames passing the gates are ranked by
quality = face width x sqrt(sharpness) and the best `video_samples` that are not
near-duplicates of each other are kept. A camera (`edged enroll NAME --camera`) is treated the
same way for a number of seconds: at most ~5 frames per second are examined, the others are read
and dropped so that the examined frame is always the newest.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from edged.camera.source import FrameSource
from edged.config import EmbedderConfig, EnrollConfig, MatchConfig
from edged.distance import squared_l2
from edged.embed.base import Embedder
from edged.embed.faces import FacePipeline
from edged.errors import EdgedError, ImageError
from edged.fileio import shown
from edged.gallery.match import MatchRule
from edged.gallery.store import Gallery, GallerySnapshot, NewSample, ensure_directory, validate_name
from edged.types import Box
from edged.vision.align import FaceAligner
from edged.vision.imageio import IMAGE_EXTENSIONS, decode_image, encode_png, load_image

log = logging.getLogger(__name__)

CROP_SIZE = 224
CROP_FACE_PX = 112
CROP_FORMAT = f"edged-face-{CROP_SIZE}-roll-{CROP_FACE_PX}px-v1"
_off = (CROP_SIZE - CROP_FACE_PX) // 2
#: Where the detector box lies in a canonical crop.
CROP_FACE_BOX = Box(_off, _off, _off + CROP_FACE_PX, _off + CROP_FACE_PX)
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv"})
#: Videos: examine at most this many frames per second.
VIDEO_MAX_FPS = 5.0
#: Videos: examine about this many frames per wanted sample.
VIDEO_FRAMES_PER_SAMPLE = 6

#: Rejection reasons, as printed.
NO_FACE = "no face"
MULTIPLE_FACES = "more than one face"
TOO_SMALL = "face too small"
TOO_BLURRY = "too blurry"
DUPLICATE = "near-duplicate"
UNREADABLE = "unreadable"


# ---- pure helpers ----

def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image-left eye, image-right eye) centres from dlib 68- or 5-point landmarks."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if len(pts) == 68:
        return pts[36:42].mean(axis=0), pts[42:48].mean(axis=0)
    if len(pts) == 5:
        return pts[2:4].mean(axis=0), pts[0:2].mean(axis=0)
    raise ValueError(f"expected 68 or 5 landmarks, got {len(pts)}")


def canonical_transform(box: Box, landmarks: np.ndarray) -> np.ndarray:
    """2x3 similarity: image -> canonical crop (eyes level, box centre to crop centre, box width to CROP_FACE_PX)."""
    left, right = eye_centres(landmarks)
    angle = float(np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0])))
    scale = CROP_FACE_PX / max(box.width, box.height, 1)
    cx, cy = box.center
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    matrix[0, 2] += CROP_SIZE / 2.0 - cx
    matrix[1, 2] += CROP_SIZE / 2.0 - cy
    return matrix


def canonical_crop(image: np.ndarray, box: Box, landmarks: np.ndarray) -> np.ndarray:
    """The stored crop of one face (CROP_SIZE square RGB uint8; outside the photo is black)."""
    matrix = canonical_transform(box, landmarks)
    return cv2.warpAffine(image, matrix, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_AREA
                          if box.width > CROP_FACE_PX else cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian over the face region of a canonical crop (higher = sharper)."""
    b = CROP_FACE_BOX
    grey = cv2.cvtColor(np.ascontiguousarray(crop[b.top:b.bottom, b.left:b.right]), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def quality(face_px: int, sharp: float) -> float:
    """Ranking score for video frames: bigger and sharper is better."""
    return float(face_px) * float(np.sqrt(max(sharp, 0.0)))


def pick_face(boxes: Sequence[Box], largest: bool) -> Box | str:
    """The face to enroll from one picture, or the rejection reason."""
    if not boxes:
        return NO_FACE
    if len(boxes) > 1 and not largest:
        return f"{MULTIPLE_FACES} ({len(boxes)} found; --largest takes the largest)"
    return max(boxes, key=lambda b: b.area)


def gate_face(face_px: int, sharp: float, cfg: EnrollConfig) -> str | None:
    """Size and blur gates; None when the face passes."""
    if face_px < cfg.min_face_px:
        return f"{TOO_SMALL} ({face_px} px < min_face_px {cfg.min_face_px})"
    if sharp < cfg.blur_min:
        return f"{TOO_BLURRY} (sharpness {sharp:.0f} < blur_min {cfg.blur_min:g})"
    return None


def nearest(vector: np.ndarray, others: np.ndarray) -> tuple[int, float]:
    """Index and squared L2 of the nearest row of `others` ((-1, inf) when empty)."""
    if len(others) == 0:
        return -1, float("inf")
    d = squared_l2(np.asarray(vector, np.float32)[None], others)[0]
    i = int(np.argmin(d))
    return i, float(d[i])


def select_distinct(vectors: np.ndarray, scores: np.ndarray, n: int, duplicate_max: float,
                    stored: np.ndarray | None = None) -> tuple[list[int], list[int], list[int]]:
    """Greedy best-first choice of at most `n` rows, none within `duplicate_max` of a chosen or stored one.

    Returns (kept, duplicates, surplus) row indices; kept is in decreasing score order.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    kept: list[int] = []
    dups: list[int] = []
    surplus: list[int] = []
    base = stored if stored is not None and len(stored) else np.zeros((0, vectors.shape[1]), np.float32)
    for i in order:
        if len(kept) >= n:
            surplus.append(int(i))
            continue
        ref = np.concatenate([base, vectors[kept]]) if kept else base
        if nearest(vectors[i], ref)[1] < duplicate_max:
            dups.append(int(i))
        else:
            kept.append(int(i))
    return kept, dups, surplus


# ---- sources ----

def is_video_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class SourceItem:
    """One input to process: an image file or a video, and whether it was named on the command line."""

    path: Path
    kind: str  # "image" or "video"
    explicit: bool


def expand_sources(sources: Sequence[str | os.PathLike[str]]) -> list[SourceItem]:
    """Images, directories (walked recursively, images only, sorted) and videos; bad paths raise ImageError."""
    items: list[SourceItem] = []
    for raw in sources:
        p = Path(raw)
        try:
            os.stat(p)
        except FileNotFoundError as exc:
            raise ImageError(f"{shown(p)}: no such file or directory") from exc
        except (OSError, ValueError) as exc:
            reason = "file name too long" if getattr(exc, "errno", None) == errno.ENAMETOOLONG else str(exc)
            raise ImageError(f"{shown(p)}: cannot read ({getattr(exc, 'strerror', None) or reason})") from exc
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ImageError(f"{shown(p)}: directory holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            items += [SourceItem(f, "image", False) for f in found]
        elif is_video_path(p):
            items.append(SourceItem(p, "video", True))
        elif p.suffix.lower() in IMAGE_EXTENSIONS:
            items.append(SourceItem(p, "image", True))
        else:
            raise ImageError(f"{shown(p)}: unsupported format (images: {', '.join(sorted(IMAGE_EXTENSIONS))}; "
                             f"videos: {', '.join(sorted(VIDEO_EXTENSIONS))})")
    return items


def video_step(fps: float, frames: int, wanted: int) -> int:
    """Examine every k-th frame: at most VIDEO_MAX_FPS per second, about VIDEO_FRAMES_PER_SAMPLE per wanted sample."""
    by_rate = round(fps / VIDEO_MAX_FPS) if fps > 0 else 1
    by_count = frames // (wanted * VIDEO_FRAMES_PER_SAMPLE) if frames > 0 else 1
    return max(1, by_rate, by_count)


def iter_camera_frames(source: FrameSource, seconds: float, max_fps: float = VIDEO_MAX_FPS,
                       clock: Callable[[], float] = time.monotonic) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, RGB frame) from an opened source for `seconds`, at most `max_fps` frames per
    second; the frames in between are read and dropped. A camera counts wall-clock time, a video
    file used as the camera its own video time (frame / fps). Ends early when the source does."""
    fps = source.fps
    start = clock()
    next_t = 0.0
    index = -1
    while True:
        frame = source.read()
        if frame is None:
            return
        index += 1
        t = index / fps if source.kind == "file" else clock() - start
        if t >= seconds:
            return
        if t >= next_t:
            next_t = t + 1.0 / max_fps
            yield index, frame


# ---- enrolling ----

@dataclass(frozen=True)
class Candidate:
    """A face that passed size and blur gates."""

    source: str
    face_px: int
    sharpness: float
    crop: np.ndarray
    embedding: np.ndarray


@dataclass
class EnrollReport:
    """What an enroll run found: samples to store and every rejection with its reason."""

    samples: list[NewSample] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    surplus: int = 0  # video frames that passed but were not needed
    #: Identity checks of the accepted samples against the gallery (see `identity_warnings`); enrollment
    #: still stores the samples unless `strict`.
    warnings: list[str] = field(default_factory=list)
    #: True when `strict` and a warning kept every sample out of the gallery.
    refused: bool = False

    def reason_counts(self) -> Counter[str]:
        return Counter(reason.split(" (")[0] for _, reason in self.rejected)


#: Progress of one video or camera: `on_frame(examined, planned)` after every frame examined; `planned` is how
#: many it will examine (from the file's frame count, or seconds x the frame rate of a camera: an estimate).
FrameProgress = Callable[[int, int], None]


class Enroller:
    """Runs the quality gates over sources and builds `NewSample`s (nothing is written here)."""

    def __init__(self, pipeline: FacePipeline, cfg: EnrollConfig, largest: bool = False,
                 stored: np.ndarray | None = None, on_frame: FrameProgress | None = None) -> None:
        self.pipeline = pipeline
        self.embedder = pipeline.embedder
        self.cfg = cfg
        self.largest = largest
        self.stored = stored if stored is not None else np.zeros((0, self.embedder.dim), np.float32)
        self.on_frame = on_frame

    def face_from_image(self, image: np.ndarray, source: str) -> Candidate | str:
        """Gate and embed the face of one picture; the reason string when rejected."""
        choice = pick_face(self.pipeline.detect(image), self.largest)
        if isinstance(choice, str):
            return choice
        box = choice
        face_px = min(box.width, box.height)
        if face_px < self.cfg.min_face_px:
            return gate_face(face_px, float("inf"), self.cfg) or ""
        [(_, marks, aligned)] = self.pipeline.align(image, [box])
        crop = canonical_crop(image, box, marks)
        sharp = sharpness(crop)
        reason = gate_face(face_px, sharp, self.cfg)
        if reason:
            return reason
        vector = (self.embedder.embed_mirror_averaged if self.cfg.mirror else self.embedder.embed)([aligned])[0]
        return Candidate(source, face_px, sharp, crop, vector)

    def _accepted(self, report: EnrollReport) -> np.ndarray:
        mine = np.array([s.embedding for s in report.samples], np.float32).reshape(-1, self.embedder.dim)
        return np.concatenate([self.stored, mine])

    def _dedupe_and_add(self, cand: Candidate, report: EnrollReport) -> str | None:
        _, dist = nearest(cand.embedding, self._accepted(report))
        if dist < self.cfg.duplicate_max:
            return f"{DUPLICATE} (distance {dist:.4f} < duplicate_max {self.cfg.duplicate_max:g})"
        report.samples.append(self._sample(cand))
        return None

    def _sample(self, cand: Candidate) -> NewSample:
        crop_png = encode_png(cand.crop) if self.cfg.keep_crops else None
        return NewSample(cand.embedding, self.embedder.name, self.embedder.version, cand.source, cand.face_px,
                         cand.sharpness, crop_png, CROP_FORMAT if crop_png else None)

    def run(self, items: Sequence[SourceItem],
            on_item: Callable[[SourceItem, str], None] | None = None) -> EnrollReport:
        """Process every source; `on_item(item, outcome)` is called after each one."""
        report = EnrollReport()
        for item in items:
            outcome = self._video(item, report) if item.kind == "video" else self._image(item, report)
            if on_item:
                on_item(item, outcome)
        return report

    def _image(self, item: SourceItem, report: EnrollReport) -> str:
        name = item.path.name
        try:
            image = load_image(item.path)
        except EdgedError as exc:
            if item.explicit:
                raise
            report.rejected.append((str(item.path), f"{UNREADABLE} ({exc})"))
            return f"rejected: {UNREADABLE}"
        result = self.face_from_image(image, name)
        reason = result if isinstance(result, str) else self._dedupe_and_add(result, report)
        if reason:
            report.rejected.append((str(item.path), reason))
            return f"rejected: {reason}"
        return "accepted"

    def _video(self, item: SourceItem, report: EnrollReport) -> str:
        with FrameSource.for_file(item.path) as video:
            step = video_step(video.fps, video.frame_count, self.cfg.video_samples)
            planned = -(-video.frame_count // step)
            return self.frames(str(item.path), video.frames(step), report, f"every {step}", planned)

    def camera(self, source: FrameSource, seconds: float, report: EnrollReport) -> str:
        """Examine an opened camera's frames for `seconds` (see `iter_camera_frames`) into `report`."""
        return self.frames(source.name, iter_camera_frames(source, seconds), report,
                           f"at most {VIDEO_MAX_FPS:g}/s for {seconds:g} s", max(1, round(seconds * VIDEO_MAX_FPS)))

    def frames(self, name: str, frames: Iterator[tuple[int, np.ndarray]], report: EnrollReport,
               sampling: str, planned: int = 0) -> str:
        """Gate every frame, then keep the best `video_samples` distinct faces; rejections are
        reported as `name#frameN`. `on_frame` hears of every frame examined (of about `planned`)."""
        candidates: list[Candidate] = []
        rejected_before = len(report.rejected)
        examined = 0
        for index, frame in frames:
            examined += 1
            result = self.face_from_image(frame, f"{Path(name).name}#frame{index}")
            if isinstance(result, str):
                report.rejected.append((f"{name}#frame{index}", result))
            else:
                candidates.append(result)
            if self.on_frame:
                self.on_frame(examined, planned)
        if examined == 0:
            raise ImageError(f"{name}: cannot read any frame")
        kept_n = 0
        if candidates:
            vectors = np.array([c.embedding for c in candidates], np.float32)
            scores = np.array([quality(c.face_px, c.sharpness) for c in candidates])
            kept, dups, surplus = select_distinct(vectors, scores, self.cfg.video_samples, self.cfg.duplicate_max,
                                                  self._accepted(report))
            for i in sorted(kept):
                report.samples.append(self._sample(candidates[i]))
            for i in dups:
                report.rejected.append((f"{name}#{candidates[i].source.rsplit('#', 1)[1]}", DUPLICATE))
            report.surplus += len(surplus)
            kept_n = len(kept)
        log.info("%s: examined %d frames (%s), kept %d", name, examined, sampling, kept_n)
        return (f"{examined} frames examined, {kept_n} kept, "
                f"{len(report.rejected) - rejected_before} rejected")


# ---- identity checks: does NAME look like NAME? ----

def identity_warnings(name: str, samples: Sequence[NewSample], snapshot: GallerySnapshot | None, rule: MatchRule,
                      same_person: float | None = None) -> list[str]:
    """Warnings about the identity of `samples` about to be added to `name`, against a gallery `snapshot`
    (None: no gallery yet), for the door's `rule` and the embedder's 1:1 "same person" distance
    `same_person` (`Embedder.threshold`; default the rule's threshold).

    A sample is *within the rule* of another person B when the rule, run on the gallery without `name`, names it
    B, or when it lies within `same_person` of one of B's samples. With own = `name`'s stored samples and the
    other new ones:

    * **probable duplicate identity**: at least half of `name`'s stored samples (of the new ones when `name` is
      new) are within the rule of B: "NAME and B look like one person (d): B is already enrolled; merge or
      remove one";
    * **looks like someone else**: a new sample within the rule of B, or nearer to B than to every own sample:
      "these photos look like B (d), not NAME[, nearest NAME sample d']: SOURCES" (grouped by B; not repeated
      for a duplicate B);
    * **outlier**: a new sample farther than `same_person` from every own sample (when there is one):
      "SOURCE is far from NAME's other samples (d > threshold t): another person or a bad photo?".

    d is the squared L2 to B's nearest sample.
    """
    from edged.gallery.calibrate import without

    limit = rule.threshold if same_person is None else same_person
    new = np.array([s.embedding for s in samples], np.float32).reshape(len(samples), -1)
    if len(new) == 0:
        return []
    dim = new.shape[1]
    labels = np.asarray(snapshot.labels if snapshot is not None else [], dtype=np.int64)
    vectors = (np.asarray(snapshot.vectors, np.float32).reshape(len(labels), dim) if snapshot is not None
               else np.zeros((0, dim), np.float32))
    names = (np.array(snapshot.names, dtype=object)[labels] if snapshot is not None and len(labels)
             else np.zeros(0, dtype=object))
    mine = names == name
    own_stored, other_vecs, other_names = vectors[mine], vectors[~mine], names[~mine]
    people = sorted(set(other_names.tolist()))
    own = np.concatenate([own_stored, new])
    to_own = squared_l2(new, own).astype(np.float64)
    to_own[np.arange(len(new)), len(own_stored) + np.arange(len(new))] = np.inf  # not the sample itself
    d_own = to_own.min(axis=1) if len(own) > 1 else np.full(len(new), np.inf)
    if not people:
        return [f"{samples[i].source} is far from {name}'s other samples ({float(d_own[i]):.3f} > threshold "
                f"{limit:.3f}): another person or a bad photo?"
                for i in np.nonzero(np.isfinite(d_own) & (d_own > limit))[0]]
    assert snapshot is not None
    matcher = replace(rule, method="knn").matcher(without(snapshot, name))

    def within(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Q, P) sample distances to each other person, and (Q, P) whether each query is within their rule."""
        per = np.stack([squared_l2(queries, other_vecs[other_names == p]).min(axis=1) for p in people], axis=1)
        hit = per <= limit
        for q, result in enumerate(matcher.match(queries)):
            if result.name is not None:
                hit[q, people.index(result.name)] = True
        return per, hit

    warnings: list[str] = []
    duplicates: set[str] = set()
    base = own_stored if len(own_stored) else new
    base_d, base_hit = within(base)
    for j, person in enumerate(people):
        if 2 * int(base_hit[:, j].sum()) >= len(base):
            duplicates.add(person)
            warnings.append(f"{name} and {person} look like one person ({float(base_d[:, j].min()):.3f}): {person} is "
                            f"already enrolled; merge or remove one")
    per, hit = within(new)
    nearest = np.where(hit.any(axis=1), np.where(hit, per, np.inf).argmin(axis=1), per.argmin(axis=1))
    d_other = per[np.arange(len(new)), nearest]
    foreign = hit.any(axis=1) | (d_other < d_own)
    for j, person in enumerate(people):
        which = np.nonzero(foreign & (nearest == j))[0]
        if len(which) == 0 or person in duplicates:
            continue
        own_note = (f", nearest {name} sample {float(d_own[which].min()):.3f}"
                    if np.isfinite(d_own[which]).any() else "")
        warnings.append(f"these photos look like {person} ({float(d_other[which].min()):.3f}), not {name}"
                        f"{own_note}: {', '.join(samples[i].source for i in which)}")
    for i in np.nonzero(~foreign & np.isfinite(d_own) & (d_own > limit))[0]:
        warnings.append(f"{samples[i].source} is far from {name}'s other samples ({float(d_own[i]):.3f} > threshold "
                        f"{limit:.3f}): another person or a bad photo?")
    return warnings


# ---- the service: one person's enrollment, written in one transaction ----

#: Chooses the embedder for a gallery (None: no gallery file yet); see `edged.cli.gallery.pick_embedder`.
EmbedderChoice = Callable[[Gallery | None], Embedder]


def enroll_person(gallery_path: Path, name: str, items: Sequence[SourceItem], cfg: EnrollConfig,
                  choose_embedder: EmbedderChoice, *, display_name: str | None = None, largest: bool = False,
                  camera: FrameSource | None = None, camera_seconds: float = 10.0,
                  on_item: Callable[[SourceItem, str], None] | None = None,
                  on_camera: Callable[[FrameSource], None] | None = None,
                  rule_of: Callable[[Embedder], MatchRule] | None = None, strict: bool = False,
                  on_frame: FrameProgress | None = None) -> EnrollReport:
    """Gate and embed `items` (and `camera_seconds` of an opened `camera`), check the accepted samples against
    the gallery (`identity_warnings` for the door rule `rule_of(embedder)`, default the embedder's own, and the
    embedder's 1:1 threshold), then add them to `name` in one transaction. With `strict` any warning stores
    nothing (`report.refused`). The gallery file is created only when there is something to store. `on_item` hears
    of every source done, `on_frame` of every frame of a video or the camera examined."""
    validate_name(name)
    gallery = Gallery(gallery_path, create=False) if gallery_path.exists() else None
    if gallery is None:
        ensure_directory(gallery_path)
    try:
        embedder = choose_embedder(gallery)
        snapshot = gallery.snapshot(embedder.version) if gallery else None
        enroller = Enroller(FacePipeline(embedder), cfg, largest=largest,
                            stored=snapshot.vectors if snapshot is not None else None, on_frame=on_frame)
        report = enroller.run(items, on_item)
        if camera is not None:
            if on_camera:
                on_camera(camera)
            log.info("enroll: %s: %s", camera.name, enroller.camera(camera, camera_seconds, report))
        if report.samples:
            rule = rule_of(embedder) if rule_of else MatchRule.of(embedder, EmbedderConfig(), MatchConfig())
            report.warnings = identity_warnings(name, report.samples, snapshot, rule, embedder.threshold)
            for warning in report.warnings:
                log.info("enroll %s: warning: %s", name, warning)
        if strict and report.warnings:
            report.refused = True
        elif report.samples:
            if gallery is None:
                gallery = Gallery(gallery_path, create=True)
            skipped: dict[int, float] = {}
            # the near-duplicate check again, inside the write transaction: another enrollment may have
            # stored the same photos since the snapshot above
            gallery.add_samples(name, report.samples, display_name=display_name, duplicate_max=cfg.duplicate_max,
                                on_duplicate=skipped.__setitem__)
            if skipped:
                for i, dist in skipped.items():
                    report.rejected.append((report.samples[i].source, f"{DUPLICATE} (distance {dist:.4f} < "
                                            f"duplicate_max {cfg.duplicate_max:g}, stored meanwhile)"))
                report.samples = [s for i, s in enumerate(report.samples) if i not in skipped]
    finally:
        if gallery is not None:
            gallery.close()
    return report


# ---- re-embedding from stored crops ----

def embed_crops(embedder: Embedder, crops_png: Sequence[bytes], batch: int = 32,
                progress: Callable[[int], None] | None = None, mirror: bool = True) -> np.ndarray:
    """Embeddings of stored canonical crops: the embedder's own landmarks and alignment, run on each crop
    (mirror-averaged as enrollment does with `enroll.mirror`)."""
    aligner = FaceAligner(embedder.alignment)
    embed = embedder.embed_mirror_averaged if mirror else embedder.embed
    out: list[np.ndarray] = []
    faces: list[np.ndarray] = []
    for i, data in enumerate(crops_png):
        crop = decode_image(data, f"stored crop {i}")
        faces.append(aligner.align(crop, CROP_FACE_BOX))
        if len(faces) == batch:
            out.append(embed(faces))
            faces = []
        if progress:
            progress(i + 1)
    if faces:
        out.append(embed(faces))
    return np.concatenate(out) if out else np.zeros((0, embedder.dim), np.float32)
