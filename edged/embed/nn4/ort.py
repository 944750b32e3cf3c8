"""nn4.small2 on ONNX Runtime (CPU): the `FastNN4` export of a loaded `NN4Small2`, cached per weights.

The export is made from the project's own torch module (`edged.embed.nn4_fast.export_onnx`) at first
use and cached in `<models dir>/cache/` under the weights' content hash (sha256 of the state dict)
and the export recipe version, written atomically with mode 0600. A cached file is never trusted
blindly: its metadata must name the same weights and recipe, ONNX Runtime must load it, and it must
reproduce the torch module's embeddings on probe faces (max abs difference <= `PROBE_TOLERANCE`);
otherwise it is rebuilt. How it runs: `edged.embed.ort_runner`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from edged.embed.nn4.fast import RECIPE_VERSION, export_onnx
from edged.embed.nn4.net import NN4Small2
from edged.embed.nn4.preprocess import IMG_DIM
from edged.embed.ort_runner import CACHE_SUBDIR, FACES_PER_RUN, INPUT_NAME, FasterOf, session_options
from edged.embed.ort_runner import OrtRunner as OrtNN4
from edged.errors import EdgedError
from edged.fileio import write_private_cache

#: The runner's names as nn4's code and tests use them.
__all__ = ["CACHE_SUBDIR", "FACES_PER_RUN", "INPUT_NAME", "FasterOf", "OrtNN4", "session_options"]

log = logging.getLogger(__name__)

#: Largest max-abs difference to the torch module accepted from an export on the probe faces.
PROBE_TOLERANCE = 1e-5
#: metadata_props keys of an export.
META_WEIGHTS = "edged.weights_sha256"
META_RECIPE = "edged.recipe"


class ExportCheckError(Exception):
    """An ONNX export does not reproduce the torch module (internal: triggers a rebuild or fallback)."""


def state_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the weights' names, dtypes, shapes and float32 values (the file format does not matter)."""
    sha = hashlib.sha256()
    for key in sorted(state_dict):
        value = state_dict[key].detach().cpu()
        if value.is_floating_point():
            value = value.float()
        sha.update(f"{key}|{value.dtype}|{tuple(value.shape)}\n".encode())
        sha.update(value.contiguous().numpy().tobytes())
    return sha.hexdigest()


def probe_faces(n: int = 3) -> np.ndarray:
    """Fixed pseudo-random uint8 faces (N, 96, 96, 3): a check of the arithmetic, not of recognition."""
    return np.random.default_rng(20240501).integers(0, 256, (n, IMG_DIM, IMG_DIM, 3), dtype=np.uint8)


def cache_path(cache_dir: Path, digest: str) -> Path:
    return cache_dir / f"nn4-{digest[:32]}.fast-r{RECIPE_VERSION}.onnx"


def made_from(runner: OrtNN4, digest: str) -> bool:
    """The model's metadata names the weights `digest` and this export recipe."""
    return runner.metadata.get(META_WEIGHTS) == digest and runner.metadata.get(META_RECIPE) == str(RECIPE_VERSION)


def check_export(runner: OrtNN4, module: NN4Small2, digest: str) -> float:
    """Max abs difference between the export and the torch module on the probe faces; raises if it is not them."""
    if not made_from(runner, digest):
        raise ExportCheckError(f"made from other weights or recipe ({runner.metadata.get(META_WEIGHTS, '?')[:12]}, "
                               f"recipe {runner.metadata.get(META_RECIPE, '?')})")
    faces = probe_faces()
    from edged.embed.nn4.preprocess import to_network_input

    with torch.inference_mode():
        expected = module(torch.from_numpy(to_network_input(faces))).numpy()
    singles = [runner.run_single(faces[:1], how) for how in runner.single.options]
    for got in (runner.run(faces), *singles):
        diff = float(np.abs(got - expected[:len(got)]).max())
        if not diff <= PROBE_TOLERANCE:
            raise ExportCheckError(f"differs from the torch module by {diff:.2e} (> {PROBE_TOLERANCE:g})")
    return diff


def fresh_export(module: NN4Small2, digest: str) -> bytes:
    """The `FastNN4` export of `module`, its metadata naming the weights `digest` and the recipe."""
    return export_onnx(module, metadata={META_WEIGHTS: digest, META_RECIPE: str(RECIPE_VERSION),
                                         "edged.torch": torch.__version__})


def _write_cache(path: Path, data: bytes) -> None:
    try:
        write_private_cache(path, data)  # every directory made here (models dir, cache dir) is private
        os.chmod(path.parent, 0o700)
        log.info("cached the nn4 ONNX export in %s", path)
    except (OSError, EdgedError) as exc:
        log.warning("cannot cache the nn4 ONNX export in %s (%s); it will be rebuilt next start",
                    path.parent, getattr(exc, "strerror", None) or exc)


def load_runner(module: NN4Small2, digest: str, cache_dir: Path | None, threads: int = 0) -> OrtNN4:
    """An `OrtNN4` for `module`: from the cache when it checks out, else exported now (and cached).

    Raises `ExportCheckError` when even a fresh export does not reproduce the module.
    """
    path = cache_path(cache_dir, digest) if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            runner = OrtNN4(path.read_bytes(), threads)
            check_export(runner, module, digest)
            log.debug("nn4 ONNX export from %s", path)
            return runner
        except Exception as exc:  # corrupt, truncated, foreign or stale: ORT raises several kinds
            log.warning("%s: cached nn4 export not usable (%s); rebuilding it", path, str(exc).splitlines()[0][:200])
    data = fresh_export(module, digest)
    runner = OrtNN4(data, threads)
    check_export(runner, module, digest)
    if path is not None:
        _write_cache(path, data)
    return runner
