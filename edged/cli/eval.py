"""`edged eval lfw`: the LFW View 2 verification protocol, with embeddings from the face cache."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from edged.cli.common import Context, embedder_option, json_option
from edged.distance import l2_normalize
from edged.eval.lfw import EvalError, Evaluation, Pair, evaluate, load_pairs, roc_by_unit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="accuracy on standard benchmarks")
    bench = p.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    bench.required = True
    q = bench.add_parser("lfw", help="LFW View 2 verification, leave-one-fold-out (as OpenFace's evaluation/lfw.py)")
    q.add_argument("--data", required=True, metavar="DIR", help="LFW images, one folder per person (lfw-deepfunneled)")
    q.add_argument("--pairs", required=True, metavar="FILE", help="View 2 pairs.txt")
    embedder_option(q)
    q.add_argument("--folds", default="1-10", metavar="SPEC",
                   help="folds to use, e.g. 1-10 (default), 6-10, 3 or 1,3,5; a single fold is split into 10 parts")
    q.add_argument("--flip", action="store_true",
                   help="embed each face and its mirror image and average them (test-time augmentation)")
    json_option(q)
    q.add_argument("--roc", metavar="PNG", help="also write a ROC plot to this PNG file")
    q.add_argument("--cache", metavar="DIR",
                   help="face cache directory (default $XDG_CACHE_HOME/edged, else ~/.cache/edged)")
    q.add_argument("--workers", type=int, metavar="N", help="processes for detection and dlib (default: CPU count)")
    q.set_defaults(func=cmd_eval_lfw)


def cmd_eval_lfw(ctx: Context) -> int:
    from edged.eval.facecache import FaceCache, analyse

    args = ctx.args
    start = time.monotonic()
    folds, pairs = load_pairs(args.pairs, args.folds)
    data = Path(args.data)
    if not data.is_dir():
        raise EvalError(f"--data {data}: not a directory")
    roc_path = _check_roc_path(args.roc)
    if args.workers is not None and args.workers < 1:
        raise EvalError(f"--workers {args.workers}: must be at least 1")
    paths = _image_paths(data, pairs, args.pairs)
    embedder = ctx.embedder(args.embedder)
    computed = 0
    with FaceCache.in_dir(args.cache) as cache, ctx.progress(len(paths), f"lfw {embedder.name}") as bar:

        def on_progress(done: int, total: int) -> None:
            nonlocal computed
            computed = max(computed, total)
            bar.total = total
            bar.update(done)

        sha_of = analyse(cache, paths, embedder_names=(), embedders=[embedder], flip=args.flip,
                         workers=args.workers, progress=on_progress)
        vectors = cache.embeddings(sha_of.values(), embedder.version)
        if args.flip:
            mirrored = cache.embeddings(sha_of.values(), embedder.version, "flip")
            vectors = {sha: l2_normalize(v + mirrored[sha]) for sha, v in vectors.items() if sha in mirrored}
        faces = cache.faces(sha_of.values())
    lost = [p for p in paths if sha_of.get(p) not in vectors]
    if lost:
        raise EvalError(f"{lost[0]}: could not be analysed (unreadable image?); {len(lost)} of {len(paths)} images")
    vec_of = {p: vectors[sha_of[p]] for p in paths}
    a = np.array([vec_of[str(data / pr.a)] for pr in pairs])
    b = np.array([vec_of[str(data / pr.b)] for pr in pairs])
    dist = np.sum((a - b) ** 2, axis=1, dtype=np.float64)
    same = np.array([pr.same for pr in pairs])
    fold_of = np.array([pr.fold for pr in pairs])
    result = evaluate(dist, same, fold_of, folds)
    fallbacks = sum(1 for p in paths if not faces[sha_of[p]].detected)
    if roc_path:
        _write_roc(roc_path, dist, same, fold_of, folds, result, embedder.name)
    report = _report(result, embedder, fallbacks, len(paths), computed, time.monotonic() - start, roc_path)
    report["flip"] = bool(args.flip)
    if ctx.json:
        ctx.emit_json(report)
    else:
        _print_table(ctx, report)
    return 0


def _check_roc_path(roc: str | None) -> Path | None:
    if roc is None:
        return None
    path = Path(roc)
    if path.suffix.lower() != ".png":
        raise EvalError(f"--roc {roc}: the plot is written as PNG; give a file name ending in .png")
    if not path.parent.resolve().is_dir():
        raise EvalError(f"--roc {roc}: directory {path.parent} does not exist")
    return path


def _image_paths(data: Path, pairs: list[Pair], pairs_file: str) -> list[str]:
    """Distinct image paths of the pairs, all checked to exist."""
    first_line: dict[str, int] = {}
    for pr in pairs:
        for rel in (pr.a, pr.b):
            first_line.setdefault(str(data / rel), pr.line)
    missing = [p for p in first_line if not os.path.isfile(p)]
    if missing:
        raise EvalError(f"{missing[0]}: no such image (pair at {pairs_file}:{first_line[missing[0]]}); "
                        f"{len(missing)} of {len(first_line)} images missing")
    return sorted(first_line)


def _write_roc(path: Path, dist: np.ndarray, same: np.ndarray, fold_of: np.ndarray, folds: list[int],
               result: Evaluation, embedder_name: str) -> None:
    from edged.eval.plots import plot_roc

    curves = [(fpr, tpr) for _, fpr, tpr in roc_by_unit(dist, same, fold_of, folds)]
    which = f"fold {folds[0]} in {len(curves)} parts" if len(folds) == 1 else f"folds {fold_spec(folds)}"
    title = (f"LFW View 2, {embedder_name}, {which}: accuracy {result.accuracy_mean:.4f} "
             f"+- {result.accuracy_std:.4f}")
    legend = f"mean ROC (AUC {result.auc:.4f}, {result.pairs} pairs)"
    plot_roc(path, curves, title, legend)




def fold_spec(folds: list[int]) -> str:
    """[1, 2, 3, 5] -> '1-3,5'."""
    runs: list[list[int]] = []
    for f in folds:
        if runs and f == runs[-1][1] + 1:
            runs[-1][1] = f
        else:
            runs.append([f, f])
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in runs)


def _report(result: Evaluation, embedder: object, fallbacks: int, images: int, computed: int,
            seconds: float, roc: Path | None) -> dict[str, object]:
    return {
        "embedder": getattr(embedder, "name", ""),
        "version": getattr(embedder, "version", ""),
        "folds": result.folds,
        "accuracy_mean": round(result.accuracy_mean, 6),
        "accuracy_std": round(result.accuracy_std, 6),
        "auc": round(result.auc, 6),
        "threshold": round(result.threshold, 6),
        "fallbacks": fallbacks,
        "pairs": result.pairs,
        "images": images,
        "computed": computed,
        "per_fold": [{"fold": u.fold, "part": u.part, "threshold": round(u.threshold, 6),
                      "accuracy": round(u.accuracy, 6), "pairs": u.pairs} for u in result.units],
        "seconds": round(seconds, 2),
        "roc": str(roc) if roc else None,
    }


def _print_table(ctx: Context, r: dict) -> None:
    flip = ", plain+mirrored average" if r["flip"] else ""
    ctx.print(f"LFW View 2, embedder {r['embedder']} ({r['version']}{flip}), folds {fold_spec(r['folds'])}: "
              f"{r['pairs']} pairs, {r['images']} images, {r['fallbacks']} centred fallbacks (no face found)")
    ctx.print(f"{'held out':>9} {'pairs':>6} {'threshold':>10} {'accuracy':>9}")
    for u in r["per_fold"]:
        name = str(u["fold"]) if u["part"] is None else f"{u['fold']}.{u['part']}"
        ctx.print(f"{name:>9} {u['pairs']:>6} {u['threshold']:>10.4f} {u['accuracy']:>9.4f}")
    ctx.print(f"accuracy {r['accuracy_mean']:.4f} +- {r['accuracy_std']:.4f}   AUC {r['auc']:.4f}   "
              f"mean threshold {r['threshold']:.4f} (squared L2, unit vectors)")
    if r["roc"]:
        ctx.print(f"ROC plot: {r['roc']}")
