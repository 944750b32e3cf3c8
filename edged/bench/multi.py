"""Several cameras on one box: N cameras in one daemon vs the same N cameras as N separate daemons, side by side.

Every camera is the hamilton clip read as fast as possible (`realtime: false`), so the rows compare throughput:
each camera's realtime factor, the CPU spent and the peak memory of one process with N cameras against N
processes with one camera each, run at the same time.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

from edged.bench.common import BenchError, BenchPlan
from edged.bench.e2e import run_daemon_child


def _camera_rows(child: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": name, "frames": c["frames_processed"], "realtime_factor": c["realtime_factor"]}
            for name, c in child["stats"]["cameras"].items()]


def _one_process(config_path: str | None, clip: Path, gallery: Path, work: Path, n: int, models: Path
                 ) -> dict[str, Any]:
    run = work / f"multi-{n}"
    run.mkdir(exist_ok=True)
    child = run_daemon_child(config_path, clip, gallery, run, models_dir=models, copies=n)
    s = child["stats"]
    cameras = _camera_rows(child)
    return {"cameras": cameras, "realtime_factor_min": min(c["realtime_factor"] or 0.0 for c in cameras),
            "wall_s": s["wall_s"], "cpu_s": s["cpu_s"], "peak_rss_mb": child.get("peak_rss_mb") or s["peak_rss_mb"]}


def _separate_processes(config_path: str | None, clip: Path, gallery: Path, work: Path, n: int, models: Path
                        ) -> dict[str, Any]:
    results: list[dict[str, Any] | BaseException] = [RuntimeError("not run")] * n

    def one(i: int) -> None:
        run = work / f"separate-{n}-{i}"
        run.mkdir(exist_ok=True)
        own = run / "gallery.db"
        shutil.copy(gallery, own)
        try:
            results[i] = run_daemon_child(config_path, clip, own, run, models_dir=models)
        except BenchError as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        if isinstance(r, BaseException):
            raise BenchError(f"separate daemons: {r}")
    children = [r for r in results if isinstance(r, dict)]
    factors = [c["stats"]["realtime_factor"] or 0.0 for c in children]
    return {"realtime_factors": factors, "realtime_factor_min": min(factors),
            "wall_s": max(c["stats"]["wall_s"] for c in children),
            "cpu_s": round(sum(c["stats"]["cpu_s"] for c in children), 3),
            "peak_rss_mb": round(sum(c.get("peak_rss_mb") or c["stats"]["peak_rss_mb"] for c in children), 1)}


def bench_multi_camera(config_path: str | None, clip: Path, gallery: Path, work: Path, plan: BenchPlan,
                       models: Path) -> dict[str, Any]:
    """Rows for 1, 2 (and 4, full bench) cameras: one process vs separate processes."""
    counts = (1, 2) if plan.quick else (1, 2, 4)
    out: dict[str, Any] = {"clip": clip.name, "counts": list(counts)}
    one = _one_process(config_path, clip, gallery, work, 1, models)
    out["1"] = {"one_process": one}
    for n in counts[1:]:
        together = _one_process(config_path, clip, gallery, work, n, models)
        apart = _separate_processes(config_path, clip, gallery, work, n, models)
        out[str(n)] = {"one_process": together, "separate_processes": apart,
                       "rss_vs_one_camera": round(together["peak_rss_mb"] / one["peak_rss_mb"], 3),
                       "rss_vs_separate": round(together["peak_rss_mb"] / apart["peak_rss_mb"], 3)}
    return out
