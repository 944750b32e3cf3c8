"""Unknown visitors and the ignore list, in the gallery file (schema v2; SQL + numpy + scikit-learn).

**Unknown visitors.** The daemon stores each unknown track as one *visit* (camera, first and last
sighting in ISO-8601 UTC, track id, the nearest enrolled person and its distance, why the face was
not named) with its best few *samples* (embedding, and the canonical crop of `edged.gallery.enroll`
unless `unknowns.keep_crops` is false): `add_visit`. Every write here is one transaction and bumps
`unknowns_counter` (`unknowns_counter()`), never the gallery's change counter, so storing strangers
does not make the daemon reload its matcher. Retention: `purge` (visits last seen before a cut-off,
and the oldest beyond a maximum).

**Clustering.** `cluster` groups visits with DBSCAN (scikit-learn) on a precomputed distance between
visits: the *mean* squared L2 over all pairs of their samples (`mean_link_distances`), computed from
each visit's mean vector and mean squared norm, so 5000 visits cost one 5000 x 5000 product done in
blocks, and only pairs within `eps` are kept (a sparse radius graph). With `min_samples` 1 DBSCAN is
single linkage at `eps`: visits closer than `eps` end up in one cluster, and chains of them too.
The default eps (`unknowns.cluster_eps`, 0.11 for dlib) was measured on LFW with
`scripts/measure_cluster_eps.py` (docs/unknowns.md): mean linkage because the minimum over sample
pairs chains strangers together at any useful radius. Cluster ids are stored on the visits (1 = the
largest cluster, ties: the most recently seen first) until the next `cluster`; `name_cluster` and
`ignore_cluster` use them.

**Naming** a cluster (`name_cluster`) enrolls its best samples through the same gates as
`edged enroll` (size, blur, near-duplicates of the person's stored samples and of each other, at
most `enroll.video_samples`) and deletes its visits, all in one transaction.

**Ignore list** (negative anchors: a poster, a face on the TV): samples under a label
(`add_ignore`, `ignore_cluster`, `ignore_photos`); matching data, so its writes bump the gallery's
change counter. `ignore_snapshot` gives them in the form `edged.gallery.match.Matcher(ignore=...)`
takes, `cohort` the impostor faces the site knows (stored unknowns and ignore samples).

Stable for the daemon side: `add_visit`, `purge`, `cohort`, `ignore_snapshot`, `unknowns_counter`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edged.config import EnrollConfig
from edged.distance import EMBEDDING_DIM
from edged.embed.base import Embedder
from edged.errors import GalleryError
from edged.gallery.match import Matcher, MatchRule
from edged.gallery.store import (
    Gallery,
    GallerySnapshot,
    NewSample,
    _vector,
    _vector_blob,
    ensure_directory,
    utc_now,
    validate_name,
)

if TYPE_CHECKING:
    from edged.gallery.enroll import EmbedderChoice, EnrollReport, SourceItem

log = logging.getLogger(__name__)

#: Default DBSCAN radius for dlib embeddings (mean squared L2 between visits; see the module docstring).
DEFAULT_EPS = 0.11
#: Longest camera name stored with a visit.
CAMERA_MAX = 64
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

#: A point in time: ISO-8601 text, a datetime (naive = UTC) or POSIX seconds.
Stamp = str | datetime | float


# ---- values ----

@dataclass(frozen=True)
class UnknownSample:
    """One face of an unknown visit. To store: embedding, embedder, version, face size, sharpness and the
    canonical crop (PNG, `edged.gallery.enroll.CROP_FORMAT`) when kept. Read back: also id, visit_id, created
    (crop bytes only when asked for)."""

    embedding: np.ndarray
    embedder: str
    embedder_version: str
    face_px: int
    sharpness: float
    crop_png: bytes | None = None
    crop_format: str | None = None
    id: int | None = None
    visit_id: int | None = None
    created: str | None = None

    @property
    def quality(self) -> float:
        """face_px x sqrt(sharpness), as `edged.gallery.enroll.quality` ranks video frames."""
        return float(self.face_px) * float(np.sqrt(max(self.sharpness, 0.0)))


@dataclass(frozen=True)
class UnknownVisit:
    """One unknown track. To store: camera, first/last sighting (ISO-8601 UTC; datetimes and POSIX seconds
    are converted), track id, the nearest enrolled person and its distance, why it was not named
    (`edged.types.UnknownReason` or text). Read back: also id, cluster (None until clustered), created and
    the number of samples."""

    camera: str
    first_seen: str
    last_seen: str
    track_id: int | None = None
    candidate: str | None = None
    distance: float | None = None
    reason: str | None = None
    id: int | None = None
    cluster: int | None = None
    created: str | None = None
    samples: int = 0


@dataclass(frozen=True)
class Cluster:
    """Visits grouped by `cluster`: the visits (newest first) and the best sample (largest
    face_px x sqrt(sharpness), one with a crop when there is one; its crop bytes included)."""

    id: int
    visits: list[UnknownVisit]
    best: UnknownSample | None

    @property
    def size(self) -> int:
        """Number of visits."""
        return len(self.visits)

    @property
    def samples(self) -> int:
        return sum(v.samples for v in self.visits)

    @property
    def first_seen(self) -> str:
        return min(v.first_seen for v in self.visits)

    @property
    def last_seen(self) -> str:
        return max(v.last_seen for v in self.visits)


@dataclass
class NameReport:
    """What `name_cluster` did: the visits named (and deleted), samples added, samples rejected with reasons."""

    name: str
    cluster: int | None
    visits: list[int]
    added: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    surplus: int = 0  # samples that passed but were beyond enroll.video_samples

    def reason_counts(self) -> Counter[str]:
        return Counter(reason.split(" (")[0] for _, reason in self.rejected)


@dataclass(frozen=True)
class IgnoreLabel:
    """One label of the ignore list."""

    label: str
    samples: int
    embedder_versions: list[str]
    created: str
    updated: str


# ---- helpers ----

def iso_utc(value: Stamp, what: str = "time") -> str:
    """`value` as ISO-8601 UTC text (seconds, 'Z'), the form every gallery timestamp has."""
    if isinstance(value, bool):
        raise GalleryError(f"{what}: expected a time, got {value!r}")
    if isinstance(value, int | float):
        try:
            moment = datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise GalleryError(f"{what}: not a usable POSIX time: {value!r}") from exc
    elif isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise GalleryError(f"{what}: not an ISO-8601 time: {value!r}") from exc
    else:
        raise GalleryError(f"{what}: expected ISO-8601 text, a datetime or POSIX seconds, got {type(value).__name__}")
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime(_TIME_FORMAT)


def _bump_unknowns(db: sqlite3.Connection) -> None:
    db.execute("UPDATE unknowns_counter SET value = value + 1 WHERE id = 1")


def unknowns_counter(gallery: Gallery) -> int:
    """Bumped by every committed write to the unknown visitors from any process (one row read)."""
    with gallery._lock:
        return int(gallery._db.execute("SELECT value FROM unknowns_counter WHERE id = 1").fetchone()[0])


def _gallery_versions(db: sqlite3.Connection) -> list[str]:
    return [r[0] for r in db.execute("SELECT DISTINCT embedder_version FROM samples ORDER BY 1")]


def _visit(row: tuple) -> UnknownVisit:
    return UnknownVisit(camera=row[1], first_seen=row[2], last_seen=row[3], track_id=row[4], candidate=row[5],
                        distance=row[6], reason=row[7], id=row[0], cluster=row[8], created=row[9],
                        samples=int(row[10]))


_VISIT_QUERY = ("SELECT v.id, v.camera, v.first_seen, v.last_seen, v.track_id, v.candidate, v.distance, v.reason, "
                "v.cluster, v.created, (SELECT COUNT(*) FROM unknown_samples s WHERE s.visit_id = v.id) "
                "FROM unknown_visits v")
_NEWEST_FIRST = " ORDER BY v.last_seen DESC, v.id DESC"


def _sample(row: tuple) -> UnknownSample:
    return UnknownSample(embedding=_vector(row[3]), embedder=row[1], embedder_version=row[2], face_px=int(row[4]),
                         sharpness=float(row[5]), crop_png=row[6], crop_format=row[7], id=int(row[0]),
                         visit_id=int(row[8]), created=row[9])


def _sample_query(with_crops: bool) -> str:
    crop = "crop" if with_crops else "NULL"
    return (f"SELECT id, embedder, embedder_version, embedding, face_px, sharpness, {crop}, crop_format, visit_id, "
            f"created FROM unknown_samples")


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _id_list(ids: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in list(ids)[:5])
    return shown + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


# ---- visits ----

def add_visit(gallery: Gallery, visit: UnknownVisit, samples: Sequence[UnknownSample], now: Stamp | None = None) -> int:
    """Store one unknown visit with its samples in one transaction; returns the visit id.

    Bumps `unknowns_counter` only. Refuses (GalleryError, nothing written) a visit without samples, samples
    of several embedders, embeddings that are not 128 finite floats, last_seen before first_seen. Retention
    is not applied here: call `purge`.
    """
    camera = str(visit.camera)
    if not camera or len(camera) > CAMERA_MAX:
        raise GalleryError(f"unknown visit: camera name must be 1-{CAMERA_MAX} characters, got {camera!a}")
    first, last = iso_utc(visit.first_seen, "first_seen"), iso_utc(visit.last_seen, "last_seen")
    if last < first:
        raise GalleryError(f"unknown visit: last_seen {last} is before first_seen {first}")
    if not samples:
        raise GalleryError("unknown visit: needs at least one sample")
    versions = sorted({s.embedder_version for s in samples})
    if len(versions) > 1:
        raise GalleryError(f"unknown visit: samples of several embedders ({', '.join(versions)})")
    stamp = iso_utc(now, "now") if now is not None else utc_now()
    rows = [(s.embedder, s.embedder_version, _vector_blob(s.embedding, "unknown sample"), s.crop_png,
             s.crop_format if s.crop_png else None, int(s.face_px), float(s.sharpness), stamp) for s in samples]
    distance = None if visit.distance is None else float(visit.distance)
    if distance is not None and not np.isfinite(distance):
        distance = None
    reason = None if visit.reason is None else str(visit.reason)
    track = None if visit.track_id is None else int(visit.track_id)
    with gallery._write(bump=False) as db:
        cur = db.execute("INSERT INTO unknown_visits (camera, first_seen, last_seen, track_id, candidate, distance, "
                         "reason, cluster, created) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                         (camera, first, last, track, visit.candidate, distance, reason, stamp))
        visit_id = int(cur.lastrowid or 0)
        db.executemany("INSERT INTO unknown_samples (visit_id, embedder, embedder_version, embedding, crop, "
                       "crop_format, face_px, sharpness, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       [(visit_id, *r) for r in rows])
        _bump_unknowns(db)
    return visit_id


def visits(gallery: Gallery, *, cluster: int | None = None, camera: str | None = None,
           limit: int | None = None) -> list[UnknownVisit]:
    """Stored visits, newest (last seen) first; only those of one cluster / camera when given."""
    where, params = [], []
    if cluster is not None:
        where.append("v.cluster = ?")
        params.append(int(cluster))
    if camera is not None:
        where.append("v.camera = ?")
        params.append(camera)
    query = _VISIT_QUERY + (" WHERE " + " AND ".join(where) if where else "") + _NEWEST_FIRST
    if limit is not None:
        query += f" LIMIT {max(int(limit), 0)}"
    with gallery._read() as db:
        return [_visit(r) for r in db.execute(query, params).fetchall()]


def visit(gallery: Gallery, visit_id: int) -> UnknownVisit:
    """One visit; GalleryError when there is none with that id."""
    with gallery._read() as db:
        row = db.execute(_VISIT_QUERY + " WHERE v.id = ?", (int(visit_id),)).fetchone()
    if row is None:
        raise GalleryError(f"no unknown visit {visit_id} (see 'edged unknowns list')")
    return _visit(row)


def samples_of(gallery: Gallery, visit_ids: int | Sequence[int], with_crops: bool = False) -> list[UnknownSample]:
    """The samples of one or more visits, in visit then storage order."""
    ids = [int(visit_ids)] if isinstance(visit_ids, int) else [int(i) for i in visit_ids]
    if not ids:
        return []
    with gallery._read() as db:
        rows = db.execute(_sample_query(with_crops) + f" WHERE visit_id IN ({_marks(len(ids))}) "
                          f"ORDER BY visit_id, id", ids).fetchall()
    return [_sample(r) for r in rows]


def sample_crop(gallery: Gallery, sample_id: int) -> tuple[bytes, str] | None:
    """The canonical crop of one unknown sample (bytes, format), None when none is kept."""
    with gallery._read() as db:
        row = db.execute("SELECT crop, crop_format FROM unknown_samples WHERE id = ?", (int(sample_id),)).fetchone()
    return (bytes(row[0]), str(row[1])) if row is not None and row[0] is not None else None


def delete(gallery: Gallery, ids: Sequence[int]) -> int:
    """Delete visits (and their samples) in one transaction; GalleryError naming missing ids, nothing deleted."""
    wanted = sorted({int(i) for i in ids})
    if not wanted:
        return 0
    with gallery._write(bump=False) as db:
        found = {r[0] for r in db.execute(f"SELECT id FROM unknown_visits WHERE id IN ({_marks(len(wanted))})",
                                          wanted)}
        missing = [i for i in wanted if i not in found]
        if missing:
            raise GalleryError(f"no unknown visit {_id_list(missing)}; nothing deleted")
        db.execute(f"DELETE FROM unknown_visits WHERE id IN ({_marks(len(wanted))})", wanted)
        _bump_unknowns(db)
    return len(wanted)


def touch_visit(gallery: Gallery, visit_id: int, last_seen: Stamp) -> bool:
    """Move a visit's `last_seen` later (the visitor was still there); False when the visit is gone (purged,
    named or deleted meanwhile)."""
    stamp = iso_utc(last_seen, "last_seen")
    with gallery._write(bump=False) as db:
        cur = db.execute("UPDATE unknown_visits SET last_seen = max(last_seen, ?) WHERE id = ?", (stamp, int(visit_id)))
        if cur.rowcount:
            _bump_unknowns(db)
        return bool(cur.rowcount)


def purge(gallery: Gallery, older_than_days: float | None, keep_max: int | None, now: Stamp | None = None) -> int:
    """Retention: delete the visits last seen more than `older_than_days` before `now` (default: the clock),
    then the oldest beyond the newest `keep_max`; one transaction; returns how many visits went.

    Safe while another process (the daemon) writes: it waits for the write lock (WAL, busy timeout) and then
    sees everything committed, so a visit stored meanwhile is judged like any other.
    """
    if older_than_days is not None and not (np.isfinite(older_than_days) and older_than_days >= 0):
        raise GalleryError(f"purge: older than must be >= 0 days, got {older_than_days}")
    if keep_max is not None and keep_max < 0:
        raise GalleryError(f"purge: keep must be >= 0, got {keep_max}")
    if older_than_days is None and keep_max is None:
        return 0
    cut = None
    if older_than_days is not None:
        at = datetime.strptime(iso_utc(now, "now") if now is not None else utc_now(), _TIME_FORMAT)
        cut = (at - timedelta(days=float(older_than_days))).strftime(_TIME_FORMAT)
    with gallery._write(bump=False) as db:
        gone = 0
        if cut is not None:
            gone += db.execute("DELETE FROM unknown_visits WHERE last_seen <= ?", (cut,)).rowcount
        if keep_max is not None:
            gone += db.execute("DELETE FROM unknown_visits WHERE id IN (SELECT id FROM unknown_visits "
                               "ORDER BY last_seen DESC, id DESC LIMIT -1 OFFSET ?)", (int(keep_max),)).rowcount
        if gone:
            _bump_unknowns(db)
    if gone:
        log.info("unknowns: purged %d visits", gone)
    return gone


# ---- clustering ----

def _visit_stats(groups: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each visit's mean vector and mean squared norm (float64)."""
    means = np.stack([np.asarray(g, np.float64).reshape(-1, EMBEDDING_DIM).mean(axis=0) for g in groups])
    sq = np.array([float((np.asarray(g, np.float64) ** 2).sum(axis=1).mean()) for g in groups])
    return means, sq


