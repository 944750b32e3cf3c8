"""Per-face quality measures: is a face big, sharp, frontal and whole enough to be named?

`assess(image, box, landmarks)` measures one face (RGB uint8 image, box and dlib 68- or 5-point landmarks
in its pixels); `low_quality_reason(q, cfg)` says why it must not be named ("unknown (low quality)"), or None.

The measures:

* `face_px`: the smaller side of the detector box.
* `sharpness`: variance of the 3x3 Laplacian (`cv2.Laplacian`, CV_64F) of the box's grey levels (0-255),
  resampled to `SHARPNESS_PX` x `SHARPNESS_PX` (INTER_AREA down, INTER_LINEAR up), so a face scores about
  the same at any size. Scale: sharp photos 80-2000; it falls with blur and with low contrast (a dark face).
* `yaw`: head turn in degrees, from the nose's offset from the eyes' midpoint along the eye line, over the
  inter-ocular distance (`nose_offset`; roll-free). The nose point is the base of the nose in both landmark
  sets (68-point index 33, the 5-point model's 5th point), so both give the same number (LFW: slope 0.94,
  r = 0.97). An orthographic head turned by yaw moves that point by NOSE_DEPTH * tan(yaw) inter-ocular
  distances, so yaw = atan(offset / NOSE_DEPTH). NOSE_DEPTH = 0.42: MediaPipe's canonical (metric mean) face
  model has its nose tip ~3.8 cm in front of the eye centres, 6.4 cm apart (0.59), and on LFW the nose tip
  (68-point index 30) moves 1.39x as far as the nose base (0.59 / 1.39 = 0.42); the jaw contour (68 points,
  a cylinder head model) gives 0.39-0.55. Degrees are therefore approximate (about +-20%); LFW's four most
  turned faces (3/4 profiles, e.g. Victoria_Clarke_0001, Patrik_Kristiansson_0001) measure 50-55. Noise:
  on LFW's 117 most turned faces a mirrored image gives the opposite yaw within 3.0 (5-point) / 3.8
  (68-point) on average, but near profiles single faces can differ by 20-25 between mirror images or
  between the two landmark sets (dlib's 68-point fit leans towards frontal there).
* no pitch: the nose's drop below the eye line varies from 0.50 to 1.09 inter-ocular distances between the
  (mostly level) faces of LFW (p0.5-p99.5), so a nod cannot be told from a long nose.
* `truncated`: the box touches the image border (detector boxes are clipped to the image) or a landmark
  lies outside it: a face cut off by the frame edge (dlib places the landmarks of the missing part outside).
* `detector_score`: `Box.score`, reported only (its scale depends on the detector backend).

The defaults of `QualityConfig` (min_face_px 40, min_sharpness 40, max_yaw 45, allow_truncated false)
come from `scripts/measure_quality.py`: faces found by `FaceDetector("hog", upsample=1)`, landmarks of
`LandmarkPredictor(68)` and `(5)`:

* LFW deep-funneled, the face nearest each image's centre: 13,166 faces (of 13,233 images). face_px
  p0.5 76, p50 108. sharpness min 28.8, p0.5 79, p1 95, p5 152, p50 363, p99 1095. |yaw| (5-point)
  p50 9.1, p95 29.1, p99 39.1, p99.5 43.1, max 61.5 (68-point: 9.9, 30.2, 39.9, 43.0, 55.8). Kept by the
  defaults: 99.60% with 5-point landmarks (99.64% with 68); rejected: 43 turned away (38 with 68 points),
  5 blurred, 4 cut off (faces at the edge of the 250 px crop), 1 too small.
* LFW View 2 pairs (5,937 with both faces measured; dlib embeddings, threshold 0.18) by the worse face of
  the pair: |yaw| 0-35: false rejects 1.1-1.8%, 35-45: 0-3.8% (102 pairs), so turns up to 45 do not
  hurt; sharpness < 40: 3 of 3 same-person pairs rejected, 60-100: 8.8%, >= 100: 0.7-1.4%.
* The OpenFace and face_recognition example photos: 37 faces (63-666 px), sharpness >= 405, |yaw| <= 26:
  all kept.
* Every frame of the Hamilton clip: 168 faces, 44-108 px. All faces of Lin-Manuel Miranda are kept (on stage
  from 44 px: sharpness >= 263, |yaw| <= 39); 24 defocused faces in the dark audience (sharpness 9-15) are
  "blurred".
* Synthetic bad cases on 9 example photos: Gaussian blur with sigma 1% / 2% / 3% / 5% of the face width
  gives sharpness 143-397 / 33-92 / 14-40 / 6-16 (it moves the dlib embedding by ~0.02 / 0.05 / 0.10 / 0.17,
  threshold 0.18): every 3% blur is "blurred"; faces downscaled to 25-38 px are "too small"; an image
  cropped through the face (keeping 60-90% of the box) that the detector still finds is "cut off".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edged.config import QualityConfig
from edged.types import Box

#: Sharpness is measured on the face box resampled to this many pixels square (greyscale).
SHARPNESS_PX = 64
#: Depth of dlib's nose point (68-point index 33, the 5-point model's nose) in front of the eye centres, as a
#: fraction of the inter-ocular distance: yaw = atan(nose offset / NOSE_DEPTH) (derivation in the docstring).
NOSE_DEPTH = 0.42


@dataclass(frozen=True)
class FaceQuality:
    """What `assess` measured on one face."""

    #: The smaller side of the face box (pixels of the image assessed).
    face_px: int
    #: Variance of the Laplacian of the face box resampled to SHARPNESS_PX x SHARPNESS_PX grey levels (0-255).
    sharpness: float
    #: Head turn estimated from the landmarks (degrees; 0 = frontal, > 0 = nose towards the image's right).
    yaw: float
    #: The face box touches the image border or a landmark lies outside the image.
    truncated: bool
    #: The detector's score for the box (`Box.score`; its scale depends on the detector backend).
    detector_score: float


def eyes_and_nose(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image-left eye centre, image-right eye centre, nose point) from dlib 68- or 5-point landmarks.

    The nose point is the base of the nose in both: 68-point index 33, and the 5-point model's last point
    (its order is [image-right eye outer, inner, image-left eye outer, inner, nose])."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"expected (K, 2) landmarks, got shape {pts.shape}")
    if len(pts) == 68:
        return pts[36:42].mean(axis=0), pts[42:48].mean(axis=0), pts[33]
    if len(pts) == 5:
        return pts[2:4].mean(axis=0), pts[0:2].mean(axis=0), pts[4]
    raise ValueError(f"expected 68 or 5 landmarks, got {len(pts)}")


def nose_offset(landmarks: np.ndarray) -> float:
    """Horizontal offset of the nose from the eyes' midpoint along the eye line, over the inter-ocular
    distance (roll does not change it); 0 = frontal, > 0 = nose towards the image's right."""
    left, right, nose = eyes_and_nose(landmarks)
    axis = right - left
    dist = float(np.hypot(*axis))
    if dist < 1e-6:
        return math.inf
    return float(np.dot(nose - (left + right) / 2.0, axis)) / (dist * dist)


