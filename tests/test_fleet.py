"""A fleet of boxes sharing one gallery: keys and certificates, signed records, applying them to real SQLite
galleries made by `edged enroll` from real photos, and end to end: two real mosquitto brokers bridged through a
link the test can cut, a daemon (`edged run`) per broker, a third box joining late."""

from __future__ import annotations

import base64
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from edged.fleet.keys import (
    FleetError,
    Revocations,
    admit,
    b64,
    canonical,
    fleet_token,
    init_fleet,
    install_certificate,
    join_fleet,
    load_box,
    load_revocations,
    revoke,
)
from edged.fleet.records import ItemState, RecordRefused, open_record, sign_record, wins
from edged.fleet.state import apply, local_changes, local_items, record_published, synced_items
from edged.gallery.store import Gallery
from tests.conftest import ROOT, enroll_cli, run_cli, wait_until
from tests.mosquitto import Broker, Subscriber, require_mosquitto
from tests.tcp_proxy import TcpProxy

STAMP = "2026-12-02T08:00:00Z"
MAX = 4 << 20


def make_box(root_dir: Path, box: str, fleet: str = "home") -> Path:
    """Join `box` to the fleet whose root keys are in `root_dir`, as a user does (join, admit, join --cert)."""
    directory = root_dir.parent / f"{box}-fleet"
    request = join_fleet(directory, fleet_token(root_dir), box)
    _, cert = admit(root_dir, request, STAMP)
    install_certificate(directory, cert)
    return directory


# ---- keys ----

def test_a_fleet_is_made_joined_and_checked(tmp_path: Path) -> None:
    root = tmp_path / "a-fleet"
    token = init_fleet(root, "home", "front", STAMP)
    assert token.startswith("edged-fleet:") and token == fleet_token(root)
    assert oct(root.stat().st_mode & 0o777) == "0o700"
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in root.iterdir()} == {
        "fleet.json": "0o600", "root.key": "0o600", "box.key": "0o600", "box.cert": "0o600", "admitted.json": "0o600"}
    front = load_box(root, "home", "front")
    assert front.certificate.box == "front"

    other = tmp_path / "b-fleet"
    request = join_fleet(other, token, "garage")
    assert request.startswith("edged-join:") and not (other / "root.key").exists()
    with pytest.raises(FleetError, match=r"box.cert: no certificate yet"):
        load_box(other, "home", "garage")
    with pytest.raises(FleetError, match="root key"):  # only the root's box admits
        admit(other, request, STAMP)
    box, cert = admit(root, request, STAMP)
    assert box == "garage" and cert.startswith("edged-cert:")
    install_certificate(other, cert)
    assert load_box(other, "home", "garage").certificate.box == "garage"

    # one-line refusals naming what is wrong
    with pytest.raises(FleetError, match=r"belongs to fleet 'home', the config says fleet.id 'office'"):
        load_box(other, "office", "garage")
    with pytest.raises(FleetError, match=r"certificate is for box 'garage', this box is 'porch'"):
        load_box(other, "home", "porch")
    with pytest.raises(FleetError, match=r"no fleet file"):
        load_box(tmp_path / "nowhere", "home", "x")
    with pytest.raises(FleetError, match=r"already belongs to a fleet"):
        init_fleet(root, "home", "front", STAMP)
    with pytest.raises(FleetError, match=r"damaged"):
        join_fleet(tmp_path / "c", token[:-6], "c")
    with pytest.raises(FleetError, match=r"this is a request token"):
        join_fleet(tmp_path / "c", request, "c")
    # a certificate from another fleet's root (same fleet id) is not this fleet's
    stranger = tmp_path / "s-fleet"
    init_fleet(stranger, "home", "evil", STAMP)
    _, forged = admit(stranger, join_fleet(tmp_path / "d-fleet", token, "d"), STAMP)
    with pytest.raises(FleetError, match="not signed by this fleet's root key"):
        install_certificate(tmp_path / "d-fleet", forged)
    # an unreadable or damaged key file
    (other / "box.key").write_text("not base64 !!")
    with pytest.raises(FleetError, match=r"box.key"):
        load_box(other, "home", "garage")


# ---- records and galleries ----

