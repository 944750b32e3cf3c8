"""nn4 backends: every one gives eager PyTorch's embeddings (max abs difference <= 1e-5) on real aligned
faces, for random weights and for weights written to a file and loaded back; the ONNX Runtime export
cache is written safely, reused, and rebuilt when corrupt or stale; the plain export for peer runtimes."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edged.config import parse_config
from edged.embed.nn4.embedder import pick_backend
from edged.embed.nn4.fast import FastNN4, export_onnx, fold_bn
from edged.embed.nn4.net import NN4Small2
from edged.embed.nn4.onnx_export import PLAIN_INPUT, export_plain_onnx
from edged.embed.nn4.ort import (
    META_RECIPE,
    META_WEIGHTS,
    RECIPE_VERSION,
    ExportCheckError,
    FasterOf,
    OrtNN4,
    cache_path,
    check_export,
    state_digest,
)
from edged.embed.nn4.preprocess import to_network_input
from edged.embed.nn4.weights import load_nn4, save_weights
from edged.errors import ConfigError
from edged.models import store as models
from edged.models.embedders import create_nn4_embedder
from edged.vision.align import OPENFACE_96, FaceAligner
from edged.vision.detect import FaceDetector
from edged.vision.imageio import load_image
from tests.test_nn4_weights import random_state_dict

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def faces(openface_dir: Path) -> np.ndarray:
    """Real OpenFace-aligned 96 px faces: every HOG face of four example photos (one holds two people)."""
    detector, aligner = FaceDetector("hog", upsample=0), FaceAligner(OPENFACE_96)
    crops = []
    for name in ("lennon-1.jpg", "clapton-1.jpg", "carell.jpg", "longoria-cooper.jpg"):
        image = load_image(openface_dir / name)
        crops += [aligner.align(image, box) for box in detector.detect(image)]
    assert len(crops) >= 5
    return np.stack(crops)


def random_model(seed: int, faces: np.ndarray | None = None) -> NN4Small2:
    """Random weights; with `faces`, batch-norm statistics measured on them (as training would leave
    them), so that activations keep their scale and different faces get clearly different embeddings."""
    model = NN4Small2()
    model.load_state_dict(random_state_dict(seed))
    if faces is not None:
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # cumulative: the statistics of exactly these faces
        model.train()
        with torch.no_grad():
            model(torch.from_numpy(to_network_input(faces)))
    return model.eval()


def eager(model: NN4Small2, faces: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(to_network_input(faces))).numpy()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory, faces: np.ndarray) -> Path:
    """Random weights (BN statistics measured on the faces) saved as the project's own file."""
    path = tmp_path_factory.mktemp("weights") / "random.edged.pt"
    save_weights(path, random_model(7, faces).state_dict(), name="random", threshold=0.9,
                 alignment=models.NN4_ALIGNMENT)
    return path


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Not created yet: the embedder creates it for its export cache."""
    return tmp_path_factory.mktemp("state") / "models"


@pytest.fixture(scope="module")
def ort_embedder(weights: Path, models_dir: Path):
    embedder = create_nn4_embedder(str(weights), device="cpu", models_dir=str(models_dir))
    embedder.embed(np.zeros((1, 96, 96, 3), np.uint8))
    return embedder


def test_fold_bn_is_conv_then_bn() -> None:
    conv, bn = torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.BatchNorm2d(16).eval()
    with torch.no_grad():
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.2, 3.0)
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.normal_(0, 0.5)
        x = torch.rand(2, 8, 12, 12)
        weight, bias = fold_bn(conv, bn, in_scale=0.5)
        folded = torch.nn.functional.conv2d(x, weight, bias, padding=1)
        np.testing.assert_allclose(folded.numpy(), bn(conv(0.5 * x)).numpy(), atol=1e-5)


def test_fast_module_in_torch_matches_eager(faces: np.ndarray) -> None:
    model = random_model(3, faces)
    expected = eager(model, faces)
    with torch.inference_mode():
        got = FastNN4(model)(torch.from_numpy(faces)).numpy()
    assert got.shape == (len(faces), 128) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= TOLERANCE
    # different faces lie far apart compared with the tolerance: equivalence is a real test
    assert np.square(expected[0] - expected[1]).sum() > 0.05


def test_merged_1x1_export_in_onnxruntime_matches_eager(faces: np.ndarray) -> None:
    """The optional merge of each inception block's input 1x1 convs (the default export is covered below)."""
    model = random_model(4, faces)
    data = export_onnx(model, merge_1x1=True)
    runner = OrtNN4(data, threads=2)
    expected = eager(model, faces)
    assert np.abs(runner.run(faces) - expected).max() <= TOLERANCE  # two concurrent single-thread chunks
    for how in ("all cores", "one core"):  # a single face on two threads, or in the calling thread
        assert np.abs(runner.run_single(faces[:1], how) - expected[:1]).max() <= TOLERANCE
    runner.close()
    graph = onnx.load_model_from_string(data).graph
    assert sum(node.op_type == "Split" for node in graph.node) == 7  # one merged conv per inception block


