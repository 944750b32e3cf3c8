"""The fleet's keys: one root key that admits boxes, and each box's own Ed25519 key with a root-signed certificate.

Files in the fleet directory (`fleet.dir`, 0700; every file 0600):

* `fleet.json`: the fleet id and the root's public key (every box);
* `root.key`: the root's private key (only on the box that ran `edged fleet init`; keep a copy offline);
* `box.key`: this box's private key (never leaves the box);
* `box.cert`: this box's certificate, signed by the root (`edged fleet admit` on the root's box);
* `admitted.json`: on the root's box, the keys it admitted per box (what `edged fleet revoke BOX` revokes);
* `revoked.json`: the fleet's revocation list, signed by the root (every box keeps the newest it has seen).

Nothing secret travels: a joining box sends its public key (the join request) and gets back its certificate.
Every record a box publishes carries its certificate, so every box checks it with the root's public key alone.
Tokens exchanged by hand are one line: a prefix and base64url of canonical JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edged.errors import EdgedError
from edged.fileio import atomic_write, read_regular, shown

log = logging.getLogger(__name__)

#: Fleet ids and box ids: the characters MQTT topics and file names take without escaping.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
TOKEN_PREFIX = {"fleet": "edged-fleet:", "request": "edged-join:", "cert": "edged-cert:"}
KEY_FILE_MAX = 4096


class FleetError(EdgedError):
    """A fleet key, token or record is missing, unreadable or not what it claims."""

    exit_code = 2


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise FleetError(f"{what}: expected base64 text")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise FleetError(f"{what}: not valid base64") from exc


def canonical(obj: Any) -> bytes:
    """The bytes a signature covers: JSON with sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not re.match(ID_PATTERN, value):
        raise FleetError(f"{what} {value!a}: use 1-64 letters, digits, '_' or '-'")
    return value