@pytest.fixture(scope="module")
def enrolled(tmp_path_factory: pytest.TempPathFactory, fr_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("fleet") / "gallery.db"
    enroll_cli(path, "obama", fr_dir / "obama.jpg", fr_dir / "obama2.jpg")
    enroll_cli(path, "biden", fr_dir / "biden.jpg")
    return path


def copy_gallery(src: Path, dst: Path) -> Path:
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    os.chmod(dst, 0o600)
    return dst


def test_records_are_signed_and_every_change_to_them_is_refused(tmp_path: Path, enrolled: Path) -> None:
    root = tmp_path / "a-fleet"
    init_fleet(root, "home", "front", STAMP)
    keys = load_box(root, "home", "front")
    with Gallery(enrolled) as g:
        obama = local_items(g)[("person", "obama")]
    assert len(obama.samples) == 2
    rec = sign_record(keys, obama, 3, STAMP)
    got = open_record(rec.raw, keys.root, "home", MAX, ("person", "obama"))
    assert (got.version, got.origin, got.digest) == (3, "front", obama.digest)
    assert [s.embedding.tobytes() for s in got.state.samples] == [s.embedding.tobytes() for s in obama.samples]
    assert all(s.crop is None for s in got.state.samples)  # crops only with fleet.sync_crops
    size = len(rec.raw)

    def refused(raw: bytes, match: str, topic: tuple[str, str] = ("person", "obama")) -> None:
        with pytest.raises(RecordRefused, match=match):
            open_record(raw, keys.root, "home", MAX, topic)

    obj = json.loads(rec.raw)
    tampered = json.loads(rec.raw)
    emb = np.frombuffer(base64.b64decode(tampered["data"]["samples"][0]["embedding"]), "<f4").copy()
    emb[0] += 0.01
    tampered["data"]["samples"][0]["embedding"] = base64.b64encode(emb.tobytes()).decode()
    refused(json.dumps(tampered).encode(), "bad signature")
    renamed = {**obj, "data": {**obj["data"], "display_name": "Barack"}}
    refused(json.dumps(renamed).encode(), "bad signature")
    refused(json.dumps({k: v for k, v in obj.items() if k != "sig"}).encode(), "unsigned")
    refused(rec.raw, "published under the topic of person/biden", ("person", "biden"))
    with pytest.raises(RecordRefused, match="larger than"):
        open_record(rec.raw, keys.root, "home", size - 1)
    refused(b"\xff\xfe", "not JSON")
    # a box of another fleet (its own root, the same fleet id) signs a perfectly formed record
    evil_root = tmp_path / "evil-fleet"
    init_fleet(evil_root, "home", "front", STAMP)
    refused(sign_record(load_box(evil_root, "home", "front"), obama, 99, STAMP).raw, "signed by an unknown key")
    # a member's signature over a record whose digest does not match its content
    forged = json.loads(rec.raw)
    del forged["sig"]
    forged["digest"] = "0" * 64
    forged["sig"] = b64(keys.sign(canonical(forged)))
    refused(json.dumps(forged).encode(), "does not match its digest")
    # the conflict rule: version first, then the origin box's id
    assert wins((2, "a"), (1, "z")) and wins((1, "b"), (1, "a")) and not wins((1, "a"), (1, "b"))
    assert wins((1, "a"), None) and not wins((1, "a"), (1, "a"))


def test_a_revoked_box_is_refused(tmp_path: Path, enrolled: Path) -> None:
    root = tmp_path / "a-fleet"
    init_fleet(root, "home", "front", STAMP)
    garage = load_box(make_box(root, "garage"), "home", "garage")
    with Gallery(enrolled) as g:
        obama = local_items(g)[("person", "obama")]
    rec = sign_record(garage, obama, 1, STAMP)
    assert open_record(rec.raw, garage.root, "home", MAX).origin == "garage"
    with pytest.raises(FleetError, match="no box 'porch' was admitted from this box"):
        revoke(root, "porch", STAMP)
    rev = revoke(root, "garage", STAMP)
    assert rev.version == 1 and set(rev.keys.values()) == {"garage"} and load_revocations(root) == rev
    with pytest.raises(RecordRefused, match="signed by box 'garage', whose key the fleet's root revoked"):
        open_record(rec.raw, garage.root, "home", MAX, revoked=rev.revoked)
    # only the root signs revocation lists: a changed or foreign one is refused
    changed = {**rev.as_dict(), "keys": {}}
    with pytest.raises(FleetError, match="not signed by this fleet's root key"):
        Revocations.from_dict(changed, garage.root, "home")
    again = revoke(root, "garage", STAMP)
    assert again.version == 2 and again.keys == rev.keys  # a new version, the same keys
    with pytest.raises(FleetError, match="root key"):  # a member box cannot revoke
        revoke(tmp_path / "garage-fleet", "front", STAMP)


def test_local_changes_and_applying_records_to_a_real_gallery(tmp_path: Path, enrolled: Path) -> None:
    root = tmp_path / "a-fleet"
    init_fleet(root, "home", "front", STAMP)
    front = load_box(root, "home", "front")
    back = load_box(make_box(root, "back"), "home", "back")
    version = "dlib_face_recognition_resnet_model_v1"
    a = Gallery(copy_gallery(enrolled, tmp_path / "a.db"))
    b = Gallery(tmp_path / "b.db")
    changes = local_changes(a)
    assert [(c.state.key, c.version, c.state.deleted) for c in changes] == [("biden", 1, False), ("obama", 1, False)]
    records = {c.state.key: sign_record(front, c.state, c.version, STAMP) for c in changes}
    for rec in records.values():
        record_published(a, rec)
    assert local_changes(a) == []

    counter = b.change_counter()
    for rec in records.values():
        assert apply(b, open_record(rec.raw, back.root, "home", MAX), version).outcome == "applied"
    assert b.change_counter() > counter
    assert {p.name: p.samples for p in b.people()} == {"biden": 1, "obama": 2}
    assert sorted(s.embedding.tobytes() for s in b.samples()) == sorted(s.embedding.tobytes() for s in a.samples())
    assert local_changes(b) == []  # what was applied is not published back as B's own change
    assert apply(b, open_record(records["obama"].raw, back.root, "home", MAX), version).outcome == "same"
    obama_id = b.person("obama").id

    # a removal on B is a tombstone at the next version; A applies it: the person and samples are gone
    b.remove_person("obama")
    [gone] = local_changes(b)
    assert (gone.state.key, gone.state.deleted, gone.version) == ("obama", True, 2)
    tomb = sign_record(back, gone.state, gone.version, STAMP)
    record_published(b, tomb)
    assert apply(a, open_record(tomb.raw, front.root, "home", MAX), version).outcome == "applied"
    assert [p.name for p in a.people()] == ["biden"]
    with sqlite3.connect(tmp_path / "a.db") as db:
        assert db.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 1
    # the old record arriving late cannot bring him back; the answer is the tombstone, to republish
    late = apply(a, open_record(records["obama"].raw, front.root, "home", MAX), version)
    assert late.outcome == "stale" and late.better == tomb.raw
    assert [p.name for p in a.people()] == ["biden"]

    # re-enrolled on B later: a new version wins over the tombstone, and the person row on A is new
    with Gallery(enrolled) as src:
        obama_state = local_items(src)[("person", "obama")]
    again = sign_record(back, obama_state, 3, STAMP)
    assert apply(a, open_record(again.raw, front.root, "home", MAX), version).outcome == "applied"
    assert a.person("obama").samples == 2 and obama_id

    # a record of another embedder is refused and nothing is written
    nn4 = ItemState("person", "carol", False, "Carol", "nn4", "nn4.small2.edged-v1", obama_state.samples)
    before = a.change_counter()
    res = apply(a, open_record(sign_record(back, nn4, 1, STAMP).raw, front.root, "home", MAX), version)
    assert res.outcome == "refused" and "nn4.small2.edged-v1" in res.why
    assert a.change_counter() == before and "carol" not in {p.name for p in a.people()}
    # a name that reads like an enrolled one ('Obama' beside 'obama') is refused, rolled back whole
    twin = ItemState("person", "Obama", False, "Obama", "dlib", version, obama_state.samples)
    res = apply(a, open_record(sign_record(back, twin, 1, STAMP).raw, front.root, "home", MAX), version)
    assert res.outcome == "refused" and "too close" in res.why
    assert ("person", "Obama") not in synced_items(a) and a.change_counter() == before
    # the same version from two boxes: the higher box id ('front' > 'back') wins on every box, whatever the order
    one = sign_record(front, ItemState("person", "biden", False, "Joe", "dlib", version, obama_state.samples[:1]), 5,
                      STAMP)
    two = sign_record(back, ItemState("person", "biden", False, "Joseph", "dlib", version, obama_state.samples[1:]), 5,
                      STAMP)
    for order in ((one, two), (two, one)):
        g = Gallery(copy_gallery(tmp_path / "a.db", tmp_path / f"tie-{order[0].origin}.db"))
        for rec in order:
            apply(g, open_record(rec.raw, front.root, "home", MAX), version)
        assert g.person("biden").display_name == "Joe" and synced_items(g)[("person", "biden")].origin == "front"
        g.close()
    a.close()
    b.close()


def test_the_daemon_and_check_config_refuse_a_box_without_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "edged.yaml"
    cfg.write_text(yaml.safe_dump({"device_id": "front", "camera": {"source": str(tmp_path / "none.mp4")},
                                   "gallery": {"path": str(tmp_path / "g.db")},
                                   "fleet": {"enabled": True, "id": "home"}}))
    done = run_cli("check-config", str(cfg))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"fleet: {tmp_path / 'fleet' / 'fleet.json'}: no fleet file" in done.stderr
    done = run_cli("--config", str(cfg), "run", "--create")
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout
    assert done.stderr.strip().splitlines()[-1].startswith("edged: error: ") and "no fleet file" in done.stderr
    missing = tmp_path / "nofleet.yaml"
    missing.write_text(cfg.read_text().replace("id: home", "box_id: x"))
    done = run_cli("check-config", str(missing))
    assert done.returncode == 2 and "fleet.id: required when fleet.enabled is true" in done.stderr
    from edged.config import ConfigErrors, parse_config

    with pytest.raises(ConfigErrors) as err:
        parse_config("device_id: d\ncamera: {source: 0}\nfleet:\n  health_every_s: 60\n  stale_after_s: 30\n",
                     "edged.yaml")
    assert err.value.problems == ["edged.yaml: line 5: fleet.stale_after_s: must be more than fleet.health_every_s "
                                  "(60): every box would look stale between two health messages"]


# ---- end to end: two bridged brokers, a daemon on each, a third box joining late ----

def still_video(path: Path, photo: Path | None = None) -> Path:
    """A short still scene looped by the camera: an empty porch (the daemon stays idle and cheap), or a photo
    (somebody standing at the door)."""
    frame = np.full((120, 160, 3), 90, np.uint8) if photo is None else cv2.imread(str(photo))
    height, width = frame.shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (width, height))
    for _ in range(20):
        out.write(frame)
    out.release()
    return path


