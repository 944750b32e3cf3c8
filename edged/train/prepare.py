"""Building the distillation set from LFW (train people only) and unlabeled face folders.

Faces, landmarks and dlib teacher embeddings come from the shared face cache
(`edged.facecache`), which is filled for whatever is missing. Unlabeled images whose dlib
descriptor lies within `exclude_within` (squared L2 on dlib's own, un-normalised scale,
where dlib's same-person rule is < 0.36) of any image of an evaluation person are
dropped, so no evaluation identity leaks in through them. Raw distances are rebuilt
exactly from the cached unit vectors and raw norms: |a-b|^2 = |a|^2 + |b|^2 - 2|a||b|cos.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edged.embed.dlib_resnet import DlibResNetEmbedder
from edged.errors import EdgedError
from edged.eval.facecache import FaceCache, analyse
from edged.eval.split import lfw_people, lfw_split
from edged.train.data import CANVAS, align_canvas
from edged.train.distill import DistillSet
from edged.vision.imageio import IMAGE_EXTENSIONS, load_image

log = logging.getLogger(__name__)

TEACHER = DlibResNetEmbedder.version


@dataclass
class PrepareReport:
    lfw_train_people: int = 0
    lfw_eval_people: int = 0
    lfw_train_images: int = 0
    lfw_eval_images: int = 0
    extra_images: int = 0
    extra_dropped_near_eval: int = 0
    skipped_no_face: int = 0
    faces: int = 0
    exclude_within: float = 0.2
    notes: list[str] = field(default_factory=list)


def _raw_parts(cache: FaceCache, shas: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Unit dlib vectors and raw norms for `shas` (rows in the same order); missing rows are an error."""
    unit = cache.embeddings(shas, TEACHER, "plain")
    norm = cache.embeddings(shas, TEACHER, "norm")
    missing = sum(1 for s in shas if s not in unit or s not in norm)
    if missing:
        raise EdgedError(f"face cache {cache.path} lacks dlib embeddings or raw norms for {missing} images; "
                         "delete it and run 'edged train prepare' again")
    if not shas:
        return np.zeros((0, 128), np.float32), np.zeros(0, np.float32)
    return np.stack([unit[s] for s in shas]), np.array([norm[s][0] for s in shas], np.float32)


def raw_min_distance(unit_a: np.ndarray, norm_a: np.ndarray, unit_b: np.ndarray, norm_b: np.ndarray,
                     chunk: int = 2048) -> np.ndarray:
    """For each row of a: the smallest squared L2 to any row of b on dlib's raw scale (inf if b is empty)."""
    out = np.full(len(unit_a), np.inf, np.float32)
    if len(unit_b) == 0:
        return out
    for i in range(0, len(unit_a), chunk):
        cos = unit_a[i:i + chunk] @ unit_b.T
        na = norm_a[i:i + chunk, None]
        d = na * na + (norm_b * norm_b)[None, :] - 2.0 * na * norm_b[None, :] * cos
        out[i:i + chunk] = np.maximum(d, 0.0).min(axis=1)
    return out


def image_files(folder: str | Path) -> list[str]:
    return sorted(str(p) for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


def build_distill_set(cache: FaceCache, lfw_dir: str | Path, pairs: str | Path, extra_dirs: Sequence[str | Path] = (),
                      exclude_within: float = 0.2, workers: int | None = None,
                      progress: Callable[[str, int, int], None] | None = None) -> tuple[DistillSet, PrepareReport]:
    """All detected faces of LFW train people plus unlabeled faces not near any evaluation person."""
    report = PrepareReport(exclude_within=exclude_within)
    split = lfw_split(pairs, lfw_people(lfw_dir))
    report.lfw_train_people, report.lfw_eval_people = len(split.train_people), len(split.eval_people)
    lfw_train = [f for p in sorted(split.train_people) for f in image_files(Path(lfw_dir) / p)]
    lfw_eval = [f for p in sorted(split.eval_people) for f in image_files(Path(lfw_dir) / p)]
    extra = [f for d in extra_dirs for f in image_files(d)]
    report.lfw_train_images, report.lfw_eval_images, report.extra_images = len(lfw_train), len(lfw_eval), len(extra)

    def stage(name: str) -> Callable[[int, int], None] | None:
        return (lambda d, n: progress(name, d, n)) if progress else None

    sha_eval = analyse(cache, lfw_eval, ["dlib"], flip=False, workers=workers, progress=stage("lfw eval people"))
    sha_train = analyse(cache, lfw_train, ["dlib"], flip=True, workers=workers, progress=stage("lfw train people"))
    sha_extra = analyse(cache, extra, ["dlib"], flip=True, workers=workers, progress=stage("unlabeled"))

    eval_unit, eval_norm = _raw_parts(cache, list(sha_eval.values()))
    extra_unit, extra_norm = _raw_parts(cache, [sha_extra[p] for p in extra])
    near = raw_min_distance(extra_unit, extra_norm, eval_unit, eval_norm) < exclude_within
    report.extra_dropped_near_eval = int(near.sum())
    keep_extra = [p for p, drop in zip(extra, near, strict=True) if not drop]

    chosen = [(p, sha_train[p]) for p in lfw_train] + [(p, sha_extra[p]) for p in keep_extra]
    shas = [s for _, s in chosen]
    faces = cache.faces(shas)
    plain = cache.embeddings(shas, TEACHER, "plain")
    flip = cache.embeddings(shas, TEACHER, "flip")
    usable = [(p, s) for p, s in chosen if s in faces and faces[s].detected and s in plain and s in flip]
    report.skipped_no_face = len(chosen) - len(usable)
    seen: set[str] = set()
    usable = [(p, s) for p, s in usable if not (s in seen or seen.add(s))]  # type: ignore[func-returns-value]
    canvases = np.empty((len(usable), CANVAS, CANVAS, 3), np.uint8)
    for i, (path, sha) in enumerate(usable):
        canvases[i] = align_canvas(load_image(path), faces[sha].lm68)
        if progress and (i % 200 == 0 or i == len(usable) - 1):
            progress("aligning", i + 1, len(usable))
    report.faces = len(usable)
    data = DistillSet(canvases, np.stack([plain[s] for _, s in usable]), np.stack([flip[s] for _, s in usable]),
                      [p for p, _ in usable])
    return data, report
