"""Enrollment building blocks on real photos: canonical crops, quality gates, sources, re-embedding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edged.config import EnrollConfig
from edged.errors import ImageError
from edged.gallery.enroll import (
    CROP_FACE_BOX,
    CROP_SIZE,
    DUPLICATE,
    MULTIPLE_FACES,
    NO_FACE,
    TOO_BLURRY,
    TOO_SMALL,
    Enroller,
    canonical_crop,
    embed_crops,
    expand_sources,
    eye_centres,
    pick_face,
    select_distinct,
    sharpness,
    video_step,
)
from edged.types import Box
from edged.vision.imageio import encode_png, load_image


@pytest.fixture(scope="module")
def enroller(dlib_pipeline):
    return Enroller(dlib_pipeline, EnrollConfig())


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def eye_tilt_degrees(landmarks: np.ndarray) -> float:
    left, right = eye_centres(landmarks)
    return float(np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0])))


def test_canonical_crop_levels_eyes_and_centres_face(openface_dir, dlib_pipeline):
    from edged.vision.align import LandmarkPredictor

    predictor = LandmarkPredictor(68)
    image = rotate(load_image(openface_dir / "lennon-1.jpg"), 20.0)
    box = dlib_pipeline.detect(image)[0]
    marks = predictor.predict(image, box)
    assert abs(eye_tilt_degrees(marks)) > 12  # the photo really is tilted
    crop = canonical_crop(image, box, marks)
    assert crop.shape == (CROP_SIZE, CROP_SIZE, 3) and crop.dtype == np.uint8
    # Landmarks found afresh on the crop: eyes level, face in the middle.
    again = predictor.predict(crop, CROP_FACE_BOX)
    assert abs(eye_tilt_degrees(again)) < 3
    nose = again[30]
    assert abs(nose[0] - CROP_SIZE / 2) < 15 and abs(nose[1] - CROP_SIZE / 2) < 25
    # and the detector finds one face of about the box size there
    found = dlib_pipeline.detect(crop)
    assert len(found) == 1 and found[0].iou(CROP_FACE_BOX) > 0.5


def test_sharpness_drops_with_blur(fr_dir, dlib_pipeline):
    image = load_image(fr_dir / "obama.jpg")
    box = dlib_pipeline.detect(image)[0]
    [(_, marks, _)] = dlib_pipeline.align(image, [box])
    values = [sharpness(canonical_crop(cv2.GaussianBlur(image, (k, k), 0) if k else image, box, marks))
              for k in (0, 9, 21, 41)]
    assert values == sorted(values, reverse=True)
    assert values[0] > 10 * values[-1]


def test_pick_face_and_gates():
    boxes = [Box(0, 0, 50, 50), Box(100, 100, 300, 300)]
    assert pick_face([], False) == NO_FACE
    assert pick_face(boxes, False).startswith(MULTIPLE_FACES)
    assert pick_face(boxes, True) == boxes[1]
    assert pick_face(boxes[:1], False) == boxes[0]


def test_select_distinct_greedy_by_score():
    base = np.eye(4, 128, dtype=np.float32)
    twin = base[0].copy()  # exact duplicate of row 0
    vectors = np.stack([base[0], twin, base[1], base[2], base[3]])
    scores = np.array([5.0, 9.0, 1.0, 3.0, 2.0])
    kept, dups, surplus = select_distinct(vectors, scores, n=3, duplicate_max=0.01)
    assert kept == [1, 3, 4]  # best first; row 0 duplicates the better row 1
    assert dups == [0] and surplus == [2]
    kept, dups, _ = select_distinct(vectors, scores, n=5, duplicate_max=0.01, stored=base[1:2])
    assert 2 in dups and 2 not in kept  # row 2 equals the stored vector


def test_video_step():
    assert video_step(29.97, 275, 10) == 6  # 5 frames per second
    assert video_step(25.0, 100_000, 10) == 1666  # long video: ~60 frames examined
    assert video_step(2.0, 10, 10) == 1


def test_expand_sources(tmp_path, fr_dir):
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    (tmp_path / "a" / "one.JPG").write_bytes(b"x")
    (nested / "two.png").write_bytes(b"x")
    (nested / "notes.txt").write_text("skip me")
    # directories: walked recursively in path order (a/b/two.png < a/one.JPG), non-images skipped
    items = expand_sources([tmp_path / "a", fr_dir / "short_hamilton_clip.mp4", fr_dir / "obama.jpg"])
    assert [(i.path.name, i.kind, i.explicit) for i in items] == [
        ("two.png", "image", False), ("one.JPG", "image", False), ("short_hamilton_clip.mp4", "video", True),
        ("obama.jpg", "image", True)]
    with pytest.raises(ImageError, match="unsupported format"):
        expand_sources([nested / "notes.txt"])
    with pytest.raises(ImageError, match="no such file"):
        expand_sources([tmp_path / "nope.jpg"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageError, match="holds no images"):
        expand_sources([empty])


@pytest.mark.parametrize(("image", "reason"), [
    ("obama-240p.jpg", TOO_SMALL), ("two_people.jpg", MULTIPLE_FACES), ("blurred", TOO_BLURRY), ("blank", NO_FACE),
])
def test_gates_on_real_photos(enroller, fr_dir, image, reason):
    if image == "blurred":
        pixels = cv2.GaussianBlur(load_image(fr_dir / "obama.jpg"), (31, 31), 0)
    elif image == "blank":
        pixels = np.full((300, 300, 3), 128, np.uint8)
    else:
        pixels = load_image(fr_dir / image)
    result = enroller.face_from_image(pixels, image)
    assert isinstance(result, str) and result.startswith(reason), result


def test_largest_takes_the_bigger_face(dlib_pipeline, fr_dir):
    image = load_image(fr_dir / "two_people.jpg")
    boxes = dlib_pipeline.detect(image)
    assert len(boxes) == 2
    result = Enroller(dlib_pipeline, EnrollConfig(), largest=True).face_from_image(image, "two_people.jpg")
    assert not isinstance(result, str)
    assert result.face_px == max(min(b.width, b.height) for b in boxes)


def test_run_rejects_duplicates_and_keeps_reasons(dlib_pipeline, fr_dir, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((fr_dir / "obama.jpg").read_bytes())
    (folder / "b.jpg").write_bytes((fr_dir / "obama.jpg").read_bytes())  # same photo again
    (folder / "c.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")  # junk inside a folder: rejected
    (folder / "d.jpg").write_bytes((fr_dir / "obama2.jpg").read_bytes())
    report = Enroller(dlib_pipeline, EnrollConfig()).run(expand_sources([folder]))
    assert [s.source for s in report.samples] == ["a.jpg", "d.jpg"]
    reasons = dict(report.rejected)
    assert reasons[str(folder / "b.jpg")].startswith(DUPLICATE)
    assert "unreadable" in reasons[str(folder / "c.jpg")]
    sample = report.samples[0]
    assert sample.embedder == "dlib" and sample.crop_png is not None and sample.crop_png.startswith(b"\x89PNG")
    assert load_image_bytes(sample.crop_png).shape == (CROP_SIZE, CROP_SIZE, 3)
    # against already stored vectors too
    again = Enroller(dlib_pipeline, EnrollConfig(), stored=np.stack([s.embedding for s in report.samples]))
    report2 = again.run(expand_sources([folder / "d.jpg"]))
    assert report2.samples == [] and report2.rejected[0][1].startswith(DUPLICATE)


def test_explicit_corrupt_image_raises(dlib_pipeline, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ImageError, match=r"bad\.png"):
        Enroller(dlib_pipeline, EnrollConfig()).run(expand_sources([bad]))


def test_keep_crops_false_stores_no_crop(dlib_pipeline, fr_dir):
    cfg = EnrollConfig(keep_crops=False)
    report = Enroller(dlib_pipeline, cfg).run(expand_sources([fr_dir / "biden.jpg"]))
    assert len(report.samples) == 1 and report.samples[0].crop_png is None


def load_image_bytes(data: bytes) -> np.ndarray:
    from edged.vision.imageio import decode_image

    return decode_image(data, "crop")


def test_reembedding_stored_crops_reproduces_embeddings(dlib_pipeline, dlib_embedder, fr_dir, openface_dir):
    paths = [fr_dir / "obama.jpg", fr_dir / "biden.jpg", openface_dir / "clapton-1.jpg",
             fr_dir / "knn_examples" / "train" / "kit_harington" / "john1.jpeg"]
    report = Enroller(dlib_pipeline, EnrollConfig()).run(expand_sources(paths))
    assert len(report.samples) == 4
    original = np.stack([s.embedding for s in report.samples])
    again = embed_crops(dlib_embedder, [s.crop_png for s in report.samples])
    shift = ((original - again) ** 2).sum(axis=1)
    assert shift.max() < 0.02, shift  # far below the 0.18 threshold and the 0.01-0.3 spread between photos
    cross = ((original[:, None] - again[None]) ** 2).sum(axis=2)
    assert np.array_equal(cross.argmin(axis=1), np.arange(4))


def test_canonical_crop_png_is_lossless(fr_dir, dlib_pipeline):
    image = load_image(fr_dir / "biden.jpg")
    box = dlib_pipeline.detect(image)[0]
    [(_, marks, _)] = dlib_pipeline.align(image, [box])
    crop = canonical_crop(image, box, marks)
    assert np.array_equal(load_image_bytes(encode_png(crop)), crop)


def test_enrollment_stores_mirror_averaged_embeddings(dlib_pipeline, dlib_embedder, fr_dir):
    from edged.distance import l2_normalize

    paths = [fr_dir / "obama.jpg", fr_dir / "biden.jpg"]
    mirrored = Enroller(dlib_pipeline, EnrollConfig()).run(expand_sources(paths)).samples
    plain = Enroller(dlib_pipeline, EnrollConfig(mirror=False)).run(expand_sources(paths)).samples
    assert len(mirrored) == len(plain) == 2
    for m, p, path in zip(mirrored, plain, paths, strict=True):
        image = load_image(path)
        [(_, _, aligned)] = dlib_pipeline.align(image, dlib_pipeline.detect(image)[:1])
        assert np.allclose(p.embedding, dlib_embedder.embed([aligned])[0], atol=1e-6)
        flipped = dlib_embedder.embed([np.ascontiguousarray(aligned[:, ::-1])])[0]
        assert np.allclose(m.embedding, l2_normalize(p.embedding + flipped), atol=1e-5)
        # a real change, far below the door threshold (0.125): the same person's template
        assert 0.0005 < float(((m.embedding - p.embedding) ** 2).sum()) < 0.05
    # still two clearly different people
    assert float(((mirrored[0].embedding - mirrored[1].embedding) ** 2).sum()) > 0.2
    # re-embedding the stored crops does what enrollment did
    again = embed_crops(dlib_embedder, [s.crop_png for s in mirrored])
    assert float(((again - np.stack([s.embedding for s in mirrored])) ** 2).sum(axis=1).max()) < 0.02
