"""Real door cameras in `edged bench`: 1080p / 720p / 360p streams, the two detectors side by side, the faces
found against an offline reference, and the idle scene.

* `detectors`: RetinaFace and HOG on frames of the 1080p pedestrians video shrunk to 360p / 720p / 1080p
  (median ms per detection, interleaved) and the faces each finds on every 5th frame; and on the LFW images
  where HOG failed when the face cache was filled (`detected = 0` in ~/.cache/edged/faces.sqlite).
* `tracks`: the faces found: the reference is HOG with one upsample step on every full-resolution frame
  (offline, ~1 s a frame; cached by the video's SHA-1), linked into tracks by IoU; the bench runs the
  recognition pipeline with the configured detector over the same frames and counts the reference tracks it
  had a track on (IoU >= 0.3 on one of the reference track's frames).
* `pedestrians_1080p`, `pedestrians_720p`: the daemon end to end in a child (every frame, no pacing; 720p
  through `camera.max_width: 1280`): real-time factor, frames dropped, tracks.
* `idle`: a generated video, `IDLE_S` seconds of an empty, still scene (the top left of the pedestrians video,
  640x360) then Lin-Manuel close up (the Hamilton clip's frames from 100), paced like a live camera: the
  daemon's CPU over the still part after its first second (decoding included), as % of one core, and the wall
  time from the frame he appears on to his `recognized` event.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edged.bench.common import CLIP, BenchPlan, interleaved, summary
from edged.bench.e2e import e2e_summary, run_daemon_child

log = logging.getLogger(__name__)

PEDESTRIANS = Path("data/pedestrians/video.mp4")
RETINAFACE_DIR = Path("models/retinaface-widerface-caffe")
RETINAFACE_FILES = ("deploy.prototxt", "Widerface-RetinaFace.caffemodel")
MINIFASNET_DIR = Path("models/minifasnet/onnx")
MINIFASNET_FILES = ("MiniFASNetV2.onnx", "MiniFASNetV1SE.onnx")
#: Frame sizes of the detector comparison.
SIZES = {"360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080)}
#: A reference track counts as found when the pipeline had a box with this IoU on one of its frames.
TRACK_IOU = 0.3
#: Reference detections are linked into a track across at most this many frames without one; tracks of
#: fewer frames are not counted.
LINK_GAP = 3
MIN_TRACK_FRAMES = 3
#: Frames of the pedestrians video the track count uses in the quick plan (the full plan: all 105).
QUICK_TRACK_FRAMES = 25
#: The idle scene: seconds of the still picture (full plan / quick plan), fps, the face clip's frames.
IDLE_S = (60.0, 12.0)
IDLE_FPS = 25.0
FACE_FRAMES = (100, 150)


def bench_models_dir(shared: Path, work: Path, user_dir: Path) -> Path:
    """A models directory for the bench's children: the user's files, and RetinaFace and MiniFASNet from
    ../shared as `edged models fetch` would install them (links; never copied)."""
    folder = work / "models"
    folder.mkdir(exist_ok=True)
    links = {}
    if user_dir.is_dir():
        links.update({p.name: p for p in user_dir.iterdir() if p.is_file()})
    links.update({n: shared / RETINAFACE_DIR / n for n in RETINAFACE_FILES if (shared / RETINAFACE_DIR / n).is_file()})
    links.update({n: shared / MINIFASNET_DIR / n for n in MINIFASNET_FILES if (shared / MINIFASNET_DIR / n).is_file()})
    for name, target in links.items():
        if not (folder / name).exists():
            (folder / name).symlink_to(target.resolve())
    return folder


def _frames(path: Path, step: int = 1, limit: int | None = None) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames, index = [], 0
    try:
        while limit is None or len(frames) < limit:
            ok, bgr = cap.read()
            if not ok:
                break
            if index % step == 0:
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        cap.release()
    return frames


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def link_tracks(per_frame: list[list[list[float]]]) -> list[dict[int, list[float]]]:
    """Greedy IoU linking of per-frame boxes into tracks (frame -> box); tracks of >= MIN_TRACK_FRAMES frames."""
    tracks: list[dict[int, list[float]]] = []
    for index, boxes in enumerate(per_frame):
        for box in boxes:
            best, best_iou = None, TRACK_IOU
            for track in tracks:
                last = max(track)
                if 0 < index - last <= LINK_GAP and index not in track and _iou(track[last], box) > best_iou:
                    best, best_iou = track, _iou(track[last], box)
            if best is not None:
                best[index] = box
            else:
                tracks.append({index: box})
    return [t for t in tracks if len(t) >= MIN_TRACK_FRAMES]


def reference_tracks(video: Path, cache_dir: Path, limit: int | None = None
                     ) -> tuple[list[dict[int, list[float]]], float | None]:
    """HOG upsample 1 on every full-resolution frame (the first `limit`), linked into tracks (cached by the
    video's SHA-1). Returns (tracks, seconds it took, None when cached)."""
    from edged.vision.detect import FaceDetector

    sha = hashlib.sha1(video.read_bytes()).hexdigest()
    cache = cache_dir / f"bench-reference-{sha[:16]}-{limit or 'all'}.json"
    if cache.is_file():
        per_frame = json.loads(cache.read_text())
        return link_tracks(per_frame), None
    detector = FaceDetector("hog", upsample=1)
    started = time.perf_counter()
    per_frame = [[list(map(float, b.as_list())) for b in detector.detect(f)] for f in _frames(video, limit=limit)]
    took = time.perf_counter() - started
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(per_frame))
    os.replace(tmp, cache)
    return link_tracks(per_frame), round(took, 1)


