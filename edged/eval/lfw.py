"""The LFW View 2 verification protocol on squared-L2 distances (as OpenFace's `evaluation/lfw.py`).

`pairs.txt` starts with `<folds>\\t<n>`, then per fold n matched lines `name\\tn1\\tn2` and n mismatched
lines `name1\\tn1\\tname2\\tn2`. For each held-out fold the threshold maximising accuracy on the other
*selected* folds is chosen and the held-out fold is scored with it (leave-one-fold-out). With a single
selected fold its pairs are split into 10 stratified parts and the same is done over the parts.

A pair is predicted "same person" when its distance is strictly below the threshold. Candidate
thresholds are the midpoints between consecutive distinct training distances (OpenFace scans
`arange(0, 4, 0.01)` and stops at the first drop, which can miss the maximum; the midpoints find it).
Pure computation: text and numpy arrays in, numbers out.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edged.errors import EdgedError

#: Parts a single selected fold is split into.
SINGLE_FOLD_PARTS = 10


class EvalError(EdgedError):
    """An evaluation input (pairs file, fold selection, data directory) is invalid."""


@dataclass(frozen=True)
class Pair:
    """One verification pair; `a` and `b` are image paths relative to the data directory."""

    fold: int  # 1-based
    same: bool
    a: str
    b: str
    line: int  # 1-based line number in the pairs file


@dataclass(frozen=True)
class UnitResult:
    """One held-out unit: a fold, or a part of the single selected fold."""

    fold: int
    part: int | None
    threshold: float
    accuracy: float
    pairs: int


@dataclass(frozen=True)
class Evaluation:
    folds: list[int]
    units: list[UnitResult]
    accuracy_mean: float
    accuracy_std: float
    auc: float
    threshold: float
    pairs: int


def image_path(name: str, number: int) -> str:
    """LFW's relative image path: `Name/Name_0001.jpg`."""
    return f"{name}/{name}_{number:04d}.jpg"


def parse_folds(spec: str, n_folds: int) -> list[int]:
    """`1-10`, `6-10`, `3`, `1,3,5` or `1-3,7` -> sorted distinct 1-based fold numbers within 1..n_folds."""
    folds: set[int] = set()
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise EvalError(f"--folds {spec!r}: expected fold numbers like 1-10, 6-10, 3 or 1,3,5")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if lo > hi:
            raise EvalError(f"--folds {spec!r}: range {lo}-{hi} is backwards")
        if lo < 1 or hi > n_folds:
            raise EvalError(f"--folds {spec!r}: folds are numbered 1 to {n_folds}")
        folds.update(range(lo, hi + 1))
    return sorted(folds)


def parse_header(first_line: str, source: str) -> tuple[int, int]:
    """(folds, pairs of each kind per fold) from the first line, e.g. `10\\t300`."""
    fields = first_line.split()
    if len(fields) != 2 or not all(f.isdigit() and int(f) > 0 for f in fields):
        raise EvalError(f"{source}:1: expected the View 2 header '<folds> <pairs per fold>' (e.g. '10\\t300'), "
                        f"got {first_line.strip()[:60]!r}")
    return int(fields[0]), int(fields[1])


def parse_pairs(text: str, source: str, folds: Sequence[int] | None = None) -> tuple[int, list[Pair]]:
    """(number of folds in the file, pairs of the selected folds); lines of other folds are not parsed."""
    lines = text.splitlines()
    if not lines:
        raise EvalError(f"{source}: empty pairs file")
    n_folds, n = parse_header(lines[0], source)
    wanted = list(range(1, n_folds + 1)) if folds is None else list(folds)
    for f in wanted:
        if not 1 <= f <= n_folds:
            raise EvalError(f"{source}: has {n_folds} folds, fold {f} does not exist")
    pairs: list[Pair] = []
    for fold in wanted:
        start = 1 + (fold - 1) * 2 * n  # index of the fold's first line
        for k in range(2 * n):
            idx = start + k
            if idx >= len(lines) or not lines[idx].strip():
                raise EvalError(f"{source}:{idx + 1}: missing line (fold {fold} needs {n} matched and "
                                f"{n} mismatched pairs after line {start})")
            pairs.append(_parse_line(lines[idx], source, idx + 1, fold, same=k < n))
    return n_folds, pairs


def _parse_line(line: str, source: str, lineno: int, fold: int, same: bool) -> Pair:
    fields = line.split()
    where = f"{source}:{lineno}"
    if same:
        if len(fields) != 3 or not (fields[1].isdigit() and fields[2].isdigit()):
            raise EvalError(f"{where}: expected a matched pair 'name n1 n2' (fold {fold}), got {line.strip()[:80]!r}")
        return Pair(fold, True, image_path(fields[0], int(fields[1])), image_path(fields[0], int(fields[2])), lineno)
    if len(fields) != 4 or not (fields[1].isdigit() and fields[3].isdigit()):
        raise EvalError(f"{where}: expected a mismatched pair 'name1 n1 name2 n2' (fold {fold}), "
                        f"got {line.strip()[:80]!r}")
    return Pair(fold, False, image_path(fields[0], int(fields[1])), image_path(fields[2], int(fields[3])), lineno)


