"""Embedders by name: `get_embedder("dlib")`, `get_embedder("nn4")`.

Models load lazily on first use and instances are shared per (name, options).
"""

from __future__ import annotations

import threading
from typing import Any

from edged.embed.base import Embedder

EMBEDDERS = ("dlib", "nn4")

_cache: dict[tuple[str, tuple[tuple[str, Any], ...]], Embedder] = {}
_lock = threading.Lock()


def get_embedder(name: str, **options: Any) -> Embedder:
    """The embedder called `name`; options go to its constructor (e.g. nn4 `weights`, `device`)."""
    if name not in EMBEDDERS:
        raise ValueError(f"unknown embedder {name!r} (choose from {', '.join(EMBEDDERS)})")
    key = (name, tuple(sorted((k, v) for k, v in options.items() if v is not None)))
    with _lock:
        if key not in _cache:
            if name == "dlib":
                from edged.embed.dlib_resnet import DlibResNetEmbedder

                _cache[key] = DlibResNetEmbedder()
            else:
                from edged.embed.nn4 import create_nn4_embedder

                _cache[key] = create_nn4_embedder(**dict(key[1]))
        return _cache[key]


__all__ = ["EMBEDDERS", "Embedder", "get_embedder"]
