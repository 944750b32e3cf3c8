"""Facial landmarks (dlib 68- and 5-point) and face alignment.

* OpenFace alignment: an affine map sending three landmarks to
  `dim * MINMAX_TEMPLATE[indices]` (OpenFace `AlignDlib.align`), output dim x dim RGB.
* dlib chips: `dlib.get_face_chip` (what dlib's ResNet expects), 150x150 with 0.25 padding.

Pure computation on RGB uint8 arrays; predictors load lazily once.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edged.types import Box
from edged.vision import dlib_files as dlib_models
from edged.vision.landmark_trees import FULL_STAGES, FULL_TREES, truncated_model_file

#: dlib 68-point landmark indices used by nn4.small2.v1 (outer eye corners, nose tip).
OUTER_EYES_AND_NOSE = (36, 45, 33)
#: dlib 68-point landmark indices of OpenFace's older models (inner eye corners, bottom lip).
INNER_EYES_AND_BOTTOM_LIP = (39, 42, 57)

#: The same three points in dlib's 5-point model: 2 = image-left eye outer corner (68-pt 36),
#: 0 = image-right eye outer corner (68-pt 45), 4 = below the nose (close to 68-pt 33,
#: typically a few pixels lower, so 5-point alignments sit slightly higher in the crop).
OUTER_EYES_AND_NOSE_5 = (2, 0, 4)

# OpenFace's mean dlib-68 landmark positions (openface/align_dlib.py TEMPLATE), unit square.
_TEMPLATE = np.float32([
    (0.0792396913815, 0.339223741112), (0.0829219487236, 0.456955367943),
    (0.0967927109165, 0.575648016728), (0.122141515615, 0.691921601066),
    (0.168687863544, 0.800341263616), (0.239789390707, 0.895732504778),
    (0.325662452515, 0.977068762493), (0.422318282013, 1.04329000149),
    (0.531777802068, 1.06080371126), (0.641296298053, 1.03981924107),
    (0.738105872266, 0.972268833998), (0.824444363295, 0.889624082279),
    (0.894792677532, 0.792494155836), (0.939395486253, 0.681546643421),
    (0.96111933829, 0.562238253072), (0.970579841181, 0.441758925744),
    (0.971193274221, 0.322118743967), (0.163846223133, 0.249151738053),
    (0.21780354657, 0.204255863861), (0.291299351124, 0.192367318323),
    (0.367460241458, 0.203582210627), (0.4392945113, 0.233135599851),
    (0.586445962425, 0.228141644834), (0.660152671635, 0.195923841854),
    (0.737466449096, 0.182360984545), (0.813236546239, 0.192828009114),
    (0.8707571886, 0.235293377042), (0.51534533827, 0.31863546193),
    (0.516221448289, 0.396200446263), (0.517118861835, 0.473797687758),
    (0.51816430343, 0.553157797772), (0.433701156035, 0.604054457668),
    (0.475501237769, 0.62076344024), (0.520712933176, 0.634268222208),
    (0.565874114041, 0.618796581487), (0.607054002672, 0.60157671656),
    (0.252418718401, 0.331052263829), (0.298663015648, 0.302646354002),
    (0.355749724218, 0.303020650651), (0.403718978315, 0.33867711083),
    (0.352507175597, 0.349987615384), (0.296791759886, 0.350478978225),
    (0.631326076346, 0.334136672344), (0.679073381078, 0.29645404267),
    (0.73597236153, 0.294721285802), (0.782865376271, 0.321305281656),
    (0.740312274764, 0.341849376713), (0.68499850091, 0.343734332172),
    (0.353167761422, 0.746189164237), (0.414587777921, 0.719053835073),
    (0.477677654595, 0.706835892494), (0.522732900812, 0.717092275768),
    (0.569832064287, 0.705414478982), (0.635195811927, 0.71565572516),
    (0.69951672331, 0.739419187253), (0.639447159575, 0.805236879972),
    (0.576410514055, 0.835436670169), (0.525398405766, 0.841706377792),
    (0.47641545769, 0.837505914975), (0.41379548902, 0.810045601727),
    (0.380084785646, 0.749979603086), (0.477955996282, 0.74513234612),
    (0.523389793327, 0.748924302636), (0.571057789237, 0.74332894691),
    (0.672409137852, 0.744177032192), (0.572539621444, 0.776609286626),
    (0.5240106503, 0.783370783245), (0.477561227414, 0.778476346951),
])
#: OpenFace's template rescaled so its bounding box is the unit square (align_dlib.MINMAX_TEMPLATE).
MINMAX_TEMPLATE = (_TEMPLATE - _TEMPLATE.min(axis=0)) / (_TEMPLATE.max(axis=0) - _TEMPLATE.min(axis=0))


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
OPENFACE_96 = AlignmentSpec("openface-outer-eyes-nose-96", "openface", 96, 68, OUTER_EYES_AND_NOSE)
#: dlib ResNet: get_face_chip 150x150, padding 0.25, 5-point landmarks (as dlib trained it).
DLIB_CHIP_150 = AlignmentSpec("dlib-chip-150", "dlib_chip", 150, 5)


def _to_dlib_rect(box: Box) -> Any:
    import dlib

    return dlib.rectangle(int(box.left), int(box.top), int(box.right) - 1, int(box.bottom) - 1)


class LandmarkPredictor:
    """dlib shape predictor (68 or 5 points) returning (K, 2) float32 pixel coordinates.

    `stages`, `trees`: for the 68-point model, use only its first `stages` stages of regression trees, each with
    its first `trees` trees (a faster, coarser model, `edged.vision.landmark_trees`; None: all of them), the
    truncated file cached in `cache_dir`."""

    def __init__(self, points: int = 68, stages: int | None = None, trees: int | None = None,
                 cache_dir: Path | None = None) -> None:
        if points not in (68, 5):
            raise ValueError(f"landmark model must have 68 or 5 points, got {points}")
        if (stages is not None or trees is not None) and points != 68:
            raise ValueError("only the 68-point model can be truncated")
        if min(stages or 1, trees or 1) < 1:
            raise ValueError(f"stages and trees must be >= 1 (got {stages}, {trees})")
        self.points = points
        self.stages = min(stages or FULL_STAGES, FULL_STAGES)
        self.trees = min(trees or FULL_TREES, FULL_TREES)
        self.cache_dir = cache_dir
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def full(self) -> bool:
        """The model as installed (not truncated)."""
        return self.points != 68 or (self.stages, self.trees) == (FULL_STAGES, FULL_TREES)

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                import dlib

                name = dlib_models.SHAPE_68 if self.points == 68 else dlib_models.SHAPE_5
                path = dlib_models.model_path(name)
                if self.full:
                    self._model = dlib.shape_predictor(path)
                else:
                    chosen, temporary = truncated_model_file(path, self.stages, self.trees, self.cache_dir)
                    try:
                        self._model = dlib.shape_predictor(chosen)
                    finally:
                        if temporary:
                            os.unlink(chosen)
        return self._model

    def predict(self, image: np.ndarray, box: Box) -> np.ndarray:
        """Landmarks of the face in `box`."""
        shape = self._load()(image, _to_dlib_rect(box))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def openface_transform(landmarks: np.ndarray, indices: tuple[int, ...], dim: int = 96,
                       template_indices: tuple[int, ...] | None = None) -> np.ndarray:
    """The 2x3 affine matrix OpenFace uses: landmarks[indices] -> dim * MINMAX_TEMPLATE[template_indices]."""
    src = np.asarray(landmarks, dtype=np.float32)[list(indices)]
    dst = np.float32(dim) * MINMAX_TEMPLATE[list(template_indices or indices)]
    return cv2.getAffineTransform(src, dst.astype(np.float32))


def align_openface(image: np.ndarray, landmarks: np.ndarray, indices: tuple[int, ...] = OUTER_EYES_AND_NOSE,
                   dim: int = 96) -> np.ndarray:
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
