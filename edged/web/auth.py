"""Who may see the page: a password (argon2 hash), API tokens (SHA-256), login sessions, CSRF and login backoff.

The auth file (`web.auth_file`, default `<gallery>.web-auth`, mode 0600) is JSON:
`{"schema": 1, "password": "$argon2id$...", "tokens": [{"name": ..., "sha256": ..., "created": ...}]}`.
Tokens are shown once when made and stored only as hashes. Sessions and login failures live in memory
(a restart logs everyone out). Every time is passed in (`now`, seconds), so the rules are tested without waiting.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edged.errors import EdgedError
from edged.fileio import atomic_write, read_regular, shown

AUTH_SCHEMA = 1
#: Shortest password accepted.
PASSWORD_MIN = 10
PASSWORD_MAX = 1024
#: Largest auth file read.
AUTH_FILE_MAX = 1024 * 1024
TOKEN_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: Sessions held at once (the oldest is dropped beyond: a flood of logins cannot grow memory).
SESSIONS_MAX = 1000
#: Addresses whose login failures are remembered at once.
CLIENTS_MAX = 10_000


class AuthError(EdgedError):
    """The auth file or a password/token request is unusable; the message names what is wrong."""


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()


@dataclass(frozen=True)
class TokenInfo:
    name: str
    created: str


class AuthFile:
    """The password hash and token hashes of one site, read and rewritten atomically (0600)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"schema": AUTH_SCHEMA, "password": None, "tokens": []}
        data = read_regular(self.path, AUTH_FILE_MAX, AuthError, "an auth file")
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AuthError(f"{shown(self.path)}: not an edged auth file (invalid JSON: {exc})") from None
        if not isinstance(doc, dict) or doc.get("schema") != AUTH_SCHEMA:
            raise AuthError(f"{shown(self.path)}: not an edged auth file (schema {AUTH_SCHEMA} expected)")
        if not isinstance(doc.get("tokens", []), list) or not isinstance(doc.get("password"), str | None):
            raise AuthError(f"{shown(self.path)}: 'password' must be a string and 'tokens' a list")
        doc.setdefault("tokens", [])
        return doc

    def _save(self, doc: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(doc, indent=1) + "\n", 0o600, AuthError)

    @property
    def has_password(self) -> bool:
        return bool(self._load().get("password"))

    def set_password(self, password: str) -> None:
        """Store the argon2 hash of a new password (the old one stops working; sessions are the caller's)."""
        check_password_text(password)
        doc = self._load()
        doc["password"] = _hasher().hash(password)
        self._save(doc)

    def verify_password(self, password: str) -> bool:
        """True when `password` is the site's; False for a wrong one or when none is set."""
        stored = self._load().get("password")
        if not stored or not isinstance(password, str) or len(password) > PASSWORD_MAX:
            return False
        from argon2.exceptions import InvalidHashError, VerificationError

        try:
            return bool(_hasher().verify(stored, password))
        except (VerificationError, InvalidHashError):
            return False

    def add_token(self, name: str, now: float) -> str:
        """Make an API token named `name`; returns it (shown once, only its hash is stored)."""
        if not TOKEN_NAME.match(name):
            raise AuthError(f"token name {ascii(name)[:70]}: use 1-64 letters, digits, '_', '.' or '-'")
        doc = self._load()
        if any(t.get("name") == name for t in doc["tokens"]):
            raise AuthError(f"token {name!r} exists (remove it first: edged web remove-token {name})")
        token = "edged_" + secrets.token_urlsafe(32)
        doc["tokens"].append({"name": name, "sha256": _digest(token),
                              "created": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
        self._save(doc)
        return token

    def remove_token(self, name: str) -> bool:
        doc = self._load()
        kept = [t for t in doc["tokens"] if t.get("name") != name]
        if len(kept) == len(doc["tokens"]):
            return False
        doc["tokens"] = kept
        self._save(doc)
        return True

    def tokens(self) -> list[TokenInfo]:
        return [TokenInfo(str(t.get("name")), str(t.get("created", ""))) for t in self._load()["tokens"]]

    def token_name(self, token: str) -> str | None:
        """The name of the API token `token`, None when it is not one of the site's."""
        if not token or len(token) > 200:
            return None
        digest = _digest(token)
        for t in self._load()["tokens"]:
            if hmac.compare_digest(str(t.get("sha256", "")), digest):
                return str(t.get("name"))
        return None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_password_text(password: str) -> None:
    if len(password) < PASSWORD_MIN:
        raise AuthError(f"password too short: at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise AuthError(f"password too long: at most {PASSWORD_MAX} characters")


@dataclass
class Session:
    csrf: str
    expires: float


class Sessions:
    """Login sessions: random ids (the cookie) with a CSRF token each, expiring `max_age_s` after login."""

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, now: float) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(32), now + self.max_age_s)
        with self._lock:
            self._sessions[sid] = session
            while len(self._sessions) > SESSIONS_MAX:
                self._sessions.popitem(last=False)
        return sid, session

    def get(self, sid: str | None, now: float) -> Session | None:
        if not sid:
            return None
        with self._lock:
            session = self._sessions.get(sid)
            if session is not None and session.expires <= now:
                del self._sessions[sid]
                return None
            return session

    def end(self, sid: str | None) -> None:
        with self._lock:
            self._sessions.pop(sid or "", None)

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()


def csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf, str(sent))


class LoginLimiter:
    """After `attempts` failed logins from one address, it must wait `backoff_s`, doubling with every further
    failure (capped at a day); a success forgets its failures."""

    def __init__(self, attempts: int, backoff_s: float) -> None:
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # address -> (failures, blocked until)
        self._lock = threading.Lock()

    def wait_s(self, client: str, now: float) -> float:
        """Seconds `client` must wait before trying again (0: may try now)."""
        with self._lock:
            _, until = self._failures.get(client, (0, 0.0))
        return max(0.0, until - now)

    def failed(self, client: str, now: float) -> float:
        """Record a failure; returns the wait it now faces."""
        with self._lock:
            count, _ = self._failures.pop(client, (0, 0.0))
            count += 1
            until = 0.0
            if count >= self.attempts:
                until = now + min(86400.0, self.backoff_s * 2 ** (count - self.attempts))
            self._failures[client] = (count, until)
            while len(self._failures) > CLIENTS_MAX:
                self._failures.popitem(last=False)
        return max(0.0, until - now)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)
