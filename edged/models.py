"""Model registry, models directory, and fetch / import / verify of embedder weights.

The registry (`models/registry.json` in the repository, or `$EDGED_REGISTRY`) lists models by
name; each has the embedder it belongs to, its match threshold, the alignment it needs, a
licence and one or more files. A file is either fetched from its `url` into the models
directory (checked against `md5` and/or `sha256`), or `shipped: true`: it lives beside the
registry file and is installed by being there.

Models directory: `$EDGED_MODELS`, else the config value `models.dir`, else
`~/.local/share/edged/models` (the systemd service uses `/var/lib/edged/models`); created 0700,
files 0600. `import` converts any supported weights (t7, pt, Keras-OpenFace CSV directory) into
the project's own file `<name>.edged.pt` there.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edged.config import DEFAULT_MODELS_DIR
from edged.errors import EdgedError, ModelFileError, ModelNotInstalledError
from edged.nn4_weights import LoadedWeights, file_digests, read_weights, save_weights

log = logging.getLogger(__name__)

MODELS_ENV = "EDGED_MODELS"
REGISTRY_ENV = "EDGED_REGISTRY"
BASE_URL_ENV = "EDGED_MODELS_BASE_URL"
#: Suffix of the project's own weights files written by `import`.
CONVERTED_SUFFIX = ".edged.pt"
#: Alignment every nn4 model in this project uses (`edged.align.OPENFACE_96.name`).
NN4_ALIGNMENT = "openface-outer-eyes-nose-96"
#: Threshold for nn4 weights that carry none: nn4.small2.v1's LFW mean threshold (squared L2).
DEFAULT_NN4_THRESHOLD = 0.99
#: Largest download accepted when the registry gives no size.
MAX_DOWNLOAD_BYTES = 512 << 20
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_HEX = {"md5": 32, "sha256": 64}
_FORMATS = ("t7", "pt", "edged")

ProgressFn = Callable[[int, int], None]


class RegistryError(EdgedError):
    """The model registry file is invalid."""


class DownloadError(EdgedError):
    """A model could not be downloaded or failed its checksum."""


# ---- directories ----

def models_dir(config_dir: str | None = None) -> Path:
    """$EDGED_MODELS, else the configured directory, else ~/.local/share/edged/models (not created here)."""
    chosen = os.environ.get(MODELS_ENV) or config_dir or DEFAULT_MODELS_DIR
    return Path(chosen).expanduser()


def ensure_models_dir(path: Path) -> list[Path]:
    """Create the models directory (mode 0700) if needed; returns the directories created, deepest first."""
    created = [p for p in (path, *path.parents) if not p.exists()]
    if created:
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(path, 0o700)
        except OSError as exc:
            raise EdgedError(f"{path}: cannot create the models directory ({exc.strerror or exc})") from exc
    elif not path.is_dir():
        raise EdgedError(f"{path}: models directory is not a directory")
    return created


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_empty(dirs: list[Path]) -> None:
    """Undo `ensure_models_dir` after a failure (only directories still empty)."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            return


