"""Measurements behind `edged bench`: every stage on real inputs, the daemon end to end, and peers side by side.

Rules every number here follows:

* a timing is the median of repeated runs after one untimed warm-up run (model loading, caches);
* runtimes that are compared with each other run interleaved (A B C A B C ...) in the same process,
  so changing machine load hits them alike, and their ratios are edged time / peer time (< 1 = edged faster);
* inputs are real: photos and the Hamilton clip from the shared data set; only the match-stage galleries
  are synthetic unit vectors;
* nothing here judges speed: a benchmark reports, it never fails on timing.

The nn4 runtimes are fed identical input and every runtime's time includes the same preprocessing
(uint8 HxWx3 faces -> float32 NCHW / 255 by `edged.embed.nn4.preprocess.to_network_input`; edged's `embed()` does
it internally, the peers call it in the timed function).

The end-to-end run starts the daemon (`edged.runtime.daemon.Daemon`) in a child process, so its peak RSS and
CPU are its own; the child runs `edged.bench.e2e.e2e_child_main` with MQTT off and a `RecordingSink` on the
event stream, which stamps every event with the wall time it was handled.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edged.bench.cameras import MINIFASNET_DIR, MINIFASNET_FILES, bench_cameras, bench_models_dir
from edged.bench.common import (
    CLIP,
    LATENCY_PERSON,
    NN4_BATCHES,
    SCHEMA,
    BenchPlan,
    Step,
    load_average,
    machine_info,
    read_clip,
    require_inputs,
)
from edged.bench.e2e import bench_config, e2e_summary, enroll_known, run_daemon_child
from edged.bench.peers import bench_face_recognition_style, bench_nn4_runtimes, nn4_for_speed
from edged.bench.stages import (
    bench_align,
    bench_decode,
    bench_detect,
    bench_dlib_embed,
    bench_door_rule,
    bench_match,
)

log = logging.getLogger(__name__)


# ---- the whole run ----

@contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="edged-bench-") as name:
        os.chmod(name, 0o700)  # holds a gallery (biometric data)
        yield Path(name)


def _liveness_run(config_path: str | None, shared: Path, gallery: Path, work: Path, fps: float,
                  without: dict[str, Any], models: Path) -> dict[str, Any]:
    """The same end-to-end run with passive liveness on every track (MiniFASNet from ../shared, in the bench's
    models directory), side by side with the run without: real-time factors and the cost per tracked face per
    checked frame."""
    if not all((models / n).is_file() for n in MINIFASNET_FILES):
        return {"skipped": f"no MiniFASNet files in {shared / MINIFASNET_DIR}"}
    child = run_daemon_child(config_path, shared / CLIP, gallery, work, liveness_models=models)
    summary = e2e_summary(child, fps, LATENCY_PERSON)
    p = child["stats"]["pipeline"]
    updates = int(p.get("liveness_updates", 0))
    liveness_s = float(child["stats"]["seconds"].get("liveness", 0.0))
    return {"clip": CLIP.name, "realtime_factor": summary["realtime_factor"],
            "realtime_factor_without": without.get("realtime_factor"),
            "fps": summary["fps"], "fps_without": without.get("fps"),
            "liveness_updates": updates,
            "ms_per_tracked_face_per_checked_frame": round(1000.0 * liveness_s / updates, 3) if updates else None,
            "liveness_ms_per_frame": summary["stage_ms_per_frame"].get("liveness"),
            # the texture models run beside the frame loop (a worker thread): their CPU, per update, not in the above
            "texture_worker_ms_per_update": (round(1000.0 * float(p.get("liveness_texture_worker_s", 0.0)) / updates, 3)
                                             if updates else None),
            "texture_runs": int(p.get("liveness_texture_runs", 0)),
            "peak_rss_mb": summary["peak_rss_mb"], "peak_rss_mb_without": without.get("peak_rss_mb"),
            "events": summary["events"]}


def run_bench(shared: Path, plan: BenchPlan, config_path: str | None = None,
              step: Step | None = None) -> dict[str, Any]:
    """Every measurement of `edged bench`, as one JSON-ready dict. `step(name)` is called before each part.

    `config_path`: the user's config (detector, embedder, tracking, vote... settings for the end-to-end run
    and the pipeline comparison); None = built-in defaults.
    """
    from edged.models.embedders import embedder_from_config

    parts: dict[str, float] = {}
    last = [time.monotonic(), ""]

    def note(name: str) -> None:
        now = time.monotonic()
        if last[1]:
            parts[str(last[1])] = round(now - float(last[0]), 2)
        last[:] = [now, name]
        if name:
            log.info("bench: %s", name)
            if step:
                step(name)

    require_inputs(shared)
    started, load_start = time.monotonic(), load_average()
    report: dict[str, Any] = {"schema": SCHEMA, "quick": plan.quick}
    note("machine")
    report["machine"] = machine_info()
    with _workdir() as work:
        gallery = work / "gallery.db"
        cfg = bench_config(config_path, shared / CLIP, gallery)
        stages: dict[str, Any] = {}
        note("decode")
        stages["decode"] = bench_decode(shared, plan)
        note("detect")
        stages["detect"] = bench_detect(shared, plan)
        note("align")
        stages["align"], aligned = bench_align(shared, plan)
        note("nn4 runtimes")
        setup = nn4_for_speed(work, cfg.models.dir)
        runtimes = bench_nn4_runtimes(setup, aligned.openface96, work, plan)
        note("dlib embed")
        stages["embed"] = {
            "nn4": {"weights": setup.name, "weights_source": setup.source, "backend": runtimes["edged_backend"],
                    **{f"batch_{n}": {"ms": runtimes[f"batch_{n}"]["edged_ms"],
                                      "ms_per_face": runtimes[f"batch_{n}"]["edged_ms_per_face"]}
                       for n in NN4_BATCHES}},
            "dlib": bench_dlib_embed(aligned.chips150, plan)}
        note("match")
        embedder = embedder_from_config(cfg)
        stages["match"] = bench_match(plan.gallery_sizes, plan.match_queries, embedder.threshold, plan)
        from edged.gallery.match import MatchRule

        stages["match"]["door_rule"] = bench_door_rule(MatchRule.of(embedder, cfg.embedder, cfg.match), plan)
        report["stages"] = stages
        note("end to end")
        from edged.models.store import models_dir

        models = bench_models_dir(shared, work, models_dir(cfg.models.dir))
        enrolled = enroll_known(gallery, embedder, shared, cfg)
        _, fps = read_clip(shared / CLIP, (0, 1))
        child = run_daemon_child(config_path, shared / CLIP, gallery, work, models_dir=models)
        from edged.models.detectors import choose_detector

        report["end_to_end"] = {"clip": CLIP.name, "embedder": embedder.name, "enrolled": enrolled,
                                "config": config_path or "built-in defaults",
                                "detector": choose_detector(cfg.detector, models, check=False).backend,
                                "outputs": "the event stream recorded in the child (no MQTT)",
                                **e2e_summary(child, fps, LATENCY_PERSON)}
        hog = e2e_summary(run_daemon_child(config_path, shared / CLIP, gallery, work, models_dir=models,
                                           detector={"backend": "hog"}), fps, LATENCY_PERSON)
        report["end_to_end"]["with_hog"] = {k: hog[k] for k in ("realtime_factor", "fps", "faces_detected", "tracks",
                                                                 "embeds", "peak_rss_mb", "latency")}
        report["end_to_end_liveness"] = _liveness_run(config_path, shared, gallery, work, fps, report["end_to_end"],
                                                      models)
        note("end to end with the web page")
        from edged.bench.web import web_runs

        report["end_to_end_web"] = web_runs(config_path, shared / CLIP, gallery, work, fps, plan, models)
        note("real cameras: 1080p, 720p, detectors, idle scene")
        report["cameras"] = bench_cameras(config_path, shared, gallery, work, plan, models, cfg, embedder)
        note("several cameras: one daemon vs separate daemons")
        from edged.bench.multi import bench_multi_camera

        report["multi_camera"] = bench_multi_camera(config_path, shared / CLIP, gallery, work, plan, models)
        note("face_recognition-style peer")
        frames, _ = read_clip(shared / CLIP, plan.peer_frames)
        first = plan.peer_frames[0] if plan.peer_frames else 0
        face_rec = bench_face_recognition_style(frames, first, fps, cfg, embedder, gallery, shared, plan)
        del frames
    note("")
    report["peers"] = {"nn4_runtimes": runtimes, "face_recognition_style": face_rec}
    report["part_seconds"] = parts
    report["machine"]["load_average_start"] = load_start
    report["machine"]["load_average_end"] = load_average()
    report["duration_s"] = round(time.monotonic() - started, 2)
    return report
