"""Open-set matching of face embeddings against a gallery snapshot (pure numpy): who is it, and is it anyone?

Distances are squared L2 between unit vectors (0 = same, 4 = opposite). For each face:

* **Per-person score** `s1`: ``centroid`` (the distance to the person's template: the normalised mean of
  their samples), ``min`` (the person's nearest sample) or ``mean_k`` (the mean of the person's k nearest
  samples; all of them when they have fewer). The candidate is the person with the lowest score
  (kNN), or the one a scikit-learn linear SVC picks (``svm``, OpenFace's classifier demo; needs >= 2 people).
* **Reference** `ref`: how close the face comes to *other* identities: the runner-up person's score `s2`,
  and, when the site knows impostor faces (a cohort: stored unknown visitors, the ignore list, impostor
  photos), the mean distance to the face's `cohort_k` nearest cohort faces. `ref` is the smaller of the two.
  A stranger who happens to lie near an enrolled person usually lies as near to others; a person's own face
  lies much nearer to them than to anyone else.
* **Rule**: named when ``s1 <= threshold`` (not too far) and ``s1 / ref <= max_ratio`` (clearly nearer
  than anyone else); both are scaled into one number, ``openness = max(s1 / threshold, ratio / max_ratio)``,
  and the face is named when ``openness <= 1``. ``max_ratio`` None switches the margin test off.
* **Ignore list**: a face nearer to an ignore sample (a poster, a TV face) than to its candidate, and
  within the threshold of it, is not named and is marked ``ignored``.
* **Confidence** = clip(1 - openness / 2, 0, 1): 1 for a perfect match, exactly 0.5 at the rule's boundary,
  0 at twice it; a named face always has confidence >= 0.5, an unknown one < 0.5.

Every result carries its reasons (`MatchResult.reason`, `second`, `reference`, `ratio`) so a user can see why
someone was or was not named.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from edged.config import EmbedderConfig, MatchConfig
from edged.distance import MAX_DISTANCE, l2_normalize, squared_l2
from edged.embed.base import Embedder
from edged.gallery.store import GallerySnapshot
from edged.types import MatchResult, UnknownReason

log = logging.getLogger(__name__)

METHODS = ("knn", "svm")
SCORES = ("min", "mean_k", "centroid")
#: Cohort faces averaged for the reference distance.
COHORT_K = 5
#: The door operating point adapts to the gallery: a stranger is compared with every enrolled person, so at a
#: fixed threshold the share of strangers named grows with N. Measured on LFW (`edged eval openset`, people
#: outside View 2 folds 6-10; the 1:1 impostor distances to 1- and 3-sample templates): the threshold keeping
#: N x FAR at 1e-3 falls as N ** -0.10 (k=3: 0.131 at N=1, 0.104 at N=10, 0.082 at N=100; k=1: 0.151, 0.121,
#: 0.095), and a person with one sample can take 15 % more than one with three (a one-photo template lies
#: farther from everyone, strangers included).
SIZE_EXPONENT = 0.10
ONE_SAMPLE_BONUS = 0.15


def person_threshold(threshold: float, people: int, samples: np.ndarray | int) -> np.ndarray:
    """Per-person thresholds of an adaptive rule: `threshold` is the one for a person with >= 3 samples alone in
    the gallery; it shrinks as N ** -SIZE_EXPONENT and grows for people with fewer than 3 samples."""
    n = np.minimum(np.asarray(samples, np.float64), 3.0)
    bonus = 1.0 + ONE_SAMPLE_BONUS * (3.0 - n) / 2.0
    return threshold * max(people, 1) ** -SIZE_EXPONENT * bonus
_EPS = 1e-6


@dataclass(frozen=True)
class MatchRule:
    """The decision rule, stated once: from the config's `match` section and the embedder's door defaults."""

    threshold: float
    max_ratio: float | None = None
    score: str = "centroid"
    k: int = 3
    method: str = "knn"
    #: `threshold` holds for one person with >= 3 samples; per-person thresholds follow N and sample counts.
    adaptive: bool = False

    @classmethod
    def of(cls, embedder: Embedder, embedder_cfg: EmbedderConfig, match_cfg: MatchConfig,
           threshold: float | None = None) -> MatchRule:
        """`threshold` (e.g. `--threshold`) wins over `embedder.threshold` in the config (when it configures this
        embedder), which wins over the embedder's own door threshold; likewise `match.max_ratio`."""
        door = embedder.open_set
        if threshold is None and embedder_cfg.threshold is not None and embedder_cfg.name == embedder.name:
            threshold = embedder_cfg.threshold
        ratio = None if not match_cfg.margin else (match_cfg.max_ratio or door.max_ratio)
        return cls(threshold if threshold is not None else door.threshold, ratio, match_cfg.score or door.score,
                   match_cfg.k, match_cfg.method, match_cfg.adaptive)

    def matcher(self, snapshot: GallerySnapshot, cohort: np.ndarray | None = None,
                ignore: GallerySnapshot | None = None) -> Matcher:
        return Matcher(snapshot, self.threshold, self.method, self.score, self.k, max_ratio=self.max_ratio,
                       cohort=cohort, ignore=ignore, adaptive=self.adaptive)

    def scaled(self, factor: float) -> MatchRule:
        """The same rule made stricter (< 1) or looser (> 1): threshold and margin scaled together."""
        return MatchRule(self.threshold * factor, None if self.max_ratio is None else self.max_ratio * factor,
                         self.score, self.k, self.method, self.adaptive)

    def describe(self) -> dict[str, object]:
        return {"threshold": round(self.threshold, 6), "max_ratio": self.max_ratio, "score": self.score, "k": self.k,
                "method": self.method, "adaptive": self.adaptive}


