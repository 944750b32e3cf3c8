"""The door's audit log and lockout state, in the gallery file (schema v3; SQL + hashlib).

**The log.** Every access decision of the door is one row of `audit`: when (ISO-8601 UTC with
milliseconds), which door and camera, the decision (`granted`, `denied`, `alarm`, ...), who (the gallery
name, or None), the track, the reasons (a JSON list), the scores (a flat JSON object: distance,
confidence, liveness, ...), the face crop (PNG, only when the controller passes one: `audit.keep_crops`)
and the config version the decision was made under. Rows are only appended (`append`): the database
refuses UPDATE on them and DELETE of any row `purge` did not release (triggers of the schema), and each
write is one transaction that bumps no counter, so the daemon never reloads its matcher for it.

**The chain.** Each row carries `prev_hash`, the hash of the row before it, and `hash`, the SHA-256 of
the canonical JSON of all its fields (`row_hash`: id, created, door, camera, decision, person,
track_id, reasons, scores, the SHA-256 of the crop bytes, config_version and prev_hash; keys sorted, no
spaces, ASCII). The previous hash is read in the same `BEGIN IMMEDIATE` transaction that inserts the row,
so appenders in several processes still form one chain. Ids are consecutive. The first remaining row
chains to the single row of `audit_anchor`: the genesis value (64 zeros) or, after `purge`, the hash and
id of the last purged row, with the number purged and when, sealed by a SHA-256 of those fields.

**What `verify` detects** (and names the row): any column of a row edited, the crop included (hash
mismatch); a row renumbered or moved (its hash is that of another id); a row deleted anywhere but at the
end (a gap in the ids); a row edited *and* re-hashed (the next row's prev_hash no longer matches); rows
deleted at the start without moving the anchor, and an anchor edited without re-sealing it. **What it
cannot detect on its own:** the newest rows removed (the rest is still a valid chain), and someone who
rewrites the chain from an edit onwards with recomputed hashes (the code is public; there is no secret
key). Both are detectable only against a copy of a recent head hash kept outside the gallery file:
`verify` reports the head (`VerifyReport.head_hash`; `edged audit verify` prints it) and
`verify(expect_head=HASH)` fails when that hash is no longer in the chain.

**Lockout state.** `access_state` keeps, per door, the failed attempts in the current window, the
window start and the lock-out (cool-down doublings, locked until; epoch seconds), so a restart does not
reset a lock-out: `load_state`, `save_state` (or `append(..., state=...)`, in the audit row's
transaction).

Stable for the access controller: `AuditEntry`, `append`, `DoorState`, `load_state`, `save_state`,
`purge`; for tools: `records`, `record`, `verify`, `export`, `row_hash`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import re
import sqlite3
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

from edged.errors import GalleryError
from edged.fileio import atomic_write
from edged.gallery.store import Gallery

log = logging.getLogger(__name__)

#: What the first row of an unpurged log chains to.
GENESIS = "0" * 64
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Longest door / camera name, person name, reason, score key, config version; most reasons and scores.
NAME_MAX = 64
PERSON_MAX = 128
TEXT_MAX = 256
CONFIG_VERSION_MAX = 128
REASONS_MAX = 32
SCORES_MAX = 32
#: Largest face crop stored (bytes of PNG).
CROP_MAX = 8 << 20
#: A decision: a lower-case word (`granted`, `denied`, `alarm`, `unlocked`, ...).
DECISION_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")
#: The fields `row_hash` covers, in the order they are stored.
HASHED_FIELDS = ("id", "created", "door", "camera", "decision", "person", "track_id", "reasons", "scores",
                 "crop_sha256", "config_version", "prev_hash")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_COLUMNS = ("id, created, door, camera, decision, person, track_id, reasons, scores, crop, config_version, "
            "prev_hash, hash")
#: Ids tried when a row's hash does not match its content (is it another row's, renumbered?).
_RENUMBER_WINDOW = 8

#: A point in time: ISO-8601 text, a datetime (naive = UTC) or POSIX seconds.
Stamp = str | datetime | float


# ---- values ----

@dataclass(frozen=True)
class AuditEntry:
    """One access decision to record.

    `decision`: a lower-case word (`granted`, `denied`, `alarm`, ...; a StrEnum works). `person`: the gallery
    name decided on (None: nobody). `reasons`: short texts (why denied, what was checked). `scores`: a flat
    mapping of name to number, text, bool or None (numpy scalars are converted; NaN and infinities are
    stored as None). `crop`: the face as PNG bytes, only when `audit.keep_crops`. `config_version`: which
    settings decided (a hash or a version text). `created`: when (default: the clock at `append`).
    """

    door: str
    camera: str
    decision: str
    person: str | None = None
    track_id: int | None = None
    reasons: Sequence[str] = ()
    scores: Mapping[str, Any] = field(default_factory=dict)
    crop: bytes | None = field(default=None, repr=False)
    config_version: str = ""
    created: Stamp | None = None


@dataclass(frozen=True)
class AuditRecord:
    """A stored row of the log (`crop` bytes only when asked for; `has_crop` always)."""

    id: int
    created: str
    door: str
    camera: str
    decision: str
    person: str | None
    track_id: int | None
    reasons: tuple[str, ...]
    scores: dict[str, Any]
    has_crop: bool
    config_version: str
    prev_hash: str
    hash: str
    crop: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class VerifyReport:
    """What `verify` found. `ok`; `rows` in the log; the first bad row's id and what is wrong with it
    (`problem`; for anchor and head problems `first_bad_id` is None); the head (newest row, or the anchor
    when the log is empty) to record elsewhere; the anchor (last purged id, rows purged so far)."""

    ok: bool
    rows: int
    first_bad_id: int | None = None
    problem: str | None = None
    head_id: int = 0
    head_hash: str = GENESIS
    anchor_id: int = 0
    anchor_hash: str = GENESIS
    purged: int = 0
    where: str = "row"  # what `problem` is about: row | anchor | head

    @property
    def message(self) -> str:
        """One line: 'audit row 17: hash mismatch (edited)', or what is intact."""
        if not self.ok:
            subject = f"row {self.first_bad_id}" if self.first_bad_id is not None else self.where
            return f"audit {subject}: {self.problem}"
        span = f"rows {self.anchor_id + 1}-{self.head_id}" if self.rows else "no rows"
        return f"audit log intact: {self.rows} rows ({span}), {self.purged} purged"


@dataclass(frozen=True)
class DoorState:
    """A door's lockout state: failed attempts in the current window (which started at `window_start`),
    the cool-down level (doublings) and until when the door is locked out (epoch seconds; None: not);
    `updated` (ISO-8601 UTC) is set by `save_state`."""

    door: str
    failures: int = 0
    window_start: float | None = None
    level: int = 0
    locked_until: float | None = None
    updated: str | None = None


# ---- helpers ----

def iso_ms(value: Stamp | None = None, what: str = "time") -> str:
    """`value` (default: now) as ISO-8601 UTC with milliseconds and 'Z', the form of `created`."""
    if value is None:
        moment = datetime.now(UTC)
    elif isinstance(value, bool):
        raise GalleryError(f"{what}: expected a time, got {value!r}")
    elif isinstance(value, int | float):
        try:
            moment = datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise GalleryError(f"{what}: not a usable POSIX time: {value!r}") from exc
    elif isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError as exc:
            raise GalleryError(f"{what}: not an ISO-8601 time: {value!a}") from exc
    else:
        raise GalleryError(f"{what}: expected ISO-8601 text, a datetime or POSIX seconds, got {type(value).__name__}")
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def row_hash(fields: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of a row's `HASHED_FIELDS` (other keys are ignored).

    A line of `export` is such a mapping: `row_hash(json.loads(line)) == json.loads(line)["hash"]` checks it
    without edged's database.
    """
    try:
        payload = _dumps({k: fields.get(k) for k in HASHED_FIELDS})
    except (TypeError, ValueError) as exc:
        raise GalleryError(f"audit row: fields not representable as JSON ({exc})") from exc
    return hashlib.sha256(payload.encode("ascii")).hexdigest()


