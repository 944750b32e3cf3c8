"""Landmarks and OpenFace alignment on real faces."""

from __future__ import annotations

import numpy as np
import pytest

from edged.embed.nn4.preprocess import IMG_DIM, to_network_input
from edged.types import Box
from edged.vision.align import (
    DLIB_CHIP_150,
    INNER_EYES_AND_BOTTOM_LIP,
    MINMAX_TEMPLATE,
    OPENFACE_96,
    OUTER_EYES_AND_NOSE,
    OUTER_EYES_AND_NOSE_5,
    FaceAligner,
    LandmarkPredictor,
    align_openface,
    openface_transform,
)
from edged.vision.detect import FaceDetector
from edged.vision.imageio import load_image


@pytest.fixture(scope="module")
def lennon(openface_dir):
    image = load_image(openface_dir / "lennon-1.jpg")
    box = FaceDetector("hog", 1).detect(image)[0]
    return image, box


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_minmax_template_spans_unit_square():
    assert MINMAX_TEMPLATE.shape == (68, 2)
    assert np.allclose(MINMAX_TEMPLATE.min(0), 0) and np.allclose(MINMAX_TEMPLATE.max(0), 1)
    # eyes above nose, left eye left of right eye
    left_eye, right_eye, nose = MINMAX_TEMPLATE[list(OUTER_EYES_AND_NOSE)]
    assert left_eye[0] < nose[0] < right_eye[0] and nose[1] > left_eye[1]


@pytest.mark.parametrize("indices", [OUTER_EYES_AND_NOSE, INNER_EYES_AND_BOTTOM_LIP])
def test_anchor_landmarks_land_on_template(lennon, indices):
    image, box = lennon
    marks = LandmarkPredictor(68).predict(image, box)
    assert marks.shape == (68, 2)
    face = align_openface(image, marks, indices)
    assert face.shape == (IMG_DIM, IMG_DIM, 3) and face.dtype == np.uint8
    mapped = _apply(openface_transform(marks, indices), marks[list(indices)])
    assert np.abs(mapped - IMG_DIM * MINMAX_TEMPLATE[list(indices)]).max() < 1e-3
    # Re-detecting landmarks on the aligned face puts the anchors within a few pixels of the template.
    up = np.ascontiguousarray(np.kron(face, np.ones((4, 4, 1), np.uint8)))  # 384 px: enough for dlib
    corners = _apply(openface_transform(marks, indices), np.float32(
        [[box.left, box.top], [box.right, box.bottom]])) * 4
    (left, top), (right, bottom) = corners.round().astype(int)
    again = LandmarkPredictor(68).predict(up, Box(left, top, right, bottom)) / 4.0
    err = np.linalg.norm(again[list(indices)] - IMG_DIM * MINMAX_TEMPLATE[list(indices)], axis=1)
    assert err.max() < 4.0, err


def test_five_point_model_maps_to_same_template(lennon):
    image, box = lennon
    m68 = LandmarkPredictor(68).predict(image, box)
    m5 = LandmarkPredictor(5).predict(image, box)
    assert m5.shape == (5, 2)
    # The outer eye corners agree with the 68-point ones; the nose point is a little lower.
    assert np.linalg.norm(m5[OUTER_EYES_AND_NOSE_5[0]] - m68[36]) < 15
    assert np.linalg.norm(m5[OUTER_EYES_AND_NOSE_5[1]] - m68[45]) < 15
    assert np.linalg.norm(m5[OUTER_EYES_AND_NOSE_5[2]] - m68[33]) < 25
    a68, a5 = align_openface(image, m68), align_openface(image, m5)
    diff = np.abs(a68.astype(np.int16) - a5.astype(np.int16)).mean()
    assert diff < 25, diff


def test_aligner_specs(lennon):
    image, box = lennon
    nn4 = FaceAligner(OPENFACE_96).align(image, box)
    chip = FaceAligner(DLIB_CHIP_150).align(image, box)
    assert nn4.shape == (96, 96, 3) and chip.shape == (150, 150, 3)
    assert chip.dtype == np.uint8 and 20 < chip.mean() < 235


def test_network_input_contract(lennon):
    image, box = lennon
    face = FaceAligner(OPENFACE_96).align(image, box)
    x = to_network_input([face, face])
    assert x.shape == (2, 3, 96, 96) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert np.allclose(x[0, 0], face[:, :, 0] / 255.0)  # channel 0 is red: RGB order kept
    with pytest.raises(ValueError):
        to_network_input(np.zeros((1, 64, 64, 3), np.uint8))
