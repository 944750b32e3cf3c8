"""Liveness per face track inside the pipeline: feeds `edged.vision.liveness.LivenessState` and reports verdicts.

On every `liveness.every_n_frames`-th processed frame, each track with a current box (detected on the frame or
followed to it by the correlation tracker) gets dlib's 68 landmarks (reused when the embedder's aligner already
computed them for that track on that frame) and one `LivenessState.update`. A `LivenessReport` goes into the
event stream whenever the track's verdict (`live` True / False / None) changes, so the access controller can
decide as soon as there is one, and the latest report rides along with the track's `recognized` event.

Only tracks that may open a door are fed: those named as an enrolled person or not decided yet (an `unknown`
or ignored face is denied anyway). A track stops being fed once it is judged live (nothing later can make it
less live); an undecided or refused one keeps being fed (a later blink still turns it live), so its box must be
current on frames without detection: it is followed by the correlation tracker between detections so its
landmarks are measured on the face, not on a stale box.

The texture models (~9 ms per face) run in a `TextureWorker` thread: ONNX Runtime releases the GIL, so they
use the core the frame loop leaves idle. A sample joins its track's evidence at the first checked frame of
the track after it is done (the frame loop never waits for it; dlib's embedding holds the GIL, so a sample
can take a few frames); no new one is taken for the track while one is running. Every
model is run once at start (`warm_up`), so the first face at the door does not pay for first-call set-up
(~25 ms of lazy imports and allocations).

The blink and parallax cues need dlib's 68-point landmark model, trained on iBUG 300-W (non-commercial terms).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from edged.config import LivenessConfig
from edged.runtime.track import Track
from edged.runtime.vote import IGNORED, UNKNOWN
from edged.types import Box, Frame, LivenessReport
from edged.vision.align import MINMAX_TEMPLATE, LandmarkPredictor
from edged.vision.antispoof import TextureModel
from edged.vision.liveness import LivenessState, LivenessVerdict

#: Voter identities of tracks that never open a door: not fed to liveness.
SKIPPED = frozenset({UNKNOWN, IGNORED})


def report_of(track_id: int, verdict: LivenessVerdict, t: float, wall: float) -> LivenessReport:
    return LivenessReport(track_id, verdict.live, verdict.score, verdict.texture, verdict.blink, verdict.parallax,
                          verdict.frames, verdict.seconds, tuple(verdict.reasons), t, wall)


class TextureWorker:
    """The texture models in one background thread; `submit` copies the face's crops and returns at once."""

    def __init__(self, model: TextureModel) -> None:
        self.model = model
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edged-texture")
        self._lock = threading.Lock()
        #: Seconds the worker spent running the models, and how many runs.
        self.seconds = 0.0
        self.runs = 0

    def submit(self, image_rgb: np.ndarray, box: Box) -> Future[float]:
        return self._pool.submit(self._run, self.model.patches(image_rgb, box))

    def _run(self, patches: list[np.ndarray]) -> float:
        start = time.perf_counter()
        probability = self.model.probability_of(patches)
        with self._lock:
            self.seconds += time.perf_counter() - start
            self.runs += 1
        return probability

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def warm_up(cfg: LivenessConfig, texture: TextureModel | None,
            predict: Callable[[np.ndarray, object], np.ndarray]) -> None:
    """Run every part of a liveness update once on a synthetic face (landmarks, texture, blink, parallax and the
    verdict's statistics), so that their first-call costs are paid at start."""
    rng = np.random.default_rng(0)
    image = rng.integers(60, 200, (240, 240, 3), dtype=np.uint8)
    box = Box(60, 60, 180, 180)
    predict(image, box)
    if texture is not None:
        texture.real_probability(image, box)
    state = LivenessState(cfg.model_copy(update={"require": "motion"}))
    base = MINMAX_TEMPLATE.astype(np.float64) * 100.0 + 70.0
    for i in range(8):
        state.update(0.1 * i, image, box, base + rng.normal(0.0, 2.0, base.shape) + 3.0 * i)
        state.verdict(0.1 * i)


