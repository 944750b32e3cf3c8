"""Measurements behind `edged bench`: every stage on real inputs, the daemon end to end, and peers side by side.

Rules every number here follows:

* a timing is the median of repeated runs after one untimed warm-up run (model loading, caches);
* runtimes that are compared with each other run interleaved (A B C A B C ...) in the same process,
  so changing machine load hits them alike, and their ratios are edged time / peer time (< 1 = edged faster);
* inputs are real: photos and the Hamilton clip from the shared data set; only the match-stage galleries
  are synthetic unit vectors;
* nothing here judges speed: a benchmark reports, it never fails on timing.

The nn4 runtimes are fed identical input and every runtime's time includes the same preprocessing
(uint8 HxWx3 faces -> float32 NCHW / 255 by `edged.preprocess.to_network_input`; edged's `embed()` does
it internally, the peers call it in the timed function).

The end-to-end run starts the daemon (`edged.daemon.Daemon`) in a child process, so its peak RSS and CPU
are its own; the child runs `e2e_child_main`. No MQTT broker is needed: the daemon queues its events while
the broker (a closed port on 127.0.0.1) is unreachable, as it does when a real broker is down.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edged.errors import EdgedError
from edged.sysinfo import peak_rss_mb

log = logging.getLogger(__name__)

#: Format tag of the JSON report.
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
    return Path(__file__).resolve().parents[2] / "shared"


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
    """RGB frames [start, stop) of a video (all when `window` is None) and its fps."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise BenchError(f"{path}: cannot open video")
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or 30.0
        start, stop = window or (0, 1 << 30)
        frames = []
        index = 0
        while index < stop:
            ok, bgr = cap.read()
            if not ok:
                break
            if index >= start:
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        cap.release()
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


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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


# ---- stage: decode, detect, align ----

def bench_decode(shared: Path, plan: BenchPlan) -> dict[str, Any]:
    """JPEG bytes -> RGB uint8 (`edged.imageio.decode_image`), file read excluded."""
    from edged.imageio import decode_image

    out: dict[str, Any] = {}
    for rel in DECODE_PHOTOS:
        data = (shared / rel).read_bytes()
        image = decode_image(data, rel.name)
        out[f"jpeg_{image.shape[1]}x{image.shape[0]}"] = {
            "file": rel.name, "bytes": len(data), **summary(time_one(lambda d=data: decode_image(d), plan.repeats))}
    return out


def bench_detect(shared: Path, plan: BenchPlan) -> dict[str, Any]:
    """dlib HOG on a real photo resized to each resolution, upsample 0 and 1."""
    from edged.detect import FaceDetector
    from edged.imageio import load_image

    photo = load_image(shared / DETECT_PHOTO)
    out: dict[str, Any] = {}
    for width, height in DETECT_SIZES:
        image = resize_to(photo, width, height)
        for upsample in DETECT_UPSAMPLES:
            detector = FaceDetector("hog", upsample=upsample)
            faces = len(detector.detect(image))
            out[f"{width}x{height}_upsample{upsample}"] = {
                "faces": faces, **summary(time_one(lambda d=detector, i=image: d.detect(i), plan.repeats))}
    return out


@dataclass
class AlignedFaces:
    """Real faces from the photos, aligned for each embedder."""

    openface96: list[np.ndarray]
    chips150: list[np.ndarray]


