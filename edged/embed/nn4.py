"""OpenFace nn4.small2 embedder (network and weight loaders: see issue 3)."""

from __future__ import annotations

from typing import Any

from edged.embed.base import Embedder
from edged.errors import ModelNotInstalledError


def create_nn4_embedder(**options: Any) -> Embedder:
    raise ModelNotInstalledError(
        "no nn4 weights installed: run 'edged models fetch nn4.small2.v1' (needs internet) "
        "or 'edged models import FILE' with nn4.small2.v1.t7/.pt"
    )
