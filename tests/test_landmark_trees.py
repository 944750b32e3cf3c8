"""The faster 68-point landmark model of liveness: dlib's own model with fewer trees per stage, built from the
installed file, loaded by dlib, close to the full model on real faces, cached 0600 and checked, and one clear
line for a file that is not dlib's 68-point model."""

from __future__ import annotations

import itertools
import logging
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml

from edged.types import Box
from edged.vision import dlib_files
from edged.vision.align import LandmarkPredictor
from edged.vision.detect import FaceDetector
from edged.vision.imageio import load_image
from edged.vision.landmark_trees import (
    FULL_TREES,
    LandmarkModelError,
    read_layout,
    truncated_model,
    truncated_model_file,
)
from edged.vision.parallax import inter_ocular
from tests.conftest import LFW, run_cli

SOURCE = Path(dlib_files.model_path(dlib_files.SHAPE_68))


@pytest.fixture(scope="module")
def source_bytes() -> bytes:
    return SOURCE.read_bytes()


@pytest.fixture(scope="module")
def faces() -> list[tuple[np.ndarray, Box]]:
    """Real faces: the first photo of 40 LFW people, with HOG's box."""
    detector = FaceDetector("hog")
    out = []
    for folder in sorted(p for p in (LFW / "lfw-deepfunneled").iterdir() if p.is_dir())[::97]:
        image = load_image(sorted(folder.glob("*.jpg"))[0])
        boxes = detector.detect(image)
        if boxes:
            out.append((image, boxes[0]))
        if len(out) == 40:
            break
    assert len(out) >= 30
    return out


def test_the_file_is_read_as_15_stages_of_500_trees(source_bytes: bytes) -> None:
    layout = read_layout(source_bytes)
    assert [len(stage) for stage in layout.stages] == [FULL_TREES] * 15
    # every tree's bytes follow the one before it, and the stages' tails (anchors, deltas) end the file
    spans = [span for stage in layout.stages for span in stage]
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    assert layout.header_end < spans[0][0] < spans[-1][1] < layout.anchors[0][0] < layout.deltas[0][0]
    assert len(layout.anchors) == len(layout.deltas) == 15 and layout.deltas[-1][1] == len(source_bytes)
    # all trees kept is the original file byte for byte; fewer stages keep their own anchors and deltas only
    assert truncated_model(source_bytes, FULL_TREES, layout=layout) == source_bytes
    five = read_layout(truncated_model(source_bytes, 300, 5, layout=layout))
    assert [len(s) for s in five.stages] == [300] * 5 and len(five.anchors) == len(five.deltas) == 5


def test_fewer_trees_stay_close_to_the_full_model_on_real_faces(faces, tmp_path: Path) -> None:
    full = LandmarkPredictor(68)
    errors = {}
    for stages, trees in ((15, 250), (15, 100)):
        fast = LandmarkPredictor(68, stages=stages, trees=trees, cache_dir=tmp_path)
        per_face = []
        for image, box in faces:
            a, b = full.predict(image, box), fast.predict(image, box)
            per_face.append(float(np.linalg.norm(a - b, axis=1).mean() / inter_ocular(a)))
        errors[stages, trees] = float(np.mean(per_face))
    print("mean landmark distance to the full model over the inter-ocular distance:", errors)
    # measured on 300 faces (the module's table): 0.023 and 0.049; a different model would be far off
    assert 0.0 < errors[15, 250] < errors[15, 100] < 0.06


def test_the_cache_is_private_checked_and_rebuilt_when_damaged(source_bytes: bytes, tmp_path: Path) -> None:
    cache = tmp_path / "models" / "cache"
    path, temporary = truncated_model_file(SOURCE, 5, 300, cache)
    assert not temporary and Path(path).parent == cache
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(cache.stat().st_mode) == 0o700
    built = Path(path).read_bytes()
    assert len(built) < len(source_bytes) / 3
    assert [len(s) for s in read_layout(built).stages] == [300] * 5
    mtime = os.stat(path).st_mtime_ns
    assert truncated_model_file(SOURCE, 5, 300, cache) == (path, False) and os.stat(path).st_mtime_ns == mtime
    # one flipped byte in a leaf: the digest no longer agrees, so it is built again from the installed model
    damaged = bytearray(built)
    damaged[len(damaged) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(damaged))
    assert truncated_model_file(SOURCE, 5, 300, cache) == (path, False)
    assert Path(path).read_bytes() == built


def test_an_unwritable_cache_warns_and_still_loads(caplog: pytest.LogCaptureFixture, faces) -> None:
    caplog.set_level(logging.WARNING)
    predictor = LandmarkPredictor(68, stages=5, trees=300, cache_dir=Path("/proc/edged-cache"))
    image, box = faces[0]
    assert predictor.predict(image, box).shape == (68, 2)
    assert any("cannot cache the 5-stage, 300-tree model" in r.getMessage() for r in caplog.records)
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("edged-shape68-*"))  # the temporary file is gone


def test_a_file_that_is_not_the_model_is_one_clear_line(tmp_path: Path) -> None:
    bogus = tmp_path / "shape.dat"
    bogus.write_bytes(b"\x01\x01\x81\x05\x81\x01" + b"\x00" * 40)
    with pytest.raises(LandmarkModelError) as info:
        truncated_model_file(bogus, 5, 300, tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(bogus) in message and "not dlib's 68-point shape predictor" in message
    with pytest.raises(LandmarkModelError, match=r"file ends early|bad or missing integer"):
        read_layout(SOURCE.read_bytes()[:5000], "cut")
    with pytest.raises(LandmarkModelError, match="cannot read"):
        truncated_model_file(tmp_path / "missing.dat", 5, 300, tmp_path)


def test_a_bad_override_of_eval_liveness_is_one_line_and_exit_2() -> None:
    for option, value in (("--landmark-trees", "5"), ("--landmark-stages", "16"), ("--texture-every-n", "0")):
        done = run_cli("eval", "liveness", option, value, "--clips", str(LFW))
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert done.stderr.startswith(f"edged: error: {option} {value}: ")


@pytest.mark.parametrize(("trees", "shared"), [(None, True), (150, False)])
def test_liveness_shares_nn4s_landmarks_only_when_they_are_the_same_model(tmp_path: Path, trees, shared) -> None:
    """nn4 aligns with the full 68-point model: liveness reuses its landmarks by default, and with fewer trees
    runs its own (cached) model and never mixes the aligner's landmarks into a track's."""
    from edged.config import parse_config
    from edged.models.embedders import create_nn4_embedder
    from edged.runtime.pipeline import RecognitionPipeline

    liveness = {"enabled": True, "require": "motion", **({"landmark_trees": trees} if trees else {})}
    cfg = parse_config(yaml.safe_dump({"device_id": "t", "camera": {"source": "clip.mp4"},
                                       "detector": {"backend": "hog"}, "embedder": {"name": "nn4"},
                                       "models": {"dir": str(tmp_path / "models")}, "liveness": liveness}))
    pipeline = RecognitionPipeline.from_config(cfg, create_nn4_embedder())
    assert pipeline.liveness is not None
    assert (pipeline.liveness.landmarks is pipeline.aligner.predictor) is shared
    model = pipeline.liveness.landmarks
    assert isinstance(model, LandmarkPredictor) and model.trees == (trees or FULL_TREES)
    if not shared:
        assert list((tmp_path / "models" / "cache").glob("shape68-*-s15t150.dat"))