def bench_align(shared: Path, plan: BenchPlan) -> tuple[dict[str, Any], AlignedFaces]:
    """Per face: 68-point landmarks + OpenFace 96 crop (nn4) and 5-point landmarks + dlib 150 chip."""
    from edged.align import DLIB_CHIP_150, OPENFACE_96, FaceAligner
    from edged.detect import FaceDetector
    from edged.imageio import load_image

    detector = FaceDetector("hog", upsample=1)
    faces = []
    for rel in FACE_PHOTOS:
        image = load_image(shared / rel)
        scale = min(1.0, 800.0 / max(image.shape[:2]))
        faces += [(image, box) for box in detector.detect(image, scale)[:1]]
    if not faces:
        raise BenchError("no face found in the align-stage photos")
    nn4_aligner, dlib_aligner = FaceAligner(OPENFACE_96), FaceAligner(DLIB_CHIP_150)
    marks68 = [nn4_aligner.landmarks(img, box) for img, box in faces]
    marks5 = [dlib_aligner.landmarks(img, box) for img, box in faces]
    runners: dict[str, Runner] = {
        "landmarks68": lambda: [nn4_aligner.landmarks(img, box) for img, box in faces],
        "openface96": lambda: [nn4_aligner.crop(img, box, m) for (img, box), m in zip(faces, marks68, strict=True)],
        "landmarks5": lambda: [dlib_aligner.landmarks(img, box) for img, box in faces],
        "dlib_chip150": lambda: [dlib_aligner.crop(img, box, m) for (img, box), m in zip(faces, marks5, strict=True)],
    }
    times = interleaved(runners, plan.repeats)
    per_face = {name: summary(t, per=len(faces)) for name, t in times.items()}
    result: dict[str, Any] = {"faces": len(faces), "per_face": per_face,
                              "nn4_per_face_ms": round(per_face["landmarks68"]["median_ms"]
                                                       + per_face["openface96"]["median_ms"], 4),
                              "dlib_per_face_ms": round(per_face["landmarks5"]["median_ms"]
                                                        + per_face["dlib_chip150"]["median_ms"], 4)}
    aligned = AlignedFaces([nn4_aligner.crop(img, box, m) for (img, box), m in zip(faces, marks68, strict=True)],
                           [dlib_aligner.crop(img, box, m) for (img, box), m in zip(faces, marks5, strict=True)])
    return result, aligned


def tile_batch(faces: Sequence[np.ndarray], n: int) -> np.ndarray:
    """n faces cycling through `faces`, stacked (N, S, S, 3)."""
    return np.stack([faces[i % len(faces)] for i in range(n)])


def bench_dlib_embed(chips: Sequence[np.ndarray], plan: BenchPlan) -> dict[str, Any]:
    from edged.embed import get_embedder

    embedder = get_embedder("dlib")
    batch = np.stack(chips)
    return {"batch": len(batch), "per": "face",
            **summary(time_one(lambda: embedder.embed(batch), plan.repeats), per=len(batch))}


# ---- nn4 weights and peers on the same network ----

@dataclass
class NN4Setup:
    """The nn4 embedder under test and where its weights came from."""

    embedder: Any
    weights_path: Path
    source: str  # "installed" or "random"
    name: str


def nn4_for_speed(workdir: Path, models_dir: str | None) -> NN4Setup:
    """The installed default nn4 model on CPU, else random weights (speed does not depend on their values)
    saved with `save_weights` to `workdir` and loaded through the normal embedder path."""
    import torch

    from edged import models
    from edged.embed import get_embedder
    from edged.embed.nn4_net import NN4Small2
    from edged.errors import ModelNotInstalledError
    from edged.nn4_weights import save_weights

    try:
        chosen = models.resolve(None, models.models_dir(models_dir), models.load_registry())
        embedder = get_embedder("nn4", weights=str(chosen.path), device="cpu", models_dir=models_dir)
        embedder.embed(np.zeros((1, 96, 96, 3), np.uint8))  # load and check now
        return NN4Setup(embedder, chosen.path, "installed", chosen.name)
    except ModelNotInstalledError:
        pass
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = NN4Small2().eval()
    path = workdir / f"bench-random{models.CONVERTED_SUFFIX}"
    save_weights(path, net.state_dict(), name="bench-random", threshold=models.DEFAULT_NN4_THRESHOLD,
                 alignment=models.NN4_ALIGNMENT, source="random weights for edged bench")
    # models_dir = workdir: whatever the embedder caches for these throw-away weights goes with them
    embedder = get_embedder("nn4", weights=str(path), device="cpu", models_dir=str(workdir))
    return NN4Setup(embedder, path, "random", "bench-random")


