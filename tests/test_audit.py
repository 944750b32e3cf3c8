"""The door's audit log and lockout state: real SQLite gallery files, an attacker editing them with the
`sqlite3` module in a separate connection, `edged audit ...` as a user runs it, and two processes
appending at once."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edged.config import default_config, parse_config
from edged.errors import GalleryError
from edged.gallery import audit as au
from edged.gallery import unknowns as uk
from edged.gallery.audit import GENESIS, AuditEntry, DoorState
from edged.gallery.store import MIGRATIONS, SCHEMA_VERSION, Gallery, NewSample
from edged.vision.imageio import encode_png
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.pure  # no ../shared data: synthetic entries and crops, tmp files, the CLI

T0 = datetime(2025, 3, 1, 8, 0, 0, tzinfo=UTC)


def png(seed: int) -> bytes:
    return encode_png(np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8))


def entry(i: int, **changes) -> AuditEntry:
    granted = i % 3 != 2
    base = dict(door="front", camera="porch", decision="granted" if granted else "denied",
                person="ann" if granted else None, track_id=100 + i,
                reasons=["known face", "live"] if granted else ["too far"],
                scores={"distance": 0.05 + i / 100, "confidence": 0.9, "liveness": 0.97, "votes": 3},
                crop=png(i) if i % 4 == 0 else None, config_version="cfg-1",
                created=T0 + timedelta(minutes=i))
    return AuditEntry(**{**base, **changes})


def fill(path: Path, n: int = 20) -> list[au.AuditRecord]:
    with Gallery(path) as g:
        return [au.append(g, entry(i)) for i in range(n)]


def attacker(path: Path) -> sqlite3.Connection:
    """Someone with access to the file: the sqlite3 module, no edged, the guard triggers dropped."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DROP TRIGGER IF EXISTS audit_no_update")
    db.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    return db


def fields_of(db: sqlite3.Connection, row_id: int) -> dict:
    row = db.execute(f"SELECT {au._COLUMNS} FROM audit WHERE id = ?", (row_id,)).fetchone()
    return au._stored_fields(row)


