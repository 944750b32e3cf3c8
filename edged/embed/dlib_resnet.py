"""dlib's ResNet face embedder (dlib_face_recognition_resnet_model_v1, LFW 0.9938)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from edged.distance import l2_normalize
from edged.embed.base import Embedder, OpenSetDefaults, as_batch
from edged.vision import dlib_files as dlib_models
from edged.vision.align import DLIB_CHIP_150


class DlibResNetEmbedder(Embedder):
    """150x150 dlib chips -> 128-d, projected onto the unit sphere.

    dlib's own rule, euclidean < 0.6 (squared L2 < 0.36), is for its raw descriptors, whose
    norms are about 1.4 (1.36-1.52 on OpenFace's example photos). On the unit sphere the same
    rule is about (0.6 / 1.41)^2 = 0.18. `edged eval lfw --embedder dlib` (10 folds, unit
    vectors) picks 0.186 on average for balanced same/different pairs; edged keeps 0.18, a
    little stricter, because at a door a false accept costs more than a retry.
    """

    name = "dlib"
    version = "dlib_face_recognition_resnet_model_v1"
    #: Raw-descriptor threshold as dlib documents it (euclidean 0.6).
    RAW_THRESHOLD = 0.36
    threshold = 0.18
    alignment = DLIB_CHIP_150
    #: The door operating point, from `edged eval openset` (LFW; chosen on people outside View 2 folds 6-10,
    #: checked on folds 6-10 and on all of LFW): a person's template (centroid) within 0.125 for one person with
    #: >= 3 samples, shrinking with the gallery size (0.079 with 100 people: `edged.gallery.match`), and at most
    #: 0.6 of the distance to the next identity. Strangers named (FPIR) about 1e-3 or less from N = 2 to 100
    #: (docs/accuracy.md).
    OPEN_SET = OpenSetDefaults(0.125, 0.6, "centroid")

    @property
    def open_set(self) -> OpenSetDefaults:
        return self.OPEN_SET

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                import dlib

                self._model = dlib.face_recognition_model_v1(dlib_models.model_path(dlib_models.RESNET))
        return self._model

    def embed_raw(self, faces: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """dlib's own descriptors, not normalised (norms about 1.2-1.7)."""
        batch = as_batch(faces, self.alignment.size)
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        model = self._load()
        chips = [np.ascontiguousarray(face) for face in batch]
        vectors = model.compute_face_descriptor(chips)
        return np.array([np.asarray(v) for v in vectors], dtype=np.float32)

    def embed(self, faces: np.ndarray | list[np.ndarray]) -> np.ndarray:
        # dlib's descriptors have norm close to, not exactly, 1: project onto the sphere.
        return l2_normalize(self.embed_raw(faces))
