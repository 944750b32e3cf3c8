"""Who is in one photo: every face, matched with the door's rule and quality gates (`edged identify`, the web API)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edged.config import QualityConfig
from edged.embed.faces import FacePipeline
from edged.gallery.match import Matcher
from edged.vision.quality import assess, low_quality_reason


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def identify_faces(image: np.ndarray, pipeline: FacePipeline, matcher: Matcher,
                   quality: QualityConfig) -> list[dict[str, Any]]:
    """One JSON-ready dict per face: box, name (None when unknown), distance, confidence, nearest candidate,
    why not named, the quality problem, and the rule's numbers."""
    faces = pipeline.process(image)
    matches = matcher.match(np.array([f.embedding for f in faces])) if faces else []
    out = []
    for face, m in zip(faces, matches, strict=True):
        poor = low_quality_reason(assess(image, face.box, face.landmarks), quality)
        out.append({
            "box": face.box.as_list(), "name": m.name if poor is None else None,
            "distance": round(m.distance, 6), "confidence": round(m.confidence, 4) if poor is None else 0.0,
            "candidate": m.candidate,
            "reason": "low quality" if poor else (None if m.reason is None else str(m.reason)),
            "quality": poor, "threshold": _round(m.threshold), "ratio": _round(m.ratio),
            "second": _round(m.second), "ignored": m.ignored})
    return out