def _backend_name(embedder: Any) -> str:
    backend = getattr(embedder, "backend", None)
    if isinstance(backend, str):
        return backend
    if backend is not None:
        return type(backend).__name__
    return f"torch eager ({getattr(embedder, 'device', 'cpu')})"


def bench_nn4_runtimes(setup: NN4Setup, faces96: Sequence[np.ndarray], workdir: Path,
                       plan: BenchPlan) -> dict[str, Any]:
    """edged's nn4 `embed()` vs ONNX Runtime vs OpenCV DNN on a plain export of the same weights."""
    import cv2
    import onnxruntime as ort

    from edged.embed.onnx_export import export_plain_onnx
    from edged.nn4_weights import load_nn4
    from edged.preprocess import to_network_input

    # Each peer gets the plain export it runs best (see edged.embed.onnx_export): ORT torch's own LRN
    # decomposition, OpenCV DNN the ONNX LRN op it can import.
    model = load_nn4(setup.weights_path)
    onnx_path, opencv_path = workdir / "nn4-plain.onnx", workdir / "nn4-plain-lrn-op.onnx"
    export_plain_onnx(model, onnx_path)
    export_plain_onnx(model, opencv_path, lrn_op=True)
    how = ("edged.embed.onnx_export.export_plain_onnx: ONNX Runtime gets torch's LRN decomposition, "
           "OpenCV DNN the ONNX LRN op")
    options = ort.SessionOptions()
    options.intra_op_num_threads = usable_cores()
    # Default ORT threads keep spinning for a while after each run, stealing a core from whatever runs next
    # in the interleaved rounds; stop them after each run (no effect on the peer's own time when idle).
    options.add_session_config_entry("session.force_spinning_stop", "1")
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    net = cv2.dnn.readNetFromONNX(str(opencv_path))

    def run_ort(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: to_network_input(batch)})[0]

    def run_cv(batch: np.ndarray) -> np.ndarray:
        net.setInput(to_network_input(batch))
        return net.forward()

    embed = setup.embedder.embed
    check = tile_batch(faces96, 16)
    ref = embed(check)
    diffs = {"onnxruntime": float(np.abs(run_ort(check) - ref).max()),
             "opencv_dnn": float(np.abs(run_cv(check) - ref).max())}
    batches: dict[str, Any] = {}
    for n in NN4_BATCHES:
        batch = tile_batch(faces96, n)
        times = interleaved({"edged": lambda b=batch: embed(b), "onnxruntime": lambda b=batch: run_ort(b),
                             "opencv_dnn": lambda b=batch: run_cv(b)}, plan.runtime_repeats)
        row: dict[str, Any] = {}
        for name, t in times.items():
            s = summary(t)
            row[f"{name}_ms"] = s["median_ms"]
            row[f"{name}_ms_per_face"] = round(s["median_ms"] / n, 4)
        row["ratio_edged_onnxruntime"] = ratio(row["edged_ms"], row["onnxruntime_ms"])
        row["ratio_edged_opencv_dnn"] = ratio(row["edged_ms"], row["opencv_dnn_ms"])
        row["runs"] = plan.runtime_repeats
        batches[f"batch_{n}"] = row
    return {"weights": setup.name, "weights_source": setup.source, "edged_backend": _backend_name(setup.embedder),
            "export": how, "onnxruntime_threads": options.intra_op_num_threads,
            "opencv_threads": cv2.getNumThreads(),
            "preprocessing": "included in all: uint8 faces -> float32 NCHW / 255 (edged.preprocess.to_network_input)",
            "input": f"{len(faces96)} real aligned faces, tiled to the batch size",
            "max_abs_diff_vs_edged": {k: round(v, 9) for k, v in diffs.items()}, **batches}


# ---- stage: match ----

