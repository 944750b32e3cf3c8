"""Shared fixtures: the real test data in ../shared, the clip, running the CLI, waiting, a fake camera.

Tests that need no shared data (pure computation: vote, track association, match, config, sinks, payloads)
are marked `pure` and run with `pytest -m pure` in seconds, without ../shared.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGED_SHARED", ROOT.parent / "shared")).resolve()
OPENFACE = SHARED / "data" / "openface-examples"
FR = SHARED / "data" / "face_recognition-examples"
LFW = SHARED / "data" / "lfw"
NN4_CSV = SHARED / "models" / "openface-nn4.small2.v1-csv-partial"
#: The Hamilton clip: 640x360, 29.97 fps, 275 frames; Lin-Manuel Miranda small on a stage, then close up.
CLIP_NAME = "short_hamilton_clip.mp4"
CLIP_FRAMES = 275
CLIP_FPS = 29.97
LIN = "lin-manuel-miranda"


def _require_shared() -> None:
    if not OPENFACE.is_dir():
        pytest.fail(f"test data not found: {SHARED} (put the shared data set beside the checkout as ../shared "
                    f"or set EDGED_SHARED)", pytrace=False)


@pytest.fixture(scope="session")
def shared() -> Path:
    _require_shared()
    return SHARED


@pytest.fixture(scope="session")
def openface_dir(shared: Path) -> Path:
    return OPENFACE


@pytest.fixture(scope="session")
def fr_dir(shared: Path) -> Path:
    return FR


@pytest.fixture(scope="session")
def lfw_dir(shared: Path) -> Path:
    return LFW


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
            cwd: Path | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m edged ARGS` as a user would, capturing output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd or ROOT, input=input)


RETINAFACE_DIR = SHARED / "models" / "retinaface-widerface-caffe"
RETINAFACE_FILES = ("deploy.prototxt", "Widerface-RetinaFace.caffemodel")


@pytest.fixture(scope="session")
def retinaface_models(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory holding the RetinaFace detector as `edged models fetch retinaface` installs it
    (links to ../shared: never copied into the project)."""
    folder = tmp_path_factory.mktemp("retinaface-models")
    for name in RETINAFACE_FILES:
        (folder / name).symlink_to(RETINAFACE_DIR / name)
    return folder


@pytest.fixture(scope="session")
def retinaface(retinaface_models: Path):
    from edged.vision.detect import FaceDetector

    return FaceDetector("retinaface", upsample=0, model_files=tuple(retinaface_models / n for n in RETINAFACE_FILES))


@pytest.fixture(scope="session")
def dlib_embedder():
    from edged.models.embedders import get_embedder

    return get_embedder("dlib")


@pytest.fixture(scope="session")
def dlib_pipeline(dlib_embedder):
    from edged.embed.faces import FacePipeline

    return FacePipeline(dlib_embedder)


@pytest.fixture(scope="session")
def clip(fr_dir: Path) -> Path:
    return fr_dir / CLIP_NAME


@pytest.fixture(scope="session")
def clip_frames(clip: Path) -> list[np.ndarray]:
    """The clip's first 12 frames decoded directly with OpenCV, as RGB (a reference independent of edged)."""
    cap = cv2.VideoCapture(str(clip))
    frames = []
    for _ in range(12):
        ok, bgr = cap.read()
        assert ok
        frames.append(bgr[:, :, ::-1].copy())
    cap.release()
    return frames


def wait_until(predicate: Callable[[], object], timeout: float, poll: float = 0.02) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds passed; its last value as a bool."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())


def enroll_cli(gallery: Path, name: str, *sources: str | Path, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    """`edged --gallery GALLERY enroll NAME SOURCES...` as a user runs it; asserts it succeeded."""
    done = run_cli("--gallery", str(gallery), "enroll", name, *map(str, sources), env=env)
    assert done.returncode == 0, done.stderr
    return done


class FakeCamera:
    """Stands in for cv2.VideoCapture on /dev/video0 (no camera hardware on test machines): serves real
    frames at 30 fps, then fails like an unplugged USB camera after `fail_after` reads."""

    def __init__(self, frames: list[np.ndarray], fail_after: int, fps: float = 30.0) -> None:
        self.frames = [f[:, :, ::-1].copy() for f in frames]  # cameras give BGR
        self.fail_after = fail_after
        self.fps = fps
        self.reads = 0
        self.props: dict[int, float] = {}
        self.released = False

    def isOpened(self) -> bool:
        return True

    def read(self):
        time.sleep(1 / self.fps)
        if self.reads >= self.fail_after:
            return False, None
        frame = self.frames[self.reads % len(self.frames)]
        self.reads += 1
        return True, frame

    def grab(self) -> bool:
        return self.read()[0]

    def get(self, prop: int) -> float:
        return self.fps if prop == cv2.CAP_PROP_FPS else 0.0

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def release(self) -> None:
        self.released = True


# ---- hypothesis (tests/test_fuzz.py) ----
# "ci" (the default): a few hundred examples per property, quick; "fuzz": 1,000 per property and 1,200 inputs
# through the CLI, selected with `scripts/test.sh --hypothesis-profile=fuzz tests/test_fuzz.py`. No example
# database is written (failures print their reproduction blob instead).
try:
    from datetime import timedelta

    from hypothesis import HealthCheck, settings

    _common = {"deadline": timedelta(seconds=5), "database": None, "print_blob": True,
               "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.filter_too_much]}
    settings.register_profile("ci", max_examples=150, derandomize=True, **_common)
    settings.register_profile("fuzz", max_examples=1000, **_common)
    settings.load_profile(os.environ.get("EDGED_HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is in the test extra; without it only tests/test_fuzz.py is skipped
    pass