def test_default_export_is_free_of_slow_and_shape_ops(ort_embedder, models_dir: Path) -> None:
    cached = next((models_dir / "cache").glob("*.onnx"))
    graph = onnx.load(str(cached)).graph
    ops = {node.op_type for node in graph.node}
    assert not ops & {"If", "Shape", "Gather", "BatchNormalization", "LRN", "LpPool", "Pow", "Split"}
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


def test_embedder_backends_match_eager_for_weights_from_a_file(faces: np.ndarray, weights: Path, models_dir: Path,
                                                              ort_embedder) -> None:
    reference = eager(load_nn4(weights), faces)
    torch_embedder = create_nn4_embedder(str(weights), device="cpu", backend="torch", models_dir=str(models_dir))
    assert ort_embedder.backend == "onnxruntime" and torch_embedder.backend == "torch"
    for embedder in (ort_embedder, torch_embedder):
        assert np.abs(embedder.embed(faces) - reference).max() <= TOLERANCE
        for i in range(2):
            assert np.abs(embedder.embed(faces[i]) - reference[i:i + 1]).max() <= TOLERANCE
        tiled = np.stack([faces[i % len(faces)] for i in range(16)])
        assert np.abs(embedder.embed(tiled) - reference[np.arange(16) % len(faces)]).max() <= TOLERANCE
    assert ort_embedder.embed(faces[:0]).shape == (0, 128)
    assert ort_embedder.describe()["backend"] == "onnxruntime"


def test_export_cache_is_private_and_reused(weights: Path, models_dir: Path, ort_embedder) -> None:
    cached = cache_path(models_dir / "cache", state_digest(ort_embedder.module().state_dict()))
    assert cached.is_file()
    assert stat.S_IMODE(cached.stat().st_mode) == 0o600
    assert stat.S_IMODE(cached.parent.stat().st_mode) == stat.S_IMODE(models_dir.stat().st_mode) == 0o700
    meta = {p.key: p.value for p in onnx.load(str(cached), load_external_data=False).metadata_props}
    assert meta[META_WEIGHTS] == state_digest(load_nn4(weights).state_dict())
    assert meta[META_RECIPE] == str(RECIPE_VERSION)
    before = (cached.stat().st_ino, cached.stat().st_mtime_ns)
    again = create_nn4_embedder(str(weights), device="cpu", models_dir=str(models_dir))
    again.embed(np.zeros((1, 96, 96, 3), np.uint8))
    assert (cached.stat().st_ino, cached.stat().st_mtime_ns) == before  # read, not rewritten
    assert sorted(p.name for p in cached.parent.iterdir()) == [cached.name]  # no temp files left


def _fresh(weights: Path, models_dir: Path, faces: np.ndarray) -> np.ndarray:
    embedder = create_nn4_embedder(str(weights), device="cpu", models_dir=str(models_dir))
    out = embedder.embed(faces)
    assert embedder.backend == "onnxruntime"
    return out