def _ann_index(vectors: np.ndarray) -> tuple[Any, int, float]:
    """A faiss IVF-Flat index over `vectors` (sqrt(N) lists, trained on 40 samples per list); its build seconds."""
    import faiss

    n = len(vectors)
    nlist = max(16, int(np.sqrt(n)))
    quantizer = faiss.IndexFlatL2(vectors.shape[1])
    index = faiss.IndexIVFFlat(quantizer, vectors.shape[1], nlist, faiss.METRIC_L2)
    start = time.perf_counter()
    train = vectors[np.random.default_rng(1).choice(n, size=min(n, 40 * nlist), replace=False)]
    index.train(train)
    index.add(vectors)
    return index, nlist, time.perf_counter() - start


def bench_match(sizes: Sequence[int], queries: int, threshold: float, plan: BenchPlan) -> dict[str, Any]:
    """`edged.match.Matcher` (exact, as the daemon uses it) on synthetic galleries; faiss IVF when importable.

    Queries lie at squared L2 `QUERY_DISTANCE` from a random gallery sample (a genuine face near its
    enrolled sample); recall@1 is the share whose answer is that exact-nearest sample's person (exact) or
    the exact-nearest sample itself (ANN, per `nprobe`).
    """
    from edged.gallery import GallerySnapshot
    from edged.match import Matcher
    from edged.preprocess import EMBEDDING_DIM

    try:
        import faiss  # noqa: F401

        ann_available = True
    except ImportError:
        ann_available = False
    rng = np.random.default_rng(0)
    exact: dict[str, Any] = {}
    ann: dict[str, Any] = {}
    ann_backend = None
    for n in sizes:
        vectors = random_unit_vectors(n, EMBEDDING_DIM, rng)
        labels = np.arange(n) // SAMPLES_PER_PERSON
        names = [f"p{i}" for i in range(int(labels[-1]) + 1)]
        sources = rng.choice(n, size=queries, replace=False)
        q = perturbed_queries(vectors[sources], QUERY_DISTANCE, rng)
        truth = nearest_rows(vectors, q)
        matcher = Matcher(GallerySnapshot(names, labels, vectors, "bench", 0), threshold)
        times = time_one(lambda m=matcher, q=q: [m.match(q[i:i + 1]) for i in range(len(q))], plan.repeats)
        found = [r.candidate for r in matcher.match(q)]
        del matcher
        exact[str(n)] = {"per": "query", **summary(times, per=queries), "people": len(names),
                         "recall_at_1": round(float(np.mean([f == names[labels[t]] for f, t in
                                                             zip(found, truth, strict=True)])), 4)}
        if ann_available and n >= ANN_MIN_SIZE:
            index, nlist, build_s = _ann_index(vectors)
            probes: dict[str, Any] = {}
            for nprobe in ANN_NPROBES:
                index.nprobe = nprobe
                times = time_one(lambda i=index, q=q: [i.search(q[j:j + 1], 1) for j in range(len(q))],
                                 plan.repeats)
                _, got = index.search(q, 1)
                probes[str(nprobe)] = {"per": "query", **summary(times, per=queries),
                                       "recall_at_1": round(float(np.mean(got[:, 0] == truth)), 4)}
            ann[str(n)] = {"nlist": nlist, "build_s": round(build_s, 3), "nprobe": probes}
            ann_backend = "faiss IndexIVFFlat, sqrt(N) lists, recall@1 = the exact nearest sample found"
            del index
        del vectors, labels, names
    return {"queries": queries, "query_distance": QUERY_DISTANCE, "samples_per_person": SAMPLES_PER_PERSON,
            "exact": exact,
            "ann": {"available": ann_available, "backend": ann_backend, "sizes": ann,
                    "note": None if ann_available else "faiss not installed: pip install 'edged[bench]'"}}


# ---- gallery for the clip ----

