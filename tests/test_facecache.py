"""The face cache on real LFW images: what it stores, the centred fallback, embeddings from cached landmarks."""

from __future__ import annotations

import stat

import numpy as np
import pytest

from edged.eval.facecache import RETRY_MIN_SCORE, FaceCache, analyse, centred_box, default_cache_dir, file_sha1
from edged.types import Box
from edged.vision.align import FaceAligner, LandmarkPredictor, align_dlib_chip
from edged.vision.detect import FaceDetector

# Abdoulaye_Wade_0003: dlib HOG (upsample 1) finds no face in it, so it gets the centred fallback box.
NAMES = ["Abel_Pacheco/Abel_Pacheco_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0004.jpg",
         "Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg", "George_HW_Bush/George_HW_Bush_0002.jpg",
         "Abdoulaye_Wade/Abdoulaye_Wade_0003.jpg"]
FALLBACK = NAMES[3]  # no HOG face even at the retry threshold: centred box
RETRIED = NAMES[4]  # no HOG face at the default threshold, found by the retry


@pytest.fixture(scope="module")
def images(lfw_dir) -> list[str]:
    return [str(lfw_dir / "lfw-deepfunneled" / n) for n in NAMES]


def _dlib_vectors(dlib_embedder, image: np.ndarray, box: Box, lm5: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(plain, flipped) embeddings computed here from a box and 5-point landmarks."""
    chip = align_dlib_chip(image, box, lm5, 150, 0.25)
    vecs = dlib_embedder.embed([chip, np.ascontiguousarray(chip[:, ::-1])])
    return vecs[0], vecs[1]


@pytest.fixture(scope="module")
def pooled(images, tmp_path_factory):
    """A cache filled as the lead's preparation job does it: two worker processes, plain + flip."""
    directory = tmp_path_factory.mktemp("cache") / "edged"
    cache = FaceCache.in_dir(directory)
    corrupt = directory.parent / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg \xff\xd9")
    calls: list[tuple[int, int]] = []
    sha_of = analyse(cache, [*images, str(corrupt)], ["dlib"], flip=True, workers=2,
                     progress=lambda d, t: calls.append((d, t)))
    yield cache, sha_of, calls, str(corrupt)
    cache.close()


def test_records_boxes_and_fallback(pooled, images):
    cache, sha_of, calls, corrupt = pooled
    assert calls[0] == (0, 6) and calls[-1] == (6, 6)
    faces = cache.faces(sha_of[p] for p in images)
    assert len(faces) == 5 and sha_of[corrupt] not in cache.faces([sha_of[corrupt]])
    detector, lm68 = FaceDetector("hog", upsample=1), LandmarkPredictor(68)
    retry = FaceDetector("hog", upsample=1, min_score=RETRY_MIN_SCORE)
    from edged.vision.imageio import load_image

    for path in images:
        rec = faces[file_sha1(path)]
        image = load_image(path)
        boxes = detector.detect(image)
        assert (rec.width, rec.height) == (250, 250)
        if path.endswith(FALLBACK):
            assert boxes == [] and not rec.detected
            assert retry.detect(image) == []
            assert rec.box.as_list() == centred_box(250, 250).as_list()
        elif path.endswith(RETRIED):
            assert boxes == [] and rec.detected
            assert rec.box.as_list() in [b.as_list() for b in retry.detect(image)]
        else:
            assert rec.detected and rec.box.as_list() in [b.as_list() for b in boxes]
        assert rec.lm68.shape == (68, 2) and rec.lm5.shape == (5, 2)
        np.testing.assert_allclose(rec.lm68, lm68.predict(image, rec.box), atol=0.5)


def test_embeddings_plain_and_flip(pooled, images, dlib_embedder):
    from edged.vision.imageio import load_image

    cache, sha_of, _, _ = pooled
    version = dlib_embedder.version
    plain = cache.embeddings(sha_of.values(), version, "plain")
    flip = cache.embeddings(sha_of.values(), version, "flip")
    norms = cache.embeddings(sha_of.values(), version, "norm")
    assert len(plain) == len(flip) == len(norms) == 5
    for path in images:
        rec = cache.get_face(sha_of[path])
        want_plain, want_flip = _dlib_vectors(dlib_embedder, load_image(path), rec.box, rec.lm5)
        np.testing.assert_allclose(plain[sha_of[path]], want_plain, atol=1e-5)
        np.testing.assert_allclose(flip[sha_of[path]], want_flip, atol=1e-5)
        assert np.linalg.norm(plain[sha_of[path]]) == pytest.approx(1.0, abs=1e-5)
        # dlib's raw descriptor norm is kept, so raw distances can be rebuilt
        crop = FaceAligner(dlib_embedder.alignment).crop(load_image(path), rec.box, rec.lm5)
        raw = dlib_embedder.embed_raw(crop[None])[0]
        assert norms[sha_of[path]][0] == pytest.approx(np.linalg.norm(raw), rel=1e-5)
        assert 1.0 < norms[sha_of[path]][0] < 2.0
    # the same person is closer than another person
    a, b, c = (plain[sha_of[p]] for p in images[:3])
    assert np.sum((a - b) ** 2) < np.sum((a - c) ** 2)


def test_cache_file_is_private(pooled):
    cache = pooled[0]
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.path.parent.stat().st_mode) == 0o700


def test_second_run_computes_nothing(pooled, images):
    cache, sha_of, _, _ = pooled
    calls: list[tuple[int, int]] = []
    again = analyse(cache, images, ["dlib"], flip=True, workers=2, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 0)]
    assert again == {p: sha_of[p] for p in images}


@pytest.mark.parametrize("workers", [1, 2])
def test_new_embedder_uses_cached_landmarks(images, tmp_path, dlib_embedder, workers):
    """An embedder added later embeds from the cached box and landmarks: no detection runs again.

    workers=2 is the process-pool route (dlib); workers=1 the in-process batched route torch models take.
    """
    from edged.vision.imageio import load_image

    cache = FaceCache(tmp_path / "faces.sqlite")
    paths = images[:2]
    analyse(cache, paths, embedder_names=(), workers=1)  # detection and landmarks only
    assert cache.embeddings([file_sha1(p) for p in paths], dlib_embedder.version) == {}
    # Move the cached landmarks of the first image: a re-detection would undo this, the cache keeps it.
    sha = file_sha1(paths[0])
    rec = cache.get_face(sha)
    moved = type(rec)(rec.sha1, rec.path, rec.detected, rec.box, rec.lm68, rec.lm5 + np.float32([8, 0]),
                      rec.width, rec.height)
    cache.put_faces([moved])
    calls: list[tuple[int, int]] = []
    analyse(cache, paths, embedders=[dlib_embedder], embedder_names=(), flip=True, workers=workers,
            progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (2, 2)
    got = cache.embeddings([sha], dlib_embedder.version)[sha]
    want_moved, _ = _dlib_vectors(dlib_embedder, load_image(paths[0]), rec.box, moved.lm5)
    want_orig, _ = _dlib_vectors(dlib_embedder, load_image(paths[0]), rec.box, rec.lm5)
    np.testing.assert_allclose(got, want_moved, atol=1e-5)
    assert np.sum((got - want_orig) ** 2) > 1e-4
    assert len(cache.embeddings([file_sha1(p) for p in paths], dlib_embedder.version, "flip")) == 2
    cache.close()


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "edged"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "edged"
