"""Liveness per face track inside the pipeline: feeds `edged.vision.liveness.LivenessState` and reports verdicts.

On every `liveness.every_n_frames`-th processed frame, each track with a current box (detected on the frame or
followed to it by the correlation tracker) gets dlib's 68 landmarks (reused when the embedder's aligner already
computed them for that track on that frame) and one `LivenessState.update`. A `LivenessReport` goes into the
event stream whenever the track's verdict (`live` True / False / None) changes, so the access controller can
decide as soon as there is one, and the latest report rides along with the track's `recognized` event.

Only tracks that may open a door are fed: those named as an enrolled person or not decided yet (an `unknown`
or ignored face is denied anyway). A track stops being fed once it is judged live (nothing later can make it
less live); an undecided or refused one keeps being fed (a later blink still turns it live), and is followed by
the correlation tracker between detections so its landmarks are measured on the face, not on a stale box.

The blink and parallax cues need dlib's 68-point landmark model, trained on iBUG 300-W (non-commercial terms).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from edged.config import LivenessConfig
from edged.runtime.track import Track
from edged.runtime.vote import IGNORED, UNKNOWN
from edged.types import Frame, LivenessReport
from edged.vision.align import LandmarkPredictor
from edged.vision.antispoof import TextureModel
from edged.vision.liveness import LivenessState, LivenessVerdict

#: Voter identities of tracks that never open a door: not fed to liveness.
SKIPPED = frozenset({UNKNOWN, IGNORED})


def report_of(track_id: int, verdict: LivenessVerdict, t: float, wall: float) -> LivenessReport:
    return LivenessReport(track_id, verdict.live, verdict.score, verdict.texture, verdict.blink, verdict.parallax,
                          verdict.frames, verdict.seconds, tuple(verdict.reasons), t, wall)


class TrackLiveness:
    """The liveness evidence of every live track of one camera."""

    def __init__(self, cfg: LivenessConfig, texture: TextureModel | None,
                 landmarks: LandmarkPredictor | Callable[[np.ndarray, object], np.ndarray] | None = None) -> None:
        """`landmarks`: a 68-point predictor (share the aligner's when it has 68 points: ~100 MB each)."""
        self.cfg = cfg
        self.texture = texture
        predictor = landmarks or LandmarkPredictor(68)
        if isinstance(predictor, LandmarkPredictor):
            if predictor.points != 68:
                raise ValueError("liveness needs dlib's 68-point landmark model")
            predictor._load()  # at start, not on the first face at the door
            self.predict: Callable[[np.ndarray, object], np.ndarray] = predictor.predict
        else:
            self.predict = predictor
        self._states: dict[int, LivenessState] = {}
        self._last: dict[int, LivenessReport] = {}
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
            # the texture models (~15 ms) only once the face is named: an undecided face may turn out unknown
            state.update(frame.t, frame.image, track.box, marks, texture=identity(track.id) is not None)
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

    def clear(self) -> None:
        self._states.clear()
        self._last.clear()