def _block_distances(means: np.ndarray, sq: np.ndarray, start: int, stop: int) -> np.ndarray:
    d = sq[start:stop, None] + sq[None, :] - 2.0 * (means[start:stop] @ means.T)
    np.maximum(d, 0.0, out=d)
    d[np.arange(stop - start), np.arange(start, stop)] = 0.0  # a visit is at distance 0 from itself
    return d


def mean_link_distances(groups: Sequence[np.ndarray]) -> np.ndarray:
    """(V, V) distances between visits: the mean squared L2 over all pairs of their samples (diagonal 0)."""
    if not groups:
        return np.zeros((0, 0))
    means, sq = _visit_stats(groups)
    return _block_distances(means, sq, 0, len(groups))


def dbscan_labels(groups: Sequence[np.ndarray], eps: float, min_samples: int = 1, block: int = 1024) -> np.ndarray:
    """DBSCAN labels (0, 1, ...; -1 = noise, only with min_samples > 1) of visits given as arrays of their
    samples' embeddings, on `mean_link_distances`, computed in blocks as a sparse radius graph."""
    from scipy.sparse import csr_matrix
    from sklearn.cluster import DBSCAN

    if not 0.0 < eps <= 4.0:
        raise GalleryError(f"cluster eps must be in (0, 4], got {eps}")
    if min_samples < 1:
        raise GalleryError(f"cluster min_samples must be >= 1, got {min_samples}")
    n = len(groups)
    if n == 0:
        return np.zeros(0, np.int64)
    means, sq = _visit_stats(groups)
    rows, cols, vals = [], [], []
    for start in range(0, n, block):
        d = _block_distances(means, sq, start, min(start + block, n))
        r, c = np.nonzero(d <= eps)
        rows.append(r + start)
        cols.append(c)
        vals.append(np.maximum(d[r, c], 1e-12))  # stored entries are the neighbours; keep them non-zero
    graph = csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return np.asarray(DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(graph), np.int64)


