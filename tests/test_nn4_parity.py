"""Architecture parity of NN4Small2 with OpenFace's trained nn4.small2.v1, on real faces.

The shared data holds 221 of nn4.small2.v1's layer files (Keras-OpenFace CSV export; the five
missing ones are all after inception 3b). Batch normalisation stores, per channel, the mean and
variance of its input over the training faces. If our network computes what Torch computed,
real faces aligned and preprocessed the OpenFace way produce BN inputs whose channel statistics
match the stored ones; a wrong pooling or preprocessing shifts them. (Two details are too
small to show here and are checked elsewhere: LRN with alpha 1e-4 barely changes activations,
and moving the zero padding of 3a's 5x5 pool output from centred to the corner leaves channel
statistics unchanged; test_nn4_net.py checks both by hand and test_nn4_weights.py against
OpenCV's independent Torch7 implementation.)

Statistics per BN layer up to and including inception 3b (15 layers), over all pixels of all
faces: z = (channel mean - running_mean) / sqrt(running_var + eps) and log((channel var + eps) /
(running_var + eps)); we take the median over channels of |z| and of |log ratio|.

Measured on this data (68 faces: OpenFace's examples + 60 LFW people), correct network:
  median|z| per layer 0.05-0.23 (mean over layers 0.10); median|log var ratio| 0.02-0.21.
Deliberately wrong variants, same faces:
  L2 pool over the window mean (sqrt(sum/9)): log var ratio 2.17 at incept3b's pool branch (log 9 = 2.20);
  input not divided by 255: median|z| 153 at bn1;
  BGR instead of RGB: median|z| up to 0.43, mean over layers 0.18.
The thresholds sit between, with margin on both sides: per layer median|z| < 0.32 and median
|log ratio| < 0.5; mean over layers of median|z| < 0.14. The residual of the correct network
comes from LFW/our dlib differing from OpenFace's training faces and dlib 18.16 alignment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edged.embed.nn4.net import NN4Small2
from edged.embed.nn4.preprocess import to_network_input
from edged.embed.nn4.weights import check_state_dict, read_keras_csv_dir
from edged.vision.align import OPENFACE_96, FaceAligner
from edged.vision.detect import FaceDetector
from edged.vision.imageio import load_image
from tests.conftest import NN4_CSV

#: The five layer files missing from the shared export (see ../shared/README.md).
MISSING = ["inception_3c_3x3_conv2_w.csv", "inception_4e_3x3_conv2_w.csv", "inception_5a_1x1_conv_w.csv",
           "inception_5a_3x3_conv2_w.csv", "inception_5b_3x3_conv2_w.csv"]
CHECKED_BLOCKS = ("bn1", "bn2", "bn3", "incept3a.", "incept3b.")
LFW_PEOPLE = 60
MAX_LAYER_Z = 0.32
MAX_MEAN_Z = 0.14
MAX_LAYER_LOG_VAR = 0.5


@dataclass(frozen=True)
class PartialWeights:
    """The partial CSV export, checked layer by layer where present (not a usable model: see ../shared)."""

    state_dict: dict[str, torch.Tensor]
    missing: list[str]


@pytest.fixture(scope="module")
def weights(shared) -> PartialWeights:
    state, missing = read_keras_csv_dir(NN4_CSV, allow_missing=True)
    return PartialWeights(check_state_dict(state, str(NN4_CSV), allow_missing=True), missing)


@pytest.fixture(scope="module")
def faces(openface_dir, lfw_dir) -> np.ndarray:
    return aligned_faces(openface_dir, lfw_dir)


def aligned_faces(openface_dir: Path, lfw_dir: Path) -> np.ndarray:
    """Real faces aligned for nn4.small2.v1: every face of OpenFace's examples and the first
    photo of 60 LFW people spread over the alphabet."""
    detector, aligner = FaceDetector("hog", upsample=0), FaceAligner(OPENFACE_96)
    people = sorted(p for p in (lfw_dir / "lfw-deepfunneled").iterdir() if p.is_dir())
    step = len(people) // LFW_PEOPLE
    paths: list[Path] = sorted(openface_dir.glob("*.jpg"))
    paths += [sorted(person.glob("*.jpg"))[0] for person in people[::step][:LFW_PEOPLE]]
    crops = []
    for path in paths:
        image = load_image(path)
        boxes = detector.detect(image)
        crops += [aligner.align(image, box) for box in boxes[: 1 if "lfw" in str(path) else None]]
    assert len(crops) >= 60
    return np.stack(crops)


def bn_input_stats(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[float, float]]:
    """BN layer -> (median |z| of channel means, median |log variance ratio|) of its input."""
    stats: dict[str, tuple[float, float]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d) and name.startswith(CHECKED_BLOCKS):
            def hook(mod: nn.BatchNorm2d, inputs: tuple[torch.Tensor], name: str = name) -> None:
                a = inputs[0].double()
                mean, var = a.mean((0, 2, 3)), a.var((0, 2, 3), unbiased=False)
                run_mean, run_var = mod.running_mean.double(), mod.running_var.double() + mod.eps
                z = (mean - run_mean) / run_var.sqrt()
                stats[name] = (z.abs().median().item(), torch.log((var + mod.eps) / run_var).abs().median().item())
            hooks.append(module.register_forward_pre_hook(hook))
    with torch.inference_mode():
        model(x)
    for h in hooks:
        h.remove()
    return stats


def parity_failures(stats: dict[str, tuple[float, float]]) -> list[str]:
    failures = [f"{n}: median|z| {z:.3f}" for n, (z, _) in stats.items() if z >= MAX_LAYER_Z]
    failures += [f"{n}: median|log var ratio| {v:.3f}" for n, (_, v) in stats.items() if v >= MAX_LAYER_LOG_VAR]
    mean_z = float(np.mean([z for z, _ in stats.values()]))
    if mean_z >= MAX_MEAN_Z:
        failures.append(f"mean over layers of median|z| {mean_z:.3f}")
    return failures


class MeanL2Pool(nn.Module):
    """The wrong L2 pool: sqrt of the window *mean* of squares."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x * x, 3, 3).sqrt()