def test_corrupt_cached_export_is_rebuilt(faces: np.ndarray, weights: Path, models_dir: Path, ort_embedder,
                                          tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = next((models_dir / "cache").glob("*.onnx"))
    cached = tmp_path / "models" / "cache" / good.name
    cached.parent.mkdir(parents=True, mode=0o700)
    cached.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # a torn copy
    with caplog.at_level(logging.WARNING, logger="edged.embed.nn4.embedder.ort"):
        got = _fresh(weights, tmp_path / "models", faces)
    assert "cached nn4 export not usable" in caplog.text and "rebuilding" in caplog.text
    assert np.abs(got - eager(load_nn4(weights), faces)).max() <= TOLERANCE
    assert cached.stat().st_size == good.stat().st_size  # replaced by a whole export


def test_stale_or_forged_cached_export_is_rebuilt(faces: np.ndarray, weights: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A cached export of other weights is refused: by its metadata, and when the metadata lies, by its numbers."""
    ours = load_nn4(weights)
    digest = state_digest(ours.state_dict())
    other = random_model(11, faces)
    foreign = onnx.load_model_from_string(export_onnx(other))
    stale = OrtNN4(_with_metadata(foreign, state_digest(other.state_dict())), threads=1)
    with pytest.raises(ExportCheckError, match="made from other weights"):
        check_export(stale, ours, digest)
    cached = cache_path(tmp_path / "models" / "cache", digest)
    cached.parent.mkdir(parents=True, mode=0o700)
    cached.write_bytes(_with_metadata(foreign, digest))  # claims to be ours
    with caplog.at_level(logging.WARNING, logger="edged.embed.nn4.embedder.ort"):
        got = _fresh(weights, tmp_path / "models", faces)
    assert "differs from the torch module" in caplog.text
    assert np.abs(got - eager(ours, faces)).max() <= TOLERANCE


def _with_metadata(proto: onnx.ModelProto, digest: str) -> bytes:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for key, value in ((META_WEIGHTS, digest), (META_RECIPE, str(RECIPE_VERSION))):
        entry = copy.metadata_props.add()
        entry.key, entry.value = key, value
    return copy.SerializeToString()


def test_unwritable_cache_still_embeds(faces: np.ndarray, weights: Path, tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the models directory should be")
    with caplog.at_level(logging.WARNING, logger="edged.embed.nn4.embedder.ort"):
        got = _fresh(weights, blocker, faces[:2])
    assert "cannot cache the nn4 ONNX export" in caplog.text
    assert np.abs(got - eager(load_nn4(weights), faces[:2])).max() <= TOLERANCE


def test_plain_exports_for_peer_runtimes(faces: np.ndarray, tmp_path: Path) -> None:
    """ONNX Runtime gets torch's own export, OpenCV DNN the same with LRN as ONNX's LRN op; both are the network."""
    import cv2

    model = random_model(5, faces)
    expected = eager(model, faces)
    x = to_network_input(faces)
    path = export_plain_onnx(model, tmp_path / "plain.onnx")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    graph = onnx.load(str(path)).graph
    assert graph.input[0].name == PLAIN_INPUT and graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert "LRN" not in {node.op_type for node in graph.node}  # torch's decomposition, as exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {PLAIN_INPUT: x})[0] - expected).max() <= TOLERANCE

    path = export_plain_onnx(model, tmp_path / "plain-lrn.onnx", lrn_op=True)
    assert sum(node.op_type == "LRN" for node in onnx.load(str(path)).graph.node) == 2
    net = cv2.dnn.readNetFromONNX(str(path))
    net.setInput(x)
    assert np.abs(net.forward() - expected).max() <= TOLERANCE
    assert model.training is False and isinstance(model.lrn, torch.nn.LocalResponseNorm)  # left as it was


def test_faster_of_follows_the_faster_way_and_keeps_checking_the_other() -> None:
    chooser = FasterOf("all cores", "one core", window=3, warmup=2, explore_every=4)
    cost = {"all cores": 0.004, "one core": 0.009}
    picks = []
    for _ in range(40):
        how = chooser.choose()
        picks.append(how)
        chooser.record(how, cost[how])
    assert picks[:4].count("one core") == 2  # both measured first
    assert picks[4:].count("one core") == 9 and picks[-4:] == ["all cores"] * 3 + ["one core"]  # every 4th call
    cost["all cores"] = 0.02  # the second core got busy: within a window the choice flips
    tail = []
    for _ in range(12):
        how = chooser.choose()
        tail.append(how)
        chooser.record(how, cost[how])
    assert tail[-6:].count("one core") >= 4  # the rest are the every-4th-call retries
    assert chooser.medians()["all cores"] == pytest.approx(0.02)
    cost["all cores"] = 0.004  # free again: the first retry that sees it switches back
    back = []
    for _ in range(8):
        how = chooser.choose()
        back.append(how)
        chooser.record(how, cost[how])
    first_retry = back.index("all cores")
    assert first_retry < 4 and back[first_retry:first_retry + 3] == ["all cores"] * 3  # then the 4th retries


def test_backend_choice_and_config_errors() -> None:
    assert pick_backend("auto", "cpu")[0] == "onnxruntime"
    assert pick_backend("torch", "cpu")[0] == "torch"
    assert pick_backend("onnxruntime", "auto") == ("onnxruntime", torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"embedder\.backend: onnxruntime runs nn4 on the CPU only"):
        pick_backend("onnxruntime", "cuda")
    with pytest.raises(ConfigError, match=r"embedder\.backend: must be one of auto, torch, onnxruntime"):
        pick_backend("tensorrt", "cpu")
    cfg = parse_config("device_id: door\ncamera: {source: 0}\nembedder: {name: nn4, backend: torch}\n", "x.yaml")
    assert cfg.embedder.backend == "torch"
    with pytest.raises(ConfigError, match=r"x\.yaml: line 3: embedder\.backend"):
        parse_config("device_id: door\ncamera: {source: 0}\nembedder: {backend: tensorrt}\n", "x.yaml")


def test_no_onnxruntime_work_before_first_embed(weights: Path, tmp_path: Path) -> None:
    embedder = create_nn4_embedder(str(weights), device="cpu", models_dir=str(tmp_path / "models"))
    assert embedder.version.startswith("random@") and embedder.threshold == 0.9
    assert not (tmp_path / "models").exists() and embedder._ort is None
