"""The SQLite gallery: real files, permissions, schema checks, transactions, several processes."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from edged.errors import GalleryError
from edged.gallery.store import (
    SCHEMA_VERSION,
    Gallery,
    NewSample,
    validate_name,
)
from edged.gallery.transfer import export_gallery, import_gallery
from tests.conftest import ROOT

pytestmark = pytest.mark.pure

VERSION = "dlib_face_recognition_resnet_model_v1"


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return v / np.linalg.norm(v)


def sample(seed: int, version: str = VERSION, crop: bytes | None = b"\x89PNG fake crop bytes") -> NewSample:
    return NewSample(vec(seed), "dlib", version, f"img{seed}.jpg", 120 + seed, 200.0 + seed, crop,
                     "edged-face-224-roll-112px-v1" if crop else None)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_gallery_is_private_wal_and_versioned(tmp_path):
    path = tmp_path / "deep" / "er" / "gallery.db"
    with Gallery(path) as g:
        g.add_samples("ann", [sample(1)])
        assert mode(path) == 0o600
        assert mode(path.parent) == 0o700 and mode(path.parent.parent) == 0o700
        wal = Path(str(path) + "-wal")
        assert wal.exists() and mode(wal) == 0o600
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_loose_permissions_are_tightened(tmp_path):
    path = tmp_path / "g.db"
    Gallery(path).close()
    os.chmod(path, 0o644)
    Gallery(path, create=False).close()
    assert mode(path) == 0o600


def test_roundtrip_people_snapshot_and_counter(tmp_path):
    with Gallery(tmp_path / "g.db") as g:
        assert g.people() == [] and g.embedder_version() is None
        empty = g.snapshot(VERSION)
        assert empty.names == [] and empty.vectors.shape == (0, 128) and empty.labels.shape == (0,)
        c0 = g.change_counter()
        assert g.add_samples("bob", [sample(1), sample(2)], display_name="Bob B.", now="2024-01-01T00:00:00Z") == 2
        assert g.add_samples("ann", [sample(3)], now="2024-01-02T00:00:00Z") == 1
        assert g.change_counter() == c0 + 2
        people = g.people()
        assert [(p.name, p.display_name, p.samples) for p in people] == [("ann", "ann", 1), ("bob", "Bob B.", 2)]
        assert people[1].created == "2024-01-01T00:00:00Z"
        g.add_samples("bob", [sample(4)], now="2024-02-01T00:00:00Z")
        bob = g.person("bob")
        assert bob.samples == 3 and bob.created == "2024-01-01T00:00:00Z" and bob.updated == "2024-02-01T00:00:00Z"
        snap = g.snapshot(VERSION)
        assert snap.names == ["ann", "bob"] and snap.embedder_version == VERSION
        assert snap.change_counter == g.change_counter()
        assert snap.vectors.dtype == np.float32 and snap.labels.dtype == np.int64
        stored = {tuple(np.round(v, 6)): snap.names[label] for v, label in zip(snap.vectors, snap.labels, strict=True)}
        for seed, who in ((1, "bob"), (2, "bob"), (3, "ann"), (4, "bob")):
            assert stored[tuple(np.round(vec(seed), 6))] == who
        crops = g.samples("bob", with_crops=True)
        assert [s.source for s in crops] == ["img1.jpg", "img2.jpg", "img4.jpg"]
        assert crops[0].crop_png == b"\x89PNG fake crop bytes" and g.samples("bob")[0].crop_png is None


def test_remove_rename_display_name(tmp_path):
    with Gallery(tmp_path / "g.db") as g:
        g.add_samples("ann", [sample(1), sample(2)])
        g.add_samples("bob", [sample(3)])
        with pytest.raises(GalleryError, match="already in the gallery"):
            g.rename_person("ann", "bob")
        g.rename_person("ann", "anna")
        assert [p.name for p in g.people()] == ["anna", "bob"]
        assert g.person("anna").display_name == "anna"
        g.set_display_name("anna", "Anna Q. Public")
        assert g.person("anna").display_name == "Anna Q. Public"
        assert g.remove_person("anna") == 2
        assert [p.name for p in g.people()] == ["bob"]
        assert len(g.samples()) == 1  # cascade removed anna's samples
        with pytest.raises(GalleryError, match="no person named 'zed'"):
            g.remove_person("zed")


@pytest.mark.parametrize(("name", "message"), [
    ("a/b", "path separator"), ("a\\b", "path separator"), ("bad\nname", "control characters"),
    ("nul\x00", "control characters"), ("", "must not be empty"), ("..", "not names"),
    ("two words", "whitespace"), ("x" * 65, "longer than 64"), ("topic+#", "allowed"),
])
def test_invalid_names(name, message, tmp_path):
    with pytest.raises(GalleryError, match=message):
        validate_name(name)
    with Gallery(tmp_path / "g.db") as g, pytest.raises(GalleryError):
        g.add_samples(name, [sample(1)])
    assert Gallery(tmp_path / "g.db").people() == []


def test_valid_names():
    for name in ("lin-manuel-miranda", "alex_lacamoire", "Zoë", "J.R.R"):
        assert validate_name(name) == name


def test_mixing_embedders_refused(tmp_path):
    with Gallery(tmp_path / "g.db") as g:
        g.add_samples("ann", [sample(1)])
        with pytest.raises(GalleryError, match="mixing embedders"):
            g.add_samples("bob", [sample(2, version="nn4.small2.v1")])
        with pytest.raises(GalleryError, match=r"not nn4\.small2\.v1"):
            g.snapshot("nn4.small2.v1")
        assert [p.name for p in g.people()] == ["ann"]


def test_not_sqlite_file_refused_and_untouched(tmp_path):
    path = tmp_path / "notes.db"
    content = b"these are my notes, not a database\n" * 50
    path.write_bytes(content)
    with pytest.raises(GalleryError, match="not an edged gallery") as err:
        Gallery(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert path.read_bytes() == content


def test_other_sqlite_database_refused(tmp_path):
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE songs (title TEXT)")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(GalleryError, match="another program"):
        Gallery(path)
    assert path.read_bytes() == before


def test_newer_schema_refused_and_untouched(tmp_path):
    path = tmp_path / "g.db"
    with Gallery(path) as g:
        g.add_samples("ann", [sample(1)])
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(GalleryError, match=f"schema version {SCHEMA_VERSION + 5} is newer"):
        Gallery(path)
    assert path.read_bytes() == before


def test_missing_gallery_and_uncreatable_directory(tmp_path):
    with pytest.raises(GalleryError, match="no gallery here"):
        Gallery(tmp_path / "absent.db", create=False)
    assert not (tmp_path / "absent.db").exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(GalleryError, match="cannot create gallery directory"):
        Gallery(blocker / "sub" / "g.db")
    with pytest.raises(GalleryError, match="is a directory"):
        Gallery(tmp_path)


def test_export_import_roundtrip_and_checksum(tmp_path):
    from edged.vision.imageio import encode_png

    crop = encode_png(np.full((224, 224, 3), 90, np.uint8))  # import decodes every crop
    src = tmp_path / "a.db"
    with Gallery(src) as g:
        g.add_samples("ann", [sample(1, crop=crop), sample(2, crop=crop)], display_name="Ann")
        g.add_samples("bob", [sample(3, crop=None)])
        export = tmp_path / "export.json"
        assert export_gallery(g, export) == {"people": 2, "samples": 3}
    assert mode(export) == 0o600
    with Gallery(tmp_path / "b.db") as h:
        assert import_gallery(h, export) == {"people": 2, "samples": 3, "skipped": 0}
        assert import_gallery(h, export) == {"people": 0, "samples": 0, "skipped": 3}
        assert [(p.name, p.display_name, p.samples) for p in h.people()] == [("ann", "Ann", 2), ("bob", "bob", 1)]
        a = Gallery(src).snapshot(VERSION)
        b = h.snapshot(VERSION)
        assert a.names == b.names and np.array_equal(a.vectors, b.vectors) and np.array_equal(a.labels, b.labels)
        assert [s.crop_png for s in h.samples("ann", with_crops=True)] == [crop] * 2
        counter = h.change_counter()
        doc = json.loads(export.read_text())
        doc["payload"]["people"][0]["name"] = "mallory"
        tampered = tmp_path / "tampered.json"
        tampered.write_text(json.dumps(doc))
        with pytest.raises(GalleryError, match="checksum mismatch"):
            import_gallery(h, tampered)
        assert h.change_counter() == counter and [p.name for p in h.people()] == ["ann", "bob"]


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from edged.gallery.store import Gallery, NewSample
    from tests.slow_commit import pause_before_commit
    pause_before_commit(float(sys.argv[4]))
    v = np.ones(128, np.float32) / np.sqrt(128)
    with Gallery(sys.argv[1]) as g:
        g.add_samples(sys.argv[2], [NewSample(v, "dlib", sys.argv[3], "w.jpg", 100, 100.0)])
    print("committed", flush=True)
""")


