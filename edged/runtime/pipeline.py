"""The per-frame recognition stage: detect -> track -> align + embed (batched) -> match -> vote.

Pure computation, no threads: `process(frame)` takes one `Frame` (its index and timeline
seconds drive all timing decisions) and returns what happened on it. The only clock read is
the injected `timer`, used for per-stage time totals in the statistics, never for decisions.

Work is kept to what a track needs:

* the detector runs every `detector.every_n_frames` processed frames, or on the next frame when
  a correlation tracker lost the face of a track still being recognised, on the frame downscaled by
  `detector.scale` (auto: to at most 960 px wide; the faces are still aligned and embedded from the full
  frame); every `detector.small_faces_every_n_frames` frames (and on the first) it runs with one more upsample
  step, so that faces too small for the cheap run (a person still far from the door) start tracks;
  while no face is tracked it runs only on frames where something moved (`detector.motion_gate`);
* between detections the tracks still being recognised follow their faces with the correlation
  tracker (`edged.track`), and with liveness on so do named ones liveness still checks; other settled
  tracks keep their last detected box until the next detection;
* a track is aligned and embedded only while its vote is not settled (so a new face is
  recognised on consecutive frames until K of M agree) and then every
  `tracking.recognize_every_s` seconds; all faces needing it in one frame are embedded in ONE batch
  (and a daemon with several cameras embeds the faces of one frame of each camera in one batch: `steps`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np

from edged.config import CameraConfig, Config, DetectorConfig, PresenceConfig, QualityConfig, TrackingConfig, VoteConfig
from edged.embed.base import Embedder
from edged.gallery.enroll import canonical_crop
from edged.gallery.enroll import sharpness as crop_sharpness
from edged.gallery.match import Matcher
from edged.runtime.liveness import TrackLiveness
from edged.runtime.presence import Presence
from edged.runtime.track import Track, Tracker
from edged.runtime.vote import UNKNOWN, Voter
from edged.types import (
    Box,
    EventKind,
    FaceSample,
    Frame,
    IdentityEvent,
    LivenessReport,
    MatchResult,
    Observation,
    PresenceChange,
)
from edged.vision.align import FaceAligner
from edged.vision.detect import MAX_UPSAMPLE, FaceDetector
from edged.vision.motion import MotionGate
from edged.vision.quality import assess, low_quality_reason

#: An unknown face whose box area grew by this factor since its last re-check is re-checked without backoff.
RECHECK_GROWTH = 1.5
STAGES = ("detect", "track", "align", "embed", "match", "liveness")

__all__ = ["STAGES", "Embedded", "FrameResult", "Observation", "RecognitionPipeline", "finish_steps", "run_steps"]


#: Embedded crops: their vectors and the seconds the embedder took.
Embedded = tuple[np.ndarray, float]


def run_steps(steps: Generator[list[np.ndarray], Embedded, FrameResult],
              embed: Callable[[list[np.ndarray]], Embedded]) -> FrameResult:
    """Drive `RecognitionPipeline.steps` with `embed` for its crops."""
    return finish_steps(steps, embed(next(steps)))


def finish_steps(steps: Generator[list[np.ndarray], Embedded, FrameResult], embedded: Embedded) -> FrameResult:
    """Send a started `RecognitionPipeline.steps` the embeddings of the crops it yielded; its frame's result."""
    try:
        steps.send(embedded)
    except StopIteration as done:
        return done.value
    raise RuntimeError("pipeline steps asked for embeddings twice")


@dataclass
class FrameResult:
    """What one frame produced."""

    frame: int
    t: float
    detected: bool
    observations: list[Observation]
    events: list[IdentityEvent]
    presence: list[PresenceChange]
    embeds: int = 0
    #: Liveness verdicts that changed on this frame (liveness enabled).
    liveness: list[LivenessReport] = field(default_factory=list)


@dataclass
class PipelineStats:
    """Totals over all processed frames."""

    frames: int = 0
    detector_runs: int = 0
    #: Detector runs with one more upsample step (`detector.small_faces_every_n_frames`).
    small_face_scans: int = 0
    #: Frames due for detection that were not detected on: nothing moved and no face was tracked.
    motion_skipped: int = 0
    faces_detected: int = 0
    tracks_started: int = 0
    embeds: int = 0
    #: Faces too poor to be named (quality gate): they do not vote.
    low_quality: int = 0
    embed_batches: int = 0
    #: Liveness updates (one tracked face on one checked frame; liveness enabled).
    liveness_updates: int = 0
    #: Seconds the liveness texture models ran in their worker thread (beside the frame loop), and how often.
    liveness_texture_worker_s: float = 0.0
    liveness_texture_runs: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    #: person -> (frame, t) where the track later recognised as them was first detected.
    first_detected: dict[str, tuple[int, float]] = field(default_factory=dict)
    #: person -> (frame, t) of their first `recognized` event.
    recognized: dict[str, tuple[int, float]] = field(default_factory=dict)