def registry_path() -> Path:
    """$EDGED_REGISTRY, else models/registry.json of the checkout edged runs from, else the copy a
    non-editable install put in <prefix>/share/edged/models."""
    env = os.environ.get(REGISTRY_ENV)
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parents[1] / "models" / "registry.json"
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
    threshold: float
    alignment: str
    files: tuple[ModelFile, ...]
    description: str = ""
    licence: str = ""
    homepage: str = ""
    priority: int = 0

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
    if not _NAME_RE.match(name):
        raise RegistryError(f"{where}.name: {name!r} is not a valid model name")
    threshold = float(_field(raw, "threshold", (int, float), where))
    if not 0.0 < threshold < 4.0:
        raise RegistryError(f"{where}.threshold: must be between 0 and 4 (squared L2), got {threshold}")
    files = _field(raw, "files", list, where)
    if not files:
        raise RegistryError(f"{where}.files: must list at least one file")
    return ModelEntry(
        name=name, embedder=_field(raw, "embedder", str, where), threshold=threshold,
        alignment=_field(raw, "alignment", str, where),
        files=tuple(_parse_file(f, f"{where}.files[{i}]") for i, f in enumerate(files)),
        description=_field(raw, "description", str, where, False) or "",
        licence=_field(raw, "licence", str, where, False) or "",
        homepage=_field(raw, "homepage", str, where, False) or "",
        priority=int(_field(raw, "priority", int, where, False) or 0),
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


# ---- installed models ----

@dataclass(frozen=True)
class InstalledModel:
    """A weights file present on disk and what it is."""

    name: str
    path: Path
    entry: ModelEntry | None  # registered model of this name, if any
    file: ModelFile | None  # the registry file this is (originals), None for converted/custom files

    @property
    def kind(self) -> str:
        if self.file is not None:
            return "shipped" if self.file.shipped else "fetched"
        return "imported" if self.path.name.endswith(CONVERTED_SUFFIX) else "file"


@dataclass(frozen=True)
class ModelIdentity:
    """What an embedder reports about its weights."""

    name: str
    version: str  # registry name when verified against the registry, else name@sha256-prefix
    threshold: float
    alignment: str
    verified: bool


def converted_path(directory: Path, name: str) -> Path:
    return directory / f"{name}{CONVERTED_SUFFIX}"


def installed_models(directory: Path, registry: Registry, embedder: str = "nn4") -> list[InstalledModel]:
    """Every installed model file of `embedder`, best first: what the user installed (registered
    models by priority: converted file, then originals in registry order; then other imported
    files by name), then the files shipped with edged, which are the out-of-the-box fallback."""
    out: list[InstalledModel] = []
    shipped: list[InstalledModel] = []
    entries = sorted((e for e in registry.entries if e.embedder == embedder), key=lambda e: (-e.priority, e.name))
    for entry in entries:
        converted = converted_path(directory, entry.name)
        if converted.is_file():
            out.append(InstalledModel(entry.name, converted, entry, None))
        for f in entry.files:
            path = registry.file_path(f, directory)
            if path.is_file():
                (shipped if f.shipped else out).append(InstalledModel(entry.name, path, entry, f))
    if embedder == "nn4" and directory.is_dir():
        registered = {e.name for e in registry.entries}
        for path in sorted(directory.glob(f"*{CONVERTED_SUFFIX}")):
            name = path.name[:-len(CONVERTED_SUFFIX)]
            if name not in registered:
                out.append(InstalledModel(name, path, None, None))
    return out + shipped


def _install_hint(name: str = "nn4.small2.v1") -> str:
    return (f"run 'edged models fetch {name}' (needs internet) or 'edged models import FILE' "
            f"(nn4.small2.v1.t7, nn4.small2.v1.pt or a Keras-OpenFace CSV directory)")


def resolve(weights: str | None, directory: Path, registry: Registry, embedder: str = "nn4") -> InstalledModel:
    """The installed model for `weights`: None = the best installed, a model name, or a file path."""
    installed = installed_models(directory, registry, embedder)
    if weights is None:
        if not installed:
            raise ModelNotInstalledError(f"no {embedder} weights installed in {directory}: {_install_hint()}")
        chosen = installed[0]
        log.info("using %s weights %s (%s)", embedder, chosen.name, chosen.path)
        return chosen
    for model in installed:
        if model.name == weights:
            return model
    path = Path(weights).expanduser()
    if path.exists():
        return InstalledModel(path.name, path, None, None)
    if registry.get(weights) is not None:
        raise ModelNotInstalledError(f"model {weights} is not installed in {directory}: {_install_hint(weights)}")
    raise ModelNotInstalledError(f"embedder.weights: {weights!r} is neither an installed model "
                                 f"(see 'edged models list') nor a weights file")


def _checked_digests(model: InstalledModel) -> tuple[str, str]:
    md5, sha = file_digests(model.path)
    f = model.file
    if f is not None and ((f.md5 and f.md5 != md5) or (f.sha256 and f.sha256 != sha)):
        expected = f"md5 {f.md5}" if f.md5 else f"sha256 {f.sha256}"
        got = f"md5 {md5}" if f.md5 else f"sha256 {sha}"
        raise ModelFileError(f"{model.path}: checksum mismatch for {model.name} (expected {expected}, got {got}); "
                             f"run 'edged models fetch {model.name} --force' or remove the file")
    return md5, sha


def identify(model: InstalledModel, weights: LoadedWeights, md5: str, sha256: str,
             registry: Registry) -> ModelIdentity:
    """Name, version, threshold and alignment of loaded weights."""
    match = registry.match(md5, sha256)
    entry = match[0] if match else None
    meta = weights.meta
    if entry is None and model.entry is not None and model.kind == "imported":
        # converted by `import`, which checked the source against the registry
        src_md5, src_sha = meta.get("source_md5"), meta.get("source_sha256")
        if meta.get("name") == model.entry.name and any(
                (f.md5 and f.md5 == src_md5) or (f.sha256 and f.sha256 == src_sha) for f in model.entry.files):
            entry = model.entry
    if entry is not None:
        return ModelIdentity(entry.name, entry.name, entry.threshold, entry.alignment, True)
    name = str(meta.get("name") or model.name)
    threshold = meta.get("threshold")
    if not isinstance(threshold, int | float) or not 0 < threshold < 4:
        log.warning("%s: no match threshold recorded; using %.2f (nn4.small2.v1's); calibrate it for these weights",
                    model.path, DEFAULT_NN4_THRESHOLD)
        threshold = DEFAULT_NN4_THRESHOLD
    alignment = str(meta.get("alignment") or NN4_ALIGNMENT)
    return ModelIdentity(name, f"{name}@{sha256[:12]}", float(threshold), alignment, False)


def load_model(model: InstalledModel, registry: Registry) -> tuple[LoadedWeights, ModelIdentity]:
    """Checksums (registry files), then the layer-by-layer weights check; identity of the result."""
    md5, sha = _checked_digests(model)
    weights = read_weights(model.path)
    identity = identify(model, weights, md5, sha, registry)
    if identity.alignment != NN4_ALIGNMENT:
        raise ModelFileError(f"{model.path}: needs alignment {identity.alignment!r}; nn4 uses {NN4_ALIGNMENT!r}")
    return weights, identity


# ---- fetch ----

def download_url(file: ModelFile, url: str | None = None) -> str:
    """The URL to fetch: explicit, else $EDGED_MODELS_BASE_URL + file name, else the registry's."""
    if url:
        return url
    base = os.environ.get(BASE_URL_ENV)
    if base:
        return base.rstrip("/") + "/" + file.file
    assert file.url is not None
    return file.url


def _download(url: str, dest: Path, limit: int, timeout: float, progress: ProgressFn | None) -> int:
    request = urllib.request.Request(url, headers={"User-Agent": "edged-models"})
    done = 0
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        if total > limit:
            raise DownloadError(f"{url}: {total} bytes is more than the expected {limit}")
        while chunk := response.read(1 << 16):
            done += len(chunk)
            if done > limit:
                raise DownloadError(f"{url}: download exceeds the expected {limit} bytes")
            out.write(chunk)
            if progress:
                progress(done, total)
        out.flush()
        os.fsync(out.fileno())
    if total and done != total:
        raise DownloadError(f"{url}: connection closed after {done} of {total} bytes")
    return done


def fetch(name: str, directory: Path, registry: Registry, *, fmt: str | None = None, url: str | None = None,
          force: bool = False, timeout: float = 60.0, progress: ProgressFn | None = None) -> tuple[Path, bool]:
    """Download a registered model file, verify checksum and structure, and rename it into place.

    Returns (path, downloaded); nothing is left behind on failure.
    """
    entry = registry.require(name)
    file = entry.file_of(fmt)
    target = registry.file_path(file, directory)
    installed = InstalledModel(entry.name, target, entry, file)
    if target.is_file() and not force:
        try:
            _checked_digests(installed)
            return target, False
        except ModelFileError as exc:
            log.warning("%s; downloading it again", exc)
    source = download_url(file, url)
    created = ensure_models_dir(directory)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{file.file}.", suffix=".part", dir=directory)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            _download(source, tmp, file.size or MAX_DOWNLOAD_BYTES, timeout, progress)
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"cannot download {source}: HTTP {exc.code} {exc.reason}; download {file.file} "
                                f"elsewhere and run 'edged models import FILE'") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DownloadError(f"cannot download {source} ({reason}); no network? download {file.file} on "
                                f"another machine and run 'edged models import FILE'") from exc
        md5, sha = file_digests(tmp)
        if (file.md5 and md5 != file.md5) or (file.sha256 and sha != file.sha256):
            expected = f"md5 {file.md5}" if file.md5 else f"sha256 {file.sha256}"
            got = f"md5 {md5}" if file.md5 else f"sha256 {sha}"
            raise DownloadError(f"{source}: checksum mismatch (expected {expected}, got {got}); nothing was installed")
        try:  # the structure must be nn4.small2 too
            read_weights(tmp, fmt="pt" if file.format == "edged" else file.format, label=source)
        except ModelFileError as exc:
            raise DownloadError(f"{exc}; nothing was installed") from exc
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        _remove_empty(created)
        raise
    _fsync_dir(directory)
    log.info("installed %s (%s)", entry.name, target)
    return target, True


