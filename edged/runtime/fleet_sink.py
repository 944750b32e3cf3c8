"""The fleet as a sink of the daemon: it syncs the gallery in the background and publishes the box's health
(its cameras' state and fps, the last event) from the event stream's `Health` and identity events."""

from __future__ import annotations

import threading
from dataclasses import asdict
from typing import Any

from edged.fleet.sync import FleetSync
from edged.runtime.mqtt import iso8601
from edged.runtime.sinks import EventSink
from edged.types import Health, IdentityEvent, StreamItem


class FleetSink(EventSink):
    """Starts and stops the box's `FleetSync`; feeds it the daemon's health."""

    name = "fleet"

    def __init__(self, make_sync: Any, camera: str) -> None:
        """`make_sync(health)`: the FleetSync, given the callable that reports this sink's view of the daemon."""
        self.camera = camera
        self._lock = threading.Lock()
        self._cameras: dict[str, dict[str, Any]] = {}
        self._status = ""
        self._last_event: dict[str, Any] | None = None
        self.sync: FleetSync = make_sync(self.health)

    def start(self) -> None:
        self.sync.start()

    def handle(self, item: StreamItem) -> None:
        if isinstance(item, Health):
            cams = item.cameras or ()
            with self._lock:
                self._status = item.status
                self._cameras = ({c.name: {"state": str(c.state), "fps": round(c.fps, 2), "overloaded": c.overloaded}
                                  for c in cams} if cams else
                                 {self.camera: {"state": str(item.camera), "fps": round(item.fps, 2),
                                                "overloaded": item.overloaded}})
        elif isinstance(item, IdentityEvent):
            with self._lock:
                self._last_event = {"kind": str(item.kind), "person": item.person, "camera": item.camera,
                                    "at": iso8601(item.wall)}

    def health(self) -> dict[str, Any]:
        with self._lock:
            return {"cameras": dict(self._cameras), "status": self._status, "last_event": self._last_event}

    def close(self, timeout: float) -> None:
        self.sync.stop(min(timeout, 2.0))

    @property
    def status(self) -> str:
        return self.sync.status

    def stats(self) -> dict[str, object]:
        return asdict(self.sync.stats)