class RecognitionPipeline:
    """Turns frames into tracks, recognitions and identity events for one camera."""

    def __init__(self, embedder: Embedder, detection: DetectorConfig, tracking: TrackingConfig, vote: VoteConfig,
                 presence: PresenceConfig, detector: FaceDetector | None = None, aligner: FaceAligner | None = None,
                 timer: Callable[[], float] = time.perf_counter, quality: QualityConfig | None = None,
                 samples_per_track: int = 3, liveness: TrackLiveness | None = None) -> None:
        """`quality`: the gate below which faces do not vote (None: every face votes); `samples_per_track`: views
        kept per track for `unknown` events (0: none); `liveness`: per-track liveness (None: off)."""
        self.detection = detection
        self.quality = quality
        self.samples_per_track = samples_per_track
        #: Liveness over each track (None: off).
        self.liveness = liveness
        self.tracking = tracking
        self.embedder = embedder
        self.detector = detector or FaceDetector("hog" if detection.backend == "auto" else detection.backend,
                                                 upsample=detection.upsample, min_score=detection.min_score)
        #: How `detector.backend: auto` was resolved, when it fell back (`from_config`); else None.
        self.detector_note: str | None = None
        self.aligner = aligner or FaceAligner(embedder.alignment)
        self.tracker = Tracker(tracking.iou_min, tracking.max_age_s, tracking.correlation, tracking.lost_psr)
        self.voter = Voter(vote.k, vote.m, tracking.left_after_s)
        self.presence = Presence(presence.absent_after_s)
        self.matcher: Matcher | None = None
        self.stats = PipelineStats()
        self._timer = timer
        self._since_detect = detection.every_n_frames  # detect on the first frame
        #: `detector.every_n_frames` is multiplied by this (the daemon's `Governor` raises it under load).
        self.cadence_factor = 1
        self._since_small = detection.small_faces_every_n_frames  # with the small-face scan
        self.motion = MotionGate(pixel_threshold=detection.motion_pixel_threshold,
                                 min_fraction=detection.motion_min_fraction) if detection.motion_gate else None
        #: Timeline seconds since when nothing moved and no face was tracked (None: something is going on).
        self._still_since: float | None = None
        self._last_recognized: dict[int, float] = {}
        #: Tracks whose face was too poor to be named: the embedding and match of their first poor look.
        self._poor_looks: dict[int, tuple[np.ndarray, MatchResult]] = {}
        #: Unknown tracks: (current re-check interval, box area when the interval was last reset).
        self._recheck: dict[int, tuple[float, float]] = {}
        self._track_first: dict[int, tuple[int, float, float]] = {}
        self._samples: dict[int, list[FaceSample]] = {}

    @property
    def detect_every_n(self) -> int:
        """Frames between detector runs now."""
        return self.detection.every_n_frames * self.cadence_factor

    @property
    def liveness_enabled(self) -> bool:
        return self.liveness is not None

    @classmethod
    def from_config(cls, cfg: Config, embedder: Embedder, detector: FaceDetector | None = None,
                    camera: CameraConfig | None = None, share: RecognitionPipeline | None = None
                    ) -> RecognitionPipeline:
        """The pipeline with the config sections it needs, for `camera` (default: the first camera). `share`: another
        camera's pipeline whose models (detector, landmarks, liveness texture) this one uses too."""
        cam = camera or cfg.camera
        assert cam is not None
        detection = (cfg.detector if cam.every_n_frames is None
                     else cfg.detector.model_copy(update={"every_n_frames": cam.every_n_frames}))
        samples = cfg.unknowns.samples_per_visit if cfg.unknowns.enabled else 0
        note = None
        if share is not None:
            aligner = share.aligner
            detector = detector or share.detector
        else:
            aligner = FaceAligner(embedder.alignment)
            if detector is None:
                from edged.models.detectors import face_detector  # the models directory's RetinaFace files

                detector, choice = face_detector(cfg)
                note = choice.note
        liveness = None
        if cfg.liveness.enabled:
            if share is not None and share.liveness is not None:
                liveness = TrackLiveness(cfg.liveness, share.liveness.texture, landmarks=share.liveness.landmarks,
                                         worker=share.liveness.worker or False)
            else:
                from edged.models.liveness import landmark_predictor, texture_model  # onnxruntime only when on

                texture = texture_model(cfg) if cfg.liveness.require != "motion" else None
                own = aligner.predictor
                # nn4 aligns with the 68-point model: one model for both when liveness wants the full one
                wanted = (cfg.liveness.landmark_stages, cfg.liveness.landmark_trees)
                shared = own if own.points == 68 and (own.stages, own.trees) == wanted else None
                liveness = TrackLiveness(cfg.liveness, texture, landmarks=shared or landmark_predictor(cfg),
                                         worker=True)
        pipeline = cls(embedder, detection, cfg.tracking, cfg.vote, cfg.presence, detector=detector,
                       aligner=aligner, quality=cfg.quality, samples_per_track=samples, liveness=liveness)
        pipeline.detector_note = note
        return pipeline

    def set_matcher(self, matcher: Matcher | None, removed_people: set[str] | None = None
                    ) -> tuple[list[IdentityEvent], list[PresenceChange]]:
        """Use a new gallery; every live track is recognised again. Returns the `left` events and presence
        changes of people removed (or renamed)."""
        self.matcher = matcher
        self._poor_looks.clear()  # matched against the old gallery
        self.voter.unsettle_all()
        removed = removed_people or set()
        return self.voter.forget(removed), self.presence.forget(removed)

    # ---- one frame ----

    def process(self, frame: Frame) -> FrameResult:
        """Everything on one frame, its faces embedded here."""
        return run_steps(self.steps(frame), self.embed)

    def embed(self, crops: list[np.ndarray]) -> Embedded:
        """Embed aligned crops in one batch: (vectors, seconds it took)."""
        if not crops:
            return np.zeros((0, 0), np.float32), 0.0
        start = self._timer()
        vectors = self.embedder.embed(crops)
        return vectors, self._timer() - start

    def steps(self, frame: Frame) -> Generator[list[np.ndarray], Embedded, FrameResult]:
        """`process` in two halves, so that a caller can embed several pipelines' faces in one batch: the
        generator yields the frame's aligned crops (detect, track, align done; maybe none), is sent back
        `(vectors, seconds)` for them, and returns the frame's result (match, vote, liveness, presence)."""
        image, t = frame.image, frame.t
        self.stats.frames += 1
        detections = self._detect(image, t)
        start = self._timer()
        live = self.liveness
        follow = {tr.id for tr in self.tracker.tracks
                  if not self.voter.is_settled(tr.id)
                  or (live is not None and live.needs_frames(tr.id, self.voter.identity(tr.id)))}
        update = self.tracker.update(image, detections, frame.index, t, follow)
        self.stats.seconds["track"] += self._timer() - start
        for track in update.started:
            self._track_first[track.id] = (frame.index, t, frame.wall)
        self.stats.tracks_started += len(update.started)

        for track in update.tracks:
            if track.current:
                self.voter.seen(track.id, track.box, frame.index, t, frame.wall)
        marks: dict[int, np.ndarray] = {}
        events, embeds = yield from self._recognize(frame, update.tracks, marks)
        reports: list[LivenessReport] = []
        if self.liveness is not None:
            start = self._timer()
            known = marks if self.liveness.landmarks is self.aligner.predictor else None  # one model per track
            reports = self.liveness.observe(frame, update.tracks, known, self.voter.identity)
            reports.extend(self.liveness.due(t, frame.wall))
            self.stats.liveness_updates = self.liveness.updates
            if self.liveness.worker is not None:
                self.stats.liveness_texture_worker_s = self.liveness.worker.seconds
                self.stats.liveness_texture_runs = self.liveness.worker.runs
            self.stats.seconds["liveness"] += self._timer() - start
            events = [dataclasses.replace(e, liveness=self.liveness.latest(e.track_id))
                      if e.kind == EventKind.RECOGNIZED else e for e in events]
        for track in update.ended:
            self._end_track(track.id, t)
        events.extend(self.voter.due(t))

        presence: list[PresenceChange] = []
        for person, track_id in self.voter.holders().items():
            track = next((tr for tr in update.tracks if tr.id == track_id), None)
            if track is not None and not track.lost:
                change = self.presence.seen(person, t, frame.wall)
                if change:
                    presence.append(change)
        presence.extend(self.presence.due(t))

        observations = [Observation(tr.id, tr.box, self.voter.identity(tr.id), tr.last_detected_t == t)
                        for tr in update.tracks]
        return FrameResult(frame.index, t, detections is not None, observations, events, presence, embeds, reports)

    def idle(self, t: float) -> tuple[list[IdentityEvent], list[PresenceChange]]:
        """No frame arrived (a live source is down): tracks age out and timers run at timeline `t`."""
        for track in self.tracker.expire(t):
            self._end_track(track.id, t)
        return self.voter.due(t), self.presence.due(t)

    def _end_track(self, track_id: int, t: float) -> None:
        self.voter.track_ended(track_id, t)
        self._last_recognized.pop(track_id, None)
        self._recheck.pop(track_id, None)
        self._poor_looks.pop(track_id, None)
        self._track_first.pop(track_id, None)
        self._samples.pop(track_id, None)
        if self.liveness is not None:
            self.liveness.end(track_id)

    def finish(self) -> tuple[list[IdentityEvent], list[PresenceChange]]:
        """The stream ended: every track ends, `left` for all announced tracks, everyone absent."""
        self.tracker.end_all()
        self._last_recognized.clear()
        self._recheck.clear()
        self._poor_looks.clear()
        self._samples.clear()
        if self.liveness is not None:
            self.liveness.clear()
        return self.voter.flush(), self.presence.flush()

    # ---- stages ----

    def _detect(self, image: np.ndarray, t: float) -> list[Box] | None:
        dcfg = self.detection
        self._since_detect += 1
        self._since_small += 1
        scale = dcfg.scale_for(image.shape[1])
        small = dcfg.small_faces_every_n_frames > 0 and self._since_small >= dcfg.small_faces_every_n_frames
        if small and self.detector.smallest_face_px(scale) <= dcfg.min_face_px:
            small = False  # the normal run already finds every face big enough to use (RetinaFace at 1/2)
            self._since_small = 0
        still = False
        if self.motion is not None:  # every frame: the reference stays fresh
            if self.motion.moved(image) or self.tracker.tracks:
                self._still_since = None
            elif self._still_since is None:
                self._still_since = t
            still = self._still_since is not None and t - self._still_since >= dcfg.motion_idle_after_s
        # a lost face that still needs recognising is looked for at once; one followed only for liveness (already
        # named) waits for the regular cadence: its checks pause for a frame or two, the frame loop does not pay a
        # detector run per frame while the correlation tracker cannot hold it
        urgent = any(tr.lost and not self.voter.is_settled(tr.id) for tr in self.tracker.tracks)
        if not small and self._since_detect < self.detect_every_n and not urgent:
            return None
        if still:
            self.stats.motion_skipped += 1  # an empty, still picture: the next frame that moves is detected on
            return None
        self._since_detect = 0
        upsample = None
        if small:
            self._since_small = 0
            upsample = min(self.detector.upsample + 1, MAX_UPSAMPLE)
            self.stats.small_face_scans += 1
        start = self._timer()
        boxes = [b for b in self.detector.detect(image, scale, upsample)
                 if min(b.width, b.height) >= dcfg.min_face_px]
        self.stats.seconds["detect"] += self._timer() - start
        self.stats.detector_runs += 1
        self.stats.faces_detected += len(boxes)
        return boxes

    def _needs_recognition(self, track: Track, t: float) -> bool:
        if track.lost or not track.current or min(track.box.width, track.box.height) < self.detection.min_face_px:
            return False  # no current box for it on this frame
        if not self.voter.is_settled(track.id):
            return True
        every = self.tracking.recognize_every_s
        if self.voter.identity(track.id) == UNKNOWN:  # a face turning towards the camera may still be named
            recheck, area = self._recheck.get(track.id, (self.tracking.recheck_unknown_s, 0.0))
            if area > 0 and track.box.area >= RECHECK_GROWTH * area:
                recheck = self.tracking.recheck_unknown_s  # coming closer: look again soon
            every = min(every, recheck) if every > 0 else recheck
        return every > 0 and t - self._last_recognized.get(track.id, -np.inf) >= every

    def _rechecked(self, track: Track) -> None:
        """An unknown track was looked at again and is still unknown: the next look waits twice as long (up to
        `recheck_unknown_max_s`), unless the face grew by `RECHECK_GROWTH` since the backoff started."""
        base = self.tracking.recheck_unknown_s
        top = max(base, self.tracking.recheck_unknown_max_s)
        area = float(track.box.area)
        previous = self._recheck.get(track.id)
        if previous is None:
            self._recheck[track.id] = (min(top, 2 * base), area)
        elif area >= RECHECK_GROWTH * previous[1]:
            self._recheck[track.id] = (base, area)
        else:
            self._recheck[track.id] = (min(top, 2 * previous[0]), previous[1])

    def _recognize(self, frame: Frame, tracks: list[Track], marks_out: dict[int, np.ndarray] | None = None
                   ) -> Generator[list[np.ndarray], Embedded, tuple[list[IdentityEvent], int]]:
        """Align, embed, match and vote the tracks that need it; their landmarks go into `marks_out`. Yields the
        crops to embed exactly once (an empty list when there is nothing to embed) and gets their vectors."""
        todo = ([tr for tr in tracks if self._needs_recognition(tr, frame.t)] if self.matcher is not None
                else [])
        if not todo:
            yield []
            return [], 0
        start = self._timer()
        image = frame.image
        marks = [self.aligner.landmarks(image, tr.box) for tr in todo]
        if marks_out is not None:
            marks_out.update({tr.id: m for tr, m in zip(todo, marks, strict=True)})
        poor = [low_quality_reason(assess(image, tr.box, m), self.quality) if self.quality is not None else None
                for tr, m in zip(todo, marks, strict=True)]
        # a face too poor to be named does not vote: its first look is embedded (the nearest candidate and
        # distance its "unknown (low quality)" event carries), later poor looks reuse that one
        fresh = [i for i, (tr, why) in enumerate(zip(todo, poor, strict=True))
                 if why is None or tr.id not in self._poor_looks]
        crops = [self.aligner.crop(image, todo[i].box, marks[i]) for i in fresh]
        aligned = self._timer()
        embedded_now, embed_s = yield crops
        embedded = self._timer()
        assert self.matcher is not None
        matched = self.matcher.match(embedded_now) if crops else []
        vectors: list[np.ndarray] = []
        results = []
        by_index = {i: k for k, i in enumerate(fresh)}
        for i, tr in enumerate(todo):
            if i in by_index:
                vector, result = embedded_now[by_index[i]], matched[by_index[i]]
                if poor[i] is not None:
                    self._poor_looks[tr.id] = (vector, result)
            else:
                vector, result = self._poor_looks[tr.id]
            vectors.append(vector)
            results.append(result)
        events: list[IdentityEvent] = []
        for track, result, mark, vector, why in zip(todo, results, marks, vectors, poor, strict=True):
            self._last_recognized[track.id] = frame.t
            was_unknown = self.voter.is_settled(track.id) and self.voter.identity(track.id) == UNKNOWN
            if why is not None:
                self.stats.low_quality += 1
            elif self.samples_per_track:
                self._keep_sample(track.id, image, track.box, mark, vector)
            for event in self.voter.observe(track.id, result, track.box, frame.index, frame.t, frame.wall,
                                            low_quality=why is not None):
                first = self._track_first.get(track.id, (frame.index, frame.t, frame.wall))
                if event.kind != EventKind.LEFT:  # the frame it was decided on
                    event = dataclasses.replace(event, image=image, first_t=first[1], first_wall=first[2])
                if event.kind == EventKind.UNKNOWN:
                    event = dataclasses.replace(event, samples=tuple(self._samples.get(track.id, ())))
                events.append(event)
                if event.kind == EventKind.RECOGNIZED and event.person not in self.stats.recognized:
                    self.stats.recognized[event.person] = (frame.index, frame.t)
                    self.stats.first_detected[event.person] = first[:2]
            if was_unknown and self.voter.identity(track.id) == UNKNOWN:
                self._rechecked(track)
        done = self._timer()
        self.stats.seconds["align"] += aligned - start
        self.stats.seconds["embed"] += embed_s
        self.stats.seconds["match"] += done - embedded
        self.stats.embeds += len(fresh)
        self.stats.embed_batches += 1 if fresh else 0
        return events, len(fresh)

    def _keep_sample(self, track_id: int, image: np.ndarray, box: Box, landmarks: np.ndarray,
                     vector: np.ndarray) -> None:
        """Keep the track's best `samples_per_track` views (by size and sharpness of the canonical crop)."""
        crop = canonical_crop(image, box, landmarks)
        sample = FaceSample(np.asarray(vector, np.float32).copy(), crop, min(box.width, box.height),
                            crop_sharpness(crop))
        kept = self._samples.setdefault(track_id, [])
        kept.append(sample)
        kept.sort(key=lambda s: s.quality, reverse=True)
        del kept[self.samples_per_track:]
