"""Face detection on OpenFace's example photos."""

from __future__ import annotations

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
