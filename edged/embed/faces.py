"""Still-image face pipeline: detect -> landmarks -> align -> embed, for one embedder."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.embed.base import Embedder
from edged.types import Box
from edged.vision.align import FaceAligner
from edged.vision.detect import FaceDetector


@dataclass(frozen=True)
class FaceResult:
    """One face: its box, landmarks, the embedder's aligned crop and the embedding."""

    box: Box
    landmarks: np.ndarray
    crop: np.ndarray
    embedding: np.ndarray


class FacePipeline:
    """Detects and embeds all faces of an RGB image, largest first."""

    def __init__(self, embedder: Embedder, detector: FaceDetector | None = None,
                 aligner: FaceAligner | None = None) -> None:
        self.embedder = embedder
        self.detector = detector or FaceDetector("hog", upsample=1)
        self.aligner = aligner or FaceAligner(embedder.alignment)

    def detect(self, image: np.ndarray) -> list[Box]:
        return self.detector.detect(image)

    def align(self, image: np.ndarray, boxes: list[Box]) -> list[tuple[Box, np.ndarray, np.ndarray]]:
        """(box, landmarks, crop) per box."""
        out = []
        for box in boxes:
            marks = self.aligner.landmarks(image, box)
            out.append((box, marks, self.aligner.crop(image, box, marks)))
        return out

    def process(self, image: np.ndarray, boxes: list[Box] | None = None) -> list[FaceResult]:
        """Every face (or the given boxes) with its embedding; embeddings computed in one batch."""
        if boxes is None:
            boxes = self.detect(image)
        aligned = self.align(image, boxes)
        if not aligned:
            return []
        vectors = self.embedder.embed([crop for _, _, crop in aligned])
        return [FaceResult(box, marks, crop, vec) for (box, marks, crop), vec in zip(aligned, vectors, strict=True)]
