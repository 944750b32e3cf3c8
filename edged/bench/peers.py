"""Peers side by side in one process: nn4 on edged vs ONNX Runtime vs OpenCV DNN, and edged's pipeline vs the
face_recognition-style loop, interleaved."""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edged.bench.common import (
    KNOWN_PEOPLE,
    NN4_BATCHES,
    PEER_TOLERANCE,
    BenchPlan,
    interleaved,
    ratio,
    summary,
)
from edged.bench.stages import tile_batch
from edged.machine import usable_cores

log = logging.getLogger(__name__)


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

    from edged.embed.nn4.net import NN4Small2
    from edged.embed.nn4.weights import save_weights
    from edged.errors import ModelNotInstalledError
    from edged.models import store as models
    from edged.models.embedders import get_embedder
    from edged.models.registry import load_registry

    try:
        chosen = models.resolve(None, models.models_dir(models_dir), load_registry())
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

    from edged.embed.nn4.onnx_export import export_plain_onnx
    from edged.embed.nn4.preprocess import to_network_input
    from edged.embed.nn4.weights import load_nn4

    # Each peer gets the plain export it runs best (see edged.embed.onnx_export): ORT torch's own LRN
    # decomposition, OpenCV DNN the ONNX LRN op it can import.
    model = load_nn4(setup.weights_path)
    onnx_path, opencv_path = workdir / "nn4-plain.onnx", workdir / "nn4-plain-lrn-op.onnx"
    export_plain_onnx(model, onnx_path)
    export_plain_onnx(model, opencv_path, lrn_op=True)
    how = ("edged.embed.nn4.embedder.onnx_export.export_plain_onnx: ONNX Runtime gets torch's LRN decomposition, "
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
    int8, int8_note = _int8_runner(setup, model)
    runs: dict[str, Callable[[np.ndarray], Any]] = {"edged": embed, "onnxruntime": run_ort, "opencv_dnn": run_cv}
    int8_sq_l2 = None
    if int8 is not None:
        runs["edged_int8"] = int8.run
        int8_sq_l2 = round(float(((int8.run(check) - ref) ** 2).sum(axis=1).max()), 6)
    batches: dict[str, Any] = {}
    for n in NN4_BATCHES:
        batch = tile_batch(faces96, n)
        times = interleaved({name: lambda b=batch, f=f: f(b) for name, f in runs.items()}, plan.runtime_repeats)
        row: dict[str, Any] = {}
        for name, t in times.items():
            s = summary(t)
            row[f"{name}_ms"] = s["median_ms"]
            row[f"{name}_ms_per_face"] = round(s["median_ms"] / n, 4)
        row["ratio_edged_onnxruntime"] = ratio(row["edged_ms"], row["onnxruntime_ms"])
        row["ratio_edged_opencv_dnn"] = ratio(row["edged_ms"], row["opencv_dnn_ms"])
        if int8 is not None:
            row["ratio_int8_edged"] = ratio(row["edged_int8_ms"], row["edged_ms"])
        row["runs"] = plan.runtime_repeats
        batches[f"batch_{n}"] = row
    if int8 is not None:
        int8.close()
    return {"weights": setup.name, "weights_source": setup.source, "edged_backend": _backend_name(setup.embedder),
            "export": how, "onnxruntime_threads": options.intra_op_num_threads,
            "opencv_threads": cv2.getNumThreads(),
            "preprocessing": "included in all: uint8 faces -> float32 NCHW / 255 "
                             "(edged.embed.nn4.preprocess.to_network_input)",
            "input": f"{len(faces96)} real aligned faces, tiled to the batch size",
            "max_abs_diff_vs_edged": {k: round(v, 9) for k, v in diffs.items()},
            "int8": {"model": int8_note, "max_sq_l2_vs_edged": int8_sq_l2}, **batches}


def _int8_runner(setup: NN4Setup, model: Any) -> tuple[Any, str]:
    """edged's int8 model of the same weights (`<stem>.int8.onnx`, from `edged train quantize`), when there is
    one: (runner or None, what was used or why not)."""
    from edged.embed.nn4.ort import state_digest
    from edged.embed.nn4.quantize import QuantizeError, int8_path, load_int8_runner

    path = int8_path(setup.weights_path)
    if not path.is_file():
        return None, f"none: no {path.name} beside the weights"
    try:
        return load_int8_runner(path, state_digest(model.state_dict())), path.name
    except QuantizeError as exc:
        return None, f"not used: {exc}"


# ---- peer: the face_recognition-style pipeline ----

class FaceRecognitionStyle:
    """What face_recognition's examples do per frame: `face_locations` (dlib HOG, upsample 1), then
    `face_encodings` (5-point landmarks + dlib ResNet) for every face, then `compare_faces` (euclidean
    on raw descriptors <= tolerance, first match wins) -- with the same dlib models, called directly."""

    def __init__(self, known: Mapping[str, np.ndarray] | None = None, tolerance: float = PEER_TOLERANCE) -> None:
        import dlib

        from edged.vision import dlib_files as dlib_models

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
    from edged.gallery.match import MatchRule
    from edged.gallery.store import Gallery
    from edged.models.detectors import face_detector
    from edged.runtime.pipeline import RecognitionPipeline
    from edged.types import Box, EventKind, Frame
    from edged.vision.align import FaceAligner
    from edged.vision.detect import FaceDetector
    from edged.vision.imageio import load_image

    with Gallery(gallery_path, create=False) as gallery:
        snapshot = gallery.snapshot(embedder.version)
    matcher = MatchRule.of(embedder, cfg.embedder, cfg.match).matcher(snapshot)
    # like for like with the peer's detector: HOG unless the config names another backend
    detector = FaceDetector("hog", upsample=cfg.detector.upsample) if cfg.detector.backend == "auto" \
        else face_detector(cfg)[0]
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
        pipeline = RecognitionPipeline(embedder, cfg.detector, cfg.tracking, cfg.vote, cfg.presence,
                                       detector=detector, aligner=aligner, quality=cfg.quality)
        pipeline.set_matcher(matcher)
        for i, image in enumerate(frames):
            index = first_index + i
            result = pipeline.process(Frame(image, index, index / fps, index / fps))
            for event in result.events:
                if event.kind == EventKind.RECOGNIZED and event.person is not None and not event.resumed:
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
