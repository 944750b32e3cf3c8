"""Training infrastructure: the honest LFW split, triplet mining, a tiny real distillation run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edged.eval.split import EVAL_FOLDS, lfw_people, lfw_split, people_by_fold
from edged.train.triplet import select_triplets, triplet_loss


def test_split_is_people_disjoint(lfw_dir):
    people = lfw_people(lfw_dir / "lfw-deepfunneled")
    split = lfw_split(lfw_dir / "pairs.txt", people)
    folds = people_by_fold(lfw_dir / "pairs.txt")
    assert len(folds) == 10
    held = set().union(*(folds[f] for f in EVAL_FOLDS))
    assert split.eval_people == held
    assert not split.train_people & split.eval_people
    # every train person is in folds 1-5 or in no fold at all
    for person in split.train_people:
        assert split.fold_of.get(person, 0) <= 5
    assert split.train_people | split.eval_people == set(people) | held
    # LFW View 2 folds are people-disjoint among themselves too
    for a in range(1, 11):
        for b in range(a + 1, 11):
            assert not folds[a] & folds[b]


def test_malformed_pairs_file(tmp_path):
    from edged.errors import EdgedError

    bad = tmp_path / "pairs.txt"
    bad.write_text("10 300\nonly one line\n")
    with pytest.raises(EdgedError, match="expected 6000 pair lines"):
        people_by_fold(bad)


def _circle(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_semi_hard_negative_is_chosen():
    # anchor at 0 deg, positive at 30 deg; negatives: hard (10 deg), semi-hard (35, 40 deg), easy (180 deg)
    emb = torch.tensor([_circle(0), _circle(30), _circle(10), _circle(40), _circle(35), _circle(180)])
    labels = torch.tensor([0, 0, 1, 2, 3, 4])
    trip = select_triplets(emb, labels, margin=0.2)
    first = [t for t in trip.tolist() if t[0] == 0 and t[1] == 1]
    assert first == [[0, 1, 4]]  # 35 deg: farther than the positive, inside the margin, the closest such
    d = lambda i, j: float((emb[i] - emb[j]).pow(2).sum())  # noqa: E731
    assert d(0, 1) < d(0, 4) < d(0, 1) + 0.2


def test_without_semi_hard_the_closest_farther_negative():
    emb = torch.tensor([_circle(0), _circle(30), _circle(10), _circle(120), _circle(180)])
    labels = torch.tensor([0, 0, 1, 2, 3])
    trip = select_triplets(emb, labels, margin=0.2)
    assert [t for t in trip.tolist() if t[:2] == [0, 1]] == [[0, 1, 3]]
    loss = triplet_loss(emb, trip, 0.2)
    assert loss.item() >= 0.0


def test_no_triplets_without_pairs():
    emb = torch.tensor([_circle(0), _circle(90), _circle(180)])
    assert len(select_triplets(emb, torch.tensor([0, 1, 2]))) == 0


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory, lfw_dir, openface_dir):
    from edged.eval.facecache import FaceCache
    from edged.train.prepare import build_distill_set

    root = tmp_path_factory.mktemp("tinylfw")
    # a miniature LFW: 6 people from folds 1-5 and 2 from folds 6-10, real images
    folds = people_by_fold(lfw_dir / "pairs.txt")
    people = sorted(p for p in folds[1] if (lfw_dir / "lfw-deepfunneled" / p).is_dir())[:6]
    held = sorted(folds[7])[:2]
    for p in people + held:
        (root / p).symlink_to(lfw_dir / "lfw-deepfunneled" / p)
    extra = tmp_path_factory.mktemp("extra")
    for f in openface_dir.glob("*.jpg"):
        (extra / f.name).symlink_to(f)
    cache = FaceCache(tmp_path_factory.mktemp("cache") / "faces.sqlite")
    data, report = build_distill_set(cache, root, lfw_dir / "pairs.txt", [extra], workers=2)
    return data, report, held


def test_prepare_excludes_eval_people(tiny_set):
    data, report, held = tiny_set
    assert report.lfw_eval_people >= 2 and report.faces == len(data) > 10
    assert not any(f"/{p}/" in s for s in data.sources for p in held)
    assert data.canvases.dtype == np.uint8 and data.canvases.shape[1:] == (128, 128, 3)
    assert np.allclose(np.linalg.norm(data.teacher, axis=1), 1, atol=1e-5)


def test_two_epochs_lower_the_loss_and_checkpoint_loads(tiny_set, tmp_path):
    from edged.embed.nn4.net import NN4Small2
    from edged.train.data import AugmentConfig, centre_crop
    from edged.train.distill import distill_batches, distill_loss, make_distill_loss
    from edged.train.loop import LoopConfig, run_training

    torch.set_num_threads(2)
    data, _, _ = tiny_set
    x = torch.from_numpy(np.stack([centre_crop(c) for c in data.canvases])).permute(0, 3, 1, 2).float() / 255
    target = torch.from_numpy(data.teacher)
    torch.manual_seed(0)
    model = NN4Small2().eval()
    with torch.no_grad():
        before = float(distill_loss(model(x), target, 1.0)[0])
    cfg = LoopConfig(epochs=2, lr=2e-3, warmup_steps=1, seed=0)
    batch = 8
    history = run_training(model, cfg, tmp_path, len(data) // batch,
                           lambda e, rng: distill_batches(data, batch, AugmentConfig(), rng),
                           make_distill_loss(1.0))
    with torch.no_grad():
        after = float(distill_loss(model(x), target, 1.0)[0])
    assert len(history["epochs"]) == 2
    assert after < before, (before, after)
    state = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=False)
    reloaded = NN4Small2()
    reloaded.load_state_dict(state["model"])
    reloaded.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(x[:4]), model(x[:4]), atol=1e-5)
    # resuming a finished run trains no further epochs
    again = run_training(reloaded, cfg, tmp_path, len(data) // batch,
                         lambda e, rng: distill_batches(data, batch, AugmentConfig(), rng), make_distill_loss(1.0))
    assert len(again["epochs"]) == 2


# ---- int8 (edged train quantize, embedder.backend onnxruntime-int8) ----

@pytest.fixture(scope="module")
def quantized(tiny_set, tmp_path_factory):
    """The shipped v1 weights copied to a folder, quantised by the CLI with calibration faces of the tiny set."""
    import json
    import shutil

    from tests.conftest import ROOT, run_cli

    data, _, _ = tiny_set
    root = tmp_path_factory.mktemp("int8")
    data.save(root / "set.npz")
    weights = root / "v1.pt"
    shutil.copy(ROOT / "models" / "nn4.small2.edged-v1.pt", weights)
    done = run_cli("train", "quantize", "--weights", str(weights), "--data", str(root / "set.npz"),
                   "--faces", "16", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    return root, weights, json.loads(done.stdout), len(data)


@pytest.fixture(scope="module")
def aligned_faces(openface_dir):
    from edged.vision.align import OPENFACE_96, FaceAligner
    from edged.vision.detect import FaceDetector
    from edged.vision.imageio import load_image

    detector, aligner = FaceDetector("hog", upsample=0), FaceAligner(OPENFACE_96)
    crops = []
    for name in ("lennon-1.jpg", "lennon-2.jpg", "clapton-1.jpg", "clapton-2.jpg", "carell.jpg", "adams.jpg"):
        image = load_image(openface_dir / name)
        crops += [aligner.align(image, box) for box in detector.detect(image)]
    return np.stack(crops)


def test_quantize_writes_an_int8_model_beside_the_weights(quantized):
    root, _, report, n = quantized
    assert report["out"] == str(root / "v1.int8.onnx") and (root / "v1.int8.onnx").is_file()
    assert report["calibration_faces"] == 16 and report["check_faces"] == min(400, n - 16) > 0
    # a quarter of the fp32 export's size, and embeddings within quantisation error of it
    assert report["bytes"] < 6_000_000
    assert report["sq_l2_to_fp32"]["max"] < 0.01, report


def test_int8_backend_embeds_real_faces_like_fp32(quantized, aligned_faces, tmp_path):
    from edged.distance import squared_l2
    from edged.models.embedders import create_nn4_embedder

    _, weights, _, _ = quantized
    fp32 = create_nn4_embedder(str(weights), device="cpu", backend="onnxruntime", models_dir=str(tmp_path))
    int8 = create_nn4_embedder(str(weights), device="cpu", backend="onnxruntime-int8", models_dir=str(tmp_path))
    a, b = fp32.embed(aligned_faces), int8.embed(aligned_faces)
    assert int8.backend == "onnxruntime-int8" and np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-5)
    assert float(((a - b) ** 2).sum(axis=1).max()) < 0.01
    # who is nearer to whom is kept: the pairwise distance matrices agree to well below any threshold (~0.07)
    da, db = squared_l2(a, a), squared_l2(b, b)
    assert float(np.abs(da - db).max()) < 0.02
    assert (np.argsort(da, axis=1)[:, 1] == np.argsort(db, axis=1)[:, 1]).mean() >= 0.9
    # the same model for galleries, kept apart in the face cache
    assert int8.version == fp32.version and int8.cache_version == fp32.version + "+int8"
    assert fp32.cache_version == fp32.version


def test_int8_backend_refuses_a_missing_or_foreign_model(quantized, aligned_faces, tmp_path):
    import shutil

    from edged.embed.nn4.quantize import QuantizeError
    from edged.embed.nn4.weights import save_weights
    from edged.models import store
    from edged.models.embedders import create_nn4_embedder
    from tests.test_nn4_weights import random_state_dict

    root, _, _, _ = quantized
    other = tmp_path / "other.pt"
    save_weights(other, random_state_dict(3), name="other", threshold=0.9, alignment=store.NN4_ALIGNMENT)
    embedder = create_nn4_embedder(str(other), device="cpu", backend="onnxruntime-int8", models_dir=str(tmp_path))
    with pytest.raises(QuantizeError, match=r"other\.int8\.onnx: no int8 model .*edged train quantize"):
        embedder.embed(aligned_faces[:1])
    shutil.copy(root / "v1.int8.onnx", tmp_path / "other.int8.onnx")  # made from the v1 weights, not these
    embedder = create_nn4_embedder(str(other), device="cpu", backend="onnxruntime-int8", models_dir=str(tmp_path),
                                   threads=1)
    with pytest.raises(QuantizeError, match="made from other weights"):
        embedder.embed(aligned_faces[:1])
    (tmp_path / "other.int8.onnx").write_bytes(b"not onnx")
    embedder = create_nn4_embedder(str(other), device="cpu", backend="onnxruntime-int8", models_dir=str(tmp_path),
                                   threads=2)
    with pytest.raises(QuantizeError, match="not a usable ONNX model"):
        embedder.embed(aligned_faces[:1])


def test_an_int8_model_quantised_with_full_range_weights_is_refused(quantized, aligned_faces, tmp_path):
    """Files made before `reduce_range` (saturating on CPUs without VNNI) name the command that remakes them."""
    import shutil

    import onnx

    from edged.embed.nn4.quantize import META_INT8_RECIPE, QuantizeError
    from edged.models.embedders import create_nn4_embedder
    from tests.conftest import run_cli

    root, weights, _, _ = quantized
    shutil.copy(weights, tmp_path / "v1.pt")
    model = onnx.load(str(root / "v1.int8.onnx"))
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != META_INT8_RECIPE]
    assert len(kept) == len(model.metadata_props) - 1
    del model.metadata_props[:]
    for key, value in kept:
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(tmp_path / "v1.int8.onnx"))
    embedder = create_nn4_embedder(str(tmp_path / "v1.pt"), device="cpu", backend="onnxruntime-int8",
                                   models_dir=str(tmp_path))
    with pytest.raises(QuantizeError, match=r"v1\.int8\.onnx: quantised by an older edged .*edged train quantize"):
        embedder.embed(aligned_faces[:1])
    # check-config says so before the daemon is started
    config = tmp_path / "edged.yaml"
    config.write_text(f"device_id: door\ncamera: {{source: '0'}}\nmodels: {{dir: {tmp_path}}}\n"
                      f"embedder: {{name: nn4, weights: {tmp_path / 'v1.pt'}, backend: onnxruntime-int8}}\n")
    done = run_cli("check-config", str(config))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"edged: error: {config}: embedder.backend: {tmp_path / 'v1.int8.onnx'}: quantised "
                                  "by an older edged"), done.stderr


def test_quantize_refuses_bad_input_in_one_line(quantized, tmp_path):
    from tests.conftest import run_cli

    root, weights, _, n = quantized
    bad = tmp_path / "set.npz"
    bad.write_text("not a training set")
    cases = [(["--data", str(root / "set.npz"), "--faces", "5"], "need at least 16 calibration faces"),
             (["--data", str(bad)], "not a training set made by 'edged train prepare'"),
             (["--data", str(root / "set.npz"), "--faces", str(n)], f"{n} faces, need more than --faces {n}")]
    for extra, message in cases:
        done = run_cli("train", "quantize", "--weights", str(weights), "--out", str(tmp_path / "x.onnx"), *extra)
        assert done.returncode == 1 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
        assert not (tmp_path / "x.onnx").exists()


def test_shipped_int8_model_is_that_of_the_shipped_weights(aligned_faces, tmp_path):
    from edged.models.embedders import create_nn4_embedder

    fp32 = create_nn4_embedder("nn4.small2.edged-v1", device="cpu", backend="onnxruntime", models_dir=str(tmp_path))
    int8 = create_nn4_embedder("nn4.small2.edged-v1", device="cpu", backend="onnxruntime-int8",
                               models_dir=str(tmp_path))
    d = ((fp32.embed(aligned_faces) - int8.embed(aligned_faces)) ** 2).sum(axis=1)
    assert int8.backend == "onnxruntime-int8" and float(d.max()) < 0.005, d
