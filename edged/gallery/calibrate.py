"""Threshold calibration: how often would the door give a stranger an enrolled person's name? (pure numpy)

The figure a door cares about is 1:N: a stranger is compared with everyone enrolled at once, so the
more people are enrolled, the likelier one of them lies near the stranger. `calibrate()` measures it on
**impostor faces**, faces of people known not to be enrolled:

* photos of such people (`edged calibrate --impostors DIR`, embedded by `embed_impostor_photos`);
* the impostor embeddings a site already keeps (stored unknown visitors and the ignore list,
  `edged.gallery.unknowns.cohort`): they are passed in the same `impostors` array, stacked with the photos'
  embeddings.

Reported, for the configured rule (`edged.gallery.match.MatchRule`: threshold, margin, score, method, the code
the daemon runs; without a cohort, which can only make the rule stricter, so the figure is conservative):

* **FPIR** (false positive identification rate) at the gallery's N: the share of impostor faces that the rule
  names, with its exact one-sided 95% Clopper-Pearson upper bound (the 0.95 quantile of
  Beta(named + 1, faces - named)). With none named that is 1 - 0.05^(1/n), about the rule of three, 3/n.
* **Suggested threshold**: the largest threshold (0.001 grid; margin, score and method unchanged) whose FPIR
  upper bound stays within the target. A threshold looser than the current one is suggested only when the
  impostor evidence supports it; when it cannot (too few impostor faces: with none named, showing
  FPIR <= target takes n >= 3 / target, 3000 faces for 1e-3), the current threshold is kept, or a tighter one
  when impostor faces were named at the current one. Tighter suggestions are always allowed.
* **Probable duplicate identities**: pairs of enrolled people A, B where the rule, run on the gallery without A,
  names one of A's samples B (or the other way round), or whose nearest samples are within the embedder's 1:1
  "same person" distance (`same_person`, `Embedder.threshold`): one person enrolled under two names (or two
  people the embedder cannot tell apart).
* **Pair FAR** (secondary, the figure earlier versions suggested a threshold from): FAR/FRR of the gallery's
  own sample pairs (genuine = same person, impostor = different people), the threshold for a target pair FAR
  and the equal error rate. A handful of the gallery's own pairs is not 1:N evidence; it is kept for plots and
  for scripts that read it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edged.distance import MAX_DISTANCE, squared_l2
from edged.errors import EdgedError, GalleryError, ImageError
from edged.gallery.match import Matcher, MatchRule
from edged.gallery.store import GallerySnapshot

if TYPE_CHECKING:
    from edged.embed.base import Embedder

#: Confidence of the FPIR upper bound (one-sided).
CONFIDENCE = 0.95
#: Threshold grid of the suggestions.
STEP = 0.001
#: Rule of three: with none of n faces named, FPIR <= 3 / n at 95%.
RULE_OF_THREE = 3.0


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


# ---- FPIR: impostor faces the rule names ----

def fpir_upper(named: np.ndarray | int, faces: int) -> np.ndarray:
    """Exact one-sided 95% Clopper-Pearson upper bound of a rate from `named` of `faces` (1 without faces)."""
    from scipy.special import betaincinv

    k = np.asarray(named, dtype=np.float64)
    if faces <= 0:
        return np.ones_like(k)
    with np.errstate(all="ignore"):
        upper = betaincinv(k + 1.0, np.maximum(faces - k, 1e-300), CONFIDENCE)
    upper = np.where(k == 0, 1.0 - (1.0 - CONFIDENCE) ** (1.0 / faces), upper)  # closed form, exact
    return np.where(k >= faces, 1.0, upper)


def faces_needed(target: float) -> int:
    """Impostor faces needed to show FPIR <= target with none of them named (rule of three: n >= 3 / target)."""
    return math.ceil(RULE_OF_THREE / target - 1e-9)


@dataclass(frozen=True)
class Fpir:
    """FPIR at one threshold: how many of the impostor faces the rule names."""

    threshold: float
    named: int
    faces: int
    #: One-sided 95% Clopper-Pearson upper bound of the rate (1.0 without faces).
    upper: float

    @property
    def rate(self) -> float:
        return self.named / self.faces if self.faces else 0.0

    @property
    def rule_of_three(self) -> float | None:
        """3 / n, the rule-of-three reading of the bound, when no face was named."""
        return RULE_OF_THREE / self.faces if self.faces and self.named == 0 else None

    def within(self, target: float) -> bool:
        return self.faces > 0 and self.upper <= target


def nameable_scores(matcher: Matcher, impostors: np.ndarray) -> np.ndarray:
    """For each impostor face the rule can name at some threshold, the smallest rule threshold that names it;
    sorted.

    The rule names a face when its score is within its candidate's threshold and it passes the margin test. The
    margin test does not depend on the threshold, and a candidate's threshold is the rule's times a factor of
    the candidate (1, or the adaptive rule's per-person factor), so at rule threshold t the faces named are
    those whose value here (score / factor) is <= t.
    """
    if len(impostors) == 0 or not matcher.people:
        return np.zeros(0, np.float32)
    sc = matcher.scores(impostors)
    ok = sc.best >= 0
    if matcher.max_ratio is not None:
        ok &= sc.ratio / matcher.max_ratio <= 1.0  # exactly as Matcher.openness
    factor = matcher.threshold_of(sc) / matcher.threshold
    return np.sort((sc.s1 / factor)[ok].astype(np.float32))


def fpir_at(nameable: np.ndarray, faces: int, thresholds: np.ndarray | list[float]) -> list[Fpir]:
    """FPIR at each threshold from `nameable_scores` (compared in float32, as the matcher compares)."""
    t = np.asarray(thresholds, dtype=np.float64)
    named = np.searchsorted(nameable, t.astype(np.float32), side="right")
    upper = fpir_upper(named, faces)
    return [Fpir(float(a), int(k), faces, float(u)) for a, k, u in zip(t, named, upper, strict=True)]


def _below(limit: float, step: float = STEP) -> float:
    """The largest grid value strictly below `limit` (at least one step)."""
    t = math.floor(limit / step) * step
    if t >= limit:
        t -= step
    return round(max(t, step), 6)


def threshold_for_fpir(nameable: np.ndarray, faces: int, target: float) -> float | None:
    """The largest threshold (0.001 grid) whose FPIR upper bound is within `target`; None when the faces are too
    few to show the target even with none named."""
    if faces <= 0 or float(fpir_upper(0, faces)) > target:
        return None
    upper = fpir_upper(np.arange(len(nameable) + 1), faces)
    allowed = int(np.nonzero(upper <= target)[0].max())  # upper rises with the count named
    if allowed >= len(nameable):
        return MAX_DISTANCE
    return _below(float(nameable[allowed]))


# ---- probable duplicate identities ----

@dataclass(frozen=True)
class Duplicate:
    """Two enrolled people the rule confuses, or whose nearest samples look like one person."""

    first: str
    second: str
    #: Squared L2 of their nearest pair of samples.
    distance: float

    @property
    def message(self) -> str:
        return f"{self.first} and {self.second} look like one person ({self.distance:.3f}): merge or remove one"


def person_distances(snapshot: GallerySnapshot) -> tuple[list[str], np.ndarray]:
    """People with samples and the (P, P) squared L2 of each pair's nearest samples (inf on the diagonal)."""
    labels = np.asarray(snapshot.labels, dtype=np.int64)
    present = np.unique(labels)
    names = [snapshot.names[i] for i in present]
    if len(present) == 0:
        return names, np.zeros((0, 0))
    order = np.argsort(labels, kind="stable")
    vectors = np.asarray(snapshot.vectors, np.float32)[order]
    starts = np.searchsorted(labels[order], present)
    d = squared_l2(vectors, vectors).astype(np.float64)
    per = np.minimum.reduceat(np.minimum.reduceat(d, starts, axis=1), starts, axis=0)
    np.fill_diagonal(per, np.inf)
    return names, per


def without(snapshot: GallerySnapshot, name: str) -> GallerySnapshot:
    """The snapshot less `name`'s samples."""
    labels = np.asarray(snapshot.labels, dtype=np.int64)
    keep = labels != snapshot.names.index(name) if name in snapshot.names else np.ones(len(labels), bool)
    return GallerySnapshot(snapshot.names, labels[keep], np.asarray(snapshot.vectors)[keep],
                           snapshot.embedder_version, snapshot.change_counter)


def duplicate_people(snapshot: GallerySnapshot, rule: MatchRule, same_person: float | None = None) -> list[Duplicate]:
    """Pairs of people A, B (in gallery order) where the rule on the gallery without A names a sample of A as B
    (or the other way round), or whose nearest samples are within `same_person` (default: the rule's threshold);
    nearest first. The rule runs with knn here (an SVM would be refitted per person)."""
    names, per = person_distances(snapshot)
    limit = rule.threshold if same_person is None else same_person
    close = per <= limit
    knn = replace(rule, method="knn")
    labels = np.asarray(snapshot.labels, dtype=np.int64)
    vectors = np.asarray(snapshot.vectors, np.float32)
    if len(names) > 1:
        for a, person in enumerate(names):
            mine = vectors[labels == snapshot.names.index(person)]
            for result in knn.matcher(without(snapshot, person)).match(mine):
                if result.name is not None:
                    b = names.index(result.name)
                    close[a, b] = close[b, a] = True
    i, j = np.triu_indices(len(names), k=1)
    pick = close[i, j]
    found = [Duplicate(names[a], names[b], float(per[a, b])) for a, b in zip(i[pick], j[pick], strict=True)]
    return sorted(found, key=lambda dup: (dup.distance, dup.first, dup.second))


# ---- impostor photos ----

@dataclass(frozen=True)
class ImpostorFaces:
    """Embeddings of the largest face of each impostor photo, and the photos that gave none."""

    vectors: np.ndarray
    #: The photo of each embedding.
    sources: list[str]
    #: (photo, reason): unreadable files and photos without a face.
    skipped: list[tuple[str, str]]
    #: Image files looked at.
    images: int


def impostor_photos(directory: str | os.PathLike[str]) -> list[Path]:
    """Every image file under `directory` (recursively, sorted); ImageError when there is none."""
    from edged.vision.imageio import IMAGE_EXTENSIONS

    root = Path(directory)
    if not root.is_dir():
        raise ImageError(f"{root}: no such directory")
    found = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
    if not found:
        raise ImageError(f"{root}: directory holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return found


def embed_impostor_photos(embedder: Embedder, paths: list[Path],
                          progress: Callable[[int], None] | None = None) -> ImpostorFaces:
    """Detect and embed the largest face of each photo with `embedder` (the gallery's); unreadable files and
    photos without a face are skipped with the reason. `progress(done)` is called after each photo."""
    from edged.embed.faces import FacePipeline
    from edged.vision.imageio import load_image

    pipeline = FacePipeline(embedder)
    vectors: list[np.ndarray] = []
    sources: list[str] = []
    skipped: list[tuple[str, str]] = []
    for i, path in enumerate(paths):
        try:
            image = load_image(path)
        except EdgedError as exc:
            skipped.append((str(path), f"unreadable ({exc})"))
        else:
            boxes = pipeline.detect(image)
            if boxes:
                [face] = pipeline.process(image, [max(boxes, key=lambda b: b.area)])
                vectors.append(face.embedding)
                sources.append(str(path))
            else:
                skipped.append((str(path), "no face"))
        if progress:
            progress(i + 1)
    stacked = np.array(vectors, np.float32).reshape(-1, embedder.dim)
    return ImpostorFaces(stacked, sources, skipped, len(paths))


# ---- the service ----

@dataclass(frozen=True)
class PairCalibration:
    """Secondary: FAR/FRR of the gallery's own sample pairs (not a 1:N figure)."""

    pairs: PairDistances
    target_far: float
    #: The largest threshold whose pair FAR stays within `target_far` (what earlier versions suggested).
    threshold: float
    #: FAR/FRR on a 0.001 grid up to a little beyond every value of interest (for plots).
    curve: ErrorCurve
    #: FAR/FRR at [current, suggested, threshold].
    at: ErrorCurve
    eer_threshold: float
    eer: float

    @property
    def far_resolution(self) -> float:
        """The smallest FAR step the impostor pairs can measure."""
        return 1.0 / len(self.pairs.impostor)


@dataclass(frozen=True)
class Calibration:
    """FPIR of the configured rule on impostor faces, the suggested threshold and why, duplicates, pair FAR."""

    people: int
    samples: int
    current: float
    suggested: float
    target_fpir: float
    #: Impostor faces tried (rows of the `impostors` given to `calibrate`).
    impostor_faces: int
    #: FPIR at the current and at the suggested threshold.
    at_current: Fpir
    at_suggested: Fpir
    #: True when the impostor evidence shows FPIR <= target at the suggested threshold (its upper bound).
    supported: bool
    #: Why the suggestion is what it is, one line.
    reason: str
    #: Impostor faces needed to show the target with none of them named (3 / target).
    faces_needed: int
    duplicates: list[Duplicate]
    #: Thresholds of the table: 13 even steps plus the current and the suggested one (and the pair-FAR one).
    thresholds: np.ndarray
    #: FPIR at each of `thresholds`.
    table: list[Fpir]
    #: FPIR on a 0.001 grid (for plots).
    curve: list[Fpir]
    #: The rule measured (its threshold is `current`).
    rule: MatchRule
    #: Secondary pair-based figures; None when the gallery has no genuine or no impostor pair.
    pair: PairCalibration | None = None

    @property
    def more_faces_needed(self) -> int:
        """Impostor faces still missing before a looser threshold could be supported (0 when supported)."""
        return 0 if self.supported else max(0, self.faces_needed - self.impostor_faces)


def calibrate(snapshot: GallerySnapshot, rule: MatchRule, target_far: float = 0.001, *,
              target_fpir: float = 0.001, impostors: np.ndarray | None = None,
              same_person: float | None = None) -> Calibration:
    """FPIR of `rule` (`MatchRule.of` the config: the current threshold and match settings) on `impostors`, the
    threshold suggested for `target_fpir`, probable duplicate identities (`duplicate_people`, `same_person`:
    the embedder's 1:1 threshold, default the rule's), and the gallery's own pair FAR/FRR for `target_far`.

    `impostors` (F, D): embeddings (by the gallery's embedder) of faces of people known not to be enrolled:
    impostor photos (`embed_impostor_photos`) and the site's stored strangers (unknown visitors and the ignore
    list, `edged.gallery.unknowns.cohort`), stacked into one array. Without them nothing supports a looser
    threshold and the current one is kept.
    """
    if not 0.0 < target_fpir < 1.0:
        raise ValueError(f"target_fpir must be in (0, 1), got {target_fpir}")
    if not 0.0 < target_far < 1.0:
        raise ValueError(f"target_far must be in (0, 1), got {target_far}")
    current = rule.threshold
    people = len(np.unique(snapshot.labels))
    if people == 0:
        raise GalleryError("calibrate needs an enrolled person (the gallery is empty)")
    dim = np.asarray(snapshot.vectors).shape[1]
    faces = np.asarray(impostors if impostors is not None else np.zeros((0, dim)), np.float32).reshape(-1, dim)
    matcher = rule.matcher(snapshot)
    nameable = nameable_scores(matcher, faces)
    n = len(faces)
    [at_current] = fpir_at(nameable, n, [current])
    supported_t = threshold_for_fpir(nameable, n, target_fpir)
    needed = faces_needed(target_fpir)
    if supported_t is not None:
        suggested, supported = supported_t, True
        [at_suggested] = fpir_at(nameable, n, [suggested])
        bound = f"{at_suggested.named} of {n} impostor faces named, FPIR <= {at_suggested.upper:.4g} at 95%"
        if suggested > current:
            reason = f"looser than the current {current:.3f}, supported by the impostor evidence: {bound}"
        elif suggested < current:
            reason = (f"tighter: at the current {current:.3f}, {at_current.named} of {n} impostor faces are named, "
                      f"FPIR <= {at_current.upper:.4g} at 95%, above the target")
        else:
            reason = f"the current threshold: {bound}"
    else:
        supported = False
        more = needed - n
        short = (f"{n} impostor faces cannot show FPIR <= {target_fpir:g}; {more} more needed "
                 f"({needed} with none named)" if n else
                 f"no impostor faces (photos of people who are not enrolled, stored strangers); {needed} with none "
                 f"named would show FPIR <= {target_fpir:g}")
        if at_current.named:
            suggested = min(current, _below(float(nameable[0])))
            reason = (f"tighter: {at_current.named} of {n} impostor faces are named at the current {current:.3f}; "
                      f"the suggestion keeps them all out, but {short}")
        else:
            suggested = current
            reason = f"kept the current threshold: {short}"
        [at_suggested] = fpir_at(nameable, n, [suggested])
    pairs = pair_distances(snapshot.labels, snapshot.vectors)
    pair: PairCalibration | None = None
    interest = [current, suggested]
    if len(pairs.genuine) and len(pairs.impostor):
        far_t = threshold_for_far(pairs, target_far)
        interest.append(far_t)
        top = min(MAX_DISTANCE, max(float(pairs.genuine.max()), *interest) * 1.25)
        grid = np.round(np.arange(0.0, top + 1e-9, STEP), 6)
        curve = error_curve(pairs, grid)
        eer_t, eer = equal_error_rate(curve)
        at = error_curve(pairs, np.array([current, suggested, far_t]))
        pair = PairCalibration(pairs, target_far, far_t, curve, at, eer_t, eer)
    top = min(MAX_DISTANCE, max(*interest, float(nameable[0]) if len(nameable) else 0.0) * 1.25)
    if pair is not None:
        top = float(pair.curve.thresholds[-1])
    steps = np.array(sorted(set(np.round(np.linspace(0.0, top, 13), 3).tolist())
                            | {round(t, 3) for t in interest}))
    grid = np.round(np.arange(0.0, top + 1e-9, STEP), 6)
    return Calibration(people, len(snapshot.labels), current, suggested, target_fpir, n, at_current, at_suggested,
                       supported, reason, needed, duplicate_people(snapshot, rule, same_person), steps,
                       fpir_at(nameable, n, steps), fpir_at(nameable, n, grid), rule, pair)
