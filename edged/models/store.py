"""The models directory, and fetch / import / verify / resolve of the registry's models (`edged.models.registry`).

Models directory: `$EDGED_MODELS`, else the config value `models.dir`, else
`~/.local/share/edged/models` (the systemd service uses `/var/lib/edged/models`); created 0700,
files 0600. `import` converts any supported weights (t7, pt, Keras-OpenFace CSV directory) into
the project's own file `<name>.edged.pt` there.
"""

from __future__ import annotations

import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edged.config import DEFAULT_MODELS_DIR
from edged.errors import EdgedError, ModelFileError, ModelNotInstalledError
from edged.fileio import file_digests
from edged.models.registry import NAME_RE, ModelEntry, ModelFile, Registry

if TYPE_CHECKING:
    from edged.embed.nn4.weights import LoadedWeights, ModelIdentity

log = logging.getLogger(__name__)

MODELS_ENV = "EDGED_MODELS"
BASE_URL_ENV = "EDGED_MODELS_BASE_URL"
#: Suffix of the project's own weights files written by `import`.
CONVERTED_SUFFIX = ".edged.pt"
#: Alignment every nn4 model in this project uses (`edged.align.OPENFACE_96.name`).
NN4_ALIGNMENT = "openface-outer-eyes-nose-96"
#: Threshold for nn4 weights that carry none: nn4.small2.v1's LFW mean threshold (squared L2).
DEFAULT_NN4_THRESHOLD = 0.99
#: Largest download accepted when the registry gives no size.
MAX_DOWNLOAD_BYTES = 512 << 20

ProgressFn = Callable[[int, int], None]


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


def installed_files(name: str, file_names: tuple[str, ...], directory: Path, registry: Registry, check: bool,
                    missing: str) -> list[Path]:
    """The files `file_names` of registry model `name` (a model made of several files: the liveness models, the
    face detector) installed in `directory`, in that order; `ModelNotInstalledError` "<path>: `missing`" for the
    first absent one; with `check`, each file's checksum must match the registry (`ModelFileError`)."""
    entry = registry.require(name)
    files = {f.file: f for f in entry.files}
    paths = []
    for file_name in file_names:
        if file_name not in files:
            raise ModelNotInstalledError(f"the model registry {registry.path} lists no {file_name} for {name}")
        path = registry.file_path(files[file_name], directory)
        if not path.is_file():
            raise ModelNotInstalledError(f"{path}: {missing}")
        if check:
            _checked_digests(InstalledModel(entry.name, path, entry, files[file_name]))
        paths.append(path)
    return paths


def identify(model: InstalledModel, weights: LoadedWeights, md5: str, sha256: str,
             registry: Registry) -> ModelIdentity:
    """Name, version, threshold and alignment of loaded weights."""
    from edged.embed.nn4.weights import ModelIdentity

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
        return ModelIdentity(entry.name, entry.name, entry.threshold, entry.alignment, True,
                             entry.open_set_threshold, entry.open_set_max_ratio)
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
    from edged.embed.nn4.weights import read_weights  # torch: only when nn4 weights are read

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


def _check_structure(path: Path, file: ModelFile, label: str) -> None:
    """A downloaded file must be what its format says: nn4 weights layer by layer, a loadable ONNX model
    of the liveness models' shape, or a Caffe network description OpenCV reads (raises ModelFileError); a
    .caffemodel is checked by its checksum only (OpenCV reads it only with its description)."""
    if file.format == "prototxt":
        from edged.vision.detect import check_prototxt

        check_prototxt(path, label)
    elif file.format == "caffemodel":
        return
    elif file.format == "onnx":
        from edged.vision.antispoof import check_model_file

        check_model_file(path, label)
    else:
        from edged.embed.nn4.weights import read_weights

        read_weights(path, fmt="pt" if file.format == "edged" else file.format, label=label)


def fetch_all(name: str, directory: Path, registry: Registry, *, fmt: str | None = None, url: str | None = None,
              force: bool = False, timeout: float = 60.0,
              progress: Callable[[ModelFile], ProgressFn | None] | None = None) -> list[tuple[Path, bool]]:
    """`fetch` every file `edged models fetch NAME` installs (`ModelEntry.files_to_fetch`: one file of an
    embedder, all files of the liveness models), in registry order; `url` only for a single file.
    `progress(file)` gives each file's progress callback. Files installed before a failure stay (each was
    verified on its own)."""
    entry = registry.require(name)
    files = entry.files_to_fetch(fmt)
    if url and len(files) > 1:
        raise EdgedError(f"model {name} has {len(files)} files; --url names one file (use $EDGED_MODELS_BASE_URL "
                         f"for a mirror holding all of them)")
    return [_fetch_file(entry, f, directory, registry, url=url, force=force, timeout=timeout,
                        progress=progress(f) if progress else None) for f in files]


def fetch(name: str, directory: Path, registry: Registry, *, fmt: str | None = None, url: str | None = None,
          force: bool = False, timeout: float = 60.0, progress: ProgressFn | None = None) -> tuple[Path, bool]:
    """Download a registered model file, verify checksum and structure, and rename it into place.

    Returns (path, downloaded); nothing is left behind on failure. (The first file of the model: see
    `fetch_all` for models made of several files.)
    """
    entry = registry.require(name)
    return _fetch_file(entry, entry.files_to_fetch(fmt)[0], directory, registry, url=url, force=force,
                       timeout=timeout, progress=progress)


def _fetch_file(entry: ModelEntry, file: ModelFile, directory: Path, registry: Registry, *, url: str | None,
                force: bool, timeout: float, progress: ProgressFn | None) -> tuple[Path, bool]:
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
        try:  # the structure must be right too (nn4.small2 weights, or the liveness models' ONNX)
            _check_structure(tmp, file, source)
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
    from edged.embed.nn4.weights import read_weights, save_weights

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
    if not NAME_RE.match(chosen):
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
        found = {m.name for m in models} | {
            e.name for e in registry.entries if e.kind != "embedder"
            and any(registry.file_path(f, directory).is_file() for f in e.files)}
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
    for entry in registry.entries:  # models that are not embedders (the liveness models): checksum and load
        if entry.kind == "embedder" or (names and entry.name not in names):
            continue
        for f in entry.files:
            path = registry.file_path(f, directory)
            if not path.is_file():
                continue
            try:
                _checked_digests(InstalledModel(entry.name, path, entry, f))
                _check_structure(path, f, str(path))
            except EdgedError as exc:
                results.append(VerifyResult(entry.name, path, False, str(exc)))
                continue
            results.append(VerifyResult(entry.name, path, True, "ok: checksum matches the registry, the model loads"))
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
