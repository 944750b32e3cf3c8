"""`edged bench`: the --quick run end to end on the shared data (every key, sane values; never timing
targets), the human report built from it, the timing and synthetic-gallery helpers, and input errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edged.bench.common import (
    BenchError,
    interleaved,
    nearest_rows,
    perturbed_queries,
    random_unit_vectors,
    require_inputs,
    resize_to,
    summary,
)
from edged.cli.bench import format_report
from tests.conftest import run_cli

TIMING = {"median_ms", "min_ms", "max_ms", "runs"}


@pytest.fixture(scope="module")
def report(shared: Path) -> dict[str, Any]:
    done = run_cli("bench", "--quick", "--json", "--shared", str(shared), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, "--json prints exactly one JSON object"
    return json.loads(lines[0])


def _timing_ok(t: dict[str, Any]) -> None:
    assert set(t) >= TIMING, t
    assert 0 < t["min_ms"] <= t["median_ms"] <= t["max_ms"] and t["runs"] >= 1


@pytest.mark.slow
def test_quick_report_has_every_key(report: dict[str, Any]) -> None:
    assert report["schema"] == "edged-bench/1" and report["quick"] is True
    assert {"schema", "quick", "machine", "stages", "end_to_end", "peers", "duration_s", "part_seconds"} <= set(report)
    m = report["machine"]
    assert {"cpu", "cores", "usable_cores", "torch_threads", "opencv_threads", "cuda", "gpu", "python",
            "load_average_start", "load_average_end", "versions"} <= set(m)
    assert {"torch", "onnxruntime", "opencv", "dlib", "numpy", "faiss"} <= set(m["versions"])
    assert m["cores"] >= 1 and m["torch_threads"] >= 1 and isinstance(m["cuda"], bool)
    assert len(m["load_average_start"]) == 3 and len(m["load_average_end"]) == 3

    st = report["stages"]
    assert set(st) == {"decode", "detect", "align", "embed", "match"}
    assert set(st["decode"]) == {"jpeg_1920x1080", "jpeg_1280x720"}
    assert set(st["detect"]) == {"640x480_upsample0", "640x480_upsample1", "1280x720_upsample0",
                                 "1280x720_upsample1"}
    assert set(st["align"]["per_face"]) == {"landmarks68", "landmarks68_fewer_trees", "openface96", "landmarks5",
                                            "dlib_chip150"}
    fewer = st["align"]["liveness_landmarks"]
    assert (fewer["stages"], fewer["trees_per_stage"]) == (15, 150) and fewer["full_vs_fewer_trees"] > 0
    assert 0.0 < fewer["error_over_iod"] < 0.06  # 0.040 on the bench's 9 faces (0.036 on 300 LFW faces)
    assert {"batch_1", "batch_16", "batch_64", "weights", "weights_source", "backend"} <= set(st["embed"]["nn4"])
    assert set(st["match"]["exact"]) == {"1000", "10000", "100000"}
    assert {"available", "backend", "sizes", "note"} <= set(st["match"]["ann"])

    e = report["end_to_end"]
    assert {"clip", "embedder", "frames", "video_s", "wall_s", "processing_s", "fps", "realtime_factor",
            "faces_per_s", "peak_rss_mb", "cpu_s", "cpu_cores_busy", "stage_ms_per_frame", "latency"} <= set(e)
    assert {"decode", "detect", "track", "align", "embed", "match"} <= set(e["stage_ms_per_frame"])
    assert {"person", "recognized", "first_detected_frame", "recognized_frame", "video_s", "wall_s"} <= set(
        e["latency"])

    rt = report["peers"]["nn4_runtimes"]
    for n in (1, 16, 64):
        assert {"edged_ms", "onnxruntime_ms", "opencv_dnn_ms", "ratio_edged_onnxruntime",
                "ratio_edged_opencv_dnn"} <= set(rt[f"batch_{n}"])
    fr = report["peers"]["face_recognition_style"]
    assert {"frames", "edged", "face_recognition_style", "ratio_edged_time_per_frame", "speedup"} <= set(fr)


@pytest.mark.slow
def test_quick_report_values_are_sane(report: dict[str, Any]) -> None:
    st = report["stages"]
    for t in [*st["decode"].values(), *st["detect"].values(), *st["align"]["per_face"].values()]:
        _timing_ok(t)
    # the photo has one face, found at every resolution and upsampling level
    assert all(d["faces"] == 1 for d in st["detect"].values())
    assert st["align"]["faces"] >= 5
    for n in (1, 16, 64):
        b = st["embed"]["nn4"][f"batch_{n}"]
        assert b["ms"] > 0 and b["ms_per_face"] == pytest.approx(b["ms"] / n, rel=1e-3)
    assert st["embed"]["nn4"]["weights_source"] in ("installed", "random")
    _timing_ok(st["embed"]["dlib"])
    for x in st["match"]["exact"].values():
        _timing_ok(x)
        assert x["recall_at_1"] >= 0.9  # a query 0.3 from its sample; other samples are ~2 away
    door = st["match"]["door_rule"]
    _timing_ok(door["door_rule"])
    _timing_ok(door["nearest_sample"])
    assert door["cohort"] > 0 and door["rule"]["max_ratio"] is not None and door["people"] == 100
    ann = st["match"]["ann"]
    if ann["available"]:
        x = ann["sizes"]["100000"]
        assert x["build_s"] > 0 and x["nlist"] > 1 and set(x["nprobe"]) == {"16", "64"}
        for p in x["nprobe"].values():
            _timing_ok(p)
            assert 0.0 <= p["recall_at_1"] <= 1.0
        # probing more lists never finds fewer true nearest samples
        assert x["nprobe"]["64"]["recall_at_1"] >= x["nprobe"]["16"]["recall_at_1"]

    e = report["end_to_end"]
    assert e["frames"] == 275 and e["frames_dropped"] == 0 and e["video_s"] == pytest.approx(9.18, abs=0.05)
    assert e["fps"] > 0 and e["realtime_factor"] > 0 and e["faces_per_s"] > 0 and e["cpu_s"] > 0
    # the daemon's own memory (not the bench process's): dlib models, no 100k-vector galleries
    assert 50 < e["peak_rss_mb"] < 2000
    assert all(v >= 0 for v in e["stage_ms_per_frame"].values())
    lat = e["latency"]
    assert lat["recognized"] and lat["recognized_frame"] >= lat["first_detected_frame"]
    assert lat["video_s"] >= 0 and lat["wall_s"] is not None and lat["wall_s"] > 0

    lv = report["end_to_end_liveness"]  # the same run with liveness on every track, side by side
    assert lv["realtime_factor"] > 0 and lv["realtime_factor_without"] == e["realtime_factor"]
    assert lv["liveness_updates"] > 0 and 0 < lv["ms_per_tracked_face_per_checked_frame"] < 1000
    assert lv["events"].get("recognized", 0) >= 1  # Lin-Manuel is still recognized

    web = report["end_to_end_web"]  # the page on, idle and watched, side by side
    assert web["realtime_factor_web_idle"] > 0 and web["realtime_factor_web_watched"] > 0
    assert web["realtime_factor_without_web"] > 0 and 0 < web["watched_vs_without"] < 2
    assert web["live_view_fps_received"] > 1  # the watcher really got live frames (web.live_fps 5 at most)

    hog = e["with_hog"]  # the same run with HOG, side by side
    assert hog["realtime_factor"] > 0 and hog["latency"]["recognized"] and hog["faces_detected"] > 0

    cam = report["cameras"]  # real cameras: RetinaFace from ../shared, as `edged models fetch` installs it
    assert cam["detector"] == "retinaface" and e["detector"] == "retinaface"
    sizes = cam["detectors"]["sizes"]
    assert set(sizes) == {"360p", "720p", "1080p"}
    for row in sizes.values():
        ratio = row.pop("retinaface_ort_vs_opencv")
        assert set(row) == {"retinaface", "retinaface_opencv", "hog_upsample0", "hog_upsample1"}
        assert all(r["ms"] > 0 for r in row.values()) and ratio > 0
        assert row["retinaface"]["faces"] >= row["hog_upsample0"]["faces"]  # finds at least what cheap HOG finds
        assert row["retinaface"]["faces"] == row["retinaface_opencv"]["faces"]  # the same network on both runtimes
    lfw = cam["detectors"]["lfw_where_hog_failed"]
    assert "skipped" in lfw or 0 <= lfw["retinaface_found"] <= lfw["images"]
    t = cam["tracks"]
    assert t["frames"] == 25 and t["reference_tracks"] >= 3 and 0 <= t["found"] <= t["reference_tracks"]
    assert t["found_fraction"] >= 0.9 and t["pipeline_detector"] == "retinaface"
    for label in ("pedestrians_1080p", "pedestrians_720p"):
        row = cam[label]
        assert row["frames"] == 105 and row["frames_dropped"] == 0 and row["realtime_factor"] > 0
        assert row["faces_detected"] > 0 and row["tracks"] > 0
    idle = cam["idle"]
    assert idle["still_s"] == 12.0 and 0 < idle["cpu_percent_of_one_core"] < 100
    assert idle["motion_skipped"] > 0 and idle["recognized"] == "lin-manuel-miranda"
    assert 0 < idle["first_recognition_after_s"] < 5

    mc = report["multi_camera"]
    assert mc["counts"] == [1, 2] and [c["name"] for c in mc["2"]["one_process"]["cameras"]] == ["cam1", "cam2"]
    assert all(c["frames"] == 275 and c["realtime_factor"] > 0 for c in mc["2"]["one_process"]["cameras"])
    assert len(mc["2"]["separate_processes"]["realtime_factors"]) == 2
    # memory, not time: the second camera shares the models and the gallery (separate daemons load both twice)
    assert mc["2"]["rss_vs_one_camera"] < 1.5 and mc["2"]["rss_vs_separate"] < 0.75

    rt = report["peers"]["nn4_runtimes"]
    # the peers run the same network and weights: their embeddings agree with edged's
    assert max(rt["max_abs_diff_vs_edged"].values()) <= 1e-4
    for n in (1, 16, 64):
        b = rt[f"batch_{n}"]
        for key in ("ratio_edged_onnxruntime", "ratio_edged_opencv_dnn"):
            assert math.isfinite(b[key]) and b[key] > 0
        assert b["ratio_edged_onnxruntime"] == pytest.approx(b["edged_ms"] / b["onnxruntime_ms"], rel=1e-2)
    # the shipped weights' int8 model runs beside them (side by side in the same rounds), with the same embeddings
    # within quantisation error
    if rt["weights_source"] == "installed" and rt["weights"] == "nn4.small2.edged-v1":
        assert rt["int8"]["model"] == "nn4.small2.edged-v1.int8.onnx" and rt["int8"]["max_sq_l2_vs_edged"] < 0.01
        for n in (1, 16, 64):
            b = rt[f"batch_{n}"]
            assert b["ratio_int8_edged"] == pytest.approx(b["edged_int8_ms"] / b["edged_ms"], rel=1e-2)
    fr = report["peers"]["face_recognition_style"]
    assert fr["frames"] == 30 and fr["edged"]["fps"] > 0 and fr["face_recognition_style"]["fps"] > 0
    assert math.isfinite(fr["ratio_edged_time_per_frame"]) and fr["ratio_edged_time_per_frame"] > 0
    # both pipelines name Lin-Manuel in frames 80-109 of the clip
    assert "lin-manuel-miranda" in fr["face_recognition_style"]["first_named_frame"]
    assert "lin-manuel-miranda" in fr["edged"]["first_recognized_frame"]


@pytest.mark.slow
def test_human_report_is_a_table_of_the_same_numbers(report: dict[str, Any]) -> None:
    text = "\n".join(format_report(report))
    for needle in ("Stages (median ms)", "detect HOG 1280x720 upsample1", "embed nn4 batch 64",
                   "match exact, 100,000 samples", "End to end: daemon on short_hamilton_clip.mp4",
                   "Peers: nn4 runtimes", "edged/ORT", "face_recognition-style", "load average",
                   "Real cameras (detector retinaface)", "pedestrians_1080p:", "idle scene (12 s still",
                   "Several cameras (short_hamilton_clip.mp4", "trees (liveness option)"):
        assert needle in text, needle
    ratio = report["peers"]["nn4_runtimes"]["batch_16"]["ratio_edged_onnxruntime"]
    assert f"{ratio:.2f}" in text


def test_missing_shared_data_is_one_line_error(tmp_path: Path) -> None:
    done = run_cli("bench", "--quick", "--shared", str(tmp_path / "nowhere"))
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edged: error: bench input not found:"), done.stderr
    assert "nowhere" in lines[0] and "Traceback" not in done.stderr


def test_require_inputs_names_the_missing_file(tmp_path: Path, shared: Path) -> None:
    with pytest.raises(BenchError, match=r"short_hamilton_clip\.mp4"):
        require_inputs(tmp_path)
    require_inputs(shared)


def test_interleaved_runs_in_rounds_and_drops_warmup() -> None:
    order: list[str] = []
    clock = iter(range(1000))
    times = interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3, warmup=1,
                        timer=lambda: float(next(clock)))
    assert order == ["a", "b"] * 4
    assert times == {"a": [1.0] * 3, "b": [1.0] * 3}
    with pytest.raises(ValueError):
        interleaved({"a": lambda: None}, repeats=0)


def test_summary_median_and_per_item() -> None:
    s = summary([0.004, 0.001, 0.002], per=2)
    assert s == {"median_ms": 1.0, "min_ms": 0.5, "max_ms": 2.0, "runs": 3}


def test_synthetic_queries_lie_at_the_asked_distance() -> None:
    rng = np.random.default_rng(3)
    gallery = random_unit_vectors(2000, 128, rng)
    assert np.allclose(np.linalg.norm(gallery, axis=1), 1.0, atol=1e-5)
    idx = rng.choice(2000, 50, replace=False)
    queries = perturbed_queries(gallery[idx], 0.3, rng)
    assert np.allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
    assert np.allclose(((queries - gallery[idx]) ** 2).sum(axis=1), 0.3, atol=1e-4)
    brute = np.argmin(((queries[:, None, :] - gallery[None]) ** 2).sum(axis=2), axis=1)
    assert np.array_equal(nearest_rows(gallery, queries, chunk=300), brute)
    assert np.array_equal(brute, idx)


def test_resize_to_crops_to_the_aspect_ratio(shared: Path) -> None:
    import cv2

    from edged.vision.imageio import load_image

    photo = load_image(shared / "data/face_recognition-examples/obama-1080p.jpg")
    small = resize_to(photo, 640, 480)
    assert small.shape == (480, 640, 3) and small.dtype == np.uint8
    # 16:9 -> 4:3: the full height and the middle 1440 of 1920 columns, scaled down
    expected = cv2.resize(photo[:, 240:1680], (640, 480), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - expected.astype(int)).max() <= 1
    assert resize_to(photo, 1280, 720).shape == (720, 1280, 3)
