"""`edged eval liveness`: APCER / BPCER of the passive liveness cues over labelled presentations.

A *presentation* is what stands in front of the camera for one attempt: a video (or a still photo) with a
label, "real" (a live person) or "attack" (a print, a screen). Each is run as the daemon would see it: every
frame through edged's camera reader (`FrameSource`), dlib HOG faces followed by IoU (one face track; a face
lost for longer than `LOST_AFTER_S` starts a new track), dlib's 68-point landmarks, and one
`edged.vision.liveness.LivenessState` per track fed every frame (`liveness.every_n_frames` applies).

An attack is **accepted** when any of its tracks is judged live at any time; a real presentation is
**refused** when none of its tracks is judged live within `seconds` of its face first appearing (default:
the whole input). Per cue, the same with that cue alone: texture (the texture rule of `verdict` passes),
blink (a blink), parallax (score >= `parallax_min`), motion (blink or parallax), combined (the verdict).

* APCER = accepted attacks / attacks; BPCER = refused real presentations / real presentations (ISO/IEC
  30107-3 terms; one number per presentation, not per frame).
* Still photos have no motion: they count for the texture cue only (reported apart).
* Time to verdict: seconds from the face's first frame to the first live (real) or first refused (attack)
  verdict.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edged.camera.source import FrameSource
from edged.config import LivenessConfig
from edged.errors import EdgedError
from edged.eval.attacks import AttackVideo, photo_attack, replay_attack
from edged.types import Box
from edged.vision.align import LandmarkPredictor
from edged.vision.antispoof import TextureModel
from edged.vision.detect import FaceDetector
from edged.vision.imageio import IMAGE_EXTENSIONS, load_image
from edged.vision.liveness import TEXTURE_WINDOW, LivenessState, LivenessVerdict

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
LABELS = ("real", "attack")
CUES = ("texture", "blink", "parallax", "motion", "combined")
#: A track not seen for this long ends; the next face starts a new one (like `tracking.max_age_s`).
LOST_AFTER_S = 1.0
#: Minimum IoU with the track's last box for a detection to continue it.
IOU_MIN = 0.3


class LivenessEvalError(EdgedError):
    """The liveness evaluation's inputs are unusable."""


FrameIter = Callable[[], Iterator[tuple[float, np.ndarray]]]


@dataclass(frozen=True)
class Presentation:
    """One labelled attempt: `frames()` yields (t, RGB frame) from the start each time it is called."""

    name: str
    label: str  # "real" or "attack"
    kind: str  # "video", "still", "synthetic-photo", "synthetic-replay"
    frames: FrameIter = field(repr=False)

    @property
    def still(self) -> bool:
        return self.kind == "still"


# ---- inputs ----

def _video_frames(path: Path) -> FrameIter:
    def frames() -> Iterator[tuple[float, np.ndarray]]:
        with FrameSource.for_file(path) as source:
            fps = source.fps
            for index, frame in source.frames():
                yield index / fps, frame
    return frames


def _still_frames(path: Path) -> FrameIter:
    def frames() -> Iterator[tuple[float, np.ndarray]]:
        yield 0.0, load_image(path)
    return frames


def _attack_frames(make: Callable[[], AttackVideo]) -> FrameIter:
    def frames() -> Iterator[tuple[float, np.ndarray]]:
        yield from make().timed()
    return frames


def labelled_inputs(folder: str | os.PathLike[str]) -> list[Presentation]:
    """Videos and photos in `folder/real/` and `folder/attack/` (sorted; other files are ignored)."""
    root = Path(folder)
    if not root.is_dir():
        raise LivenessEvalError(f"--data {root}: not a directory")
    out: list[Presentation] = []
    for label in LABELS:
        sub = root / label
        if not sub.is_dir():
            continue
        for path in sorted(sub.rglob("*")):
            suffix = path.suffix.lower()
            if not path.is_file():
                continue
            if suffix in VIDEO_EXTENSIONS:
                out.append(Presentation(str(path), label, "video", _video_frames(path)))
            elif suffix in IMAGE_EXTENSIONS:
                out.append(Presentation(str(path), label, "still", _still_frames(path)))
    if not out:
        raise LivenessEvalError(f"--data {root}: no videos or photos in {root}/real/ or {root}/attack/")
    return out


def real_clip_inputs(clips: Sequence[str | os.PathLike[str]]) -> list[Presentation]:
    """Videos of live people as real presentations."""
    return [Presentation(str(c), "real", "video", _video_frames(Path(c))) for c in clips]


