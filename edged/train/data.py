"""Training data: faces aligned onto a margin canvas, and on-the-fly augmentation.

Each face is aligned once with OpenFace's transform (the embedder's own preprocessing) into
a (96 + 2 * MARGIN)-pixel canvas whose centre 96x96 is exactly the inference-time crop.
Augmented views are small similarity jitters of that centre, plus flips and photometric
changes; with no jitter the view equals the aligned face bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edged.embed.nn4.preprocess import IMG_DIM
from edged.vision.align import MINMAX_TEMPLATE, OUTER_EYES_AND_NOSE

MARGIN = 16
CANVAS = IMG_DIM + 2 * MARGIN


def align_canvas(image: np.ndarray, lm68: np.ndarray) -> np.ndarray:
    """OpenFace OUTER_EYES_AND_NOSE alignment into a CANVAS x CANVAS image (face in the centre 96x96)."""
    idx = list(OUTER_EYES_AND_NOSE)
    src = np.asarray(lm68, np.float32)[idx]
    dst = (np.float32(IMG_DIM) * MINMAX_TEMPLATE[idx] + MARGIN).astype(np.float32)
    return cv2.warpAffine(image, cv2.getAffineTransform(src, dst), (CANVAS, CANVAS), borderMode=cv2.BORDER_REPLICATE)


def centre_crop(canvas: np.ndarray) -> np.ndarray:
    """The un-augmented aligned face of a canvas."""
    return np.ascontiguousarray(canvas[MARGIN:MARGIN + IMG_DIM, MARGIN:MARGIN + IMG_DIM])


@dataclass(frozen=True)
class AugmentConfig:
    rotate_deg: float = 6.0
    scale: float = 0.06
    shift_px: float = 2.5
    flip: float = 0.5
    brightness: float = 30.0
    contrast: float = 0.3
    grey: float = 0.1
    blur: float = 0.2
    lowres: float = 0.2
    jpeg: float = 0.3


def jitter_matrix(rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """2x3 map from canvas to a 96x96 view: a small random similarity about the face centre."""
    angle = math.radians(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
    s = 1.0 + rng.uniform(-cfg.scale, cfg.scale)
    tx, ty = rng.uniform(-cfg.shift_px, cfg.shift_px, size=2)
    c, si = s * math.cos(angle), s * math.sin(angle)
    cc = CANVAS / 2.0
    oc = IMG_DIM / 2.0
    return np.float32([[c, -si, oc + tx - (c * cc - si * cc)], [si, c, oc + ty - (si * cc + c * cc)]])


def augment(canvas: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> tuple[np.ndarray, bool]:
    """One augmented 96x96 RGB view of a canvas and whether it was mirrored."""
    view = cv2.warpAffine(canvas, jitter_matrix(rng, cfg), (IMG_DIM, IMG_DIM), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    flipped = bool(rng.random() < cfg.flip)
    if flipped:
        view = view[:, ::-1]
    img = view.astype(np.float32)
    if rng.random() < cfg.grey:
        img[:] = img.mean(axis=2, keepdims=True)
    alpha = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
    beta = rng.uniform(-cfg.brightness, cfg.brightness)
    mean = img.mean()
    img = (img - mean) * alpha + mean + beta
    view = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < cfg.blur:
        view = cv2.GaussianBlur(view, (0, 0), rng.uniform(0.5, 1.3))
    if rng.random() < cfg.lowres:
        side = int(rng.integers(36, 80))
        view = cv2.resize(cv2.resize(view, (side, side), interpolation=cv2.INTER_AREA), (IMG_DIM, IMG_DIM),
                          interpolation=cv2.INTER_LINEAR)
    if rng.random() < cfg.jpeg:
        ok, buf = cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 90))])
        if ok:
            view = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return np.ascontiguousarray(view), flipped