def default_version(gallery: Gallery) -> str | None:
    """The embedder version to cluster and match with: the gallery's, else that of the newest unknown sample."""
    version = gallery.embedder_version()
    if version is not None:
        return version
    with gallery._lock:
        row = gallery._db.execute("SELECT embedder_version FROM unknown_samples ORDER BY id DESC LIMIT 1").fetchone()
    return None if row is None else str(row[0])


def cluster(gallery: Gallery, embedder_version: str, eps: float = DEFAULT_EPS, min_samples: int = 1) -> list[Cluster]:
    """Group the visits with samples of `embedder_version` (see the module docstring), store each visit's
    cluster id (visits without such samples, and noise, get none) and return the clusters, largest first."""
    with gallery._read() as db:
        rows = db.execute("SELECT visit_id, embedding FROM unknown_samples WHERE embedder_version = ? "
                          "ORDER BY visit_id, id", (embedder_version,)).fetchall()
        seen = dict(db.execute("SELECT id, last_seen FROM unknown_visits").fetchall())
    by_visit: dict[int, list[np.ndarray]] = {}
    for visit_id, blob in rows:
        by_visit.setdefault(int(visit_id), []).append(_vector(blob))
    ids = list(by_visit)
    labels = dbscan_labels([np.stack(by_visit[i]) for i in ids], eps, min_samples)
    members: dict[int, list[int]] = {}
    for visit_id, label in zip(ids, labels, strict=True):
        if label >= 0:
            members.setdefault(int(label), []).append(visit_id)
    ordered = sorted(members.values(), key=min)  # stable sorts: largest, then most recently seen, then oldest id
    ordered.sort(key=lambda vs: max(seen.get(v, "") for v in vs), reverse=True)
    ordered.sort(key=len, reverse=True)
    assignment = [(number, v) for number, vs in enumerate(ordered, start=1) for v in vs]
    with gallery._write(bump=False) as db:
        db.execute("UPDATE unknown_visits SET cluster = NULL WHERE cluster IS NOT NULL")
        db.executemany("UPDATE unknown_visits SET cluster = ? WHERE id = ?", assignment)
        _bump_unknowns(db)
    log.info("unknowns: %d visits of %s in %d clusters (eps %g)", len(ids), embedder_version, len(ordered), eps)
    return clusters(gallery)


