"""Open-set matching and threshold calibration (pure numpy) on vectors with known geometry."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edged.gallery.calibrate import equal_error_rate, error_curve, pair_distances, threshold_for_far
from edged.gallery.match import Matcher, confidence
from edged.gallery.store import GallerySnapshot

pytestmark = pytest.mark.pure

DIM = 128


def unit(*pairs: tuple[int, float]) -> np.ndarray:
    """A unit vector with the given (axis, weight) entries, normalised."""
    v = np.zeros(DIM, np.float32)
    for axis, w in pairs:
        v[axis] = w
    return v / np.linalg.norm(v)


def between(a: int, b: int, sq_dist: float) -> np.ndarray:
    """A unit vector in the plane of axes a, b at squared L2 `sq_dist` from e_a (d^2 = 2 - 2 cos)."""
    cos = 1.0 - sq_dist / 2.0
    v = np.zeros(DIM, np.float32)
    v[a], v[b] = cos, np.sqrt(1.0 - cos * cos)
    return v


def snapshot(names: list[str], labels: list[int], vectors: list[np.ndarray]) -> GallerySnapshot:
    return GallerySnapshot(names, np.array(labels, np.int64), np.array(vectors, np.float32).reshape(-1, DIM),
                           "test-v1", 0)


def test_empty_gallery_everyone_unknown():
    m = Matcher(snapshot([], [], []), threshold=0.5)
    results = m.match(np.stack([unit((0, 1.0)), unit((1, 1.0))]))
    assert len(results) == 2
    for r in results:
        assert r.name is None and r.candidate is None and r.distance == 4.0 and r.confidence == 0.0
    assert m.match(np.zeros((0, DIM), np.float32)) == []


def test_open_set_threshold_and_distances():
    snap = snapshot(["ann", "bob"], [0, 1], [unit((0, 1.0)), unit((1, 1.0))])
    m = Matcher(snap, threshold=0.3)
    near_ann = between(0, 2, 0.2)  # 0.2 from ann, 2.0 + ... from bob
    far_from_all = between(0, 2, 0.5)
    r_known, r_unknown = m.match(np.stack([near_ann, far_from_all]))
    assert r_known.name == "ann" and r_known.candidate == "ann"
    assert r_known.distance == pytest.approx(0.2, abs=1e-5)
    assert r_unknown.name is None and r_unknown.candidate == "ann"
    assert r_unknown.distance == pytest.approx(0.5, abs=1e-5)
    # exactly at the threshold still counts as known
    at = m.match(between(0, 2, 0.3))[0]
    assert at.distance == pytest.approx(0.3, abs=1e-5)
    assert at.confidence == pytest.approx(0.5, abs=1e-4)


def test_confidence_formula():
    assert confidence(0.0) == 1.0
    assert confidence(1.0) == pytest.approx(0.5)  # the rule's boundary
    assert confidence(2.0) == 0.0 and confidence(22.0) == 0.0
    openness = np.linspace(0, 3, 101)
    c = confidence(openness)
    assert np.all(np.diff(c) <= 0) and c.min() >= 0 and c.max() <= 1
    # without a margin test, openness = distance / threshold: the old formula 1 - d / (2 t)
    snap = snapshot(["ann"], [0], [unit((0, 1.0))])
    r = Matcher(snap, threshold=0.4).match(between(0, 1, 0.1))[0]
    assert r.confidence == pytest.approx(1 - 0.1 / 0.8, abs=1e-4)


def test_margin_test_refuses_a_face_between_two_people():
    """A stranger near an enrolled person is usually as near to others: the margin test refuses it."""
    bob = between(0, 1, 0.3)
    snap = snapshot(["ann", "bob"], [0, 1], [unit((0, 1.0)), bob])
    q = unit((0, 1.2)) + bob  # between ann and bob, a little nearer to ann
    q /= np.linalg.norm(q)
    plain = Matcher(snap, threshold=0.2).match(q)[0]
    assert plain.name == "ann" and plain.reason is None
    strict = Matcher(snap, threshold=0.2, max_ratio=0.5).match(q)[0]
    assert strict.name is None and strict.candidate == "ann" and strict.reason == "ambiguous"
    assert strict.second is not None and strict.ratio == pytest.approx(strict.distance / strict.second, abs=1e-5)
    assert strict.ratio > 0.5 and strict.confidence < 0.5
    # ann's own face, far nearer to her than to bob, passes the margin test
    own = Matcher(snap, threshold=0.2, max_ratio=0.5).match(between(0, 3, 0.02))[0]
    assert own.name == "ann" and own.ratio < 0.5 and own.confidence > 0.5


def test_cohort_of_known_strangers_tightens_the_margin():
    """With one person enrolled there is no runner-up: the site's stored strangers play that part."""
    snap = snapshot(["ann"], [0], [unit((0, 1.0))])
    q = between(0, 2, 0.1)
    assert Matcher(snap, threshold=0.2, max_ratio=0.6).match(q)[0].name == "ann"
    strangers = np.stack([(q + 0.1 * unit((k, 1.0))) / np.linalg.norm(q + 0.1 * unit((k, 1.0)))
                          for k in range(3, 9)])  # stored strangers' faces lying around the probe
    r = Matcher(snap, threshold=0.2, max_ratio=0.6, cohort=strangers).match(q)[0]
    assert r.name is None and r.reason == "ambiguous" and r.reference is not None and r.reference < 0.2


