"""The enrolled gallery: people and their face samples in one SQLite file.

* WAL mode, a busy timeout and a single-row change counter bumped in the same transaction as
  every write, so other processes (the daemon) notice changes with one cheap read.
* Schema version in `PRAGMA user_version` (migrations below), `PRAGMA application_id` marks
  the file as an edged gallery, foreign keys on.
* Every write is one transaction (`BEGIN IMMEDIATE ... COMMIT`): a failed or killed writer
  leaves the gallery exactly as it was.
* Biometric data: the file is created 0600 (SQLite gives its -wal/-shm files the same mode)
  and a directory created for it 0700.

Each sample holds the embedding (128 float32), the embedder name and version, and, unless
`enroll.keep_crops` is false, the canonical face crop as PNG (see `edged.enroll`) so the
gallery can be re-embedded with another model.

Schema v2 adds the ignore list and the store of unknown visitors (`edged.gallery.unknowns`);
unknown-visitor writes bump their own `unknowns_counter`, not the change counter.

Schema v3 adds the door's hash-chained audit log and its lockout state (`edged.gallery.audit`); their
writes bump no counter. v4 the web page's event history, v5 the fleet's record per item (`edged.fleet.state`).
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import stat
import threading
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from edged.distance import EMBEDDING_DIM, squared_l2
from edged.errors import GalleryError
from edged.fileio import shown

log = logging.getLogger(__name__)

#: Current schema version (PRAGMA user_version).
SCHEMA_VERSION = 5
#: PRAGMA application_id of edged galleries ("EDGD").
APPLICATION_ID = 0x45444744
#: Seconds a writer waits for another writer before giving up.
BUSY_TIMEOUT_S = 15.0
#: Longest person name.
NAME_MAX = 64
DISPLAY_NAME_MAX = 128

#: Schema migrations: MIGRATIONS[v] brings a gallery from version v-1 to v.
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE people (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        display_name TEXT NOT NULL,
        created TEXT NOT NULL,
        updated TEXT NOT NULL
    );
    CREATE TABLE samples (
        id INTEGER PRIMARY KEY,
        person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
        embedder TEXT NOT NULL,
        embedder_version TEXT NOT NULL,
        embedding BLOB NOT NULL,
        crop BLOB,
        crop_format TEXT,
        source TEXT NOT NULL,
        face_px INTEGER NOT NULL,
        sharpness REAL NOT NULL,
        created TEXT NOT NULL
    );
    CREATE INDEX samples_person ON samples(person_id);
    CREATE TABLE change_counter (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
    INSERT INTO change_counter VALUES (1, 0);
    """,
    # v2: the ignore list (negative anchors; matching data, so its writes bump change_counter) and the
    # unknown visitors (edged.gallery.unknowns; their writes bump only unknowns_counter, so the daemon
    # does not reload its matcher every time it stores a stranger).
    2: """
    CREATE TABLE ignore_samples (
        id INTEGER PRIMARY KEY,
        label TEXT NOT NULL,
        embedder TEXT NOT NULL,
        embedder_version TEXT NOT NULL,
        embedding BLOB NOT NULL,
        crop BLOB,
        crop_format TEXT,
        source TEXT NOT NULL,
        created TEXT NOT NULL
    );
    CREATE INDEX ignore_samples_label ON ignore_samples(label);
    CREATE TABLE unknown_visits (
        id INTEGER PRIMARY KEY,
        camera TEXT NOT NULL,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        track_id INTEGER,
        candidate TEXT,
        distance REAL,
        reason TEXT,
        cluster INTEGER,
        created TEXT NOT NULL
    );
    CREATE INDEX unknown_visits_last_seen ON unknown_visits(last_seen);
    CREATE INDEX unknown_visits_cluster ON unknown_visits(cluster);
    CREATE TABLE unknown_samples (
        id INTEGER PRIMARY KEY,
        visit_id INTEGER NOT NULL REFERENCES unknown_visits(id) ON DELETE CASCADE,
        embedder TEXT NOT NULL,
        embedder_version TEXT NOT NULL,
        embedding BLOB NOT NULL,
        crop BLOB,
        crop_format TEXT,
        face_px INTEGER NOT NULL,
        sharpness REAL NOT NULL,
        created TEXT NOT NULL
    );
    CREATE INDEX unknown_samples_visit ON unknown_samples(visit_id);
    CREATE TABLE unknowns_counter (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
    INSERT INTO unknowns_counter VALUES (1, 0);
    """,
    # v3: the door's audit log (edged.gallery.audit: append-only, each row's hash chains to the previous
    # one, the first remaining row to audit_anchor; the triggers refuse edits and any delete but purge's)
    # and the lockout state per door. No counter is bumped: the daemon need not reload anything.
    3: """
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        created TEXT NOT NULL,
        door TEXT NOT NULL,
        camera TEXT NOT NULL,
        decision TEXT NOT NULL,
        person TEXT,
        track_id INTEGER,
        reasons TEXT NOT NULL,
        scores TEXT NOT NULL,
        crop BLOB,
        config_version TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_created ON audit(created);
    CREATE TABLE audit_anchor (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        hash TEXT NOT NULL,
        last_id INTEGER NOT NULL,
        purged INTEGER NOT NULL,
        purged_at TEXT,
        seal TEXT
    );
    INSERT INTO audit_anchor VALUES (1, '0000000000000000000000000000000000000000000000000000000000000000',
                                     0, 0, NULL, NULL);
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    WHEN OLD.id > (SELECT last_id FROM audit_anchor WHERE id = 1)
    BEGIN SELECT RAISE(ABORT, 'audit rows are deleted only by purge'); END;
    CREATE TABLE access_state (
        door TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        window_start REAL,
        level INTEGER NOT NULL,
        locked_until REAL,
        updated TEXT NOT NULL
    );
    """,
    # v4: the event history the web page lists (edged.gallery.events), thumbnails only with
    # web.event_thumbnails; retention by web.events_retention_days and web.events_max. No counter is bumped.
    4: """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        wall REAL NOT NULL,
        kind TEXT NOT NULL,
        person TEXT,
        camera TEXT NOT NULL,
        payload TEXT NOT NULL,
        thumb BLOB
    );
    CREATE INDEX events_wall ON events(wall);
    CREATE INDEX events_person ON events(person, wall);
    """,
    # v5: the fleet (edged.fleet.state): per person or ignore label, the last record this box published or
    # applied: its rank (version, origin), content digest and signed bytes. Its writes bump no counter.
    5: """
    CREATE TABLE fleet_items (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        version INTEGER NOT NULL,
        origin TEXT NOT NULL,
        deleted INTEGER NOT NULL,
        digest TEXT NOT NULL,
        record BLOB NOT NULL,
        updated TEXT NOT NULL,
        PRIMARY KEY (kind, key)
    );
    """,
}


