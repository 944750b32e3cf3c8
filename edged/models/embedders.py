"""Embedders by name, with their weights found in the model store: `get_embedder("dlib")`, `get_embedder("nn4")`.

Models load lazily on first use and instances are shared per (name, options).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from edged.config import Config
from edged.embed import EMBEDDERS
from edged.embed.base import Embedder

if TYPE_CHECKING:
    from edged.embed.nn4.embedder import NN4Embedder

_cache: dict[tuple[str, tuple[tuple[str, Any], ...]], Embedder] = {}
_lock = threading.Lock()


def create_nn4_embedder(weights: str | None = None, device: str = "auto", threads: int = 0,
                        models_dir: str | None = None, backend: str = "auto") -> NN4Embedder:
    """The nn4 embedder for `weights` (registry name, file path, or None = best installed).

    The onnxruntime backend caches its exports in `<models dir>/cache/`. torch loads only here, so a dlib
    daemon never carries it.
    """
    from edged.embed.nn4.embedder import NN4Embedder
    from edged.embed.nn4.ort import CACHE_SUBDIR
    from edged.models import store
    from edged.models.registry import load_registry

    registry = load_registry()
    directory = store.models_dir(models_dir)
    model = store.resolve(weights, directory, registry)
    return NN4Embedder(lambda: store.load_model(model, registry), model.path, device=device, threads=threads,
                       backend=backend, cache_dir=directory / CACHE_SUBDIR)


def create_dlib_embedder(backend: str = "auto", threads: int = 0, models_dir: str | None = None) -> Embedder:
    """dlib's ResNet; its ONNX Runtime export is cached in `<models dir>/cache/`."""
    from edged.embed.dlib_resnet import DlibResNetEmbedder
    from edged.embed.ort_runner import CACHE_SUBDIR
    from edged.models import store

    return DlibResNetEmbedder(backend, threads, store.models_dir(models_dir) / CACHE_SUBDIR)


def get_embedder(name: str, **options: Any) -> Embedder:
    """The embedder called `name`; options go to its constructor (e.g. nn4 `weights`, `device`)."""
    if name not in EMBEDDERS:
        raise ValueError(f"unknown embedder {name!r} (choose from {', '.join(EMBEDDERS)})")
    key = (name, tuple(sorted((k, v) for k, v in options.items() if v is not None)))
    with _lock:
        if key not in _cache:
            if name == "dlib":
                _cache[key] = create_dlib_embedder(**dict(key[1]))
            else:
                _cache[key] = create_nn4_embedder(**dict(key[1]))
        return _cache[key]


def embedder_from_config(cfg: Config, name: str | None = None) -> Embedder:
    """The embedder `name` (default: the config's `embedder.name`) with the config's options."""
    from edged.models import store

    e = cfg.embedder
    chosen = name or e.name
    backend = e.backend if e.name == chosen else "auto"  # the configured backend is the configured embedder's
    models = str(store.models_dir(cfg.models.dir))
    if chosen == "nn4":
        return get_embedder("nn4", weights=e.weights, device=e.device, threads=e.threads, backend=backend,
                            models_dir=models)
    return get_embedder(chosen, backend=backend, threads=e.threads, models_dir=models)
