"""Config loading: typed defaults, every problem with key path and line, secrets, `edged check-config`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from edged.config import (
    CameraConfig,
    Config,
    ConfigErrors,
    MQTTConfig,
    default_config,
    load_config,
    mqtt_password,
    parse_config,
)
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.pure  # no ../shared data: YAML text, tmp files and `edged check-config`

MINIMAL = """\
device_id: door
camera: {source: /path/or/rtsp/url/or/0}
gallery: {path: /var/lib/edged/gallery.db}
mqtt: {host: 127.0.0.1, port: 1883}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, "edged.yaml")
    return info.value.problems


def test_minimal_config_from_the_issue_works() -> None:
    cfg = parse_config(MINIMAL)
    assert cfg.device_id == "door" and cfg.camera.source == "/path/or/rtsp/url/or/0"
    assert cfg.gallery.path == "/var/lib/edged/gallery.db" and (cfg.mqtt.host, cfg.mqtt.port) == ("127.0.0.1", 1883)
    assert cfg.mqtt.qos == 1 and cfg.vote.k == 2 and cfg.vote.m == 3 and cfg.camera.realtime
    assert parse_config("device_id: d\ncamera: {source: 0}\n").camera.source == 0


def test_example_config_is_valid_and_documents_every_key() -> None:
    example = ROOT / "config" / "edged.yaml"
    load_config(example)
    text = example.read_text()

    def keys(cls: type[BaseModel]) -> list[str]:
        out = []
        for name, f in cls.model_fields.items():
            out.append(name)
            if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
                out += keys(f.annotation)
        return out

    missing = [k for k in keys(Config) if f"{k}:" not in text]
    assert missing == [], f"config/edged.yaml does not mention {missing}"


def test_every_problem_is_reported_with_key_and_line() -> None:
    found = problems("""\
device_id: "front door"
camera:
  source: 0
  realtim: false
  max_width: 10
mqtt:
  port: 99999
  qos: 3
  tls: {ca_file: /nonexistent/ca.pem}
vote: {k: 4, m: 3}
detector:
  backend: foo
  scale: "half"
tracking: [1, 2]
""")
    assert found == [
        "edged.yaml: line 1: device_id: 'front door' is not allowed: 1-64 letters, digits, '_' or '-'",
        "edged.yaml: line 4: camera.realtim: unknown key (did you mean realtime?)",
        "edged.yaml: line 5: camera.max_width: must be >= 64, got 10",
        "edged.yaml: line 7: mqtt.port: must be <= 65535, got 99999",
        "edged.yaml: line 8: mqtt.qos: must be <= 2, got 3",
        "edged.yaml: line 9: mqtt.tls.ca_file: file not found: /nonexistent/ca.pem",
        "edged.yaml: line 10: vote.k: must be <= vote.m (3), got 4",
        "edged.yaml: line 12: detector.backend: must be one of auto, retinaface, hog, mmod, haar, got 'foo'",
        "edged.yaml: line 13: detector.scale: expected number or 'auto', got 'half'",
        "edged.yaml: line 14: tracking: expected a mapping, got a list",
    ]


@pytest.mark.parametrize(("text", "expected"), [
    ("camera: {source: 0}\n", "device_id: required key missing"),
    ("- a\n- b\n", "expected a mapping at the top level"),
    ("device_id: d\ncamera: {source: 0}\ncamera: {source: 1}\n", "line 3: camera: duplicate key"),
    ("device_id: d\ncamera: {source: 0\n", "invalid YAML"),
    ("device_id: d\ncamera: {source: ''}\n", "line 2: camera.source: must not be empty"),
    ("device_id: d\ncamera: {source: -1}\n", "camera.source: a camera index must be >= 0"),
    ("device_id: d\ncamera: {source: 0, roi: [10, 10, 5, 50]}\n", "camera.roi: must be [left, top, right, bottom]"),
    ("device_id: d\ncamera:\n  source: 0\n  reconnect_min_s: 20\n", "line 4: camera.reconnect_min_s: must be <="),
    ("device_id: d\ncamera: {source: 0}\nmqtt: {password: a, password_file: /etc/hosts}\n",
     "line 3: mqtt.password_file: give either password or password_file"),
    ("device_id: d\ncamera: {source: 0}\nmqtt: {topic_prefix: 'a/#'}\n", "mqtt.topic_prefix: 'a/#' is not allowed"),
    ("device_id: d\ncamera: {source: 0}\nembedder: {name: facenet}\n", "embedder.name: must be one of dlib, nn4"),
    ("device_id: d\ncamera: {source: 0}\nlogging: {level: LOUD}\n", "logging.level: must be one of"),
    ("device_id: d\ncamera: {source: 0}\nsnapshots: {enabled: yes please}\n", "snapshots.enabled: expected true/false"),
])
def test_single_problems(text: str, expected: str) -> None:
    found = problems(text)
    assert len(found) == 1 and expected in found[0], found
    assert found[0].startswith("edged.yaml:")


