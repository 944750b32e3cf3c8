"""Labelled face folders (`folder/person/*.jpg`) for triplet fine-tuning."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edged.errors import EdgedError
from edged.eval.facecache import FaceCache, analyse
from edged.train.data import CANVAS, align_canvas
from edged.train.prepare import image_files
from edged.train.triplet import LabelledSet
from edged.vision.imageio import load_image


def load_labelled(cache: FaceCache, folder: str | Path, workers: int | None = None) -> LabelledSet:
    """Detected faces of every person sub-folder, aligned onto training canvases."""
    root = Path(folder)
    if not root.is_dir():
        raise EdgedError(f"{folder}: not a directory (expected folder/person/*.jpg)")
    people = sorted(p for p in root.iterdir() if p.is_dir())
    files = [(i, f) for i, person in enumerate(people) for f in image_files(person)]
    if not files:
        raise EdgedError(f"{folder}: no images in person sub-folders")
    sha_of = analyse(cache, [f for _, f in files], embedder_names=(), workers=workers)
    faces = cache.faces(sha_of.values())
    keep = [(i, f) for i, f in files if sha_of[f] in faces and faces[sha_of[f]].detected]
    canvases = np.empty((len(keep), CANVAS, CANVAS, 3), np.uint8)
    for j, (_, f) in enumerate(keep):
        canvases[j] = align_canvas(load_image(f), faces[sha_of[f]].lm68)
    labels = np.array([i for i, _ in keep], dtype=np.int64)
    return LabelledSet(canvases, labels, [p.name for p in people])
