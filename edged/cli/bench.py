"""`edged bench`: per-stage timings, the daemon end to end, and peers side by side (see `edged.bench`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from edged.cli.common import Context, json_option

#: Parts of the run, in order, for the progress bar.
STEPS = ("machine", "decode", "detect", "align", "nn4 runtimes", "dlib embed", "match", "end to end",
         "face_recognition-style peer")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure every stage, the daemon end to end, and peers side by side",
                       description="Time decode, detect, align, embed and match on real inputs, run the daemon "
                                   "on short_hamilton_clip.mp4, and compare edged with ONNX Runtime, OpenCV DNN "
                                   "and the face_recognition-style pipeline in the same run (medians of "
                                   "interleaved repetitions). Reports; never fails on timing.")
    json_option(p, "print one JSON object with every measurement")
    p.add_argument("--quick", action="store_true",
                   help="fewer repetitions, galleries up to 100k, 30 frames for the peer pipeline (< 1 min)")
    p.add_argument("--shared", metavar="DIR",
                   help="the shared data folder (default $EDGED_SHARED, else ../shared beside the checkout)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(ctx: Context) -> int:
    from edged.bench.common import FULL, QUICK, default_shared_dir
    from edged.bench.run import run_bench

    args = ctx.args
    shared = Path(args.shared).expanduser() if args.shared else default_shared_dir()
    config_path = args.config or os.environ.get("EDGED_CONFIG")
    if config_path:
        ctx.config  # noqa: B018 -- validate the config file before minutes of measuring
    with ctx.progress(len(STEPS), "bench") as bar:
        def step(name: str) -> None:
            bar.update(STEPS.index(name) if name in STEPS else None, extra=name)

        report = run_bench(shared, QUICK if args.quick else FULL, config_path, step)
        bar.update(len(STEPS), extra="done")
    if ctx.json:
        ctx.emit_json(report)
    else:
        for line in format_report(report):
            ctx.print(line)
    return 0


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 1 else f"{value:.1f}" if value < 1000 else f"{value:,.0f}"


def _table(rows: list[list[str]], header: list[str], left: tuple[int, ...] = (0,)) -> list[str]:
    """Aligned columns: those in `left` left-aligned, numbers right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    head = fmt(header)
    return [head, "-" * len(head), *(fmt(r) for r in rows)]