def verify_cli(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("--gallery", str(path), "audit", "verify", *args)


def check(path: Path) -> au.VerifyReport:
    with Gallery(path, create=False) as g:
        return au.verify(g)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---- appending ----

def test_twenty_rows_chain_verify_and_leave_the_counters_alone(tmp_path):
    path = tmp_path / "g.db"
    with Gallery(path) as g:
        g.add_samples("ann", [NewSample(np.eye(128, dtype=np.float32)[0], "dlib", "v", "a.jpg", 120, 90.0)])
        counter, unknowns = g.change_counter(), uk.unknowns_counter(g)
        made = [au.append(g, entry(i)) for i in range(20)]
        assert g.change_counter() == counter and uk.unknowns_counter(g) == unknowns
        report = au.verify(g)
        assert mode(path) == 0o600 and mode(Path(f"{path}-wal")) == 0o600
    assert [r.id for r in made] == list(range(1, 21))
    assert made[0].prev_hash == GENESIS and all(b.prev_hash == a.hash for a, b in itertools.pairwise(made))
    assert sum(r.has_crop for r in made) == 5
    assert report.ok and report.rows == 20 and report.head_id == 20 and report.head_hash == made[-1].hash
    assert report.message == "audit log intact: 20 rows (rows 1-20), 0 purged"
    assert mode(path) == 0o600

    r = verify_cli(path)
    assert r.returncode == 0, r.stderr
    assert "intact: 20 rows" in r.stdout and made[-1].hash in r.stdout and "--expect-head" in r.stdout


def test_rows_read_back_with_filters_and_crops(tmp_path):
    path = tmp_path / "g.db"
    made = fill(path)
    with Gallery(path) as g:
        newest = au.records(g)
        assert [r.id for r in newest] == list(range(20, 0, -1))
        assert all(r.crop is None for r in newest)  # crop bytes only when asked for
        assert [r.id for r in au.records(g, decision="denied")] == [18, 15, 12, 9, 6, 3]
        assert [r.id for r in au.records(g, person="ann", limit=2)] == [20, 19]
        assert [r.id for r in au.records(g, since=T0 + timedelta(minutes=5), until="2025-03-01T08:08:00Z")] \
            == [8, 7, 6]
        assert au.records(g, door="back") == []
        one = au.record(g, 5)
        assert one == made[4].__class__(**{**made[4].__dict__, "crop": png(4)})
        assert one.scores == {"distance": 0.09, "confidence": 0.9, "liveness": 0.97, "votes": 3}
        assert one.reasons == ("known face", "live") and one.created == "2025-03-01T08:04:00.000Z"
        with pytest.raises(GalleryError, match="no audit row 99"):
            au.record(g, 99)


def test_invalid_entries_write_nothing(tmp_path):
    path = tmp_path / "g.db"
    with Gallery(path) as g:
        for bad, message in [
            (entry(1, decision="Granted!"), "lower-case word"),
            (entry(1, door=""), "door must not be empty"),
            (entry(1, person="ann\n"), "control characters"),
            (entry(1, crop=b"GIF89a..."), "not a PNG"),
            (entry(1, scores={"distance": [1, 2]}), "score 'distance'"),
            (entry(1, track_id=1.5), "track_id"),
            (entry(1, created="yesterday"), "not an ISO-8601 time"),
        ]:
            with pytest.raises(GalleryError, match=message):
                au.append(g, bad)
        with pytest.raises(GalleryError, match="failures must be an integer >= 0"):
            au.append(g, entry(1), state=DoorState("front", failures=-1))
        assert au.records(g) == [] and au.load_state(g, "front") is None
        # Forgiving where a controller would trip: numpy scalars, NaN, a single reason, enums.
        from edged.types import UnknownReason

        r = au.append(g, entry(1, scores={"distance": np.float32(0.25), "n": np.int64(3), "x": float("nan")},
                               reasons=UnknownReason.TOO_FAR))
        assert r.scores == {"distance": 0.25, "n": 3, "x": None} and r.reasons == ("too far",)
        assert au.verify(g).ok


def test_the_database_refuses_edits_and_deletes_but_purge_can_delete(tmp_path):
    path = tmp_path / "g.db"
    fill(path, 5)
    db = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE audit SET person = 'mallory' WHERE id = 3")
    with pytest.raises(sqlite3.IntegrityError, match="only by purge"):
        db.execute("DELETE FROM audit WHERE id = 3")
    db.close()
    with Gallery(path) as g:
        assert au.purge(g, 0, now=T0 + timedelta(days=1)) == 5
        assert au.verify(g).ok


# ---- tampering ----

@pytest.mark.parametrize(("column", "value"), [
    ("person", "mallory"),
    ("reasons", '["known face"]'),
    ("scores", '{"confidence":0.9,"distance":0.01,"liveness":0.97,"votes":3}'),
    ("decision", "granted"),
    ("created", "2025-03-01T09:00:00.000Z"),
    ("crop", None),
    ("track_id", 7),
    ("config_version", "cfg-2"),
    ("prev_hash", GENESIS),
    ("hash", "f" * 64),
])
def test_an_edited_column_is_named(tmp_path, column, value):
    path = tmp_path / "g.db"
    fill(path)
    row = 9  # a denial (i = 8) with a crop
    db = attacker(path)
    db.execute(f"UPDATE audit SET {column} = ? WHERE id = ?", (value, row))
    db.close()
    report = check(path)
    assert not report.ok and report.first_bad_id == row and report.problem == "hash mismatch (edited)"
    r = verify_cli(path)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip() == f"edged: error: audit row {row}: hash mismatch (edited)"


def test_a_changed_crop_byte_is_named(tmp_path):
    path = tmp_path / "g.db"
    fill(path)
    db = attacker(path)
    crop = bytearray(db.execute("SELECT crop FROM audit WHERE id = 13").fetchone()[0])
    crop[-20] ^= 1
    db.execute("UPDATE audit SET crop = ? WHERE id = 13", (bytes(crop),))
    db.close()
    assert check(path).message == "audit row 13: hash mismatch (edited)"


def test_a_deleted_middle_row_is_named(tmp_path):
    path = tmp_path / "g.db"
    fill(path)
    attacker(path).execute("DELETE FROM audit WHERE id = 18")
    r = verify_cli(path)
    assert r.returncode == 1
    assert r.stderr.strip() == "edged: error: audit row 18: missing (rows 17 -> 19: deleted?)"
    attacker(path).execute("DELETE FROM audit WHERE id IN (5, 6, 7)")
    assert check(path).message == "audit row 5: missing to 7 (rows 4 -> 8: deleted?)"


def test_deleted_first_rows_and_an_edited_anchor_are_named(tmp_path):
    path = tmp_path / "g.db"
    fill(path)
    db = attacker(path)
    db.execute("DELETE FROM audit WHERE id <= 2")
    assert check(path).message == "audit row 1: missing to 2 (the log starts at row 1, its first row is 3: deleted?)"
    # Moving the anchor's id over the gap is not enough: the first row does not chain to it ...
    db.execute("UPDATE audit_anchor SET last_id = 2")
    assert check(path).message == "audit anchor: edited (not the genesis anchor, and not sealed by a purge)"
    # ... and faking a purge needs the seal too; with it, it reads as a purge (see `verify`'s limits).
    db.execute("UPDATE audit_anchor SET hash = 'x', seal = 'y'")
    assert check(path).message == "audit anchor: edited (its seal does not match)"
    db.execute("DELETE FROM audit_anchor")
    assert check(path).message == "audit anchor: missing"
    db.close()


def test_an_edited_and_rehashed_row_is_caught_by_the_next_one(tmp_path):
    path = tmp_path / "g.db"
    made = fill(path)
    db = attacker(path)
    forged = {**fields_of(db, 17), "person": "mallory", "decision": "granted"}
    db.execute("UPDATE audit SET person = 'mallory', decision = 'granted', hash = ? WHERE id = 17",
               (au.row_hash(forged),))
    report = check(path)
    assert not report.ok and report.first_bad_id == 17
    assert report.message == "audit row 17: hash changed (row 18's prev_hash does not match it: edited and re-hashed?)"
    assert "audit row 17: hash changed" in verify_cli(path).stderr

    # The same forgery of the newest row leaves a valid chain: only a head hash kept elsewhere shows it.
    db.execute("UPDATE audit SET person = ?, decision = ?, hash = ? WHERE id = 17",
               (made[16].person, made[16].decision, made[16].hash))
    assert check(path).ok
    forged = {**fields_of(db, 20), "person": "mallory"}
    db.execute("UPDATE audit SET person = 'mallory', hash = ? WHERE id = 20", (au.row_hash(forged),))
    db.close()
    assert check(path).ok
    r = verify_cli(path, "--expect-head", made[-1].hash)
    assert r.returncode == 1
    assert r.stderr.strip() == (f"edged: error: audit head: the expected head {made[-1].hash[:16]}... is not in "
                                f"the chain: its newest rows were removed or rewritten")
    # An older recorded head is still in the chain (rows appended since are fine).
    assert verify_cli(path, "--expect-head", made[10].hash.upper()).returncode == 0


def test_truncating_the_newest_rows_is_only_seen_against_a_recorded_head(tmp_path):
    path = tmp_path / "g.db"
    made = fill(path)
    head = made[-1].hash
    attacker(path).execute("DELETE FROM audit WHERE id > 17")
    assert check(path).ok  # what is left is a valid chain: documented, not detectable on its own
    r = run_cli("--gallery", str(path), "audit", "verify", "--json", "--expect-head", head)
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["ok"] is False and out["first_bad_id"] is None and out["head_id"] == 17 and out["rows"] == 17
    assert "not in the chain" in out["problem"]
    with Gallery(path) as g, pytest.raises(GalleryError, match="64 hex digits"):
        au.verify(g, expect_head="abc")


def test_renumbered_and_swapped_rows_are_named(tmp_path):
    path = tmp_path / "g.db"
    fill(path)
    db = attacker(path)
    db.execute("UPDATE audit SET id = 30 WHERE id = 20")
    assert check(path).message == "audit row 30: renumbered (its hash is that of row 20)"
    db.execute("UPDATE audit SET id = 20 WHERE id = 30")
    assert check(path).ok
    # Two rows swap places (each takes the other's id).
    db.execute("UPDATE audit SET id = 100 WHERE id = 11")
    db.execute("UPDATE audit SET id = 11 WHERE id = 12")
    db.execute("UPDATE audit SET id = 12 WHERE id = 100")
    db.close()
    assert check(path).message == "audit row 11: renumbered (its hash is that of row 12)"


# ---- retention ----

def test_purge_moves_the_anchor_and_the_chain_stays_verifiable(tmp_path):
    path = tmp_path / "g.db"
    made = fill(path)
    now = T0 + timedelta(days=30, minutes=7, seconds=30)  # rows 1-8 were created more than 30 days before
    with Gallery(path) as g:
        assert au.purge(g, 30, now=now) == 8
        assert au.purge(g, 30, now=now) == 0
        report = au.verify(g)
        assert report.ok and report.rows == 12 and report.purged == 8 and report.anchor_id == 8
        assert report.anchor_hash == made[7].hash
        assert [r.id for r in au.records(g)][-1] == 9
        with pytest.raises(GalleryError, match="no audit row 3 \\(purged\\)"):
            au.record(g, 3)
        new = au.append(g, entry(20))
        assert new.id == 21 and new.prev_hash == made[-1].hash and au.verify(g).ok
        # Everything can go; the next row chains to the anchor.
        assert au.purge(g, 0, now=now) == 13
        report = au.verify(g)
        assert report.ok and report.rows == 0 and report.head_id == 21 and report.head_hash == new.hash
        after = au.append(g, entry(21))
        assert after.id == 22 and after.prev_hash == new.hash and au.verify(g).ok
    # The purged faces are gone from the file, not left in free pages (secure_delete; closing checkpoints).
    data = path.read_bytes()
    assert not Path(f"{path}-wal").exists() and all(png(i)[-200:] not in data for i in (0, 4, 8, 12, 16))
    assert verify_cli(path).returncode == 0
    # A head recorded before the purge is gone with it: the message says so.
    r = verify_cli(path, "--expect-head", made[3].hash)
    assert r.returncode == 1 and "(or purged since)" in r.stderr


def test_purge_refuses_to_remove_evidence_unless_forced(tmp_path):
    path = tmp_path / "g.db"
    fill(path)
    attacker(path).execute("UPDATE audit SET person = 'mallory' WHERE id = 3")
    with Gallery(path) as g:
        with pytest.raises(GalleryError, match=r"audit row 3: hash mismatch .* not purging"):
            au.purge(g, 0, now=T0 + timedelta(minutes=10))
        assert len(au.records(g)) == 20
        # Rows kept are not judged (only the link to the first): a broken row after the cut does not stop
        # retention.
        assert au.purge(g, 0, now=T0 + timedelta(minutes=2)) == 2
        assert au.purge(g, 0, now=T0 + timedelta(minutes=10), force=True) == 8
        assert au.verify(g).ok


def test_purge_cli_uses_the_configured_retention(tmp_path):
    path = tmp_path / "g.db"
    with Gallery(path) as g:
        au.append(g, entry(0, created=datetime.now(UTC) - timedelta(days=400)))
        au.append(g, entry(1, created=datetime.now(UTC) - timedelta(days=10)))
    r = run_cli("--gallery", str(path), "audit", "purge", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"purged": 1, "older_than_days": 365.0}
    r = run_cli("--gallery", str(path), "audit", "purge", "--older-than", "5")
    assert r.returncode == 0 and r.stdout.strip() == "purged 1 audit rows older than 5 days"
    assert verify_cli(path).returncode == 0


# ---- several processes ----

def test_two_processes_appending_at_once_form_one_chain(tmp_path):
    path = tmp_path / "g.db"
    Gallery(path).close()
    go = tmp_path / "go"
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from edged.gallery.audit import AuditEntry, append
        from edged.gallery.store import Gallery
        name = sys.argv[1]
        with Gallery({str(path)!r}, create=False) as g:
            while not Path({str(go)!r}).exists():
                time.sleep(0.005)
            for i in range(60):
                append(g, AuditEntry(door=name, camera="cam", decision="denied", track_id=i,
                                     scores={{"i": i}}, reasons=["test"]))
                time.sleep(0.002)  # a door decides now and then; the other writer gets its turns
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, name], cwd=ROOT) for name in ("left", "right")]
    time.sleep(0.5)
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with Gallery(path) as g:
        report = au.verify(g)
        rows = list(reversed(au.records(g)))
    assert report.ok and report.rows == 120 and [r.id for r in rows] == list(range(1, 121))
    for door in ("left", "right"):
        assert [r.track_id for r in rows if r.door == door] == list(range(60))
    doors = [r.door for r in rows]
    assert sum(a != b for a, b in itertools.pairwise(doors)) > 1, "the writers did not interleave"


