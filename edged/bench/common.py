"""Shared parts of `edged bench`: inputs, plans, interleaved timing, machine facts.

Rules every number here follows:

* a timing is the median of repeated runs after one untimed warm-up run (model loading, caches);
* runtimes that are compared with each other run interleaved (A B C A B C ...) in the same process,
  so changing machine load hits them alike, and their ratios are edged time / peer time (< 1 = edged faster);
* inputs are real: photos and the Hamilton clip from the shared data set; only the match-stage galleries
  are synthetic unit vectors;
* nothing here judges speed: a benchmark reports, it never fails on timing.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edged.errors import EdgedError
from edged.machine import usable_cores

log = logging.getLogger(__name__)


SCHEMA = "edged-bench/1"
#: Inputs inside the shared data folder.
FR_DIR = Path("data/face_recognition-examples")
OPENFACE_DIR = Path("data/openface-examples")
CLIP = FR_DIR / "short_hamilton_clip.mp4"
#: The photo the detector and decoder are timed on (1920x1080, one face).
DETECT_PHOTO = FR_DIR / "obama-1080p.jpg"
DECODE_PHOTOS = (FR_DIR / "obama-1080p.jpg", FR_DIR / "obama-720p.jpg")
#: Photos whose faces feed the align and embed stages.
FACE_PHOTOS = (OPENFACE_DIR / "lennon-1.jpg", OPENFACE_DIR / "lennon-2.jpg", OPENFACE_DIR / "clapton-1.jpg",
               OPENFACE_DIR / "clapton-2.jpg", OPENFACE_DIR / "carell.jpg", OPENFACE_DIR / "adams.jpg",
               FR_DIR / "lin-manuel-miranda.png", FR_DIR / "alex-lacamoire.png", FR_DIR / "biden.jpg")
#: Who is enrolled for the clip (as face_recognition's facerec_from_video_file.py example knows them).
KNOWN_PEOPLE = {"lin-manuel-miranda": FR_DIR / "lin-manuel-miranda.png",
                "alex-lacamoire": FR_DIR / "alex-lacamoire.png"}
#: The person whose recognition latency is reported.
LATENCY_PERSON = "lin-manuel-miranda"
#: Detector resolutions and upsampling levels timed.
DETECT_SIZES = ((640, 480), (1280, 720))
DETECT_UPSAMPLES = (0, 1)
NN4_BATCHES = (1, 16, 64)
#: face_recognition's compare_faces tolerance as its video example uses it (euclidean on raw descriptors).
PEER_TOLERANCE = 0.5
#: Synthetic galleries: samples per person, and how far (squared L2) a query lies from its source sample.
SAMPLES_PER_PERSON = 5
QUERY_DISTANCE = 0.3
#: ANN (faiss IVF-Flat, sqrt(N) lists): lists probed per query (speed/recall trade-off), and the smallest
#: gallery it is tried on.
ANN_NPROBES = (16, 64)
ANN_MIN_SIZE = 100_000


class BenchError(EdgedError):
    """A benchmark input is missing or a benchmark step cannot run."""


@dataclass(frozen=True)
class BenchPlan:
    """How much to measure; `QUICK` finishes in well under a minute on 2 cores."""

    quick: bool
    #: Timed runs per stage measurement (after one warm-up).
    repeats: int
    #: Interleaved rounds of the nn4 runtimes.
    runtime_repeats: int
    gallery_sizes: tuple[int, ...]
    #: Queries timed per gallery size.
    match_queries: int
    #: Frames [start, stop) of the clip for the face_recognition-style comparison; None = all.
    peer_frames: tuple[int, int] | None
    #: Interleaved rounds of edged vs the face_recognition-style pipeline.
    peer_repeats: int


FULL = BenchPlan(quick=False, repeats=10, runtime_repeats=30, gallery_sizes=(1000, 10_000, 100_000, 1_000_000),
                 match_queries=50, peer_frames=None, peer_repeats=3)
QUICK = BenchPlan(quick=True, repeats=3, runtime_repeats=3, gallery_sizes=(1000, 10_000, 100_000),
                  match_queries=10, peer_frames=(80, 110), peer_repeats=1)

Runner = Callable[[], object]
Step = Callable[[str], None]


# ---- timing (pure apart from the injected timer) ----

def interleaved(runners: Mapping[str, Runner], repeats: int, warmup: int = 1,
                timer: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds per run of each runner, run in rounds A B C A B C ...; the first `warmup` rounds are not kept."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times: dict[str, list[float]] = {name: [] for name in runners}
    for round_ in range(warmup + repeats):
        for name, run in runners.items():
            start = timer()
            run()
            elapsed = timer() - start
            if round_ >= warmup:
                times[name].append(elapsed)
    return times


def summary(seconds: Sequence[float], per: int = 1) -> dict[str, float | int]:
    """Median, min and max in milliseconds (divided by `per`, e.g. faces in a batch) and the number of runs."""
    if not seconds:
        raise ValueError("no timings")
    scale = 1000.0 / per
    return {"median_ms": round(statistics.median(seconds) * scale, 4), "min_ms": round(min(seconds) * scale, 4),
            "max_ms": round(max(seconds) * scale, 4), "runs": len(seconds)}


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, rounded; inf when the denominator is 0."""
    return round(numerator / denominator, 4) if denominator > 0 else float("inf")