def _writer(path: Path, name: str, delay: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, VERSION, str(delay)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_write_lock(path: Path, proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    """Until another connection holds the write lock (BEGIN IMMEDIATE fails)."""
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
            except sqlite3.OperationalError:
                return
            time.sleep(0.05)
    finally:
        probe.close()
    raise AssertionError("writer never took the lock")


def test_reader_during_writer_sees_old_state_then_new(tmp_path):
    path = tmp_path / "g.db"
    with Gallery(path) as g:
        g.add_samples("ann", [sample(1)])
    reader = Gallery(path, create=False)
    before = reader.change_counter()
    proc = _writer(path, "writer", delay=3.0)
    _wait_for_write_lock(path, proc)
    # The writer's transaction is open: readers are not blocked and see the committed state only.
    t0 = time.monotonic()
    snap = reader.snapshot(VERSION)
    assert time.monotonic() - t0 < 1.0
    assert snap.names == ["ann"] and snap.change_counter == before
    assert [p.name for p in reader.people()] == ["ann"] and reader.change_counter() == before
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "committed" in out
    assert reader.change_counter() == before + 1
    assert reader.snapshot(VERSION).names == ["ann", "writer"]
    reader.close()


def test_killed_writer_leaves_gallery_as_before(tmp_path):
    path = tmp_path / "g.db"
    with Gallery(path) as g:
        g.add_samples("ann", [sample(1), sample(2)])
        before = g.snapshot(VERSION)
    proc = _writer(path, "ghost", delay=30.0)
    _wait_for_write_lock(path, proc)
    proc.kill()  # SIGKILL inside the open transaction
    proc.wait(timeout=30)
    with Gallery(path, create=False) as g:
        after = g.snapshot(VERSION)
        assert g.integrity_check() == "ok"
        assert after.names == before.names and np.array_equal(after.vectors, before.vectors)
        assert after.change_counter == before.change_counter
        g.add_samples("bob", [sample(5)])  # and it is writable again
        assert g.change_counter() == before.change_counter + 1


def test_busy_writer_times_out_with_one_line(tmp_path, monkeypatch):
    import edged.gallery.store as gallery_mod

    path = tmp_path / "g.db"
    Gallery(path).close()
    proc = _writer(path, "slow", delay=20.0)
    try:
        _wait_for_write_lock(path, proc)
        monkeypatch.setattr(gallery_mod, "BUSY_TIMEOUT_S", 0.3)
        with Gallery(path, create=False) as g, pytest.raises(GalleryError, match="busy"):
            g.add_samples("me", [sample(9)])
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_opening_the_gallery_again_in_one_process_keeps_other_connections_current(tmp_path: Path) -> None:
    """The daemon holds the gallery open while its sinks open it again; a write by another process (`edged
    gallery remove`) must stay visible to the daemon's connection. Reading the file's header with a plain
    open()/close() dropped this process's POSIX locks and left that connection on a stale snapshot."""
    path = tmp_path / "g.db"
    daemon = Gallery(path)
    daemon.add_samples("alice", [sample(1)])
    writer = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
              "db.execute('UPDATE change_counter SET value = value + 1'); db.commit()")
    for _ in range(3):
        before = daemon.change_counter()
        Gallery(path, create=False).close()  # another sink of the same process opens and closes it
        subprocess.run([sys.executable, "-c", writer, str(path)], check=True)
        assert daemon.change_counter() == before + 1
    daemon.close()
