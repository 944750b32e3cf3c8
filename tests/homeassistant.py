"""A real Home Assistant for tests: `hass -c DIR` from its own venv (.venv-ha, made by scripts/setup.sh;
`$EDGED_HA_VENV` elsewhere) on a free 127.0.0.1 port, its MQTT integration pointed at a test broker.

`HomeAssistant(workdir, broker_port)` writes a minimal configuration (no `default_config:`, nothing that
needs the internet), an MQTT config entry (`.storage/core.config_entries`, discovery on), starts Home
Assistant, onboards a user and gets a long-lived access token; then `states()`, `state()`,
`wait_state()`, `entity_registry()`, `subscribe_events()` (websocket) and `log_text()`.

Home Assistant installs its integrations' requirements (frontend, paho-mqtt, Pillow, ...) with pip into
the venv it runs from at its first start (a minute or so); scripts/setup.sh pre-installs them, and
later starts find them there. The websocket client is a small RFC 6455 one on the standard library, so
edged's venv needs nothing extra.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[1]
HA_VENV = Path(os.environ.get("EDGED_HA_VENV", ROOT / ".venv-ha"))
HASS = HA_VENV / "bin" / "hass"
#: The release the tests are written against (the newest one that installs on Python 3.11).
HA_VERSION = "2024.3.3"
#: The first start installs the integrations' requirements unless scripts/setup.sh did.
START_TIMEOUT_S = float(os.environ.get("EDGED_HA_START_TIMEOUT", "300"))


def require_homeassistant() -> None:
    if not os.access(HASS, os.X_OK):
        pytest.skip(f"Home Assistant not installed ({HASS}): run scripts/setup.sh, which creates .venv-ha "
                    f"(homeassistant=={HA_VERSION}), or set EDGED_HA_VENV")


CONFIGURATION = """\
# written by tests/homeassistant.py: no default_config (it pulls in zeroconf, ssdp, cloud, ...)
homeassistant:
  name: edged test
  latitude: 52.37
  longitude: 4.89
  elevation: 0
  unit_system: metric
  currency: EUR
  country: NL
  time_zone: UTC
  internal_url: "http://127.0.0.1:{port}"
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
config:
websocket_api:
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: debug
    homeassistant.setup: info
    homeassistant.bootstrap: info
    homeassistant.util.package: info