def migration_statements(script: str) -> list[str]:
    """The SQL statements of a migration, split at the `;` that end them (not those inside a trigger body)."""
    out, buf = [], ""
    for part in script.split(";"):
        buf += part + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \t\n;"):
                out.append(buf.strip())
            buf = ""
    if buf.strip(" \t\n;"):
        out.append(buf.strip().rstrip(";"))  # a last statement without its `;`
    return out


@dataclass(frozen=True)
class Person:
    """One enrolled person; timestamps are ISO-8601 UTC."""

    name: str
    display_name: str
    samples: int
    created: str
    updated: str
    #: Stable row id: survives a rename (Home Assistant entities are keyed on it).
    id: int = 0


@dataclass(frozen=True)
class GallerySnapshot:
    """Everything matching needs, read in one transaction."""

    names: list[str]
    labels: np.ndarray
    vectors: np.ndarray
    embedder_version: str | None
    change_counter: int


@dataclass(frozen=True)
class NewSample:
    """A sample to store: the embedding, who made it, and where it came from."""

    embedding: np.ndarray
    embedder: str
    embedder_version: str
    source: str
    face_px: int
    sharpness: float
    crop_png: bytes | None = None
    crop_format: str | None = None


@dataclass(frozen=True)
class Sample:
    """A stored sample (crop bytes only when asked for)."""

    id: int
    person: str
    embedder: str
    embedder_version: str
    embedding: np.ndarray
    source: str
    face_px: int
    sharpness: float
    created: str
    crop_png: bytes | None
    crop_format: str | None


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def name_slug(name: str) -> str:
    """A name as MQTT topics and Home Assistant object ids see it: lower case, runs of other characters as '_'."""
    return re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "person"