def _best(samples: Sequence[UnknownSample]) -> UnknownSample | None:
    if not samples:
        return None
    return max(samples, key=lambda s: (s.crop_format is not None, s.quality, -(s.id or 0)))


def clusters(gallery: Gallery) -> list[Cluster]:
    """The clusters stored by the last `cluster` (visits added since have none), in cluster id order."""
    with gallery._read() as db:
        rows = db.execute(_VISIT_QUERY + " WHERE v.cluster IS NOT NULL" + _NEWEST_FIRST).fetchall()
        found = [_visit(r) for r in rows]
        by_cluster: dict[int, list[UnknownVisit]] = {}
        for v in found:
            by_cluster.setdefault(int(v.cluster or 0), []).append(v)
        samples = [_sample(r) for r in db.execute(
            _sample_query(False) + " WHERE visit_id IN (SELECT id FROM unknown_visits WHERE cluster IS NOT NULL)")]
        of_visit: dict[int, list[UnknownSample]] = {}
        for s in samples:
            of_visit.setdefault(int(s.visit_id or 0), []).append(s)
        out = []
        for number in sorted(by_cluster):
            best = _best([s for v in by_cluster[number] for s in of_visit.get(int(v.id or 0), [])])
            if best is not None and best.crop_format is not None:
                crop = db.execute("SELECT crop FROM unknown_samples WHERE id = ?", (best.id,)).fetchone()[0]
                best = replace(best, crop_png=crop)
            out.append(Cluster(number, by_cluster[number], best))
    return out


