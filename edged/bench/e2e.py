"""The daemon end to end in a child process: its own peak RSS, CPU and recognition latency on the clip."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edged.bench.common import KNOWN_PEOPLE, LATENCY_PERSON, BenchError
from edged.errors import EdgedError
from edged.machine import cpu_seconds, peak_rss_mb

log = logging.getLogger(__name__)


# ---- gallery for the clip ----

def enroll_known(gallery_path: Path, embedder: Any, shared: Path, cfg: Any) -> list[str]:
    """A fresh gallery with the clip's known people, enrolled as `edged enroll` does; returns their names."""
    from edged.gallery.enroll import enroll_person, expand_sources

    enrolled = []
    for name, rel in KNOWN_PEOPLE.items():
        report = enroll_person(gallery_path, name, expand_sources([str(shared / rel)]), cfg.enroll,
                               lambda _gallery: embedder)
        if report.samples:
            enrolled.append(name)
    if LATENCY_PERSON not in enrolled:
        raise BenchError(f"{shared / KNOWN_PEOPLE[LATENCY_PERSON]}: could not be enrolled")
    return enrolled


# ---- end to end: the daemon in a child process ----

def bench_config(config_path: str | None, clip: Path, gallery: Path,
                 camera_overrides: Mapping[str, Any] | None = None) -> Any:
    """The user's config (or the defaults) with the clip as the camera (every frame, no pacing, unless
    `camera_overrides` say otherwise), the bench gallery, and no MQTT (the child records the event stream)."""
    from edged.config import default_config, load_config

    cfg = load_config(config_path) if config_path else default_config(str(clip), "bench")
    camera = cfg.camera.model_copy(update={"source": str(clip), "realtime": False, "loop": False, "roi": None,
                                           "max_width": None, **(camera_overrides or {})})
    gallery_cfg = cfg.gallery.model_copy(update={"path": str(gallery)})
    return cfg.model_copy(update={"camera": camera, "mqtt": cfg.mqtt.model_copy(update={"enabled": False}),
                                  "gallery": gallery_cfg})


class _StampedCapture:
    """A `cv2.VideoCapture` recording the wall time and the process's CPU seconds when each frame was read."""

    def __init__(self, cap: Any, stamps: list[float], cpu: list[float] | None = None) -> None:
        self._cap = cap
        self._stamps = stamps
        self._cpu = cpu

    def read(self) -> tuple[bool, Any]:
        ok, image = self._cap.read()
        if ok:
            self._stamps.append(time.time())
            if self._cpu is not None:
                self._cpu.append(cpu_seconds())
        return ok, image

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cap, name)


def e2e_child_main(argv: Sequence[str]) -> int:
    """Child process: run the daemon over the clip and write its statistics and timing stamps as JSON."""
    from edged.camera.source import opencv_capture
    from edged.models.embedders import embedder_from_config
    from edged.runtime.daemon import Daemon
    from edged.runtime.sinks import RecordingSink
    from edged.runtime.systemd import Notifier
    from edged.types import IdentityEvent

    spec = json.loads(Path(argv[0]).read_text())
    try:
        cfg = bench_config(spec["config"], Path(spec["clip"]), Path(spec["gallery"]), spec.get("camera"))
        if spec.get("copies", 1) > 1:  # several cameras in one daemon, each reading the clip
            cfg = cfg.model_copy(update={"cameras": [cfg.camera.model_copy(update={"name": f"cam{i + 1}"})
                                                     for i in range(int(spec["copies"]))]})
        if spec.get("detector"):
            cfg = cfg.model_copy(update={"detector": cfg.detector.model_copy(update=spec["detector"])})
        if spec.get("web_port"):  # the same run with the web page on (watched or not: see edged.bench.web)
            cfg = cfg.model_copy(update={"web": cfg.web.model_copy(update={
                "enabled": True, "port": int(spec["web_port"]), "auth_file": spec["web_auth"]})})
        if spec.get("liveness_models"):  # the same run with passive liveness on every track
            cfg = cfg.model_copy(update={
                "liveness": cfg.liveness.model_copy(update={"enabled": True}),
                "models": cfg.models.model_copy(update={"dir": spec["liveness_models"]})})
        grabbed: list[float] = []
        cpu: list[float] = []
        recorder = RecordingSink()
        daemon = Daemon(cfg, embedder=embedder_from_config(cfg), notifier=Notifier({}), sinks=[recorder],
                        capture_factory=lambda src, api: _StampedCapture(opencv_capture(src, api), grabbed, cpu))
        stats = daemon.run()
    except EdgedError as exc:
        print(f"edged: error: {exc}", file=sys.stderr)
        return 1
    result = {"stats": stats.to_dict(), "grabbed": grabbed, "cpu": cpu, "peak_rss_mb": peak_rss_mb(),
              "events": [{"wall": w, "type": str(e.kind), "person": e.person, "frame": e.frame}
                         for w, e in recorder.items if isinstance(e, IdentityEvent) and not e.resumed]}
    Path(spec["out"]).write_text(json.dumps(result))
    return 0