def yaw_degrees(landmarks: np.ndarray) -> float:
    """Head turn in degrees from the nose offset (see `NOSE_DEPTH`)."""
    offset = nose_offset(landmarks)
    if not math.isfinite(offset):
        return 90.0
    return math.degrees(math.atan2(offset, NOSE_DEPTH))


def sharpness(image: np.ndarray, box: Box) -> float:
    """Variance of the Laplacian of the box (clipped to the image) resampled to SHARPNESS_PX square grey."""
    h, w = image.shape[:2]
    b = box.clipped(w, h)
    if b.width < 2 or b.height < 2:
        return 0.0
    region = np.ascontiguousarray(image[b.top:b.bottom, b.left:b.right])
    grey = cv2.cvtColor(region, cv2.COLOR_RGB2GRAY) if region.ndim == 3 else region
    shrink = min(b.width, b.height) > SHARPNESS_PX
    grey = cv2.resize(grey, (SHARPNESS_PX, SHARPNESS_PX),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def is_truncated(image: np.ndarray, box: Box, landmarks: np.ndarray) -> bool:
    """The box reaches the image border, or a landmark lies outside the image."""
    h, w = image.shape[:2]
    if box.left <= 0 or box.top <= 0 or box.right >= w or box.bottom >= h:
        return True
    pts = np.asarray(landmarks, dtype=np.float64)
    return bool(len(pts) and ((pts[:, 0] < 0).any() or (pts[:, 1] < 0).any()
                              or (pts[:, 0] > w - 1).any() or (pts[:, 1] > h - 1).any()))


def assess(image: np.ndarray, box: Box, landmarks: np.ndarray) -> FaceQuality:
    """The quality measures of the face in `box` (RGB uint8 image; box and landmarks in its pixels)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image, got shape {image.shape}")
    return FaceQuality(
        face_px=max(0, min(box.width, box.height)),
        sharpness=sharpness(image, box),
        yaw=yaw_degrees(landmarks),
        truncated=is_truncated(image, box, landmarks),
        detector_score=float(box.score),
    )


def low_quality_reason(q: FaceQuality, cfg: QualityConfig) -> str | None:
    """None when the face may be named, else why not (the first limit it fails, in this order)."""
    if q.face_px < cfg.min_face_px:
        return f"too small ({q.face_px} px < {cfg.min_face_px})"
    if q.truncated and not cfg.allow_truncated:
        return "cut off by the image edge"
    if abs(q.yaw) > cfg.max_yaw:
        return f"turned away (yaw {abs(q.yaw):.0f} > {cfg.max_yaw:g})"
    if q.sharpness < cfg.min_sharpness:
        return f"blurred (sharpness {q.sharpness:.0f} < {cfg.min_sharpness:g})"
    return None
