"""The embedder interface: aligned faces in, L2-normalised 128-d float32 vectors out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from edged.distance import EMBEDDING_DIM, l2_normalize
from edged.vision.align import AlignmentSpec


@dataclass(frozen=True)
class OpenSetDefaults:
    """An embedder's door operating point (`edged eval openset`): named when the person's score is within
    `threshold` and at most `max_ratio` of the distance to the next identity, scores per `score`."""

    threshold: float
    max_ratio: float | None
    score: str = "centroid"


class Embedder(ABC):
    """Maps aligned face crops to points on the 128-d unit hypersphere.

    Distances between embeddings are squared L2 (0 = identical, 4 = opposite); `threshold`
    is the squared-L2 distance below which two faces are taken as the same person.
    """

    name: str = ""
    #: Identifies the weights: embeddings of different versions must not be mixed.
    version: str = ""
    dim: int = EMBEDDING_DIM
    #: 1:1 verification threshold (LFW protocol; `edged compare`).
    threshold: float = 1.0
    alignment: AlignmentSpec

    @property
    def cache_version(self) -> str:
        """Key of these embeddings in caches of computed embeddings (`version`, plus how they were computed
        when that changes them slightly, e.g. nn4's int8 backend)."""
        return self.version

    @property
    def open_set(self) -> OpenSetDefaults:
        """The 1:N rule at a door (`edged identify`, the daemon). Without a measured one: the verification
        threshold scaled as measured for dlib (0.125 of 0.186), with dlib's margin."""
        return OpenSetDefaults(round(self.threshold * 0.67, 4), 0.6)

    @abstractmethod
    def embed(self, faces: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """Embed aligned RGB uint8 faces (N, S, S, 3) -> (N, dim) float32, unit rows."""

    def embed_one(self, face: np.ndarray) -> np.ndarray:
        return self.embed(face[None])[0]

    def embed_mirror_averaged(self, faces: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """Each face's embedding averaged with its mirror image's, renormalised (one batch of 2N faces): what
        enrollment stores (`enroll.mirror`), a template nearer to how the person looks from either side."""
        batch = as_batch(faces, self.alignment.size)
        n = len(batch)
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        both = self.embed(np.concatenate([batch, np.ascontiguousarray(batch[:, :, ::-1])]))
        return l2_normalize(both[:n] + both[n:])

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "version": self.version, "threshold": self.threshold,
                "alignment": self.alignment.name}


def as_batch(faces: np.ndarray | list[np.ndarray], size: int) -> np.ndarray:
    """Stack faces into (N, size, size, 3) uint8, checking shapes."""
    batch = np.asarray(faces) if not isinstance(faces, list) else (
        np.stack(faces) if faces else np.zeros((0, size, size, 3), np.uint8))
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[1:] != (size, size, 3) or batch.dtype != np.uint8:
        raise ValueError(f"expected uint8 faces of shape (N, {size}, {size}, 3), got {batch.shape} {batch.dtype}")
    return batch