def found_tracks(reference: list[dict[int, list[float]]], boxes: Mapping[int, list[list[float]]]) -> int:
    """Reference tracks with a pipeline box of IoU >= TRACK_IOU on one of their frames."""
    return sum(any(_iou(box, other) >= TRACK_IOU for i, box in track.items() for other in boxes.get(i, ()))
               for track in reference)


def pipeline_tracks(cfg: Any, embedder: Any, gallery: Path, video: Path, models: Path, limit: int | None = None
                    ) -> dict[str, Any]:
    """The recognition pipeline with the configured detector over every frame: its track boxes per frame."""
    from edged.gallery.match import MatchRule
    from edged.gallery.store import Gallery
    from edged.models.detectors import face_detector
    from edged.runtime.pipeline import RecognitionPipeline
    from edged.types import Frame

    detector, _ = face_detector(cfg, models)
    pipeline = RecognitionPipeline.from_config(cfg, embedder, detector=detector)
    with Gallery(gallery, create=False) as g:
        pipeline.set_matcher(MatchRule.of(embedder, cfg.embedder, cfg.match).matcher(g.snapshot(embedder.version)))
    boxes: dict[int, list[list[float]]] = {}
    for index, image in enumerate(_frames(video, limit=limit)):
        result = pipeline.process(Frame(image, index, index / 25.0, 0.0))
        boxes[index] = [list(map(float, o.box.as_list())) for o in result.observations]
    return {"detector": detector.backend, "boxes": boxes, "tracks": pipeline.stats.tracks_started,
            "detector_runs": pipeline.stats.detector_runs}