def enroll_known(gallery_path: Path, embedder: Any, shared: Path, cfg: Any) -> list[str]:
    """A fresh gallery with the clip's known people, enrolled as `edged enroll` does; returns their names."""
    from edged.enroll import Enroller, expand_sources
    from edged.faces import FacePipeline
    from edged.gallery import Gallery

    enroller = Enroller(FacePipeline(embedder), cfg.enroll)
    enrolled = []
    with Gallery(gallery_path, create=True) as gallery:
        for name, rel in KNOWN_PEOPLE.items():
            report = enroller.run(expand_sources([str(shared / rel)]))
            if report.samples:
                gallery.add_samples(name, report.samples)
                enrolled.append(name)
    if LATENCY_PERSON not in enrolled:
        raise BenchError(f"{shared / KNOWN_PEOPLE[LATENCY_PERSON]}: could not be enrolled")
    return enrolled


# ---- end to end: the daemon in a child process ----

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_config(config_path: str | None, clip: Path, gallery: Path, port: int) -> Any:
    """The user's config (or the defaults) with the clip as the camera (every frame, no pacing), the bench
    gallery, and MQTT pointed at a closed local port."""
    from edged.config import default_config, load_config

    cfg = load_config(config_path) if config_path else default_config(str(clip), "bench")
    camera = dataclasses.replace(cfg.camera, source=str(clip), realtime=False, loop=False, roi=None, max_width=None)
    mqtt = dataclasses.replace(cfg.mqtt, host="127.0.0.1", port=port, username=None, password=None,
                               password_file=None, tls=dataclasses.replace(cfg.mqtt.tls, enabled=False),
                               reconnect_max_s=30.0)
    gallery_cfg = dataclasses.replace(cfg.gallery, path=str(gallery))
    return dataclasses.replace(cfg, camera=camera, mqtt=mqtt, gallery=gallery_cfg)


class _StampedEvents(deque):  # type: ignore[type-arg]
    """The daemon's `recent_events` that also records the wall time each event was published."""

    def __init__(self, maxlen: int) -> None:
        super().__init__(maxlen=maxlen)
        self.stamps: list[tuple[float, dict[str, Any]]] = []

    def append(self, item: dict[str, Any]) -> None:
        self.stamps.append((time.time(), item))
        super().append(item)


class _StampedCapture:
    """A `cv2.VideoCapture` recording the wall time each frame was read."""

    def __init__(self, cap: Any, stamps: list[float]) -> None:
        self._cap = cap
        self._stamps = stamps

    def read(self) -> tuple[bool, Any]:
        ok, image = self._cap.read()
        if ok:
            self._stamps.append(time.time())
        return ok, image

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cap, name)


def e2e_child_main(argv: Sequence[str]) -> int:
    """Child process: run the daemon over the clip and write its statistics and timing stamps as JSON."""
    from edged.camera import opencv_capture
    from edged.daemon import Daemon, embedder_from_config
    from edged.service import Notifier

    spec = json.loads(Path(argv[0]).read_text())
    try:
        cfg = bench_config(spec["config"], Path(spec["clip"]), Path(spec["gallery"]), spec["port"])
        grabbed: list[float] = []
        daemon = Daemon(cfg, embedder=embedder_from_config(cfg), notifier=Notifier({}),
                        capture_factory=lambda src, api: _StampedCapture(opencv_capture(src, api), grabbed))
        daemon.recent_events = events = _StampedEvents(daemon.recent_events.maxlen or 10_000)
        stats = daemon.run()
    except EdgedError as exc:
        print(f"edged: error: {exc}", file=sys.stderr)
        return 1
    result = {"stats": stats.to_dict(), "grabbed": grabbed, "peak_rss_mb": peak_rss_mb(),
              "events": [{"wall": w, "type": e["type"], "person": e["person"], "frame": e["frame"]}
                         for w, e in events.stamps]}
    Path(spec["out"]).write_text(json.dumps(result))
    return 0


