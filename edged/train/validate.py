"""LFW verification of a model in training, from cached landmarks (no detection, no dlib)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edged.embed.nn4.preprocess import to_network_input
from edged.eval.facecache import FaceCache, analyse
from edged.eval.lfw import Evaluation, evaluate, load_pairs
from edged.vision.align import align_openface
from edged.vision.imageio import load_image


@dataclass
class LfwProbe:
    """Aligned faces of the selected LFW pairs, ready to embed again and again."""

    faces: np.ndarray  # (M, 96, 96, 3) uint8, one per distinct image
    index_a: np.ndarray  # (P,) into faces
    index_b: np.ndarray
    same: np.ndarray
    fold_of: np.ndarray
    folds: list[int]

    @classmethod
    def build(cls, cache: FaceCache, lfw_dir: str | Path, pairs: str | Path, folds: str,
              workers: int | None = None) -> LfwProbe:
        chosen, pair_list = load_pairs(pairs, folds)
        paths = sorted({str(Path(lfw_dir) / p.a) for p in pair_list} | {str(Path(lfw_dir) / p.b) for p in pair_list})
        sha_of = analyse(cache, paths, embedder_names=(), workers=workers)
        records = cache.faces(sha_of.values())
        slot = {path: i for i, path in enumerate(paths)}
        faces = np.stack([align_openface(load_image(p), records[sha_of[p]].lm68) for p in paths])
        return cls(faces,
                   np.array([slot[str(Path(lfw_dir) / p.a)] for p in pair_list]),
                   np.array([slot[str(Path(lfw_dir) / p.b)] for p in pair_list]),
                   np.array([p.same for p in pair_list]), np.array([p.fold for p in pair_list]), chosen)

    def embed(self, model: torch.nn.Module, batch: int = 256) -> np.ndarray:
        model.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(self.faces), batch):
                out.append(model(torch.from_numpy(to_network_input(self.faces[i:i + batch]))).numpy())
        return np.concatenate(out)

    def evaluate(self, model: torch.nn.Module) -> Evaluation:
        emb = self.embed(model)
        dist = np.einsum("ij,ij->i", emb[self.index_a] - emb[self.index_b], emb[self.index_a] - emb[self.index_b])
        return evaluate(dist, self.same, self.fold_of, self.folds)

