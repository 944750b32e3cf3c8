"""dlib's ResNet face embedder (dlib_face_recognition_resnet_model_v1, LFW 0.9938).

It runs on ONNX Runtime by default (`edged.embed.dlib_onnx`: dlib's network read from the same model file, the
same descriptors to ~3e-7, ~20x faster on a CPU) and falls back to dlib's own code (`backend: dlib`, one core,
holding the GIL) when ONNX Runtime is missing or the export does not reproduce dlib.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from edged.distance import l2_normalize
from edged.embed.base import Embedder, OpenSetDefaults, as_batch
from edged.errors import EdgedError
from edged.vision import dlib_files as dlib_models
from edged.vision.align import DLIB_CHIP_150

log = logging.getLogger(__name__)


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

    def __init__(self, backend: str = "auto", threads: int = 0, cache_dir: Path | None = None) -> None:
        """`backend`: auto / onnxruntime (ONNX Runtime, `threads` per run, 0 = all cores; the export cached in
        `cache_dir`) or dlib (dlib's own code). auto falls back to dlib with a warning; onnxruntime raises."""
        if backend not in ("auto", "onnxruntime", "dlib"):
            raise ValueError(f"unknown dlib backend {backend!r}")
        self.requested_backend = backend
        self.threads = threads
        self.cache_dir = cache_dir
        self._model: Any = None
        self._runner: Any = None
        self._resolved: str | None = None if backend != "dlib" else "dlib"
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            return self._load_unlocked()

    def _load_unlocked(self) -> Any:
        """dlib's own model object (the dlib backend, and the check of a fresh ONNX export)."""
        if self._model is None:
            import dlib

            self._model = dlib.face_recognition_model_v1(dlib_models.model_path(dlib_models.RESNET))
        return self._model

    @property
    def backend(self) -> str:
        """The backend in use: "onnxruntime" or "dlib" (resolving auto loads the models)."""
        self._runtime()
        assert self._resolved is not None
        return self._resolved

    def _runtime(self) -> Any:
        """The ONNX Runtime runner, or None when dlib's own code runs."""
        if self._resolved is not None:
            return self._runner
        with self._lock:
            if self._resolved is None:
                try:
                    from edged.embed.dlib_onnx import load_runner

                    self._runner = load_runner(dlib_models.model_path(dlib_models.RESNET), self._load_unlocked,
                                               self.cache_dir, self.threads)
                    self._resolved = "onnxruntime"
                except Exception as exc:  # ImportError, a model file or export that does not check out
                    reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                    if self.requested_backend == "onnxruntime":
                        raise EdgedError(f"embedder.backend onnxruntime: dlib's ResNet cannot run on ONNX Runtime "
                                         f"({reason}); use embedder.backend dlib") from None
                    log.warning("dlib's ResNet on ONNX Runtime is not available (%s); using dlib's own code "
                                "(about 20x slower)", reason)
                    self._resolved = "dlib"
        return self._runner

    def embed_raw(self, faces: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """dlib's own descriptors, not normalised (norms about 1.2-1.7)."""
        batch = as_batch(faces, self.alignment.size)
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        runner = self._runtime()
        if runner is not None:
            return np.asarray(runner.run(np.ascontiguousarray(batch, dtype=np.uint8)), dtype=np.float32)
        model = self._load()
        chips = [np.ascontiguousarray(face) for face in batch]
        vectors = model.compute_face_descriptor(chips)
        return np.array([np.asarray(v) for v in vectors], dtype=np.float32)

    def embed(self, faces: np.ndarray | list[np.ndarray]) -> np.ndarray:
        # dlib's descriptors have norm close to, not exactly, 1: project onto the sphere.
        return l2_normalize(self.embed_raw(faces))
