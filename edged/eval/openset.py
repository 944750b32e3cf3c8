"""Open-set identification that models a door: who is enrolled, and how often a stranger gets a name.

LFW (deep-funneled) with every face from the face cache:

* **enrolled people**: N people drawn from those with at least `min_images` faces; k of each one's faces are
  enrolled (a gallery like `edged enroll` makes), the rest are their probes (*genuine* probes);
* **strangers**: every face of every person not enrolled (LFW's thousands of one-image people and the
  enrolled-eligible people not drawn) — the people who come to a door and must never get a name;
* optionally a **cohort**: the faces of `cohort_people` other non-enrolled people play the impostor faces a
  site already knows (stored unknown visitors, the ignore list); they are then not counted as strangers.

Measures, for the decision rule of `edged.gallery.match.Matcher` (the code the daemon and `identify` run):

* FPIR (false positive identification rate): the share of stranger faces that get any name;
* DIR (detection and identification rate): the share of genuine probes named correctly;
* DIR at FPIR 1e-2 / 1e-3 / 1e-4, by scaling the whole rule (`openness <= lambda`), lambda chosen on the
  strangers' own scores; and FPIR / DIR at the configured rule (lambda = 1).

Several random draws per gallery size (seeded) are averaged: at N = 10 one unlucky draw (a person in a
crowded region of the embedding) moves the numbers a lot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edged.errors import EdgedError
from edged.gallery.match import MatchRule
from edged.gallery.store import GallerySnapshot

log = logging.getLogger(__name__)

FPIR_TARGETS = (1e-2, 1e-3, 1e-4)
#: Percentiles of the strangers' nearest-person scores reported.
STRANGER_PERCENTILES = (0.01, 0.1, 1.0, 5.0, 50.0)


class OpenSetError(EdgedError):
    """The open-set evaluation cannot run on these inputs."""


@dataclass(frozen=True)
class LabelledFaces:
    """One embedding per detected face, with who it is."""

    vectors: np.ndarray
    #: Person index per face (into `names`).
    person: np.ndarray
    names: list[str]
    paths: list[str]
    #: What enrollment would store for each face (e.g. mirror-averaged, `enroll.mirror`); None = `vectors`.
    enroll_vectors: np.ndarray | None = None


@dataclass(frozen=True)
class Protocol:
    """Which galleries are drawn."""

    sizes: tuple[int, ...] = (10, 100, 0)  # 0 = every eligible person
    ks: tuple[int, ...] = (1, 2, 3)
    #: Random draws per gallery size (a size not listed gets one).
    draws: dict[int, int] = field(default_factory=lambda: {10: 10, 100: 5})
    min_images: int = 4
    cohort_people: int = 0
    seed: int = 0


@dataclass(frozen=True)
class Trial:
    """One drawn gallery and its probes."""

    snapshot: GallerySnapshot
    genuine: np.ndarray  # face indices
    truth: list[str]  # the person of each genuine probe
    strangers: np.ndarray  # face indices
    cohort: np.ndarray | None  # vectors


@dataclass(frozen=True)
class TrialScores:
    """The rule's openness for every probe (named iff openness <= lambda), and whether the candidate was right."""

    genuine_open: np.ndarray
    genuine_correct: np.ndarray
    stranger_open: np.ndarray
    stranger_s1: np.ndarray


def eligible_people(faces: LabelledFaces, min_images: int, among: set[str] | None = None) -> np.ndarray:
    counts = np.bincount(faces.person, minlength=len(faces.names))
    ok = counts >= min_images
    if among is not None:
        ok &= np.array([n in among for n in faces.names])
    return np.flatnonzero(ok)


