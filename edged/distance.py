"""Distances between embeddings, defined once: squared L2 between unit vectors (0 = same, 4 = opposite)."""

from __future__ import annotations

import numpy as np

#: Embedding dimension of every embedder.
EMBEDDING_DIM = 128
#: The largest squared L2 between unit vectors (also reported against an empty gallery).
MAX_DISTANCE = 4.0
#: Epsilon of L2 normalisation.
L2_EPS = 1e-10


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.sqrt(np.sum(x * x, axis=-1, keepdims=True))
    return x / np.maximum(norms, np.float32(L2_EPS))


def squared_l2(a: np.ndarray, b: np.ndarray, b_sq_norms: np.ndarray | None = None) -> np.ndarray:
    """Pairwise squared L2 distances between rows of `a` (N,D) and `b` (M,D) -> (N,M), clipped to >= 0.

    `b_sq_norms` (M,): the rows' squared norms when the caller keeps them (a gallery matched many times).
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    bb = (b * b).sum(1) if b_sq_norms is None else b_sq_norms
    d = (a * a).sum(1)[:, None] + bb[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)