def format_report(r: dict[str, Any]) -> list[str]:
    """The report as readable tables."""
    m, st, e2e, peers = r["machine"], r["stages"], r["end_to_end"], r["peers"]
    v = m["versions"]
    lines = [f"edged bench{' --quick' if r['quick'] else ''}: {r['duration_s']:.0f} s",
             f"machine: {m['cpu']}, {m['usable_cores']} of {m['cores']} cores, torch threads {m['torch_threads']}, "
             f"CUDA {'yes (' + str(m['gpu']) + ')' if m['cuda'] else 'no'}; load average "
             f"{m['load_average_start']} -> {m['load_average_end']}",
             f"versions: torch {v['torch']}, onnxruntime {v['onnxruntime']}, opencv {v['opencv']}, dlib {v['dlib']}, "
             f"faiss {v['faiss'] or '-'}", ""]

    rows = [[f"decode {k} ({d['file']})", _ms(d["median_ms"]), ""] for k, d in st["decode"].items()]
    rows += [[f"detect HOG {k.replace('_', ' ')}", _ms(d["median_ms"]), f"{d['faces']} face(s)"]
             for k, d in st["detect"].items()]
    a = st["align"]
    rows += [["landmarks 68 + OpenFace 96 crop (nn4)", _ms(a["nn4_per_face_ms"]), "per face"],
             ["landmarks 5 + dlib chip 150 (dlib)", _ms(a["dlib_per_face_ms"]), "per face"]]
    fewer = a.get("liveness_landmarks")
    if fewer:
        rows.append([f"landmarks 68, {fewer['stages']} x {fewer['trees_per_stage']} trees (liveness option)",
                     _ms(a["per_face"]["landmarks68_fewer_trees"]["median_ms"]),
                     f"{fewer['full_vs_fewer_trees']:.2f}x faster than the full model, landmarks "
                     f"{fewer['error_over_iod']:.3f} IOD apart"])
    nn4 = st["embed"]["nn4"]
    for n in (1, 16, 64):
        b = nn4[f"batch_{n}"]
        rows.append([f"embed nn4 batch {n}", _ms(b["ms"]), f"{_ms(b['ms_per_face'])} ms per face"])
    d = st["embed"]["dlib"]
    rows.append([f"embed dlib ResNet, {d.get('backend', 'dlib')} (batch {d['batch']})", _ms(d["median_ms"]),
                 "per face"])
    if "dlib_own" in d:
        rows.append([f"embed dlib ResNet, dlib's own code (batch {d['batch']})", _ms(d["dlib_own"]["median_ms"]),
                     f"per face: {d['ratio_dlib_own_default']:.1f}x the time; descriptors within "
                     f"{d['max_abs_diff_raw']:.1e}"])
    for size, x in st["match"]["exact"].items():
        rows.append([f"match exact, {int(size):,} samples", _ms(x["median_ms"]),
                     f"per query, recall@1 {x['recall_at_1']:.3f}"])
    door = st["match"]["door_rule"]
    rows.append([f"match, door rule ({door['people']} people, cohort {door['cohort']})",
                 _ms(door["door_rule"]["median_ms"]),
                 f"per face; nearest-sample rule {_ms(door['nearest_sample']['median_ms'])}, "
                 f"extra {door['extra_ms_per_face']:.3f} ms"])
    ann = st["match"]["ann"]
    for size, x in ann["sizes"].items():
        for nprobe, p in x["nprobe"].items():
            rows.append([f"match ANN, {int(size):,} samples, nprobe {nprobe}", _ms(p["median_ms"]),
                         f"per query, recall@1 {p['recall_at_1']:.3f}, build {x['build_s']:.1f} s"])
    lines += ["Stages (median ms)", *_table(rows, ["stage", "ms", "note"], left=(0, 2))]
    lines.append(f"  nn4 weights: {nn4['weights']} ({nn4['weights_source']}), backend {nn4['backend']}; "
                 f"ANN: {ann['backend'] or ann['note']}")
    lines.append(f"  match queries lie {st['match']['query_distance']} (squared L2) from a gallery sample")

    lat = e2e["latency"]
    lines += ["", f"End to end: daemon on {e2e['clip']} ({e2e['frames']} frames, {e2e['video_s']:.1f} s of video), "
                  f"embedder {e2e['embedder']}, realtime: false",
              f"  {e2e['fps']:.1f} frames/s = {e2e['realtime_factor'] or 0:.2f}x real time, "
              f"{e2e['faces_per_s']:.1f} faces/s, peak RSS {e2e['peak_rss_mb']:.0f} MB, CPU {e2e['cpu_s']:.1f} s "
              f"({e2e['cpu_cores_busy']:.2f} cores busy over {e2e['wall_s']:.1f} s wall)"]
    if lat["recognized"]:
        wall = f"{lat['wall_s']:.3f} s" if lat["wall_s"] is not None else "-"
        lines.append(f"  {lat['person']}: first detected frame {lat['first_detected_frame']}, recognized frame "
                     f"{lat['recognized_frame']}: latency {lat['video_s']:.3f} s video, {wall} wall")
    else:
        lines.append(f"  {lat['person']} was not recognized")
    hog = e2e.get("with_hog")
    if hog:
        lines.append(f"  the same run with detector.backend hog: {hog['realtime_factor'] or 0:.2f}x real time, "
                     f"{hog['faces_detected']} faces (with {e2e.get('detector', '-')}: {e2e['faces_detected']}), "
                     f"{hog['tracks']} tracks ({e2e['tracks']}), {hog['embeds']} embeddings ({e2e['embeds']}), "
                     f"peak RSS {hog['peak_rss_mb']:.0f} MB; {lat['person']} recognized on frame "
                     f"{hog['latency'].get('recognized_frame', '-')}")
    budget = e2e["stage_ms_per_frame"]
    lines.append("  per-frame budget (ms): " + ", ".join(f"{k} {val:.2f}" for k, val in budget.items())
                 + f" (real time allows {e2e['frame_budget_ms_realtime']:.1f})")

    lv = r.get("end_to_end_liveness") or {}
    if "skipped" in lv:
        lines.append(f"  with liveness: skipped ({lv['skipped']})")
    elif lv:
        per = lv["ms_per_tracked_face_per_checked_frame"]
        lines.append(f"  with liveness on: {lv['realtime_factor'] or 0:.2f}x real time (without "
                     f"{lv['realtime_factor_without'] or 0:.2f}x), {lv['liveness_updates']} liveness updates, "
                     f"{per if per is not None else '-'} ms per tracked face per checked frame, peak RSS "
                     f"{lv['peak_rss_mb']:.0f} MB (without {lv['peak_rss_mb_without']:.0f} MB)")

    web = r.get("end_to_end_web") or {}
    if web:
        def factor(key: str) -> str:
            return f"{web[key]:.2f}x" if web.get(key) is not None else "-"

        lines.append(f"  with the web page on (interleaved with runs without it, median of {web['rounds']} round(s)): "
                     f"{factor('realtime_factor_web_idle')} real time nobody watching, "
                     f"{factor('realtime_factor_web_watched')} with the live view watched "
                     f"({web['live_view_fps_received'] or 0:.1f} frames/s received), "
                     f"{factor('realtime_factor_without_web')} without the page (idle/without "
                     f"{web['idle_vs_without'] or 0:.3f}, watched/without {web['watched_vs_without'] or 0:.3f})")

    lines += _camera_lines(r.get("cameras") or {})
    lines += _multi_camera_lines(r.get("multi_camera") or {})

    rt = peers["nn4_runtimes"]
    rows = []
    for n in (1, 16, 64):
        b = rt[f"batch_{n}"]
        per = n > 1
        key = "_ms_per_face" if per else "_ms"
        rows.append([f"batch {n}{' (per face)' if per else ''}", _ms(b["edged" + key]), _ms(b["onnxruntime" + key]),
                     _ms(b["opencv_dnn" + key]), f"{b['ratio_edged_onnxruntime']:.2f}",
                     f"{b['ratio_edged_opencv_dnn']:.2f}",
                     _ms(b["edged_int8" + key]) if "edged_int8" + key in b else "-",
                     f"{b['ratio_int8_edged']:.2f}" if "ratio_int8_edged" in b else "-"])
    int8 = rt.get("int8") or {}
    lines += ["", "Peers: nn4 runtimes (median ms; ratio = edged time / peer time, < 1 = edged faster)",
              *_table(rows, ["batch", "edged", "ONNX Runtime", "OpenCV DNN", "edged/ORT", "edged/OpenCV",
                             "edged int8", "int8/edged"]),
              f"  int8 model: {int8.get('model', 'not measured')}"
              + (f" (max squared L2 to edged's fp32 embeddings {int8['max_sq_l2_vs_edged']:.5f})"
                 if int8.get("max_sq_l2_vs_edged") is not None else ""),
              f"  edged backend {rt['edged_backend']}; ORT threads {rt['onnxruntime_threads']}; "
              f"export: {rt['export']}; "
              f"max |diff| vs edged: ORT {rt['max_abs_diff_vs_edged']['onnxruntime']:.1e}, "
              f"OpenCV {rt['max_abs_diff_vs_edged']['opencv_dnn']:.1e}"]
    fr = peers["face_recognition_style"]
    rows = [["edged pipeline (daemon settings)", f"{fr['edged']['fps']:.1f}", _ms(fr["edged"]["ms_per_frame"])],
            ["face_recognition-style", f"{fr['face_recognition_style']['fps']:.1f}",
             _ms(fr["face_recognition_style"]["ms_per_frame"])]]
    lines += ["", f"Peers: pipelines on the same {fr['frames']} frames (from frame {fr['first_frame']}, "
                  f"decode excluded, median of {fr['runs']})",
              *_table(rows, ["pipeline", "frames/s", "ms/frame"]),
              f"  ratio edged/peer time per frame {fr['ratio_edged_time_per_frame']:.3f} "
              f"(speed-up {fr['speedup']:.1f}x)"]
    return lines


