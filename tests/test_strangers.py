"""Strangers at the door, end to end on real photos and the real clip: the margin test, low-quality faces, the
ignore list, and unknown visitors stored, clustered and named."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edged.config import parse_config
from edged.distance import squared_l2
from edged.gallery import unknowns
from edged.gallery.store import Gallery
from edged.runtime.daemon import Daemon
from edged.runtime.sinks import RecordingSink
from edged.vision.imageio import load_image
from tests.conftest import LIN, enroll_cli, run_cli, wait_until

LFW_ = "lfw-deepfunneled"


def photo(lfw_dir: Path, name: str, i: int) -> Path:
    return lfw_dir / LFW_ / name / f"{name}_{i:04d}.jpg"


def identify(gallery: Path, *images: Path | str) -> list[dict]:
    done = run_cli("--gallery", str(gallery), "identify", *map(str, images), "--json")
    assert done.returncode == 0, done.stderr
    return [f for entry in json.loads(done.stdout)["results"] for f in entry["faces"]]


def test_a_stranger_near_an_enrolled_person_is_refused_by_the_margin_test(lfw_dir: Path, tmp_path: Path,
                                                                          dlib_pipeline) -> None:
    """Lee Jun lies nearer to Junichiro Koizumi's photos (0.07) than the old default threshold (0.18) and than
    Koizumi's own threshold: the old rule named him Koizumi; the margin test refuses him (he is about as near to
    Chen Shui-bian), while Koizumi's other photos are still named."""
    gallery = tmp_path / "g.db"
    enroll_cli(gallery, "koizumi", *(photo(lfw_dir, "Junichiro_Koizumi", i) for i in (1, 2, 3)))
    enroll_cli(gallery, "chen", *(photo(lfw_dir, "Chen_Shui-bian", i) for i in (1, 2, 3)))
    stranger = photo(lfw_dir, "Lee_Jun", 2)
    enrolled = np.array([dlib_pipeline.process(load_image(photo(lfw_dir, "Junichiro_Koizumi", i)))[0].embedding
                         for i in (1, 2, 3)])
    probe = dlib_pipeline.process(load_image(stranger))[0].embedding
    assert squared_l2(probe[None], enrolled).min() < 0.18  # the old default would have named him
    [face] = identify(gallery, stranger)
    assert face["name"] is None and face["candidate"] == "koizumi" and face["reason"] == "ambiguous"
    assert face["distance"] <= face["threshold"] and face["ratio"] > 0.6  # within the threshold, not the margin
    named = [f["name"] for f in identify(gallery, *(photo(lfw_dir, "Junichiro_Koizumi", i) for i in (4, 5, 6, 7)))]
    assert named.count("koizumi") >= 3 and set(named) <= {"koizumi", None}
    text = run_cli("--gallery", str(gallery), "identify", str(stranger))
    assert "unknown (ambiguous: nearest koizumi" in text.stdout