def draw_trial(faces: LabelledFaces, people: np.ndarray, n: int, k: int, cohort_people: int,
               rng: np.random.Generator, pool: np.ndarray | None = None) -> Trial:
    """N enrolled people (k faces each), their other faces as probes, everyone else in `pool` a stranger."""
    chosen = rng.choice(people, size=min(n, len(people)) if n else len(people), replace=False)
    chosen_set = set(chosen.tolist())
    in_pool = np.ones(len(faces.person), bool) if pool is None else np.isin(faces.person, pool)
    others = np.unique(faces.person[in_pool & ~np.isin(faces.person, chosen)])
    cohort_of = (rng.choice(others, size=min(cohort_people, len(others)), replace=False)
                 if cohort_people else np.zeros(0, int))
    enrolled, genuine = [], []
    for p in chosen:
        idx = rng.permutation(np.flatnonzero(faces.person == p))
        enrolled.extend(idx[:k])
        genuine.extend(idx[k:])
    enrolled_idx = np.array(enrolled, int)
    genuine_idx = np.array(genuine, int)
    labels_of = {p: i for i, p in enumerate(sorted(chosen_set))}
    snapshot = GallerySnapshot([faces.names[p] for p in sorted(chosen_set)],
                               np.array([labels_of[faces.person[i]] for i in enrolled_idx], np.int64),
                               (faces.vectors if faces.enroll_vectors is None else faces.enroll_vectors)[enrolled_idx],
                               "eval", 0)
    is_cohort = np.isin(faces.person, cohort_of)
    strangers = np.flatnonzero(in_pool & ~np.isin(faces.person, chosen) & ~is_cohort)
    cohort = faces.vectors[is_cohort] if cohort_people else None
    return Trial(snapshot, genuine_idx, [faces.names[faces.person[i]] for i in genuine_idx], strangers, cohort)


def score_trial(faces: LabelledFaces, trial: Trial, rule: MatchRule) -> TrialScores:
    matcher = rule.matcher(trial.snapshot, trial.cohort)
    people = np.array(matcher.people)
    gen = matcher.scores(faces.vectors[trial.genuine])
    stra = matcher.scores(faces.vectors[trial.strangers])
    correct = people[gen.best] == np.array(trial.truth)
    return TrialScores(matcher.openness(gen), correct, matcher.openness(stra), stra.s1)


def lambda_at_fpir(stranger_open: np.ndarray, target: float) -> float:
    """The largest rule scale lambda at which at most floor(target * n) strangers are named."""
    ordered = np.sort(stranger_open)
    allowed = int(np.floor(target * len(ordered) + 1e-9))
    if allowed >= len(ordered):
        return float("inf")
    limit = float(ordered[allowed])
    return float(np.nextafter(limit, -np.inf))  # named iff openness <= lambda < the (allowed+1)-th stranger


def dir_at(scores: TrialScores, lam: float) -> float:
    named = (scores.genuine_open <= lam) & scores.genuine_correct
    return float(named.mean()) if len(named) else 0.0


def fpir_at(scores: TrialScores, lam: float) -> float:
    return float((scores.stranger_open <= lam).mean()) if len(scores.stranger_open) else 0.0