def box_config(path: Path, box: str, gallery: Path, port: int, video: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "device_id": box, "camera": {"source": str(video), "loop": True, "name": "door"},
        "gallery": {"path": str(gallery)}, "detector": {"backend": "hog"},
        "mqtt": {"host": "127.0.0.1", "port": port, "reconnect_max_s": 1.0},
        "homeassistant": {"enabled": False}, "unknowns": {"enabled": False},
        "fleet": {"enabled": True, "id": "home", "poll_s": 0.2, "health_every_s": 1.0, "stale_after_s": 5.0}}))
    return path


def people(gallery: Path) -> dict[str, int]:
    """Who is in a gallery file, read with sqlite3 as another process would."""
    if not gallery.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{gallery}?mode=ro", uri=True) as db:
            return dict(db.execute("SELECT p.name, COUNT(s.id) FROM people p JOIN samples s ON s.person_id = p.id "
                                   "GROUP BY p.id").fetchall())
    except sqlite3.OperationalError:  # the file is being created by the box (no tables yet)
        return {}


def ignored(gallery: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{gallery}?mode=ro", uri=True) as db:
        return dict(db.execute("SELECT label, COUNT(*) FROM ignore_samples GROUP BY label").fetchall())


def embeddings(gallery: Path) -> list[bytes]:
    with sqlite3.connect(f"file:{gallery}?mode=ro", uri=True) as db:
        return sorted(bytes(r[0]) for r in db.execute("SELECT embedding FROM samples"))


def cli_line(done: subprocess.CompletedProcess[str], start: str) -> str:
    assert done.returncode == 0, done.stderr
    return next(w for line in done.stdout.splitlines() if line.strip().startswith(start) for w in line.split()
                if w.startswith("edged-"))


def retained(port: int, topic: str) -> bytes:
    sub = Subscriber(port, [topic])
    assert sub.wait_for(lambda ms: any(m.topic == topic for m in ms), 5), topic
    sub.close()
    return sub.on(topic)[-1].payload


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-m", "edged", *args], cwd=ROOT, env=os.environ, stdout=fh,
                                stderr=fh)