class TrackLiveness:
    """The liveness evidence of every live track of one camera."""

    def __init__(self, cfg: LivenessConfig, texture: TextureModel | None,
                 landmarks: LandmarkPredictor | Callable[[np.ndarray, object], np.ndarray] | None = None,
                 worker: TextureWorker | bool = False) -> None:
        """`landmarks`: a 68-point predictor (share the aligner's when it is the same model: ~20-100 MB each).
        `worker`: run the texture models in this `TextureWorker` (True: a new one; share one between cameras),
        False: on the calling thread. A new predictor or worker is warmed up here (`warm_up`)."""
        self.cfg = cfg
        self.texture = texture
        predictor = landmarks or LandmarkPredictor(68)
        #: Where this track's landmarks come from (`known` marks of `observe` must come from the same model).
        self.landmarks = predictor
        if isinstance(predictor, LandmarkPredictor):
            if predictor.points != 68:
                raise ValueError("liveness needs dlib's 68-point landmark model")
            predictor._load()  # at start, not on the first face at the door
            self.predict: Callable[[np.ndarray, object], np.ndarray] = predictor.predict
        else:
            self.predict = predictor
        shared_worker = worker if isinstance(worker, TextureWorker) else None
        self.worker = shared_worker or (TextureWorker(texture) if worker is True and texture is not None else None)
        new_worker = self.worker is not None and shared_worker is None
        if isinstance(predictor, LandmarkPredictor) or new_worker:  # new models here: pay their first calls now
            warm_up(cfg, None if self.worker is not None else texture, self.predict)
            if new_worker:
                assert self.worker is not None
                self.worker.submit(np.zeros((96, 96, 3), np.uint8), Box(24, 24, 72, 72)).result()  # on its thread
        self._states: dict[int, LivenessState] = {}
        self._last: dict[int, LivenessReport] = {}
        #: Texture samples running in the worker, per track (joined at the track's next checked frame).
        self._pending: dict[int, Future[float]] = {}
        self._fed_frames = 0
        self.updates = 0

    def needs_frames(self, track_id: int, identity: str | None = None) -> bool:
        """The track still needs checked frames: no live verdict yet, and it may open a door (`identity`: the
        voter's name for it, None while undecided; "unknown" / "ignored" faces are never granted)."""
        if identity in SKIPPED:
            return False
        last = self._last.get(track_id)
        return last is None or last.live is not True

    def latest(self, track_id: int) -> LivenessReport | None:
        return self._last.get(track_id)


    def observe(self, frame: Frame, tracks: list[Track], known: Mapping[int, np.ndarray] | None = None,
                identity: Callable[[int], str | None] = lambda track_id: None) -> list[LivenessReport]:
        """Feed this frame to the tracks that need it; the reports of verdicts that changed."""
        self._fed_frames += 1
        if (self._fed_frames - 1) % self.cfg.every_n_frames:
            return []
        known = known or {}
        reports: list[LivenessReport] = []
        for track in tracks:
            if track.lost or not track.current or not self.needs_frames(track.id, identity(track.id)):
                continue
            marks = known.get(track.id)
            if marks is None or np.shape(marks) != (68, 2):
                marks = np.asarray(self.predict(frame.image, track.box))
            state = self._states.get(track.id)
            if state is None:
                state = self._states[track.id] = LivenessState(self.cfg, self.texture)
            pending = self._pending.get(track.id)
            if pending is not None and pending.done():
                del self._pending[track.id]
                state.add_texture(pending.result())
            # the texture models (~9 ms) only once the face is named: an undecided face may turn out unknown
            allowed = identity(track.id) is not None and track.id not in self._pending
            if state.update(frame.t, frame.image, track.box, marks, texture=allowed,
                            defer_texture=self.worker is not None) and self.worker is not None:
                self._pending[track.id] = self.worker.submit(frame.image, track.box)
            self.updates += 1
            report = report_of(track.id, state.verdict(frame.t), frame.t, frame.wall)
            previous = self._last.get(track.id)
            self._last[track.id] = report
            if previous is None or previous.live != report.live:
                reports.append(report)
        return reports

    def due(self, t: float, wall: float) -> list[LivenessReport]:
        """Tracks whose motion cue ran out of time while no frame fed them (refused at `max_seconds`)."""
        reports = []
        for track_id, state in self._states.items():
            previous = self._last.get(track_id)
            if previous is None or previous.live is not None or not state.time_may_change_verdict(t):
                continue  # (the verdict of an undecided track changes without frames only when a time limit passes)
            verdict = state.verdict(t)
            if verdict.live is not None:
                report = self._last[track_id] = report_of(track_id, verdict, t, wall)
                reports.append(report)
        return reports

    def end(self, track_id: int) -> None:
        self._states.pop(track_id, None)
        self._last.pop(track_id, None)
        self._pending.pop(track_id, None)

    def clear(self) -> None:
        self._states.clear()
        self._last.clear()
        self._pending.clear()