def _resolve(db: sqlite3.Connection, target: int | Sequence[int]) -> tuple[int | None, list[int]]:
    """(cluster id or None, visit ids) of a cluster id or a list of visit ids; GalleryError when missing."""
    if isinstance(target, int | np.integer):
        target = int(target)
        ids = [int(r[0]) for r in db.execute("SELECT id FROM unknown_visits WHERE cluster = ? ORDER BY id",
                                             (target,))]
        if not ids:
            raise GalleryError(f"no unknown cluster {target} (run 'edged unknowns cluster'; "
                               f"'edged unknowns list' shows the clusters)")
        return target, ids
    wanted = sorted({int(i) for i in target})
    if not wanted:
        raise GalleryError("no unknown visits given")
    found = {int(r[0]) for r in db.execute(f"SELECT id FROM unknown_visits WHERE id IN ({_marks(len(wanted))})",
                                           wanted)}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise GalleryError(f"no unknown visit {_id_list(missing)}")
    return None, wanted


def _what(cluster_id: int | None, ids: Sequence[int]) -> str:
    return f"cluster {cluster_id}" if cluster_id is not None else f"visits {_id_list(ids)}"


def _samples_in(db: sqlite3.Connection, ids: Sequence[int]) -> list[UnknownSample]:
    return [_sample(r) for r in db.execute(_sample_query(True) + f" WHERE visit_id IN ({_marks(len(ids))}) "
                                           f"ORDER BY visit_id, id", list(ids))]