def _seal(anchor_hash: Any, last_id: Any, purged: Any, purged_at: Any) -> str:
    payload = _dumps({"anchor": {"hash": _plain(anchor_hash), "last_id": _plain(last_id),
                                 "purged": _plain(purged), "purged_at": _plain(purged_at)}})
    return hashlib.sha256(payload.encode("ascii")).hexdigest()


def _plain(value: Any) -> Any:
    """A stored value as JSON can hold it (an edited column may hold anything SQLite can)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"blob": bytes(value).hex()}
    if isinstance(value, float) and not math.isfinite(value):
        return {"real": repr(value)}
    return value


def _stored_json(text: Any) -> Any:
    """A reasons/scores column as written by `append` (canonical JSON), else the raw value (hashes differently)."""
    if isinstance(text, str):
        try:
            value = json.loads(text)
            if _dumps(value) == text:
                return value
        except ValueError:
            pass
    return _plain(text)


def _crop_digest(crop: Any) -> str | None:
    if crop is None:
        return None
    data = crop.encode("utf-8") if isinstance(crop, str) else bytes(crop) if isinstance(
        crop, bytes | bytearray | memoryview) else repr(crop).encode()
    return hashlib.sha256(data).hexdigest()


def _stored_fields(row: Sequence[Any]) -> dict[str, Any]:
    """The hashed fields of an `_COLUMNS` row as stored."""
    return {"id": _plain(row[0]), "created": _plain(row[1]), "door": _plain(row[2]), "camera": _plain(row[3]),
            "decision": _plain(row[4]), "person": _plain(row[5]), "track_id": _plain(row[6]),
            "reasons": _stored_json(row[7]), "scores": _stored_json(row[8]), "crop_sha256": _crop_digest(row[9]),
            "config_version": _plain(row[10]), "prev_hash": _plain(row[11])}


def _text(value: Any, what: str, limit: int, empty: bool = False) -> str:
    if isinstance(value, Enum):
        value = value.value
    if not isinstance(value, str):
        raise GalleryError(f"audit entry: {what} must be text, got {type(value).__name__}")
    if not value and not empty:
        raise GalleryError(f"audit entry: {what} must not be empty")
    if len(value) > limit:
        raise GalleryError(f"audit entry: {what} is longer than {limit} characters")
    if any(unicodedata.category(c).startswith("C") for c in value):
        raise GalleryError(f"audit entry: {what} {value!a} contains control characters")
    return value


def _score(key: str, value: Any) -> Any:
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:  # numpy scalars
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return _text(value, f"score {key!a}", TEXT_MAX, empty=True) if isinstance(value, str) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    raise GalleryError(f"audit entry: score {key!a} must be a number, text, bool or None, "
                       f"got {type(value).__name__}")


def _entry_fields(entry: AuditEntry) -> tuple[dict[str, Any], bytes | None]:
    """The validated hashed fields of an entry (less id and prev_hash), and its crop bytes."""
    decision = _text(entry.decision, "decision", 32)
    if not DECISION_PATTERN.match(decision):
        raise GalleryError(f"audit entry: decision {decision!a} must be a lower-case word (granted, denied, ...)")
    reasons_in = [entry.reasons] if isinstance(entry.reasons, str | Enum) else list(entry.reasons)
    if len(reasons_in) > REASONS_MAX:
        raise GalleryError(f"audit entry: more than {REASONS_MAX} reasons")
    reasons = [_text(r, "reason", TEXT_MAX) for r in reasons_in]
    if not isinstance(entry.scores, Mapping):
        raise GalleryError(f"audit entry: scores must be a mapping, got {type(entry.scores).__name__}")
    if len(entry.scores) > SCORES_MAX:
        raise GalleryError(f"audit entry: more than {SCORES_MAX} scores")
    scores = {}
    for key, value in entry.scores.items():
        name = _text(key, "score name", NAME_MAX)
        scores[name] = _score(name, value)
    track = entry.track_id
    if track is not None:
        if isinstance(track, bool) or (not isinstance(track, int) and not hasattr(track, "__index__")):
            raise GalleryError(f"audit entry: track_id must be an integer, got {type(track).__name__}")
        track = int(track)
    crop = entry.crop
    if crop is not None:
        if not isinstance(crop, bytes | bytearray | memoryview):
            raise GalleryError(f"audit entry: crop must be PNG bytes, got {type(crop).__name__}")
        crop = bytes(crop)
        if not crop.startswith(PNG_SIGNATURE):
            raise GalleryError("audit entry: crop is not a PNG image")
        if len(crop) > CROP_MAX:
            raise GalleryError(f"audit entry: crop is larger than {CROP_MAX >> 20} MiB")
    fields = {"created": iso_ms(entry.created, "audit entry: created"),
              "door": _text(entry.door, "door", NAME_MAX), "camera": _text(entry.camera, "camera", NAME_MAX),
              "decision": decision,
              "person": None if entry.person is None else _text(entry.person, "person", PERSON_MAX),
              "track_id": track, "reasons": reasons, "scores": scores, "crop_sha256": _crop_digest(crop),
              "config_version": _text(entry.config_version, "config_version", CONFIG_VERSION_MAX, empty=True)}
    return fields, crop


def _record(row: Sequence[Any], with_crop: bool) -> AuditRecord:
    reasons = _stored_json(row[7])
    scores = _stored_json(row[8])
    return AuditRecord(id=int(row[0]), created=str(row[1]), door=str(row[2]), camera=str(row[3]),
                       decision=str(row[4]), person=None if row[5] is None else str(row[5]),
                       track_id=row[6] if isinstance(row[6], int) or row[6] is None else None,
                       reasons=tuple(str(r) for r in reasons) if isinstance(reasons, list) else (str(row[7]),),
                       scores=scores if isinstance(scores, dict) else {"unparsed": str(row[8])},
                       has_crop=row[9] is not None, config_version=str(row[10]), prev_hash=str(row[11]),
                       hash=str(row[12]), crop=bytes(row[9]) if with_crop and row[9] is not None else None)


@contextmanager
def _sql(gallery: Gallery, what: str) -> Iterator[None]:
    """SQLite errors (a damaged or hand-edited file) as one-line GalleryErrors."""
    try:
        yield
    except sqlite3.Error as exc:
        raise GalleryError(f"{gallery.path}: {what}: {exc}") from exc


def _save_state(db: sqlite3.Connection, state: DoorState, stamp: str) -> None:
    door = _text(state.door, "door", NAME_MAX)
    for what, value in (("failures", state.failures), ("level", state.level)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise GalleryError(f"door state {door}: {what} must be an integer >= 0, got {value!r}")
    times = []
    for what, value in (("window_start", state.window_start), ("locked_until", state.locked_until)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not math.isfinite(value)):
            raise GalleryError(f"door state {door}: {what} must be epoch seconds or None, got {value!r}")
        times.append(None if value is None else float(value))
    db.execute("INSERT INTO access_state (door, failures, window_start, level, locked_until, updated) "
               "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(door) DO UPDATE SET failures = excluded.failures, "
               "window_start = excluded.window_start, level = excluded.level, "
               "locked_until = excluded.locked_until, updated = excluded.updated",
               (door, int(state.failures), times[0], int(state.level), times[1], stamp))


# ---- writing ----

def append(gallery: Gallery, entry: AuditEntry, state: DoorState | None = None) -> AuditRecord:
    """Record one decision as the next row of the chain; returns the stored row (without the crop bytes).

    One transaction that bumps no counter: it takes the write lock, reads the last row's hash (or the
    anchor's), inserts the row with the next id, and saves `state` (the door's lockout state) when given.
    Refuses (GalleryError, nothing written) invalid entries: see `AuditEntry`. A log that fails `verify`
    is still appended to (the evidence stays).
    """
    fields, crop = _entry_fields(entry)
    with _sql(gallery, "audit log"), gallery._write(bump=False) as db:
        anchor = db.execute("SELECT last_id, hash FROM audit_anchor WHERE id = 1").fetchone()
        anchor_id, anchor_hash = (int(anchor[0]), str(anchor[1])) if anchor else (0, GENESIS)
        last = db.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        if last is None or int(last[0]) <= anchor_id:
            new_id, prev = anchor_id + 1, anchor_hash
        else:
            new_id, prev = int(last[0]) + 1, str(last[1])
        row = {**fields, "id": new_id, "prev_hash": prev}
        digest = row_hash(row)
        db.execute(f"INSERT INTO audit ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (new_id, row["created"], row["door"], row["camera"], row["decision"], row["person"],
                    row["track_id"], _dumps(row["reasons"]), _dumps(row["scores"]), crop, row["config_version"],
                    prev, digest))
        if state is not None:
            _save_state(db, state, row["created"])
    return AuditRecord(id=new_id, created=row["created"], door=row["door"], camera=row["camera"],
                       decision=row["decision"], person=row["person"], track_id=row["track_id"],
                       reasons=tuple(row["reasons"]), scores=dict(row["scores"]), has_crop=crop is not None,
                       config_version=row["config_version"], prev_hash=prev, hash=digest)


def purge(gallery: Gallery, older_than_days: float, now: Stamp | None = None, force: bool = False) -> int:
    """Retention: delete the oldest rows, those created more than `older_than_days` before `now` (default:
    the clock) up to the first newer one, and move the anchor to the last deleted row, so `verify` still
    passes; one transaction; returns how many rows went (their crops are overwritten: secure_delete).

    Refuses (GalleryError, nothing deleted) when the rows to delete, or the link to the first row kept, fail
    verification: purging them would destroy the evidence. `force` purges them anyway (after the evidence
    was exported: `export`) and starts the kept rows afresh from a new anchor.
    """
    if isinstance(older_than_days, bool) or not isinstance(older_than_days, int | float) \
            or not (math.isfinite(older_than_days) and older_than_days >= 0):
        raise GalleryError(f"audit purge: older than must be >= 0 days, got {older_than_days!r}")
    at = datetime.fromisoformat(iso_ms(now, "now")[:-1] + "+00:00")
    cut = iso_ms(at - timedelta(days=float(older_than_days)))
    stamp = iso_ms(at)
    with _sql(gallery, "audit purge"), gallery._write(bump=False) as db:
        kept = db.execute("SELECT MIN(id) FROM audit WHERE created >= ?", (cut,)).fetchone()[0]
        last = db.execute("SELECT MAX(id) FROM audit" + (" WHERE id < ?" if kept is not None else ""),
                          () if kept is None else (kept,)).fetchone()[0]
        if last is None:
            return 0
        report = _verify(db, upto=last) if kept is None else _verify(db, upto=int(kept), link_only=True)
        if not report.ok:
            if not force:
                raise GalleryError(f"{report.message}; not purging (it would destroy the evidence): "
                                   f"see 'edged audit verify', export the log, then purge with --force")
            log.warning("audit: purging a broken chain (%s)", report.message)
        anchor = db.execute("SELECT purged FROM audit_anchor WHERE id = 1").fetchone()
        before = anchor[0] if anchor is not None and isinstance(anchor[0], int) else 0
        last_hash = str(db.execute("SELECT hash FROM audit WHERE id = ?", (last,)).fetchone()[0])
        gone = int(db.execute("SELECT COUNT(*) FROM audit WHERE id <= ?", (last,)).fetchone()[0])
        purged = before + gone
        # The anchor moves first: the schema's trigger lets only rows at or before it be deleted.
        db.execute("INSERT OR REPLACE INTO audit_anchor (id, hash, last_id, purged, purged_at, seal) "
                   "VALUES (1, ?, ?, ?, ?, ?)", (last_hash, int(last), purged, stamp,
                                                 _seal(last_hash, int(last), purged, stamp)))
        db.execute("DELETE FROM audit WHERE id <= ?", (last,))
    log.info("audit: purged %d rows (up to row %d, created before %s)", gone, last, cut)
    return gone


# ---- reading ----

def records(gallery: Gallery, since: Stamp | None = None, until: Stamp | None = None, door: str | None = None,
            person: str | None = None, decision: str | None = None, limit: int | None = None,
            with_crops: bool = False) -> list[AuditRecord]:
    """Stored rows, newest first: created at or after `since` and before `until`, of one door / person /
    decision when given, at most `limit` (the newest)."""
    where, params = [], []
    if since is not None:
        where.append("created >= ?")
        params.append(iso_ms(since, "since"))
    if until is not None:
        where.append("created < ?")
        params.append(iso_ms(until, "until"))
    for column, value in (("door", door), ("person", person), ("decision", decision)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value.value if isinstance(value, Enum) else value)
    columns = _COLUMNS if with_crops else _COLUMNS.replace("crop,", "CASE WHEN crop IS NULL THEN NULL ELSE x'' END,")
    query = f"SELECT {columns} FROM audit" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC"
    if limit is not None:
        query += f" LIMIT {max(int(limit), 0)}"
    with _sql(gallery, "audit log"), gallery._read() as db:
        rows = db.execute(query, params).fetchall()
    return [_record(r, with_crops) for r in rows]


def record(gallery: Gallery, record_id: int, with_crop: bool = True) -> AuditRecord:
    """One row (with its crop bytes); GalleryError when there is none with that id."""
    with _sql(gallery, "audit log"), gallery._read() as db:
        row = db.execute(f"SELECT {_COLUMNS} FROM audit WHERE id = ?", (int(record_id),)).fetchone()
        anchor = db.execute("SELECT last_id FROM audit_anchor WHERE id = 1").fetchone()
    if row is None:
        purged = anchor is not None and int(record_id) <= int(anchor[0])
        raise GalleryError(f"no audit row {record_id}" + (" (purged)" if purged else " (see 'edged audit list')"))
    return _record(row, with_crop)


def verify(gallery: Gallery, expect_head: str | None = None) -> VerifyReport:
    """Check the whole chain (and, with `expect_head`, that a head hash recorded earlier is still in it);
    the first problem found, naming the row. Read in one transaction: never blocks appenders. See the
    module docstring for what is and is not detectable."""
    if expect_head is not None:
        expect_head = expect_head.strip().lower()
        if not _HEX64.match(expect_head):
            raise GalleryError(f"expected head must be a SHA-256 hash (64 hex digits), got {expect_head!a}")
    with _sql(gallery, "audit verify"), gallery._read() as db:
        return _verify(db, expect_head=expect_head)


def _verify(db: sqlite3.Connection, upto: int | None = None, link_only: bool = False,
            expect_head: str | None = None) -> VerifyReport:
    """Walk the chain from the anchor (up to and including row `upto` when given; with `link_only`, of row
    `upto` only its id and prev_hash are checked, not its content)."""
    rows = int(db.execute("SELECT COUNT(*) FROM audit").fetchone()[0])
    anchors = db.execute("SELECT hash, last_id, purged, purged_at, seal FROM audit_anchor").fetchall()
    bad = {"ok": False, "rows": rows}
    if len(anchors) != 1:
        return VerifyReport(**bad, where="anchor", problem="missing" if not anchors else f"{len(anchors)} rows")
    a_hash, a_id, a_purged, a_at, a_seal = anchors[0]
    if a_seal is None:
        intact = (a_hash, a_id, a_purged, a_at) == (GENESIS, 0, 0, None)
        problem = "edited (not the genesis anchor, and not sealed by a purge)"
    else:
        intact = (isinstance(a_id, int) and isinstance(a_purged, int) and isinstance(a_hash, str)
                  and a_seal == _seal(a_hash, a_id, a_purged, a_at))
        problem = "edited (its seal does not match)"
    if not intact:
        return VerifyReport(**bad, where="anchor", problem=problem)
    known = {"anchor_id": a_id, "anchor_hash": a_hash, "purged": a_purged}
    expected, prev, prev_id = a_id + 1, a_hash, a_id
    seen_head = expect_head is None or expect_head == a_hash
    query = f"SELECT {_COLUMNS} FROM audit" + (" WHERE id <= ?" if upto is not None else "") + " ORDER BY id"
    for row in db.execute(query, () if upto is None else (upto,)):
        rid, stored = row[0], row[12]
        fields = _stored_fields(row)
        if not (link_only and rid == upto) and row_hash(fields) != stored:
            ids = [j for j in range(expected - _RENUMBER_WINDOW, expected + _RENUMBER_WINDOW + 1) if j > 0]
            if isinstance(rid, int):
                ids += [j for j in range(rid - _RENUMBER_WINDOW, rid + _RENUMBER_WINDOW + 1) if j > 0]
            moved = next((j for j in dict.fromkeys(ids) if j != rid and row_hash({**fields, "id": j}) == stored), None)
            problem = f"renumbered (its hash is that of row {moved})" if moved is not None else "hash mismatch (edited)"
            return VerifyReport(**bad, first_bad_id=rid, problem=problem, **known)
        if rid < expected:
            return VerifyReport(**bad, first_bad_id=rid, problem=f"at or before the anchor (last purged row "
                                f"{a_id}): anchor edited?", **known)
        if rid > expected:
            start = f"after purged row {a_id}" if a_id else "at row 1"
            after = f"rows {prev_id} -> {rid}" if prev_id > a_id else f"the log starts {start}, its first row is {rid}"
            span = "" if rid == expected + 1 else f" to {rid - 1}"
            return VerifyReport(**bad, first_bad_id=expected, problem=f"missing{span} ({after}: deleted?)", **known)
        if row[11] != prev:
            if prev_id == a_id:
                problem = "does not chain to the anchor (prev_hash differs: rows before it deleted, or edited?)"
                return VerifyReport(**bad, first_bad_id=rid, problem=problem, **known)
            return VerifyReport(**bad, first_bad_id=prev_id, problem=f"hash changed (row {rid}'s prev_hash does "
                                f"not match it: edited and re-hashed?)", **known)
        expected, prev, prev_id = rid + 1, stored, rid
        seen_head = seen_head or stored == expect_head
    if not seen_head:
        return VerifyReport(**bad, where="head", head_id=prev_id, head_hash=prev, problem=(
            f"the expected head {expect_head[:16]}... is not in the chain: its newest rows were removed or "
            f"rewritten" + (" (or purged since)" if a_purged else "")), **known)
    return VerifyReport(ok=True, rows=rows, head_id=prev_id, head_hash=prev, **known)


def export(gallery: Gallery, path: str | Path, crops: bool = False, overwrite: bool = False) -> int:
    """Write the whole log, oldest first, as JSON lines (one object per row: the `HASHED_FIELDS` as stored,
    `hash`, and with `crops` the crop as base64 under `crop`) to `path`, atomically, mode 0600; returns the
    rows written. Each line passes `row_hash`; the first line's prev_hash is the anchor. Refuses an existing
    file unless `overwrite`."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise GalleryError(f"{target}: is a directory")
    if target.exists() and not overwrite:
        raise GalleryError(f"{target} exists; refusing to overwrite it (--force)")
    lines = []
    with _sql(gallery, "audit export"), gallery._read() as db:
        for row in db.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY id"):
            obj = {**_stored_fields(row), "hash": _plain(row[12])}
            if crops and row[9] is not None:
                obj["crop"] = base64.b64encode(bytes(row[9]) if not isinstance(row[9], str)
                                               else row[9].encode()).decode("ascii")
            lines.append(_dumps(obj) + "\n")
    atomic_write(target, "".join(lines), 0o600, error=GalleryError)
    return len(lines)


# ---- lockout state ----

def load_state(gallery: Gallery, door: str) -> DoorState | None:
    """The door's saved lockout state; None when none was saved."""
    with _sql(gallery, "access state"), gallery._read() as db:
        row = db.execute("SELECT door, failures, window_start, level, locked_until, updated FROM access_state "
                         "WHERE door = ?", (door,)).fetchone()
    if row is None:
        return None
    return DoorState(door=row[0], failures=int(row[1]), window_start=row[2], level=int(row[3]),
                     locked_until=row[4], updated=row[5])


def save_state(gallery: Gallery, state: DoorState, now: Stamp | None = None) -> None:
    """Store the door's lockout state (replacing the previous one) in one transaction; `updated` is `now`
    (default: the clock). GalleryError for negative counts or non-finite times."""
    stamp = iso_ms(now, "now")
    with _sql(gallery, "access state"), gallery._write(bump=False) as db:
        _save_state(db, state, stamp)