def _refuse_slug_twin(db: sqlite3.Connection, name: str, but: str | None = None) -> None:
    """Refuse a name that only differs from an enrolled one in case or punctuation ('Obama' beside 'obama'):
    in topics, entity ids and speech they are the same person."""
    slug = name_slug(name)
    for (other,) in db.execute("SELECT name FROM people"):
        if other not in (name, but) and name_slug(other) == slug:
            raise GalleryError(f"name {name!r} is too close to {other!r}, already enrolled (both read as "
                               f"{slug!r}); choose another name, or enroll the photos as {other!r}")


def validate_name(name: str) -> str:
    """A person name usable in file names, MQTT topics and logs; raises GalleryError naming the problem."""
    shown = ascii(name)
    if not name:
        raise GalleryError("invalid name '': must not be empty")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise GalleryError(f"invalid name {shown}: contains control characters")
    if "/" in name or "\\" in name or os.sep in name:
        raise GalleryError(f"invalid name {shown}: contains a path separator")
    if name in (".", ".."):
        raise GalleryError(f"invalid name {shown}: '.' and '..' are not names")
    if any(c.isspace() for c in name):
        raise GalleryError(f"invalid name {shown}: contains whitespace (use '_' or '-'; "
                           f"--display-name takes free text)")
    if len(name) > NAME_MAX:
        raise GalleryError(f"invalid name {shown}: longer than {NAME_MAX} characters")
    bad = sorted({c for c in name if not (c.isalnum() or c in "_.-")})
    if bad:
        raise GalleryError(f"invalid name {shown}: contains {''.join(bad)!r} "
                           f"(allowed: letters, digits, '_', '.', '-')")
    return name


def validate_display_name(text: str) -> str:
    if not text.strip():
        raise GalleryError("invalid display name: must not be empty")
    if any(unicodedata.category(c).startswith("C") for c in text):
        raise GalleryError(f"invalid display name {text!a}: contains control characters")
    if len(text) > DISPLAY_NAME_MAX:
        raise GalleryError(f"invalid display name: longer than {DISPLAY_NAME_MAX} characters")
    return text.strip()


def _vector_blob(vec: np.ndarray, what: str) -> bytes:
    v = np.asarray(vec, dtype=np.float32).reshape(-1)
    if v.shape != (EMBEDDING_DIM,) or not np.all(np.isfinite(v)):
        raise GalleryError(f"{what}: expected {EMBEDDING_DIM} finite floats, got shape {v.shape}")
    return v.astype("<f4").tobytes()


def _vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def _without_duplicates(db: sqlite3.Connection, rows: list[tuple], duplicate_max: float,
                        on_duplicate: Callable[[int, float], None] | None) -> list[tuple]:
    """The sample rows (as `add_samples` builds them) not within `duplicate_max` (squared L2; 0 always) of a
    sample stored with their embedder version, nor of an earlier row; read in the caller's write transaction."""
    version = rows[0][1]
    blobs = {bytes(r[0]) for r in db.execute("SELECT embedding FROM samples WHERE embedder_version = ?",
                                             (version,))}
    have = np.stack([_vector(b) for b in blobs]) if blobs else np.zeros((0, EMBEDDING_DIM), np.float32)
    kept = []
    for i, row in enumerate(rows):
        v = _vector(row[2])
        d = 0.0 if row[2] in blobs else float(squared_l2(v[None], have)[0].min()) if len(have) else float("inf")
        if d < duplicate_max or row[2] in blobs:
            if on_duplicate is not None:
                on_duplicate(i, d)
            continue
        kept.append(row)
        blobs.add(row[2])
        have = np.concatenate([have, v[None]])
    return kept


