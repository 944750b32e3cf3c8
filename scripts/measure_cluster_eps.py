#!/usr/bin/env python3
"""Measure the DBSCAN radius of `edged unknowns cluster` (config unknowns.cluster_eps) on real faces.

    .venv/bin/python scripts/measure_cluster_eps.py [--lfw ../shared/data/lfw] [--samples 3] [--trials 10]

LFW (deep-funnelled) faces embedded with dlib through the face cache of `edged eval lfw` (filled on first
use, ~1 h on 2 cores; then seconds). A *visit* is `--samples` photos of one person (one unknown track's
best samples); its distance to another visit is `edged.gallery.unknowns.mean_link_distances` (mean
squared L2 over sample pairs). Printed:

1. distances of the LFW View 2 pairs (single photos): same person vs different people;
2. visit-to-visit distances: two disjoint visits of one person vs visits of two people;
3. door sites simulated with `edged.gallery.unknowns.dbscan_labels` at several eps: repeat visitors
   (2-5 visits each) among one-off strangers; pair precision (visits put together that are the same
   person), pair recall (visits of one person put together) and clusters holding more than one person.

`--link min` measures the alternative edged does not use (the nearest pair of samples) for comparison.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edged.eval.facecache import FaceCache, embed_images  # noqa: E402
from edged.gallery.unknowns import dbscan_labels, mean_link_distances  # noqa: E402
from edged.models.embedders import get_embedder  # noqa: E402

EPS_GRID = (0.07, 0.08, 0.09, 0.10, 0.11, 0.12, 0.13, 0.14, 0.15)
SITES = ((20, 60), (100, 400))  # (repeat visitors, one-off strangers)


def load(lfw: Path, cache_dir: str | None) -> tuple[dict[str, list[np.ndarray]], dict[str, np.ndarray]]:
    """Detected faces' embeddings per LFW person, and every image's embedding by file name."""
    images = sorted(str(p) for p in (lfw / "lfw-deepfunneled").glob("*/*.jpg"))
    with FaceCache.in_dir(cache_dir) as cache:
        found = embed_images(cache, images, get_embedder("dlib"))
    people: dict[str, list[np.ndarray]] = defaultdict(list)
    for path, vec in found.vectors.items():
        if found.detected[path]:
            people[Path(path).parent.name].append(vec)
    return people, {Path(path).name: vec for path, vec in found.vectors.items()}


def pair_distances(lfw: Path, vec_of: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    same, diff = [], []
    for line in (lfw / "pairs.txt").read_text().splitlines()[1:]:
        f = line.split()
        if len(f) == 3:
            a, b, into = f"{f[0]}_{int(f[1]):04d}.jpg", f"{f[0]}_{int(f[2]):04d}.jpg", same
        elif len(f) == 4:
            a, b, into = f"{f[0]}_{int(f[1]):04d}.jpg", f"{f[2]}_{int(f[3]):04d}.jpg", diff
        else:
            continue
        if a in vec_of and b in vec_of:
            into.append(float(np.sum((vec_of[a] - vec_of[b]) ** 2)))
    return np.array(same), np.array(diff)


def site(people: dict[str, list[np.ndarray]], rich: list[str], k: int, repeaters: int, strangers: int,
         rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    chosen = rng.choice(len(rich), repeaters, replace=False)
    groups, truth = [], []
    for pi in chosen:
        imgs = np.array(people[rich[pi]])
        order = rng.permutation(len(imgs))
        for v in range(min(len(imgs) // k, int(rng.integers(2, 6)))):
            groups.append(imgs[order[v * k:(v + 1) * k]])
            truth.append(int(pi))
    taken = {rich[p] for p in chosen}
    others = [n for n, v in people.items() if n not in taken and len(v) >= k]
    for j, oi in enumerate(rng.choice(len(others), strangers, replace=False)):
        imgs = np.array(people[others[oi]])
        groups.append(imgs[rng.permutation(len(imgs))[:k]])
        truth.append(-1 - j)
    return groups, np.array(truth)


def min_link_labels(groups: list[np.ndarray], eps: float) -> np.ndarray:
    """DBSCAN (min_samples 1) on the smallest squared L2 between two visits' samples (dense; for comparison)."""
    from sklearn.cluster import DBSCAN

    flat = np.concatenate(groups)
    owner = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    d = np.sum((flat[:, None, :] - flat[None, :, :]) ** 2, axis=-1)
    n = len(groups)
    dist = np.full((n, n), np.inf)
    np.minimum.at(dist, (owner[:, None].repeat(len(flat), 1), owner[None, :].repeat(len(flat), 0)), d)
    np.fill_diagonal(dist, 0.0)
    return DBSCAN(eps=eps, min_samples=1, metric="precomputed").fit_predict(np.minimum(dist, 4.0))


