"""dlib's ResNet face embedder (dlib_face_recognition_resnet_model_v1, LFW 0.9938)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from edged import dlib_models
from edged.align import DLIB_CHIP_150
from edged.embed.base import Embedder, as_batch
from edged.preprocess import l2_normalize


class DlibResNetEmbedder(Embedder):
    """150x150 dlib chips -> 128-d, projected onto the unit sphere.

    dlib's own rule, euclidean < 0.6 (squared L2 < 0.36), is for its raw descriptors, whose
    norms are about 1.4 (1.36-1.52 on OpenFace's example photos). On the unit sphere the same
    rule is about (0.6 / 1.41)^2 = 0.18; the value below is the LFW 10-fold threshold
    measured by `edged eval lfw --embedder dlib` on unit vectors.
    """

    name = "dlib"
    version = "dlib_face_recognition_resnet_model_v1"
    #: Raw-descriptor threshold as dlib documents it (euclidean 0.6).
    RAW_THRESHOLD = 0.36
    threshold = 0.18
    alignment = DLIB_CHIP_150

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                import dlib

                self._model = dlib.face_recognition_model_v1(dlib_models.model_path(dlib_models.RESNET))
        return self._model

    def embed(self, faces: np.ndarray | list[np.ndarray]) -> np.ndarray:
        batch = as_batch(faces, self.alignment.size)
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        model = self._load()
        chips = [np.ascontiguousarray(face) for face in batch]
        vectors = model.compute_face_descriptor(chips)
        # dlib's descriptors have norm close to, not exactly, 1: project onto the sphere.
        return l2_normalize(np.array([np.asarray(v) for v in vectors], dtype=np.float32))