def _camera_lines(cam: dict[str, Any]) -> list[str]:
    """The real-cameras part: detectors side by side, faces found against the reference, 1080p/720p, idle."""
    if not cam:
        return []
    if "skipped" in cam:
        return ["", f"Real cameras: skipped ({cam['skipped']})"]
    lines = ["", f"Real cameras (detector {cam['detector']})"]
    det = cam["detectors"]
    if "skipped" in det:
        lines.append(f"  detectors: skipped ({det['skipped']})")
    else:
        names = list(next(iter(det["sizes"].values())))
        rows = [[label, *(f"{row[n]['ms']:.1f} ms, {row[n]['faces']} faces" for n in names)]
                for label, row in det["sizes"].items()]
        lines += [f"  detectors on {det['frames']} (median ms per detection, faces found):",
                  *("  " + ln for ln in _table(rows, ["size", *names], left=(0,)))]
        lfw = det["lfw_where_hog_failed"]
        lines.append("  LFW images where HOG found no face: " + (
            f"skipped ({lfw['skipped']})" if "skipped" in lfw else
            f"RetinaFace finds {lfw['retinaface_found']} of {lfw['images']}"))
    t = cam["tracks"]
    lines.append(f"  faces found on the 1080p pedestrians video: {t['found']} of {t['reference_tracks']} reference "
                 f"tracks ({100 * (t['found_fraction'] or 0):.0f}%; {t['reference']}), the pipeline "
                 f"({t['pipeline_detector']}) started {t['pipeline_tracks']} tracks")
    for label in ("pedestrians_1080p", "pedestrians_720p"):
        row = cam[label]
        lines.append(f"  {label}: {row['realtime_factor'] or 0:.2f}x real time ({row['fps']:.1f} frames/s), "
                     f"{row['frames_dropped']} dropped, {row['faces_detected']} faces, {row['tracks']} tracks, "
                     f"{row['embeds']} embeddings, {row['cpu_cores_busy']:.2f} cores busy; ms per frame: "
                     + ", ".join(f"{k} {v:.1f}" for k, v in row["stage_ms_per_frame"].items() if v))
    idle = cam["idle"]
    after = idle.get("first_recognition_after_s")
    lines.append(f"  idle scene ({idle['still_s']:.0f} s still, then a face): "
                 f"{idle.get('cpu_percent_of_one_core', '-')}% of one core, {idle['detector_runs']} detector runs, "
                 f"{idle.get('motion_skipped')} frames skipped for no motion; "
                 + (f"{idle['recognized']} recognised {after:.2f} s (wall) after appearing" if after is not None
                    else "the face was not recognised"))
    return lines


