"""The cost of the web page on the daemon: the end-to-end run with the page on and a browser-like client
watching the live view (MJPEG over loopback, from this process), side by side with the page on and nobody
watching and with no page at all, interleaved."""

from __future__ import annotations

import secrets
import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from edged.bench.common import BenchPlan
from edged.bench.e2e import e2e_summary, run_daemon_child


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveWatcher(threading.Thread):
    """Logs in as soon as the page answers and reads /live.mjpg until the daemon ends; counts the frames."""

    def __init__(self, port: int, password: str, stop: threading.Event) -> None:
        super().__init__(name="bench-live-watcher", daemon=True)
        self.base = f"http://127.0.0.1:{port}"
        self.password = password
        self.stop = stop
        self.frames = 0
        self.watched_s = 0.0

    def run(self) -> None:
        import httpx

        with httpx.Client(base_url=self.base, timeout=5.0) as client:
            while not self.stop.is_set():
                try:
                    client.post("/login", data={"password": self.password})
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            first = last = 0.0
            try:
                with client.stream("GET", "/live.mjpg", timeout=httpx.Timeout(5.0, read=30.0)) as stream:
                    for chunk in stream.iter_bytes():
                        seen = chunk.count(b"--frame")
                        if seen:
                            last = time.monotonic()
                            first = first or last
                            self.frames += seen
                        if self.stop.is_set():
                            break
            except httpx.HTTPError:
                pass  # the daemon ended: the stream closes
            self.watched_s = last - first  # from the first frame received to the last


def web_runs(config_path: str | None, clip: Path, gallery: Path, work: Path, fps: float,
             plan: BenchPlan, models: Path | None = None) -> dict[str, Any]:
    """Real-time factors of the daemon without the page, with it on and idle, and with it watched: medians of
    rounds that run the three interleaved (plain, idle, watched, plain, idle, watched...). `models`: the
    children's models directory."""
    from edged.web.auth import AuthFile

    password = secrets.token_urlsafe(16)
    auth = work / "bench.web-auth"
    AuthFile(auth).set_password(password)
    rounds = 1 if plan.quick else 3
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "idle": [], "watched": []}
    frames_seen: list[float] = []
    for _ in range(rounds):
        runs["plain"].append(e2e_summary(run_daemon_child(config_path, clip, gallery, work, models_dir=models),
                                         fps, ""))
        runs["idle"].append(e2e_summary(run_daemon_child(config_path, clip, gallery, work, web=(free_port(), auth),
                                                         models_dir=models), fps, ""))
        port = free_port()
        stop = threading.Event()
        watcher = LiveWatcher(port, password, stop)
        watcher.start()
        try:
            child = run_daemon_child(config_path, clip, gallery, work, web=(port, auth), models_dir=models)
        finally:
            stop.set()
            watcher.join(10.0)
        runs["watched"].append(e2e_summary(child, fps, ""))
        if watcher.watched_s > 0:
            frames_seen.append((watcher.frames - 1) / watcher.watched_s)

    def median(kind: str, key: str) -> float | None:
        values = [r[key] for r in runs[kind] if r.get(key) is not None]
        return round(statistics.median(values), 3) if values else None

    plain, idle, watched = (median(k, "realtime_factor") for k in ("plain", "idle", "watched"))

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    return {"clip": clip.name, "rounds": rounds, "realtime_factor_without_web": plain,
            "realtime_factor_web_idle": idle, "realtime_factor_web_watched": watched,
            "idle_vs_without": ratio(idle, plain), "watched_vs_without": ratio(watched, plain),
            "live_view_fps_received": round(statistics.median(frames_seen), 2) if frames_seen else None,
            "peak_rss_mb_without_web": median("plain", "peak_rss_mb"),
            "peak_rss_mb_web_idle": median("idle", "peak_rss_mb"),
            "peak_rss_mb_web_watched": median("watched", "peak_rss_mb")}