def run_daemon_child(config_path: str | None, clip: Path, gallery: Path, workdir: Path,
                     timeout_s: float = 600.0) -> dict[str, Any]:
    """Start the child, wait for it, return what it wrote; BenchError with its last error line on failure."""
    spec = {"config": config_path, "clip": str(clip), "gallery": str(gallery), "port": _free_port(),
            "out": str(workdir / "e2e.json")}
    spec_path = workdir / "e2e-spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    code = "import sys; from edged.bench import e2e_child_main; sys.exit(e2e_child_main(sys.argv[1:]))"
    try:
        done = subprocess.run([sys.executable, "-c", code, str(spec_path)], capture_output=True, text=True,
                              timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"end-to-end run: the daemon did not finish {clip.name} within {timeout_s:.0f} s") from exc
    if done.returncode != 0 or not Path(spec["out"]).is_file():
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()]
        raise BenchError(f"end-to-end run failed (exit {done.returncode}): "
                         f"{(errors or lines or ['no output'])[-1]}")
    return json.loads(Path(spec["out"]).read_text())


def e2e_summary(child: Mapping[str, Any], fps: float, person: str) -> dict[str, Any]:
    """Throughput, per-frame stage budget, memory, CPU and the person's recognition latency from a child run."""
    s = child["stats"]
    frames = max(int(s["frames_processed"]), 1)
    processing = float(s["processing_s"])
    video_s = s["frames_read"] / fps
    out: dict[str, Any] = {
        "frames": s["frames_processed"], "frames_dropped": s["frames_dropped"], "video_fps": round(fps, 3),
        "video_s": round(video_s, 3), "wall_s": s["wall_s"], "processing_s": s["processing_s"],
        "startup_and_shutdown_s": round(s["wall_s"] - s["processing_s"], 3),
        "fps": s["fps"], "realtime_factor": s["realtime_factor"],
        "faces_detected": s["faces_detected"],
        "faces_per_s": round(s["faces_detected"] / processing, 2) if processing > 0 else None,
        "detector_runs": s["detector_runs"], "small_face_scans": s["small_face_scans"],
        "tracks": s["tracks"], "embeds": s["embeds"],
        "peak_rss_mb": child.get("peak_rss_mb") or s["peak_rss_mb"],
        "cpu_s": s["cpu_s"], "cpu_cores_busy": round(s["cpu_s"] / s["wall_s"], 3),
        "stage_ms_per_frame": {k: round(v * 1000.0 / frames, 3) for k, v in s["seconds"].items()},
        "frame_budget_ms_realtime": round(1000.0 / fps, 3), "events": s["events"],
    }
    timing = s["people"].get(person)
    latency: dict[str, Any] = {"person": person, "recognized": timing is not None}
    if timing is not None:
        first, rec = int(timing["first_detected_frame"]), int(timing["recognized_frame"])
        published = next((e["wall"] for e in child["events"]
                          if e["type"] == "recognized" and e["person"] == person), None)
        grabbed = child["grabbed"]
        latency.update(first_detected_frame=first, recognized_frame=rec,
                       video_s=round(float(timing["latency_s"]), 4),
                       wall_s=round(published - grabbed[first], 4)
                       if published is not None and first < len(grabbed) else None)
    out["latency"] = latency
    return out


# ---- peer: the face_recognition-style pipeline ----

