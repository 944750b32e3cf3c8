"""Unknown visitors and the ignore list: real LFW faces embedded with dlib, real SQLite files, the CLI as a user
runs it, and a second process writing while retention runs."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edged.config import EnrollConfig, default_config
from edged.errors import GalleryError
from edged.gallery import unknowns as uk
from edged.gallery.enroll import CROP_FORMAT, Enroller, embed_crops
from edged.gallery.match import Matcher
from edged.gallery.store import MIGRATIONS, SCHEMA_VERSION, Gallery, NewSample
from edged.gallery.unknowns import UnknownSample, UnknownVisit
from edged.types import UnknownReason
from edged.vision.imageio import decode_image, encode_png, load_image
from tests.conftest import ROOT, run_cli

#: Visits made of real LFW photos: the same person seen twice (A1, A2) and someone else (B).
A1 = ["Colin_Powell_0001", "Colin_Powell_0002", "Colin_Powell_0003"]
A2 = ["Colin_Powell_0005", "Colin_Powell_0007", "Colin_Powell_0008"]
B = ["Gerhard_Schroeder_0001", "Gerhard_Schroeder_0002", "Gerhard_Schroeder_0004"]
#: Extra photos: another picture of A (for matching), a poster face and another picture of it.
OTHERS = ["Colin_Powell_0004", "Tony_Blair_0001", "Tony_Blair_0003"]


def lfw_photo(lfw_dir: Path, stem: str) -> Path:
    return lfw_dir / "lfw-deepfunneled" / stem.rsplit("_", 1)[0] / f"{stem}.jpg"


@pytest.fixture(scope="session")
def faces(lfw_dir, dlib_pipeline):
    """Every photo's gated face (canonical crop, size, sharpness, dlib embedding), as `edged enroll` sees it."""
    enroller = Enroller(dlib_pipeline, EnrollConfig())
    out = {}
    for stem in A1 + A2 + B + OTHERS:
        cand = enroller.face_from_image(load_image(lfw_photo(lfw_dir, stem)), stem)
        assert not isinstance(cand, str), f"{stem}: {cand}"
        out[stem] = cand
    return out


@pytest.fixture(scope="session")
def version(dlib_embedder) -> str:
    return dlib_embedder.version


def usample(cand, version: str, **change) -> UnknownSample:
    fields = {"embedding": cand.embedding, "embedder": "dlib", "embedder_version": version, "face_px": cand.face_px,
              "sharpness": cand.sharpness, "crop_png": encode_png(cand.crop), "crop_format": CROP_FORMAT, **change}
    return UnknownSample(**fields)


def stamp(days_ago: float = 0.0, seconds: float = 0.0) -> str:
    t = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC) - timedelta(days=days_ago) + timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


NOW = stamp()


def add(g: Gallery, stems: list[str], faces, version: str, at: str, extra: list[UnknownSample] = (),
        track: int = 1) -> int:
    v = UnknownVisit("door", at, at, track_id=track, candidate=None, distance=None, reason=UnknownReason.EMPTY_GALLERY)
    return uk.add_visit(g, v, [usample(faces[s], version) for s in stems] + list(extra), now=at)


@pytest.fixture
def three_visits(tmp_path, faces, version):
    """A gallery file with visits A1, A2 (one person) and B (another), ids in that order."""
    path = tmp_path / "g.db"
    with Gallery(path) as g:
        ids = [add(g, A1, faces, version, stamp(2)), add(g, A2, faces, version, stamp(1), track=7),
               add(g, B, faces, version, stamp(0.5), track=9)]
    return path, ids


