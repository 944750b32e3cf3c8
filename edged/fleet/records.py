"""A fleet record: the whole, signed state of one person (or one ignore label) at one version. Pure.

Replication is by state, one record per item, retained on the broker under the item's topic: a box that was
offline, or joins late, gets the current record of every item when it subscribes; a change is the item's next
record. Which record wins is decided the same way on every box, whatever order they arrive in:

    (version, origin) higher wins   - `version` is one more than the highest the publishing box had seen,
                                      `origin` (the publishing box's id) breaks a tie.

A removal is a record with `deleted: true` and no data (a tombstone), so an erasure reaches every box and
an older copy arriving later cannot bring the person back.

Wire format (JSON; `sig` is the origin box's Ed25519 signature of the canonical JSON of everything else, and
`cert` the root-signed certificate of that box, so any box checks it with the fleet's root key alone)::

    {"v": 1, "fleet": "home", "kind": "person", "key": "alice", "version": 3, "origin": "front",
     "deleted": false, "updated": "2026-12-02T08:00:00Z", "digest": "<sha256 hex of the content>",
     "data": {"display_name": "Alice", "embedder": "dlib", "embedder_version": "dlib-resnet-v1",
              "samples": [{"embedding": "<base64 of 128 little-endian float32>", "face_px": 180,
                           "sharpness": 310.5, "source": "alice1.jpg", "created": "...",
                           "crop": null, "crop_format": null}]},
     "cert": {...}, "sig": "<base64>"}
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from edged.distance import EMBEDDING_DIM
from edged.fleet.keys import BoxKeys, Certificate, FleetError, b64, canonical, unb64, verify

FORMAT_VERSION = 1
KINDS = ("person", "ignore")
#: Most samples one record may carry.
SAMPLES_MAX = 1000
Kind = Literal["person", "ignore"]


class RecordRefused(FleetError):
    """A record is not applied: unsigned, wrongly signed, for another fleet, malformed, or too large."""


@dataclass(frozen=True)
class SyncedSample:
    embedding: np.ndarray
    face_px: int
    sharpness: float
    source: str
    created: str
    crop: bytes | None = None
    crop_format: str | None = None


@dataclass(frozen=True)
class ItemState:
    """What a record says about one item; `samples` empty and `deleted` True for a removal."""

    kind: Kind
    key: str
    deleted: bool = False
    display_name: str = ""
    embedder: str = ""
    embedder_version: str = ""
    samples: tuple[SyncedSample, ...] = field(default=())

    @property
    def digest(self) -> str:
        return content_digest(self)


@dataclass(frozen=True)
class Record:
    """A verified record: its state, who made it, and the exact signed bytes (republished unchanged)."""

    fleet: str
    state: ItemState
    version: int
    origin: str
    updated: str
    digest: str
    raw: bytes

    @property
    def rank(self) -> tuple[int, str]:
        return (self.version, self.origin)


def embedding_text(vec: np.ndarray) -> str:
    return b64(np.asarray(vec, dtype="<f4").reshape(-1).tobytes())


def content_digest(state: ItemState) -> str:
    """SHA-256 of what matching sees (display name, embedder version, the set of embeddings): equal on every box
    that holds the same item, whatever order its samples were stored in and whether it keeps crops."""
    if state.deleted:
        body: dict[str, Any] = {"kind": state.kind, "key": state.key, "deleted": True}
    else:
        body = {"kind": state.kind, "key": state.key, "display_name": state.display_name,
                "embedder_version": state.embedder_version,
                "embeddings": sorted(embedding_text(s.embedding) for s in state.samples)}
    return hashlib.sha256(canonical(body)).hexdigest()


def wins(new: tuple[int, str], old: tuple[int, str] | None) -> bool:
    """The deterministic rule every box applies: higher (version, origin) wins."""
    return old is None or new > old


def _data(state: ItemState, crops: bool) -> dict[str, Any]:
    return {"display_name": state.display_name, "embedder": state.embedder, "embedder_version": state.embedder_version,
            "samples": [{"embedding": embedding_text(s.embedding), "face_px": int(s.face_px),
                         "sharpness": float(s.sharpness), "source": s.source, "created": s.created,
                         "crop": b64(s.crop) if crops and s.crop is not None else None,
                         "crop_format": s.crop_format if crops and s.crop is not None else None}
                        for s in state.samples]}


def sign_record(keys: BoxKeys, state: ItemState, version: int, updated: str, crops: bool = False) -> Record:
    """This box's record of `state` at `version`, signed."""
    body: dict[str, Any] = {"v": FORMAT_VERSION, "fleet": keys.fleet, "kind": state.kind, "key": state.key,
                            "version": int(version), "origin": keys.box, "deleted": state.deleted,
                            "updated": updated, "digest": state.digest, "cert": keys.certificate.as_dict()}
    if not state.deleted:
        body["data"] = _data(state, crops)
    raw = json.dumps({**body, "sig": b64(keys.sign(canonical(body)))}, separators=(",", ":"),
                     ensure_ascii=False).encode("utf-8")
    return Record(keys.fleet, state, int(version), keys.box, updated, state.digest, raw)