def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(20) == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()


def status(cfg: Path) -> dict[str, Any]:
    done = run_cli("--config", str(cfg), "fleet", "status", "--json", "--wait", "2")
    assert done.returncode == 0, done.stderr
    return {r["box"]: r for r in json.loads(done.stdout)["boxes"]}


@pytest.mark.slow
def test_a_fleet_of_two_daemons_on_bridged_brokers(tmp_path: Path, fr_dir: Path) -> None:
    """Enroll on A -> B names him within 5 s; remove on B -> gone from A's file; the ignore list likewise; forged
    and unknown-key records refused (and the good record restored); the link down 30 s while enrolling on A -> B
    converges after it returns; a third box joining later gets the whole gallery; `edged fleet status` lists every
    box."""
    require_mosquitto()
    broker_a = Broker(tmp_path / "broker-a").start()
    link = TcpProxy(broker_a.port)
    broker_b = Broker(tmp_path / "broker-b", extra=[
        "connection link-to-a", f"address 127.0.0.1:{link.port}", "topic edged/fleet/# both 1",
        "cleansession false", "restart_timeout 1 2", "keepalive_interval 5"]).start()
    video = still_video(tmp_path / "porch.mp4")
    visitor = still_video(tmp_path / "visitor.mp4", fr_dir / "obama-480p.jpg")  # at box B's door all along
    ga, gb, gc = (tmp_path / n / "gallery.db" for n in ("a", "b", "c"))
    for g in (ga, gb, gc):
        g.parent.mkdir()
    cfg_a = box_config(tmp_path / "a.yaml", "front", ga, broker_a.port, video)
    cfg_b = box_config(tmp_path / "b.yaml", "back", gb, broker_b.port, visitor)
    cfg_c = box_config(tmp_path / "c.yaml", "garage", gc, broker_b.port, video)
    # the fleet, as a user makes it: init on A, join + admit + join --cert for each other box
    token = cli_line(run_cli("--config", str(cfg_a), "fleet", "init"), "edged fleet join")
    for cfg in (cfg_b, cfg_c):
        request = cli_line(run_cli("--config", str(cfg), "fleet", "join", token), "edged fleet admit")
        cert = cli_line(run_cli("--config", str(cfg_a), "fleet", "admit", request), "edged fleet join --cert")
        done = run_cli("--config", str(cfg), "fleet", "join", "--cert", cert)
        assert done.returncode == 0 and "is now a member of fleet 'home'" in done.stdout, done.stderr
    logs = {n: tmp_path / f"{n}.log" for n in ("a", "b", "c")}
    procs = {"a": start(["--config", str(cfg_a), "-v", "run", "--create"], logs["a"]),
             "b": start(["--config", str(cfg_b), "-v", "run", "--create"], logs["b"])}
    events_b = Subscriber(broker_b.port, ["edged/back/event"])
    try:
        assert wait_until(lambda: set(status(cfg_b)) == {"front", "back"}, 60), logs["b"].read_text()[-2000:]
        # the man at B's door is a stranger there until he is enrolled on A
        assert wait_until(lambda: any(json.loads(m.payload)["type"] == "unknown" for m in events_b.all()), 30)

        # enroll on A: B has him within 5 s, and B's daemon names the man at its door
        enroll_cli(ga, "obama", fr_dir / "obama.jpg", fr_dir / "obama2.jpg")
        enrolled_at = time.monotonic()
        assert wait_until(lambda: people(gb) == {"obama": 2}, 5), logs["b"].read_text()[-2000:]
        synced_s = time.monotonic() - enrolled_at
        assert wait_until(lambda: any(json.loads(m.payload)["type"] == "recognized" and json.loads(m.payload)[
            "person"] == "obama" for m in events_b.all()), 5 - synced_s), logs["b"].read_text()[-2000:]
        print(f"obama in B's gallery {synced_s:.2f} s and named by B's daemon "
              f"{time.monotonic() - enrolled_at:.2f} s after the enroll command on A ended")
        assert embeddings(gb) == embeddings(ga)
        enroll_cli(ga, "biden", fr_dir / "biden.jpg")
        assert wait_until(lambda: people(gb) == {"obama": 2, "biden": 1}, 5)

        # remove on B: gone from A's gallery file, samples too
        assert run_cli("--gallery", str(gb), "gallery", "remove", "obama").returncode == 0
        assert wait_until(lambda: people(ga) == {"biden": 1}, 5), logs["a"].read_text()[-2000:]

        # the ignore list travels too: a poster added on A is ignored on B; removed on B, it is gone from A
        done = run_cli("--gallery", str(ga), "ignore", "add", "poster", str(fr_dir / "obama-480p.jpg"))
        assert done.returncode == 0, done.stderr
        assert wait_until(lambda: ignored(gb) == {"poster": 1}, 5), logs["b"].read_text()[-2000:]
        assert run_cli("--gallery", str(gb), "ignore", "remove", "poster").returncode == 0
        assert wait_until(lambda: ignored(ga) == {}, 5), logs["a"].read_text()[-2000:]

        # a forged record (biden's, one value changed) and one signed by an unknown key, sent to B's broker
        topic = "edged/fleet/home/item/person/biden"
        good = retained(broker_b.port, topic)
        forged = json.loads(good)
        forged["data"]["display_name"] = "Mallory"
        intruder = tmp_path / "intruder-fleet"
        init_fleet(intruder, "home", "front", STAMP)
        with Gallery(ga) as g:
            biden = local_items(g)[("person", "biden")]
        unknown = sign_record(load_box(intruder, "home", "front"), ItemState(
            "person", "mallory", False, "Mallory", biden.embedder, biden.embedder_version, biden.samples), 1, STAMP)
        member = load_box(make_box(tmp_path / "a" / "fleet", "tester"), "home", "tester")
        other_embedder = sign_record(member, ItemState("person", "carol", False, "Carol", "nn4",
                                                       "nn4.small2.edged-v1", biden.samples), 1, STAMP)
        pub = Subscriber(broker_b.port, [])
        pub.client.publish(topic, json.dumps(forged), qos=1, retain=True).wait_for_publish(5)
        pub.client.publish("edged/fleet/home/item/person/mallory", unknown.raw, qos=1, retain=True)
        pub.client.publish("edged/fleet/home/item/person/carol", other_embedder.raw, qos=1, retain=True)
        pub.close()
        for name in ("a", "b"):
            assert wait_until(lambda n=name: all(s in logs[n].read_text() for s in (
                "refused record 'person'/'biden': bad signature", "refused record 'person'/'mallory': signed by an "
                "unknown key", "person 'carol' version 1 from tester: not applied: embeddings of "
                "nn4.small2.edged-v1")), 10), logs[name].read_text()[-3000:]
        assert people(ga) == people(gb) == {"biden": 1}
        with Gallery(gb) as g:
            assert g.person("biden").display_name == "biden"
        # the boxes put the good record back in place of the forgery
        assert wait_until(lambda: open_record(retained(broker_b.port, topic), load_box(
            tmp_path / "a" / "fleet", "home", "front").root, "home", MAX).state.display_name == "biden", 10)

        # the link between the brokers down for 30 s while enrolling on A: B converges after it returns
        link.cut()
        enroll_cli(ga, "lmm", fr_dir / "lin-manuel-miranda.png")
        time.sleep(30)
        assert "lmm" not in people(gb)
        link.restore()
        restored = time.monotonic()
        assert wait_until(lambda: "lmm" in people(gb), 20), logs["b"].read_text()[-2000:]
        print(f"B converged {time.monotonic() - restored:.2f} s after the link returned")
        assert people(gb) == people(ga) == {"biden": 1, "lmm": 1}

        # the root revokes the tester box: its records are refused from then on, on every box
        done = run_cli("--config", str(cfg_a), "fleet", "revoke", "tester")
        assert done.returncode == 0 and "box 'tester' revoked" in done.stdout, done.stderr
        assert wait_until(lambda: "revocation list version 1: records of tester are refused" in logs["b"].read_text(),
                          10), logs["b"].read_text()[-2000:]
        eve = sign_record(member, ItemState("person", "eve", False, "Eve", biden.embedder, biden.embedder_version,
                                            biden.samples), 1, STAMP)
        pub = Subscriber(broker_b.port, [])
        pub.client.publish("edged/fleet/home/item/person/eve", eve.raw, qos=1, retain=True).wait_for_publish(5)
        pub.close()
        assert wait_until(lambda: "refused record 'person'/'eve': signed by box 'tester', whose key the fleet's "
                                  "root revoked" in logs["b"].read_text(), 10), logs["b"].read_text()[-2000:]
        assert "eve" not in people(gb) and "eve" not in people(ga)

        # a third box joins later with an empty gallery (no camera: `edged fleet sync`) and gets the whole gallery
        procs["c"] = start(["--config", str(cfg_c), "-v", "fleet", "sync"], logs["c"])
        assert wait_until(lambda: people(gc) == people(ga), 20), logs["c"].read_text()[-2000:]
        assert embeddings(gc) == embeddings(ga)
        assert oct(gc.stat().st_mode & 0o777) == "0o600"
        assert wait_until(lambda: (tmp_path / "c" / "fleet" / "revoked.json").exists(), 5)  # it learnt the revocation
        assert "eve" not in people(gc)

        # every box's health, retained: all online and in step; the daemons' cameras are listed
        assert wait_until(lambda: {(b, r["state"], r["in_step"]) for b, r in status(cfg_a).items()} == {
            ("front", "online", True), ("back", "online", True), ("garage", "online", True)}, 20), status(cfg_a)
        rows = status(cfg_a)
        assert rows["front"]["cameras"] == {"door": "streaming"} and rows["front"]["people"] == 2
        stop(procs["c"], logs["c"])
        assert wait_until(lambda: status(cfg_b)["garage"]["state"] == "offline", 10)
        text = run_cli("--config", str(cfg_b), "fleet", "status", "--wait", "2").stdout
        assert "garage: offline" in text and "front: online" in text and "gallery in step" in text, text
    finally:
        events_b.close()
        for name, proc in procs.items():
            stop(proc, logs[name])
        link.close()
        broker_b.stop()
        broker_a.stop()
    for name in ("a", "b"):
        text = logs[name].read_text()
        assert "Traceback" not in text and "sync pass failed" not in text, text[-3000:]