def _one_version(samples: Sequence[UnknownSample], what: str, gallery_versions: Sequence[str], path: Path) -> str:
    versions = sorted({s.embedder_version for s in samples})
    if not versions:
        raise GalleryError(f"{what} has no samples")
    if len(versions) > 1:
        raise GalleryError(f"{what} mixes embeddings of {', '.join(versions)}; name its visits separately")
    if gallery_versions and list(gallery_versions) != versions:
        raise GalleryError(f"{path}: {what} holds {versions[0]} embeddings but the gallery holds "
                           f"{', '.join(gallery_versions)}; refusing to mix embedders (cluster again after "
                           f"the daemon runs with the gallery's embedder)")
    return versions[0]


def name_cluster(gallery: Gallery, cluster_id_or_visit_ids: int | Sequence[int], name: str,
                 enroll_cfg: EnrollConfig, display_name: str | None = None,
                 embedder: Embedder | None = None) -> NameReport:
    """Enroll a cluster (or the given visits) as person `name` and delete the visits, in one transaction.

    The samples go through `edged enroll`'s gates: face_px >= enroll.min_face_px, sharpness >= enroll.blur_min,
    no near-duplicate (enroll.duplicate_max) of the person's stored samples or of each other, the best
    (face_px x sqrt(sharpness)) `enroll.video_samples`. GalleryError, and nothing changed, for a missing cluster
    or visit, embeddings of another embedder than the gallery's, or when no sample passes the gates.
    With `embedder` (the samples' own) and `enroll.mirror`, each kept sample with a stored crop is embedded again
    from it mirror-averaged, as `edged enroll` stores its samples (the daemon's embeddings are of one view).
    """
    from edged.gallery.enroll import CROP_FORMAT, embed_crops, gate_face, quality, select_distinct

    validate_name(name)
    with gallery._write(bump=False) as db:
        cluster_id, ids = _resolve(db, cluster_id_or_visit_ids)
        what = _what(cluster_id, ids)
        samples = _samples_in(db, ids)
        version = _one_version(samples, what, _gallery_versions(db), gallery.path)
        report = NameReport(name, cluster_id, ids)
        passing: list[UnknownSample] = []
        for s in samples:
            reason = gate_face(s.face_px, s.sharpness, enroll_cfg)
            if reason:
                report.rejected.append((_source(s), reason))
            else:
                passing.append(s)
        stored = [_vector(r[0]) for r in db.execute(
            "SELECT s.embedding FROM samples s JOIN people p ON p.id = s.person_id WHERE p.name = ? "
            "AND s.embedder_version = ?", (name, version))]
        new: list[NewSample] = []
        if passing:
            vectors = np.stack([s.embedding for s in passing]).astype(np.float32)
            scores = np.array([quality(s.face_px, s.sharpness) for s in passing])
            kept, dups, surplus = select_distinct(vectors, scores, enroll_cfg.video_samples, enroll_cfg.duplicate_max,
                                                  np.stack(stored) if stored else None)
            report.rejected += [(_source(passing[i]), f"near-duplicate (within duplicate_max "
                                                      f"{enroll_cfg.duplicate_max:g})") for i in dups]
            report.surplus = len(surplus)
            chosen = [passing[i] for i in sorted(kept)]
            vectors = {j: s.embedding for j, s in enumerate(chosen)}
            if enroll_cfg.mirror and embedder is not None and embedder.version == version:
                again = [j for j, s in enumerate(chosen) if s.crop_png and s.crop_format == CROP_FORMAT]
                if again:  # one batch for all of them
                    vectors.update(zip(again, embed_crops(embedder, [chosen[j].crop_png or b"" for j in again],
                                                          mirror=True), strict=True))
            for j, s in enumerate(chosen):
                crop = s.crop_png if enroll_cfg.keep_crops else None
                new.append(NewSample(vectors[j], s.embedder, s.embedder_version, _source(s), s.face_px, s.sharpness,
                                     crop, s.crop_format if crop else None))
        if not new:
            reasons = ", ".join(f"{r} {n}" for r, n in report.reason_counts().most_common())
            raise GalleryError(f"{what}: no sample passes the enroll gates ({reasons}); nothing changed")
        report.added = gallery.add_samples(name, new, display_name=display_name)  # joins this transaction
        db.execute(f"DELETE FROM unknown_visits WHERE id IN ({_marks(len(ids))})", ids)
        _bump_unknowns(db)
    log.info("unknowns: %s named %s: %d samples added, %d rejected", what, name, report.added, len(report.rejected))
    return report