def test_ignore_list_wins_over_a_weaker_match():
    snap = snapshot(["ann"], [0], [unit((0, 1.0))])
    poster_face = between(0, 2, 0.2)
    poster = snapshot(["poster"], [0], [poster_face])
    m = Matcher(snap, threshold=0.25, ignore=poster)
    near_poster = poster_face + 0.05 * unit((3, 1.0))  # the poster seen again, ~0.2 from ann
    near_poster /= np.linalg.norm(near_poster)
    r = m.match(near_poster)[0]
    assert r.name is None and r.reason == "ignored" and r.ignored == "poster" and r.confidence == 0.0
    r = m.match(between(0, 3, 0.01))[0]  # ann herself is nearer to ann than to the poster
    assert r.name == "ann" and r.ignored is None
    assert m.match(between(0, 3, 0.5))[0].reason == "too far"


def test_vectorised_matches_brute_force():
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(6, DIM))
    labels = np.repeat(np.arange(6), [1, 3, 2, 5, 1, 4])
    rng.shuffle(labels)  # labels need not be grouped
    vecs = centres[labels] + 0.3 * rng.normal(size=(len(labels), DIM))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    names = [f"p{i}" for i in range(6)]
    queries = centres[rng.integers(0, 6, 40)] + 0.5 * rng.normal(size=(40, DIM))
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for score, k in (("min", 1), ("mean_k", 2), ("mean_k", 3)):
        m = Matcher(snapshot(names, labels.tolist(), list(vecs)), threshold=1.0, score=score, k=k)
        got = m.match(queries.astype(np.float32))
        for q, r in zip(queries, got, strict=True):
            best_name, best = None, np.inf
            for p in range(6):
                d = sorted(float(np.sum((q - v) ** 2)) for v in vecs[labels == p])
                s = d[0] if score == "min" else float(np.mean(d[:k]))
                if s < best:
                    best_name, best = names[p], s
            assert r.candidate == best_name
            assert r.distance == pytest.approx(best, abs=1e-4)
            assert r.name == (best_name if best <= 1.0 else None)


def test_mean_k_prefers_consistently_close_person():
    # ann: one sample very close (0.05) and two far (1.2); bob: three at 0.1.
    q = unit((0, 1.0))
    ann = [between(0, 1, 0.05), between(0, 2, 1.2), between(0, 3, 1.2)]
    bob = [between(0, 4, 0.1), between(0, 5, 0.1), between(0, 6, 0.1)]
    snap = snapshot(["ann", "bob"], [0, 0, 0, 1, 1, 1], ann + bob)
    assert Matcher(snap, 0.5, score="min").match(q)[0].name == "ann"
    r = Matcher(snap, 0.5, score="mean_k", k=3).match(q)[0]
    assert r.name == "bob" and r.distance == pytest.approx(0.1, abs=1e-5)


