"""ONNX Runtime on the CPU for a face embedder's export: uint8 faces (N, H, W, 3) in, (N, 128) float32 out.

Used by nn4's exports (`edged.embed.nn4.ort`) and dlib's ResNet (`edged.embed.dlib_onnx`); no torch here.
A single face runs either on a session using all cores (spinning threads only inside a run, so no core is burnt
between frames) or on the single-threaded session in the calling thread, whichever has been faster lately
(`FasterOf`). Larger batches are cut into chunks (at least one per core, at most `FACES_PER_RUN` faces each) run
concurrently on the single-threaded session, one worker per core.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edged.distance import EMBEDDING_DIM
from edged.machine import usable_cores
from edged.onnxrt import session_options

__all__ = ["CACHE_SUBDIR", "FACES_PER_RUN", "INPUT_NAME", "FasterOf", "OrtRunner", "machine_key",
           "optimize_for_this_machine", "session_options"]

#: The input of every export run here: uint8 RGB faces, (N, H, W, 3).
INPUT_NAME = "faces"
#: Where exports are cached, under the models directory.
CACHE_SUBDIR = "cache"
#: Faces per session run: bounds the memory ONNX Runtime's arena grows to (per-face speed is flat beyond ~8).
FACES_PER_RUN = 8


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


class OrtRunner:
    """Runs an embedder's ONNX export: uint8 (N, H, W, 3) faces -> (N, 128) float32 rows."""

    def __init__(self, model_bytes: bytes, threads: int = 0, optimized: bool = False) -> None:
        """`optimized`: `model_bytes` are ONNX Runtime's optimised form made on this machine
        (`optimize_for_this_machine`): the sessions load it as it is and share no unoptimised copy of the weights."""
        import onnxruntime as ort

        self.threads = threads if threads > 0 else usable_cores()
        self.optimized = optimized
        providers = ["CPUExecutionProvider"]
        self._wide = ort.InferenceSession(model_bytes, session_options(self.threads, optimized), providers=providers)
        self._narrow = (ort.InferenceSession(model_bytes, session_options(1, optimized), providers=providers)
                        if self.threads > 1 else self._wide)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        #: how a single face runs: "all cores" (one run, intra-op threads) or "one core" (calling thread)
        self.single = FasterOf("all cores", "one core")
        self.metadata: dict[str, str] = dict(self._wide.get_modelmeta().custom_metadata_map)

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="edged-embed")
            return self._pool

    def _run_narrow(self, chunk: np.ndarray) -> np.ndarray:
        return self._narrow.run(None, {INPUT_NAME: chunk})[0]

    def run_single(self, face: np.ndarray, how: str | None = None) -> np.ndarray:
        """Embed one face (1, H, W, 3) the way `how` says, else the way that has been faster lately."""
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


def machine_key() -> str:
    """What ONNX Runtime's optimised form of a model depends on: its version, the CPU's model and instruction
    set flags (the NCHWc layout and kernels differ with AVX2 / AVX-512)."""
    import hashlib
    import platform

    import onnxruntime as ort

    flags = model = ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags") and not flags:
                    flags = " ".join(sorted(line.split(":", 1)[1].split()))
                elif line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    text = f"{ort.__version__}|{platform.machine()}|{model}|{flags}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def optimize_for_this_machine(model_bytes: bytes, path: str) -> None:
    """Write ONNX Runtime's fully optimised form of `model_bytes` (NCHWc layout: the fast one on x86) to `path`.

    A session on the plain model keeps the weights twice (as given and re-laid out, ~77 MB for dlib's ResNet);
    one on the optimised form only once (~37 MB), at the same speed. The file is only valid on this machine
    and ONNX Runtime version (`machine_key`)."""
    import onnxruntime as ort

    options = session_options(1)
    options.optimized_model_filepath = path
    ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
