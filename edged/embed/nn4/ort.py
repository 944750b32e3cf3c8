"""nn4.small2 on ONNX Runtime (CPU): the `FastNN4` export of a loaded `NN4Small2`, cached per weights.

The export is made from the project's own torch module (`edged.embed.nn4_fast.export_onnx`) at first
use and cached in `<models dir>/cache/` under the weights' content hash (sha256 of the state dict)
and the export recipe version, written atomically with mode 0600. A cached file is never trusted
blindly: its metadata must name the same weights and recipe, ONNX Runtime must load it, and it must
reproduce the torch module's embeddings on probe faces (max abs difference <= `PROBE_TOLERANCE`);
otherwise it is rebuilt.

Running: a single face runs either on a session using all cores (spinning threads only inside a
run, so no core is burnt between frames) or on the single-threaded session in the calling thread,
whichever has been faster lately (`FasterOf`: a second core that is busy elsewhere makes the
one-thread run win, an idle one the all-cores run; the other is retried every few calls).
Larger batches are cut into chunks (at least one per core, at most `FACES_PER_RUN` faces each) run
concurrently on the single-threaded session, one worker per core (data parallelism: no per-operator
synchronisation between cores).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edged.distance import EMBEDDING_DIM
from edged.embed.nn4.fast import INPUT_NAME, RECIPE_VERSION, export_onnx
from edged.embed.nn4.net import NN4Small2
from edged.embed.nn4.preprocess import IMG_DIM
from edged.embed.nn4.weights import atomic_write_bytes
from edged.machine import usable_cores

log = logging.getLogger(__name__)

#: Faces per session run: bounds the memory ONNX Runtime's arena grows to (per-face speed is flat beyond ~8).
FACES_PER_RUN = 8
#: Largest max-abs difference to the torch module accepted from an export on the probe faces.
PROBE_TOLERANCE = 1e-5
#: metadata_props keys of an export.
META_WEIGHTS = "edged.weights_sha256"
META_RECIPE = "edged.recipe"
CACHE_SUBDIR = "cache"


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


def _session_options(threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: ORT's warnings go to stderr, not through logging
    if threads > 1:
        # spin between the operators of one run, stop when it ends: no core burnt between frames
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


class FasterOf:
    """Chooses between two ways of doing the same work by their recent run times (no clock inside:
    the caller reports each run with `record`). Until each has `warmup` runs they alternate; then the
    one with the lower median over its last `window` runs is chosen, except every `explore_every`-th
    call, which retries the other so that a change in conditions is noticed. A retry's time replaces
    the retried way's older times (they describe conditions that may be gone), so one retry that is
    faster switches over, instead of needing a window's worth of retries."""

    def __init__(self, first: str, second: str, window: int = 5, warmup: int = 2, explore_every: int = 8) -> None:
        self.options = (first, second)
        self.window, self.warmup, self.explore_every = window, warmup, explore_every
        self._times: dict[str, list[float]] = {first: [], second: []}
        self._runs: dict[str, int] = {first: 0, second: 0}
        self._exploring: str | None = None
        self._calls = 0
        self._lock = threading.Lock()

    def choose(self) -> str:
        with self._lock:
            self._calls += 1
            first, second = self.options
            short = [o for o in self.options if self._runs[o] < self.warmup]
            if short:
                return short[0] if len(short) == 1 else self.options[self._calls % 2]
            best = min(self.options, key=lambda o: float(np.median(self._times[o])))
            if self._calls % self.explore_every == 0:
                self._exploring = second if best == first else first
                return self._exploring
            return best

    def record(self, option: str, seconds: float) -> None:
        with self._lock:
            self._runs[option] += 1
            times = self._times[option]
            if option == self._exploring:
                self._exploring = None
                times.clear()
            times.append(seconds)
            del times[:-self.window]

    def medians(self) -> dict[str, float | None]:
        with self._lock:
            return {o: (float(np.median(t)) if t else None) for o, t in self._times.items()}


class OrtNN4:
    """Runs an nn4 `FastNN4` ONNX export: uint8 (N, 96, 96, 3) faces -> (N, 128) float32 unit rows."""

    def __init__(self, model_bytes: bytes, threads: int = 0) -> None:
        import onnxruntime as ort

        self.threads = threads if threads > 0 else usable_cores()
        providers = ["CPUExecutionProvider"]
        self._wide = ort.InferenceSession(model_bytes, _session_options(self.threads), providers=providers)
        self._narrow = (ort.InferenceSession(model_bytes, _session_options(1), providers=providers)
                        if self.threads > 1 else self._wide)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        #: how a single face runs: "all cores" (one run, intra-op threads) or "one core" (calling thread)
        self.single = FasterOf("all cores", "one core")
        self.metadata: dict[str, str] = dict(self._wide.get_modelmeta().custom_metadata_map)

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="edged-nn4")
            return self._pool

    def _run_narrow(self, chunk: np.ndarray) -> np.ndarray:
        return self._narrow.run(None, {INPUT_NAME: chunk})[0]

    def run_single(self, face: np.ndarray, how: str | None = None) -> np.ndarray:
        """Embed one face (1, 96, 96, 3) the way `how` says, else the way that has been faster lately."""
        if self.threads < 2:
            return self._wide.run(None, {INPUT_NAME: face})[0]
        chosen = how or self.single.choose()
        session = self._wide if chosen == "all cores" else self._narrow
        start = time.perf_counter()
        out = session.run(None, {INPUT_NAME: face})[0]
        if how is None:
            self.single.record(chosen, time.perf_counter() - start)
        return out

    def run(self, faces: np.ndarray) -> np.ndarray:
        """Embed a uint8 batch."""
        n = len(faces)
        if n == 0:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        faces = np.ascontiguousarray(faces)
        if n == 1:
            return self.run_single(faces)
        if self.threads < 2:
            return np.concatenate([self._wide.run(None, {INPUT_NAME: faces[i:i + FACES_PER_RUN]})[0]
                                   for i in range(0, n, FACES_PER_RUN)])
        chunks = np.array_split(faces, max(self.threads, -(-n // FACES_PER_RUN)))
        return np.concatenate(list(self._executor().map(self._run_narrow, chunks)))

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None


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
        for directory in reversed([p for p in (path.parent, *path.parent.parents) if not p.exists()]):
            directory.mkdir(mode=0o700)  # every directory made here (models dir, cache dir) is private
        os.chmod(path.parent, 0o700)
        atomic_write_bytes(path, data)
        log.info("cached the nn4 ONNX export in %s", path)
    except OSError as exc:
        log.warning("cannot cache the nn4 ONNX export in %s (%s); it will be rebuilt next start",
                    path.parent, exc.strerror or exc)


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