class FaceRecognitionStyle:
    """What face_recognition's examples do per frame: `face_locations` (dlib HOG, upsample 1), then
    `face_encodings` (5-point landmarks + dlib ResNet) for every face, then `compare_faces` (euclidean
    on raw descriptors <= tolerance, first match wins) -- with the same dlib models, called directly."""

    def __init__(self, known: Mapping[str, np.ndarray] | None = None, tolerance: float = PEER_TOLERANCE) -> None:
        import dlib

        from edged import dlib_models

        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(dlib_models.model_path(dlib_models.SHAPE_5))
        self._encoder = dlib.face_recognition_model_v1(dlib_models.model_path(dlib_models.RESNET))
        self.names = list(known or {})
        self.known = np.array([known[n] for n in self.names]) if known else np.zeros((0, 128))
        self.tolerance = tolerance

    def encodings(self, rgb: np.ndarray) -> list[np.ndarray]:
        rects = self._detector(rgb, 1)
        return [np.array(self._encoder.compute_face_descriptor(rgb, self._landmarks(rgb, r), 1)) for r in rects]

    def names_in(self, rgb: np.ndarray) -> list[str | None]:
        out: list[str | None] = []
        for enc in self.encodings(rgb):
            dist = np.linalg.norm(self.known - enc, axis=1) if len(self.known) else np.zeros(0)
            hits = np.flatnonzero(dist <= self.tolerance)
            out.append(self.names[hits[0]] if len(hits) else None)
        return out


def bench_face_recognition_style(frames: Sequence[np.ndarray], first_index: int, fps: float, cfg: Any,
                                 embedder: Any, gallery_path: Path, shared: Path,
                                 plan: BenchPlan) -> dict[str, Any]:
    """edged's recognition pipeline (as the daemon configures it) vs the face_recognition-style loop on the
    same decoded frames (decoding excluded from both), interleaved rounds, medians."""
    from edged.align import FaceAligner
    from edged.camera import Frame
    from edged.detect import FaceDetector
    from edged.gallery import Gallery
    from edged.imageio import load_image
    from edged.match import Matcher
    from edged.pipeline import RecognitionPipeline
    from edged.types import Box

    with Gallery(gallery_path, create=False) as gallery:
        snapshot = gallery.snapshot(embedder.version)
    m = cfg.match
    threshold = cfg.embedder.threshold if cfg.embedder.threshold is not None else embedder.threshold
    matcher = Matcher(snapshot, threshold, m.method, m.score, m.k)
    detector = FaceDetector(cfg.detector.backend, upsample=cfg.detector.upsample)
    aligner = FaceAligner(embedder.alignment)
    blank = np.zeros((64, 64, 3), np.uint8)
    detector.detect(blank)
    aligner.landmarks(blank, Box(8, 8, 56, 56))  # load the models before timing
    peer = FaceRecognitionStyle()
    known = {}
    for name, rel in KNOWN_PEOPLE.items():
        encs = peer.encodings(load_image(shared / rel))
        if encs:
            known[name] = encs[0]
    peer = FaceRecognitionStyle(known)
    edged_named: dict[str, int] = {}
    peer_named: dict[str, int] = {}
    peer_faces = [0]

    def run_edged() -> None:
        pipeline = RecognitionPipeline(cfg, embedder, detector=detector, aligner=aligner)
        pipeline.set_matcher(matcher)
        for i, image in enumerate(frames):
            index = first_index + i
            result = pipeline.process(Frame(image, index, index / fps, index / fps))
            for event in result.events:
                if event.kind == "recognized" and event.person is not None:
                    edged_named.setdefault(event.person, index)
        pipeline.finish()

    def run_peer() -> None:
        peer_faces[0] = 0
        for i, image in enumerate(frames):
            names = peer.names_in(image)
            peer_faces[0] += len(names)
            for name in names:
                if name is not None:
                    peer_named.setdefault(name, first_index + i)

    times = interleaved({"edged": run_edged, "face_recognition_style": run_peer}, plan.peer_repeats, warmup=0)
    n = len(frames)
    edged_s, peer_s = statistics.median(times["edged"]), statistics.median(times["face_recognition_style"])
    return {"frames": n, "first_frame": first_index, "runs": plan.peer_repeats,
            "decode": "excluded from both (frames decoded beforehand)",
            "edged": {"fps": round(n / edged_s, 2), "ms_per_frame": round(edged_s * 1000 / n, 3),
                      "first_recognized_frame": edged_named},
            "face_recognition_style": {"fps": round(n / peer_s, 2), "ms_per_frame": round(peer_s * 1000 / n, 3),
                                       "faces": peer_faces[0], "first_named_frame": peer_named,
                                       "detector": "dlib HOG, upsample 1, every frame",
                                       "encoder": "dlib ResNet on every face (5-point landmarks, 1 jitter)",
                                       "tolerance": PEER_TOLERANCE},
            "ratio_edged_time_per_frame": ratio(edged_s, peer_s), "speedup": ratio(peer_s, edged_s)}