# ---- import ----

@dataclass(frozen=True)
class ImportResult:
    name: str
    path: Path
    source_format: str
    registered: bool
    threshold: float


def import_weights(source: str | Path, directory: Path, registry: Registry, *, name: str | None = None,
                   threshold: float | None = None, force: bool = False) -> ImportResult:
    """Check weights in any supported format and install them as `<name>.edged.pt` (mode 0600)."""
    src = Path(source).expanduser()
    if not src.exists():
        raise ModelFileError(f"{src}: no such file or directory")
    weights = read_weights(src)
    md5, sha = file_digests(src)
    match = registry.match(md5, sha)
    meta = weights.meta
    if match is not None:
        entry = match[0]
        if name not in (None, entry.name):
            raise EdgedError(f"{src} is {entry.name} (checksum match); import it without --name")
        chosen, chosen_threshold, alignment = entry.name, entry.threshold, entry.alignment
    else:
        chosen = name or str(meta.get("name") or _stem(src))
        if registry.get(chosen) is not None:
            raise EdgedError(f"{src} does not match the registered checksums of {chosen}; "
                             f"import it under another --name")
        meta_threshold = meta.get("threshold")
        chosen_threshold = threshold if threshold is not None else (
            float(meta_threshold) if isinstance(meta_threshold, int | float) else DEFAULT_NN4_THRESHOLD)
        alignment = str(meta.get("alignment") or NN4_ALIGNMENT)
    if threshold is not None:
        chosen_threshold = threshold
    if not _NAME_RE.match(chosen):
        raise EdgedError(f"{chosen!r} is not a valid model name (letters, digits, '.', '_', '+', '-'); use --name")
    if not 0 < chosen_threshold < 4:
        raise EdgedError(f"threshold must be between 0 and 4 (squared L2), got {chosen_threshold}")
    if alignment != NN4_ALIGNMENT:
        raise ModelFileError(f"{src}: needs alignment {alignment!r}; nn4 uses {NN4_ALIGNMENT!r}")
    target = converted_path(directory, chosen)
    if target.exists() and not force:
        raise EdgedError(f"{target} already exists; use --force to replace it")
    ensure_models_dir(directory)
    extra = {k: v for k, v in meta.items() if k not in ("name", "threshold", "alignment")
             and isinstance(v, str | int | float)}
    extra.update(source=src.name, source_format=weights.fmt, source_md5=md5, source_sha256=sha)
    save_weights(target, weights.state_dict, name=chosen, threshold=chosen_threshold, alignment=alignment, **extra)
    return ImportResult(chosen, target, weights.fmt, match is not None, chosen_threshold)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (CONVERTED_SUFFIX, ".t7", ".pt", ".pth"):
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return name