def public_bytes(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def private_bytes(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def public_key(raw: bytes, what: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise FleetError(f"{what}: not an Ed25519 public key") from exc


def verify(key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


# ---- tokens exchanged by hand ----

def encode_token(kind: str, body: dict[str, Any]) -> str:
    return TOKEN_PREFIX[kind] + base64.urlsafe_b64encode(canonical(body)).decode("ascii").rstrip("=")


def decode_token(kind: str, text: str) -> dict[str, Any]:
    text = text.strip()
    prefix = TOKEN_PREFIX[kind]
    if not text.startswith(prefix):
        other = next((k for k, p in TOKEN_PREFIX.items() if text.startswith(p)), None)
        hint = f" (this is a {other} token)" if other else ""
        raise FleetError(f"not a fleet {kind} token: it must start with {prefix!r}{hint}")
    data = text[len(prefix):]
    try:
        body = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise FleetError(f"fleet {kind} token: damaged (copy the whole line)") from exc
    if not isinstance(body, dict):
        raise FleetError(f"fleet {kind} token: damaged (copy the whole line)")
    return body


# ---- certificates ----

@dataclass(frozen=True)
class Certificate:
    """The root's statement: box `box` of fleet `fleet` signs with public key `key`."""

    fleet: str
    box: str
    key: bytes
    issued: str
    signature: bytes

    def body(self) -> dict[str, Any]:
        return {"fleet": self.fleet, "box": self.box, "key": b64(self.key), "issued": self.issued}

    def as_dict(self) -> dict[str, Any]:
        return {**self.body(), "sig": b64(self.signature)}

    @classmethod
    def from_dict(cls, obj: object) -> Certificate:
        if not isinstance(obj, dict):
            raise FleetError("certificate: not an object")
        try:
            return cls(check_id(obj["fleet"], "certificate fleet"), check_id(obj["box"], "certificate box"),
                       unb64(obj["key"], "certificate key"), str(obj["issued"]), unb64(obj["sig"], "certificate sig"))
        except KeyError as exc:
            raise FleetError(f"certificate: missing {exc.args[0]!r}") from exc

    def verified(self, root: Ed25519PublicKey, fleet: str) -> Ed25519PublicKey:
        """The box's public key, when this certificate was signed by `root` for `fleet`; else FleetError."""
        if self.fleet != fleet:
            raise FleetError(f"certificate of box {self.box!r} is for fleet {self.fleet!r}, not {fleet!r}")
        if not verify(root, self.signature, canonical(self.body())):
            raise FleetError(f"certificate of box {self.box!r} is not signed by this fleet's root key")
        return public_key(self.key, f"certificate of box {self.box!r}")


def issue_certificate(root: Ed25519PrivateKey, fleet: str, box: str, key: bytes, issued: str) -> Certificate:
    body = {"fleet": fleet, "box": box, "key": b64(key), "issued": issued}
    return Certificate(fleet, box, key, issued, root.sign(canonical(body)))


# ---- files ----

def _read_private(path: Path, what: str) -> bytes:
    if not path.exists():
        raise FleetError(f"{shown(path)}: no {what} (run 'edged fleet init' on the first box, "
                         f"'edged fleet join' on the others)")
    data = read_regular(path, KEY_FILE_MAX, FleetError, what)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        try:
            os.chmod(path, 0o600)
            log.warning("%s was readable by others (mode %o); set to 0600", path, mode)
        except OSError as exc:
            raise FleetError(f"{shown(path)}: readable by others (mode {mode:o}) and cannot be changed") from exc
    return data


def _write(path: Path, text: str) -> None:
    atomic_write(path, text.rstrip("\n") + "\n", mode=0o600, error=FleetError)


def _prepare_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
    except OSError as exc:
        raise FleetError(f"cannot create fleet directory {shown(directory)}: {exc.strerror or exc}") from exc


def _load_json(path: Path, what: str) -> dict[str, Any]:
    raw = _read_private(path, what)
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FleetError(f"{shown(path)}: damaged {what} (not JSON)") from exc
    if not isinstance(obj, dict):
        raise FleetError(f"{shown(path)}: damaged {what}")
    return obj


def _private_key(path: Path, what: str) -> Ed25519PrivateKey:
    raw = unb64(_read_private(path, what).decode("ascii", "replace").strip(), f"{shown(path)}")
    try:
        return Ed25519PrivateKey.from_private_bytes(raw)
    except ValueError as exc:
        raise FleetError(f"{shown(path)}: damaged {what} (not an Ed25519 private key)") from exc


@dataclass(frozen=True)
class BoxKeys:
    """Everything a box needs to sign its records and check everybody else's."""

    fleet: str
    box: str
    key: Ed25519PrivateKey
    certificate: Certificate
    root: Ed25519PublicKey
    #: The fleet directory the keys came from (its revocation list is kept there).
    directory: Path | None = None

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)


def _fleet_file(directory: Path) -> tuple[str, Ed25519PublicKey]:
    obj = _load_json(directory / "fleet.json", "fleet file")
    try:
        fleet = check_id(obj["fleet"], f"{shown(directory / 'fleet.json')}: fleet")
        root = public_key(unb64(obj["root"], "root key"), f"{shown(directory / 'fleet.json')}: root")
    except KeyError as exc:
        raise FleetError(f"{shown(directory / 'fleet.json')}: missing {exc.args[0]!r}") from exc
    return fleet, root


def init_fleet(directory: Path, fleet: str, box: str, issued: str) -> str:
    """A new fleet with this box as its first member; returns the fleet token other boxes join with."""
    check_id(fleet, "fleet id")
    check_id(box, "box id")
    for name in ("fleet.json", "root.key", "box.key", "box.cert", "admitted.json"):
        if (directory / name).exists():
            raise FleetError(f"{shown(directory / name)} exists: this box already belongs to a fleet "
                             f"(remove {shown(directory)} to start over)")
    _prepare_dir(directory)
    root = Ed25519PrivateKey.generate()
    own = Ed25519PrivateKey.generate()
    cert = issue_certificate(root, fleet, box, public_bytes(own.public_key()), issued)
    _write(directory / "admitted.json", json.dumps({box: [b64(cert.key)]}))
    _write(directory / "root.key", b64(private_bytes(root)))
    _write(directory / "box.key", b64(private_bytes(own)))
    _write(directory / "box.cert", json.dumps(cert.as_dict()))
    _write(directory / "fleet.json", json.dumps({"fleet": fleet, "root": b64(public_bytes(root.public_key()))}))
    return fleet_token(directory)


def fleet_token(directory: Path) -> str:
    fleet, root = _fleet_file(directory)
    return encode_token("fleet", {"fleet": fleet, "root": b64(public_bytes(root))})


def join_fleet(directory: Path, token: str, box: str) -> str:
    """Join with a fleet token: stores the fleet file and a new box key; returns the join request for the root."""
    check_id(box, "box id")
    body = decode_token("fleet", token)
    try:
        fleet = check_id(body["fleet"], "fleet token: fleet")
        root = unb64(body["root"], "fleet token: root")
    except KeyError as exc:
        raise FleetError(f"fleet token: missing {exc.args[0]!r} (copy the whole line)") from exc
    public_key(root, "fleet token: root")
    if (directory / "fleet.json").exists():
        have, have_root = _fleet_file(directory)
        if have != fleet or public_bytes(have_root) != root:
            raise FleetError(f"{shown(directory)} already belongs to fleet {have!r} (remove it to join another)")
    _prepare_dir(directory)
    if not (directory / "box.key").exists():
        _write(directory / "box.key", b64(private_bytes(Ed25519PrivateKey.generate())))
    own = _private_key(directory / "box.key", "box key")
    _write(directory / "fleet.json", json.dumps({"fleet": fleet, "root": b64(root)}))
    return encode_token("request", {"fleet": fleet, "box": box, "key": b64(public_bytes(own.public_key()))})


def admit(directory: Path, request: str, issued: str) -> tuple[str, str]:
    """On the root's box: a certificate for a join request; returns (box id, certificate token)."""
    fleet, _root_pub = _fleet_file(directory)
    root = _private_key(directory / "root.key", "root key")
    body = decode_token("request", request)
    try:
        if body["fleet"] != fleet:
            raise FleetError(f"join request is for fleet {body['fleet']!a}, this box's fleet is {fleet!r}")
        box = check_id(body["box"], "join request: box")
        key = unb64(body["key"], "join request: key")
    except KeyError as exc:
        raise FleetError(f"join request: missing {exc.args[0]!r} (copy the whole line)") from exc
    public_key(key, "join request: key")
    cert = issue_certificate(root, fleet, box, key, issued)
    _record_admission(directory, box, key)
    return box, encode_token("cert", cert.as_dict())


def _admitted(directory: Path) -> dict[str, list[str]]:
    """On the root's box: box id -> the public keys (base64) admitted for it (`admitted.json`)."""
    path = directory / "admitted.json"
    return _load_json(path, "admitted boxes file") if path.exists() else {}


def _record_admission(directory: Path, box: str, key: bytes) -> None:
    admitted = _admitted(directory)
    keys = admitted.setdefault(box, [])
    if b64(key) not in keys:
        keys.append(b64(key))
    _write(directory / "admitted.json", json.dumps(admitted, sort_keys=True))


@dataclass(frozen=True)
class Revocations:
    """The root's list of box keys no longer trusted, versioned; every box refuses their records."""

    fleet: str
    version: int
    #: base64 public key -> the box id it was admitted as.
    keys: dict[str, str]
    issued: str
    signature: bytes = b""

    def body(self) -> dict[str, Any]:
        return {"fleet": self.fleet, "version": self.version, "keys": dict(sorted(self.keys.items())),
                "issued": self.issued}

    def as_dict(self) -> dict[str, Any]:
        return {**self.body(), "sig": b64(self.signature)}

    @property
    def revoked(self) -> frozenset[bytes]:
        return frozenset(base64.b64decode(k) for k in self.keys)

    @classmethod
    def from_dict(cls, obj: object, root: Ed25519PublicKey, fleet: str) -> Revocations:
        """A revocation list, checked: for `fleet` and signed by its root; FleetError otherwise."""
        if not isinstance(obj, dict):
            raise FleetError("revocation list: not an object")
        try:
            keys = obj["keys"]
            if not isinstance(keys, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in keys.items()):
                raise FleetError("revocation list: malformed keys")
            version = obj["version"]
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise FleetError("revocation list: malformed version")
            rev = cls(str(obj["fleet"]), version, keys, str(obj["issued"]), unb64(obj["sig"], "revocation list sig"))
        except KeyError as exc:
            raise FleetError(f"revocation list: missing {exc.args[0]!r}") from exc
        if rev.fleet != fleet:
            raise FleetError(f"revocation list is for fleet {rev.fleet!a}, not {fleet!r}")
        if not verify(root, rev.signature, canonical(rev.body())):
            raise FleetError("revocation list is not signed by this fleet's root key")
        return rev


def load_revocations(directory: Path) -> Revocations | None:
    """This box's copy of the fleet's revocation list (`revoked.json`), checked; None when there is none."""
    path = directory / "revoked.json"
    if not path.exists():
        return None
    fleet, root = _fleet_file(directory)
    return Revocations.from_dict(_load_json(path, "revocation list"), root, fleet)


def store_revocations(directory: Path, rev: Revocations) -> None:
    _write(directory / "revoked.json", json.dumps(rev.as_dict()))


def revoke(directory: Path, box: str, issued: str) -> Revocations:
    """On the root's box: add every key admitted for `box` to the revocation list (a new version, signed)."""
    fleet, _ = _fleet_file(directory)
    root = _private_key(directory / "root.key", "root key")
    keys = _admitted(directory).get(box)
    if not keys:
        raise FleetError(f"no box {box!r} was admitted from this box (admitted: "
                         f"{', '.join(sorted(_admitted(directory))) or 'none'})")
    current = load_revocations(directory)
    listed = dict(current.keys) if current else {}
    listed.update(dict.fromkeys(keys, box))
    body = Revocations(fleet, (current.version if current else 0) + 1, listed, issued)
    rev = Revocations(fleet, body.version, body.keys, issued, root.sign(canonical(body.body())))
    store_revocations(directory, rev)
    return rev


def install_certificate(directory: Path, token: str) -> Certificate:
    """Store the certificate `edged fleet admit` gave this box, after checking it is for this box's key."""
    fleet, root = _fleet_file(directory)
    cert = Certificate.from_dict(decode_token("cert", token))
    cert.verified(root, fleet)
    own = _private_key(directory / "box.key", "box key")
    if cert.key != public_bytes(own.public_key()):
        raise FleetError(f"this certificate is for another box's key (box {cert.box!r}), not this box's")
    _write(directory / "box.cert", json.dumps(cert.as_dict()))
    return cert


def load_box(directory: Path, fleet: str, box: str) -> BoxKeys:
    """This box's keys, checked: the fleet id matches the config, the certificate is the root's, for this box
    and for its private key. FleetError with one line naming the file otherwise."""
    have, root = _fleet_file(directory)
    if have != fleet:
        raise FleetError(f"{shown(directory / 'fleet.json')}: this box belongs to fleet {have!r}, "
                         f"the config says fleet.id {fleet!r}")
    key = _private_key(directory / "box.key", "box key")
    if not (directory / "box.cert").exists():
        raise FleetError(f"{shown(directory / 'box.cert')}: no certificate yet (give the join request to "
                         f"'edged fleet admit' on the root's box, then run 'edged fleet join --cert CERT' here)")
    cert = Certificate.from_dict(_load_json(directory / "box.cert", "box certificate"))
    cert.verified(root, fleet)
    if cert.box != box:
        raise FleetError(f"{shown(directory / 'box.cert')}: certificate is for box {cert.box!r}, "
                         f"this box is {box!r} (fleet.box_id / device_id)")
    if cert.key != public_bytes(key.public_key()):
        raise FleetError(f"{shown(directory / 'box.cert')}: certificate does not match {shown(directory / 'box.key')}")
    return BoxKeys(fleet, box, key, cert, root, directory)
