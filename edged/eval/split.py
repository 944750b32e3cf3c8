"""The honest LFW split: people of View 2 folds 6-10 are never trained on (training and the open-set evaluation).

LFW View 2 folds are people-disjoint. Training may use every image of people who appear in
folds 1-5 and of LFW people who appear in no fold; evaluation uses folds 6-10.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edged.errors import EdgedError

#: Folds reserved for evaluating edged's own weights.
EVAL_FOLDS = frozenset(range(6, 11))


@dataclass(frozen=True)
class LfwSplit:
    train_people: frozenset[str]
    eval_people: frozenset[str]
    fold_of: dict[str, int]  # person -> fold (people outside every fold are absent)


def people_by_fold(pairs_path: str | os.PathLike[str]) -> dict[int, set[str]]:
    """People named in each View 2 fold of pairs.txt (folds numbered from 1)."""
    lines = Path(pairs_path).read_text().splitlines()
    try:
        n_folds, per_fold = (int(x) for x in lines[0].split())
    except (IndexError, ValueError) as exc:
        raise EdgedError(f"{pairs_path}: line 1 must be '<folds> <pairs per fold>'") from exc
    folds: dict[int, set[str]] = {}
    body = lines[1:]
    if len(body) < n_folds * 2 * per_fold:
        raise EdgedError(f"{pairs_path}: expected {n_folds * 2 * per_fold} pair lines, found {len(body)}")
    for f in range(n_folds):
        people: set[str] = set()
        for line in body[f * 2 * per_fold:(f + 1) * 2 * per_fold]:
            parts = line.split()
            if len(parts) == 3:
                people.add(parts[0])
            elif len(parts) == 4:
                people.update((parts[0], parts[2]))
            else:
                raise EdgedError(f"{pairs_path}: malformed pair line {line!r}")
        folds[f + 1] = people
    return folds


def lfw_split(pairs_path: str | os.PathLike[str], all_people: Iterable[str],
              eval_folds: Iterable[int] = EVAL_FOLDS) -> LfwSplit:
    """Train people = everyone in `all_people` except those of `eval_folds`."""
    folds = people_by_fold(pairs_path)
    held = set(eval_folds)
    fold_of = {p: f for f, people in folds.items() for p in people}
    eval_people = {p for f, people in folds.items() if f in held for p in people}
    train_people = {p for p in all_people if p not in eval_people}
    return LfwSplit(frozenset(train_people), frozenset(eval_people), fold_of)


def lfw_people(lfw_dir: str | os.PathLike[str]) -> list[str]:
    """Person folder names of an LFW image directory."""
    return sorted(p.name for p in Path(lfw_dir).iterdir() if p.is_dir())