def run_variant(weights, faces: np.ndarray, change: Callable[[NN4Small2, torch.Tensor], torch.Tensor] | None = None):
    model = NN4Small2()
    model.load_state_dict(weights.state_dict, strict=False)  # test-only partial load: layers after 3b stay random
    model.eval()
    x = torch.from_numpy(to_network_input(faces))
    if change is not None:
        x = change(model, x)
    return bn_input_stats(model, x)


def test_partial_export_lacks_exactly_the_documented_files(weights):
    assert weights.missing == MISSING
    loaded = set(weights.state_dict)
    assert all(k in loaded for k in NN4Small2().state_dict() if k.startswith(CHECKED_BLOCKS) and "num_batches" not in k)


def test_bn_parity_on_real_faces(weights, faces):
    stats = run_variant(weights, faces)
    assert len(stats) == 15
    assert parity_failures(stats) == []


def _mean_l2_pool(model: NN4Small2, x: torch.Tensor) -> torch.Tensor:
    model.incept3b.branches[2][0] = MeanL2Pool()
    return x


@pytest.mark.parametrize(("variant", "change", "where"), [
    ("L2 pool as window mean", _mean_l2_pool, "incept3b.branches.2.2: median|log var ratio|"),
    ("input not divided by 255", lambda model, x: x * 255.0, "bn1: median|z|"),
    ("BGR instead of RGB", lambda model, x: x.flip(1), "mean over layers of median|z|"),
])
def test_bn_parity_rejects_wrong_variants(weights, faces, variant, change, where):
    failures = parity_failures(run_variant(weights, faces, change))
    assert any(f.startswith(where) for f in failures), (variant, failures)