def scores(labels: np.ndarray, truth: np.ndarray) -> tuple[float, float, int]:
    iu = np.triu_indices(len(truth), 1)
    same = (truth[:, None] == truth[None, :])[iu]
    pred = (labels[:, None] == labels[None, :])[iu]
    tp, fp, fn = np.sum(pred & same), np.sum(pred & ~same), np.sum(~pred & same)
    impure = sum(len(set(truth[labels == c])) > 1 for c in set(labels))
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1), impure


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lfw", default=str(ROOT.parent / "shared" / "data" / "lfw"))
    ap.add_argument("--cache", help="face cache directory (default that of edged eval)")
    ap.add_argument("--samples", type=int, default=3, help="samples per visit (config unknowns.samples_per_visit)")
    ap.add_argument("--trials", type=int, default=10, help="simulated sites per size (the large one: a third)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--link", choices=("mean", "min"), default="mean", help="visit distance (edged: mean)")
    args = ap.parse_args()
    lfw, k = Path(args.lfw), args.samples
    people, vec_of = load(lfw, args.cache)
    same, diff = pair_distances(lfw, vec_of)
    print(f"LFW View 2 pairs (dlib, squared L2 on unit vectors): {len(same)} same, {len(diff)} different")
    print(f"  same person: median {np.median(same):.3f}, 90% within {np.quantile(same, 0.9):.3f}, "
          f"99% within {np.quantile(same, 0.99):.3f}")
    print(f"  different:   0.1% below {np.quantile(diff, 0.001):.3f}, 1% below {np.quantile(diff, 0.01):.3f}, "
          f"median {np.median(diff):.3f}")
    rng = np.random.default_rng(args.seed)
    rich = sorted(n for n, v in people.items() if len(v) >= 2 * k)
    s_d, d_d = [], []
    for name in rich:
        imgs = np.array(people[name])
        order = rng.permutation(len(imgs))
        other = rich[int(rng.integers(len(rich)))]
        if other == name:
            continue
        stranger = np.array(people[other])[rng.permutation(len(people[other]))[:k]]
        d = mean_link_distances([imgs[order[:k]], imgs[order[k:2 * k]], stranger])
        s_d.append(d[0, 1])
        d_d.append(d[0, 2])
    s_d, d_d = np.array(s_d), np.array(d_d)
    print(f"visits of {k} photos (mean link), {len(rich)} people with >= {2 * k} photos:")
    print(f"  same person: median {np.median(s_d):.3f}, 90% within {np.quantile(s_d, 0.9):.3f}, "
          f"99% within {np.quantile(s_d, 0.99):.3f}")
    print(f"  different:   0.1% below {np.quantile(d_d, 0.001):.3f}, 1% below {np.quantile(d_d, 0.01):.3f}, "
          f"median {np.median(d_d):.3f}")
    for repeaters, strangers in SITES:
        trials = args.trials if repeaters <= 20 else max(1, args.trials // 3)
        acc: dict[float, list[tuple[float, float, int]]] = defaultdict(list)
        for _ in range(trials):
            groups, truth = site(people, rich, k, repeaters, strangers, rng)
            for eps in EPS_GRID:
                labels = dbscan_labels(groups, eps) if args.link == "mean" else min_link_labels(groups, eps)
                acc[eps].append(scores(labels, truth))
        print(f"site: {repeaters} repeat visitors (2-5 visits) + {strangers} one-off strangers, {trials} trials")
        print("     eps  pair precision  pair recall  mixed clusters")
        for eps in EPS_GRID:
            p, r, m = np.mean(acc[eps], axis=0)
            print(f"    {eps:.2f}  {p:14.3f}  {r:11.3f}  {m:14.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
