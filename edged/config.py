"""Typed, validated settings loaded from YAML.

Every problem names the key path, the YAML line and what is wrong; all problems are
collected before failing (`ConfigErrors`). Unknown keys are rejected. Secrets (the MQTT
password) come from the file, `$EDGED_MQTT_PASSWORD`, a `password_file`, or systemd's
`$CREDENTIALS_DIRECTORY/mqtt_password`, and are never part of repr() or logs.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from edged.errors import ConfigError

DEFAULT_GALLERY = "~/.local/share/edged/gallery.db"
DEFAULT_MODELS_DIR = "~/.local/share/edged/models"
SERVICE_GALLERY = "/var/lib/edged/gallery.db"
SERVICE_MODELS_DIR = "/var/lib/edged/models"
CREDENTIAL_NAME = "mqtt_password"


def _f(default: Any = dataclasses.MISSING, *, min: float | None = None, max: float | None = None,
       pattern: str | None = None, hint: str | None = None, secret: bool = False, factory: Any = None) -> Any:
    meta = {"min": min, "max": max, "pattern": pattern, "hint": hint}
    if factory is not None:
        return field(default_factory=factory, metadata=meta, repr=not secret)
    return field(default=default, metadata=meta, repr=not secret)


@dataclass(frozen=True)
class CameraConfig:
    #: V4L2 index (0) or device (/dev/video0), rtsp:// or http(s):// URL, or a video file.
    source: int | str = _f()
    #: Name of the camera in events.
    name: str = _f("camera", pattern=r"^[A-Za-z0-9_.-]{1,64}$", hint="1-64 letters, digits, '_', '.' or '-'")
    #: Video files: pace at the file's fps like a live camera (true) or every frame at full speed (false).
    realtime: bool = True
    #: Video files: start again at the end instead of stopping.
    loop: bool = False
    #: Downscale frames wider than this (pixels); null keeps the source size.
    max_width: int | None = _f(None, min=64, max=8192)
    #: Region of interest [left, top, right, bottom] in source pixels; null = whole frame.
    roi: list[int] | None = None
    #: First pause before reconnecting a lost source; doubles on every failed attempt...
    reconnect_min_s: float = _f(0.5, min=0.05, max=600)
    #: ...up to this longest pause (seconds).
    reconnect_max_s: float = _f(10.0, min=0.05, max=600)
    #: Consider the source lost after this long without a frame.
    read_timeout_s: float = _f(5.0, min=0.5, max=600)


@dataclass(frozen=True)
class DetectorConfig:
    backend: Literal["hog", "mmod", "haar"] = "hog"
    #: Image doublings before detection (0 = fastest; 1 finds faces down to ~40 px).
    upsample: int = _f(0, min=0, max=3)
    #: Detect on the frame scaled by this factor (boxes are mapped back).
    scale: float = _f(1.0, min=0.1, max=1.0)
    #: Run the detector every N frames, tracking in between (sooner when a track is lost).
    every_n_frames: int = _f(3, min=1, max=1000)
    #: Every N processed frames (and on the first) detect with one more upsample step instead:
    #: finds faces half the size (from ~40 px at upsample 0) at ~4x the cost; 0 = never.
    small_faces_every_n_frames: int = _f(30, min=0, max=100000)
    #: Ignore faces smaller than this (pixels, full-frame coordinates).
    min_face_px: int = _f(40, min=8, max=4096)


@dataclass(frozen=True)
class EmbedderConfig:
    name: Literal["dlib", "nn4"] = "dlib"
    #: nn4 only: a model name from `edged models list` or a weights file; null = best installed.
    weights: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: nn4 only: torch (the network as defined; CUDA or CPU), onnxruntime (its exact rewrite exported to
    #: ONNX, CPU only, fastest there), or auto (onnxruntime on the CPU when installed, else torch).
    backend: Literal["auto", "torch", "onnxruntime"] = "auto"
    #: CPU threads (torch, or onnxruntime's per-run threads); 0 = all cores.
    threads: int = _f(0, min=0, max=256)
    #: Squared-L2 match threshold; null = the embedder's own.
    threshold: float | None = _f(None, min=0.0, max=4.0)


@dataclass(frozen=True)
class GalleryConfig:
    path: str = DEFAULT_GALLERY
    #: How often the daemon checks the gallery for changes (seconds).
    reload_check_s: float = _f(2.0, min=0.1, max=3600)


@dataclass(frozen=True)
class MatchConfig:
    #: knn: nearest samples (default); svm: scikit-learn linear SVM with probabilities.
    method: Literal["knn", "svm"] = "knn"
    #: Per-person score: min distance, or mean of the k nearest samples of that person.
    score: Literal["min", "mean_k"] = "min"
    k: int = _f(3, min=1, max=100)


@dataclass(frozen=True)
class TrackingConfig:
    #: Minimum IoU to associate a detection with a track.
    iou_min: float = _f(0.3, min=0.0, max=1.0)
    #: Drop a track not confirmed by a detection for this long (seconds).
    max_age_s: float = _f(1.0, min=0.05, max=600)
    #: Follow faces between detections with dlib's correlation tracker.
    correlation: bool = True
    #: Re-recognise a settled track every this many seconds (0 = never).
    recognize_every_s: float = _f(10.0, min=0.0, max=3600)
    #: A person "left" once their track is gone for this long (seconds); if the same person is
    #: recognised again within this window the new track continues the old one (no new event).
    left_after_s: float = _f(2.0, min=0.0, max=3600)
    #: Correlation tracker: a peak-to-sidelobe ratio below this marks the track lost (detect next frame).
    lost_psr: float = _f(5.0, min=0.0, max=100)


@dataclass(frozen=True)
class VoteConfig:
    #: A name is given when K of the last M recognitions of a track agree.
    k: int = _f(2, min=1, max=100)
    m: int = _f(3, min=1, max=100)


@dataclass(frozen=True)
class EnrollConfig:
    min_face_px: int = _f(80, min=8, max=4096)
    #: Variance of the Laplacian on the aligned crop below this = too blurry.
    blur_min: float = _f(40.0, min=0.0)
    #: Squared-L2 distance below which a new sample duplicates a stored one.
    duplicate_max: float = _f(0.01, min=0.0, max=4.0)
    #: Video sources: keep at most this many distinct faces.
    video_samples: int = _f(10, min=1, max=1000)
    #: Keep aligned crops in the gallery (needed for `gallery reembed`).
    keep_crops: bool = True


@dataclass(frozen=True)
class TLSConfig:
    enabled: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    #: Skip hostname verification (test setups only).
    insecure: bool = False


@dataclass(frozen=True)
class MQTTConfig:
    host: str = "127.0.0.1"
    port: int = _f(1883, min=1, max=65535)
    #: Stable client id (clean session off): default edged-<device_id>.
    client_id: str | None = None
    username: str | None = None
    password: str | None = _f(None, secret=True)
    password_file: str | None = None
    tls: TLSConfig = _f(factory=TLSConfig)
    keepalive_s: int = _f(30, min=5, max=3600)
    topic_prefix: str = _f("edged", pattern=r"^[^#+\s]+$", hint="an MQTT topic without spaces, '#' or '+'")
    qos: int = _f(1, min=0, max=2)
    #: Events kept in memory while the broker is unreachable (oldest dropped beyond).
    queue_max: int = _f(1000, min=1, max=1_000_000)
    #: Longest pause between reconnect attempts to the broker (seconds, backoff from 1 s).
    reconnect_max_s: float = _f(30.0, min=1.0, max=3600)


@dataclass(frozen=True)
class HomeAssistantConfig:
    enabled: bool = True
    discovery_prefix: str = _f("homeassistant", pattern=r"^[^#+\s]+$",
                               hint="an MQTT topic without spaces, '#' or '+'")


@dataclass(frozen=True)
class PresenceConfig:
    #: A person goes "absent" after this long without a sighting (seconds).
    absent_after_s: float = _f(60.0, min=1.0, max=86400)


@dataclass(frozen=True)
class SnapshotConfig:
    enabled: bool = False
    #: face: the face crop; frame: the whole frame.
    kind: Literal["face", "frame"] = "face"
    jpeg_quality: int = _f(85, min=10, max=100)


@dataclass(frozen=True)
class ModelsConfig:
    dir: str | None = None


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: auto: journald when started by systemd, else stderr.
    target: Literal["auto", "journald", "stderr"] = "auto"


@dataclass(frozen=True)
class ServiceConfig:
    #: How often `edged run` updates systemd's STATUS= line and logs a summary (seconds).
    status_every_s: float = _f(5.0, min=0.1, max=3600)


@dataclass(frozen=True)
class Config:
    device_id: str = _f(pattern=r"^[A-Za-z0-9_-]{1,64}$", hint="1-64 letters, digits, '_' or '-'")
    camera: CameraConfig = _f()
    gallery: GalleryConfig = _f(factory=GalleryConfig)
    mqtt: MQTTConfig = _f(factory=MQTTConfig)
    detector: DetectorConfig = _f(factory=DetectorConfig)
    embedder: EmbedderConfig = _f(factory=EmbedderConfig)
    match: MatchConfig = _f(factory=MatchConfig)
    tracking: TrackingConfig = _f(factory=TrackingConfig)
    vote: VoteConfig = _f(factory=VoteConfig)
    enroll: EnrollConfig = _f(factory=EnrollConfig)
    homeassistant: HomeAssistantConfig = _f(factory=HomeAssistantConfig)
    presence: PresenceConfig = _f(factory=PresenceConfig)
    snapshots: SnapshotConfig = _f(factory=SnapshotConfig)
    models: ModelsConfig = _f(factory=ModelsConfig)
    logging: LoggingConfig = _f(factory=LoggingConfig)
    service: ServiceConfig = _f(factory=ServiceConfig)


class ConfigErrors(ConfigError):
    """All problems of one config file; `problems` holds one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(problems[0] if len(problems) == 1 else f"{len(problems)} problems: " + "; ".join(problems))


