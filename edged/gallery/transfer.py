"""Gallery export and import: portable JSON with a SHA-256 over the canonical payload."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from edged import fileio
from edged.distance import EMBEDDING_DIM
from edged.errors import GalleryError, ImageError
from edged.fileio import read_regular, shown
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
from edged.vision.imageio import decode_image

#: Format tag of exported galleries.
EXPORT_FORMAT = "edged-gallery-export"
EXPORT_VERSION = 1


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _canonical_chunks(value: Any) -> Iterator[bytes]:
    """`_canonical(value)` in pieces (no copy of a large payload in memory); the same bytes."""
    if isinstance(value, dict):
        yield b"{"
        for i, key in enumerate(sorted(value)):
            yield (b"," if i else b"") + json.dumps(key, ensure_ascii=True).encode() + b":"
            yield from _canonical_chunks(value[key])
        yield b"}"
    elif isinstance(value, list):
        yield b"["
        for i, item in enumerate(value):
            if i:
                yield b","
            yield from _canonical_chunks(item)
        yield b"]"
    else:
        yield json.dumps(value, ensure_ascii=True).encode()


def _checksum(payload: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    for chunk in _canonical_chunks(payload):
        digest.update(chunk)
    return digest.hexdigest()


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


#: Refuse export files larger than this (checked with stat and enforced while reading; json needs a few
#: times the file's size in memory). A door's gallery with crops is a few MB.
MAX_EXPORT_BYTES = 256 * 2**20
#: An imported embedding's L2 norm must lie within this of 1 (embedders give unit vectors).
NORM_TOLERANCE = 1e-3
#: Largest stored crop accepted (a 224 x 224 RGB PNG is at most ~150 KB).
MAX_CROP_BYTES = 2 * 2**20
_CROP_FORMAT = re.compile(r"^edged-face-(\d{2,4})-roll-(\d{1,4})px-v\d{1,3}$")
_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$")
_IDENT = re.compile(r"^[A-Za-z0-9_.:+-]{1,128}$")


def _no_constant(value: str) -> float:
    raise ValueError(f"{value} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def read_export(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and verify an export file (format, version, checksum and every field, see `load_export`);
    returns its payload."""
    return load_export(path, keep_payload=True).payload


@dataclass(frozen=True)
class LoadedExport:
    """A verified export: the people ready to store (and the payload when asked for)."""

    name: str
    #: (name, display name, created, updated, [(sample, created)]) per person, in file order.
    people: list[tuple[str, str, str, str, list[tuple[NewSample, str]]]]
    payload: dict[str, Any]


def load_export(path: str | os.PathLike[str], now: str | None = None, keep_payload: bool = False) -> LoadedExport:
    """Read, checksum and validate an export: every field of every person and sample is checked before
    anything is written; the first problem is a `GalleryError` naming the file, the position (person and
    sample index, name) and the field. The payload's text is dropped sample by sample as it is checked
    (memory: about twice the file at most), unless `keep_payload`."""
    name = shown(path)
    raw = read_regular(path, MAX_EXPORT_BYTES, GalleryError, "an export file")
    try:
        text = raw.decode("utf-8")
        del raw  # peak memory: the text and the parsed document, never the bytes too
        doc = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
        del text
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GalleryError(f"{name}: not an edged gallery export (invalid JSON: {shown(str(exc), 200)})") from exc
    except (ValueError, RecursionError) as exc:
        raise GalleryError(f"{name}: not an edged gallery export (invalid JSON: {shown(str(exc), 200)})") from exc
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise GalleryError(f"{name}: not an edged gallery export")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise GalleryError(f"{name}: export version {shown(repr(version), 40)} is not a version number")
    if version > EXPORT_VERSION:
        raise GalleryError(f"{name}: export version {version} is newer than this edged supports")
    payload = doc.get("payload")
    try:
        digest = _checksum(payload) if isinstance(payload, dict) else None
    except (ValueError, RecursionError):
        digest = None
    if digest is None or digest != doc.get("sha256"):
        raise GalleryError(f"{name}: checksum mismatch (file corrupt or edited)")
    return LoadedExport(name, _validate(payload, name, now or utc_now(), consume=not keep_payload),
                        payload if keep_payload else {})


class _Problem(Exception):
    """A bad field: the message says what is wrong with it."""


