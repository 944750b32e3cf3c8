"""Open-set matching of face embeddings against a gallery snapshot, and threshold calibration (pure numpy).

Distances are squared L2 between unit vectors (0 = same, 4 = opposite).

* Per-person score: ``min`` (nearest sample of that person, default) or ``mean_k`` (mean of the
  person's k nearest samples; all of them when they have fewer).
* kNN (default): the candidate is the person with the lowest score.
* SVM: a scikit-learn linear SVC (as OpenFace's classifier demo) trained on the gallery picks the
  candidate by its decision function; needs at least two people (otherwise kNN with a warning).
  Its distance is still the candidate's score, so the open-set rule below is the same for both.
* Open set: the face is unknown (``name`` None) when the candidate's score exceeds the threshold.
* Confidence = clip(1 - distance / (2 * threshold), 0, 1): 1 at distance 0, exactly 0.5 at the
  threshold, 0 at twice the threshold and beyond. It falls linearly with distance, so a known
  face always has confidence >= 0.5 and an unknown one < 0.5.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edged.distance import MAX_DISTANCE, squared_l2
from edged.gallery.store import GallerySnapshot
from edged.types import MatchResult

log = logging.getLogger(__name__)

METHODS = ("knn", "svm")
SCORES = ("min", "mean_k")


def confidence(distance: np.ndarray | float, threshold: float) -> np.ndarray:
    """clip(1 - d / (2 t), 0, 1): 1 at d = 0, 0.5 at the threshold, 0 from 2 t on."""
    return np.clip(1.0 - np.asarray(distance, np.float64) / (2.0 * threshold), 0.0, 1.0)


class Matcher:
    """Matches query embeddings against one gallery snapshot; build a new one when the gallery changes."""

    def __init__(self, snapshot: GallerySnapshot, threshold: float, method: str = "knn", score: str = "min",
                 k: int = 3) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown match method {method!r} (choose from {', '.join(METHODS)})")
        if score not in SCORES:
            raise ValueError(f"unknown match score {score!r} (choose from {', '.join(SCORES)})")
        if not 0.0 < threshold <= MAX_DISTANCE:
            raise ValueError(f"threshold must be in (0, 4], got {threshold}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.threshold = float(threshold)
        self.score = score
        self.k = k
        labels = np.asarray(snapshot.labels, dtype=np.int64)
        vectors = np.asarray(snapshot.vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(labels):
            raise ValueError(f"snapshot has {len(labels)} labels but vectors of shape {vectors.shape}")
        order = np.argsort(labels, kind="stable")
        labels, self._vectors = labels[order], np.ascontiguousarray(vectors[order])
        self._sq_norms = (self._vectors * self._vectors).sum(axis=1)
        present, self._starts = np.unique(labels, return_index=True)
        self._people = [snapshot.names[i] for i in present]
        self._group = np.searchsorted(present, labels)  # column -> person position
        self._sizes = np.diff(np.append(self._starts, len(labels)))
        self.method = method
        self._svm: Any = None
        if method == "svm":
            if len(self._people) < 2:
                log.warning("match.method svm needs at least 2 enrolled people (have %d); using knn",
                            len(self._people))
                self.method = "knn"
            else:
                self._svm = _fit_svm(self._vectors, self._group)

    @property
    def people(self) -> list[str]:
        """People with at least one sample."""
        return list(self._people)

    def distances(self, queries: np.ndarray) -> np.ndarray:
        """(Q, N) squared L2 from each query to each sample (samples grouped by person)."""
        return squared_l2(np.atleast_2d(queries), self._vectors, self._sq_norms)

    def person_scores(self, dist: np.ndarray) -> np.ndarray:
        """(Q, P) per-person scores from sample distances: min, or mean of the k nearest."""
        if self.score == "min" or self.k == 1 or self._sizes.max() == 1:
            return np.minimum.reduceat(dist, self._starts, axis=1)
        # Sort each row within person groups in one go: distances are in [0, 4], so group * 8 + d keeps
        # the groups in place and orders each group's distances; then average the first k of each group.
        offset = self._group.astype(np.float64) * 8.0
        ranked = np.sort(dist.astype(np.float64) + offset, axis=1) - offset
        rank_in_group = np.arange(dist.shape[1]) - np.repeat(self._starts, self._sizes)
        take = rank_in_group < self.k
        sums = np.add.reduceat(np.where(take, ranked, 0.0), self._starts, axis=1)
        return (sums / np.minimum(self._sizes, self.k)).astype(np.float32)

    def match(self, vectors: np.ndarray) -> list[MatchResult]:
        """One result per row of `vectors` (Q, 128)."""
        queries = np.asarray(vectors, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None]
        if len(queries) == 0:
            return []
        if not self._people:
            return [MatchResult(None, MAX_DISTANCE, 0.0, None) for _ in range(len(queries))]
        scores = self.person_scores(self.distances(queries))
        if self._svm is not None:
            best = np.asarray(self._svm.predict(queries), dtype=np.int64)
        else:
            best = np.argmin(scores, axis=1)
        dist = scores[np.arange(len(queries)), best]
        conf = confidence(dist, self.threshold)
        return [MatchResult(self._people[b] if d <= self.threshold else None, float(d), float(c), self._people[b])
                for b, d, c in zip(best, dist, conf, strict=True)]


def _fit_svm(vectors: np.ndarray, groups: np.ndarray) -> Any:
    """A linear SVC as in OpenFace's classifier demo; the candidate is its decision (`predict`).

    OpenFace took argmax(predict_proba) with probability=True. Those Platt-scaled probabilities
    come from an internal 5-fold cross-validation that is noise for galleries of 1-5 samples per
    person (on knn_examples their argmax was wrong for 7 of 8 faces, `predict` for 1), and
    scikit-learn 1.9 deprecates the option, so the decision function is used instead.
    """
    from sklearn.svm import SVC

    svm = SVC(kernel="linear", C=1.0)
    svm.fit(vectors, groups)
    return svm