# ---- export ----

def test_export_json_lines_round_trip_and_check_without_edged(tmp_path):
    path = tmp_path / "g.db"
    made = fill(path)
    out = tmp_path / "audit.jsonl"
    with Gallery(path) as g:
        assert au.export(g, out) == 20
        with pytest.raises(GalleryError, match="refusing to overwrite"):
            au.export(g, out)
        stored = {r.id: r for r in au.records(g)}
    assert mode(out) == 0o600
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == list(range(1, 21)) and not any("crop" in x for x in lines)
    for x in lines:
        r = stored[x["id"]]
        assert (x["created"], x["door"], x["camera"], x["decision"], x["person"], x["track_id"], tuple(x["reasons"]),
                x["scores"], x["config_version"], x["prev_hash"], x["hash"]) == (
            r.created, r.door, r.camera, r.decision, r.person, r.track_id, r.reasons, r.scores, r.config_version,
            r.prev_hash, r.hash)
        # The hash is checkable from the line alone: SHA-256 of the canonical JSON of the other fields.
        rest = {k: v for k, v in x.items() if k != "hash"}
        canonical = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        assert hashlib.sha256(canonical.encode()).hexdigest() == x["hash"] == au.row_hash(x)
    assert lines[0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(lines))

    r = run_cli("--gallery", str(path), "audit", "export", str(out), "--crops")
    assert r.returncode == 1 and "refusing to overwrite" in r.stderr
    r = run_cli("--gallery", str(path), "audit", "export", str(out), "--crops", "--force")
    assert r.returncode == 0 and r.stdout.strip() == f"wrote 20 audit rows to {out} with face crops"
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    crops = {x["id"]: base64.b64decode(x["crop"]) for x in lines if "crop" in x}
    assert crops == {r.id: png(r.id - 1) for r in made if r.has_crop}
    assert all(hashlib.sha256(crops[x["id"]]).hexdigest() == x["crop_sha256"] for x in lines if "crop" in x)
    assert mode(out) == 0o600


