"""nn4.small2's input contract, defined once.

RGB, 96x96, OpenFace alignment on landmarks OUTER_EYES_AND_NOSE [36, 45, 33] (`OPENFACE_96`),
pixel / 255, NCHW float32; the output is L2-normalised 128-d embeddings compared by squared L2.
"""

from __future__ import annotations

import numpy as np

from edged.vision.align import OPENFACE_96

#: Edge length of the aligned face fed to nn4.small2.
IMG_DIM = OPENFACE_96.size
#: Pixel scale: network input = uint8 RGB / PIXEL_SCALE.
PIXEL_SCALE = 255.0
#: Channel order of the network input.
CHANNEL_ORDER = "RGB"


def to_network_input(faces: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """Aligned RGB uint8 faces (N, 96, 96, 3) -> NCHW float32 in [0, 1]."""
    batch = np.asarray(faces)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[1:] != (IMG_DIM, IMG_DIM, 3):
        raise ValueError(f"expected aligned faces of shape (N, {IMG_DIM}, {IMG_DIM}, 3), got {batch.shape}")
    if batch.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB faces, got {batch.dtype}")
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(PIXEL_SCALE)
