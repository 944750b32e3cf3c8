"""A persistent cache of per-image face analysis for data sets (LFW, training folders).

For each image file (keyed by the SHA-1 of its bytes): the chosen face box, whether it came from
the detector or from the centred fallback, 68- and 5-point landmarks; and embeddings per
(embedder version, variant) where variant is "plain" or "flip" (the horizontally mirrored crop), and
for dlib also "norm": the norm of its raw descriptor, so distances on dlib's own scale can be rebuilt.
Evaluation and training share it, so each face is detected and embedded once.

`analyse()` fills what is missing in two passes: images never seen are detected, landmarked and
(for dlib) embedded in a process pool; images already analysed but lacking embeddings of an
embedder are embedded from their cached box and landmarks without detecting again (dlib in the
pool, torch models such as nn4 in this process in batches).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edged.distance import l2_normalize
from edged.types import Box

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS faces (
    sha1 TEXT PRIMARY KEY, path TEXT NOT NULL, width INTEGER, height INTEGER,
    detected INTEGER NOT NULL, box TEXT NOT NULL, lm68 BLOB NOT NULL, lm5 BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS embeddings (
    sha1 TEXT NOT NULL, version TEXT NOT NULL, variant TEXT NOT NULL, vec BLOB NOT NULL,
    PRIMARY KEY (sha1, version, variant)
);
"""

#: File name of the cache inside its directory.
CACHE_FILE = "faces.sqlite"
#: HOG score accepted on a second try when the default threshold finds no face.
RETRY_MIN_SCORE = -0.6
#: Fraction of the shorter image side covered by the centred fallback box (LFW faces are centred).
FALLBACK_FRACTION = 0.44
#: Embedders run in the process pool (single-threaded C++); others (torch) run batched in-process.
POOL_EMBEDDERS = frozenset({"dlib"})
#: Images per in-process embedding batch (also the unit of each database transaction there).
BATCH = 64

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class FaceRecord:
    sha1: str
    path: str
    detected: bool
    box: Box
    lm68: np.ndarray
    lm5: np.ndarray
    width: int = 0
    height: int = 0


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/edged, else ~/.cache/edged."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edged"


def file_sha1(path: str | os.PathLike[str]) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def centred_box(width: int, height: int, fraction: float = FALLBACK_FRACTION) -> Box:
    side = round(min(width, height) * fraction)
    left, top = (width - side) // 2, (height - side) // 2
    return Box(left, top, left + side, top + side, 0.0)


def choose_central(boxes: Sequence[Box], width: int, height: int) -> Box | None:
    """The detected box whose centre is nearest the image centre (the labelled face in LFW-style crops)."""
    if not boxes:
        return None
    cx, cy = width / 2.0, height / 2.0
    return min(boxes, key=lambda b: (b.center[0] - cx) ** 2 + (b.center[1] - cy) ** 2)