def enroll_blocker(gallery: Gallery, visit_ids: Sequence[int], enroll_cfg: EnrollConfig) -> str | None:
    """Why naming these visits would enroll nothing (no sample passes `edged enroll`'s size and blur gates: the
    best sample's reason), or None when at least one sample passes."""
    from edged.gallery.enroll import gate_face, quality

    samples = samples_of(gallery, visit_ids)
    if not samples:
        return "no face kept"
    reasons = [(quality(s.face_px, s.sharpness), gate_face(s.face_px, s.sharpness, enroll_cfg)) for s in samples]
    if any(r is None for _, r in reasons):
        return None
    return str(max(reasons, key=lambda qr: qr[0])[1])


def _source(s: UnknownSample) -> str:
    return f"unknown-visit-{s.visit_id}#{s.id}"


# ---- the ignore list ----

def _check_ignore_versions(db: sqlite3.Connection, versions: Sequence[str], path: Path) -> None:
    if len(versions) > 1:
        raise GalleryError(f"cannot add ignore samples of several embedders at once ({', '.join(versions)})")
    gallery_versions = _gallery_versions(db)
    if gallery_versions and gallery_versions != list(versions):
        raise GalleryError(f"{path}: gallery holds {', '.join(gallery_versions)} embeddings; refusing to add "
                           f"{versions[0]} ignore samples (mixing embedders)")
    stored = [r[0] for r in db.execute("SELECT DISTINCT embedder_version FROM ignore_samples ORDER BY 1")]
    if stored and stored != list(versions):
        raise GalleryError(f"{path}: the ignore list holds {', '.join(stored)} embeddings; refusing to add "
                           f"{versions[0]} samples (remove the old labels with 'edged ignore remove LABEL')")


def add_ignore(gallery: Gallery, label: str, samples: Sequence[NewSample], now: Stamp | None = None) -> int:
    """Add samples under an ignore label (created if new) in one transaction; bumps the change counter.
    Refuses embeddings of another embedder than the gallery's and the ignore list's."""
    validate_name(label)
    if not samples:
        return 0
    stamp = iso_utc(now, "now") if now is not None else utc_now()
    rows = [(label, s.embedder, s.embedder_version, _vector_blob(s.embedding, f"ignore sample from {s.source}"),
             s.crop_png, s.crop_format if s.crop_png else None, s.source, stamp) for s in samples]
    with gallery._write() as db:
        _check_ignore_versions(db, sorted({s.embedder_version for s in samples}), gallery.path)
        db.executemany("INSERT INTO ignore_samples (label, embedder, embedder_version, embedding, crop, crop_format, "
                       "source, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return len(rows)


def ignore_cluster(gallery: Gallery, cluster_id_or_visit_ids: int | Sequence[int], label: str,
                   now: Stamp | None = None) -> int:
    """Move a cluster's (or the given visits') samples to the ignore list under `label` and delete the visits,
    in one transaction; returns how many samples moved. Bumps both counters."""
    validate_name(label)
    stamp = iso_utc(now, "now") if now is not None else utc_now()
    with gallery._write() as db:
        cluster_id, ids = _resolve(db, cluster_id_or_visit_ids)
        what = _what(cluster_id, ids)
        samples = _samples_in(db, ids)
        version = _one_version(samples, what, _gallery_versions(db), gallery.path)
        _check_ignore_versions(db, [version], gallery.path)
        db.executemany("INSERT INTO ignore_samples (label, embedder, embedder_version, embedding, crop, crop_format, "
                       "source, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       [(label, s.embedder, s.embedder_version, _vector_blob(s.embedding, _source(s)), s.crop_png,
                         s.crop_format if s.crop_png else None, _source(s), stamp) for s in samples])
        db.execute(f"DELETE FROM unknown_visits WHERE id IN ({_marks(len(ids))})", ids)
        _bump_unknowns(db)
    return len(samples)


def remove_ignore(gallery: Gallery, label: str) -> int:
    """Delete an ignore label's samples; returns how many went; GalleryError when there is no such label."""
    with gallery._write() as db:
        gone = db.execute("DELETE FROM ignore_samples WHERE label = ?", (label,)).rowcount
        if not gone:
            raise GalleryError(f"no ignore label {label!r} (see 'edged ignore list')")
    return int(gone)


def ignore_labels(gallery: Gallery) -> list[IgnoreLabel]:
    """The ignore list's labels, sorted."""
    with gallery._read() as db:
        rows = db.execute("SELECT label, COUNT(*), GROUP_CONCAT(DISTINCT embedder_version), MIN(created), "
                          "MAX(created) FROM ignore_samples GROUP BY label ORDER BY label").fetchall()
    return [IgnoreLabel(r[0], int(r[1]), sorted(str(r[2]).split(",")), r[3], r[4]) for r in rows]