def ensure_directory(path: str | os.PathLike[str]) -> None:
    """Create the gallery file's missing directories (mode 0700); GalleryError when that is impossible."""
    parent = Path(path).expanduser().parent
    if parent.is_dir():
        if not os.access(parent, os.W_OK | os.X_OK):
            raise GalleryError(f"cannot create gallery in {parent}: permission denied")
        return
    missing = []
    probe = parent
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise GalleryError(f"cannot create gallery directory {parent}: {probe} is not a directory")
    try:
        for d in reversed(missing):
            d.mkdir(mode=0o700)
            os.chmod(d, 0o700)
    except OSError as exc:
        raise GalleryError(f"cannot create gallery directory {parent}: {exc.strerror or exc}") from exc


def _prepare_path(path: Path, create: bool) -> bool:
    """Check (and if allowed create) the gallery's directory and file; True when the file is new."""
    if path.is_dir():
        raise GalleryError(f"{path}: is a directory, not a gallery file")
    if path.exists():
        if _gallery_header(path):  # anything else is refused later and left untouched, mode included
            _tighten_mode(path)
        return False
    if not create:
        raise GalleryError(f"{path}: no gallery here (enroll someone first: edged enroll NAME IMAGE)")
    ensure_directory(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except FileExistsError:
        return False
    except OSError as exc:
        raise GalleryError(f"cannot create gallery {path}: {exc.strerror or exc}") from exc
    return True


def _gallery_header(path: Path) -> bool:
    """The file is an SQLite database carrying edged's application id (nothing written).

    Read through SQLite, never with a plain open(): closing any descriptor of a database file drops every POSIX
    lock this process holds on it, so a daemon's open connection would silently lose its locks (and see stale
    data) each time another connection to the same gallery is opened in the same process. SQLite itself
    keeps such descriptors open until its last connection to the file closes."""
    if not path.is_file():
        return False
    try:
        probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            app_id = probe.execute("PRAGMA application_id").fetchone()[0]
        finally:
            probe.close()
    except sqlite3.Error:
        return False
    return int(app_id) == APPLICATION_ID


def _tighten_mode(path: Path) -> None:
    """A gallery readable by others becomes 0600 (only for a file that proved to be a gallery)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        try:
            os.chmod(path, 0o600)
            log.warning("%s was readable by others (mode %o); set to 0600", path, mode)
        except OSError:
            log.warning("%s is readable by others (mode %o) and cannot be changed", path, mode)


class Gallery:
    """An open gallery file; safe to share between threads, and between processes through SQLite."""

    def __init__(self, path: str | os.PathLike[str], create: bool = True) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.RLock()
        self._writing = False  # a `_write` transaction of this object is open (only read under _lock)
        created = _prepare_path(self.path, create)
        try:
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                       check_same_thread=False)
        except sqlite3.Error as exc:
            raise GalleryError(f"{self.path}: cannot open ({exc})") from exc
        try:
            self._check_and_migrate(created)
        except BaseException:
            self._db.close()
            raise

    # ---- opening ----

    def _check_and_migrate(self, created: bool) -> None:
        db = self._db
        try:
            # one read transaction: another process creating the same gallery commits its schema between our
            # reads otherwise (version 0 read before its commit, its tables after: "not an edged gallery")
            db.execute("BEGIN")
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                app_id = db.execute("PRAGMA application_id").fetchone()[0]
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            finally:
                if db.in_transaction:
                    db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"{self.path}: not an edged gallery (not an SQLite database: {exc})") from exc
        if app_id not in (0, APPLICATION_ID) or (version == 0 and tables) or (version > 0 and "people" not in tables):
            raise GalleryError(f"{self.path}: not an edged gallery (an SQLite database of another program)")
        if version > SCHEMA_VERSION:
            raise GalleryError(f"{self.path}: gallery schema version {version} is newer than this edged supports "
                               f"({SCHEMA_VERSION}); upgrade edged")
        _tighten_mode(self.path)  # a gallery (the header check in `_prepare_path` already did it for most)
        try:
            db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA secure_delete = ON")  # deleted faces are overwritten, not left in free pages
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"{self.path}: cannot open gallery ({exc})") from exc
        if version < SCHEMA_VERSION:
            self._migrate(version)
            if created:
                log.info("created gallery %s", self.path)

    def _migrate(self, current: int) -> None:
        with self._write(bump=False) as db:
            now = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated meanwhile
            for target in range(max(current, now) + 1, SCHEMA_VERSION + 1):
                for statement in migration_statements(MIGRATIONS[target]):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {target}")
                log.info("gallery %s: schema migrated to version %d", self.path, target)
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transactions ----

    @contextmanager
    def _write(self, bump: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction; the change counter is bumped in it.

        Opened inside another `_write` of this thread it joins that transaction (`add_samples` inside
        `edged.gallery.unknowns.name_cluster`): everything commits, or rolls back, with the outermost one.
        """
        with self._lock:
            if self._writing:
                yield self._db
                if bump:
                    self._db.execute("UPDATE change_counter SET value = value + 1 WHERE id = 1")
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise GalleryError(f"{self.path}: gallery is busy or read-only ({exc}); try again") from exc
            self._writing = True
            try:
                yield self._db
                if bump:
                    self._db.execute("UPDATE change_counter SET value = value + 1 WHERE id = 1")
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            finally:
                self._writing = False

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent read transaction (WAL: never blocked by a writer)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    def _person_id(self, db: sqlite3.Connection, name: str) -> int:
        row = db.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise GalleryError(f"no person named {name!r} in the gallery")
        return int(row[0])

    # ---- reading ----

    def change_counter(self) -> int:
        """Bumped by every committed write from any process (one indexed row read)."""
        with self._lock:
            return int(self._db.execute("SELECT value FROM change_counter WHERE id = 1").fetchone()[0])

    def people(self) -> list[Person]:
        with self._lock:
            rows = self._db.execute(
                "SELECT p.name, p.display_name, COUNT(s.id), p.created, p.updated, p.id FROM people p "
                "LEFT JOIN samples s ON s.person_id = p.id GROUP BY p.id ORDER BY p.name").fetchall()
        return [Person(*r) for r in rows]

    def person(self, name: str) -> Person:
        for p in self.people():
            if p.name == name:
                return p
        raise GalleryError(f"no person named {name!r} in the gallery")

    def embedder_versions(self) -> list[tuple[str, str]]:
        """Distinct (embedder, version) pairs of the stored samples."""
        with self._lock:
            return [(r[0], r[1]) for r in self._db.execute(
                "SELECT DISTINCT embedder, embedder_version FROM samples ORDER BY embedder_version")]

    def embedder_version(self) -> str | None:
        """The version all samples use; None when the gallery is empty."""
        found = self.embedder_versions()
        if len({v for _, v in found}) > 1:
            raise GalleryError(f"{self.path}: gallery mixes embedders ({', '.join(v for _, v in found)}); "
                               f"run 'edged gallery reembed'")
        return found[0][1] if found else None

    def embedder_name(self) -> str | None:
        """The embedder name (e.g. 'dlib') of the stored samples; None when empty."""
        found = self.embedder_versions()
        return found[0][0] if found else None

    def snapshot(self, embedder_version: str) -> GallerySnapshot:
        """All samples as arrays; raises GalleryError when they come from another embedder."""
        with self._read() as db:
            counter = int(db.execute("SELECT value FROM change_counter WHERE id = 1").fetchone()[0])
            versions = [r[0] for r in db.execute("SELECT DISTINCT embedder_version FROM samples")]
            rows = db.execute("SELECT p.name, s.embedding FROM samples s JOIN people p ON p.id = s.person_id "
                              "ORDER BY p.name, s.id").fetchall()
        if versions and versions != [embedder_version]:
            raise GalleryError(f"{self.path}: gallery holds embeddings of {', '.join(sorted(versions))}, "
                               f"not {embedder_version}; run 'edged gallery reembed --embedder NAME' "
                               f"or choose the gallery's embedder")
        names = sorted({r[0] for r in rows})
        index = {n: i for i, n in enumerate(names)}
        labels = np.array([index[r[0]] for r in rows], dtype=np.int64)
        vectors = (np.stack([_vector(r[1]) for r in rows]) if rows
                   else np.zeros((0, EMBEDDING_DIM), np.float32))
        return GallerySnapshot(names, labels, vectors, versions[0] if versions else None, counter)

    def samples(self, name: str | None = None, with_crops: bool = False) -> list[Sample]:
        """Stored samples (of one person, or all), oldest first per person."""
        crop_cols = "s.crop, s.crop_format" if with_crops else "NULL, s.crop_format"
        query = (f"SELECT s.id, p.name, s.embedder, s.embedder_version, s.embedding, s.source, s.face_px, "
                 f"s.sharpness, s.created, {crop_cols} FROM samples s JOIN people p ON p.id = s.person_id")
        with self._read() as db:
            if name is not None:
                self._person_id(db, name)
                rows = db.execute(query + " WHERE p.name = ? ORDER BY s.id", (name,)).fetchall()
            else:
                rows = db.execute(query + " ORDER BY p.name, s.id").fetchall()
        return [Sample(r[0], r[1], r[2], r[3], _vector(r[4]), r[5], r[6], r[7], r[8], r[9], r[10]) for r in rows]

    def samples_without_crops(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM samples WHERE crop IS NULL").fetchone()[0])

    # ---- writing ----

    def add_samples(self, name: str, samples: Sequence[NewSample], display_name: str | None = None,
                    now: str | None = None, duplicate_max: float | None = None,
                    on_duplicate: Callable[[int, float], None] | None = None) -> int:
        """Add samples to `name` (created if new) in one transaction; refuses to mix embedders.

        With `duplicate_max`, a sample within that squared L2 of a stored sample (of anyone, with this embedder)
        or of one added before it is skipped, `on_duplicate(index, distance)` told: the check runs inside the
        write transaction, so two enrollments of the same photos at once cannot both store them. Returns how
        many samples were stored."""
        validate_name(name)
        if display_name is not None:
            display_name = validate_display_name(display_name)
        if not samples:
            return 0
        versions = {s.embedder_version for s in samples}
        if len(versions) > 1:
            raise GalleryError(f"cannot add samples of several embedders at once ({', '.join(sorted(versions))})")
        stamp = now or utc_now()
        rows = [(s.embedder, s.embedder_version, _vector_blob(s.embedding, f"sample from {shown(s.source)}"),
                 s.crop_png, s.crop_format, shown(s.source, 1024), int(s.face_px), float(s.sharpness), stamp)
                for s in samples]
        with self._write() as db:
            stored = [r[0] for r in db.execute("SELECT DISTINCT embedder_version FROM samples")]
            if stored and stored != list(versions):
                raise GalleryError(f"{self.path}: gallery holds {stored[0]} embeddings; refusing to add "
                                   f"{samples[0].embedder_version} samples (mixing embedders); run "
                                   f"'edged gallery reembed --embedder {samples[0].embedder}' first")
            if duplicate_max is not None:
                rows = _without_duplicates(db, rows, duplicate_max, on_duplicate)
                if not rows:
                    return 0
            row = db.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
            if row is None:
                _refuse_slug_twin(db, name)
                cur = db.execute("INSERT INTO people (name, display_name, created, updated) VALUES (?, ?, ?, ?)",
                                 (name, display_name or name, stamp, stamp))
                person_id = int(cur.lastrowid or 0)
            else:
                person_id = int(row[0])
                if display_name:
                    db.execute("UPDATE people SET display_name = ? WHERE id = ?", (display_name, person_id))
                db.execute("UPDATE people SET updated = ? WHERE id = ?", (stamp, person_id))
            db.executemany(
                "INSERT INTO samples (person_id, embedder, embedder_version, embedding, crop, crop_format, source, "
                "face_px, sharpness, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(person_id, *r) for r in rows])
        return len(rows)

    def remove_person(self, name: str) -> int:
        """Delete a person, all their samples and their event history (the web page's); returns how many
        samples went. The audit log keeps its rows (tamper-evident; retention is its own)."""
        with self._write() as db:
            pid = self._person_id(db, name)
            count = db.execute("SELECT COUNT(*) FROM samples WHERE person_id = ?", (pid,)).fetchone()[0]
            db.execute("DELETE FROM people WHERE id = ?", (pid,))
            db.execute("DELETE FROM events WHERE person = ?", (name,))
        return int(count)

    def remove_sample(self, name: str, sample_id: int) -> None:
        """Delete one sample of `name`; refuses the last one (remove the person instead)."""
        with self._write() as db:
            pid = self._person_id(db, name)
            row = db.execute("SELECT 1 FROM samples WHERE id = ? AND person_id = ?", (int(sample_id), pid)).fetchone()
            if row is None:
                raise GalleryError(f"{name!r} has no sample {int(sample_id)}")
            if db.execute("SELECT COUNT(*) FROM samples WHERE person_id = ?", (pid,)).fetchone()[0] <= 1:
                raise GalleryError(f"sample {int(sample_id)} is the last of {name!r}: remove the person instead")
            db.execute("DELETE FROM samples WHERE id = ?", (int(sample_id),))

    def sample_crop(self, sample_id: int) -> tuple[bytes, str] | None:
        """The stored canonical crop of one sample (bytes, format), None when it keeps none."""
        with self._lock:
            row = self._db.execute("SELECT crop, crop_format FROM samples WHERE id = ?", (int(sample_id),)).fetchone()
        return (bytes(row[0]), str(row[1])) if row is not None and row[0] is not None else None

    def rename_person(self, old: str, new: str, now: str | None = None) -> None:
        validate_name(new)
        with self._write() as db:
            pid = self._person_id(db, old)
            if db.execute("SELECT 1 FROM people WHERE name = ?", (new,)).fetchone():
                raise GalleryError(f"cannot rename {old!r} to {new!r}: {new!r} is already in the gallery")
            _refuse_slug_twin(db, new, but=old)
            db.execute("UPDATE people SET name = ?, display_name = CASE WHEN display_name = ? THEN ? "
                       "ELSE display_name END, updated = ? WHERE id = ?", (new, old, new, now or utc_now(), pid))

    def set_display_name(self, name: str, display_name: str, now: str | None = None) -> None:
        text = validate_display_name(display_name)
        with self._write() as db:
            pid = self._person_id(db, name)
            db.execute("UPDATE people SET display_name = ?, updated = ? WHERE id = ?", (text, now or utc_now(), pid))

    def replace_embeddings(self, embedder: str, embedder_version: str, vectors: dict[int, np.ndarray],
                           expected_counter: int | None = None) -> None:
        """Swap every sample's embedding for another embedder's, all in one transaction.

        `vectors` must cover every stored sample; `expected_counter` (the counter when the crops
        were read) guards against samples added meanwhile.
        """
        blobs = {sid: _vector_blob(v, f"sample {sid}") for sid, v in vectors.items()}
        with self._write() as db:
            if expected_counter is not None:
                now = db.execute("SELECT value FROM change_counter WHERE id = 1").fetchone()[0]
                if now != expected_counter:
                    raise GalleryError(f"{self.path}: gallery changed while re-embedding; run it again")
            ids = {r[0] for r in db.execute("SELECT id FROM samples")}
            if ids != set(blobs):
                raise GalleryError(f"{self.path}: re-embedding must cover all {len(ids)} samples, got {len(blobs)}")
            db.executemany("UPDATE samples SET embedder = ?, embedder_version = ?, embedding = ? WHERE id = ?",
                           [(embedder, embedder_version, b, sid) for sid, b in blobs.items()])

    def integrity_check(self) -> str:
        with self._lock:
            return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])
