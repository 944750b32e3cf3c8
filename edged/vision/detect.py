"""Face detection backends: dlib HOG, dlib MMOD (CNN) and OpenCV Haar cascades.

Pure computation on RGB uint8 arrays; models load lazily on first use.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import cv2
import numpy as np

from edged.types import Box
from edged.vision import dlib_files as dlib_models

log = logging.getLogger(__name__)

BACKENDS = ("hog", "mmod", "haar")
MAX_UPSAMPLE = 4
HAAR_CASCADE = "haarcascade_frontalface_default.xml"


def _checked_upsample(upsample: int) -> int:
    if not 0 <= upsample <= MAX_UPSAMPLE:
        raise ValueError(f"upsample must be 0..{MAX_UPSAMPLE}, got {upsample}")
    return upsample


class FaceDetector:
    """Finds face boxes in RGB images; boxes are clipped to the image, largest first.

    `upsample` doubles the image that many times before detection (finds smaller faces,
    costs ~4x per step); `min_score` drops weaker detections (for HOG a negative value also
    admits detections below dlib's default threshold of 0); `scale` < 1 downsizes first (faster on big frames) and the
    boxes are mapped back to full-frame coordinates.
    """

    def __init__(self, backend: str = "hog", upsample: int = 1, min_score: float = 0.0) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown detector backend {backend!r} (choose from {', '.join(BACKENDS)})")
        self.backend = backend
        self.upsample = _checked_upsample(upsample)
        self.min_score = min_score
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                import dlib

                if self.backend == "hog":
                    self._model = dlib.get_frontal_face_detector()
                elif self.backend == "mmod":
                    self._model = dlib.cnn_face_detection_model_v1(dlib_models.model_path(dlib_models.MMOD))
                else:
                    self._model = cv2.CascadeClassifier(cv2.data.haarcascades + HAAR_CASCADE)
                    if self._model.empty():
                        raise RuntimeError(f"cannot load OpenCV cascade {HAAR_CASCADE}")
                log.debug("loaded %s face detector", self.backend)
        return self._model

    def detect(self, image: np.ndarray, scale: float = 1.0, upsample: int | None = None) -> list[Box]:
        """Detect faces in an RGB uint8 image (HxWx3); optional downscale `scale` in (0, 1] and
        `upsample` for this call only (default: the detector's)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image, got shape {image.shape} dtype {image.dtype}")
        h, w = image.shape[:2]
        work = image
        if scale != 1.0:
            if not 0.0 < scale <= 1.0:
                raise ValueError(f"scale must be in (0, 1], got {scale}")
            work = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                              interpolation=cv2.INTER_AREA)
        model = self._load()
        raw = self._run(model, work, self.upsample if upsample is None else _checked_upsample(upsample))
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