def _multi_camera_lines(mc: dict[str, Any]) -> list[str]:
    """Several cameras: N cameras in one daemon vs N separate daemons."""
    if not mc:
        return []
    if "skipped" in mc:
        return ["", f"Several cameras: skipped ({mc['skipped']})"]
    one = mc["1"]["one_process"]
    rows = [["1", f"{one['realtime_factor_min']:.2f}x", f"{one['cpu_s']:.1f}", f"{one['peak_rss_mb']:.0f}", "-",
             "-", "-", "1.00"]]
    for n in mc["counts"][1:]:
        row = mc[str(n)]
        t, a = row["one_process"], row["separate_processes"]
        rows.append([str(n), f"{t['realtime_factor_min']:.2f}x", f"{t['cpu_s']:.1f}", f"{t['peak_rss_mb']:.0f}",
                     f"{a['realtime_factor_min']:.2f}x", f"{a['cpu_s']:.1f}", f"{a['peak_rss_mb']:.0f}",
                     f"{row['rss_vs_one_camera']:.2f}"])
    return ["", f"Several cameras ({mc['clip']} on every camera, every frame as fast as possible; one daemon vs "
                "separate daemons at the same time)",
            *_table(rows, ["cameras", "one daemon: slowest camera", "CPU s", "RSS MB", "separate: slowest",
                           "CPU s", "RSS MB (sum)", "RSS vs 1 camera"])]
