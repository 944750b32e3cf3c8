"""The LFW View 2 protocol (edged.evaluate) and the ROC drawing, on the real pairs.txt and on distances
whose right answers are known by construction or by brute force."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from edged.eval.lfw import (
    EvalError,
    accuracy_at,
    auc_score,
    best_threshold,
    evaluate,
    held_out_units,
    image_path,
    load_pairs,
    parse_folds,
    parse_pairs,
    roc_points,
    tpr_at,
)
from edged.eval.plots import FOLD_COLOUR, MEAN_COLOUR, mean_roc, plot_roc, roc_figure, roc_tpr_floor


@pytest.fixture(scope="module")
def pairs_lines(lfw_dir) -> list[str]:
    return (lfw_dir / "pairs.txt").read_text().splitlines()


# ---- fold selection ----

@pytest.mark.parametrize(("spec", "expected"), [
    ("1-10", list(range(1, 11))), ("6-10", [6, 7, 8, 9, 10]), ("3", [3]), ("1,3,5", [1, 3, 5]),
    ("1-3,7", [1, 2, 3, 7]), ("5,1,5", [1, 5]), (" 2 - 4 ", [2, 3, 4]),
])
def test_parse_folds(spec, expected):
    assert parse_folds(spec, 10) == expected


@pytest.mark.parametrize(("spec", "why"), [
    ("0-3", "numbered 1 to 10"), ("11", "numbered 1 to 10"), ("5-2", "backwards"), ("a", "expected fold numbers"),
    ("", "expected fold numbers"), ("1,,2", "expected fold numbers"),
])
def test_parse_folds_rejects(spec, why):
    with pytest.raises(EvalError, match=why):
        parse_folds(spec, 10)


# ---- pairs.txt ----

def test_real_pairs_file_folds_and_images(lfw_dir, pairs_lines):
    folds, pairs = load_pairs(lfw_dir / "pairs.txt", "1-10")
    assert folds == list(range(1, 11))
    assert len(pairs) == 6000
    for f in folds:
        mine = [p for p in pairs if p.fold == f]
        assert [p.same for p in mine] == [True] * 300 + [False] * 300
    # fold 6 starts at file line 3002 (header + 5 folds of 600): check it against the raw text
    first6 = next(p for p in pairs if p.fold == 6)
    name, n1, n2 = pairs_lines[3001].split("\t")
    assert first6.line == 3002
    assert (first6.a, first6.b) == (f"{name}/{name}_{int(n1):04d}.jpg", f"{name}/{name}_{int(n2):04d}.jpg")
    last = pairs[-1]
    n1a, n1b, n2a, n2b = pairs_lines[6000].split("\t")
    assert (last.a, last.b, last.same, last.line) == (image_path(n1a, int(n1b)), image_path(n2a, int(n2b)), False, 6001)
    # every image of fold 1 exists under the deep-funneled tree
    data = lfw_dir / "lfw-deepfunneled"
    assert all((data / p.a).is_file() and (data / p.b).is_file() for p in pairs if p.fold == 1)
    # people are disjoint across folds (LFW's design): a sanity check that folds were cut at the right lines
    people = [{x.split("/")[0] for p in pairs if p.fold == f for x in (p.a, p.b)} for f in folds]
    assert all(not (people[i] & people[j]) for i, j in itertools.combinations(range(10), 2))


def test_unselected_folds_are_never_parsed(pairs_lines, tmp_path):
    lines = list(pairs_lines)
    for i in range(1, 1 + 5 * 600):  # folds 1-5 become garbage
        lines[i] = "garbage that is not a pair"
    path = tmp_path / "pairs.txt"
    path.write_text("\n".join(lines) + "\n")
    folds, pairs = load_pairs(path, "6-10")
    assert folds == [6, 7, 8, 9, 10] and len(pairs) == 3000
    assert min(p.line for p in pairs) == 3002
    with pytest.raises(EvalError, match=r"pairs.txt:2: expected a matched pair"):
        load_pairs(path, "1-10")


@pytest.mark.parametrize(("text", "why"), [
    ("", "empty pairs file"),
    ("1100\nA\t1\t2\n", r":1: expected the View 2 header"),
    ("1\t2\nA\t1\t2\nA\t1\t3\nA\t1\tB\t1\n", r":5: missing line \(fold 1"),
    ("1\t1\nA\t1\nA\t1\tB\t1\n", r":2: expected a matched pair"),
    ("1\t1\nA\t1\t2\nA\t1\tB\tx\n", r":3: expected a mismatched pair"),
])
def test_bad_pairs_files(tmp_path, text, why):
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    with pytest.raises(EvalError, match=why):
        load_pairs(path, "1")


def test_missing_pairs_file(tmp_path):
    with pytest.raises(EvalError, match="no such pairs file"):
        load_pairs(tmp_path / "nope.txt")


def test_parse_pairs_checks_requested_folds():
    with pytest.raises(EvalError, match="fold 3 does not exist"):
        parse_pairs("2\t1\nA\t1\t2\nA\t1\tB\t1\n", "p", [3])


# ---- threshold selection ----

def test_best_threshold_separable():
    dist = np.array([0.1, 0.2, 0.3, 0.5, 0.6])
    same = np.array([True, True, True, False, False])
    threshold, acc = best_threshold(dist, same)
    assert threshold == pytest.approx(0.4) and acc == 1.0


def _brute_force_best(dist: np.ndarray, same: np.ndarray) -> float:
    """Best accuracy of `dist < t` over every t that can make a difference (written without sorting tricks)."""
    values = sorted(set(dist.tolist()))
    candidates = [values[0] - 1.0, values[-1] + 1.0] + [(a + b) / 2 for a, b in itertools.pairwise(values)]
    return max(float(np.mean((dist < t) == same)) for t in candidates)


@pytest.mark.parametrize("seed", range(6))
def test_best_threshold_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 120
    same = rng.random(n) < 0.5
    dist = np.where(same, rng.normal(0.8, 0.3, n), rng.normal(1.3, 0.3, n)).clip(0, 4)
    dist[:10] = np.round(dist[:10], 1)  # some ties
    dist[10:14] = dist[14]
    threshold, acc = best_threshold(dist, same)
    assert acc == pytest.approx(_brute_force_best(dist, same))
    assert accuracy_at(dist, same, threshold) == pytest.approx(acc)
    # OpenFace's grid scan (0.01 steps, stopping at the first drop) never does better on the same pairs
    grid_best = 0.0
    for t in np.arange(0, 4, 0.01):
        a = accuracy_at(dist, same, t)
        if a < grid_best:
            break
        grid_best = a
    assert grid_best <= acc + 1e-12


def test_best_threshold_all_one_kind():
    threshold, acc = best_threshold(np.array([0.2, 0.4]), np.array([True, True]))
    assert acc == 1.0 and threshold > 0.4
    threshold, acc = best_threshold(np.array([0.2, 0.4]), np.array([False, False]))
    assert acc == 1.0 and threshold <= 0.2


# ---- leave-one-fold-out ----

def _synthetic(rng: np.random.Generator, folds: int = 10, n: int = 30) -> tuple[np.ndarray, ...]:
    same = np.tile(np.r_[np.ones(n, bool), np.zeros(n, bool)], folds)
    fold_of = np.repeat(np.arange(1, folds + 1), 2 * n)
    dist = np.where(same, rng.normal(0.6, 0.2, len(same)), rng.normal(1.2, 0.2, len(same))).clip(0, 4)
    return dist, same, fold_of


def test_held_out_threshold_ignores_its_own_fold():
    dist, same, fold_of = _synthetic(np.random.default_rng(1))
    base = evaluate(dist, same, fold_of, range(1, 11))
    shifted = dist.copy()
    shifted[fold_of == 3] += 0.5  # fold 3 now looks very different
    moved = evaluate(shifted, same, fold_of, range(1, 11))
    by_fold = {u.fold: u for u in base.units}
    moved_by_fold = {u.fold: u for u in moved.units}
    assert moved_by_fold[3].threshold == by_fold[3].threshold  # chosen on folds 1,2,4..10 only
    assert moved_by_fold[3].accuracy < by_fold[3].accuracy
    assert any(moved_by_fold[f].threshold != by_fold[f].threshold for f in by_fold if f != 3)


def test_each_fold_scored_with_threshold_from_the_others():
    dist, same, fold_of = _synthetic(np.random.default_rng(2))
    result = evaluate(dist, same, fold_of, range(1, 11))
    assert [u.fold for u in result.units] == list(range(1, 11))
    for u in result.units:
        train = fold_of != u.fold
        assert u.threshold == pytest.approx(best_threshold(dist[train], same[train])[0])
        test = fold_of == u.fold
        assert u.accuracy == pytest.approx(np.mean((dist[test] < u.threshold) == same[test]))
        assert u.pairs == 60
    accs = [u.accuracy for u in result.units]
    assert result.accuracy_mean == pytest.approx(np.mean(accs))
    assert result.accuracy_std == pytest.approx(np.std(accs))
    assert result.threshold == pytest.approx(np.mean([u.threshold for u in result.units]))
    assert result.pairs == 600


def test_selected_folds_only():
    dist, same, fold_of = _synthetic(np.random.default_rng(3))
    poisoned = dist.copy()
    poisoned[fold_of <= 5] = 3.9  # folds 1-5 would wreck any threshold chosen with them
    a = evaluate(dist, same, fold_of, [6, 7, 8, 9, 10])
    b = evaluate(poisoned, same, fold_of, [6, 7, 8, 9, 10])
    assert a == b
    assert a.pairs == 300 and a.folds == [6, 7, 8, 9, 10]


def test_single_fold_split_into_ten_stratified_parts():
    same = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    fold_of = np.full(600, 4)
    units = held_out_units(fold_of, same, [4])
    assert [(f, p) for f, p, _ in units] == [(4, k) for k in range(1, 11)]
    seen = np.concatenate([idx for _, _, idx in units])
    assert sorted(seen.tolist()) == list(range(600))
    for _, _, idx in units:
        assert len(idx) == 60 and same[idx].sum() == 30


def test_single_fold_evaluation():
    rng = np.random.default_rng(4)
    dist, same, fold_of = _synthetic(rng, folds=1, n=300)
    fold_of[:] = 7
    result = evaluate(dist, same, fold_of, [7])
    assert len(result.units) == 10 and all(u.pairs == 60 and u.fold == 7 for u in result.units)
    assert [u.part for u in result.units] == list(range(1, 11))
    assert 0.9 < result.accuracy_mean <= 1.0


def test_single_fold_too_small():
    with pytest.raises(EvalError, match="too few pairs"):
        evaluate(np.array([0.1, 0.9]), np.array([True, False]), np.array([1, 1]), [1])


# ---- AUC and ROC ----

def test_auc_is_probability_same_pair_is_closer():
    rng = np.random.default_rng(5)
    same = rng.random(80) < 0.5
    dist = np.where(same, rng.normal(0.7, 0.3, 80), rng.normal(1.0, 0.3, 80))
    pos, neg = dist[same], dist[~same]
    wins = sum(1.0 if p < q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    assert auc_score(dist, same) == pytest.approx(wins / (len(pos) * len(neg)))
    fpr, tpr = roc_points(dist, same)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(auc_score(dist, same))


def test_tpr_at_steps():
    fpr, tpr = np.array([0.0, 0.0, 0.5, 1.0]), np.array([0.0, 0.6, 0.9, 1.0])
    assert tpr_at(fpr, tpr, np.array([0.0, 0.25, 0.5, 0.99, 1.0])).tolist() == [0.6, 0.6, 0.9, 0.9, 1.0]


def _rendered(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[:, :, :3]


def _colour_near(fig, img: np.ndarray, fpr: float, tpr: float, colour: tuple[int, int, int]) -> bool:
    """Whether `colour` is drawn within 2 pixels of the point (fpr, tpr) of the plot."""
    x, y = fig.axes[0].transData.transform((fpr, tpr))
    x, y = round(float(x)), round(img.shape[0] - float(y))
    patch = img[y - 2:y + 3, x - 2:x + 3].reshape(-1, 3).astype(int)
    return bool((np.abs(patch - np.array(colour)).sum(axis=1) < 60).any())


@pytest.mark.pure
def test_roc_plot_draws_curves_where_they_belong(tmp_path):
    fold_curves = [(np.array([0.0, 0.01, 0.1, 1.0]), np.array([0.0, 0.5, 0.8, 1.0]))] * 3
    fig = roc_figure(fold_curves, "title", "mean")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlim() == pytest.approx((1e-3, 1.0))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["mean", "held-out folds", "chance"]
    img = _rendered(fig)
    assert img.shape == (600, 800, 3)
    # identical folds: the mean equals them and is drawn on top, at TPR 0.5 for FPR in [0.01, 0.1)
    assert _colour_near(fig, img, 0.03, 0.5, MEAN_COLOUR)
    assert _colour_near(fig, img, 0.3, 0.8, MEAN_COLOUR)
    assert not _colour_near(fig, img, 0.03, 0.2, MEAN_COLOUR)
    # two different folds: grey fold lines where they differ from the mean
    other = [(np.array([0.0, 0.001, 1.0]), np.array([0.0, 0.9, 1.0])), fold_curves[0]]
    fig = roc_figure(other, "title", "mean")
    img = _rendered(fig)
    assert _colour_near(fig, img, 0.03, 0.9, FOLD_COLOUR) and _colour_near(fig, img, 0.03, 0.7, MEAN_COLOUR)
    # written as an 800x600 PNG; other curves give another picture
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    plot_roc(one, fold_curves, "title", "mean")
    plot_roc(two, other, "title", "mean")
    a, b = cv2.imread(str(one)), cv2.imread(str(two))
    assert a is not None and a.shape == (600, 800, 3) and one.stat().st_size > 10_000
    assert b is not None and np.mean(np.any(a != b, axis=2)) > 0.002


@pytest.mark.pure
def test_roc_mean_is_the_mean_of_the_step_curves():
    curves = [(np.array([0.0, 0.0, 0.002, 1.0]), np.array([0.0, 0.93, 0.99, 1.0])),
              (np.array([0.0, 0.0, 0.01, 1.0]), np.array([0.0, 0.74, 0.98, 1.0]))]
    grid = np.array([0.001, 0.002, 0.005, 0.01, 0.5, 1.0])
    assert mean_roc(curves, grid) == pytest.approx([0.835, 0.865, 0.865, 0.985, 0.985, 1.0])
    ax = roc_figure(curves, "title", "mean").axes[0]
    [mean] = [line for line in ax.get_lines() if line.get_linewidth() == 2]
    assert mean.get_drawstyle() == "steps-post"
    xs, ys = mean.get_xdata(), mean.get_ydata()
    assert xs.min() == pytest.approx(1e-3) and xs.max() == 1.0  # FPR 0 is drawn at the left edge
    at = lambda f: ys[np.searchsorted(xs, f, side="right") - 1]  # noqa: E731
    assert [at(f) for f in grid] == pytest.approx(mean_roc(curves, grid).tolist())


@pytest.mark.pure
def test_roc_axis_zooms_to_the_curves():
    high = [(np.array([0.0, 0.0, 0.002, 1.0]), np.array([0.0, 0.93, 0.99, 1.0])),
            (np.array([0.0, 0.0, 0.01, 1.0]), np.array([0.0, 0.74, 0.98, 1.0]))]
    assert roc_tpr_floor(high) == pytest.approx(0.7)
    assert roc_tpr_floor([(np.array([0.0, 1.0]), np.array([0.0, 1.0]))]) == 0.0
    assert roc_tpr_floor([(np.array([0.0, 0.0005, 1.0]), np.array([0.0, 0.995, 1.0]))]) == 0.9
    fig = roc_figure(high, "title", "mean")
    lo, hi = fig.axes[0].get_ylim()
    assert lo == pytest.approx(0.7) and 1.0 <= hi < 1.01
    img = _rendered(fig)
    assert _colour_near(fig, img, 0.005, 0.865, MEAN_COLOUR)  # mean of 0.99 and 0.74 there


def test_selected_fold_without_pairs():
    dist, same, fold_of = _synthetic(np.random.default_rng(6), folds=3)
    with pytest.raises(EvalError, match="no pairs in fold 4"):
        evaluate(dist, same, fold_of, [1, 2, 4])
