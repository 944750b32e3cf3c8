"""The model registry: which models exist, their files, checksums, thresholds and licences.

The registry (`models/registry.json` in the repository, `$EDGED_REGISTRY`, or the copy a non-editable
install puts in `<prefix>/share/edged/models`) lists models by name; each has the embedder it belongs to,
its match threshold, the alignment it needs, a licence and one or more files. A file is either fetched
from its `url` into the models directory (checked against `md5` and/or `sha256`), or `shipped: true`:
it lives beside the registry file and is installed by being there.

`kind` says what a model is: "embedder" (the default: the files are alternative formats of one set of
weights, `fetch` installs one), "liveness" (the MiniFASNet texture models: no threshold or alignment, every
file is part of the model and `fetch` installs them all; format "onnx") or "detector" (the RetinaFace face
detector: likewise, formats "prototxt" and "caffemodel").
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edged.errors import EdgedError

REGISTRY_ENV = "EDGED_REGISTRY"
#: Model names: letters, digits and ._+- (at most 64).
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_HEX = {"md5": 32, "sha256": 64}
_FORMATS = ("t7", "pt", "edged", "onnx", "prototxt", "caffemodel")
#: Kinds of model: an embedder's weights (alternative files of one set: one is fetched), or the liveness
#: models (`edged.vision.antispoof`: every file is needed, all are fetched).
KINDS = ("embedder", "liveness", "detector")


class RegistryError(EdgedError):
    """The model registry file is invalid."""


def registry_path() -> Path:
    """$EDGED_REGISTRY, else models/registry.json of the checkout edged runs from, else the copy a
    non-editable install put in <prefix>/share/edged/models."""
    env = os.environ.get(REGISTRY_ENV)
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parents[2] / "models" / "registry.json"
    installed = Path(sys.prefix) / "share" / "edged" / "models" / "registry.json"
    return installed if not checkout.is_file() and installed.is_file() else checkout


# ---- registry ----

@dataclass(frozen=True)
class ModelFile:
    """One file of a model: the original weights in some format."""

    format: str
    file: str
    url: str | None = None
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    shipped: bool = False


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: one set of weights, possibly available as several files."""

    name: str
    embedder: str
    #: Embedders only (None for other kinds): the match threshold and the alignment the weights need.
    threshold: float | None
    alignment: str | None
    files: tuple[ModelFile, ...]
    description: str = ""
    licence: str = ""
    homepage: str = ""
    priority: int = 0
    #: The door operating point (`edged eval openset`): threshold for one person with >= 3 samples, and the
    #: margin; None = derived from `threshold`.
    open_set_threshold: float | None = None
    open_set_max_ratio: float | None = None
    #: "embedder" (files are alternatives), "liveness" or "detector" (every file is part of the model).
    kind: str = "embedder"

    def files_to_fetch(self, fmt: str | None = None) -> list[ModelFile]:
        """What `edged models fetch` downloads: one file of an embedder (`file_of`), every downloadable file
        (of format `fmt`, if given) of the other kinds."""
        if self.kind == "embedder":
            return [self.file_of(fmt)]
        files = [f for f in self.files if f.url and (fmt is None or f.format == fmt)]
        if not files:
            kinds = ", ".join(sorted({f.format for f in self.files if f.url})) or "none"
            raise EdgedError(f"model {self.name} has no downloadable {fmt or ''} file (available: {kinds})")
        return files

    def file_of(self, fmt: str | None) -> ModelFile:
        """The file to fetch: the given format, else the first downloadable one."""
        candidates = [f for f in self.files if f.url and (fmt is None or f.format == fmt)]
        if not candidates:
            kinds = ", ".join(f.format for f in self.files if f.url) or "none"
            raise EdgedError(f"model {self.name} has no downloadable {fmt or ''} file (available: {kinds})")
        return candidates[0]


