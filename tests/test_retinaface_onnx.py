"""RetinaFace on ONNX Runtime: the network read from its Caffe files, the same heads and boxes as OpenCV DNN."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.errors import ModelFileError
from edged.vision import retinaface_onnx as rx
from edged.vision.detect import FaceDetector
from tests.conftest import RETINAFACE_FILES


@pytest.fixture(scope="module")
def files(retinaface_models: Path) -> tuple[Path, Path]:
    return retinaface_models / RETINAFACE_FILES[0], retinaface_models / RETINAFACE_FILES[1]


@pytest.fixture(scope="module")
def frames(clip: Path, shared: Path) -> list[np.ndarray]:
    """Real frames: every 25th of the Hamilton clip (640x360) and three of the 1080p pedestrians video."""
    out = []
    for path, step, count in ((clip, 25, 11), (shared / "data" / "pedestrians" / "video.mp4", 30, 3)):
        cap = cv2.VideoCapture(str(path))
        for index in range(step * count):
            ok, frame = cap.read()
            assert ok, path
            if index % step == 0:
                out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        cap.release()
    assert len(out) == 14
    return out


def test_the_graph_reproduces_opencv_dnn_heads_and_boxes_on_real_frames(files, frames, tmp_path: Path) -> None:
    ort_det = FaceDetector("retinaface", upsample=0, model_files=files, runtime="onnxruntime", cache_dir=tmp_path)
    cv_det = FaceDetector("retinaface", upsample=0, model_files=files, runtime="opencv")
    model = ort_det._load()
    net = cv_det._load()
    assert ort_det.runtime_used == "onnxruntime" and cv_det.runtime_used == "opencv"
    found = 0
    for image in frames:
        scale = 0.5 if image.shape[1] > 960 else 1.0
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
        expected = rx.opencv_heads(net, small, model.decoding)
        got = model._session.run(model.outputs, {rx.INPUT_NAME: np.ascontiguousarray(small)[None]})
        for a, b in zip(expected, got, strict=True):
            assert a.shape == b.shape and float(np.abs(a - b).max()) < 1e-3
        a_boxes, b_boxes = cv_det.detect(image, scale), ort_det.detect(image, scale)
        assert len(a_boxes) == len(b_boxes)
        for p, q in zip(a_boxes, b_boxes, strict=True):
            assert max(abs(p.left - q.left), abs(p.top - q.top), abs(p.right - q.right), abs(p.bottom - q.bottom)) <= 1
            assert abs(p.score - q.score) < 1e-3
        found += len(b_boxes)
    assert found >= 20  # the frames hold faces: the comparison is not between two empty lists


def test_the_export_is_cached_private_reused_and_rebuilt_when_damaged(files, tmp_path: Path, caplog) -> None:
    cache = tmp_path / "models" / "cache"
    rx.RetinaFaceOnnx(*files, cache_dir=cache)
    [path] = list(cache.glob("retinaface-*.onnx"))
    assert path.name == f"retinaface-{rx.files_digest(*files)[:32]}.r{rx.RECIPE_VERSION}.onnx"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    built, mtime = path.read_bytes(), path.stat().st_mtime_ns
    rx.RetinaFaceOnnx(*files, cache_dir=cache)
    assert path.stat().st_mtime_ns == mtime  # reused
    path.write_bytes(built[: len(built) // 2])
    with caplog.at_level(logging.WARNING, "edged.vision.retinaface_onnx"):
        again = rx.RetinaFaceOnnx(*files, cache_dir=cache)
    assert "cached RetinaFace export not usable" in caplog.text and path.read_bytes() == built
    assert again.detect(rx.probe_image(), 0.0) == rx.RetinaFaceOnnx(*files).detect(rx.probe_image(), 0.0)
    caplog.clear()
    with caplog.at_level(logging.WARNING, "edged.vision.retinaface_onnx"):  # a cache nobody can write to
        unwritable = rx.RetinaFaceOnnx(*files, cache_dir=Path("/proc"))
    assert "cannot cache the RetinaFace export in /proc" in caplog.text
    assert unwritable.detect(rx.probe_image(), 0.0) == again.detect(rx.probe_image(), 0.0)


def test_auto_falls_back_to_opencv_and_onnxruntime_insists_in_one_line(files, frames, monkeypatch, caplog) -> None:
    monkeypatch.setattr(rx, "HEAD_TOLERANCE", -1.0)  # no export can pass the check now
    auto = FaceDetector("retinaface", upsample=0, model_files=files)
    with caplog.at_level(logging.WARNING, "edged.vision.detect"):
        boxes = auto.detect(frames[4])
    assert auto.runtime_used == "opencv" and boxes
    assert "RetinaFace on ONNX Runtime not usable (head conv_blob48 differs from OpenCV DNN's)" in caplog.text
    strict = FaceDetector("retinaface", upsample=0, model_files=files, runtime="onnxruntime")
    with pytest.raises(ModelFileError) as err:
        strict.detect(frames[4])
    assert str(err.value) == (f"{files[1]}: RetinaFace on ONNX Runtime not usable (head conv_blob48 differs from "
                              f"OpenCV DNN's); choose detector.runtime: opencv")


def test_prototxt_parser_and_unsupported_networks_are_refused(files, tmp_path: Path) -> None:
    parsed = rx.parse_prototxt('name: "n"  # a comment\nlayer { name: "a" type: "ReLU" relu_param { '
                               'negative_slope: 0.1 } }')
    assert parsed == [("name", "n"), ("layer", [("name", "a"), ("type", "ReLU"),
                                                ("relu_param", [("negative_slope", "0.1")])])]
    for bad in ('layer { name: "a"', 'layer { name: "a" } }', "layer {{"):
        with pytest.raises(ValueError):
            rx.parse_prototxt(bad)
    text = files[0].read_text()
    broken = tmp_path / "broken.prototxt"
    broken.write_text(text.replace('code_type: CENTER_SIZE', 'code_type: CORNER'))
    with pytest.raises(ModelFileError, match="only CENTER_SIZE boxes"):
        rx.build_onnx(broken, files[1])
    broken.write_text(text[: len(text) // 2])
    with pytest.raises(ModelFileError, match=r"broken.prototxt: not a readable Caffe network"):
        rx.build_onnx(broken, files[1])