def test_fleet_status_rows_say_online_stale_offline_and_in_step() -> None:
    from edged.cli.fleet import box_rows

    now = 1_000_000.0
    health = {
        "front": {"box": "front", "online": True, "wall": now - 2, "edged": "0.1.0",
                  "gallery": {"people": 3, "items": "abc"}, "cameras": {"door": {"state": "streaming"}},
                  "last_event": {"kind": "recognized", "person": "ann"}},
        "back": {"box": "back", "online": True, "wall": now - 1, "gallery": {"people": 3, "items": "abc"}},
        "garage": {"box": "garage", "online": True, "wall": now - 1, "gallery": {"people": 2, "items": "old"}},
        "shed": {"box": "shed", "online": True, "wall": now - 500, "gallery": {"people": 3, "items": "abc"}},
        "attic": {"box": "attic", "online": False, "fleet": "home"},
    }
    rows = {r["box"]: r for r in box_rows(health, stale_after_s=120, now=now)}
    assert {b: r["state"] for b, r in rows.items()} == {"front": "online", "back": "online", "garage": "online",
                                                        "shed": "stale", "attic": "offline"}
    # in step: the gallery digest most online boxes hold; a box behind is named
    assert {b: r["in_step"] for b, r in rows.items()} == {"front": True, "back": True, "garage": False,
                                                          "shed": None, "attic": None}
    assert rows["front"]["cameras"] == {"door": "streaming"} and rows["front"]["age_s"] == 2.0
