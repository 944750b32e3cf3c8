"""Face detection on OpenFace's example photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edged.vision.detect import FaceDetector
from edged.vision.imageio import load_image

ONE_FACE = ["lennon-1", "lennon-2", "clapton-1", "clapton-2", "carell", "adams"]


@pytest.fixture(scope="module")
def hog():
    return FaceDetector("hog", upsample=1)


@pytest.mark.parametrize("name", ONE_FACE)
def test_one_face_each(hog, openface_dir, name):
    image = load_image(openface_dir / f"{name}.jpg")
    boxes = hog.detect(image)
    assert len(boxes) == 1, boxes
    b = boxes[0]
    assert 0 <= b.left < b.right <= image.shape[1] and 0 <= b.top < b.bottom <= image.shape[0]
    assert b.score > 0


def test_two_faces_largest_first(hog, openface_dir):
    boxes = hog.detect(load_image(openface_dir / "longoria-cooper.jpg"))
    assert len(boxes) == 2
    assert boxes[0].area >= boxes[1].area
    assert boxes[0].iou(boxes[1]) == 0.0


def test_lennon_box_matches_openface_reference(hog, openface_dir):
    # dlib 20 gives about (354,206)-(1019,872); our right/bottom are exclusive (+1).
    box = hog.detect(load_image(openface_dir / "lennon-1.jpg"))[0]
    for got, want in zip(box.as_list(), (354, 206, 1019, 872), strict=True):
        assert abs(got - want) <= 15


def test_downscaled_detection_maps_back(openface_dir):
    image = load_image(openface_dir / "lennon-1.jpg")
    full = FaceDetector("hog", upsample=0).detect(image)[0]
    half = FaceDetector("hog", upsample=0).detect(image, scale=0.5)[0]
    assert full.iou(half) > 0.7  # HOG pyramid steps differ; without mapping back IoU would be ~0.2


def test_no_face_in_blank_and_tiny_images(hog):
    assert hog.detect(np.full((480, 640, 3), 127, np.uint8)) == []
    assert hog.detect(np.zeros((10, 10, 3), np.uint8)) == []


def test_haar_and_mmod_backends(openface_dir):
    image = load_image(openface_dir / "clapton-2.jpg")
    reference = FaceDetector("hog", upsample=1).detect(image)[0]
    for backend in ("haar", "mmod"):
        boxes = FaceDetector(backend, upsample=0).detect(image)
        assert len(boxes) == 1, (backend, boxes)
        assert boxes[0].iou(reference) > 0.4, (backend, boxes[0], reference)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown detector backend"):
        FaceDetector("yolo")
    with pytest.raises(ValueError, match="RGB uint8"):
        FaceDetector().detect(np.zeros((10, 10), np.uint8))


def test_negative_min_score_admits_weaker_hog_detections(lfw_dir):
    # A deep-funneled LFW photo where HOG's default threshold finds no face; a retry at -0.6 does.
    image = load_image(lfw_dir / "lfw-deepfunneled" / "Andy_Roddick" / "Andy_Roddick_0005.jpg")
    assert FaceDetector("hog", upsample=1).detect(image) == []
    boxes = FaceDetector("hog", upsample=1, min_score=-0.6).detect(image)
    assert boxes and all(-0.6 <= b.score < 0 for b in boxes)
    centre = np.array(image.shape[1::-1]) / 2
    assert min(np.hypot(*(np.array(b.center) - centre)) for b in boxes) < 40


# ---- RetinaFace (OpenCV DNN) ----

def _direct_retinaface(image_rgb: np.ndarray, prototxt: Path, weights: Path, width: int) -> list[tuple[float, ...]]:
    """Silent-Face's own recipe, independent of edged: BGR image shrunk to `width`, mean (104, 117, 123),
    confidence > 0.7; boxes in the original image's pixels."""
    import cv2

    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
    h, w = image_rgb.shape[:2]
    size = (width, round(h * width / w))
    bgr = cv2.resize(np.ascontiguousarray(image_rgb[:, :, ::-1]), size, interpolation=cv2.INTER_AREA)
    net.setInput(cv2.dnn.blobFromImage(bgr, 1.0, size, (104, 117, 123)), "data")
    rows = net.forward("detection_out").reshape(-1, 7)
    return [(x1 * w, y1 * h, x2 * w, y2 * h, c) for _, _, c, x1, y1, x2, y2 in rows if c > 0.7]