"""


#: `2024-03-20 12:00:00.123 WARNING (MainThread) [homeassistant.components.mqtt.mixins] message`
LOG_RECORD = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) \(.*?\) \[(?P<logger>[^\]]+)\] ")


class WebSocketClosed(RuntimeError):
    pass


class WebSocket:
    """A minimal websocket client (text frames, client masking, ping/pong/close) for Home Assistant's
    /api/websocket: `call()` sends a command and waits for its result; `subscribe()` records events."""

    def __init__(self, host: str, port: int, path: str, token: str, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise WebSocketClosed("connection closed during the websocket handshake")
            head += chunk
        head, self._buf = head.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"websocket handshake refused: {head.decode(errors='replace')}")
        self._send_lock = threading.Lock()
        self._next_id = 1
        self._results: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._events: dict[int, list[dict[str, Any]]] = {}
        self._events_lock = threading.Lock()
        self.closed = threading.Event()
        hello = self._recv_json()
        assert hello["type"] == "auth_required", hello
        self._send_json({"type": "auth", "access_token": token})
        answer = self._recv_json()
        if answer["type"] != "auth_ok":
            raise RuntimeError(f"websocket authentication failed: {answer}")
        self.ha_version = answer.get("ha_version")
        self.sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, name="ha-websocket", daemon=True)
        self._reader.start()

    # ---- frames ----

    def _recv_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise WebSocketClosed("websocket connection closed")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        with self._send_lock:
            self.sock.sendall(header + mask + masked)

    def _recv_message(self) -> bytes:
        parts: list[bytes] = []
        while True:
            b0, b1 = self._recv_exact(2)
            fin, opcode, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._recv_exact(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._recv_exact(8))
            mask = self._recv_exact(4) if b1 & 0x80 else None
            data = self._recv_exact(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == 0x8:
                raise WebSocketClosed(f"websocket closed by the server: {data!r}")
            if opcode == 0x9:
                self._send_frame(0xA, data)
                continue
            if opcode == 0xA:
                continue
            parts.append(data)
            if fin:
                return b"".join(parts)

    def _send_json(self, message: dict[str, Any]) -> None:
        self._send_frame(0x1, json.dumps(message).encode())

    def _recv_json(self) -> dict[str, Any]:
        return json.loads(self._recv_message())

    def _read_loop(self) -> None:
        try:
            while True:
                message = self._recv_json()
                # Home Assistant may coalesce messages into a JSON list
                for m in message if isinstance(message, list) else [message]:
                    self._dispatch(m)
        except (OSError, WebSocketClosed, ValueError):
            pass
        finally:
            self.closed.set()

    def _dispatch(self, message: dict[str, Any]) -> None:
        mid = message.get("id")
        if message.get("type") == "event":
            with self._events_lock:
                if mid in self._events:
                    self._events[mid].append(message["event"])
        elif mid in self._results:
            self._results[mid].put(message)

    # ---- commands ----

    def call(self, type_: str, timeout: float = 30.0, **fields: Any) -> Any:
        """Send a command; its `result` (raises on an error answer)."""
        with self._send_lock:
            mid = self._next_id
            self._next_id += 1
        answers: queue.Queue[dict[str, Any]] = queue.Queue()
        self._results[mid] = answers
        self._send_json({"id": mid, "type": type_, **fields})
        try:
            answer = answers.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no answer to websocket command {type_} in {timeout} s") from None
        finally:
            self._results.pop(mid, None)
        if not answer.get("success"):
            raise RuntimeError(f"websocket command {type_} failed: {answer.get('error')}")
        return answer.get("result")

    def subscribe(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """Subscribe to events (all when `event_type` is None); the returned list fills as they arrive."""
        with self._send_lock:
            mid = self._next_id
            self._next_id += 1
        events: list[dict[str, Any]] = []
        with self._events_lock:
            self._events[mid] = events
        answers: queue.Queue[dict[str, Any]] = queue.Queue()
        self._results[mid] = answers
        self._send_json({"id": mid, "type": "subscribe_events",
                         **({"event_type": event_type} if event_type else {})})
        answer = answers.get(timeout=30)
        self._results.pop(mid, None)
        if not answer.get("success"):
            raise RuntimeError(f"subscribe_events failed: {answer}")
        return events

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send_frame(0x8, struct.pack("!H", 1000))
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._reader.join(2)


class HomeAssistant:
    """Home Assistant `HA_VERSION` in `workdir` (its config directory), MQTT on 127.0.0.1:`broker_port`."""

    def __init__(self, workdir: Path, broker_port: int, port: int | None = None) -> None:
        require_homeassistant()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.broker_port = broker_port
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id = f"{self.url}/"
        self.log = self.dir / "home-assistant.log"
        self.output = self.dir / "hass.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token: str | None = None
        self.ws: WebSocket | None = None
        self.start_s: float | None = None  # seconds from `hass` started to the API answering
        (self.dir / "configuration.yaml").write_text(CONFIGURATION.format(port=self.port))
        storage = self.dir / ".storage"
        storage.mkdir(exist_ok=True)
        entries = storage / "core.config_entries"
        if not entries.exists():  # Home Assistant owns the file after its first start
            entry = {"entry_id": uuid.uuid4().hex, "version": 1, "minor_version": 1, "domain": "mqtt",
                     "title": f"127.0.0.1:{broker_port}",
                     "data": {"broker": "127.0.0.1", "port": broker_port, "discovery": True},
                     "options": {}, "pref_disable_new_entities": False, "pref_disable_polling": False,
                     "source": "user", "unique_id": None, "disabled_by": None}
            entries.write_text(json.dumps({"version": 1, "minor_version": 1, "key": "core.config_entries",
                                           "data": {"entries": [entry]}}, indent=2))

    # ---- process ----

    def start(self, timeout: float = START_TIMEOUT_S) -> HomeAssistant:
        started = time.monotonic()
        out = self.output.open("ab")
        self.proc = subprocess.Popen([str(HASS), "-c", str(self.dir), "--log-file", str(self.log)],
                                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        deadline = started + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Home Assistant exited ({self.proc.returncode}):\n{self._tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Home Assistant's API did not answer within {timeout:.0f} s:\n{self._tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/api/onboarding", timeout=2) as r:
                if r.status == 200:
                    break
            time.sleep(0.25)
        self.start_s = time.monotonic() - started
        if self.token is None:
            self.token = self._onboard()
        self.ws = WebSocket("127.0.0.1", self.port, "/api/websocket", self.token)
        self._wait_mqtt_connected(deadline)
        return self

    def _tail(self, n: int = 60) -> str:
        text = ""
        for f in (self.output, self.log):
            if f.exists():
                text += f"--- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-n:]) + "\n"
        return text

    def _onboard(self) -> str:
        """The first user (onboarding), a login with the authorization code grant, a long-lived token."""
        password = uuid.uuid4().hex
        created = self._request("POST", "/api/onboarding/users", auth=False, body={
            "client_id": self.client_id, "name": "edged test", "username": "edged", "password": password,
            "language": "en"})
        form = urllib.parse.urlencode({"grant_type": "authorization_code", "code": created["auth_code"],
                                       "client_id": self.client_id}).encode()
        req = urllib.request.Request(f"{self.url}/auth/token", data=form, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(req, timeout=30) as r:
            access = json.loads(r.read())["access_token"]
        ws = WebSocket("127.0.0.1", self.port, "/api/websocket", access)
        try:
            return str(ws.call("auth/long_lived_access_token", client_name="edged tests", lifespan=30))
        finally:
            ws.close()

    def _wait_mqtt_connected(self, deadline: float) -> None:
        """Until the MQTT config entry is loaded (the client connected to the broker)."""
        while time.monotonic() < deadline:
            entries = self.ws_call("config_entries/get", domain="mqtt")
            if entries and entries[0]["state"] == "loaded" and "Connected to MQTT server" in self.log_text():
                return
            time.sleep(0.25)
        raise RuntimeError(f"Home Assistant's MQTT integration did not connect:\n{self._tail()}")

    def stop(self, timeout: float = 60.0) -> None:
        """Stop cleanly (SIGTERM: Home Assistant writes its .storage and exits)."""
        if self.ws is not None:
            self.ws.close()
            self.ws = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> HomeAssistant:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- REST ----

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def states(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/api/states"))

    def state(self, entity_id: str) -> dict[str, Any] | None:
        """The entity's state object (`state`, `attributes`, `last_changed`, ...), None if HA has none."""
        try:
            return dict(self._request("GET", f"/api/states/{entity_id}"))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def wait_state(self, entity_id: str, value: str | Callable[[str | None], bool], timeout: float = 10.0,
                   poll: float = 0.05) -> dict[str, Any]:
        """Until the entity's state is `value` (or `value(state)` is true); its state object. Raises an
        AssertionError naming the last state seen after `timeout`."""
        ok = value if callable(value) else (lambda s: s == value)
        deadline = time.monotonic() + timeout
        while True:
            current = self.state(entity_id)
            if ok(None if current is None else current["state"]):
                return current or {}
            if time.monotonic() > deadline:
                raise AssertionError(f"{entity_id}: state {current and current['state']!r} after {timeout} s, "
                                     f"expected {value!r}")
            time.sleep(poll)

    # ---- websocket ----

    def ws_call(self, type_: str, **fields: Any) -> Any:
        assert self.ws is not None, "Home Assistant not started"
        return self.ws.call(type_, **fields)

    def entity_registry(self) -> list[dict[str, Any]]:
        """Every registered entity (`entity_id`, `unique_id`, `platform`, `device_id`, `name`, ...)."""
        return list(self.ws_call("config/entity_registry/list"))

    def device_registry(self) -> list[dict[str, Any]]:
        return list(self.ws_call("config/device_registry/list"))

    def subscribe_events(self, event_type: str | None = "state_changed") -> list[dict[str, Any]]:
        """A list that fills with the events of `event_type` (`data`, `time_fired`, ...) from now on."""
        assert self.ws is not None, "Home Assistant not started"
        return self.ws.subscribe(event_type)

    # ---- log ----

    def log_text(self, since: int = 0) -> str:
        """The log (from offset `since`, a `log_mark()`)."""
        if not self.log.exists():
            return ""
        with self.log.open("rb") as f:
            f.seek(since)
            return f.read().decode(errors="replace")

    def log_mark(self) -> int:
        """The log's current size: pass it as `since` to read only what is logged from now on."""
        return self.log.stat().st_size if self.log.exists() else 0

    def log_lines(self, levels: tuple[str, ...] = ("WARNING", "ERROR", "CRITICAL"),
                  loggers: tuple[str, ...] = ("",), since: int = 0) -> list[str]:
        """Log records at `levels` (the first line of each) from loggers whose name starts with one of
        `loggers`, logged after `since`."""
        out = []
        for line in self.log_text(since).splitlines():
            m = LOG_RECORD.match(line)
            if m and m["level"] in levels and m["logger"].startswith(loggers):
                out.append(line)
        return out
