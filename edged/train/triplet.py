"""Triplet fine-tuning (FaceNet / OpenFace): margin 0.2 on squared L2, semi-hard negatives.

Batches hold P people x K faces. For every anchor-positive pair of a batch, the negative
is a semi-hard one: farther from the anchor than the positive but within the margin
(d(a,p) < d(a,n) < d(a,p) + margin), the closest such; when none exists, the closest
negative that is still farther than the positive; pairs with neither are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from edged.train.data import AugmentConfig, augment

MARGIN = 0.2


@dataclass
class LabelledSet:
    canvases: np.ndarray  # (N, CANVAS, CANVAS, 3) uint8
    labels: np.ndarray  # (N,) int64
    names: list[str]  # label -> person name

    def __len__(self) -> int:
        return len(self.canvases)


def select_triplets(emb: torch.Tensor, labels: torch.Tensor, margin: float = MARGIN) -> torch.Tensor:
    """(T, 3) indices (anchor, positive, negative) chosen by semi-hard mining; pure, no gradients."""
    with torch.no_grad():
        d = torch.cdist(emb, emb).pow(2)
        same = labels[:, None] == labels[None, :]
        n = len(labels)
        eye = torch.eye(n, dtype=torch.bool, device=emb.device)
        triplets = []
        for a in range(n):
            positives = torch.nonzero(same[a] & ~eye[a]).flatten()
            negatives = torch.nonzero(~same[a]).flatten()
            if len(positives) == 0 or len(negatives) == 0:
                continue
            dn = d[a, negatives]
            for p in positives.tolist():
                dap = d[a, p]
                farther = dn > dap
                semi = farther & (dn < dap + margin)
                pool = semi if bool(semi.any()) else farther
                if not bool(pool.any()):
                    continue
                choice = negatives[pool][torch.argmin(dn[pool])]
                triplets.append((a, p, int(choice)))
        if not triplets:
            return torch.zeros((0, 3), dtype=torch.long)
        return torch.tensor(triplets, dtype=torch.long)


def triplet_loss(emb: torch.Tensor, triplets: torch.Tensor, margin: float = MARGIN) -> torch.Tensor:
    """Mean hinge max(0, d(a,p) - d(a,n) + margin) over the triplets (squared L2)."""
    if len(triplets) == 0:
        return emb.sum() * 0.0
    a, p, n = emb[triplets[:, 0]], emb[triplets[:, 1]], emb[triplets[:, 2]]
    dap = (a - p).pow(2).sum(1)
    dan = (a - n).pow(2).sum(1)
    return torch.relu(dap - dan + margin).mean()


def pk_batches(data: LabelledSet, people: int, per_person: int, aug: AugmentConfig,
               rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of P x K batches (people with at least two faces), augmented."""
    by_label: dict[int, np.ndarray] = {}
    for label in np.unique(data.labels):
        idx = np.flatnonzero(data.labels == label)
        if len(idx) >= 2:
            by_label[int(label)] = idx
    labels = np.array(sorted(by_label))
    if len(labels) < 2:
        raise ValueError("triplet training needs at least two people with two or more faces each")
    order = rng.permutation(labels)
    people = min(people, len(order))
    for start in range(0, len(order) - people + 1, people):
        chosen = []
        for label in order[start:start + people]:
            idx = by_label[int(label)]
            chosen.extend(rng.choice(idx, size=min(per_person, len(idx)), replace=False))
        views = np.stack([augment(data.canvases[i], rng, aug)[0] for i in chosen])
        x = torch.from_numpy(views).permute(0, 3, 1, 2).float().div_(255.0)
        yield x.contiguous(memory_format=torch.channels_last), torch.from_numpy(data.labels[chosen])


def make_triplet_loss(margin: float = MARGIN):
    def loss_fn(model, batch):
        x, labels = batch
        emb = model(x)
        triplets = select_triplets(emb.detach(), labels, margin)
        loss = triplet_loss(emb, triplets, margin)
        return loss, {"triplets": float(len(triplets))}

    return loss_fn