def test_retinaface_matches_the_reference_recipe_and_hog(retinaface, retinaface_models, openface_dir):
    from tests.conftest import RETINAFACE_FILES

    for name in ONE_FACE:  # at most 640 px wide (larger inputs add false detections on big faces)
        image = load_image(openface_dir / f"{name}.jpg")
        width = min(640, image.shape[1])
        boxes = retinaface.detect(image, scale=width / image.shape[1])
        direct = _direct_retinaface(image, *(retinaface_models / n for n in RETINAFACE_FILES), width)
        assert len(boxes) == len(direct) == 1, (name, boxes, direct)
        for got, want in zip(boxes[0].as_list(), direct[0][:4], strict=True):
            assert abs(got - want) <= 2.5, (name, boxes[0], direct[0])  # the resize rounds the size
        assert abs(boxes[0].score - direct[0][4]) < 1e-5
        assert boxes[0].iou(FaceDetector("hog", upsample=1).detect(image)[0]) > 0.5, name


def test_retinaface_finds_small_faces_hog_misses(retinaface, fr_dir):
    """obama-240p shrunk to half (a ~37 px face): HOG needs an upsample step (4x the pixels) to find it,
    RetinaFace finds it at the image's own size."""
    import cv2

    photo = load_image(fr_dir / "obama-240p.jpg")
    image = cv2.resize(photo, (photo.shape[1] // 2, photo.shape[0] // 2), interpolation=cv2.INTER_AREA)
    assert FaceDetector("hog", upsample=0).detect(image) == []
    [box] = retinaface.detect(image)
    [reference] = FaceDetector("hog", upsample=1).detect(image)
    assert box.iou(reference) > 0.5 and box.width < 40


def test_retinaface_never_enlarges_beyond_the_frame(retinaface, openface_dir):
    image = load_image(openface_dir / "clapton-1.jpg")
    assert retinaface.detect(image, upsample=2) == retinaface.detect(image)  # upsampling only undoes `scale`
    half = retinaface.detect(image, scale=0.25, upsample=1)
    assert retinaface.detect(image, scale=0.5) == half and len(half) == 1
    assert retinaface.smallest_face_px(0.5) == 32.0 and retinaface.smallest_face_px(0.25, upsample=2) == 16.0
    assert FaceDetector("hog", upsample=0).smallest_face_px(1.0, upsample=1) == 40.0
    assert retinaface.detect(np.full((360, 640, 3), 127, np.uint8)) == []


def test_retinaface_missing_or_broken_files_say_how_to_fetch(tmp_path):
    from edged.errors import ModelFileError

    with pytest.raises(ValueError, match="needs its model files"):
        FaceDetector("retinaface")
    missing = FaceDetector("retinaface", model_files=(tmp_path / "deploy.prototxt", tmp_path / "w.caffemodel"))
    with pytest.raises(ModelFileError, match=r"deploy\.prototxt: face detector model not installed; "
                                             r"run 'edged models fetch retinaface'"):
        missing.detect(np.zeros((64, 64, 3), np.uint8))
    (tmp_path / "deploy.prototxt").write_text("layer { name: broken\n")
    (tmp_path / "w.caffemodel").write_bytes(b"\0" * 64)
    with pytest.raises(ModelFileError, match=r"w\.caffemodel: not a usable Caffe face detector \(.*\); run 'edged"):
        missing.detect(np.zeros((64, 64, 3), np.uint8))