@dataclass(frozen=True)
class Registry:
    path: Path
    entries: tuple[ModelEntry, ...]

    def get(self, name: str) -> ModelEntry | None:
        return next((e for e in self.entries if e.name == name), None)

    def require(self, name: str) -> ModelEntry:
        entry = self.get(name)
        if entry is None:
            known = ", ".join(e.name for e in self.entries) or "none"
            raise EdgedError(f"unknown model {name!r} (registered: {known}; see 'edged models list')")
        return entry

    def file_path(self, file: ModelFile, directory: Path) -> Path:
        """Where a registry file lives once installed."""
        return self.path.parent / file.file if file.shipped else directory / file.file

    def match(self, md5: str, sha256: str) -> tuple[ModelEntry, ModelFile] | None:
        """The registered file with these checksums, if any."""
        for entry in self.entries:
            for f in entry.files:
                if (f.md5 or f.sha256) and f.md5 in (None, md5) and f.sha256 in (None, sha256):
                    return entry, f
        return None


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, required: bool = True) -> Any:
    if key not in obj or obj[key] is None:
        if required:
            raise RegistryError(f"{where}.{key}: required field missing")
        return None
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise RegistryError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _parse_file(raw: Any, where: str) -> ModelFile:
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: expected an object")
    fmt = _field(raw, "format", str, where)
    if fmt not in _FORMATS:
        raise RegistryError(f"{where}.format: must be one of {', '.join(_FORMATS)}, got {fmt!r}")
    name = _field(raw, "file", str, where)
    if "/" in name or "\\" in name or name.startswith("."):
        raise RegistryError(f"{where}.file: must be a plain file name, got {name!r}")
    digests = {}
    for algo, length in _HEX.items():
        value = _field(raw, algo, str, where, required=False)
        if value is not None and not re.fullmatch(f"[0-9a-f]{{{length}}}", value):
            raise RegistryError(f"{where}.{algo}: must be {length} lowercase hex digits, got {value!r}")
        digests[algo] = value
    url = _field(raw, "url", str, where, required=False)
    shipped = bool(_field(raw, "shipped", bool, where, required=False))
    if url and not (digests["md5"] or digests["sha256"]):
        raise RegistryError(f"{where}: a file with a url needs an md5 or sha256 checksum")
    if not url and not shipped:
        raise RegistryError(f"{where}: needs a url or shipped: true")
    return ModelFile(fmt, name, url, digests["md5"], digests["sha256"], _field(raw, "size", int, where, False), shipped)


def _parse_entry(raw: Any, where: str) -> ModelEntry:
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: expected an object")
    name = _field(raw, "name", str, where)
    if not NAME_RE.match(name):
        raise RegistryError(f"{where}.name: {name!r} is not a valid model name")
    kind = _field(raw, "kind", str, where, False) or "embedder"
    if kind not in KINDS:
        raise RegistryError(f"{where}.kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    embedder_kind = kind == "embedder"
    raw_threshold = _field(raw, "threshold", (int, float), where, embedder_kind)
    threshold = None if raw_threshold is None else float(raw_threshold)
    if threshold is not None and not 0.0 < threshold < 4.0:
        raise RegistryError(f"{where}.threshold: must be between 0 and 4 (squared L2), got {threshold}")
    files = _field(raw, "files", list, where)
    if not files:
        raise RegistryError(f"{where}.files: must list at least one file")
    door = _field(raw, "open_set", dict, where, False) or {}
    door_t, door_r = door.get("threshold"), door.get("max_ratio")
    for key, value in (("threshold", door_t), ("max_ratio", door_r)):
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)
                                  or not 0.0 < value < 4.0):
            raise RegistryError(f"{where}.open_set.{key}: must be a number between 0 and 4, got {value!r}")
    return ModelEntry(
        name=name, embedder=_field(raw, "embedder", str, where, embedder_kind) or kind, threshold=threshold,
        alignment=_field(raw, "alignment", str, where, embedder_kind),
        files=tuple(_parse_file(f, f"{where}.files[{i}]") for i, f in enumerate(files)),
        description=_field(raw, "description", str, where, False) or "",
        licence=_field(raw, "licence", str, where, False) or "",
        homepage=_field(raw, "homepage", str, where, False) or "",
        priority=int(_field(raw, "priority", int, where, False) or 0),
        open_set_threshold=None if door_t is None else float(door_t),
        open_set_max_ratio=None if door_r is None else float(door_r),
        kind=kind,
    )


def load_registry(path: Path | None = None) -> Registry:
    """Read and validate the registry (errors name the file and the field)."""
    p = path or registry_path()
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RegistryError(f"{p}: model registry not found") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{p}: unreadable model registry ({exc})") from exc
    models = raw.get("models") if isinstance(raw, dict) else None
    if not isinstance(models, list):
        raise RegistryError(f"{p}: expected an object with a 'models' list")
    try:
        entries = tuple(_parse_entry(m, f"models[{i}]") for i, m in enumerate(models))
    except RegistryError as exc:
        raise RegistryError(f"{p}: {exc}") from exc
    names = [e.name for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RegistryError(f"{p}: duplicate model names {', '.join(duplicates)}")
    return Registry(p, entries)
