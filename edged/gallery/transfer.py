"""Gallery export and import: portable JSON with a SHA-256 over the canonical payload."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from edged import fileio
from edged.errors import GalleryError
from edged.gallery.store import (
    Gallery,
    NewSample,
    Sample,
    _vector,
    _vector_blob,
    utc_now,
    validate_display_name,
    validate_name,
)

#: Format tag of exported galleries.
EXPORT_FORMAT = "edged-gallery-export"
EXPORT_VERSION = 1


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write a file whole or not at all (a `GalleryError` names it on failure)."""
    fileio.atomic_write(path, data, mode, error=GalleryError)


def export_gallery(gallery: Gallery, path: str | os.PathLike[str], now: str | None = None) -> dict[str, int]:
    """Write every person and sample (embeddings and crops) to a checksummed JSON file (mode 0600)."""
    people = gallery.people()
    samples = gallery.samples(with_crops=True)
    by_person: dict[str, list[Sample]] = {}
    for s in samples:
        by_person.setdefault(s.person, []).append(s)
    payload = {
        "exported": now or utc_now(),
        "people": [{
            "name": p.name, "display_name": p.display_name, "created": p.created, "updated": p.updated,
            "samples": [{
                "embedder": s.embedder, "embedder_version": s.embedder_version,
                "embedding": base64.b64encode(s.embedding.astype("<f4").tobytes()).decode(),
                "crop_png": base64.b64encode(s.crop_png).decode() if s.crop_png else None,
                "crop_format": s.crop_format, "source": s.source, "face_px": s.face_px,
                "sharpness": s.sharpness, "created": s.created,
            } for s in by_person.get(p.name, [])],
        } for p in people],
    }
    doc = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION,
           "sha256": hashlib.sha256(_canonical(payload)).hexdigest(), "payload": payload}
    atomic_write(Path(path), json.dumps(doc, separators=(",", ":")).encode() + b"\n")
    return {"people": len(people), "samples": len(samples)}


def read_export(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and verify an export file; returns its payload."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError as exc:
        raise GalleryError(f"{p}: no such file") from exc
    except OSError as exc:
        raise GalleryError(f"{p}: cannot read ({exc.strerror or exc})") from exc
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GalleryError(f"{p}: not an edged gallery export (invalid JSON: {exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise GalleryError(f"{p}: not an edged gallery export")
    if not isinstance(doc.get("version"), int) or doc["version"] > EXPORT_VERSION:
        raise GalleryError(f"{p}: export version {doc.get('version')!r} is newer than this edged supports")
    payload = doc.get("payload")
    if not isinstance(payload, dict) or hashlib.sha256(_canonical(payload)).hexdigest() != doc.get("sha256"):
        raise GalleryError(f"{p}: checksum mismatch (file corrupt or edited)")
    return payload


def import_gallery(gallery: Gallery, path: str | os.PathLike[str], now: str | None = None) -> dict[str, int]:
    """Add an export's people and samples in one transaction; samples already stored are skipped."""
    payload = read_export(path)
    name = str(path)
    stamp = now or utc_now()
    try:
        people = [(validate_name(p["name"]), validate_display_name(p.get("display_name") or p["name"]),
                   str(p.get("created") or stamp), str(p.get("updated") or stamp),
                   [(NewSample(_vector(base64.b64decode(s["embedding"], validate=True)), str(s["embedder"]),
                               str(s["embedder_version"]), str(s["source"]), int(s["face_px"]),
                               float(s["sharpness"]),
                               base64.b64decode(s["crop_png"], validate=True) if s.get("crop_png") else None,
                               s.get("crop_format")), str(s.get("created") or stamp)) for s in p["samples"]])
                  for p in payload["people"]]
    except GalleryError as exc:
        raise GalleryError(f"{name}: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise GalleryError(f"{name}: malformed export ({type(exc).__name__}: {exc})") from exc
    incoming = {s.embedder_version for *_, ss in people for s, _ in ss}
    if len(incoming) > 1:
        raise GalleryError(f"{name}: export mixes embedders ({', '.join(sorted(incoming))})")
    added = skipped = new_people = 0
    with gallery._write() as db:
        stored = [r[0] for r in db.execute("SELECT DISTINCT embedder_version FROM samples")]
        if stored and incoming and stored != sorted(incoming):
            raise GalleryError(f"{name}: export holds {', '.join(sorted(incoming))} embeddings but the gallery "
                               f"holds {stored[0]}; refusing to mix embedders")
        for pname, display, created, updated, samples in people:
            row = db.execute("SELECT id FROM people WHERE name = ?", (pname,)).fetchone()
            if row is None:  # a restored person keeps their own timestamps
                pid = int(db.execute("INSERT INTO people (name, display_name, created, updated) VALUES (?,?,?,?)",
                                     (pname, display, created, updated)).lastrowid or 0)
                new_people += 1
                touched = updated
            else:
                pid = int(row[0])
                touched = stamp
            have = {bytes(r[0]) for r in db.execute("SELECT embedding FROM samples WHERE person_id = ?", (pid,))}
            added_here = 0
            for s, s_created in samples:
                blob = _vector_blob(s.embedding, f"{name}: sample of {pname}")
                if blob in have:
                    skipped += 1
                    continue
                have.add(blob)
                db.execute("INSERT INTO samples (person_id, embedder, embedder_version, embedding, crop, crop_format, "
                           "source, face_px, sharpness, created) VALUES (?,?,?,?,?,?,?,?,?,?)",
                           (pid, s.embedder, s.embedder_version, blob, s.crop_png, s.crop_format, s.source,
                            s.face_px, s.sharpness, s_created))
                added_here += 1
            if added_here and row is not None:
                db.execute("UPDATE people SET updated = ? WHERE id = ?", (touched, pid))
            added += added_here
    return {"people": new_people, "samples": added, "skipped": skipped}
