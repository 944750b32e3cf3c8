"""Reading images: every odd input gives RGB uint8 or a one-line error naming the file."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edged.errors import ImageError
from edged.vision.imageio import decode_image, load_image, to_rgb8


def test_jpeg_is_rgb_uint8(openface_dir):
    img = load_image(openface_dir / "lennon-1.jpg")
    assert img.dtype == np.uint8 and img.shape == (1050, 1400, 3)
    bgr = cv2.imread(str(openface_dir / "lennon-1.jpg"))
    assert np.array_equal(img, bgr[:, :, ::-1])


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"this is not an image at all", "not a readable image"),
])
def test_bad_bytes(tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as info:
        load_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


def test_truncated_jpeg(tmp_path, openface_dir):
    data = (openface_dir / "clapton-1.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated JPEG"):
        load_image(path)


def test_truncated_png(tmp_path, openface_dir):
    _, buf = cv2.imencode(".png", cv2.imread(str(openface_dir / "clapton-2.jpg")))
    path = tmp_path / "cut.png"
    path.write_bytes(buf.tobytes()[:-200])
    with pytest.raises(ImageError, match="truncated PNG"):
        load_image(path)


def test_png_with_alpha_grey_and_16bit(tmp_path, openface_dir):
    bgr = cv2.imread(str(openface_dir / "clapton-2.jpg"))
    bgra = np.dstack([bgr, np.full(bgr.shape[:2], 128, np.uint8)])
    cv2.imwrite(str(tmp_path / "alpha.png"), bgra)
    assert np.array_equal(load_image(tmp_path / "alpha.png"), bgr[:, :, ::-1])

    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    g = load_image(tmp_path / "grey.png")
    assert g.shape == bgr.shape and np.array_equal(g[:, :, 0], grey) and np.array_equal(g[:, :, 2], grey)

    deep = bgr.astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    assert np.array_equal(load_image(tmp_path / "deep.png"), bgr[:, :, ::-1])


def test_to_rgb8_rejects_odd_arrays():
    with pytest.raises(ImageError, match="channels"):
        to_rgb8(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageError, match="pixel type"):
        to_rgb8(np.zeros((4, 4, 3), np.int32))
    with pytest.raises(ImageError, match="too large"):
        to_rgb8(np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (20000, 20000, 3), (0, 0, 0)))


def test_decode_names_the_source():
    with pytest.raises(ImageError, match=r"^camera: empty file"):
        decode_image(b"", "camera")
