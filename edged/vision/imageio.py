"""Reading images from files into the pipeline's one pixel format: RGB uint8, HxWx3.

Errors name the file and what is wrong with it in one line (`ImageError`).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from edged.errors import ImageError

#: Refuse images above this many pixels (a 16k x 10k photo would need GBs of RAM downstream).
MAX_PIXELS = 120_000_000
#: Extensions treated as images when walking directories.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"})

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """True when the file name has an image extension."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _check_truncated(path: str, data: bytes) -> None:
    if data.startswith(_JPEG_SOI):
        # A complete JPEG ends with EOI; allow trailing padding some cameras append.
        if _JPEG_EOI not in data[-4096:]:
            raise ImageError(f"{path}: truncated JPEG (no end-of-image marker)")
    elif data.startswith(_PNG_SIG) and b"IEND" not in data[-64:]:
        raise ImageError(f"{path}: truncated PNG (no IEND chunk)")


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to RGB uint8 (HxWx3); EXIF orientation applied."""
    if not data:
        raise ImageError(f"{name}: empty file")
    _check_truncated(name, data)
    buf = np.frombuffer(data, dtype=np.uint8)
    # IMREAD_COLOR applies EXIF orientation and expands grey to 3 channels; ANYDEPTH keeps 16-bit.
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if img is None:
        raise ImageError(f"{name}: not a readable image (corrupt or unsupported format)")
    return to_rgb8(img, name, bgr=True)


def to_rgb8(img: np.ndarray, name: str = "<array>", bgr: bool = False) -> np.ndarray:
    """Convert any 2-D/3-D image array (grey, BGR(A)/RGB(A), 8/16-bit, float 0..1) to RGB uint8."""
    if img.ndim not in (2, 3) or img.size == 0:
        raise ImageError(f"{name}: unsupported image shape {img.shape}")
    h, w = img.shape[:2]
    if h * w > MAX_PIXELS:
        raise ImageError(f"{name}: image too large ({w}x{h}, limit {MAX_PIXELS // 1_000_000} MP)")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageError(f"{name}: unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    channels = img.shape[2]
    if channels == 1:
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    if channels == 4:
        img = img[:, :, :3]
    elif channels != 3:
        raise ImageError(f"{name}: unsupported number of channels ({channels})")
    if bgr:
        img = img[:, :, ::-1]
    return np.ascontiguousarray(img)


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as RGB uint8 (HxWx3), or raise `ImageError` naming the file."""
    name = os.fspath(path)
    p = Path(name)
    if not p.exists():
        raise ImageError(f"{name}: no such file")
    if p.is_dir():
        raise ImageError(f"{name}: is a directory, not an image")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ImageError(f"{name}: cannot read ({exc.strerror or exc})") from exc
    return decode_image(data, name)


def encode_png(rgb: np.ndarray) -> bytes:
    """Encode an RGB uint8 image as PNG bytes (lossless; used for stored face crops)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise ImageError("cannot encode image as PNG")
    return buf.tobytes()


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """Encode an RGB uint8 image as JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageError("cannot encode image as JPEG")
    return buf.tobytes()
