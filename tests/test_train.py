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