def pick_photos(folder: str | os.PathLike[str], count: int, seed: int = 0) -> list[Path]:
    """`count` photos of different people from `folder` (LFW layout: one folder per person, the first photo
    of each; or a flat folder of photos), drawn with `seed`."""
    root = Path(folder)
    if not root.is_dir():
        raise LivenessEvalError(f"--photos {root}: not a directory")
    people = sorted(p for p in root.iterdir() if p.is_dir())
    candidates: list[Path] = []
    if people:
        for person in people:
            first = next((f for f in sorted(person.iterdir()) if f.suffix.lower() in IMAGE_EXTENSIONS), None)
            if first is not None:
                candidates.append(first)
    else:
        candidates = sorted(f for f in root.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
    if len(candidates) < count:
        raise LivenessEvalError(f"--photos {root}: {len(candidates)} usable photos, {count} asked for")
    rng = np.random.default_rng(seed)
    return [candidates[i] for i in sorted(rng.choice(len(candidates), count, replace=False))]


def synthetic_photo_inputs(photos: Sequence[str | os.PathLike[str]], seed: int = 0) -> list[Presentation]:
    """A photo attack video (`edged.eval.attacks.photo_attack`) from each photo, seeds `seed`, `seed + 1`..."""
    out = []
    for i, photo in enumerate(photos):
        path = Path(photo)

        def make(path: Path = path, s: int = seed + i) -> AttackVideo:
            return photo_attack(load_image(path), s, source=str(path))
        out.append(Presentation(f"photo-attack:{path.name}#{seed + i}", "attack", "synthetic-photo",
                                _attack_frames(make)))
    return out


def synthetic_replay_inputs(clips: Sequence[str | os.PathLike[str]], count: int, seed: int = 0,
                            seconds: float | None = None) -> list[Presentation]:
    """`count` screen replays (`edged.eval.attacks.replay_attack`) of the real `clips`, taken in turn."""
    if count and not clips:
        raise LivenessEvalError("--synthetic-replays needs real clips to replay (--clips DIR)")
    out = []
    for i in range(count):
        clip = Path(clips[i % len(clips)])

        def make(clip: Path = clip, s: int = seed + i) -> AttackVideo:
            with FrameSource.for_file(clip) as source:
                fps = source.fps
                frames = [frame for _, frame in source.frames()]
            if not frames:
                raise LivenessEvalError(f"{clip}: no frames")
            return replay_attack(frames, fps, s, source=str(clip), seconds=seconds)
        out.append(Presentation(f"replay-attack:{clip.name}#{seed + i}", "attack", "synthetic-replay",
                                _attack_frames(make)))
    return out


def clips_in(folder: str | os.PathLike[str]) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise LivenessEvalError(f"--clips {root}: not a directory")
    clips = sorted(p for p in root.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    if not clips:
        raise LivenessEvalError(f"--clips {root}: no videos")
    return clips


# ---- one presentation ----

class FaceFollower:
    """One face followed through a sequence: HOG detection near the last box (the whole frame when lost),
    the detection overlapping the last box best (IoU >= IOU_MIN), then 68-point landmarks."""

    def __init__(self, detector: FaceDetector, landmarks: LandmarkPredictor) -> None:
        self.detector = detector
        self.landmarks = landmarks
        self.box: Box | None = None
        self.last_seen: float | None = None

    def reset(self) -> None:
        self.box = None
        self.last_seen = None

    def follow(self, t: float, image: np.ndarray) -> tuple[Box, np.ndarray] | None:
        h, w = image.shape[:2]
        if self.box is not None and self.last_seen is not None and t - self.last_seen > LOST_AFTER_S:
            self.reset()
        found: list[Box] = []
        if self.box is not None:
            roi = self.box.expanded(0.6, w, h)
            crop = image[roi.top:roi.bottom, roi.left:roi.right]
            if crop.shape[0] > 8 and crop.shape[1] > 8:
                found = [Box(b.left + roi.left, b.top + roi.top, b.right + roi.left, b.bottom + roi.top, b.score)
                         for b in self.detector.detect(np.ascontiguousarray(crop))]
        if not found:
            found = self.detector.detect(image)
        if not found:
            return None
        if self.box is None:
            chosen = found[0]  # the largest face starts the track
        else:
            best = max(found, key=lambda b: b.iou(self.box))  # type: ignore[arg-type]
            if best.iou(self.box) < IOU_MIN:
                return None
            chosen = best
        self.box, self.last_seen = chosen, t
        return chosen, self.landmarks.predict(image, chosen)


@dataclass
class PresentationResult:
    """What the liveness cues said about one presentation."""

    name: str
    label: str
    kind: str
    frames: int = 0
    face_frames: int = 0
    tracks: int = 0
    #: Timeline seconds of the face's first frame.
    face_t: float | None = None
    #: Seconds from the face's first frame to the first live / first refused verdict (None: never).
    live_after: float | None = None
    refused_after: float | None = None
    #: Each cue on its own: did it accept the presentation (True), refuse it (False), or never decide (None)?
    cues: dict[str, bool | None] = field(default_factory=dict)
    #: The last verdict of the track that decided (the first live one, else the last track's).
    verdict: LivenessVerdict | None = None
    texture_values: list[float] = field(default_factory=list)
    blinks: int = 0
    parallax: float | None = None
    #: Milliseconds in `LivenessState.update` per fed frame (texture + blink + parallax), and per texture call:
    #: wall clock, and CPU time of the calling thread (what the work costs, whatever else loads the machine;
    #: the texture models run on the calling thread with liveness.threads 1).
    update_ms: list[float] = field(default_factory=list)
    update_cpu_ms: list[float] = field(default_factory=list)
    texture_ms: list[float] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.live_after is not None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "kind": self.kind, "frames": self.frames,
                "face_frames": self.face_frames, "tracks": self.tracks, "accepted": self.accepted,
                "live_after_s": _r(self.live_after), "refused_after_s": _r(self.refused_after),
                "cues": dict(self.cues), "texture_median": _r(float(np.median(self.texture_values)))
                if self.texture_values else None, "blinks": self.blinks, "parallax": _r(self.parallax),
                "verdict": self.verdict.as_dict() if self.verdict else None}


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)