# ---- the CLI ----

def test_list_and_show_commands(tmp_path):
    path = tmp_path / "g.db"
    made = fill(path)
    r = run_cli("--gallery", str(path), "audit", "list", "--decision", "denied", "--limit", "2")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "CREATED", "DOOR", "DECISION"] and lines[-1].startswith("2 decisions")
    assert lines[1].split()[:5] == ["18", "2025-03-01T08:17:00.000Z", "front", "denied", "-"]
    r = run_cli("--gallery", str(path), "audit", "list", "--json", "--since", "2025-03-01T08:18:00", "--person", "ann")
    assert [x["id"] for x in json.loads(r.stdout)["records"]] == [20, 19]

    crop = tmp_path / "face.png"
    r = run_cli("--gallery", str(path), "audit", "show", "13", "--crop", str(crop))
    assert r.returncode == 0, r.stderr
    assert crop.read_bytes() == png(12) and mode(crop) == 0o600
    assert "granted ann (track 112)" in r.stdout and made[12].hash in r.stdout
    r = run_cli("--gallery", str(path), "audit", "show", "13", "--crop", str(crop))
    assert r.returncode == 1 and "refusing to overwrite" in r.stderr
    r = run_cli("--gallery", str(path), "audit", "show", "12", "--crop", str(tmp_path / "none.png"))
    assert r.returncode == 1 and r.stderr.strip() == "edged: error: audit row 12 has no face crop " \
                                                     "(audit.keep_crops was false)"
    r = run_cli("--gallery", str(path), "audit", "show", "12", "--json")
    shown = json.loads(r.stdout)
    assert shown["decision"] == "denied" and shown["reasons"] == ["too far"] and shown["crop"] is False
    r = run_cli("--gallery", str(path), "audit", "show", "99")
    assert r.returncode == 1 and "no audit row 99" in r.stderr