def test_blurred_and_cut_off_faces_are_unknown_low_quality(fr_dir: Path, tmp_path: Path) -> None:
    gallery = tmp_path / "g.db"
    enroll_cli(gallery, "obama", fr_dir / "obama.jpg")
    image = load_image(fr_dir / "obama2.jpg")
    [good] = identify(gallery, fr_dir / "obama2.jpg")
    assert good["name"] == "obama" and good["quality"] is None
    left, _, right, _ = good["box"]
    blurred = cv2.GaussianBlur(image, (0, 0), 0.06 * (right - left))
    half = image[:, : (left + right) // 2 + 5]  # the image ends through the face
    for name, picture in (("blurred.png", blurred), ("half.png", half)):
        cv2.imwrite(str(tmp_path / name), picture[:, :, ::-1])
    faces = {name: identify(gallery, tmp_path / name) for name in ("blurred.png", "half.png")}
    assert faces["blurred.png"] and all(f["name"] is None and f["reason"] == "low quality"
                                        and f["quality"].startswith("blurred") for f in faces["blurred.png"])
    assert all(f["name"] is None and f["quality"] == "cut off by the image edge" for f in faces["half.png"])
    text = run_cli("--gallery", str(gallery), "identify", str(tmp_path / "blurred.png"))
    assert "unknown (low quality: blurred" in text.stdout


def config(clip: Path, gallery: Path, **camera: object) -> str:
    return yaml.safe_dump({"device_id": "door", "camera": {"source": str(clip), "name": "front", "realtime": False,
                                                           **camera},
                           "gallery": {"path": str(gallery)}, "mqtt": {"enabled": False}})


def run_daemon(clip: Path, gallery: Path, dlib_embedder, frames: int | None = None, **camera: object
               ) -> RecordingSink:
    """The daemon over the clip (looping and stopped after `frames` frames when given); what it emitted."""
    recorder = RecordingSink()
    daemon = Daemon(parse_config(config(clip, gallery, **camera)), embedder=dlib_embedder, sinks=[recorder])
    if frames is None:
        daemon.run()
        return recorder
    runner = threading.Thread(target=daemon.run, daemon=True)
    runner.start()
    assert wait_until(lambda: daemon._pipeline is not None and daemon._pipeline.stats.frames >= frames, 120)
    daemon.request_stop("test")
    runner.join(20)
    assert not runner.is_alive()
    return recorder


def near_lin(vectors: np.ndarray, lin: np.ndarray, within: float = 0.16) -> np.ndarray:
    return squared_l2(vectors, lin[None])[:, 0] <= within


@pytest.fixture(scope="module")
def visits_gallery(clip: Path, tmp_path_factory: pytest.TempPathFactory, dlib_embedder) -> tuple[Path, list]:
    """Nobody enrolled; the clip plays twice, so Lin-Manuel visits twice (each time on stage, then close up):
    the daemon stores every unknown track that had a good view. The gallery file and the events emitted."""
    gallery = tmp_path_factory.mktemp("visits") / "g.db"
    Gallery(gallery).close()
    recorder = run_daemon(clip, gallery, dlib_embedder, frames=2 * 275 + 10, loop=True)
    return gallery, recorder.events


def lin_visits(gallery: Path, lin: np.ndarray) -> set[int]:
    with Gallery(gallery, create=False) as g:
        samples = unknowns.samples_of(g, [v.id for v in unknowns.visits(g)])
    return {s.visit_id for s in samples if near_lin(s.embedding[None], lin)[0]}


def clusters_of(gallery: Path, visits: set[int]) -> list[int]:
    """The clusters holding `visits` (one visitor, seen twice): each holds >= 2 of them and nobody else's."""
    done = run_cli("--gallery", str(gallery), "unknowns", "cluster", "--json")
    assert done.returncode == 0, done.stderr
    clusters = json.loads(done.stdout)["clusters"]
    holding = [c for c in clusters if set(c["visits"]) & visits]
    assert holding and all(set(c["visits"]) <= visits and len(c["visits"]) >= 2 for c in holding), \
        f"Lin-Manuel's visits {visits}: {clusters}"
    return [int(c["cluster"]) for c in holding]


@pytest.mark.slow  # moved out of the default run (~10 min budget); CI runs it
def test_unknown_visits_are_stored_with_their_best_views(visits_gallery: tuple[Path, list], fr_dir: Path,
                                                         dlib_pipeline) -> None:
    gallery, events = visits_gallery
    lin = dlib_pipeline.process(load_image(fr_dir / "lin-manuel-miranda.png"))[0].embedding
    unknown = [e for e in events if e.kind == "unknown"]
    assert len(unknown) >= 3 and not [e for e in events if e.kind == "recognized"]
    with Gallery(gallery, create=False) as g:
        stored = unknowns.visits(g)
        # every unknown track with a good view is a visit; faces too poor to be named have no view to keep
        assert len(stored) == len([e for e in unknown if e.samples]) and all(1 <= v.samples <= 3 for v in stored)
        samples = unknowns.samples_of(g, [v.id for v in stored], with_crops=True)
    assert all(s.crop_png and s.crop_png[:4] == b"\x89PNG" for s in samples)  # canonical crops
    assert all(s.face_px >= 40 and s.sharpness > 0 for s in samples)
    assert len(lin_visits(gallery, lin)) >= 2, "Lin-Manuel's two visits were not both stored"
    assert (gallery.stat().st_mode & 0o777) == 0o600


@pytest.mark.slow  # moved out of the default run (~10 min budget); CI runs it
def test_a_repeated_visitor_is_one_cluster_and_naming_it_enrolls_him(visits_gallery: tuple[Path, list],
                                                                     clip: Path, fr_dir: Path, tmp_path: Path,
                                                                     dlib_embedder, dlib_pipeline) -> None:
    gallery = tmp_path / "g.db"
    shutil.copy(visits_gallery[0], gallery)
    lin = dlib_pipeline.process(load_image(fr_dir / "lin-manuel-miranda.png"))[0].embedding
    [cluster, *_] = clusters_of(gallery, lin_visits(gallery, lin))
    done = run_cli("--gallery", str(gallery), "unknowns", "name", str(cluster), LIN)
    assert done.returncode == 0, done.stderr
    listed = json.loads(run_cli("--gallery", str(gallery), "gallery", "list", "--json").stdout)["people"]
    assert [p["name"] for p in listed] == [LIN] and listed[0]["samples"] >= 1
    again = run_daemon(clip, gallery, dlib_embedder)
    assert any(e.kind == "recognized" and e.person == LIN for e in again.events)
    missing = run_cli("--gallery", str(gallery), "unknowns", "name", "999", "bob")
    assert missing.returncode == 1 and missing.stderr.startswith("edged: error:") and "999" in missing.stderr


@pytest.mark.slow  # moved out of the default run (~10 min budget); CI runs it
def test_a_face_on_the_ignore_list_raises_no_event(visits_gallery: tuple[Path, list], clip: Path, fr_dir: Path,
                                                   tmp_path: Path, dlib_embedder, dlib_pipeline) -> None:
    """The user marks Lin-Manuel's visits as a face to ignore (a poster, the TV): on the next run his tracks are
    neither named nor reported as unknown nor stored; the other visitor still is."""
    gallery = tmp_path / "g.db"
    shutil.copy(visits_gallery[0], gallery)
    lin = dlib_pipeline.process(load_image(fr_dir / "lin-manuel-miranda.png"))[0].embedding
    for cluster in clusters_of(gallery, lin_visits(gallery, lin)):  # on stage and close up
        done = run_cli("--gallery", str(gallery), "unknowns", "ignore", str(cluster), "poster")
        assert done.returncode == 0, done.stderr
    assert not lin_visits(gallery, lin)  # moved to the ignore list
    before = [e for e in visits_gallery[1] if e.kind == "unknown"]
    after = run_daemon(clip, gallery, dlib_embedder).events
    unknown_after = [e for e in after if e.kind == "unknown"]
    assert 0 < len(unknown_after) < len(before) / 2 + 1  # one pass of the clip instead of two, minus his tracks
    assert not lin_visits(gallery, lin) and not [e for e in after if e.kind == "recognized"]


@pytest.mark.pure
def test_unknown_samples_are_the_tracks_best_views() -> None:
    """The pipeline keeps each track's best views by size and sharpness (as `edged enroll` ranks video frames)."""
    from edged.types import FaceSample

    small_sharp = FaceSample(np.zeros(128, np.float32), None, 60, 400.0)
    big_blurred = FaceSample(np.zeros(128, np.float32), None, 120, 25.0)
    big_sharp = FaceSample(np.zeros(128, np.float32), None, 120, 400.0)
    assert sorted([small_sharp, big_blurred, big_sharp], key=lambda s: s.quality, reverse=True)[0] is big_sharp
    assert big_blurred.quality < small_sharp.quality


def test_an_enrolled_persons_own_poor_look_does_not_make_him_ambiguous_next_time(
        clip: Path, fr_dir: Path, tmp_path: Path, dlib_embedder, dlib_pipeline) -> None:
    """Lin-Manuel and Alex Lacamoire are enrolled; a look of Lin-Manuel that was "too far" (between his threshold
    and 1.5x it: the clip's blurred close-up frames after a cut) is stored as an unknown visitor. It must not
    join the strangers of the margin test, or his next good look is "ambiguous" (and stored, and the next...)."""
    from edged.gallery.match import MatchRule
    from edged.types import UnknownReason

    gallery = tmp_path / "g.db"
    enroll_cli(gallery, LIN, fr_dir / "lin-manuel-miranda.png")
    enroll_cli(gallery, "alex-lacamoire", fr_dir / "alex-lacamoire.png")
    cfg = parse_config(config(clip, gallery))
    rule = MatchRule.of(dlib_embedder, cfg.embedder, cfg.match)
    with Gallery(gallery, create=False) as g:
        snapshot = g.snapshot(dlib_embedder.version)
    lin = snapshot.vectors[snapshot.labels == snapshot.names.index(LIN)][0]
    looks = []
    cap = cv2.VideoCapture(str(clip))
    for index in range(120):
        ok, bgr = cap.read()
        assert ok
        if index in (0, *range(82, 100)):
            faces = dlib_pipeline.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            looks += [(index, f.embedding) for f in faces]
    cap.release()
    threshold = rule.matcher(snapshot).threshold_of(rule.matcher(snapshot).scores(lin[None]))[0]
    good = next(v for i, v in looks if i == 0)
    poor = [v for i, v in looks if threshold < float(squared_l2(v[None], lin[None])[0, 0]) < 1.5 * threshold]
    assert poor, "a look of him between his threshold and 1.5x it"
    with Gallery(gallery, create=False) as g:
        unknowns.add_visit(g, unknowns.UnknownVisit("front", "2026-12-01T10:00:00Z", "2026-12-01T10:00:02Z", 7, LIN,
                                                    float(squared_l2(poor[0][None], lin[None])[0, 0]),
                                                    str(UnknownReason.TOO_FAR)),
                           [unknowns.UnknownSample(poor[0], "dlib", dlib_embedder.version, 120, 60.0)])
        [result] = unknowns.site_matcher(g, rule, snapshot, dlib_embedder.version).match(good[None])
        naive = rule.matcher(snapshot, cohort=unknowns.cohort(g, dlib_embedder.version, 10)).match(good[None])[0]
    assert result.name == LIN, result
    assert naive.name is None and naive.reason == UnknownReason.AMBIGUOUS, naive  # what the stored look would do