class _TimedTexture:
    """A TextureModel wrapper that records how long each call took (ms)."""

    def __init__(self, model: TextureModel, sink: list[float]) -> None:
        self.model, self.sink = model, sink

    def real_probability(self, image_rgb: np.ndarray, box: Box) -> float:
        start = time.perf_counter()
        value = self.model.real_probability(image_rgb, box)
        self.sink.append((time.perf_counter() - start) * 1000.0)
        return value


def analyse(presentation: Presentation, follower: FaceFollower, texture: TextureModel | None,
            cfg: LivenessConfig, seconds: float | None = None) -> PresentationResult:
    """Run one presentation through face following and the liveness cues (see the module docstring)."""
    result = PresentationResult(presentation.name, presentation.label, presentation.kind)
    follower.reset()
    if presentation.still:
        cfg = cfg.model_copy(update={"texture_every_n": 1, "texture_samples": 1, "min_frames": 1, "min_seconds": 0.0})
    timed = _TimedTexture(texture, result.texture_ms) if texture is not None else None
    state: LivenessState | None = None
    states: list[LivenessState] = []
    fed = 0
    cue_pass = dict.fromkeys(CUES, False)
    last_t = None
    for t, image in presentation.frames():
        result.frames += 1
        last_t = t
        if seconds is not None and result.face_t is not None and t - result.face_t > seconds:
            break
        lost_before = follower.box is None
        got = follower.follow(t, image)
        if got is None:
            continue
        box, marks = got
        if result.face_t is None:
            result.face_t = t
        if state is None or lost_before:
            state = LivenessState(cfg, timed)  # type: ignore[arg-type]
            states.append(state)
            fed = 0
        result.face_frames += 1
        if fed % cfg.every_n_frames == 0:
            start, cpu = time.perf_counter(), time.thread_time()
            state.update(t, image, box, marks)
            result.update_ms.append((time.perf_counter() - start) * 1000.0)
            result.update_cpu_ms.append((time.thread_time() - cpu) * 1000.0)
        fed += 1
        v = state.verdict(t)
        since = t - result.face_t
        _cues_of(state, v, cfg, cue_pass)
        if v.live is True and result.live_after is None:
            result.live_after = since
            result.verdict = v
        if v.live is False and result.refused_after is None:
            result.refused_after = since
    result.tracks = len(states)
    if states:
        final = states[-1]
        if result.verdict is None:
            result.verdict = final.verdict(last_t)
        result.blinks = sum(len(s.blinks.blinks) for s in states)
        scores = [s.parallax.score for s in states if s.parallax.score is not None]
        result.parallax = max(scores) if scores else None
        result.texture_values = [x for s in states for x in s.texture_values]
    result.cues = _cue_decisions(cue_pass, states, presentation.still)
    return result


def _cues_of(state: LivenessState, v: LivenessVerdict, cfg: LivenessConfig, passed: dict[str, bool]) -> None:
    """Mark the cues that accept the track at this verdict (each on its own)."""
    enough = v.frames >= cfg.min_frames and v.seconds >= cfg.min_seconds
    tex_ready = len(state.texture_values) >= min(cfg.texture_samples, TEXTURE_WINDOW)
    if enough and tex_ready and v.texture is not None and v.texture >= cfg.texture_min:
        passed["texture"] = True
    if v.blink:
        passed["blink"] = True
    if v.parallax is not None and v.parallax >= cfg.parallax_min:
        passed["parallax"] = True
    passed["motion"] = passed["blink"] or passed["parallax"]
    if v.live is True:
        passed["combined"] = True