def ignore_snapshot(gallery: Gallery, embedder_version: str) -> GallerySnapshot:
    """The ignore list as `edged.gallery.match.Matcher(ignore=...)` takes it (names = labels); only samples
    of `embedder_version` (others are skipped with a warning: after `gallery reembed`, add them again)."""
    with gallery._read() as db:
        counter = int(db.execute("SELECT value FROM change_counter WHERE id = 1").fetchone()[0])
        rows = db.execute("SELECT label, embedding FROM ignore_samples WHERE embedder_version = ? "
                          "ORDER BY label, id", (embedder_version,)).fetchall()
        other = int(db.execute("SELECT COUNT(*) FROM ignore_samples WHERE embedder_version != ?",
                               (embedder_version,)).fetchone()[0])
    if other:
        log.warning("%s: %d ignore samples are not %s embeddings and are not used; add those labels again",
                    gallery.path, other, embedder_version)
    names = sorted({r[0] for r in rows})
    index = {n: i for i, n in enumerate(names)}
    labels = np.array([index[r[0]] for r in rows], dtype=np.int64)
    vectors = np.stack([_vector(r[1]) for r in rows]) if rows else np.zeros((0, EMBEDDING_DIM), np.float32)
    return GallerySnapshot(names, labels, vectors, embedder_version if rows else None, counter)


def cohort(gallery: Gallery, embedder_version: str, limit: int) -> np.ndarray:
    """(n, 128) float32: embeddings of `embedder_version` of the stored unknown samples and the ignore list (the
    impostor faces the site knows), newest first, at most `limit`; for `Matcher(cohort=...)`."""
    if limit <= 0:
        return np.zeros((0, EMBEDDING_DIM), np.float32)
    with gallery._read() as db:
        rows = db.execute("SELECT embedding FROM (SELECT embedding, created, id, 0 AS k FROM unknown_samples "
                          "WHERE embedder_version = ? UNION ALL SELECT embedding, created, id, 1 FROM ignore_samples "
                          "WHERE embedder_version = ?) ORDER BY created DESC, k, id DESC LIMIT ?",
                          (embedder_version, embedder_version, int(limit))).fetchall()
    return np.stack([_vector(r[0]) for r in rows]) if rows else np.zeros((0, EMBEDDING_DIM), np.float32)


def ignore_photos(gallery_path: str | os.PathLike[str], label: str, items: Sequence[SourceItem], cfg: EnrollConfig,
                  choose_embedder: EmbedderChoice, *, largest: bool = False,
                  on_item: Callable[[SourceItem, str], None] | None = None) -> EnrollReport:
    """Detect, gate and embed photos like `edged enroll` (`edged.gallery.enroll.Enroller`, the gallery's
    embedder) and add the accepted faces to ignore label `label`. The gallery file is created only when there
    is something to store."""
    from edged.embed.faces import FacePipeline
    from edged.gallery.enroll import Enroller

    validate_name(label)
    path = Path(gallery_path).expanduser()
    gallery = Gallery(path, create=False) if path.exists() else None
    if gallery is None:
        ensure_directory(path)
    try:
        embedder = choose_embedder(gallery)
        stored = None
        if gallery is not None:
            snap = ignore_snapshot(gallery, embedder.version)
            mine = [i for i, n in enumerate(snap.names) if n == label]
            stored = snap.vectors[np.isin(snap.labels, mine)] if mine else None
        report = Enroller(FacePipeline(embedder), cfg, largest=largest, stored=stored).run(items, on_item)
        if report.samples:
            if gallery is None:
                gallery = Gallery(path, create=True)
            add_ignore(gallery, label, report.samples)
    finally:
        if gallery is not None:
            gallery.close()
    return report


#: Stored unknown faces closer than this many times an enrolled person's threshold are taken for that person
#: (dlib: 1.5 x 0.125 = 0.19, about the LFW verification threshold 0.18), not for strangers of the cohort.
COHORT_SELF_FACTOR = 1.5
#: Stored impostor faces used for the margin test (newest first).
COHORT_LIMIT = 5000


def site_matcher(gallery: Gallery, rule: MatchRule, snapshot: GallerySnapshot, embedder_version: str,
                 cohort_limit: int = COHORT_LIMIT) -> Matcher:
    """The rule's matcher with what this site knows: the ignore list, and the stored strangers as the cohort of
    the margin test. A stored unknown face that lies within `COHORT_SELF_FACTOR` times an enrolled person's
    threshold is left out of the cohort: it may be that person on a bad day (a blurred first look after a
    turn), and must not make them "ambiguous" at the door from then on (a user who names that visit enrolls
    it instead)."""
    version = embedder_version
    ignore = ignore_snapshot(gallery, version)
    faces = cohort(gallery, version, cohort_limit)
    if len(faces) and len(snapshot.names):
        plain = rule.matcher(snapshot)
        sc = plain.scores(faces)
        faces = faces[sc.s1 > COHORT_SELF_FACTOR * plain.threshold_of(sc)]
    return rule.matcher(snapshot, cohort=faces, ignore=ignore)