# ---- YAML with line numbers ----

def _compose(text: str, name: str) -> tuple[Any, dict[tuple[str, ...], int]]:
    """Parse YAML into plain values and a map from key path to (1-based) line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigErrors([f"{name}:{where}: invalid YAML: {getattr(exc, 'problem', exc)}"]) from exc
    lines: dict[tuple[str, ...], int] = {}
    if node is None:
        return {}, lines

    def walk(n: yaml.Node, path: tuple[str, ...]) -> Any:
        lines[path] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in n.value:
                key = str(key_node.value)
                lines[(*path, key)] = key_node.start_mark.line + 1
                if key in out:
                    raise ConfigErrors([f"{name}: line {key_node.start_mark.line + 1}: "
                                        f"{'.'.join((*path, key))}: duplicate key"])
                out[key] = walk(value_node, (*path, key))
                lines[(*path, key)] = key_node.start_mark.line + 1  # the key's line, not its value's
            return out
        if isinstance(n, yaml.SequenceNode):
            return [walk(v, (*path, str(i))) for i, v in enumerate(n.value)]
        return _scalar(n)

    return walk(node, ()), lines


def _scalar(n: yaml.ScalarNode) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(n, deep=True)
    finally:
        loader.dispose()


# ---- validation ----

def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return {int: "integer", float: "number", str: "string", bool: "true/false"}.get(tp, str(tp))


class _Validator:
    def __init__(self, name: str, lines: dict[tuple[str, ...], int]) -> None:
        self.name = name
        self.lines = lines
        self.problems: list[str] = []

    def problem(self, path: tuple[str, ...], message: str) -> None:
        probe = path
        while probe and probe not in self.lines:
            probe = probe[:-1]
        line = self.lines.get(probe)
        where = f" line {line}:" if line else ""
        self.problems.append(f"{self.name}:{where} {'.'.join(path) or '(top level)'}: {message}")

    def value(self, tp: Any, raw: Any, path: tuple[str, ...], meta: dict[str, Any]) -> Any:
        origin = get_origin(tp)
        if origin in (Union, types.UnionType):
            options = get_args(tp)
            if raw is None and type(None) in options:
                return None
            for opt in options:
                if opt is type(None):
                    continue
                if self._matches(opt, raw):
                    return self.value(opt, raw, path, meta)
            self.problem(path, f"expected {_type_name(tp)}, got {_show(raw)}")
            return None
        if origin is Literal:
            if raw not in get_args(tp):
                self.problem(path, f"must be one of {', '.join(map(str, get_args(tp)))}, got {_show(raw)}")
            return raw
        if origin is list:
            if not isinstance(raw, list):
                self.problem(path, f"expected {_type_name(tp)}, got {_show(raw)}")
                return None
            return [self.value(get_args(tp)[0], v, (*path, str(i)), {}) for i, v in enumerate(raw)]
        if dataclasses.is_dataclass(tp):
            return self.section(tp, raw, path)
        if not self._matches(tp, raw):
            self.problem(path, f"expected {_type_name(tp)}, got {_show(raw)}")
            return None
        value = float(raw) if tp is float else raw
        lo, hi, pattern = meta.get("min"), meta.get("max"), meta.get("pattern")
        if lo is not None and value < lo:
            self.problem(path, f"must be >= {lo}, got {value}")
        if hi is not None and value > hi:
            self.problem(path, f"must be <= {hi}, got {value}")
        if pattern and isinstance(value, str) and not re.match(pattern, value):
            self.problem(path, f"{value!r} is not allowed: {meta.get('hint') or 'must match ' + pattern}")
        return value

    @staticmethod
    def _matches(tp: Any, raw: Any) -> bool:
        if dataclasses.is_dataclass(tp):
            return isinstance(raw, dict)
        if get_origin(tp) is list:
            return isinstance(raw, list)
        if get_origin(tp) is Literal:
            return raw in get_args(tp)
        if tp is bool:
            return isinstance(raw, bool)
        if tp is int:
            return isinstance(raw, int) and not isinstance(raw, bool)
        if tp is float:
            return isinstance(raw, int | float) and not isinstance(raw, bool)
        if tp is str:
            return isinstance(raw, str)
        return isinstance(raw, tp)

    def section(self, cls: Any, raw: Any, path: tuple[str, ...]) -> Any:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.problem(path, f"expected a mapping, got {_show(raw)}")
            raw = {}
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in raw:
            if key not in fields:
                close = [k for k in fields if k.startswith(str(key)[:3])]
                hint = f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(fields)})"
                self.problem((*path, str(key)), f"unknown key{hint}")
        kwargs: dict[str, Any] = {}
        for name, f in fields.items():
            if name in raw:
                kwargs[name] = self.value(hints[name], raw[name], (*path, name), dict(f.metadata))
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.problem((*path, name), "required key missing")
        if any(p.startswith(f"{self.name}:") for p in self.problems):
            try:
                return cls(**{k: v for k, v in kwargs.items() if v is not None or _allows_none(hints[k])})
            except TypeError:
                return None
        return cls(**kwargs)


def _allows_none(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)


def _show(raw: Any) -> str:
    if isinstance(raw, dict):
        return "a mapping"
    if isinstance(raw, list):
        return "a list"
    if raw is None:
        return "nothing (null)"
    return f"{raw!r}"


def _semantic_checks(cfg: Config, v: _Validator) -> None:
    roi = cfg.camera.roi
    if roi is not None and (len(roi) != 4 or any(not isinstance(x, int) for x in roi) or min(roi) < 0
                            or roi[2] <= roi[0] or roi[3] <= roi[1]):
        v.problem(("camera", "roi"), "must be [left, top, right, bottom] in pixels (>= 0) with right > left "
                                     "and bottom > top")
    if isinstance(cfg.camera.source, int) and cfg.camera.source < 0:
        v.problem(("camera", "source"), f"a camera index must be >= 0, got {cfg.camera.source}")
    if cfg.camera.reconnect_min_s > cfg.camera.reconnect_max_s:
        v.problem(("camera", "reconnect_min_s"), f"must be <= camera.reconnect_max_s ({cfg.camera.reconnect_max_s})")
    if cfg.vote.k > cfg.vote.m:
        v.problem(("vote", "k"), f"must be <= vote.m ({cfg.vote.m}), got {cfg.vote.k}")
    tls = cfg.mqtt.tls
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key)
        if path and not Path(path).expanduser().is_file():
            v.problem(("mqtt", "tls", key), f"file not found: {path}")
    if bool(tls.cert_file) != bool(tls.key_file):
        v.problem(("mqtt", "tls", "cert_file"), "cert_file and key_file must be given together")
    if cfg.mqtt.password and cfg.mqtt.password_file:
        v.problem(("mqtt", "password_file"), "give either password or password_file, not both")
    if cfg.mqtt.password_file and not Path(cfg.mqtt.password_file).expanduser().is_file():
        v.problem(("mqtt", "password_file"), f"file not found: {cfg.mqtt.password_file}")
    if isinstance(cfg.camera.source, str) and not cfg.camera.source.strip():
        v.problem(("camera", "source"), "must not be empty")


def parse_config(text: str, name: str = "<config>") -> Config:
    """Validate YAML text; raises `ConfigErrors` listing every problem."""
    raw, lines = _compose(text, name)
    v = _Validator(name, lines)
    if not isinstance(raw, dict):
        v.problem((), f"expected a mapping at the top level, got {_show(raw)}")
        raise ConfigErrors(v.problems)
    cfg = v.section(Config, raw, ())
    if cfg is not None:
        _semantic_checks(cfg, v)
    if v.problems or cfg is None:
        raise ConfigErrors(sorted(v.problems, key=_line_of) or [f"{name}: invalid configuration"])
    return cfg


def _line_of(problem: str) -> int:
    found = re.search(r": line (\d+):", problem)
    return int(found.group(1)) if found else 0


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigErrors([f"{p}: no such file"]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigErrors([f"{p}: cannot read ({exc})"]) from exc
    return parse_config(text, str(p))


def mqtt_password(cfg: MQTTConfig, environ: typing.Mapping[str, str] | None = None) -> str | None:
    """The MQTT password: config, then $EDGED_MQTT_PASSWORD, password_file, $CREDENTIALS_DIRECTORY."""
    env = os.environ if environ is None else environ
    if cfg.password:
        return cfg.password
    if env.get("EDGED_MQTT_PASSWORD"):
        return env["EDGED_MQTT_PASSWORD"]
    candidates = []
    if cfg.password_file:
        candidates.append(Path(cfg.password_file).expanduser())
    if env.get("CREDENTIALS_DIRECTORY"):
        candidates.append(Path(env["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME)
    for path in candidates:
        if path.is_file():
            return path.read_text(encoding="utf-8").rstrip("\r\n")
    return None


def default_config(source: int | str = 0, device_id: str = "edged") -> Config:
    """A config with every default (for CLI commands run without a config file)."""
    return Config(device_id=device_id, camera=CameraConfig(source=source))