def _field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    if name not in obj:
        raise RecordRefused(f"{what}: malformed (no {name!r})")
    value = obj[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (int, float))):
        raise RecordRefused(f"{what}: malformed ({name!r} has the wrong type)")
    return value


def _sample(obj: object, what: str) -> SyncedSample:
    if not isinstance(obj, dict):
        raise RecordRefused(f"{what}: malformed (a sample is not an object)")
    raw = unb64(obj.get("embedding"), f"{what}: sample embedding")
    if len(raw) != 4 * EMBEDDING_DIM:
        raise RecordRefused(f"{what}: malformed (an embedding of {len(raw)} bytes, not {4 * EMBEDDING_DIM})")
    vec = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(vec)):
        raise RecordRefused(f"{what}: malformed (an embedding with non-finite values)")
    face_px = _field(obj, "face_px", int, what)
    sharpness = _field(obj, "sharpness", (int, float), what)
    if not math.isfinite(sharpness):
        raise RecordRefused(f"{what}: malformed (sharpness is not finite)")
    crop = obj.get("crop")
    return SyncedSample(vec, int(face_px), float(sharpness), str(_field(obj, "source", str, what))[:1024],
                        str(_field(obj, "created", str, what))[:64],
                        unb64(crop, f"{what}: crop") if crop is not None else None,
                        str(obj["crop_format"])[:16] if crop is not None and obj.get("crop_format") else None)


def open_record(payload: bytes, root: Any, fleet: str, max_bytes: int, topic_key: tuple[str, str] | None = None,
                revoked: frozenset[bytes] = frozenset()) -> Record:
    """Check a received record: size, JSON, fleet, the certificate (root-signed, for the origin box, not revoked),
    the origin's signature, the content digest, and (when given) that it is the record of its topic's item.
    RecordRefused with a one-line reason otherwise; nothing is trusted before the signature holds."""
    if len(payload) > max_bytes:
        raise RecordRefused(f"record of {len(payload)} bytes is larger than fleet.max_record_kib")
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordRefused("record is not JSON") from exc
    if not isinstance(obj, dict):
        raise RecordRefused("record is not a JSON object")
    what = f"record {obj.get('kind')!a}/{obj.get('key')!a}"
    if "sig" not in obj or "cert" not in obj:
        raise RecordRefused(f"{what}: unsigned (no signature or certificate)")
    sig = unb64(obj.pop("sig"), f"{what}: signature")
    if obj.get("fleet") != fleet:
        raise RecordRefused(f"{what}: for fleet {obj.get('fleet')!a}, not {fleet!r}")
    cert = Certificate.from_dict(obj["cert"])
    try:
        box_key = cert.verified(root, fleet)
    except FleetError as exc:
        raise RecordRefused(f"{what}: signed by an unknown key ({exc})") from exc
    if cert.key in revoked:
        raise RecordRefused(f"{what}: signed by box {cert.box!r}, whose key the fleet's root revoked")
    if not verify(box_key, sig, canonical(obj)):
        raise RecordRefused(f"{what}: bad signature (altered after box {cert.box!r} signed it)")
    if obj.get("origin") != cert.box:
        raise RecordRefused(f"{what}: origin {obj.get('origin')!a} but signed by box {cert.box!r}")
    if obj.get("v") != FORMAT_VERSION:
        raise RecordRefused(f"{what}: record format {obj.get('v')!a}, this edged reads {FORMAT_VERSION}")
    kind = _field(obj, "kind", str, what)
    key = _field(obj, "key", str, what)
    if kind not in KINDS:
        raise RecordRefused(f"{what}: unknown kind")
    if topic_key is not None and topic_key != (kind, key):
        raise RecordRefused(f"{what}: published under the topic of {topic_key[0]}/{topic_key[1]}")
    version = _field(obj, "version", int, what)
    if version < 1:
        raise RecordRefused(f"{what}: version {version} (must be >= 1)")
    deleted = _field(obj, "deleted", bool, what)
    if deleted:
        state = ItemState(kind, key, deleted=True)
    else:
        data = _field(obj, "data", dict, what)
        samples = _field(data, "samples", list, what)
        if not samples or len(samples) > SAMPLES_MAX:
            raise RecordRefused(f"{what}: malformed ({len(samples)} samples; 1 to {SAMPLES_MAX})")
        state = ItemState(kind, key, False, str(_field(data, "display_name", str, what)),
                          str(_field(data, "embedder", str, what)), str(_field(data, "embedder_version", str, what)),
                          tuple(_sample(s, what) for s in samples))
    digest = _field(obj, "digest", str, what)
    if digest != state.digest:
        raise RecordRefused(f"{what}: content does not match its digest")
    return Record(fleet, state, version, cert.box, str(_field(obj, "updated", str, what)), digest, payload)