def test_empty_file_lists_both_required_keys() -> None:
    assert problems("") == ["edged.yaml: device_id: required key missing",
                            "edged.yaml: camera: required key missing (or cameras:, a list of cameras)"]


def test_password_sources_in_order_and_never_in_repr(tmp_path: Path) -> None:
    pw_file = tmp_path / "pw"
    pw_file.write_text("from-file\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text("from-systemd")
    cfg = parse_config(f"device_id: d\ncamera: {{source: 0}}\nmqtt: {{username: u, password_file: {pw_file}}}\n")
    assert mqtt_password(cfg.mqtt, {}) == "from-file"
    assert mqtt_password(cfg.mqtt, {"EDGED_MQTT_PASSWORD": "from-env"}) == "from-env"
    bare = parse_config("device_id: d\ncamera: {source: 0}\n").mqtt
    assert mqtt_password(bare, {"CREDENTIALS_DIRECTORY": str(creds)}) == "from-systemd"
    assert mqtt_password(bare, {}) is None
    inline = parse_config("device_id: d\ncamera: {source: 0}\nmqtt: {password: hunter2-x}\n")
    assert mqtt_password(inline.mqtt, {"EDGED_MQTT_PASSWORD": "other"}) == "hunter2-x"
    assert "hunter2-x" not in repr(inline) and "hunter2-x" not in str(inline.mqtt)


def test_check_config_cli(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("device_id: d\ncamera:\n  source: 0\n  fps: 30\nvote: {k: 9}\n")
    good = tmp_path / "good.yaml"
    good.write_text(MINIMAL.replace("mqtt: {", "mqtt: {username: edged, "))
    done = run_cli("check-config", str(good), str(bad), env={"EDGED_MQTT_PASSWORD": ""})
    assert done.returncode == 2
    assert done.stdout.splitlines()[0] == f"{good}: OK"
    assert "mqtt.username is set but no password was found" in done.stdout
    errors = done.stderr.splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"edged: error: {bad}: line 4: camera.fps: unknown key")
    assert errors[1] == f"edged: error: {bad}: line 5: vote.k: must be <= vote.m (3), got 9"
    assert "Traceback" not in done.stderr
    done = run_cli("check-config", "--json", str(tmp_path / "missing.yaml"))
    assert done.returncode == 2
    result = json.loads(done.stdout)["results"][0]
    assert result["ok"] is False and result["problems"] == [f"{tmp_path / 'missing.yaml'}: no such file"]
    assert run_cli("check-config", str(ROOT / "config" / "edged.yaml")).returncode == 0


BASE = "device_id: d\ncamera: {source: 0}\n"


@pytest.mark.parametrize(("text", "expected"), [
    (BASE + "embedder: {threshold: .nan}\n",
     "edged.yaml: line 3: embedder.threshold: must be a finite number, got nan"),
    ("device_id: d\ncamera:\n  source: 0\n  reconnect_min_s: .inf\n",
     "edged.yaml: line 4: camera.reconnect_min_s: must be a finite number, got inf"),
    (BASE + "mqtt:\n  reconnect_max_s: -.inf\n",
     "edged.yaml: line 4: mqtt.reconnect_max_s: must be a finite number, got -inf"),
    (BASE + "enroll: {blur_min: .NaN}\n", "edged.yaml: line 3: enroll.blur_min: must be a finite number, got nan"),
])
def test_non_finite_numbers_are_refused_with_key_and_line(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def billion_laughs(levels: int = 9) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        name, prev = chr(ord("a") + i), chr(ord("a") + i - 1)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    lines += [f"# {'padding ' * 12}"] * 12  # ~2 KB in all
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_at_once() -> None:
    bomb = billion_laughs()
    assert len(bomb) > 1500
    started = time.perf_counter()
    found = problems(bomb)
    assert time.perf_counter() - started < 1.0
    assert found == ["edged.yaml: line 1: YAML aliases are not allowed (anchor &a)"]
    assert problems(BASE + "mqtt: *m\n") == ["edged.yaml: line 3: YAML aliases are not allowed (*m)"]


@pytest.mark.parametrize(("text", "expected"), [
    (BASE + "x: !!python/name:os.system\n", "edged.yaml: line 3: YAML tag !!python/name:os.system is not allowed"),
    (BASE + "x: !!python/object/apply:os.system [ls]\n",
     "edged.yaml: line 3: YAML tag !!python/object/apply:os.system is not allowed"),
    (BASE + "x: !env HOME\n", "edged.yaml: line 3: YAML tag !env is not allowed"),
    (BASE + "mqtt: {port: !!int abc}\n",
     "edged.yaml: line 3: mqtt.port: cannot read the value as !!int (quote it to make it a string)"),
    (BASE + "camera2: 2024-13-45\n",
     "edged.yaml: line 3: camera2: cannot read the value as !!timestamp (quote it to make it a string)"),
    (BASE + "x: " + "[" * 40 + "]" * 40 + "\n", "edged.yaml: line 3: YAML nested deeper than 32 levels"),
    (BASE + "? [a, b]\n: 1\n", "edged.yaml: line 3: (top level): a key must be a plain name, not a list"),
])
def test_unsafe_or_unreadable_yaml_is_one_problem(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_deep_nesting_is_refused_quickly() -> None:
    started = time.perf_counter()
    found = problems("a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert found == ["edged.yaml: line 1: YAML nested deeper than 32 levels"]
    assert time.perf_counter() - started < 1.0


def test_too_large_file_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text(BASE + "# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigErrors) as info:
        load_config(big)
    assert info.value.problems == [f"{big}: too large (a config is at most 1 MiB)"]


def test_check_config_never_runs_python_tags(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE + f"x: !!python/object/apply:os.system ['touch {marker}']\n")
    done = run_cli("check-config", str(bad))
    assert done.returncode == 2 and not marker.exists()
    assert done.stderr.splitlines() == [
        f"edged: error: {bad}: line 3: YAML tag !!python/object/apply:os.system is not allowed"]


@pytest.mark.parametrize("value", ["123456", "!!int 123456", "!!float 123456x", "[123456]", "{pw: 123456}", "123456.5"])
def test_wrong_typed_password_is_never_echoed(value: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_config(f"{BASE}mqtt:\n  password: {value}\n", "edged.yaml")
    assert len(info.value.problems) == 1 and info.value.problems[0].startswith("edged.yaml: line 4: mqtt.password: ")
    assert "123456" not in str(info.value) and "123456" not in repr(info.value.problems)
    assert "123456" not in f"{info.value.__cause__} {info.value.__context__}"  # nor in a traceback


def test_empty_sections_mean_defaults() -> None:
    cfg = parse_config(BASE + "tracking:\nmqtt:\n  tls:\n")
    assert cfg.tracking == Config.model_fields["tracking"].default_factory() and cfg.mqtt.tls.enabled is False


def test_sections_are_built_and_copied_from_python() -> None:
    cam = CameraConfig(source="0", reconnect_min_s=0.1)
    assert (cam.source, cam.reconnect_min_s, cam.reconnect_max_s, cam.realtime) == ("0", 0.1, 10.0, True)
    assert CameraConfig(source=0, reconnect_max_s=1).reconnect_max_s == 1.0  # an int is a number
    mqtt = MQTTConfig(host="127.0.0.1", port=1884, keepalive_s=5, password="pw-x")
    assert (mqtt.port, mqtt.keepalive_s, mqtt.qos) == (1884, 5, 1) and "pw-x" not in repr(mqtt)
    cfg = default_config("clip.mp4", "bench")
    assert (cfg.device_id, cfg.camera.source) == ("bench", "clip.mp4")
    moved = cfg.model_copy(update={"camera": cfg.camera.model_copy(update={"source": 2})})
    assert moved.camera.source == 2 and cfg.camera.source == "clip.mp4" and moved.vote == cfg.vote
    with pytest.raises(ValidationError):
        cam.source = 1  # frozen
    with pytest.raises(ValidationError):
        CameraConfig(source="0", max_width="640")  # strict: no "640" -> 640
    with pytest.raises(ValidationError):
        CameraConfig(source="0", reconnect_min_s=float("nan"))
    with pytest.raises(ValidationError) as info:
        MQTTConfig(password=123456)
    assert "123456" not in str(info.value)
