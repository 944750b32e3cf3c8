"""Distillation: train nn4.small2 to reproduce dlib ResNet embeddings of the same faces.

Loss on unit vectors: mean squared L2 between student and teacher embeddings, plus a
relational term matching the two in-batch squared-L2 distance matrices (what recognition
uses is the distances between faces, so they are learned directly).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from edged.train.data import AugmentConfig, augment


@dataclass
class DistillSet:
    """Faces on margin canvases with teacher embeddings of the plain and mirrored face."""

    canvases: np.ndarray  # (N, CANVAS, CANVAS, 3) uint8
    teacher: np.ndarray  # (N, 128) float32 unit rows
    teacher_flip: np.ndarray  # (N, 128) float32 unit rows
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.canvases)

    def subset(self, idx: np.ndarray) -> DistillSet:
        return DistillSet(self.canvases[idx], self.teacher[idx], self.teacher_flip[idx],
                          [self.sources[i] for i in idx] if self.sources else [])

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, canvases=self.canvases, teacher=self.teacher, teacher_flip=self.teacher_flip,
                 sources=np.array(self.sources))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> DistillSet:
        with np.load(path) as z:
            return cls(z["canvases"], z["teacher"], z["teacher_flip"], [str(s) for s in z["sources"]])


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, relational: float) -> tuple[torch.Tensor, dict]:
    """(loss, parts): mean squared L2 to the teacher + relational * MSE of the in-batch distance matrices."""
    point = (student - teacher).pow(2).sum(1).mean()
    ds = torch.cdist(student, student).pow(2)
    dt = torch.cdist(teacher, teacher).pow(2)
    rel = (ds - dt).pow(2).mean()
    return point + relational * rel, {"point": float(point.detach()), "rel": float(rel.detach())}


def distill_batches(data: DistillSet, batch_size: int, aug: AugmentConfig,
                    rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of augmented (x NCHW float, teacher target) batches in random order."""
    order = rng.permutation(len(data))
    for start in range(0, len(order) - batch_size + 1, batch_size):
        idx = order[start:start + batch_size]
        views = np.empty((len(idx), 96, 96, 3), np.uint8)
        targets = np.empty((len(idx), data.teacher.shape[1]), np.float32)
        for j, i in enumerate(idx):
            views[j], flipped = augment(data.canvases[i], rng, aug)
            targets[j] = data.teacher_flip[i] if flipped else data.teacher[i]
        x = torch.from_numpy(views).permute(0, 3, 1, 2).float().div_(255.0)
        yield x.contiguous(memory_format=torch.channels_last), torch.from_numpy(targets)


def make_distill_loss(relational: float):
    def loss_fn(model, batch):
        x, target = batch
        return distill_loss(model(x), target, relational)

    return loss_fn
