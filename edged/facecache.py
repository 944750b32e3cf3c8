"""A persistent cache of per-image face analysis for data sets (LFW, training folders).

For each image file (keyed by the SHA-1 of its bytes): the chosen face box, whether it came from
the detector or from the centred fallback, 68- and 5-point landmarks; and embeddings per
(embedder version, variant) where variant is "plain" or "flip" (the horizontally mirrored crop).
Evaluation and training share it, so each face is detected and embedded once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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

#: Fraction of the shorter image side covered by the centred fallback box (LFW faces are centred).
FALLBACK_FRACTION = 0.44


@dataclass(frozen=True)
class FaceRecord:
    sha1: str
    path: str
    detected: bool
    box: Box
    lm68: np.ndarray
    lm5: np.ndarray


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
    """SQLite-backed cache; safe for one writer process."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def get_face(self, sha1: str) -> FaceRecord | None:
        row = self.db.execute(
            "SELECT sha1, path, detected, box, lm68, lm5 FROM faces WHERE sha1=?", (sha1,)).fetchone()
        return _record(row) if row else None

    def faces(self, sha1s: Iterable[str]) -> dict[str, FaceRecord]:
        wanted = list(sha1s)
        out: dict[str, FaceRecord] = {}
        for i in range(0, len(wanted), 500):
            chunk = wanted[i:i + 500]
            q = f"SELECT sha1, path, detected, box, lm68, lm5 FROM faces WHERE sha1 IN ({','.join('?' * len(chunk))})"
            for row in self.db.execute(q, chunk):
                out[row[0]] = _record(row)
        return out

    def put_faces(self, records: Iterable[FaceRecord]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO faces VALUES (?,?,?,?,?,?,?,?)",
                [(r.sha1, r.path, 0, 0, int(r.detected), ",".join(map(str, r.box.as_list())),
                  r.lm68.astype(np.float32).tobytes(), r.lm5.astype(np.float32).tobytes()) for r in records])

    def embeddings(self, sha1s: Iterable[str], version: str, variant: str = "plain") -> dict[str, np.ndarray]:
        wanted = list(sha1s)
        out: dict[str, np.ndarray] = {}
        for i in range(0, len(wanted), 500):
            chunk = wanted[i:i + 500]
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


def _record(row: tuple) -> FaceRecord:
    sha, path, detected, box, lm68, lm5 = row
    left, top, right, bottom = (int(x) for x in box.split(","))
    return FaceRecord(sha, path, bool(detected), Box(left, top, right, bottom),
                      np.frombuffer(lm68, np.float32).reshape(-1, 2).copy(),
                      np.frombuffer(lm5, np.float32).reshape(-1, 2).copy())


# ---- worker side (one process per core; models load once per process) ----

_worker: dict[str, object] = {}


def _init_worker(upsample: int, embedder_names: tuple[str, ...]) -> None:
    import torch

    torch.set_num_threads(1)
    from edged.align import LandmarkPredictor
    from edged.detect import FaceDetector
    from edged.embed import get_embedder

    _worker["detector"] = FaceDetector("hog", upsample=upsample)
    _worker["lm68"] = LandmarkPredictor(68)
    _worker["lm5"] = LandmarkPredictor(5)
    _worker["embedders"] = [get_embedder(n) for n in embedder_names]


def analyse_file(path: str, flip: bool) -> tuple[str, FaceRecord | None, dict[tuple[str, str], np.ndarray], str]:
    """Detect, landmark and embed one file inside a worker. Returns (sha1, record, vectors, error)."""
    from edged.align import FaceAligner
    from edged.errors import EdgedError
    from edged.imageio import decode_image

    data = Path(path).read_bytes()
    sha = hashlib.sha1(data).hexdigest()
    try:
        image = decode_image(data, path)
    except EdgedError as exc:
        return sha, None, {}, str(exc)
    h, w = image.shape[:2]
    box = choose_central(_worker["detector"].detect(image), w, h)  # type: ignore[union-attr]
    detected = box is not None
    if box is None:
        box = centred_box(w, h)
    lm68 = _worker["lm68"].predict(image, box)  # type: ignore[union-attr]
    lm5 = _worker["lm5"].predict(image, box)  # type: ignore[union-attr]
    record = FaceRecord(sha, path, detected, box, lm68, lm5)
    vectors: dict[tuple[str, str], np.ndarray] = {}
    for emb in _worker["embedders"]:  # type: ignore[union-attr]
        aligner = FaceAligner(emb.alignment)
        marks = lm68 if emb.alignment.landmark_points == 68 else lm5
        crop = aligner.crop(image, box, marks)
        crops = [crop, np.ascontiguousarray(crop[:, ::-1])] if flip else [crop]
        vecs = emb.embed(crops)
        vectors[(emb.version, "plain")] = vecs[0]
        if flip:
            vectors[(emb.version, "flip")] = vecs[1]
    return sha, record, vectors, ""


def analyse(cache: FaceCache, paths: Sequence[str], embedder_names: Sequence[str] = ("dlib",),
            flip: bool = False, upsample: int = 1, workers: int | None = None,
            progress: Callable[[int, int], None] | None = None) -> dict[str, str]:
    """Fill the cache for `paths` (only what is missing). Returns {path: sha1}; unreadable files are skipped."""
    from edged.embed import get_embedder

    versions = [get_embedder(n).version for n in embedder_names] if embedder_names else []
    sha_of: dict[str, str] = {p: file_sha1(p) for p in paths}
    have_faces = cache.faces(sha_of.values())
    need: set[str] = {s for s in sha_of.values() if s not in have_faces}
    variants = ["plain", "flip"] if flip else ["plain"]
    for version in versions:
        for variant in variants:
            got = cache.embeddings(sha_of.values(), version, variant)
            need.update(s for s in sha_of.values() if s not in got)
    todo = [p for p, s in sha_of.items() if s in need]
    todo = list({sha_of[p]: p for p in todo}.values())  # one path per distinct content
    total = len(todo)
    if progress:
        progress(0, total)
    if not todo:
        return sha_of
    workers = workers or max(1, min(os.cpu_count() or 1, 8))
    faces_buf: list[FaceRecord] = []
    vec_buf: dict[tuple[str, str], list[tuple[str, np.ndarray]]] = {}
    done = 0

    def flush() -> None:
        cache.put_faces(faces_buf)
        faces_buf.clear()
        for (version, variant), items in vec_buf.items():
            cache.put_embeddings(version, variant, items)
        vec_buf.clear()

    with ProcessPoolExecutor(workers, initargs=(upsample, tuple(embedder_names)),
                             initializer=_init_worker) as pool:
        for sha, record, vectors, error in pool.map(analyse_file, todo, [flip] * total, chunksize=16):
            done += 1
            if record is None:
                log.warning("skipping %s", error)
            else:
                faces_buf.append(record)
                for key, vec in vectors.items():
                    vec_buf.setdefault(key, []).append((sha, vec))
            if len(faces_buf) >= 256:
                flush()
            if progress:
                progress(done, total)
    flush()
    return sha_of
