"""Motion gating and the unknown re-check backoff: an empty porch costs (almost) no detection, a face that
appears is still recognised at once, and a stranger who waits is not embedded four times a second."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.config import parse_config
from edged.gallery.match import Matcher
from edged.gallery.store import Gallery
from edged.runtime.pipeline import RecognitionPipeline
from edged.types import EventKind, Frame
from edged.vision.detect import FaceDetector
from edged.vision.imageio import load_image
from edged.vision.motion import MotionGate
from tests.conftest import LIN, enroll_cli

FPS = 25.0
STILL_S = 4.0


def read_frames(path: Path, start: int, count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    frames = []
    for _ in range(count):
        ok, bgr = cap.read()
        assert ok
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


@pytest.fixture(scope="module")
def porch(shared: Path) -> np.ndarray:
    """An empty scene: the top left of the pedestrians video's first frame (buildings, no one), 640x360."""
    [frame] = read_frames(shared / "data" / "pedestrians" / "video.mp4", 0, 1)
    return np.ascontiguousarray(frame[:360, :640])


@pytest.fixture(scope="module")
def gallery_file(tmp_path_factory: pytest.TempPathFactory, fr_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("gallery") / "gallery.db"
    enroll_cli(path, LIN, fr_dir / "lin-manuel-miranda.png")
    return path


def pipeline_for(gallery: Path, embedder, **detector: object) -> RecognitionPipeline:
    options = ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in detector.items())
    text = f"device_id: door\ncamera: {{source: 0}}\ndetector: {{backend: hog, {options}}}\n"
    pipeline = RecognitionPipeline.from_config(parse_config(text), embedder)
    with Gallery(gallery, create=False) as g:
        pipeline.set_matcher(Matcher(g.snapshot(embedder.version), embedder.threshold))
    return pipeline


def test_motion_gate_on_real_frames(shared: Path, clip: Path, porch: np.ndarray) -> None:
    walking = read_frames(shared / "data" / "pedestrians" / "video.mp4", 0, 4)
    gate = MotionGate()
    readings = [gate.read(f) for f in walking]
    assert readings[0].moved and all(r.moved and r.changed > 0.02 for r in readings[1:])  # people walking
    still = MotionGate()
    assert still.moved(porch) and not any(still.moved(porch.copy()) for _ in range(5))
    noisy = np.clip(porch.astype(np.int16) + np.random.default_rng(0).normal(0, 3, porch.shape), 0, 255)
    assert not still.moved(noisy.astype(np.uint8))  # sensor noise is not motion
    stage = read_frames(clip, 100, 2)
    assert still.moved(stage[0])  # a person in the picture
    assert FaceDetector("hog", upsample=1).detect(porch) == []


def test_an_empty_scene_is_not_detected_on_and_a_face_is_still_named_at_once(
        gallery_file: Path, dlib_embedder, clip: Path, porch: np.ndarray) -> None:
    """4 s of an empty, still porch, then Lin-Manuel close up (the clip from frame 100): with the gate the
    detector stops after `motion_idle_after_s` (1 s) and he is named on the frames after he appears."""
    stage = [cv2.resize(f, (640, 360)) for f in read_frames(clip, 100, 15)]
    frames = [porch] * round(STILL_S * FPS) + stage
    runs = {}
    for gate in (True, False):
        pipeline = pipeline_for(gallery_file, dlib_embedder, motion_gate=gate)
        recognized = None
        for index, image in enumerate(frames):
            result = pipeline.process(Frame(image, index, index / FPS, 0.0))
            if index == round(STILL_S * FPS) - 1:
                runs[gate] = pipeline.stats.detector_runs
            if recognized is None and any(e.kind == EventKind.RECOGNIZED and e.person == LIN for e in result.events):
                recognized = index
        assert recognized is not None, gate
        assert (recognized - round(STILL_S * FPS)) / FPS <= 0.5, (gate, recognized)
        if gate:
            assert pipeline.stats.motion_skipped > 0
    # without the gate: every 3rd frame plus the small-face scans; with it: only the first second
    assert runs[False] >= round(STILL_S * FPS) // 3
    assert runs[True] <= round(1.0 * FPS) // 3 + 2, runs


def test_a_waiting_stranger_is_rechecked_with_backoff(gallery_file: Path, dlib_embedder, fr_dir: Path) -> None:
    """Someone not enrolled stands still in view for 6 s (obama.jpg as every frame; Lin-Manuel is enrolled): his
    track settles unknown, then re-checks double from 0.25 s up to `recheck_unknown_max_s` (2 s); without the
    backoff (max = base) he is embedded 4x a second all along."""
    photo = load_image(fr_dir / "obama.jpg")
    still = cv2.resize(photo, (640, round(photo.shape[0] * 640 / photo.shape[1])), interpolation=cv2.INTER_AREA)
    embeds, times = {}, {}
    for top in (0.25, 2.0):
        text = ("device_id: door\ncamera: {source: 0}\ndetector: {backend: hog}\n"
                f"tracking: {{recheck_unknown_s: 0.25, recheck_unknown_max_s: {top}}}\n")
        pipeline = RecognitionPipeline.from_config(parse_config(text), dlib_embedder)
        with Gallery(gallery_file, create=False) as g:
            pipeline.set_matcher(Matcher(g.snapshot(dlib_embedder.version), dlib_embedder.threshold))
        kinds, at = [], []
        for index in range(round(6 * FPS)):
            result = pipeline.process(Frame(still, index, index / FPS, 0.0))
            kinds += [e.kind for e in result.events]
            if result.embeds:
                at.append(index / FPS)
        assert kinds == [EventKind.UNKNOWN] and pipeline.stats.tracks_started == 1, kinds
        embeds[top], times[top] = pipeline.stats.embeds, at
    assert embeds[0.25] >= 15 and embeds[2.0] <= 8, (embeds, times)
    # after the three votes that settled him: 0.25, 0.5, 1, 2, 2... s, each rounded up to the next detection
    # (every 3rd frame: 0.12 s)
    gaps = np.diff(times[2.0][2:])
    cadence = 3 / FPS + 1e-6
    for gap, wanted in zip(gaps, (0.25, 0.5, 1.0, 2.0, 2.0), strict=False):
        assert wanted <= gap <= wanted + cadence, (gaps, times[2.0])
    assert max(np.diff(times[0.25][2:])) <= 0.25 + cadence
