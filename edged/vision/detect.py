"""Face detection backends: a small RetinaFace CNN (OpenCV DNN), dlib HOG, dlib MMOD (CNN) and OpenCV Haar cascades.

Pure computation on RGB uint8 arrays; models load lazily on first use.

`retinaface` is the Caffe RetinaFace (MobileNet) detector of Silent-Face-Anti-Spoofing (Apache-2.0; files from
`edged models fetch retinaface`): run on the image as it is (mean 104/117/123 BGR, no scaling of values), it
finds faces from ~16 px and profiles HOG misses; on the 1080p pedestrians video at half resolution it finds
every face track that HOG with one upsample step finds on the full frames, at ~1/13 of the time. Enlarging the
image only adds false detections (noise and dark backgrounds), so its "upsample" steps enlarge only up to the
frame's own resolution.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edged.errors import ModelFileError
from edged.types import Box
from edged.vision import dlib_files as dlib_models

log = logging.getLogger(__name__)

BACKENDS = ("retinaface", "hog", "mmod", "haar")
RUNTIMES = ("auto", "onnxruntime", "opencv")
#: RetinaFace: the Caffe network's output blob and input mean (BGR), and its default confidence threshold
#: (on the pedestrians video 0.7 keeps every reference track and drops most detections of the back of a head).
RETINAFACE_OUTPUT = "detection_out"
RETINAFACE_MEAN = (104.0, 117.0, 123.0)
RETINAFACE_MIN_CONFIDENCE = 0.7
#: About the smallest face each backend finds in the image it runs on (pixels): dlib's 80x80 windows, the
#: cascade's 40 px minimum, RetinaFace's smallest 16 px anchors.
SMALLEST_FACE_PX = {"hog": 80.0, "mmod": 80.0, "haar": 40.0, "retinaface": 16.0}
RETINAFACE_FETCH_HINT = "run 'edged models fetch retinaface' (or choose detector.backend: hog)"
MAX_UPSAMPLE = 4
HAAR_CASCADE = "haarcascade_frontalface_default.xml"


def _checked_upsample(upsample: int) -> int:
    if not 0 <= upsample <= MAX_UPSAMPLE:
        raise ValueError(f"upsample must be 0..{MAX_UPSAMPLE}, got {upsample}")
    return upsample


class FaceDetector:
    """Finds face boxes in RGB images; boxes are clipped to the image, largest first.

    `upsample` doubles the image that many times before detection (finds smaller faces,
    costs ~4x per step; retinaface: only up to the frame's own size); `min_score` drops weaker detections
    (default: 0 for dlib and Haar, `RETINAFACE_MIN_CONFIDENCE` for retinaface; for HOG a negative value also
    admits detections below dlib's default threshold of 0); `scale` < 1 downsizes first (faster on big frames)
    and the boxes are mapped back to full-frame coordinates. `model_files`: retinaface's (deploy.prototxt,
    .caffemodel).
    """

    def __init__(self, backend: str = "hog", upsample: int = 1, min_score: float | None = None,
                 model_files: tuple[str | Path, str | Path] | None = None, runtime: str = "auto",
                 cache_dir: Path | None = None) -> None:
        """`runtime` (retinaface): onnxruntime (the network rewritten as ONNX, `edged.vision.retinaface_onnx`,
        cached in `cache_dir`), opencv (OpenCV DNN), auto (onnxruntime, OpenCV DNN when that cannot be used)."""
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown detector runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
        if backend not in BACKENDS:
            raise ValueError(f"unknown detector backend {backend!r} (choose from {', '.join(BACKENDS)})")
        if backend == "retinaface" and model_files is None:
            raise ValueError("the retinaface detector needs its model files (deploy.prototxt, .caffemodel)")
        self.backend = backend
        self.upsample = _checked_upsample(upsample)
        self.min_score = (RETINAFACE_MIN_CONFIDENCE if backend == "retinaface" else 0.0) if min_score is None \
            else min_score
        self.model_files = model_files
        self.runtime = runtime
        self.cache_dir = cache_dir
        #: What runs the retinaface network once loaded: "onnxruntime" or "opencv" (None: not loaded / other).
        self.runtime_used: str | None = None
        self._model: Any = None
        self._lock = threading.Lock()

    def smallest_face_px(self, scale: float = 1.0, upsample: int | None = None) -> float:
        """About the smallest face (pixels of the full frame) this detector finds at `scale` and `upsample`."""
        steps = self.upsample if upsample is None else upsample
        if self.backend == "retinaface":
            return SMALLEST_FACE_PX["retinaface"] / min(1.0, scale * 2**steps)
        return SMALLEST_FACE_PX[self.backend] / (scale * 2**steps)

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                import dlib

                if self.backend == "retinaface":
                    self._model = self._load_retinaface()
                elif self.backend == "hog":
                    self._model = dlib.get_frontal_face_detector()
                elif self.backend == "mmod":
                    self._model = dlib.cnn_face_detection_model_v1(dlib_models.model_path(dlib_models.MMOD))
                else:
                    self._model = cv2.CascadeClassifier(cv2.data.haarcascades + HAAR_CASCADE)
                    if self._model.empty():
                        raise RuntimeError(f"cannot load OpenCV cascade {HAAR_CASCADE}")
                log.debug("loaded %s face detector", self.backend)
        return self._model

    def load(self) -> FaceDetector:
        """Load the model now (at start, so that a problem shows there and the first face pays nothing)."""
        self._load()
        return self

    def _load_retinaface(self) -> Any:
        assert self.model_files is not None
        net = _read_caffe(*self.model_files)  # missing or unreadable files: one line naming the fetch command
        if self.runtime != "opencv":
            try:
                from edged.vision.retinaface_onnx import RetinaFaceOnnx

                model = RetinaFaceOnnx(*self.model_files, cache_dir=self.cache_dir, net=net)
                self.runtime_used = "onnxruntime"
                return model
            except Exception as exc:  # no onnxruntime / onnx, a graph it cannot run, a check that fails
                why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                if self.runtime == "onnxruntime":
                    raise ModelFileError(f"{self.model_files[1]}: RetinaFace on ONNX Runtime not usable ({why}); "
                                         f"choose detector.runtime: opencv") from exc
                log.warning("RetinaFace on ONNX Runtime not usable (%s); running it on OpenCV DNN", why)
        self.runtime_used = "opencv"
        return net

    def detect(self, image: np.ndarray, scale: float = 1.0, upsample: int | None = None) -> list[Box]:
        """Detect faces in an RGB uint8 image (HxWx3); optional downscale `scale` in (0, 1] and
        `upsample` for this call only (default: the detector's)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image, got shape {image.shape} dtype {image.dtype}")
        h, w = image.shape[:2]
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        steps = self.upsample if upsample is None else _checked_upsample(upsample)
        if self.backend == "retinaface":  # upsampling = a larger input, never beyond the frame itself
            scale, steps = min(1.0, scale * 2**steps), 0
        work = image
        if scale != 1.0:
            work = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                              interpolation=cv2.INTER_AREA)
        model = self._load()
        raw = self._run(model, work, steps)
        boxes = []
        for left, top, right, bottom, score in raw:
            if score < self.min_score:
                continue
            box = Box(int(left), int(top), int(right), int(bottom), float(score))
            if scale != 1.0:
                box = box.scaled(1.0 / scale)
            box = box.clipped(w, h)
            if box.width > 1 and box.height > 1:
                boxes.append(box)
        boxes.sort(key=lambda b: b.area, reverse=True)
        return boxes

    def _run(self, model: Any, image: np.ndarray, upsample: int) -> list[tuple[int, int, int, int, float]]:
        if self.backend == "retinaface":
            if self.runtime_used == "onnxruntime":
                return model.detect(image, self.min_score)
            return _retinaface(model, image, self.min_score)
        if self.backend == "hog":
            rects, scores, _ = model.run(image, upsample, min(0.0, self.min_score))
            return [(r.left(), r.top(), r.right() + 1, r.bottom() + 1, s) for r, s in zip(rects, scores, strict=True)]
        if self.backend == "mmod":
            dets = model(image, upsample)
            return [(d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1, d.confidence)
                    for d in dets]
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        gray = cv2.equalizeHist(gray)
        factor = 2**upsample
        if factor > 1:
            gray = cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
        rects, _levels, weights = model.detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(40, 40), outputRejectLevels=True
        )
        out = []
        for (x, y, bw, bh), wgt in zip(rects, np.ravel(weights) if len(rects) else [], strict=True):
            out.append((x // factor, y // factor, (x + bw) // factor, (y + bh) // factor, float(wgt)))
        return out


def _retinaface(net: Any, image: np.ndarray, min_score: float) -> list[tuple[int, int, int, int, float]]:
    """RetinaFace on an RGB image at its own size: (left, top, right, bottom, confidence) in its pixels."""
    h, w = image.shape[:2]
    blob = cv2.dnn.blobFromImage(image, 1.0, (w, h), RETINAFACE_MEAN, swapRB=True)  # RGB in, BGR net
    net.setInput(blob, "data")
    rows = np.asarray(net.forward(RETINAFACE_OUTPUT)).reshape(-1, 7)
    out = []
    for _, _, conf, x1, y1, x2, y2 in rows:
        if conf < min_score or not np.isfinite([x1, y1, x2, y2]).all():
            continue
        out.append((round(float(x1) * w), round(float(y1) * h), round(float(x2) * w), round(float(y2) * h),
                    float(conf)))
    return out


def _read_caffe(prototxt: str | Path, weights: str | Path | None = None) -> Any:
    """An OpenCV DNN net from a Caffe description (and weights); `ModelFileError` naming the file otherwise."""
    for path in (prototxt, weights):
        if path is not None and not Path(path).is_file():
            raise ModelFileError(f"{path}: face detector model not installed; {RETINAFACE_FETCH_HINT}")
    try:
        return cv2.dnn.readNetFromCaffe(str(prototxt), str(weights) if weights is not None else "")
    except cv2.error as exc:
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        first = lines[-1].strip() if lines else "unreadable"
        raise ModelFileError(f"{weights if weights is not None else prototxt}: not a usable Caffe face detector "
                             f"({first[:200]}); {RETINAFACE_FETCH_HINT}") from exc


def check_prototxt(path: str | Path, label: str | None = None) -> None:
    """Raise `ModelFileError` unless OpenCV reads `path` as a Caffe network with RetinaFace's output layer."""
    net = _read_caffe(path)
    if RETINAFACE_OUTPUT not in net.getLayerNames():
        raise ModelFileError(f"{label or path}: a Caffe network without a {RETINAFACE_OUTPUT!r} layer, not the "
                             f"RetinaFace detector; {RETINAFACE_FETCH_HINT}")
