"""Per-face quality: small, blurred, turned-away and cut-off faces are "low quality"; good photos are not.

Real photos from ../shared; tests marked `pure` build their own faces and images.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.config import ConfigErrors, QualityConfig, parse_config
from edged.types import Box
from edged.vision.align import LandmarkPredictor
from edged.vision.detect import FaceDetector
from edged.vision.imageio import load_image
from edged.vision.quality import (
    SHARPNESS_PX,
    FaceQuality,
    assess,
    eyes_and_nose,
    low_quality_reason,
    nose_offset,
    sharpness,
)

CFG = QualityConfig()
#: Clearly turned (3/4 profile) faces of LFW, found by measuring yaw over all of LFW: the nose points to
#: the image's left (Victoria Clarke) and right (Patrik Kristiansson).
TURNED_LEFT = "Victoria_Clarke/Victoria_Clarke_0001.jpg"
TURNED_RIGHT = "Patrik_Kristiansson/Patrik_Kristiansson_0001.jpg"


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector("hog", upsample=1)


@pytest.fixture(scope="module", params=[68, 5], ids=["68pt", "5pt"])
def predictor(request: pytest.FixtureRequest) -> LandmarkPredictor:
    return LandmarkPredictor(request.param)


@pytest.fixture(scope="module")
def frontal(openface_dir: Path, fr_dir: Path) -> dict[str, np.ndarray]:
    return {"lennon-1.jpg": load_image(openface_dir / "lennon-1.jpg"), "obama.jpg": load_image(fr_dir / "obama.jpg")}


def one_face(detector: FaceDetector, image: np.ndarray) -> Box:
    boxes = detector.detect(image)
    assert len(boxes) == 1, boxes
    return boxes[0]


def measure(image: np.ndarray, detector: FaceDetector, predictor: LandmarkPredictor) -> FaceQuality:
    box = one_face(detector, image)
    return assess(image, box, predictor.predict(image, box))


# ---- real photos ----

@pytest.mark.parametrize("name", ["lennon-1.jpg", "obama.jpg"])
def test_good_frontal_photo_is_good(name, frontal, detector, predictor) -> None:
    image = frontal[name]
    box = one_face(detector, image)
    q = assess(image, box, predictor.predict(image, box))
    assert low_quality_reason(q, CFG) is None, q
    assert q.face_px == min(box.width, box.height) and q.face_px > 200
    assert q.detector_score == box.score > 0
    assert not q.truncated
    assert abs(q.yaw) < 15
    assert q.sharpness > 10 * CFG.min_sharpness


def test_tiny_face_is_too_small(frontal, predictor) -> None:
    image = frontal["lennon-1.jpg"]
    full = one_face(FaceDetector("hog", upsample=1), image)
    factor = 25 / full.width
    small = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    q = measure(small, FaceDetector("hog", upsample=2), predictor)  # 2 doublings find ~20 px faces
    assert 20 <= q.face_px <= 32
    assert low_quality_reason(q, CFG) == f"too small ({q.face_px} px < 40)"


@pytest.mark.parametrize("name", ["lennon-1.jpg", "obama.jpg"])
def test_strongly_blurred_face_is_blurred(name, frontal, detector, predictor) -> None:
    image = frontal[name]
    box = one_face(detector, image)
    blurred = cv2.GaussianBlur(image, (0, 0), 0.05 * box.width)
    q = assess(blurred, box, predictor.predict(blurred, box))
    reason = low_quality_reason(q, CFG)
    assert q.sharpness < CFG.min_sharpness / 2
    assert reason == f"blurred (sharpness {q.sharpness:.0f} < 40)"


@pytest.mark.parametrize("name", ["lennon-1.jpg", "obama.jpg"])
def test_sharpness_falls_as_blur_grows(name, frontal, detector) -> None:
    image = frontal[name]
    box = one_face(detector, image)
    values = [sharpness(image if f == 0 else cv2.GaussianBlur(image, (0, 0), f * box.width), box)
              for f in (0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08)]
    assert all(a > b for a, b in itertools.pairwise(values)), values
    assert values[0] > 20 * values[-1]


def test_sharpness_does_not_depend_on_the_face_size(frontal, detector) -> None:
    image = frontal["lennon-1.jpg"]
    box = one_face(detector, image)
    half = cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    ratio = sharpness(half, box.scaled(0.5)) / sharpness(image, box)
    assert 0.8 < ratio < 1.25, ratio


@pytest.mark.parametrize("name", ["lennon-1.jpg", "obama.jpg"])
@pytest.mark.parametrize("keep", [0.75, 0.9])
def test_face_cut_by_the_image_edge_is_cut_off(name, keep, frontal, detector, predictor) -> None:
    image = frontal[name]
    box = one_face(detector, image)
    assert not assess(image, box, predictor.predict(image, box)).truncated
    cut = np.ascontiguousarray(image[:, : box.left + round(keep * box.width)])  # through the face
    q = measure(cut, detector, predictor)  # the detector still finds the rest of the face
    assert q.truncated
    assert low_quality_reason(q, CFG) == "cut off by the image edge"
    assert low_quality_reason(q, CFG.model_copy(update={"allow_truncated": True})) is None


def test_face_cut_at_the_top_is_cut_off(frontal, detector, predictor) -> None:
    image = frontal["lennon-1.jpg"]
    box = one_face(detector, image)
    cut = np.ascontiguousarray(image[box.top + box.height // 5:])  # forehead and eyebrows gone
    q = measure(cut, detector, predictor)
    assert low_quality_reason(q, CFG) == "cut off by the image edge"


@pytest.mark.parametrize(("name", "sign"), [(TURNED_LEFT, -1), (TURNED_RIGHT, 1)])
def test_turned_face_is_turned_away(name, sign, lfw_dir, detector, predictor) -> None:
    q = measure(load_image(lfw_dir / "lfw-deepfunneled" / name), detector, predictor)
    assert sign * q.yaw > CFG.max_yaw + 3, q
    assert low_quality_reason(q, CFG) == f"turned away (yaw {abs(q.yaw):.0f} > 45)"


@pytest.mark.parametrize("name", ["lennon-1.jpg", TURNED_LEFT, "George_W_Bush/George_W_Bush_0205.jpg"])
def test_mirrored_face_turns_the_other_way(name, frontal, lfw_dir, detector, predictor) -> None:
    image = frontal[name] if name in frontal else load_image(lfw_dir / "lfw-deepfunneled" / name)
    q = measure(image, detector, predictor)
    mirrored = measure(np.ascontiguousarray(image[:, ::-1]), detector, predictor)
    assert mirrored.yaw == pytest.approx(-q.yaw, abs=6)


def test_68_and_5_point_landmarks_agree_on_yaw(lfw_dir, detector) -> None:
    p68, p5 = LandmarkPredictor(68), LandmarkPredictor(5)
    for name in (TURNED_LEFT, TURNED_RIGHT, "Aaron_Eckhart/Aaron_Eckhart_0001.jpg"):
        image = load_image(lfw_dir / "lfw-deepfunneled" / name)
        box = one_face(detector, image)
        y68 = assess(image, box, p68.predict(image, box)).yaw
        y5 = assess(image, box, p5.predict(image, box)).yaw
        assert y68 == pytest.approx(y5, abs=8), name


# ---- pure: constructed faces ----

def _face(yaw_offset: float = 0.0, roll_deg: float = 0.0, centre=(100.0, 100.0), iod: float = 40.0) -> np.ndarray:
    """5-point landmarks of a face: eyes `iod` apart, nose `yaw_offset` x iod off the midline, rolled."""
    half = iod / 2
    pts = np.array([[half + 8, 0], [half - 8, 0], [-half - 8, 0], [-half + 8, 0], [yaw_offset * iod, 0.8 * iod]])
    a = math.radians(roll_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (pts @ rot.T + np.asarray(centre)).astype(np.float32)


@pytest.mark.pure
def test_yaw_is_zero_when_frontal_and_ignores_roll() -> None:
    assert nose_offset(_face()) == pytest.approx(0.0, abs=1e-6)
    for roll in (-40, 15, 90):
        assert nose_offset(_face(0.2, roll)) == pytest.approx(0.2, abs=1e-6)
        assert nose_offset(_face(-0.2, roll)) == pytest.approx(-0.2, abs=1e-6)
    image = np.zeros((200, 200, 3), np.uint8)
    box = Box(60, 60, 140, 140, 1.5)
    yaws = [assess(image, box, _face(off)).yaw for off in (-0.6, -0.3, 0.0, 0.1, 0.3, 0.6)]
    assert yaws == sorted(yaws) and yaws[2] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.pure
def test_68_point_landmarks_use_eye_centres_and_nose_base() -> None:
    pts = np.zeros((68, 2), np.float32)
    pts[36:42] = (10, 20)
    pts[42:48] = (50, 20)
    pts[33] = (30, 50)
    pts[30] = (99, 99)  # the nose tip is not used
    left, right, nose = eyes_and_nose(pts)
    assert left.tolist() == [10, 20] and right.tolist() == [50, 20] and nose.tolist() == [30, 50]
    with pytest.raises(ValueError, match="68 or 5 landmarks"):
        eyes_and_nose(np.zeros((7, 2)))
    with pytest.raises(ValueError, match=r"\(K, 2\)"):
        eyes_and_nose(np.zeros(10))


@pytest.mark.pure
def test_truncated_when_the_box_or_a_landmark_reaches_the_edge() -> None:
    image = np.full((200, 300, 3), 128, np.uint8)
    inside = _face()
    assert not assess(image, Box(60, 60, 140, 140), inside).truncated
    for box in (Box(0, 60, 80, 140), Box(60, 0, 140, 80), Box(220, 60, 300, 140), Box(60, 120, 140, 200)):
        assert assess(image, box, inside).truncated, box
    outside = inside.copy()
    outside[4] = (100, 200.5)  # the nose below the bottom row
    assert assess(image, Box(60, 60, 140, 140), outside).truncated


@pytest.mark.pure
def test_sharpness_scale() -> None:
    flat = np.full((120, 120, 3), 90, np.uint8)
    box = Box(10, 10, 110, 110)
    assert sharpness(flat, box) == 0.0
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (120, 120, 3), dtype=np.uint8)
    assert sharpness(noise, box) > 1000
    assert sharpness(noise, Box(-50, -50, 1, 1)) == 0.0  # nothing of the box inside the image
    assert SHARPNESS_PX == 64


@pytest.mark.pure
def test_reasons_name_the_measure_and_the_limit() -> None:
    good = FaceQuality(face_px=120, sharpness=300.0, yaw=10.0, truncated=False, detector_score=1.0)
    assert low_quality_reason(good, CFG) is None
    assert low_quality_reason(FaceQuality(31, 300.0, 0.0, False, 1.0), CFG) == "too small (31 px < 40)"
    assert low_quality_reason(FaceQuality(120, 12.4, 0.0, False, 1.0), CFG) == "blurred (sharpness 12 < 40)"
    assert low_quality_reason(FaceQuality(120, 300.0, -48.2, False, 1.0), CFG) == "turned away (yaw 48 > 45)"
    assert low_quality_reason(FaceQuality(120, 300.0, 0.0, True, 1.0), CFG) == "cut off by the image edge"
    # at the limits is still good
    assert low_quality_reason(FaceQuality(40, 40.0, 45.0, False, 0.0), CFG) is None
    # the first failing measure is the reason: size, edge, turn, blur
    assert low_quality_reason(FaceQuality(20, 1.0, 80.0, True, 0.0), CFG).startswith("too small")
    assert low_quality_reason(FaceQuality(90, 1.0, 80.0, True, 0.0), CFG) == "cut off by the image edge"
    assert low_quality_reason(FaceQuality(90, 1.0, 80.0, False, 0.0), CFG).startswith("turned away")
    loose = QualityConfig(min_face_px=16, min_sharpness=0.0, max_yaw=90.0, allow_truncated=True)
    assert low_quality_reason(FaceQuality(20, 1.0, 80.0, True, 0.0), loose) is None
    assert low_quality_reason(FaceQuality(120, 30.0, 0.0, False, 1.0),
                              QualityConfig(min_sharpness=37.5)) == "blurred (sharpness 30 < 37.5)"


@pytest.mark.pure
def test_quality_config_section() -> None:
    base = "device_id: d\ncamera: {source: 0}\n"
    cfg = parse_config(base).quality
    assert (cfg.min_face_px, cfg.min_sharpness, cfg.max_yaw, cfg.allow_truncated) == (40, 40.0, 45.0, False)
    cfg = parse_config(base + "quality: {min_face_px: 60, max_yaw: 30, allow_truncated: true}\n").quality
    assert (cfg.min_face_px, cfg.max_yaw, cfg.allow_truncated) == (60, 30.0, True)
    assert parse_config(base + "quality:\n").quality == QualityConfig()
    with pytest.raises(ConfigErrors) as info:
        parse_config(base + "quality:\n  max_yaw: 120\n  allow_truncate: true\n", "edged.yaml")
    assert info.value.problems == [
        "edged.yaml: line 4: quality.max_yaw: must be <= 90, got 120.0",
        "edged.yaml: line 5: quality.allow_truncate: unknown key (did you mean allow_truncated?)",
    ]
