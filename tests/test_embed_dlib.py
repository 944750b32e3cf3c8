"""dlib ResNet embeddings separate the people in OpenFace's example photos."""

from __future__ import annotations

import numpy as np
import pytest

from edged.distance import squared_l2
from edged.vision.imageio import load_image


@pytest.fixture(scope="module")
def vectors(openface_dir, dlib_pipeline):
    names = ["lennon-1", "lennon-2", "clapton-1", "clapton-2"]
    out = {}
    for n in names:
        faces = dlib_pipeline.process(load_image(openface_dir / f"{n}.jpg"))
        assert len(faces) == 1
        out[n] = faces[0].embedding
    return out


def test_unit_vectors(vectors):
    for v in vectors.values():
        assert v.shape == (128,) and v.dtype == np.float32
        assert abs(np.linalg.norm(v) - 1.0) < 1e-5


def test_same_person_closer_than_different(vectors, dlib_embedder):
    d = lambda a, b: float(squared_l2(vectors[a][None], vectors[b][None])[0, 0])  # noqa: E731
    same = [d("lennon-1", "lennon-2"), d("clapton-1", "clapton-2")]
    cross = [d(a, b) for a in ("lennon-1", "lennon-2") for b in ("clapton-1", "clapton-2")]
    assert max(same) < min(cross), (same, cross)
    assert max(same) < dlib_embedder.threshold < min(cross), (same, cross, dlib_embedder.threshold)


def test_batch_equals_single(openface_dir, dlib_pipeline, dlib_embedder):
    image = load_image(openface_dir / "longoria-cooper.jpg")
    faces = dlib_pipeline.process(image)
    assert len(faces) == 2
    single = np.stack([dlib_embedder.embed_one(f.crop) for f in faces])
    assert np.allclose(single, np.stack([f.embedding for f in faces]), atol=1e-6)
    assert dlib_embedder.embed(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)