# ---- the whole run ----

@contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="edged-bench-") as name:
        os.chmod(name, 0o700)  # holds a gallery (biometric data)
        yield Path(name)


def run_bench(shared: Path, plan: BenchPlan, config_path: str | None = None,
              step: Step | None = None) -> dict[str, Any]:
    """Every measurement of `edged bench`, as one JSON-ready dict. `step(name)` is called before each part.

    `config_path`: the user's config (detector, embedder, tracking, vote... settings for the end-to-end run
    and the pipeline comparison); None = built-in defaults.
    """
    from edged.daemon import embedder_from_config

    parts: dict[str, float] = {}
    last = [time.monotonic(), ""]

    def note(name: str) -> None:
        now = time.monotonic()
        if last[1]:
            parts[str(last[1])] = round(now - float(last[0]), 2)
        last[:] = [now, name]
        if name:
            log.info("bench: %s", name)
            if step:
                step(name)

    require_inputs(shared)
    started, load_start = time.monotonic(), load_average()
    report: dict[str, Any] = {"schema": SCHEMA, "quick": plan.quick}
    note("machine")
    report["machine"] = machine_info()
    with _workdir() as work:
        gallery = work / "gallery.db"
        cfg = bench_config(config_path, shared / CLIP, gallery, _free_port())
        stages: dict[str, Any] = {}
        note("decode")
        stages["decode"] = bench_decode(shared, plan)
        note("detect")
        stages["detect"] = bench_detect(shared, plan)
        note("align")
        stages["align"], aligned = bench_align(shared, plan)
        note("nn4 runtimes")
        setup = nn4_for_speed(work, cfg.models.dir)
        runtimes = bench_nn4_runtimes(setup, aligned.openface96, work, plan)
        note("dlib embed")
        stages["embed"] = {
            "nn4": {"weights": setup.name, "weights_source": setup.source, "backend": runtimes["edged_backend"],
                    **{f"batch_{n}": {"ms": runtimes[f"batch_{n}"]["edged_ms"],
                                      "ms_per_face": runtimes[f"batch_{n}"]["edged_ms_per_face"]}
                       for n in NN4_BATCHES}},
            "dlib": bench_dlib_embed(aligned.chips150, plan)}
        note("match")
        embedder = embedder_from_config(cfg)
        stages["match"] = bench_match(plan.gallery_sizes, plan.match_queries, embedder.threshold, plan)
        report["stages"] = stages
        note("end to end")
        enrolled = enroll_known(gallery, embedder, shared, cfg)
        _, fps = read_clip(shared / CLIP, (0, 1))
        child = run_daemon_child(config_path, shared / CLIP, gallery, work)
        report["end_to_end"] = {"clip": CLIP.name, "embedder": embedder.name, "enrolled": enrolled,
                                "config": config_path or "built-in defaults",
                                "mqtt": "no broker (events queued, as while a broker is down)",
                                **e2e_summary(child, fps, LATENCY_PERSON)}
        note("face_recognition-style peer")
        frames, _ = read_clip(shared / CLIP, plan.peer_frames)
        first = plan.peer_frames[0] if plan.peer_frames else 0
        face_rec = bench_face_recognition_style(frames, first, fps, cfg, embedder, gallery, shared, plan)
        del frames
    note("")
    report["peers"] = {"nn4_runtimes": runtimes, "face_recognition_style": face_rec}
    report["part_seconds"] = parts
    report["machine"]["load_average_start"] = load_start
    report["machine"]["load_average_end"] = load_average()
    report["duration_s"] = round(time.monotonic() - started, 2)
    return report