def curve(trials: Sequence[TrialScores], points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Mean DIR over trials at FPIR targets on a log grid from 1e-5 to 1."""
    fpirs = np.logspace(-5, 0, points)
    dirs = np.array([np.mean([dir_at(t, lambda_at_fpir(t.stranger_open, f)) for t in trials]) for f in fpirs])
    return fpirs, dirs


def summarize(trials: Sequence[TrialScores], targets: Sequence[float] = FPIR_TARGETS) -> dict[str, Any]:
    """DIR at each FPIR target, FPIR and DIR at the configured rule, and the strangers' nearest scores."""
    at_targets = {}
    for target in targets:
        values = [dir_at(t, lambda_at_fpir(t.stranger_open, target)) for t in trials]
        feasible = [t for t in trials if len(t.stranger_open) * target >= 1]
        at_targets[f"{target:g}"] = {"dir": round(float(np.mean(values)), 4),
                                     "dir_min": round(float(np.min(values)), 4),
                                     "resolved": len(feasible) == len(trials)}
    s1 = np.concatenate([t.stranger_s1 for t in trials])
    return {
        "dir_at_fpir": at_targets,
        "configured": {"fpir": float(np.mean([fpir_at(t, 1.0) for t in trials])),
                       "fpir_max": float(np.max([fpir_at(t, 1.0) for t in trials])),
                       "dir": round(float(np.mean([dir_at(t, 1.0) for t in trials])), 4),
                       "strangers_named": int(sum((t.stranger_open <= 1.0).sum() for t in trials)),
                       "strangers": int(sum(len(t.stranger_open) for t in trials))},
        "nearest_stranger_score": {f"p{p:g}": round(float(np.percentile(s1, p)), 4) for p in STRANGER_PERCENTILES},
        "trials": len(trials),
        "genuine_probes": int(np.mean([len(t.genuine_open) for t in trials])),
        "strangers": int(np.mean([len(t.stranger_open) for t in trials])),
    }


def evaluate_openset(faces: LabelledFaces, rules: dict[str, MatchRule], protocol: Protocol,
                     among: set[str] | None = None,
                     progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Every (gallery size, k) of the protocol for every rule; the same draws for every rule.

    `among`: restrict enrolled people *and* strangers to these people (nn4: people outside its training pool).
    """
    pool = None if among is None else np.array([i for i, n in enumerate(faces.names) if n in among])
    people = eligible_people(faces, protocol.min_images, among)
    if len(people) < 2:
        raise OpenSetError(f"only {len(people)} people have >= {protocol.min_images} faces; need at least 2")
    runs = [(n, k) for n in protocol.sizes for k in protocol.ks]
    total = sum(protocol.draws.get(n, 1) for n, _ in runs)
    done = 0
    results: list[dict[str, Any]] = []
    curves: dict[str, dict[str, list[float]]] = {}
    for n, k in runs:
        if n and n > len(people):
            continue
        rng = np.random.default_rng([protocol.seed, n, k])
        per_rule: dict[str, list[TrialScores]] = {name: [] for name in rules}
        for _ in range(protocol.draws.get(n, 1)):
            trial = draw_trial(faces, people, n, k, protocol.cohort_people, rng, pool)
            for name, rule in rules.items():
                per_rule[name].append(score_trial(faces, trial, rule))
            done += 1
            if progress:
                progress(done, total)
        size = n or len(people)
        for name, trials in per_rule.items():
            results.append({"rule": name, "gallery_size": size, "enrolled_per_person": k, **summarize(trials)})
            fpirs, dirs = curve(trials, 60)
            curves[f"{name} N={size} k={k}"] = {"fpir": fpirs.tolist(), "dir": dirs.round(4).tolist()}
    return {"eligible_people": len(people), "faces": int(len(faces.vectors) if pool is None
                                                              else np.isin(faces.person, pool).sum()),
            "rules": {name: rule.describe() for name, rule in rules.items()},
            "protocol": {"sizes": list(protocol.sizes), "enrolled_per_person": list(protocol.ks),
                         "draws": {str(k): v for k, v in protocol.draws.items()}, "min_images": protocol.min_images,
                         "cohort_people": protocol.cohort_people, "seed": protocol.seed},
            "results": results, "curves": curves}


def labelled_faces(paths: Sequence[str], vectors: dict[str, np.ndarray], detected: dict[str, bool],
                   root: Path) -> LabelledFaces:
    """Faces found by the detector (centred fallbacks are not faces a camera would report), named by folder."""
    kept = [p for p in paths if p in vectors and detected.get(p, False)]
    if not kept:
        raise OpenSetError(f"{root}: no faces found")
    person_names = [Path(p).parent.name for p in kept]
    names = sorted(set(person_names))
    index = {n: i for i, n in enumerate(names)}
    return LabelledFaces(np.stack([vectors[p] for p in kept]).astype(np.float32),
                         np.array([index[n] for n in person_names], np.int64), names, kept)
