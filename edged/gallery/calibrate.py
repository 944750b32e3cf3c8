"""Threshold calibration from labelled samples: genuine/impostor pair distances, FAR/FRR curves (pure numpy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.distance import MAX_DISTANCE, squared_l2
from edged.errors import GalleryError
from edged.gallery.store import GallerySnapshot


@dataclass(frozen=True)
class PairDistances:
    """Squared L2 of all genuine (same person) and impostor (different people) sample pairs."""

    genuine: np.ndarray
    impostor: np.ndarray


def pair_distances(labels: np.ndarray, vectors: np.ndarray) -> PairDistances:
    """Every unordered pair of samples, split by whether the labels agree."""
    labels = np.asarray(labels)
    d = squared_l2(vectors, vectors)
    i, j = np.triu_indices(len(labels), k=1)
    same = labels[i] == labels[j]
    return PairDistances(np.sort(d[i, j][same]), np.sort(d[i, j][~same]))


@dataclass(frozen=True)
class ErrorCurve:
    """False accept and false reject rates at each threshold (accept when distance <= threshold)."""

    thresholds: np.ndarray
    far: np.ndarray
    frr: np.ndarray


def error_curve(pairs: PairDistances, thresholds: np.ndarray) -> ErrorCurve:
    """FAR(t) = share of impostor pairs <= t; FRR(t) = share of genuine pairs > t."""
    t = np.asarray(thresholds, dtype=np.float64)
    gen, imp = np.sort(pairs.genuine), np.sort(pairs.impostor)
    far = np.searchsorted(imp, t, side="right") / max(len(imp), 1)
    frr = 1.0 - np.searchsorted(gen, t, side="right") / max(len(gen), 1)
    return ErrorCurve(t, far, frr)


def threshold_for_far(pairs: PairDistances, target_far: float, step: float = 0.001) -> float:
    """The largest threshold (on a `step` grid) whose FAR does not exceed `target_far`.

    With n impostor pairs at most floor(target * n) may be accepted, so the threshold must stay
    below the (that + 1)-th smallest impostor distance.
    """
    imp = np.sort(pairs.impostor)
    allowed = int(np.floor(target_far * len(imp) + 1e-9))
    if allowed >= len(imp):
        return MAX_DISTANCE
    limit = float(imp[allowed])
    t = np.floor(limit / step) * step
    if t >= limit:
        t -= step
    return float(max(t, 0.0))


def equal_error_rate(curve: ErrorCurve) -> tuple[float, float]:
    """(threshold, rate) where FAR and FRR are closest."""
    i = int(np.argmin(np.abs(curve.far - curve.frr)))
    return float(curve.thresholds[i]), float((curve.far[i] + curve.frr[i]) / 2.0)


@dataclass(frozen=True)
class Calibration:
    """FAR/FRR of a gallery's own sample pairs and the threshold suggested for a target FAR."""

    people: int
    samples: int
    pairs: PairDistances
    target_far: float
    current: float
    suggested: float
    #: FAR/FRR on a 0.001 grid up to a little beyond every value of interest (for plots).
    curve: ErrorCurve
    #: FAR/FRR at 13 even steps plus the current and the suggested threshold (for tables).
    table: ErrorCurve
    #: FAR/FRR at [current, suggested].
    at: ErrorCurve
    eer_threshold: float
    eer: float

    @property
    def far_resolution(self) -> float:
        """The smallest FAR step the impostor pairs can measure."""
        return 1.0 / len(self.pairs.impostor)


def calibrate(snapshot: GallerySnapshot, current: float, target_far: float) -> Calibration:
    """Genuine/impostor pairs of the gallery's samples, their error curves and the suggested threshold."""
    pairs = pair_distances(snapshot.labels, snapshot.vectors)
    if len(pairs.genuine) == 0 or len(pairs.impostor) == 0:
        raise GalleryError(f"calibrate needs at least 2 people and one person with 2 or more samples "
                           f"(have {len(snapshot.names)} people, {len(snapshot.labels)} samples)")
    suggested = threshold_for_far(pairs, target_far)
    top = min(MAX_DISTANCE, max(float(pairs.genuine.max()), suggested, current) * 1.25)
    curve = error_curve(pairs, np.round(np.arange(0.0, top + 1e-9, 0.001), 6))
    eer_t, eer = equal_error_rate(curve)
    steps = sorted(set(np.round(np.linspace(0.0, top, 13), 3).tolist()) | {round(current, 3), round(suggested, 3)})
    return Calibration(len(snapshot.names), len(snapshot.labels), pairs, target_far, current, suggested, curve,
                       error_curve(pairs, np.array(steps)), error_curve(pairs, np.array([current, suggested])),
                       eer_t, eer)
