"""The event history in the gallery file: what the web page lists (recognized / unknown / left / access).

Written by the daemon's web sink, read by the page inside the daemon and by `edged web` alone. Each row is an
event's published payload (the MQTT JSON) and, with `web.event_thumbnails`, a small face thumbnail (biometric
data: the file is 0600, and rows older than `web.events_retention_days` or beyond `web.events_max` are deleted).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edged.gallery.store import Gallery

#: Longest payload stored (JSON characters).
PAYLOAD_MAX = 64 * 1024
#: Largest thumbnail stored (bytes).
THUMB_MAX = 256 * 1024


@dataclass(frozen=True)
class StoredEvent:
    id: int
    wall: float
    kind: str
    person: str | None
    camera: str
    payload: dict[str, Any]
    has_thumb: bool
    thumb: bytes | None = field(default=None, repr=False)


def add(gallery: Gallery, kind: str, person: str | None, camera: str, wall: float, payload: Mapping[str, Any],
        thumb: bytes | None) -> int:
    """Store one event; returns its id. Bumps no counter (the daemon reloads nothing for it)."""
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    if len(text) > PAYLOAD_MAX:
        raise ValueError(f"event payload of {len(text)} characters (at most {PAYLOAD_MAX})")
    if thumb is not None and len(thumb) > THUMB_MAX:
        thumb = None
    with gallery._write(bump=False) as db:
        cur = db.execute("INSERT INTO events (wall, kind, person, camera, payload, thumb) VALUES (?, ?, ?, ?, ?, ?)",
                         (float(wall), kind, person, camera, text, thumb))
        return int(cur.lastrowid or 0)


def _row(r: tuple[Any, ...], with_thumb: bool) -> StoredEvent:
    return StoredEvent(int(r[0]), float(r[1]), str(r[2]), r[3], str(r[4]), json.loads(r[5]), bool(r[6]),
                       bytes(r[7]) if with_thumb and r[7] is not None else None)


def recent(gallery: Gallery, person: str | None = None, kind: str | None = None, since: float | None = None,
           limit: int = 200) -> list[StoredEvent]:
    """Newest first, filtered; without thumbnails (`has_thumb` says whether one is stored)."""
    where, params = [], []
    for column, value in (("person", person), ("kind", kind)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        where.append("wall >= ?")
        params.append(float(since))
    sql = ("SELECT id, wall, kind, person, camera, payload, thumb IS NOT NULL, NULL FROM events"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY wall DESC, id DESC LIMIT ?")
    with gallery._read() as db:
        rows = db.execute(sql, (*params, int(limit))).fetchall()
    return [_row(r, False) for r in rows]


def one(gallery: Gallery, event_id: int) -> StoredEvent | None:
    with gallery._read() as db:
        r = db.execute("SELECT id, wall, kind, person, camera, payload, thumb IS NOT NULL, thumb FROM events "
                       "WHERE id = ?", (int(event_id),)).fetchone()
    return None if r is None else _row(r, True)


def people(gallery: Gallery) -> list[str]:
    """Everyone with a stored event, sorted."""
    with gallery._read() as db:
        return [r[0] for r in db.execute("SELECT DISTINCT person FROM events WHERE person IS NOT NULL ORDER BY 1")]


def purge(gallery: Gallery, older_than_days: float, keep_max: int, now: float) -> int:
    """Delete events older than `older_than_days` and the oldest beyond `keep_max`; returns how many went."""
    with gallery._write(bump=False) as db:
        gone = db.execute("DELETE FROM events WHERE wall < ?", (now - older_than_days * 86400.0,)).rowcount
        gone += db.execute("DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY wall DESC, id DESC "
                           "LIMIT -1 OFFSET ?)", (int(keep_max),)).rowcount
    return int(gone)