def _cue_decisions(passed: dict[str, bool], states: list[LivenessState], still: bool) -> dict[str, bool | None]:
    if not states:
        return dict.fromkeys(CUES)  # no face: nothing decided (a refusal of real people, not an accepted attack)
    out: dict[str, bool | None] = dict(passed)
    if still:
        for cue in ("blink", "parallax", "motion", "combined"):
            out[cue] = None
    return out


# ---- the evaluation ----

@dataclass(frozen=True)
class Analysers:
    """The models one evaluation shares across presentations."""

    detector: FaceDetector
    landmarks: LandmarkPredictor
    texture: TextureModel | None

    @classmethod
    def load(cls, texture: TextureModel | None, upsample: int = 0,
             landmarks: LandmarkPredictor | None = None) -> Analysers:
        """`landmarks`: default the model of the liveness defaults (`landmark_stages`, `landmark_trees`)."""
        d = LivenessConfig()
        return cls(FaceDetector("hog", upsample=upsample),
                   landmarks or LandmarkPredictor(68, stages=d.landmark_stages, trees=d.landmark_trees), texture)


def evaluate(presentations: Iterable[Presentation], analysers: Analysers, cfg: LivenessConfig,
             seconds: float | None = None, progress: Callable[[int], None] | None = None
             ) -> tuple[list[PresentationResult], dict[str, Any]]:
    """Analyse every presentation; the per-presentation results and the summary (`summarise`)."""
    follower = FaceFollower(analysers.detector, analysers.landmarks)
    results = []
    for i, p in enumerate(presentations):
        results.append(analyse(p, follower, analysers.texture, cfg, seconds))
        if progress:
            progress(i + 1)
    return results, summarise(results, cfg, seconds)


def _rate(hits: int, total: int) -> float | None:
    return None if total == 0 else round(hits / total, 4)


def summarise(results: Sequence[PresentationResult], cfg: LivenessConfig,
              seconds: float | None = None) -> dict[str, Any]:
    """APCER / BPCER per cue and combined, by kind of presentation and over all; times to verdict; cost."""
    def table(rows: Sequence[PresentationResult]) -> dict[str, Any]:
        attacks = [r for r in rows if r.label == "attack"]
        reals = [r for r in rows if r.label == "real"]
        out: dict[str, Any] = {"attacks": len(attacks), "real": len(reals)}
        for cue in CUES:
            a = [r for r in attacks if r.cues.get(cue) is not None or not r.face_frames]
            b = [r for r in reals if r.cues.get(cue) is not None or not r.face_frames]
            out[cue] = {"apcer": _rate(sum(1 for r in a if r.cues.get(cue)), len(a)),
                        "bpcer": _rate(sum(1 for r in b if not r.cues.get(cue)), len(b)),
                        "attacks": len(a), "real": len(b)}
        return out

    kinds = sorted({r.kind for r in results})
    moving = [r for r in results if r.kind != "still"]
    live_times = [r.live_after for r in results if r.label == "real" and r.live_after is not None]
    refuse_times = [r.refused_after for r in results if r.label == "attack" and r.refused_after is not None]
    update_ms = [x for r in results for x in r.update_ms]
    update_cpu_ms = [x for r in results for x in r.update_cpu_ms]
    texture_ms = [x for r in results for x in r.texture_ms]
    return {
        "config": cfg.model_dump(),
        "seconds": seconds,
        "presentations": len(results),
        "all": table(moving),
        "by_kind": {k: table([r for r in results if r.kind == k]) for k in kinds},
        "stills": table([r for r in results if r.kind == "still"]) if any(r.kind == "still" for r in results) else None,
        "time_to_live_s": _stats(live_times),
        "time_to_refuse_s": _stats(refuse_times),
        "no_face": [r.name for r in results if not r.face_frames],
        "cost_ms": {"update_per_frame": _stats(update_ms), "update_cpu_per_frame": _stats(update_cpu_ms),
                    "texture_call": _stats(texture_ms)},
    }


def _stats(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "median": None, "mean": None, "p90": None, "max": None}
    arr = np.asarray(values, dtype=np.float64)
    return {"n": len(arr), "median": round(float(np.median(arr)), 4), "mean": round(float(arr.mean()), 4),
            "p90": round(float(np.quantile(arr, 0.9)), 4), "max": round(float(arr.max()), 4)}
