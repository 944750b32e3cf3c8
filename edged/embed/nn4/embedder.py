"""OpenFace nn4.small2 embedder: aligned 96x96 RGB faces -> 128-d unit vectors.

The model store (`edged.models.embedders.create_nn4_embedder`) finds the weights (a registry name, a file
path, or the best installed nn4 model) and hands over a loader; construction only picks the device and
backend, and the weights load on first use, once (the loader checks checksums and every layer).

Backends (`embedder.backend`): `torch` runs the network as defined (`NN4Small2`, eager; CUDA or
CPU); `onnxruntime` runs its exact inference rewrite `FastNN4` exported to ONNX
(`edged.embed.nn4_ort`, CPU only, several times faster there); `auto` picks onnxruntime on the
CPU when it is installed, torch otherwise (and always on CUDA).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from edged.embed.base import Embedder, OpenSetDefaults, as_batch
from edged.embed.nn4.net import NN4Small2
from edged.embed.nn4.ort import OrtNN4
from edged.embed.nn4.preprocess import to_network_input
from edged.embed.nn4.weights import LoadedWeights, ModelIdentity, load_nn4
from edged.errors import ConfigError
from edged.vision.align import OPENFACE_96

log = logging.getLogger(__name__)

#: Faces per forward pass.
BATCH_SIZE = 64

BACKENDS = ("auto", "torch", "onnxruntime", "onnxruntime-int8")

__all__ = ["BACKENDS", "NN4Embedder", "WeightsLoader", "load_nn4", "pick_backend", "pick_device"]

#: Loads the weights (checked) and says what they are; called once, on first use.
WeightsLoader = Callable[[], tuple[LoadedWeights, ModelIdentity]]


def pick_device(device: str = "auto") -> torch.device:
    """'auto' = CUDA when available, else CPU; 'cuda' without a usable GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("embedder.device: 'cuda' requested but no CUDA device is available "
                              f"(torch {torch.__version__}); use 'auto' or 'cpu'")
        return torch.device("cuda")
    raise ConfigError(f"embedder.device: must be auto, cpu or cuda, got {device!r}")


def _onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def pick_backend(backend: str, device: str) -> tuple[str, torch.device]:
    """(backend, torch device) for the configured values: onnxruntime is CPU-only; auto prefers it on the CPU."""
    if backend not in BACKENDS:
        raise ConfigError(f"embedder.backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend in ("onnxruntime", "onnxruntime-int8"):
        if device == "cuda":
            raise ConfigError(f"embedder.backend: {backend} runs nn4 on the CPU only; use device cpu or auto, "
                              "or backend torch for CUDA")
        if not _onnxruntime_available():
            raise ConfigError(f"embedder.backend: {backend} needs onnxruntime, which is not installed "
                              "(pip install onnxruntime); use backend torch or auto")
        return backend, torch.device("cpu")
    chosen = pick_device(device)
    if backend == "auto" and chosen.type == "cpu" and _onnxruntime_available():
        return "onnxruntime", chosen
    return "torch", chosen


class NN4Embedder(Embedder):
    """nn4.small2 with weights from one installed model file."""

    name = "nn4"
    alignment = OPENFACE_96

    def __init__(self, loader: WeightsLoader, weights_path: Path, device: str = "auto", threads: int = 0,
                 batch_size: int = BATCH_SIZE, backend: str = "auto", cache_dir: Path | None = None) -> None:
        """`cache_dir`: where the onnxruntime backend caches its exports (None: export at every start)."""
        self._loader = loader
        self.weights_path = weights_path
        self._backend, self.device = pick_backend(backend, device)
        self.threads = threads
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self._module: NN4Small2 | None = None
        self._identity: ModelIdentity | None = None
        self._ort: OrtNN4 | None = None
        self._lock = threading.Lock()

    def _load(self) -> tuple[NN4Small2, ModelIdentity]:
        with self._lock:
            if self._module is None or self._identity is None:
                if self.threads > 0:
                    torch.set_num_threads(self.threads)
                weights, identity = self._loader()
                module = NN4Small2()
                module.load_state_dict(weights.state_dict, strict=False)
                self._module = module.to(self.device).eval()
                self._identity = identity
                log.info("nn4 weights %s loaded from %s on %s", identity.version, self.weights_path, self.device)
            return self._module, self._identity

    def _onnxruntime(self) -> OrtNN4 | None:
        """The ONNX Runtime runner, made on first use (None on the torch backend)."""
        if self._backend == "onnxruntime-int8":
            return self._int8()
        if self._backend != "onnxruntime":
            return None
        module = self.module()
        with self._lock:
            if self._ort is None and self._backend == "onnxruntime":
                from edged.embed.nn4.ort import ExportCheckError, load_runner, state_digest

                try:
                    self._ort = load_runner(module, state_digest(module.state_dict()), self.cache_dir, self.threads)
                    log.info("nn4 runs on onnxruntime (%d threads)", self._ort.threads)
                except ExportCheckError as exc:  # would be a bug in the rewrite: stay correct, just slower
                    log.error("nn4 ONNX export of %s %s; using the torch backend", self.weights_path, exc)
                    self._backend = "torch"
            return self._ort

    def _int8(self) -> OrtNN4:
        """The int8 runner (`<weights stem>.int8.onnx`, made by `edged train quantize`); raises QuantizeError
        when the file is missing or made from other weights (no silent fallback: the user chose int8)."""
        module = self.module()
        with self._lock:
            if self._ort is None:
                from edged.embed.nn4.ort import state_digest
                from edged.embed.nn4.quantize import int8_path, load_int8_runner

                path = int8_path(self.weights_path)
                self._ort = load_int8_runner(path, state_digest(module.state_dict()), self.threads)
                log.info("nn4 runs int8 on onnxruntime (%s, %d threads)", path.name, self._ort.threads)
            return self._ort

    @property
    def cache_version(self) -> str:
        """The face cache's key for these embeddings: int8 ones are kept apart from fp32 ones."""
        return self.version + ("+int8" if self._backend == "onnxruntime-int8" else "")

    @property
    def backend(self) -> str:
        """The backend in use: 'onnxruntime', 'onnxruntime-int8' or 'torch' (settled at the first embed())."""
        return self._backend

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "backend": self.backend, "device": str(self.device)}

    @property
    def version(self) -> str:  # type: ignore[override]
        return self._load()[1].version

    @property
    def threshold(self) -> float:  # type: ignore[override]
        return self._load()[1].threshold

    @property
    def open_set(self) -> OpenSetDefaults:
        identity = self._load()[1]
        if identity.open_set_threshold is None:
            return super().open_set
        return OpenSetDefaults(identity.open_set_threshold, identity.open_set_max_ratio)

    def module(self) -> NN4Small2:
        """The loaded network (eval mode, on `self.device`)."""
        return self._load()[0]

    def embed(self, faces: np.ndarray | list[np.ndarray]) -> np.ndarray:
        batch = as_batch(faces, self.alignment.size)
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        runner = self._onnxruntime()
        if runner is not None:
            return np.concatenate([runner.run(batch[start:start + self.batch_size])
                                   for start in range(0, len(batch), self.batch_size)])
        module = self.module()
        out = []
        with torch.inference_mode():
            for start in range(0, len(batch), self.batch_size):
                x = torch.from_numpy(to_network_input(batch[start:start + self.batch_size])).to(self.device)
                out.append(module(x).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)
