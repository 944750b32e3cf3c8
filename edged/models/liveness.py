"""The liveness models in the models directory: where `edged models fetch minifasnet` put them.

`minifasnet_paths` returns the two installed MiniFASNet ONNX files (checked against the registry's sha256)
or raises `ModelNotInstalledError` saying how to install them; `texture_model` builds the texture cue
(`edged.vision.antispoof.TextureModel`) from them. The models directory is the usual one
(`$EDGED_MODELS`, else the config's `models.dir`, else ~/.local/share/edged/models).
"""

from __future__ import annotations

from pathlib import Path

from edged.config import Config, LivenessConfig
from edged.embed.ort_runner import CACHE_SUBDIR
from edged.models import store
from edged.models.registry import Registry, load_registry
from edged.vision.align import LandmarkPredictor
from edged.vision.antispoof import TextureModel

#: The registry name of Silent-Face's MiniFASNet pair.
MINIFASNET = "minifasnet"
#: Its files, in the order `TextureModel` takes them (scale 2.7, scale 4.0).
MINIFASNET_FILES = ("MiniFASNetV2.onnx", "MiniFASNetV1SE.onnx")


def minifasnet_paths(directory: str | Path | None = None, registry: Registry | None = None,
                     check: bool = True) -> tuple[Path, Path]:
    """(MiniFASNetV2.onnx, MiniFASNetV1SE.onnx) installed in `directory` (default: the models directory);
    with `check`, each file's sha256 must match the registry (`ModelFileError` otherwise)."""
    folder = Path(directory).expanduser() if directory is not None else store.models_dir()
    paths = store.installed_files(MINIFASNET, MINIFASNET_FILES, folder, registry or load_registry(), check,
                                  f"liveness model not installed; run 'edged models fetch {MINIFASNET}' (needs "
                                  f"internet; downloads {', '.join(MINIFASNET_FILES)})")
    return paths[0], paths[1]


def texture_model(cfg: Config | None = None, directory: str | Path | None = None) -> TextureModel:
    """The texture cue from the installed MiniFASNet files (`liveness.threads` ONNX Runtime threads)."""
    chosen = directory if directory is not None else store.models_dir(cfg.models.dir if cfg else None)
    v2, v1se = minifasnet_paths(chosen)
    return TextureModel(v2, v1se, threads=cfg.liveness.threads if cfg else 1)


def landmark_predictor(cfg: Config | None = None, directory: str | Path | None = None,
                       liveness: LivenessConfig | None = None) -> LandmarkPredictor:
    """The 68-point landmarks of the blink and parallax cues: dlib's model truncated to `liveness`'s (default the
    config's) `landmark_stages` and `landmark_trees` (`edged.vision.landmark_trees`), cached in the models
    directory."""
    chosen = directory if directory is not None else store.models_dir(cfg.models.dir if cfg else None)
    live = liveness or (cfg.liveness if cfg else LivenessConfig())
    return LandmarkPredictor(68, stages=live.landmark_stages, trees=live.landmark_trees,
                             cache_dir=Path(chosen).expanduser() / CACHE_SUBDIR)