def _text(value: Any, field: str, limit: int, pattern: re.Pattern[str] | None = None,
          optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _Problem(f"{field}: expected text, got {type(value).__name__}")
    if len(value) > limit:
        raise _Problem(f"{field}: longer than {limit} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Problem(f"{field}: not valid Unicode (lone surrogate)") from exc
    if pattern is not None and not pattern.match(value):
        raise _Problem(f"{field}: {shown(repr(value), 60)} is not a valid {field}")
    return value


def _stamp(value: Any, field: str, default: str) -> str:
    if value is None:
        return default
    text = _text(value, field, 40)
    assert text is not None
    try:
        if not _STAMP.match(text):
            raise ValueError(text)
        datetime.fromisoformat(text)
    except ValueError as exc:
        raise _Problem(f"{field}: {shown(repr(text), 50)} is not an ISO-8601 time (like 2024-05-01T12:00:00Z)") \
            from exc
    return text


def _number(value: Any, field: str, low: float, high: float, integer: bool = False) -> float:
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise _Problem(f"{field}: expected {'an integer' if integer else 'a number'}, got {type(value).__name__}")
    if not math.isfinite(value) or not low <= value <= high:
        raise _Problem(f"{field}: {shown(repr(value), 40)} is outside [{low:g}, {high:g}]")
    return value


def _b64(value: Any, field: str) -> bytes:
    text = _text(value, field, 4 * MAX_CROP_BYTES)
    try:
        return base64.b64decode(text or "", validate=True)
    except (ValueError, binascii.Error) as exc:
        raise _Problem(f"{field}: not valid base64") from exc


def _embedding(value: Any) -> np.ndarray:
    blob = _b64(value, "embedding")
    if len(blob) != 4 * EMBEDDING_DIM:
        raise _Problem(f"embedding: {len(blob)} bytes, expected {EMBEDDING_DIM} float32 ({4 * EMBEDDING_DIM} bytes)")
    vec = _vector(blob)
    if not np.all(np.isfinite(vec)):
        raise _Problem("embedding: holds NaN or infinite values")
    norm = float(np.linalg.norm(vec.astype(np.float64)))
    if not abs(norm - 1.0) <= NORM_TOLERANCE:
        raise _Problem(f"embedding: norm {norm:.6g}{' (all zero)' if norm == 0 else ''}, expected a unit vector "
                       f"(within {NORM_TOLERANCE:g} of 1)")
    return vec


def _crop(value: Any, crop_format: Any) -> tuple[bytes | None, str | None]:
    if value is None:
        if crop_format is not None:
            _text(crop_format, "crop_format", 64)
        return None, None
    data = _b64(value, "crop_png")
    if len(data) > MAX_CROP_BYTES:
        raise _Problem(f"crop_png: {len(data)} bytes, more than {MAX_CROP_BYTES}")
    fmt = _text(crop_format, "crop_format", 64)
    match = _CROP_FORMAT.match(fmt or "")
    if match is None:
        raise _Problem(f"crop_format: {shown(repr(fmt), 60)} is not a known crop format (edged-face-SIZE-roll-PXpx-vN)")
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise _Problem("crop_png: not a PNG image")
    try:
        image = decode_image(data, "crop_png")
    except ImageError as exc:
        raise _Problem(str(exc)) from exc
    size = int(match.group(1))
    if image.shape[:2] != (size, size):
        raise _Problem(f"crop_png: {image.shape[1]}x{image.shape[0]} pixels, but crop_format {fmt} says "
                       f"{size}x{size}")
    return data, fmt


def _sample(s: Any, stamp: str) -> tuple[NewSample, str]:
    if not isinstance(s, dict):
        raise _Problem(f"expected an object, got {type(s).__name__}")
    embedder = _text(s.get("embedder"), "embedder", 64, _IDENT)
    version = _text(s.get("embedder_version"), "embedder_version", 128, _IDENT)
    vec = _embedding(s.get("embedding"))
    source = _text(s.get("source"), "source", 4096)
    face_px = int(_number(s.get("face_px"), "face_px", 1, 100_000, integer=True))
    sharp = float(_number(s.get("sharpness"), "sharpness", 0.0, 1e12))
    crop, crop_format = _crop(s.get("crop_png"), s.get("crop_format"))
    created = _stamp(s.get("created"), "created", stamp)
    assert embedder is not None and version is not None and source is not None
    return NewSample(vec, embedder, version, source, face_px, sharp, crop, crop_format), created


def _validate(payload: dict[str, Any], name: str, stamp: str, consume: bool = False
              ) -> list[tuple[str, str, str, str, list[tuple[NewSample, str]]]]:
    where = "payload"
    try:
        _stamp(payload.get("exported"), "exported", stamp)
        people = payload.get("people")
        if not isinstance(people, list):
            raise _Problem(f"people: expected a list, got {type(people).__name__}")
        out = []
        seen: set[str] = set()
        for i, p in enumerate(people):
            where = f"people[{i}]"
            if not isinstance(p, dict):
                raise _Problem(f"expected an object, got {type(p).__name__}")
            raw_name = p.get("name")
            if isinstance(raw_name, str):
                where = f"people[{i}] ({shown(repr(raw_name), 70)})"
            pname = _text(raw_name, "name", 1024)
            assert pname is not None
            try:
                validate_name(pname)
                display_raw = _text(p.get("display_name"), "display_name", 1024, optional=True)
                display = validate_display_name(display_raw or pname)
            except GalleryError as exc:
                raise _Problem(str(exc)) from exc
            if pname in seen:
                raise _Problem(f"name: {pname!a} appears twice in the export")
            seen.add(pname)
            created = _stamp(p.get("created"), "created", stamp)
            updated = _stamp(p.get("updated"), "updated", stamp)
            samples = p.get("samples")
            if not isinstance(samples, list):
                raise _Problem(f"samples: expected a list, got {type(samples).__name__}")
            person_where = where
            checked = []
            for j, s in enumerate(samples):
                where = f"{person_where} samples[{j}]"
                checked.append(_sample(s, stamp))
                if consume:
                    samples[j] = None  # its base64 text is no longer needed
            where = person_where
            out.append((pname, display, created, updated, checked))
    except _Problem as exc:
        raise GalleryError(f"{name}: {where}: {exc}") from None
    return out


def import_gallery(gallery: Gallery, path: str | os.PathLike[str] | LoadedExport,
                   now: str | None = None) -> dict[str, int]:
    """Add an export's people and samples in one transaction; samples already stored are skipped.

    The whole file is validated first (`load_export`): when anything is wrong nothing is written."""
    stamp = now or utc_now()
    loaded = path if isinstance(path, LoadedExport) else load_export(path, stamp)
    name = loaded.name
    people = loaded.people
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
