"""nn4.small2 in int8 for ONNX Runtime: static quantisation of the `FastNN4` export, calibrated on real faces.

`quantize_int8(fp32, digest, calibration)` takes the network's export as the onnxruntime backend
makes it (`fresh_export`), runs ONNX Runtime's shape pre-processing, and quantises it statically
(QOperator: fused integer Conv/MatMul kernels; weights int8 per output channel, activations uint8 with
ranges from `calibration`, aligned 96x96 training faces and their mirror images). The file carries the
weights' digest (the same `edged.weights_sha256` as the fp32 export) and the number of calibration faces;
`load_int8_runner` refuses one made from other weights.

The int8 file lives beside the weights file (`<weights stem>.int8.onnx`); `embedder.backend:
onnxruntime-int8` loads it. Its embeddings are those of the fp32 network within quantisation error (median
squared L2 to fp32 ~3e-4 on real faces, against thresholds of ~0.1), so a gallery enrolled with the fp32
backend keeps working; the face cache keeps them apart (`cache_version`).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from edged.embed.nn4.fast import RECIPE_VERSION
from edged.embed.nn4.ort import META_RECIPE, META_WEIGHTS, OrtNN4, made_from, probe_faces
from edged.embed.nn4.preprocess import IMG_DIM
from edged.errors import EdgedError

#: File name ending of an int8 model beside its weights file.
INT8_SUFFIX = ".int8.onnx"
META_CALIBRATION = "edged.int8.calibration_faces"
#: How the int8 model was quantised. 2: weights in 7 bits (`reduce_range`): ONNX Runtime's uint8 x int8 kernels on
#: x86 CPUs without VNNI (AVX2 only) add pairs of products in 16 bits, which saturate with full-range weights
#: (measured: squared L2 to fp32 up to 0.026 on an AVX2-only AMD EPYC, 0.0012 on a Xeon with VNNI); 7-bit
#: weights cannot saturate there (the model card has their accuracy). Files without it are refused.
META_INT8_RECIPE = "edged.int8.recipe"
INT8_RECIPE = 2
#: At least this many calibration faces (activation ranges from fewer are noise); each is also used mirrored.
MIN_CALIBRATION = 16


class QuantizeError(EdgedError):
    """An int8 model cannot be made or used."""


def int8_path(weights_path: str | Path) -> Path:
    """Where the int8 model of a weights file lives: beside it, `<stem>.int8.onnx`."""
    path = Path(weights_path)
    return path.with_name(path.stem + INT8_SUFFIX)


def quantize_int8(fp32: bytes, digest: str, calibration: np.ndarray) -> bytes:
    """The int8 ONNX model of the fp32 export `fp32` (`fresh_export` of the weights with digest `digest`),
    activation ranges from `calibration` (uint8 faces (N, 96, 96, 3), N >= MIN_CALIBRATION)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    faces = np.ascontiguousarray(calibration)
    if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[1:] != (IMG_DIM, IMG_DIM, 3):
        raise QuantizeError(f"calibration faces must be uint8 (N, {IMG_DIM}, {IMG_DIM}, 3), got {faces.dtype} "
                            f"{faces.shape}")
    if len(faces) < MIN_CALIBRATION:
        raise QuantizeError(f"{len(faces)} calibration faces: need at least {MIN_CALIBRATION}")
    calibrated = len(faces)
    faces = np.concatenate([faces, faces[:, :, ::-1]])  # a face seen mirrored is as likely at a door
    input_name = onnx.load_model_from_string(fp32).graph.input[0].name

    class Faces(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._next = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self._next >= len(faces):
                return None
            self._next += 1
            return {input_name: faces[self._next - 1:self._next]}

    root = logging.getLogger()
    quiet = _QuantizerChatter()
    root.addFilter(quiet)  # the quantiser logs on the root logger, e.g. a dump of the uint8 input's type
    try:
        with tempfile.TemporaryDirectory(prefix="edged-int8-") as tmp:
            plain, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
            plain.write_bytes(fp32)
            quant_pre_process(str(plain), str(pre))
            quantize_static(str(pre), str(out), Faces(), quant_format=QuantFormat.QOperator, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True)
            model = onnx.load(str(out))
    finally:
        root.removeFilter(quiet)
    props = {p.key: p.value for p in model.metadata_props}
    props.update({META_WEIGHTS: digest, META_RECIPE: str(RECIPE_VERSION), META_CALIBRATION: str(calibrated),
                  META_INT8_RECIPE: str(INT8_RECIPE)})
    del model.metadata_props[:]
    for key, value in sorted(props.items()):
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString()


class _QuantizerChatter(logging.Filter):
    """Drops the root-logger records of onnxruntime.quantization (it is told exactly what to quantise)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname


def load_int8_runner(path: Path, digest: str, threads: int = 0) -> OrtNN4:
    """An `OrtNN4` on the int8 model at `path`, which must have been made from the weights `digest`."""
    if not path.is_file():
        raise QuantizeError(f"{path}: no int8 model for these weights; make it with 'edged train quantize "
                            "--weights WEIGHTS --data FILE.npz' or use embedder.backend onnxruntime")
    try:
        runner = OrtNN4(path.read_bytes(), threads)
    except Exception as exc:  # ORT raises several kinds for a corrupt or truncated file
        raise QuantizeError(f"{path}: not a usable ONNX model ({str(exc).splitlines()[0][:160]})") from None
    if not made_from(runner, digest):
        source = runner.metadata.get(META_WEIGHTS, "")
        raise QuantizeError(f"{path}: made from other weights ({source[:12] or 'unknown'}, not {digest[:12]}) "
                            "or another export recipe; make it again with 'edged train quantize'")
    if runner.metadata.get(META_INT8_RECIPE) != str(INT8_RECIPE):
        raise QuantizeError(f"{path}: quantised by an older edged (full-range int8 weights, inaccurate on CPUs "
                            "without VNNI); make it again with 'edged train quantize'")
    out = runner.run(probe_faces(2))
    if out.shape != (2, 128) or not np.all(np.isfinite(out)):
        raise QuantizeError(f"{path}: does not produce 128-d embeddings")
    return runner