def run_daemon_child(config_path: str | None, clip: Path, gallery: Path, workdir: Path,
                     timeout_s: float = 600.0, liveness_models: Path | None = None,
                     web: tuple[int, Path] | None = None, camera: Mapping[str, Any] | None = None,
                     models_dir: Path | None = None, detector: Mapping[str, Any] | None = None,
                     copies: int = 1) -> dict[str, Any]:
    """Start the child, wait for it, return what it wrote; BenchError with its last error line on failure.
    `liveness_models`: a models directory with the MiniFASNet files: the run has liveness on. `web`: (port,
    auth file): the run serves the web page there. `camera`: camera settings over the bench's (every frame,
    no pacing). `models_dir`: the child's $EDGED_MODELS (the bench's, with RetinaFace). `detector`: detector
    settings over the config's. `copies`: that many cameras in the one daemon, each reading the clip."""
    spec = {"config": config_path, "clip": str(clip), "gallery": str(gallery), "out": str(workdir / "e2e.json"),
            "liveness_models": str(liveness_models) if liveness_models else None,
            "web_port": web[0] if web else None, "web_auth": str(web[1]) if web else None,
            "camera": dict(camera) if camera else None, "detector": dict(detector) if detector else None,
            "copies": copies}
    spec_path = workdir / "e2e-spec.json"
    spec_path.write_text(json.dumps(spec))
    drop = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} | ({"EDGED_MODELS"} if liveness_models else set())
    env = {k: v for k, v in os.environ.items() if k not in drop}
    if models_dir is not None and not liveness_models:
        env["EDGED_MODELS"] = str(models_dir)
    code = "import sys; from edged.bench.e2e import e2e_child_main; sys.exit(e2e_child_main(sys.argv[1:]))"
    try:
        done = subprocess.run([sys.executable, "-c", code, str(spec_path)], capture_output=True, text=True,
                              timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"end-to-end run: the daemon did not finish {clip.name} within {timeout_s:.0f} s") from exc
    if done.returncode != 0 or not Path(spec["out"]).is_file():
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()]
        raise BenchError(f"end-to-end run failed (exit {done.returncode}): "
                         f"{(errors or lines or ['no output'])[-1]}")
    return json.loads(Path(spec["out"]).read_text())


def e2e_summary(child: Mapping[str, Any], fps: float, person: str) -> dict[str, Any]:
    """Throughput, per-frame stage budget, memory, CPU and the person's recognition latency from a child run."""
    s = child["stats"]
    p = s["pipeline"]
    frames = max(int(s["frames_processed"]), 1)
    processing = float(s["processing_s"])
    video_s = s["frames_read"] / fps
    out: dict[str, Any] = {
        "frames": s["frames_processed"], "frames_dropped": s["frames_dropped"], "video_fps": round(fps, 3),
        "video_s": round(video_s, 3), "wall_s": s["wall_s"], "processing_s": s["processing_s"],
        "startup_and_shutdown_s": round(s["wall_s"] - s["processing_s"], 3),
        "fps": s["fps"], "realtime_factor": s["realtime_factor"],
        "faces_detected": p["faces_detected"],
        "faces_per_s": round(p["faces_detected"] / processing, 2) if processing > 0 else None,
        "detector_runs": p["detector_runs"], "small_face_scans": p["small_face_scans"],
        "tracks": p["tracks_started"], "embeds": p["embeds"],
        "peak_rss_mb": child.get("peak_rss_mb") or s["peak_rss_mb"],
        "cpu_s": s["cpu_s"], "cpu_cores_busy": round(s["cpu_s"] / s["wall_s"], 3),
        "stage_ms_per_frame": {k: round(v * 1000.0 / frames, 3) for k, v in s["seconds"].items()},
        "frame_budget_ms_realtime": round(1000.0 / fps, 3), "events": s["events"],
    }
    timing = s["people"].get(person)
    latency: dict[str, Any] = {"person": person, "recognized": timing is not None}
    if timing is not None:
        first, rec = int(timing["first_detected_frame"]), int(timing["recognized_frame"])
        published = next((e["wall"] for e in child["events"]
                          if e["type"] == "recognized" and e["person"] == person), None)
        grabbed = child["grabbed"]
        latency.update(first_detected_frame=first, recognized_frame=rec,
                       video_s=round(float(timing["latency_s"]), 4),
                       wall_s=round(published - grabbed[first], 4)
                       if published is not None and first < len(grabbed) else None)
    out["latency"] = latency
    return out
