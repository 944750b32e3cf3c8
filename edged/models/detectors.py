"""The face detector a config asks for, with the model files `edged models fetch retinaface` installed.

`detector.backend: auto` (the default) is RetinaFace when its two files are installed in the models directory
(`$EDGED_MODELS`, else the config's `models.dir`, else ~/.local/share/edged/models) and dlib's HOG otherwise,
with a note saying how to get the better one; `retinaface` insists on the files (a clear error naming the fetch
command). The files are checked against the registry's sha256 when the detector is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edged.config import Config, DetectorConfig
from edged.embed.ort_runner import CACHE_SUBDIR
from edged.errors import ModelNotInstalledError
from edged.models import store
from edged.models.registry import Registry, load_registry
from edged.vision.detect import RETINAFACE_FETCH_HINT, FaceDetector

#: The registry name of the RetinaFace detector and its files in the order `FaceDetector` takes them.
RETINAFACE = "retinaface"
RETINAFACE_FILES = ("deploy.prototxt", "Widerface-RetinaFace.caffemodel")


@dataclass(frozen=True)
class DetectorChoice:
    """The backend a config resolves to, its model files (retinaface) and why `auto` fell back (else None)."""

    backend: str
    files: tuple[Path, Path] | None = None
    note: str | None = None


def retinaface_paths(directory: str | Path | None = None, registry: Registry | None = None,
                     check: bool = True) -> tuple[Path, Path]:
    """(deploy.prototxt, .caffemodel) installed in `directory` (default: the models directory); with `check`,
    each file's sha256 must match the registry (`ModelFileError` otherwise)."""
    folder = Path(directory).expanduser() if directory is not None else store.models_dir()
    paths = store.installed_files(RETINAFACE, RETINAFACE_FILES, folder, registry or load_registry(), check,
                                  f"face detector model not installed; {RETINAFACE_FETCH_HINT} (needs internet; "
                                  f"downloads {', '.join(RETINAFACE_FILES)}, 1.9 MB)")
    return paths[0], paths[1]


def choose_detector(detector: DetectorConfig, directory: str | Path | None = None, check: bool = True
                    ) -> DetectorChoice:
    """Resolve `detector.backend` (auto: retinaface if installed, else hog with a note)."""
    if detector.backend not in ("auto", RETINAFACE):
        return DetectorChoice(detector.backend)
    try:
        return DetectorChoice(RETINAFACE, retinaface_paths(directory, check=check))
    except ModelNotInstalledError as exc:
        if detector.backend == RETINAFACE:
            raise
        return DetectorChoice("hog", note=f"detector.backend auto: using dlib's HOG; the RetinaFace detector finds "
                                          f"more faces faster ({exc})")


def face_detector(cfg: Config, directory: str | Path | None = None) -> tuple[FaceDetector, DetectorChoice]:
    """The configured detector, ready to run, and how `auto` was resolved."""
    chosen = directory if directory is not None else store.models_dir(cfg.models.dir)
    choice = choose_detector(cfg.detector, chosen)
    det = cfg.detector
    return FaceDetector(choice.backend, upsample=det.upsample, min_score=det.min_score,
                        model_files=choice.files, runtime=det.runtime,
                        cache_dir=Path(chosen).expanduser() / CACHE_SUBDIR), choice