# ---- lockout state ----

def test_lockout_state_survives_reopening(tmp_path):
    path = tmp_path / "g.db"
    with Gallery(path) as g:
        assert au.load_state(g, "front") is None
        au.save_state(g, DoorState("front", failures=3, window_start=1.7e9, level=2, locked_until=1.7e9 + 240.5),
                      now=T0)
        au.save_state(g, DoorState("back", failures=1, window_start=1.7e9 + 5))
        counter = g.change_counter()
    with Gallery(path, create=False) as g:
        assert au.load_state(g, "front") == DoorState("front", 3, 1.7e9, 2, 1.7e9 + 240.5,
                                                      "2025-03-01T08:00:00.000Z")
        back = au.load_state(g, "back")
        assert back is not None and (back.failures, back.level, back.locked_until) == (1, 0, None)
        # Reset after a granted entry, in the audit row's own transaction.
        rec = au.append(g, entry(0), state=DoorState("front"))
        assert au.load_state(g, "front") == DoorState("front", 0, None, 0, None, rec.created)
        assert g.change_counter() == counter
        with pytest.raises(GalleryError, match="locked_until must be epoch seconds"):
            au.save_state(g, DoorState("front", locked_until=float("inf")))
    with Gallery(path, create=False) as g:
        assert au.load_state(g, "front").failures == 0 and au.load_state(g, "back").failures == 1