def confidence(openness: np.ndarray | float) -> np.ndarray:
    """clip(1 - openness / 2, 0, 1): 1 at a perfect match, 0.5 at the rule's boundary, 0 from twice it on."""
    return np.clip(1.0 - np.asarray(openness, np.float64) / 2.0, 0.0, 1.0)


@dataclass(frozen=True)
class Scores:
    """Every number the rule looks at, for Q faces (arrays of length Q)."""

    #: Candidate person index (into `Matcher.people`); -1 when the gallery is empty.
    best: np.ndarray
    s1: np.ndarray
    #: Runner-up person's score (MAX_DISTANCE with fewer than 2 people).
    s2: np.ndarray
    #: Mean distance to the nearest cohort faces (inf without a cohort).
    cohort: np.ndarray
    #: Nearest ignore sample: distance (inf without an ignore list) and its label index.
    ignore_d: np.ndarray
    ignore_idx: np.ndarray

    @property
    def reference(self) -> np.ndarray:
        return np.minimum(self.s2, self.cohort)

    @property
    def ratio(self) -> np.ndarray:
        return self.s1 / np.maximum(self.reference, _EPS)


class Matcher:
    """Matches query embeddings against one gallery snapshot; build a new one when the gallery changes.

    `cohort`: (C, 128) impostor embeddings known to the site; `ignore`: a snapshot of the ignore list
    (its names are the ignore labels).
    """

    def __init__(self, snapshot: GallerySnapshot, threshold: float, method: str = "knn", score: str = "min",
                 k: int = 3, *, max_ratio: float | None = None, cohort: np.ndarray | None = None,
                 cohort_k: int = COHORT_K, ignore: GallerySnapshot | None = None, adaptive: bool = False) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown match method {method!r} (choose from {', '.join(METHODS)})")
        if score not in SCORES:
            raise ValueError(f"unknown match score {score!r} (choose from {', '.join(SCORES)})")
        if not 0.0 < threshold <= MAX_DISTANCE:
            raise ValueError(f"threshold must be in (0, 4], got {threshold}")
        if max_ratio is not None and not 0.0 < max_ratio <= 10.0:
            raise ValueError(f"max_ratio must be in (0, 10], got {max_ratio}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.threshold = float(threshold)
        self.max_ratio = None if max_ratio is None else float(max_ratio)
        self.score = score
        self.k = k
        self.cohort_k = max(1, cohort_k)
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
        #: Threshold per person (the same for everyone unless adaptive).
        self.thresholds = (person_threshold(self.threshold, len(self._people), self._sizes) if adaptive
                           else np.full(len(self._people), self.threshold))
        self._centroids = (l2_normalize(np.add.reduceat(self._vectors, self._starts, axis=0))
                           if score == "centroid" and len(labels) else None)
        self._cohort = (np.ascontiguousarray(np.asarray(cohort, np.float32).reshape(-1, vectors.shape[1]))
                        if cohort is not None and len(cohort) else None)
        self._ignore = ignore if ignore is not None and len(ignore.labels) else None
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

    @property
    def cohort_size(self) -> int:
        return 0 if self._cohort is None else len(self._cohort)

    def distances(self, queries: np.ndarray) -> np.ndarray:
        """(Q, N) squared L2 from each query to each sample (samples grouped by person)."""
        return squared_l2(np.atleast_2d(queries), self._vectors, self._sq_norms)

    def person_scores(self, dist: np.ndarray, queries: np.ndarray | None = None) -> np.ndarray:
        """(Q, P) per-person scores from sample distances: min, mean of the k nearest, or (with `queries`)
        the distance to each person's centroid."""
        if self._centroids is not None and queries is not None:
            return squared_l2(queries, self._centroids)
        if self.score in ("min", "centroid") or self.k == 1 or self._sizes.max() == 1:
            return np.minimum.reduceat(dist, self._starts, axis=1)
        # Sort each row within person groups in one go: distances are in [0, 4], so group * 8 + d keeps
        # the groups in place and orders each group's distances; then average the first k of each group.
        offset = self._group.astype(np.float64) * 8.0
        ranked = np.sort(dist.astype(np.float64) + offset, axis=1) - offset
        rank_in_group = np.arange(dist.shape[1]) - np.repeat(self._starts, self._sizes)
        take = rank_in_group < self.k
        sums = np.add.reduceat(np.where(take, ranked, 0.0), self._starts, axis=1)
        return (sums / np.minimum(self._sizes, self.k)).astype(np.float32)

    def scores(self, vectors: np.ndarray) -> Scores:
        """The rule's inputs for every row of `vectors` (Q, 128); vectorised, for evaluations too."""
        queries = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        n = len(queries)
        inf = np.full(n, np.inf, np.float32)
        if self._cohort is not None and n:
            near = squared_l2(queries, self._cohort)
            kk = min(self.cohort_k, near.shape[1])
            cohort = np.partition(near, kk - 1, axis=1)[:, :kk].mean(axis=1) if kk else inf
        else:
            cohort = inf
        if self._ignore is not None and n:
            to_ignore = squared_l2(queries, self._ignore.vectors)
            nearest = np.argmin(to_ignore, axis=1)
            ignore_d = to_ignore[np.arange(n), nearest]
            ignore_idx = np.asarray(self._ignore.labels)[nearest]
        else:
            ignore_d, ignore_idx = inf, np.full(n, -1)
        if not self._people or n == 0:
            full = np.full(n, MAX_DISTANCE, np.float32)
            return Scores(np.full(n, -1), full, full, cohort, ignore_d, ignore_idx)
        per = self.person_scores(self.distances(queries) if self._centroids is None else np.zeros((n, 0)), queries)
        if self._svm is not None:
            best = np.asarray(self._svm.predict(queries), dtype=np.int64)
        else:
            best = np.argmin(per, axis=1)
        rows = np.arange(n)
        s1 = per[rows, best]
        if per.shape[1] > 1:
            others = per.copy()
            others[rows, best] = np.inf
            s2 = others.min(axis=1)
        else:
            s2 = np.full(n, MAX_DISTANCE, np.float32)
        return Scores(best, s1, s2, cohort, ignore_d, ignore_idx)

    def openness(self, scores: Scores) -> np.ndarray:
        """max(s1 / threshold, ratio / max_ratio): the face is named when <= 1 (and not ignored)."""
        out = scores.s1 / self.threshold_of(scores)
        if self.max_ratio is not None:
            out = np.maximum(out, scores.ratio / self.max_ratio)
        return out

    def ignored(self, scores: Scores) -> np.ndarray:
        """Faces nearer to an ignore sample than to their candidate, and within the threshold of it."""
        return (scores.ignore_d <= self.threshold_of(scores)) & (scores.ignore_d < scores.s1)

    def threshold_of(self, scores: Scores) -> np.ndarray:
        """The threshold that applies to each face: its candidate's."""
        if not len(self.thresholds):
            return np.full(len(scores.best), self.threshold)
        return self.thresholds[np.maximum(scores.best, 0)]

    def match(self, vectors: np.ndarray) -> list[MatchResult]:
        """One result per row of `vectors` (Q, 128)."""
        queries = np.asarray(vectors, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None]
        if len(queries) == 0:
            return []
        sc = self.scores(queries)
        openness = self.openness(sc)
        ignored = self.ignored(sc)
        conf = confidence(openness)
        ratio, reference, limit = sc.ratio, sc.reference, self.threshold_of(sc)
        out = []
        for i in range(len(queries)):
            candidate = self._people[sc.best[i]] if sc.best[i] >= 0 else None
            reason: UnknownReason | None = None
            if ignored[i]:
                reason = UnknownReason.IGNORED
            elif candidate is None:
                reason = UnknownReason.EMPTY_GALLERY
            elif sc.s1[i] > limit[i]:
                reason = UnknownReason.TOO_FAR
            elif openness[i] > 1.0:
                reason = UnknownReason.AMBIGUOUS
            ignore_label = (self._ignore.names[int(sc.ignore_idx[i])]
                            if self._ignore is not None and ignored[i] else None)
            out.append(MatchResult(
                candidate if reason is None else None, float(sc.s1[i]),
                float(conf[i]) if reason != UnknownReason.IGNORED else 0.0, candidate,
                second=float(sc.s2[i]) if len(self._people) > 1 else None,
                reference=float(reference[i]) if np.isfinite(reference[i]) and len(self._people) else None,
                ratio=float(ratio[i]) if candidate is not None else None, reason=reason, ignored=ignore_label,
                threshold=float(limit[i])))
        return out


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