def clustered(rng: np.random.Generator, people: int, per: int, spread: float) -> tuple[np.ndarray, np.ndarray,
                                                                                        np.ndarray]:
    centres = rng.normal(size=(people, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(people), per)
    vecs = centres[labels] + spread * rng.normal(size=(len(labels), DIM)) / np.sqrt(DIM)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return centres, labels, vecs.astype(np.float32)


def test_svm_method_predicts_people_and_keeps_open_set():
    rng = np.random.default_rng(3)
    centres, labels, vecs = clustered(rng, 4, 5, 0.3)
    names = ["a", "b", "c", "d"]
    m = Matcher(snapshot(names, labels.tolist(), list(vecs)), threshold=0.3, method="svm")
    assert m.method == "svm"
    queries = centres + 0.3 * rng.normal(size=centres.shape) / np.sqrt(DIM)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    results = m.match(queries.astype(np.float32))
    assert [r.name for r in results] == names
    stranger = rng.normal(size=DIM)
    r = m.match((stranger / np.linalg.norm(stranger)).astype(np.float32))[0]
    assert r.name is None and r.candidate in names and r.distance > 0.3


def test_svm_falls_back_to_knn_with_one_person(caplog):
    snap = snapshot(["solo"], [0, 0], [unit((0, 1.0)), unit((1, 1.0))])
    with caplog.at_level(logging.WARNING, logger="edged.gallery.match"):
        m = Matcher(snap, threshold=0.5, method="svm")
    assert m.method == "knn"
    assert "needs at least 2" in caplog.text
    assert m.match(unit((0, 1.0)))[0].name == "solo"


@pytest.mark.parametrize("kwargs", [{"method": "tree"}, {"score": "max"}, {"k": 0}, {"threshold": 0.0},
                                    {"threshold": 5.0}])
def test_bad_settings_rejected(kwargs):
    args = {"threshold": 0.5, **kwargs}
    with pytest.raises(ValueError):
        Matcher(snapshot(["a"], [0], [unit((0, 1.0))]), **args)


def test_pair_distances_split_and_count():
    # three people with 2, 1, 3 samples on orthogonal axes: same person = identical vectors.
    vecs = [unit((0, 1.0))] * 2 + [unit((1, 1.0))] + [unit((2, 1.0))] * 3
    pairs = pair_distances(np.array([0, 0, 1, 2, 2, 2]), np.array(vecs))
    assert len(pairs.genuine) == 1 + 0 + 3
    assert len(pairs.impostor) == 15 - 4
    assert np.allclose(pairs.genuine, 0.0, atol=1e-6)
    assert np.allclose(pairs.impostor, 2.0, atol=1e-5)


def test_error_curve_and_threshold_for_far():
    from edged.gallery.calibrate import PairDistances

    pairs = PairDistances(genuine=np.array([0.05, 0.1, 0.2, 0.4]), impostor=np.array([0.3, 0.5, 0.6, 0.8, 1.0]))
    curve = error_curve(pairs, np.array([0.0, 0.1, 0.3, 0.45, 2.0]))
    assert curve.far.tolist() == [0.0, 0.0, 0.2, 0.2, 1.0]
    assert curve.frr.tolist() == [1.0, 0.5, 0.25, 0.0, 0.0]
    # FAR 0 -> stay below the smallest impostor distance; FAR 0.2 allows one impostor pair.
    assert threshold_for_far(pairs, 0.001) == pytest.approx(0.299)
    assert threshold_for_far(pairs, 0.2) == pytest.approx(0.499)
    assert threshold_for_far(pairs, 1.0) == 4.0
    t, rate = equal_error_rate(error_curve(pairs, np.arange(0, 1.2, 0.01)))
    assert 0.3 <= t < 0.5 and rate == pytest.approx(0.2, abs=0.05)
