"""The gallery side of the fleet: what this box changed since it last synced, and applying a received record.

`fleet_items` (schema v5) keeps, per item, the record this box last published or applied: its rank (version,
origin), its content digest and its exact signed bytes (so any box can republish the winning record). A local
change is an item whose content digest differs from its row's: `edged enroll`, `edged remove`, a rename or an
ignore-list change made by any process on this box is found by comparing digests, nothing else needs to know
about the fleet. A received record is applied, when it wins, in one transaction with its row.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import Literal

from edged.errors import GalleryError
from edged.fleet.records import ItemState, Kind, Record, SyncedSample, content_digest, wins
from edged.gallery.store import Gallery, _refuse_slug_twin, _vector, _vector_blob, utc_now, validate_name

log = logging.getLogger(__name__)

ItemKey = tuple[str, str]
Outcome = Literal["applied", "same", "stale", "refused"]


@dataclass(frozen=True)
class SyncedItem:
    """This box's row for one item: the last record it published or applied."""

    kind: str
    key: str
    version: int
    origin: str
    deleted: bool
    digest: str
    raw: bytes

    @property
    def rank(self) -> tuple[int, str]:
        return (self.version, self.origin)


@dataclass(frozen=True)
class Applied:
    outcome: Outcome
    why: str = ""
    #: The stored record that beats the received one (outcome "stale"): republish it.
    better: bytes | None = None


def local_items(gallery: Gallery, crops: bool = False) -> dict[ItemKey, ItemState]:
    """Every person and ignore label in the gallery as fleet state, read in one transaction."""
    crop_cols = "s.crop, s.crop_format" if crops else "NULL, NULL"
    with gallery._read() as db:
        people = db.execute(
            f"SELECT p.name, p.display_name, s.embedder, s.embedder_version, s.embedding, s.face_px, s.sharpness, "
            f"s.source, s.created, {crop_cols} FROM people p JOIN samples s ON s.person_id = p.id "
            f"ORDER BY p.name, s.id").fetchall()
        ignores = db.execute(
            f"SELECT label, label, embedder, embedder_version, embedding, 0, 0.0, source, created, "
            f"{crop_cols.replace('s.', '')} FROM ignore_samples ORDER BY label, id").fetchall()
    out: dict[ItemKey, ItemState] = {}
    for kind, rows in (("person", people), ("ignore", ignores)):
        grouped: dict[str, list[tuple]] = {}
        for r in rows:
            grouped.setdefault(r[0], []).append(r)
        for key, group in grouped.items():
            first = group[0]
            samples = tuple(SyncedSample(_vector(r[4]), int(r[5]), float(r[6]), str(r[7]), str(r[8]),
                                         bytes(r[9]) if r[9] is not None else None, r[10]) for r in group)
            out[(kind, key)] = ItemState(kind, key, False, first[1], first[2], first[3], samples)  # type: ignore[arg-type]
    return out


_SYNCED = "SELECT kind, key, version, origin, deleted, digest, record FROM fleet_items"


def _synced(r: tuple) -> SyncedItem:
    return SyncedItem(r[0], r[1], int(r[2]), r[3], bool(r[4]), r[5], bytes(r[6]))


def synced_items(gallery: Gallery) -> dict[ItemKey, SyncedItem]:
    with gallery._lock:
        rows = gallery._db.execute(_SYNCED).fetchall()
    return {(r[0], r[1]): _synced(r) for r in rows}


def synced_item(gallery: Gallery, kind: str, key: str) -> SyncedItem | None:
    with gallery._lock:
        r = gallery._db.execute(_SYNCED + " WHERE kind = ? AND key = ?", (kind, key)).fetchone()
    return _synced(r) if r else None


@dataclass(frozen=True)
class LocalChange:
    state: ItemState
    #: The version the change is published as: one more than the highest this box has seen for the item.
    version: int


def local_changes(gallery: Gallery, crops: bool = False) -> list[LocalChange]:
    """Items whose content differs from what this box last synced: new, changed, or gone (a tombstone)."""
    local = local_items(gallery, crops)
    synced = synced_items(gallery)
    out = []
    for key, state in sorted(local.items()):
        row = synced.get(key)
        if row is None or row.deleted or row.digest != state.digest:
            out.append(LocalChange(state, (row.version if row else 0) + 1))
    for key, row in sorted(synced.items()):
        if key not in local and not row.deleted:
            out.append(LocalChange(ItemState(row.kind, row.key, deleted=True), row.version + 1))  # type: ignore[arg-type]
    return out


def _upsert(db: sqlite3.Connection, record: Record) -> None:
    db.execute("INSERT INTO fleet_items (kind, key, version, origin, deleted, digest, record, updated) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (kind, key) DO UPDATE SET version = excluded.version, "
               "origin = excluded.origin, deleted = excluded.deleted, digest = excluded.digest, "
               "record = excluded.record, updated = excluded.updated",
               (record.state.kind, record.state.key, record.version, record.origin, int(record.state.deleted),
                record.digest, record.raw, utc_now()))


