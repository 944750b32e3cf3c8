"""Embedders: aligned faces in, 128-d unit vectors out (`base.Embedder`); dlib's ResNet and OpenFace's nn4.

Build one by name with `edged.models.embedders.get_embedder`, which finds nn4's weights in the model store.
"""

from __future__ import annotations

from edged.embed.base import Embedder

EMBEDDERS = ("dlib", "nn4")

__all__ = ["EMBEDDERS", "Embedder"]
