"""Facial landmarks (dlib 68- and 5-point) and face alignment.

* OpenFace alignment: an affine map sending three landmarks to
  `dim * MINMAX_TEMPLATE[indices]` (OpenFace `AlignDlib.align`), output dim x dim RGB.
* dlib chips: `dlib.get_face_chip` (what dlib's ResNet expects), 150x150 with 0.25 padding.

Pure computation on RGB uint8 arrays; predictors load lazily once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from edged import dlib_models
from edged.preprocess import IMG_DIM, MINMAX_TEMPLATE, OUTER_EYES_AND_NOSE, OUTER_EYES_AND_NOSE_5
from edged.types import Box


@dataclass(frozen=True)
class AlignmentSpec:
    """How an embedder wants its faces cropped."""

    name: str
    kind: str  # "openface" or "dlib_chip"
    size: int
    landmark_points: int  # 68 or 5
    indices: tuple[int, ...] = OUTER_EYES_AND_NOSE  # openface: 68-point indices of the 3 anchor points
    padding: float = 0.25  # dlib_chip only


#: nn4.small2.v1: OUTER_EYES_AND_NOSE, 96x96, 68-point landmarks.
OPENFACE_96 = AlignmentSpec("openface-outer-eyes-nose-96", "openface", IMG_DIM, 68, OUTER_EYES_AND_NOSE)
#: dlib ResNet: get_face_chip 150x150, padding 0.25, 5-point landmarks (as dlib trained it).
DLIB_CHIP_150 = AlignmentSpec("dlib-chip-150", "dlib_chip", 150, 5)


def _to_dlib_rect(box: Box) -> Any:
    import dlib

    return dlib.rectangle(int(box.left), int(box.top), int(box.right) - 1, int(box.bottom) - 1)


class LandmarkPredictor:
    """dlib shape predictor (68 or 5 points) returning (K, 2) float32 pixel coordinates."""

    def __init__(self, points: int = 68) -> None:
        if points not in (68, 5):
            raise ValueError(f"landmark model must have 68 or 5 points, got {points}")
        self.points = points
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                import dlib

                name = dlib_models.SHAPE_68 if self.points == 68 else dlib_models.SHAPE_5
                self._model = dlib.shape_predictor(dlib_models.model_path(name))
        return self._model

    def predict(self, image: np.ndarray, box: Box) -> np.ndarray:
        """Landmarks of the face in `box`."""
        shape = self._load()(image, _to_dlib_rect(box))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def openface_transform(landmarks: np.ndarray, indices: tuple[int, ...], dim: int = IMG_DIM,
                       template_indices: tuple[int, ...] | None = None) -> np.ndarray:
    """The 2x3 affine matrix OpenFace uses: landmarks[indices] -> dim * MINMAX_TEMPLATE[template_indices]."""
    src = np.asarray(landmarks, dtype=np.float32)[list(indices)]
    dst = np.float32(dim) * MINMAX_TEMPLATE[list(template_indices or indices)]
    return cv2.getAffineTransform(src, dst.astype(np.float32))


def align_openface(image: np.ndarray, landmarks: np.ndarray, indices: tuple[int, ...] = OUTER_EYES_AND_NOSE,
                   dim: int = IMG_DIM) -> np.ndarray:
    """OpenFace alignment of one face: dim x dim RGB uint8.

    `landmarks` are 68-point (indices into them as given) or 5-point (then the outer eye
    corners and nose point stand in for 68-point indices 36, 45, 33).
    """
    if len(landmarks) == 5:
        if tuple(indices) != OUTER_EYES_AND_NOSE:
            raise ValueError("5-point landmarks support OUTER_EYES_AND_NOSE alignment only")
        matrix = openface_transform(landmarks, OUTER_EYES_AND_NOSE_5, dim, OUTER_EYES_AND_NOSE)
    else:
        matrix = openface_transform(landmarks, indices, dim)
    return cv2.warpAffine(image, matrix, (dim, dim))


def align_dlib_chip(image: np.ndarray, box: Box, landmarks: np.ndarray, size: int = 150,
                    padding: float = 0.25) -> np.ndarray:
    """dlib's face chip (`dlib.get_face_chip`) from 5- or 68-point landmarks."""
    import dlib

    points = dlib.points()
    for x, y in np.asarray(landmarks):
        points.append(dlib.point(round(float(x)), round(float(y))))
    shape = dlib.full_object_detection(_to_dlib_rect(box), points)
    return np.asarray(dlib.get_face_chip(image, shape, size=size, padding=padding))


class FaceAligner:
    """Landmarks + crop for one `AlignmentSpec`."""

    def __init__(self, spec: AlignmentSpec, predictor: LandmarkPredictor | None = None) -> None:
        self.spec = spec
        self.predictor = predictor or LandmarkPredictor(spec.landmark_points)

    def landmarks(self, image: np.ndarray, box: Box) -> np.ndarray:
        return self.predictor.predict(image, box)

    def crop(self, image: np.ndarray, box: Box, landmarks: np.ndarray) -> np.ndarray:
        """The aligned face from precomputed landmarks."""
        if self.spec.kind == "openface":
            return align_openface(image, landmarks, self.spec.indices, self.spec.size)
        return align_dlib_chip(image, box, landmarks, self.spec.size, self.spec.padding)

    def align(self, image: np.ndarray, box: Box) -> np.ndarray:
        """Landmarks then crop: the aligned face in `box`."""
        return self.crop(image, box, self.landmarks(image, box))