def time_one(run: Runner, repeats: int, timer: Callable[[], float] = time.perf_counter) -> list[float]:
    return interleaved({"run": run}, repeats, timer=timer)["run"]


# ---- synthetic galleries (pure) ----

def random_unit_vectors(n: int, dim: int, rng: np.random.Generator, chunk: int = 100_000) -> np.ndarray:
    """(n, dim) float32 rows uniform on the unit sphere (normalised Gaussians), built in place chunk by chunk."""
    v = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        part = v[start:start + chunk]
        rng.standard_normal(part.shape, dtype=np.float32, out=part)
        part /= np.linalg.norm(part, axis=1, keepdims=True)
    return v


def perturbed_queries(sources: np.ndarray, distance: float, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at squared L2 `distance` from each source row (a genuine face's distance to its sample)."""
    noise = rng.standard_normal(sources.shape).astype(np.float32)
    noise -= (noise * sources).sum(axis=1, keepdims=True) * sources  # orthogonal to the source
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    cos = 1.0 - distance / 2.0  # |a - b|^2 = 2 - 2 cos on the unit sphere
    return (cos * sources + np.sqrt(1.0 - cos * cos) * noise).astype(np.float32)


def nearest_rows(vectors: np.ndarray, queries: np.ndarray, chunk: int = 100_000) -> np.ndarray:
    """Index of each query's nearest row by squared L2 (exact; unit vectors: largest dot product)."""
    best = np.full(len(queries), -1, np.int64)
    best_dot = np.full(len(queries), -np.inf, np.float32)
    for start in range(0, len(vectors), chunk):
        dots = queries @ vectors[start:start + chunk].T
        idx = dots.argmax(axis=1)
        top = dots[np.arange(len(queries)), idx]
        better = top > best_dot
        best[better] = idx[better] + start
        best_dot[better] = top[better]
    return best


# ---- inputs ----

def default_shared_dir() -> Path:
    """$EDGED_SHARED, else `shared` beside the checkout this package lives in."""
    env = os.environ.get("EDGED_SHARED")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[3] / "shared"


def require_inputs(shared: Path) -> None:
    """Raise BenchError naming the first missing input file."""
    needed = [CLIP, DETECT_PHOTO, *DECODE_PHOTOS, *FACE_PHOTOS, *KNOWN_PEOPLE.values()]
    for rel in needed:
        if not (shared / rel).is_file():
            raise BenchError(f"bench input not found: {shared / rel} (point --shared or $EDGED_SHARED at the "
                             f"shared data folder)")


def resize_to(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre-crop `image` to the aspect ratio width:height, then resize it to width x height."""
    import cv2

    h, w = image.shape[:2]
    if w * height > h * width:  # too wide
        cw = round(h * width / height)
        image = image[:, (w - cw) // 2:(w - cw) // 2 + cw]
    else:
        ch = round(w * height / width)
        image = image[(h - ch) // 2:(h - ch) // 2 + ch]
    interp = cv2.INTER_AREA if image.shape[1] > width else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(image, (width, height), interpolation=interp))


def read_clip(path: Path, window: tuple[int, int] | None = None) -> tuple[list[np.ndarray], float]:
    """RGB frames [start, stop) of a video (all when `window` is None) and its fps, through the one reader."""
    from edged.camera.source import FrameSource

    start, stop = window or (0, 1 << 30)
    frames = []
    with FrameSource.for_file(path) as video:
        for index, frame in video.frames():
            if index >= stop:
                break
            if index >= start:
                frames.append(frame)
        fps = video.fps
    if not frames:
        raise BenchError(f"{path}: no frames in {window}")
    return frames, fps


# ---- machine ----

def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # optional packages: absent or broken is reported as None
        return None
    return str(getattr(mod, "__version__", getattr(mod, "DLIB_VERSION", "unknown")))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Cores, thread settings, library versions and whether CUDA is there."""
    import cv2
    import torch

    cuda = torch.cuda.is_available()
    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "usable_cores": usable_cores(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        if hasattr(os, "sysconf") else None,
        "torch_threads": torch.get_num_threads(), "opencv_threads": cv2.getNumThreads(),
        "cuda": cuda, "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "python": platform.python_version(), "platform": platform.platform(),
        "versions": {"torch": torch.__version__, "onnxruntime": _version("onnxruntime"), "opencv": cv2.__version__,
                     "dlib": _version("dlib"), "numpy": np.__version__, "onnx": _version("onnx"),
                     "faiss": _version("faiss")},
    }


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