def record_published(gallery: Gallery, record: Record) -> None:
    """Remember a record this box published (no change counter bump: matching data is unchanged)."""
    with gallery._write(bump=False) as db:
        _upsert(db, record)


def _current_digest(db: sqlite3.Connection, kind: Kind, key: str) -> str | None:
    if kind == "person":
        rows = db.execute("SELECT p.display_name, s.embedder_version, s.embedding FROM people p JOIN samples s "
                          "ON s.person_id = p.id WHERE p.name = ?", (key,)).fetchall()
    else:
        rows = db.execute("SELECT label, embedder_version, embedding FROM ignore_samples WHERE label = ?",
                          (key,)).fetchall()
    if not rows:
        return None
    samples = tuple(SyncedSample(_vector(r[2]), 0, 0.0, "", "") for r in rows)
    return content_digest(ItemState(kind, key, False, rows[0][0], "", rows[0][1], samples))


def _write_person(db: sqlite3.Connection, state: ItemState, stamp: str) -> None:
    row = db.execute("SELECT id FROM people WHERE name = ?", (state.key,)).fetchone()
    if state.deleted:
        if row is not None:
            db.execute("DELETE FROM people WHERE id = ?", (row[0],))
            db.execute("DELETE FROM events WHERE person = ?", (state.key,))
        return
    if row is None:
        _refuse_slug_twin(db, state.key)
        cur = db.execute("INSERT INTO people (name, display_name, created, updated) VALUES (?, ?, ?, ?)",
                         (state.key, state.display_name, stamp, stamp))
        person_id = int(cur.lastrowid or 0)
    else:  # the row (and its id, which Home Assistant's entities are keyed on) stays; its samples are replaced
        person_id = int(row[0])
        db.execute("UPDATE people SET display_name = ?, updated = ? WHERE id = ?", (state.display_name, stamp,
                                                                                   person_id))
        db.execute("DELETE FROM samples WHERE person_id = ?", (person_id,))
    db.executemany(
        "INSERT INTO samples (person_id, embedder, embedder_version, embedding, crop, crop_format, source, face_px, "
        "sharpness, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(person_id, state.embedder, state.embedder_version, _vector_blob(s.embedding, f"fleet sample of {state.key}"),
          s.crop, s.crop_format, s.source, s.face_px, s.sharpness, s.created) for s in state.samples])


def _write_ignore(db: sqlite3.Connection, state: ItemState) -> None:
    db.execute("DELETE FROM ignore_samples WHERE label = ?", (state.key,))
    if not state.deleted:
        db.executemany(
            "INSERT INTO ignore_samples (label, embedder, embedder_version, embedding, crop, crop_format, source, "
            "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(state.key, state.embedder, state.embedder_version, _vector_blob(s.embedding, f"fleet ignore {state.key}"),
              s.crop, s.crop_format, s.source, s.created) for s in state.samples])


def apply_record(gallery: Gallery, record: Record, embedder_version: str) -> Applied:
    """Apply a verified record when it beats this box's row for its item, all in one transaction (the item's
    samples, its row, the change counter); "stale" carries the stored record that beats it."""
    state = record.state
    try:
        validate_name(state.key)
    except GalleryError as exc:
        return Applied("refused", str(exc))
    if not state.deleted and state.embedder_version != embedder_version:
        return Applied("refused", f"embeddings of {state.embedder_version}, this box uses {embedder_version} "
                                  f"(boxes of one fleet need the same embedder)")
    with gallery._write() as db:
        row = db.execute("SELECT version, origin, record FROM fleet_items WHERE kind = ? AND key = ?",
                         (state.kind, state.key)).fetchone()
        stored = (int(row[0]), str(row[1])) if row else None
        if stored == record.rank:
            return Applied("same")
        if not wins(record.rank, stored):
            return Applied("stale", f"this box has version {stored[0]} from {stored[1]}",  # type: ignore[index]
                           bytes(row[2]))
        if not state.deleted:
            other = db.execute("SELECT DISTINCT embedder_version FROM samples").fetchall()
            if other and [r[0] for r in other] != [embedder_version]:
                return Applied("refused", f"this box's gallery holds {other[0][0]} embeddings")
        stamp = utc_now()
        try:
            if state.kind == "person":
                _write_person(db, state, stamp)
            else:
                _write_ignore(db, state)
        except GalleryError as exc:
            raise _Refused(str(exc)) from exc
        if _current_digest(db, state.kind, state.key) != (None if state.deleted else record.digest):
            raise _Refused("content differs after applying (not applied)")
        _upsert(db, record)
    return Applied("applied")


class _Refused(GalleryError):
    pass


def apply(gallery: Gallery, record: Record, embedder_version: str) -> Applied:
    """`apply_record`, with a refusal found inside the transaction (rolled back) as an outcome."""
    try:
        return apply_record(gallery, record, embedder_version)
    except _Refused as exc:
        return Applied("refused", str(exc))