def bench_detectors(shared: Path, models: Path, plan: BenchPlan) -> dict[str, Any]:
    """RetinaFace (on ONNX Runtime, the default, and on OpenCV DNN) and HOG (upsample 0 and 1) side by side: ms
    per detection by frame size, faces found; `retinaface_ort_vs_opencv`: the ratio of the two RetinaFace times."""
    from edged.vision.detect import FaceDetector

    files = tuple(models / n for n in RETINAFACE_FILES)
    if not all(f.is_file() for f in files):
        return {"skipped": f"no RetinaFace files in {shared / RETINAFACE_DIR}"}
    detectors = {"retinaface": FaceDetector("retinaface", upsample=0, model_files=files, runtime="onnxruntime",
                                            cache_dir=models / "cache"),
                 "retinaface_opencv": FaceDetector("retinaface", upsample=0, model_files=files, runtime="opencv"),
                 "hog_upsample0": FaceDetector("hog", upsample=0), "hog_upsample1": FaceDetector("hog", upsample=1)}
    frames = _frames(shared / PEDESTRIANS, step=5)
    out: dict[str, Any] = {"frames": f"{PEDESTRIANS.name}, every 5th frame ({len(frames)})", "sizes": {}}
    for label, (w, h) in SIZES.items():
        sized = [f if f.shape[1] == w else cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames]
        counts = {name: sum(len(d.detect(f)) for f in sized) for name, d in detectors.items()}
        one = sized[len(sized) // 2]
        runners = {name: (lambda d=d, one=one: d.detect(one)) for name, d in detectors.items()}
        repeats = 1 if plan.quick or label == "1080p" else 3
        times = interleaved(runners, repeats)
        row = out["sizes"][label] = {name: {"ms": summary(times[name])["median_ms"], "faces": counts[name]}
                                     for name in detectors}
        row["retinaface_ort_vs_opencv"] = round(row["retinaface"]["ms"] / row["retinaface_opencv"]["ms"], 3)
    out["lfw_where_hog_failed"] = _lfw_hog_failures(detectors["retinaface"])
    return out


def _lfw_hog_failures(retinaface: Any) -> dict[str, Any]:
    """RetinaFace on the LFW images where HOG (with its retry) found no face when the face cache was filled."""
    from edged.eval.facecache import CACHE_FILE
    from edged.vision.imageio import load_image

    path = Path(os.environ.get("EDGED_CACHE", Path.home() / ".cache" / "edged")).expanduser() / CACHE_FILE
    if not path.is_file():
        return {"skipped": f"no face cache at {path} (edged eval lfw fills it)"}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = [r[0] for r in db.execute("SELECT path FROM faces WHERE detected = 0 ORDER BY path")]
    images = [p for p in rows if Path(p).is_file()]
    found = sum(bool(retinaface.detect(load_image(p))) for p in images)
    return {"images": len(images), "retinaface_found": found}


def _idle_video(shared: Path, work: Path, still_s: float) -> tuple[Path, int]:
    """The idle scene as a video file: (path, index of the first frame showing the face)."""
    [first] = _frames(shared / PEDESTRIANS, limit=1)
    porch = cv2.cvtColor(np.ascontiguousarray(first[:360, :640]), cv2.COLOR_RGB2BGR)
    faces = _frames(shared / CLIP, limit=FACE_FRAMES[1])[FACE_FRAMES[0]:]
    path = work / "idle-then-face.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), IDLE_FPS, (640, 360))
    still = round(still_s * IDLE_FPS)
    for _ in range(still):
        writer.write(porch)
    for face in faces:
        writer.write(cv2.cvtColor(cv2.resize(face, (640, 360)), cv2.COLOR_RGB2BGR))
    writer.release()
    return path, still


def bench_idle(config_path: str | None, shared: Path, gallery: Path, work: Path, plan: BenchPlan,
               models: Path) -> dict[str, Any]:
    """CPU on an empty, still scene, and the latency of a face appearing after it."""
    still_s = IDLE_S[1] if plan.quick else IDLE_S[0]
    video, face_frame = _idle_video(shared, work, still_s)
    child = run_daemon_child(config_path, video, gallery, work, camera={"realtime": True}, models_dir=models,
                             timeout_s=still_s + 300)
    grabbed, cpu = child["grabbed"], child["cpu"]
    start = round(IDLE_FPS)  # after the first second: the gate has closed
    out: dict[str, Any] = {"still_s": still_s, "video": "a still 640x360 scene, then the Hamilton close-up"}
    if len(grabbed) > face_frame and len(cpu) > face_frame:
        span = grabbed[face_frame - 1] - grabbed[start]
        out["cpu_percent_of_one_core"] = round(100.0 * (cpu[face_frame - 1] - cpu[start]) / span, 2) if span else None
    p = child["stats"]["pipeline"]
    out.update(detector_runs=p["detector_runs"], motion_skipped=p.get("motion_skipped"))
    recognized = next((e for e in child["events"] if e["type"] == "recognized"), None)
    if recognized is not None and face_frame < len(grabbed):
        out["recognized"] = recognized["person"]
        out["first_recognition_after_s"] = round(recognized["wall"] - grabbed[face_frame], 3)
        out["recognized_frames_after_appearing"] = recognized["frame"] - face_frame
    else:
        out["recognized"] = None
    return out


def bench_cameras(config_path: str | None, shared: Path, gallery: Path, work: Path, plan: BenchPlan,
                  models: Path, cfg: Any, embedder: Any) -> dict[str, Any]:
    """Every row of the real-cameras part (see the module docstring)."""
    from edged.models.detectors import choose_detector

    video = shared / PEDESTRIANS
    if not video.is_file():
        return {"skipped": f"{video} not found"}
    out: dict[str, Any] = {"detector": choose_detector(cfg.detector, models, check=False).backend}
    out["detectors"] = bench_detectors(shared, models, plan)
    cache_dir = Path(os.environ.get("EDGED_CACHE", Path.home() / ".cache" / "edged")).expanduser()
    limit = QUICK_TRACK_FRAMES if plan.quick else None
    reference, took = reference_tracks(video, cache_dir, limit)
    ours = pipeline_tracks(cfg, embedder, gallery, video, models, limit)
    found = found_tracks(reference, ours["boxes"])
    out["tracks"] = {"reference": "HOG upsample 1 on every 1920x1080 frame, tracks of >= 3 frames",
                     "frames": limit or "all",
                     "reference_tracks": len(reference), "reference_seconds": took,
                     "found": found, "found_fraction": round(found / len(reference), 3) if reference else None,
                     "pipeline_detector": ours["detector"], "pipeline_tracks": ours["tracks"],
                     "pipeline_detector_runs": ours["detector_runs"]}
    for label, camera in (("pedestrians_1080p", {}), ("pedestrians_720p", {"max_width": 1280})):
        child = run_daemon_child(config_path, video, gallery, work, camera=camera, models_dir=models)
        row = e2e_summary(child, 25.0, "-")
        out[label] = {k: row[k] for k in ("frames", "frames_dropped", "realtime_factor", "fps", "faces_detected",
                                          "detector_runs", "tracks", "embeds", "cpu_cores_busy", "peak_rss_mb",
                                          "stage_ms_per_frame")}
    out["idle"] = bench_idle(config_path, shared, gallery, work, plan, models)
    return out