def load_pairs(path: str | os.PathLike[str], folds_spec: str = "1-10") -> tuple[list[int], list[Pair]]:
    """Read a View 2 pairs file: (selected folds, their pairs)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EvalError(f"{p}: no such pairs file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"{p}: cannot read pairs file ({exc})") from exc
    if not text.strip():
        raise EvalError(f"{p}: empty pairs file")
    n_folds, _ = parse_header(text.split("\n", 1)[0], str(p))
    folds = parse_folds(folds_spec, n_folds)
    return folds, parse_pairs(text, str(p), folds)[1]


def held_out_units(fold_of: np.ndarray, same: np.ndarray,
                   folds: Sequence[int]) -> list[tuple[int, int | None, np.ndarray]]:
    """(fold, part, indices) of each held-out unit: each selected fold, or 10 stratified parts of a single one.

    A single fold's k-th matched pair and k-th mismatched pair go to part k mod 10, so every part
    holds both kinds (30 + 30 of LFW's 600 pairs).
    """
    if len(folds) >= 2:
        return [(f, None, np.flatnonzero(fold_of == f)) for f in folds]
    (fold,) = folds
    idx = np.flatnonzero(fold_of == fold)
    n_same = int(same[idx].sum())
    parts = min(SINGLE_FOLD_PARTS, n_same, len(idx) - n_same)
    if parts < 2:
        raise EvalError(f"fold {fold} has too few pairs to split (needs at least 2 matched and 2 mismatched)")
    part_of = np.empty(len(idx), dtype=int)
    for kind in (True, False):
        members = np.flatnonzero(same[idx] == kind)
        part_of[members] = np.arange(len(members)) % parts
    return [(fold, p + 1, idx[part_of == p]) for p in range(parts)]


def best_threshold(dist: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy of `dist < threshold` on these pairs.

    Candidates: below every distance, midpoints between consecutive distinct distances, above every
    distance. Ties go to the middle one of the best candidates.
    """
    dist = np.asarray(dist, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    if len(dist) == 0:
        raise ValueError("no pairs to choose a threshold from")
    order = np.argsort(dist, kind="stable")
    d, s = dist[order], same[order]
    n = len(d)
    # k = number of pairs predicted same (the k smallest distances), valid only between distinct values.
    tp = np.concatenate([[0], np.cumsum(s)])
    k = np.arange(n + 1)
    correct = tp + (np.count_nonzero(~s) - (k - tp))
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = d[1:] > d[:-1]
    candidates = np.flatnonzero(valid)
    best = candidates[correct[candidates] == correct[candidates].max()]
    kb = int(best[len(best) // 2])
    if kb == 0:
        threshold = float(d[0])
    elif kb == n:
        threshold = float(np.nextafter(d[-1], np.inf))
    else:
        threshold = float((d[kb - 1] + d[kb]) / 2.0)
    return threshold, float(correct[kb] / n)


def accuracy_at(dist: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Fraction of pairs classified right by `dist < threshold`."""
    return float(np.mean((np.asarray(dist) < threshold) == np.asarray(same, dtype=bool)))


def auc_score(dist: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC curve of `-dist` as the score for "same person"."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(same, dtype=bool), -np.asarray(dist, dtype=np.float64)))


def roc_points(dist: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) over all thresholds, from (0, 0) to (1, 1)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(np.asarray(same, dtype=bool), -np.asarray(dist, dtype=np.float64),
                            drop_intermediate=False)
    return fpr, tpr


def evaluate(dist: np.ndarray, same: np.ndarray, fold_of: np.ndarray, folds: Sequence[int]) -> Evaluation:
    """Leave-one-unit-out accuracy over the selected folds' pairs (arrays aligned per pair)."""
    dist = np.asarray(dist, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    fold_of = np.asarray(fold_of)
    selected = np.isin(fold_of, list(folds))
    if not selected.any():
        raise EvalError("no pairs in the selected folds")
    dist, same, fold_of = dist[selected], same[selected], fold_of[selected]
    if same.all() or not same.any():
        raise EvalError("the selected pairs need both matched and mismatched pairs")
    empty = [f for f in folds if not np.any(fold_of == f)]
    if empty:
        raise EvalError(f"no pairs in fold {empty[0]}")
    units = held_out_units(fold_of, same, folds)
    results = []
    for fold, part, test in units:
        train = np.ones(len(dist), dtype=bool)
        train[test] = False
        threshold, _ = best_threshold(dist[train], same[train])
        results.append(UnitResult(fold, part, threshold, accuracy_at(dist[test], same[test], threshold), len(test)))
    accs = np.array([r.accuracy for r in results])
    return Evaluation(folds=list(folds), units=results, accuracy_mean=float(accs.mean()),
                      accuracy_std=float(accs.std()), auc=auc_score(dist, same),
                      threshold=float(np.mean([r.threshold for r in results])), pairs=len(dist))


def roc_by_unit(dist: np.ndarray, same: np.ndarray, fold_of: np.ndarray,
                folds: Sequence[int]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, fpr, tpr) of each held-out unit (fold `3`, or part `3.1` of a single fold)."""
    dist = np.asarray(dist, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    fold_of = np.asarray(fold_of)
    curves = []
    for fold, part, idx in held_out_units(fold_of, same, folds):
        fpr, tpr = roc_points(dist[idx], same[idx])
        curves.append((str(fold) if part is None else f"{fold}.{part}", fpr, tpr))
    return curves


def tpr_at(fpr: np.ndarray, tpr: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The best true positive rate reachable at a false positive rate <= each grid value (step ROC)."""
    pos = np.searchsorted(np.asarray(fpr), np.asarray(grid), side="right") - 1
    return np.where(pos >= 0, np.asarray(tpr)[np.clip(pos, 0, None)], 0.0)