# ---- schema ----

def test_a_schema_2_gallery_migrates_and_keeps_its_data(tmp_path):
    import edged.gallery.store as store

    path = tmp_path / "v2.db"
    db = sqlite3.connect(path, isolation_level=None)
    for v in (1, 2):
        db.executescript(MIGRATIONS[v])
    vec = np.eye(128, dtype="<f4")[3].tobytes()
    db.execute("INSERT INTO people VALUES (1, 'ann', 'Ann', '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z')")
    db.execute("INSERT INTO samples VALUES (1, 1, 'dlib', 'v', ?, NULL, NULL, 'a.jpg', 120, 99.0, "
               "'2024-01-01T00:00:00Z')", (vec,))
    db.execute("INSERT INTO unknown_visits VALUES (1, 'door', '2024-01-02T00:00:00Z', '2024-01-02T00:00:05Z', 4, "
               "'ann', 0.3, 'too far', NULL, '2024-01-02T00:00:05Z')")
    db.execute("UPDATE change_counter SET value = 7")
    db.execute("UPDATE unknowns_counter SET value = 2")
    db.execute("PRAGMA user_version = 2")
    db.execute(f"PRAGMA application_id = {store.APPLICATION_ID}")
    db.close()
    os.chmod(path, 0o600)

    assert SCHEMA_VERSION >= 3
    with Gallery(path, create=False) as g:
        assert [(p.name, p.samples) for p in g.people()] == [("ann", 1)]
        assert g.change_counter() == 7 and uk.unknowns_counter(g) == 2
        assert [v.candidate for v in uk.visits(g)] == ["ann"]
        report = au.verify(g)
        assert report.ok and report.rows == 0 and report.head_hash == GENESIS
        au.append(g, entry(0))
        assert au.verify(g).ok and g.change_counter() == 7
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')")}
    assert {"audit", "audit_anchor", "access_state", "audit_no_update", "audit_no_delete"} <= tables
    db.close()
    assert mode(path) == 0o600


def test_audit_config_defaults_and_bounds():
    cfg = default_config()
    assert (cfg.audit.enabled, cfg.audit.keep_crops, cfg.audit.retention_days) == (True, False, 365.0)
    base = "device_id: d\ncamera: {source: 0}\n"
    assert parse_config(base + "audit: {keep_crops: true, retention_days: 30}\n").audit.keep_crops
    with pytest.raises(Exception, match="retention_days"):
        parse_config(base + "audit: {retention_days: 0}\n")