class FaceCache:
    """SQLite-backed cache; one writer process. Biometric data: file 0600, its directory 0700 when created here."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        if self.path.stat().st_mode & 0o077:  # an older cache file made with the default umask
            os.chmod(self.path, 0o600)
        self.db = sqlite3.connect(self.path, timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    @classmethod
    def in_dir(cls, directory: str | os.PathLike[str] | None = None) -> FaceCache:
        """The cache file in `directory` (default `default_cache_dir()`)."""
        return cls(Path(directory or default_cache_dir()).expanduser() / CACHE_FILE)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> FaceCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_face(self, sha1: str) -> FaceRecord | None:
        return self.faces([sha1]).get(sha1)

    def faces(self, sha1s: Iterable[str]) -> dict[str, FaceRecord]:
        out: dict[str, FaceRecord] = {}
        for chunk in _chunks(list(sha1s), 500):
            q = (f"SELECT sha1, path, detected, box, lm68, lm5, width, height FROM faces "
                 f"WHERE sha1 IN ({','.join('?' * len(chunk))})")
            for row in self.db.execute(q, chunk):
                out[row[0]] = _record(row)
        return out

    def put_faces(self, records: Iterable[FaceRecord]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO faces VALUES (?,?,?,?,?,?,?,?)",
                [(r.sha1, r.path, r.width, r.height, int(r.detected), ",".join(map(str, r.box.as_list())),
                  r.lm68.astype(np.float32).tobytes(), r.lm5.astype(np.float32).tobytes()) for r in records])

    def embeddings(self, sha1s: Iterable[str], version: str, variant: str = "plain") -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for chunk in _chunks(list(sha1s), 500):
            q = (f"SELECT sha1, vec FROM embeddings WHERE version=? AND variant=? "
                 f"AND sha1 IN ({','.join('?' * len(chunk))})")
            for sha, blob in self.db.execute(q, [version, variant, *chunk]):
                out[sha] = np.frombuffer(blob, dtype=np.float32).copy()
        return out

    def put_embeddings(self, version: str, variant: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?,?,?,?)",
                [(sha, version, variant, np.asarray(v, np.float32).tobytes()) for sha, v in items])


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _record(row: tuple) -> FaceRecord:
    sha, path, detected, box, lm68, lm5, *size = row
    left, top, right, bottom = (int(x) for x in box.split(","))
    width, height = (int(v or 0) for v in size) if size else (0, 0)
    return FaceRecord(sha, path, bool(detected), Box(left, top, right, bottom),
                      np.frombuffer(lm68, np.float32).reshape(-1, 2).copy(),
                      np.frombuffer(lm5, np.float32).reshape(-1, 2).copy(), width, height)


# ---- the analysis itself (in pool workers, or in this process) ----

Vectors = dict[tuple[str, str], np.ndarray]


class Analyser:
    """Detector, landmark predictors and embedders; each model loads on first use."""

    def __init__(self, upsample: int = 1, embedders: Sequence[Any] = ()) -> None:
        from edged.vision.align import LandmarkPredictor
        from edged.vision.detect import FaceDetector

        self.detector = FaceDetector("hog", upsample=upsample)
        self.retry_detector = FaceDetector("hog", upsample=upsample, min_score=RETRY_MIN_SCORE)
        self.lm68 = LandmarkPredictor(68)
        self.lm5 = LandmarkPredictor(5)
        self.embedders = list(embedders)

    def analyse(self, path: str, flip: bool) -> tuple[str, FaceRecord | None, Vectors, str]:
        """Detect, landmark and embed one file. Returns (sha1, record, vectors, error)."""
        from edged.errors import EdgedError
        from edged.vision.imageio import decode_image

        data = Path(path).read_bytes()
        sha = hashlib.sha1(data).hexdigest()
        try:
            image = decode_image(data, path)
        except EdgedError as exc:
            return sha, None, {}, str(exc)
        h, w = image.shape[:2]
        box = choose_central(self.detector.detect(image), w, h)
        if box is None:
            # LFW-style data always holds a face: try once more with HOG's threshold lowered
            box = choose_central(self.retry_detector.detect(image), w, h)
        detected = box is not None
        if box is None:
            box = centred_box(w, h)
        record = FaceRecord(sha, path, detected, box, self.lm68.predict(image, box), self.lm5.predict(image, box), w, h)
        vectors: Vectors = {}
        for emb in self.embedders:
            vectors.update(embed_record(emb, [(image, record)], flip)[0])
        return sha, record, vectors, ""

    def embed(self, record: FaceRecord, path: str, flip: bool) -> tuple[str, Vectors, str]:
        """Embed one already-analysed file with every embedder, from its cached box and landmarks."""
        from edged.errors import EdgedError
        from edged.vision.imageio import load_image

        try:
            image = load_image(path)
        except EdgedError as exc:
            return record.sha1, {}, str(exc)
        vectors: Vectors = {}
        for emb in self.embedders:
            vectors.update(embed_record(emb, [(image, record)], flip)[0])
        return record.sha1, vectors, ""


def embed_record(embedder: Any, items: Sequence[tuple[np.ndarray, FaceRecord]], flip: bool) -> list[Vectors]:
    """Embeddings of the faces in `items` ((image, record) pairs) in one batch: plain, and flipped if asked."""
    from edged.vision.align import FaceAligner

    aligner = FaceAligner(embedder.alignment)
    crops = []
    for image, record in items:
        marks = record.lm68 if embedder.alignment.landmark_points == 68 else record.lm5
        crop = aligner.crop(image, record.box, marks)
        crops.append(crop)
        if flip:
            crops.append(np.ascontiguousarray(crop[:, ::-1]))
    raw = getattr(embedder, "embed_raw", None)
    norms = None
    if raw is not None and crops:
        # keep dlib's raw norms too (variant "norm"): distances on dlib's own scale can be rebuilt exactly
        vecs = raw(crops)
        norms = np.linalg.norm(vecs, axis=1)
        vecs = l2_normalize(vecs)
    else:
        vecs = embedder.embed(crops) if crops else np.zeros((0, embedder.dim), np.float32)
    step = 2 if flip else 1
    out = []
    for k in range(len(items)):
        got = {(embedder.cache_version, "plain"): vecs[k * step]}
        if norms is not None:
            got[(embedder.cache_version, "norm")] = np.array([norms[k * step]], np.float32)
        if flip:
            got[(embedder.cache_version, "flip")] = vecs[k * step + 1]
        out.append(got)
    return out


# ---- worker side (one process per core; models load once per process) ----

_worker: dict[str, Any] = {}


def _init_worker(upsample: int, embedder_names: tuple[str, ...]) -> None:
    import torch

    torch.set_num_threads(1)
    from edged.models.embedders import get_embedder

    _worker["analyser"] = Analyser(upsample, [get_embedder(n, threads=1) for n in embedder_names])


def analyse_file(path: str, flip: bool) -> tuple[str, FaceRecord | None, Vectors, str]:
    """Detect, landmark and embed one file inside a worker. Returns (sha1, record, vectors, error)."""
    return _worker["analyser"].analyse(path, flip)


def embed_file(record: FaceRecord, path: str, flip: bool) -> tuple[str, Vectors, str]:
    """Embed one analysed file inside a worker from its cached landmarks. Returns (sha1, vectors, error)."""
    return _worker["analyser"].embed(record, path, flip)


class _Writer:
    """Buffers results and writes them in transactions of ~256 images; counts progress."""

    def __init__(self, cache: FaceCache, total: int, progress: ProgressFn | None) -> None:
        self.cache, self.total, self.progress = cache, total, progress
        self.done = 0
        self.faces: list[FaceRecord] = []
        self.vectors: dict[tuple[str, str], list[tuple[str, np.ndarray]]] = {}
        self.pending = 0
        if progress:
            progress(0, total)

    def add(self, sha: str, record: FaceRecord | None, vectors: Vectors, error: str) -> None:
        self.done += 1
        if error:
            log.warning("skipping %s", error)
        else:
            if record is not None:
                self.faces.append(record)
            for key, vec in vectors.items():
                self.vectors.setdefault(key, []).append((sha, vec))
            self.pending += 1
        if self.pending >= 256:
            self.flush()
        if self.progress:
            self.progress(self.done, self.total)

    def flush(self) -> None:
        if self.faces:
            self.cache.put_faces(self.faces)
        for (version, variant), items in self.vectors.items():
            self.cache.put_embeddings(version, variant, items)
        self.faces.clear()
        self.vectors.clear()
        self.pending = 0


def analyse(cache: FaceCache, paths: Sequence[str], embedder_names: Sequence[str] = ("dlib",),
            flip: bool = False, upsample: int = 1, workers: int | None = None,
            progress: ProgressFn | None = None, embedders: Sequence[Any] = ()) -> dict[str, str]:
    """Fill the cache for `paths` (only what is missing). Returns {path: sha1}; unreadable files are skipped.

    `embedder_names` are built with `get_embedder(name)`; `embedders` are ready instances (e.g. nn4
    with its options). `workers` defaults to the CPU count (at most 8); 1 runs everything here.
    """
    from edged.models.embedders import get_embedder

    all_embedders = [get_embedder(n) for n in embedder_names] + list(embedders)
    workers = workers or max(1, min(os.cpu_count() or 1, 8))
    variants = ["plain", "flip"] if flip else ["plain"]
    sha_of: dict[str, str] = {p: file_sha1(p) for p in paths}
    path_of = {sha: p for p, sha in sha_of.items()}  # one path per distinct content
    have = cache.faces(path_of)
    new = [p for sha, p in path_of.items() if sha not in have]
    # Embedders run alongside detection for new images when they can run in the pool.
    pooled = [e for e in all_embedders if workers > 1 and e.name in POOL_EMBEDDERS]
    local = [e for e in all_embedders if e not in pooled]
    missing: dict[Any, list[str]] = {}
    for emb in all_embedders:
        need: set[str] = set()
        for variant in variants:
            got = cache.embeddings(have, emb.cache_version, variant)
            need.update(sha for sha in have if sha not in got)
        missing[emb] = sorted(need)
    pooled_todo = sorted({sha for e in pooled for sha in missing[e]})
    local_todo = {e: list(missing[e]) for e in local}
    total = len(new) + len(pooled_todo) + sum(len(v) for v in local_todo.values())
    writer = _Writer(cache, total, progress)
    if new or pooled_todo:
        names = tuple(e.name for e in pooled)
        if workers > 1:
            # spawned, not forked: the parent may hold ONNX Runtime sessions whose thread pools a fork would not
            # copy (using or even freeing them in the child hangs)
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_init_worker, initargs=(upsample, names)) as pool:
                for result in pool.map(analyse_file, new, [flip] * len(new), chunksize=16):
                    writer.add(*result)
                records = [have[sha] for sha in pooled_todo]
                for sha, vectors, error in pool.map(embed_file, records, [path_of[s] for s in pooled_todo],
                                                    [flip] * len(records), chunksize=16):
                    writer.add(sha, None, vectors, error)
        else:
            analyser = Analyser(upsample)
            for path in new:
                writer.add(*analyser.analyse(path, flip))
    writer.flush()
    if new and local:
        # Newly analysed images now need every in-process embedder.
        fresh = cache.faces(sha_of[p] for p in new)
        for emb in local:
            local_todo[emb].extend(fresh)
        writer.total = writer.done + sum(len(v) for v in local_todo.values())
    for emb, shas in local_todo.items():
        _embed_in_process(cache, emb, shas, path_of, flip, writer)
    writer.flush()
    return sha_of


def _embed_in_process(cache: FaceCache, embedder: Any, shas: Sequence[str], path_of: dict[str, str],
                      flip: bool, writer: _Writer) -> None:
    """Embed analysed images with one embedder here, BATCH images at a time, from cached landmarks."""
    from edged.errors import EdgedError
    from edged.vision.imageio import load_image

    for chunk in _chunks(list(shas), BATCH):
        records = cache.faces(chunk)
        items: list[tuple[np.ndarray, FaceRecord]] = []
        for sha in chunk:
            try:
                items.append((load_image(path_of[sha]), records[sha]))
            except EdgedError as exc:
                writer.add(sha, None, {}, str(exc))
        for (_, record), vectors in zip(items, embed_record(embedder, items, flip), strict=True):
            writer.add(record.sha1, None, vectors, "")
        writer.flush()


@dataclass(frozen=True)
class ImageEmbeddings:
    """What `embed_images` found: one embedding per analysed image path, and whether a face was detected."""

    vectors: dict[str, np.ndarray]
    detected: dict[str, bool]
    #: Images (and embeddings) that had to be computed now, not read from the cache.
    computed: int
    #: Paths that could not be analysed (unreadable images).
    lost: list[str]


def embed_images(cache: FaceCache, paths: Sequence[str], embedder: Any, flip: bool = False,
                 workers: int | None = None, progress: ProgressFn | None = None) -> ImageEmbeddings:
    """Every image's face embedding with `embedder` (mirror-averaged with `flip`), filling the cache first."""
    computed = 0

    def on_progress(done: int, total: int) -> None:
        nonlocal computed
        computed = max(computed, total)
        if progress:
            progress(done, total)

    sha_of = analyse(cache, paths, embedder_names=(), embedders=[embedder], flip=flip, workers=workers,
                     progress=on_progress)
    vectors = cache.embeddings(sha_of.values(), embedder.cache_version)
    if flip:
        mirrored = cache.embeddings(sha_of.values(), embedder.cache_version, "flip")
        vectors = {sha: l2_normalize(v + mirrored[sha]) for sha, v in vectors.items() if sha in mirrored}
    faces = cache.faces(sha_of.values())
    found = {p: vectors[sha_of[p]] for p in paths if sha_of.get(p) in vectors}
    return ImageEmbeddings(found, {p: faces[sha_of[p]].detected for p in found}, computed,
                           [p for p in paths if p not in found])