def dump(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return list(db.iterdump())
    finally:
        db.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cli(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("--gallery", str(path), *args)


def cli_json(path: Path, *args: str):
    done = cli(path, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return v / np.linalg.norm(v)


# ---- schema ----

@pytest.mark.pure
def test_v1_gallery_migrates_in_one_transaction_and_keeps_its_people(tmp_path, monkeypatch):
    import edged.gallery.store as store

    path = tmp_path / "v1.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(MIGRATIONS[1])
    db.execute("INSERT INTO people VALUES (1, 'ann', 'Ann', '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z')")
    db.execute("INSERT INTO samples VALUES (1, 1, 'dlib', 'v', ?, NULL, NULL, 'a.jpg', 120, 99.0, "
               "'2024-01-01T00:00:00Z')", (unit(1).astype("<f4").tobytes(),))
    db.execute("UPDATE change_counter SET value = 7")
    db.execute("PRAGMA user_version = 1")
    db.execute(f"PRAGMA application_id = {store.APPLICATION_ID}")
    db.close()
    path.chmod(0o600)
    before = dump(path)

    # A migration that fails half-way leaves the v1 file as it was.
    monkeypatch.setitem(store.MIGRATIONS, 2, MIGRATIONS[2] + ";\nCREATE TABLE people (x INTEGER)")
    with pytest.raises(sqlite3.OperationalError):
        Gallery(path, create=False)
    assert dump(path) == before
    monkeypatch.undo()

    assert SCHEMA_VERSION >= 2
    with Gallery(path, create=False) as g:
        assert [(p.name, p.display_name, p.samples) for p in g.people()] == [("ann", "Ann", 1)]
        snap = g.snapshot("v")
        assert np.array_equal(snap.vectors[0], unit(1)) and g.change_counter() == 7
        assert uk.unknowns_counter(g) == 0 and uk.visits(g) == [] and uk.ignore_labels(g) == []
        uk.add_visit(g, UnknownVisit("door", NOW, NOW), [UnknownSample(unit(2), "dlib", "v", 100, 80.0)])
        assert g.change_counter() == 7 and uk.unknowns_counter(g) == 1
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"ignore_samples", "unknown_visits", "unknown_samples", "unknowns_counter"} <= tables
    db.close()
    assert mode(path) == 0o600


# ---- visits ----

def test_add_visit_reads_back_without_touching_the_change_counter(tmp_path, faces, version):
    path = tmp_path / "g.db"
    with Gallery(path) as g:
        counter = g.change_counter()
        first = add(g, A1, faces, version, stamp(1))
        v = UnknownVisit("porch", datetime(2024, 6, 1, 11, 59, tzinfo=UTC), 1717243200.0, track_id=3,
                         candidate="ann", distance=0.31, reason=UnknownReason.TOO_FAR)
        second = uk.add_visit(g, v, [usample(faces[B[0]], version)])
        assert g.change_counter() == counter and uk.unknowns_counter(g) == 2
        got = uk.visit(g, second)
        assert (got.camera, got.first_seen, got.last_seen, got.track_id, got.candidate, got.reason, got.samples) == (
            "porch", "2024-06-01T11:59:00Z", "2024-06-01T12:00:00Z", 3, "ann", "too far", 1)
        assert got.distance == pytest.approx(0.31) and got.cluster is None
        assert [x.id for x in uk.visits(g)] == [second, first]  # newest first
        stored = uk.samples_of(g, first, with_crops=True)
        assert [s.face_px for s in stored] == [faces[s].face_px for s in A1]
        assert np.allclose(stored[0].embedding, faces[A1[0]].embedding)
        assert decode_image(stored[0].crop_png, "crop").shape == (224, 224, 3)
        assert uk.samples_of(g, first)[0].crop_png is None  # crops only when asked for

        # One transaction: a bad sample leaves nothing behind.
        bad = UnknownSample(np.ones(12, np.float32), "dlib", version, 100, 90.0)
        with pytest.raises(GalleryError, match="expected 128 finite floats"):
            uk.add_visit(g, UnknownVisit("door", NOW, NOW), [usample(faces[B[1]], version), bad])
        with pytest.raises(GalleryError, match="before first_seen"):
            uk.add_visit(g, UnknownVisit("door", stamp(0), stamp(1)), [usample(faces[B[1]], version)])
        with pytest.raises(GalleryError, match="not an ISO-8601 time"):
            uk.add_visit(g, UnknownVisit("door", "yesterday", NOW), [usample(faces[B[1]], version)])
        assert len(uk.visits(g)) == 2 and uk.unknowns_counter(g) == 2
        with pytest.raises(GalleryError, match="no unknown visit 99"):
            uk.visit(g, 99)


# ---- clustering ----

def test_cluster_puts_a_repeat_visitor_together_and_a_stranger_apart(three_visits, faces, version):
    path, (a1, a2, b) = three_visits
    assert default_config().unknowns.cluster_eps == uk.DEFAULT_EPS
    groups = [np.array([faces[s].embedding for s in stems]) for stems in (A1, A2, B)]
    d = uk.mean_link_distances(groups)
    pairs = [np.sum((x - y) ** 2) for x in groups[0] for y in groups[1]]
    assert d[0, 1] == pytest.approx(np.mean(pairs), abs=1e-6)
    assert d[0, 1] < uk.DEFAULT_EPS < min(d[0, 2], d[1, 2])
    with Gallery(path, create=False) as g:
        counter = g.change_counter()
        found = uk.cluster(g, version, uk.DEFAULT_EPS)
        assert [(c.id, sorted(v.id for v in c.visits)) for c in found] == [(1, [a1, a2]), (2, [b])]
        assert found[0].size == 2 and found[0].samples == 6
        best = max(A1 + A2, key=lambda s: faces[s].face_px * np.sqrt(faces[s].sharpness))
        assert np.allclose(found[0].best.embedding, faces[best].embedding)
        assert decode_image(found[0].best.crop_png, "best").shape == (224, 224, 3)
        assert [v.cluster for v in uk.visits(g)] == [2, 1, 1]
        assert g.change_counter() == counter  # clustering is no matching data
        assert [c.id for c in uk.clusters(g)] == [1, 2]
    out = cli_json(path, "unknowns", "cluster")
    assert [(c["cluster"], sorted(c["visits"])) for c in out["clusters"]] == [(1, [a1, a2]), (2, [b])]
    assert out["eps"] == uk.DEFAULT_EPS and out["embedder_version"] == version
    listed = cli_json(path, "unknowns", "list")
    assert listed["clusters"] == 2 and {v["id"]: v["cluster"] for v in listed["visits"]} == {a1: 1, a2: 1, b: 2}
    assert cli_json(path, "unknowns", "list", "--cluster", "2")["visits"][0]["id"] == b
    # A tighter radius splits the repeat visitor.
    assert len(cli_json(path, "unknowns", "cluster", "--eps", "0.02")["clusters"]) == 3


# ---- naming ----

def test_naming_a_cluster_enrolls_it_through_the_gates_and_removes_its_visits(tmp_path, faces, version,
                                                                                dlib_embedder):
    path = tmp_path / "g.db"
    small = usample(faces[OTHERS[0]], version, face_px=60)  # a real face, but too small for enroll
    duplicate = usample(faces[A2[0]], version)  # the same face twice
    with Gallery(path) as g:
        a1 = add(g, A1, faces, version, stamp(2))
        a2 = add(g, A2, faces, version, stamp(1), extra=[small, duplicate])
        b = add(g, B, faces, version, stamp(0.5))
        counter = g.change_counter()
    assert cli_json(path, "unknowns", "cluster")["clusters"][0]["visits"] == [a2, a1]
    done = cli_json(path, "unknowns", "name", "1", "colin", "--display-name", "Colin P")
    assert done["added"] == 6 and sorted(done["visits"]) == [a1, a2]
    reasons = sorted(r["reason"].split(" (")[0] for r in done["rejected"])
    assert reasons == ["face too small", "near-duplicate"]
    people = cli_json(path, "gallery", "list")["people"]
    assert [(p["name"], p["display_name"], p["samples"]) for p in people] == [("colin", "Colin P", 6)]
    cfg = EnrollConfig()
    with Gallery(path, create=False) as g:
        stored = g.samples("colin", with_crops=True)
        assert all(s.face_px >= cfg.min_face_px and s.sharpness >= cfg.blur_min for s in stored)
        assert all(s.crop_format == CROP_FORMAT and s.source.startswith("unknown-visit-") for s in stored)
        # embedded again from their crops, mirror-averaged as `edged enroll` stores samples (enroll.mirror)
        again = embed_crops(dlib_embedder, [s.crop_png for s in stored], mirror=True)
        vectors = np.stack([s.embedding for s in stored])
        assert float(np.abs(vectors - again).max()) < 1e-5
        kept = {encode_png(faces[stem].crop): faces[stem].embedding for stem in A1 + A2}
        moved = [float(((kept[s.crop_png] - s.embedding) ** 2).sum()) for s in stored]
        assert max(moved) < 0.05 and min(moved) > 0  # the same faces, re-aligned from the crop
        assert [v.id for v in uk.visits(g)] == [b]
        assert g.change_counter() == counter + 1
        # The named person is recognised in a photo the gallery never saw.
        matcher = Matcher(g.snapshot(version), threshold=0.18)
        assert matcher.match(faces[OTHERS[0]].embedding)[0].name == "colin"
    # The other cluster can be named into the same person only by choice; naming it again is an error.
    again = cli(path, "unknowns", "name", "1", "colin")
    assert again.returncode == 1 and "no unknown cluster 1" in again.stderr


def test_naming_a_missing_cluster_is_one_line_and_changes_nothing(three_visits):
    path, _ = three_visits
    assert cli(path, "unknowns", "cluster").returncode == 0
    before = dump(path)
    done = cli(path, "unknowns", "name", "99", "bob")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("edged: error: no unknown cluster 99")
    bad = cli(path, "unknowns", "name", "1", "bad name")
    assert bad.returncode == 1 and "contains whitespace" in bad.stderr
    assert dump(path) == before
    assert "bob" not in cli(path, "gallery", "list").stdout


def test_naming_refuses_other_embedders_and_all_rejected_samples(three_visits, version):
    path, (a1, a2, _) = three_visits
    with Gallery(path, create=False) as g:
        uk.cluster(g, version)
        before = dump(path)
        with pytest.raises(GalleryError, match=r"no sample passes the enroll gates \(too blurry 6\); nothing changed"):
            uk.name_cluster(g, 1, "colin", EnrollConfig(blur_min=1e9))
        with pytest.raises(GalleryError, match="no unknown visit 77"):
            uk.name_cluster(g, [a1, 77], "colin", EnrollConfig())
        assert dump(path) == before
        g.add_samples("nn4person", [NewSample(unit(3), "nn4", "openface-nn4.small2.v1", "x.jpg", 100, 90.0)])
        before = dump(path)
        with pytest.raises(GalleryError, match="refusing to mix embedders"):
            uk.name_cluster(g, 1, "colin", EnrollConfig())
        with pytest.raises(GalleryError, match="refusing to mix embedders"):
            uk.ignore_cluster(g, 1, "colin")
        assert dump(path) == before
        # Visits named by id work too (here the same embedder problem): the message names them.
        with pytest.raises(GalleryError, match=f"visits {a1}, {a2} holds"):
            uk.name_cluster(g, [a1, a2], "colin", EnrollConfig())


def test_enroll_blocker_says_why_a_group_cannot_be_named_before_anyone_tries(tmp_path, faces, version):
    path = tmp_path / "g.db"
    with Gallery(path) as g:
        small = add(g, [A1[0]], faces, version, NOW, extra=[usample(faces[A1[1]], version, face_px=60)])
        ok = add(g, [A1[1]], faces, version, NOW, track=2)
        tight = EnrollConfig(min_face_px=max(faces[A1[0]].face_px, 60) + 1)
        why = uk.enroll_blocker(g, [small], tight)  # the best sample's reason, as naming would refuse
        assert why == f"face too small ({faces[A1[0]].face_px} px < min_face_px {tight.min_face_px})"
        with pytest.raises(GalleryError, match=r"no sample passes the enroll gates \(face too small 2\)"):
            uk.name_cluster(g, [small], "colin", tight)
        assert uk.enroll_blocker(g, [small], EnrollConfig()) is None  # the 60 px one fails, the other passes
        assert uk.enroll_blocker(g, [small, ok], EnrollConfig(blur_min=1e9)).startswith("too blurry (sharpness ")
        assert uk.enroll_blocker(g, [], EnrollConfig()) == "no face kept"


# ---- retention while the daemon writes ----

WRITER = textwrap.dedent("""
    import sys, time, numpy as np
    from datetime import UTC, datetime
    from edged.gallery.store import Gallery
    from edged.gallery import unknowns as uk
    n = int(sys.argv[2])
    with Gallery(sys.argv[1], create=False) as g:
        for i in range(n):
            v = np.random.default_rng(i).normal(size=128).astype(np.float32)
            now = datetime.now(UTC)
            s = uk.UnknownSample(v / np.linalg.norm(v), "dlib", "v", 100, 80.0, b"png", "fmt")
            uk.add_visit(g, uk.UnknownVisit("door", now, now, track_id=1000 + i), [s, s])
            if i == 0:
                print("ready", flush=True)
            if i % 10 == 5:
                with g._write(bump=False):  # hold the write lock like a slow commit
                    time.sleep(0.4)
            time.sleep(0.01)
        from pathlib import Path
        while not Path(sys.argv[3]).exists():  # stay open until the test has purged
            time.sleep(0.01)
    print("wrote", n, flush=True)
""")


@pytest.mark.pure
def test_purge_while_another_process_writes(tmp_path):
    path = tmp_path / "g.db"
    now = datetime.now(UTC)
    with Gallery(path) as g:
        old = [uk.add_visit(g, UnknownVisit("door", now - timedelta(days=40 + i), now - timedelta(days=40 + i)),
                            [UnknownSample(unit(i), "dlib", "v", 100, 80.0)]) for i in range(20)]
        kept = [uk.add_visit(g, UnknownVisit("door", now - timedelta(days=i), now - timedelta(days=i)),
                             [UnknownSample(unit(100 + i), "dlib", "v", 100, 80.0)]) for i in range(5)]
    go = tmp_path / "purged"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "40", str(go)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.communicate()
        with Gallery(path, create=False) as g:
            purged = uk.purge(g, 30, None)
            assert proc.poll() is None  # the writer was still at work (it writes for about 2 s)
            for _ in range(5):  # and again while the writer holds its lock now and then
                purged += uk.purge(g, 30, None)
        go.touch()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "wrote 40" in out
    assert purged == len(old)
    with Gallery(path, create=False) as g:
        left = uk.visits(g)
        assert {v.id for v in left} >= set(kept) and not {v.id for v in left} & set(old)
        assert sum(v.track_id is not None and v.track_id >= 1000 for v in left) == 40
        assert all(v.samples == (2 if (v.track_id or 0) >= 1000 else 1) for v in left)
        with g._lock:
            orphans = g._db.execute("SELECT COUNT(*) FROM unknown_samples WHERE visit_id NOT IN "
                                    "(SELECT id FROM unknown_visits)").fetchone()[0]
        assert orphans == 0 and g.integrity_check() == "ok"
        newest = [v.id for v in left[:3]]
        assert uk.purge(g, None, 3) == len(left) - 3 and [v.id for v in uk.visits(g)] == newest
    done = cli_json(path, "unknowns", "purge", "--older-than", "0")
    assert done == {"purged": 3, "older_than_days": 0.0, "keep": 5000}
    assert mode(path) == 0o600


# ---- the ignore list and the cohort ----

def test_ignore_add_cli_feeds_the_snapshot_and_the_matcher(tmp_path, lfw_dir, faces, version):
    path = tmp_path / "g.db"
    with Gallery(path) as g:
        g.add_samples("colin", [NewSample(faces[s].embedding, "dlib", version, s, faces[s].face_px,
                                          faces[s].sharpness) for s in A1])
        counter = g.change_counter()
    done = cli_json(path, "ignore", "add", "poster", str(lfw_photo(lfw_dir, OTHERS[1])))
    assert done["added"] == 1 and done["rejected"] == []
    with Gallery(path, create=False) as g:
        snap = uk.ignore_snapshot(g, version)
        assert snap.names == ["poster"] and list(snap.labels) == [0] and snap.embedder_version == version
        assert np.sum((snap.vectors[0] - faces[OTHERS[1]].embedding) ** 2) < 1e-6
        assert g.change_counter() == counter + 1 == snap.change_counter
        assert uk.ignore_snapshot(g, "other-version").names == []
        matcher = Matcher(g.snapshot(version), 0.18, ignore=snap)
        poster, colin = matcher.match(np.stack([faces[OTHERS[2]].embedding, faces[A2[0]].embedding]))
        assert poster.name is None and poster.ignored == "poster" and poster.reason == UnknownReason.IGNORED
        assert colin.name == "colin"
    # The same photo again is a near-duplicate: nothing added, one-line error.
    again = cli(path, "ignore", "add", "poster", str(lfw_photo(lfw_dir, OTHERS[1])))
    assert again.returncode == 1 and "near-duplicate" in again.stdout
    assert again.stderr.strip().splitlines() == ["edged: error: no ignore samples added for poster: every photo was "
                                                 "rejected"]
    labels = cli_json(path, "ignore", "list")["labels"]
    assert [(x["label"], x["samples"], x["embedder_versions"]) for x in labels] == [("poster", 1, [version])]
    assert cli_json(path, "ignore", "remove", "poster") == {"label": "poster", "removed": 1}
    gone = cli(path, "ignore", "remove", "poster")
    assert gone.returncode == 1 and gone.stderr.startswith("edged: error: no ignore label 'poster'")
    with Gallery(path, create=False) as g:
        assert uk.ignore_snapshot(g, version).names == [] and g.change_counter() == counter + 2


def test_ignore_cluster_and_cohort(three_visits, faces, version):
    path, (a1, a2, _) = three_visits
    assert cli(path, "unknowns", "cluster").returncode == 0
    with Gallery(path, create=False) as g:
        counter = g.change_counter()
        everything = uk.cohort(g, version, 100)
        assert len(everything) == 9
        newest_first = B[::-1] + A2[::-1] + A1[::-1]  # B was stored last; same time: the later row first
        assert np.allclose(everything, np.stack([faces[s].embedding for s in newest_first]))
        assert np.allclose(uk.cohort(g, version, 2), everything[:2])
        assert uk.cohort(g, version, 0).shape == (0, 128) and uk.cohort(g, "other", 10).shape == (0, 128)
    done = cli_json(path, "unknowns", "ignore", "2", "neighbour")
    assert done == {"cluster": 2, "label": "neighbour", "samples": 3}
    with Gallery(path, create=False) as g:
        assert sorted(v.id for v in uk.visits(g)) == [a1, a2]
        assert g.change_counter() == counter + 1
        snap = uk.ignore_snapshot(g, version)
        assert snap.names == ["neighbour"] and np.allclose(snap.vectors, [faces[s].embedding for s in B])
        # The cohort now holds the remaining unknowns and the ignore samples: still all 9 faces.
        got = uk.cohort(g, version, 100)
        assert len(got) == 9
        assert {tuple(np.round(v, 5)) for v in got} == {tuple(np.round(faces[s].embedding, 5)) for s in A1 + A2 + B}
        uk.add_ignore(g, "tv", [NewSample(faces[OTHERS[1]].embedding, "dlib", version, "tv.jpg", 100, 90.0)],
                      now=datetime.now(UTC) + timedelta(days=1))
        assert np.allclose(uk.cohort(g, version, 1)[0], faces[OTHERS[1]].embedding)  # the newest
        with pytest.raises(GalleryError, match="refusing to add"):
            uk.add_ignore(g, "tv", [NewSample(unit(1), "nn4", "nn4-v", "x.jpg", 100, 90.0)])


def test_show_crops_delete_errors_and_private_files(three_visits, tmp_path):
    path, (a1, a2, b) = three_visits
    out = tmp_path / "crops"
    shown = cli_json(path, "unknowns", "show", str(a1), "--crops", str(out))
    assert shown["id"] == a1 and len(shown["sample_list"]) == 3 and len(shown["crops_written"]) == 3
    for f in shown["crops_written"]:
        assert mode(Path(f)) == 0o600 and decode_image(Path(f).read_bytes(), f).shape == (224, 224, 3)
    text = cli(path, "unknowns", "show", str(a1))
    assert text.returncode == 0 and f"visit {a1}: door" in text.stdout
    before = dump(path)
    missing = cli(path, "unknowns", "delete", str(b), "999")
    assert missing.returncode == 1 and missing.stderr.strip() == "edged: error: no unknown visit 999; nothing deleted"
    assert dump(path) == before
    assert cli_json(path, "unknowns", "delete", str(b)) == {"deleted": 1}
    assert [v["id"] for v in cli_json(path, "unknowns", "list")["visits"]] == [a2, a1]
    nothing = cli(tmp_path / "absent.db", "unknowns", "list")
    assert nothing.returncode == 1 and "no gallery here" in nothing.stderr and not (tmp_path / "absent.db").exists()
    for f in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if f.exists():
            assert mode(f) == 0o600, f
    assert {p.name for p in tmp_path.iterdir()} <= {"crops", "g.db", "g.db-wal", "g.db-shm"}  # nothing else written