# ---- verify and list ----

@dataclass(frozen=True)
class VerifyResult:
    name: str
    path: Path
    ok: bool
    message: str


def verify(directory: Path, registry: Registry, names: list[str] | None = None) -> list[VerifyResult]:
    """Checksums against the registry, then a full load of every installed model file."""
    models = [m for m in installed_models(directory, registry) if not names or m.name in names]
    if names:
        found = {m.name for m in models}
        absent = [n for n in names if n not in found]
        if absent:
            raise ModelNotInstalledError(f"not installed in {directory}: {', '.join(absent)}")
    results = []
    for model in models:
        try:
            _, identity = load_model(model, registry)
        except EdgedError as exc:
            results.append(VerifyResult(model.name, model.path, False, str(exc)))
            continue
        how = "checksum matches the registry" if identity.verified else f"unregistered weights {identity.version}"
        results.append(VerifyResult(model.name, model.path, True, f"ok: {how}, all layers load"))
    return results


def list_models(directory: Path, registry: Registry) -> list[dict[str, Any]]:
    """One row per registry file and per imported file: installed or not, path, checksums."""
    rows: list[dict[str, Any]] = []
    for entry in registry.entries:
        common = {"name": entry.name, "embedder": entry.embedder, "threshold": entry.threshold,
                  "alignment": entry.alignment, "licence": entry.licence, "description": entry.description}
        for f in entry.files:
            path = registry.file_path(f, directory)
            rows.append({**common, "kind": "shipped" if f.shipped else "download", "format": f.format,
                         "file": f.file, "url": f.url, "md5": f.md5, "sha256": f.sha256,
                         "installed": path.is_file(), "path": str(path)})
        converted = converted_path(directory, entry.name)
        if converted.is_file():
            rows.append({**common, "kind": "imported", "format": "edged", "file": converted.name, "url": None,
                         "md5": None, "sha256": None, "installed": True, "path": str(converted)})
    for model in installed_models(directory, registry):
        if model.entry is None:
            rows.append({"name": model.name, "embedder": "nn4", "threshold": None, "alignment": None,
                         "licence": "", "description": "imported weights", "kind": "imported",
                         "format": "edged", "file": model.path.name, "url": None, "md5": None, "sha256": None,
                         "installed": True, "path": str(model.path)})
    return rows
