"""`edged eval lfw`: the LFW View 2 verification protocol, with embeddings from the face cache."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edged.cli.common import Context, embedder_option, json_option
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

    q = bench.add_parser("openset", help="open-set identification on LFW as at a door: DIR at FPIR, strangers named",
                         description="Enroll k faces of N LFW people (those with >= 4 faces), probe with their other "
                                     "faces and with every face of everyone else (strangers); report the share of "
                                     "strangers named (FPIR) and of enrolled people named correctly (DIR).")
    q.add_argument("--data", required=True, metavar="DIR", help="LFW images, one folder per person (lfw-deepfunneled)")
    q.add_argument("--pairs", metavar="FILE", help="View 2 pairs.txt: needed for --pool heldout")
    embedder_option(q)
    q.add_argument("--pool", choices=("all", "heldout", "train"),
                   help="people to use: all; heldout = LFW View 2 folds 6-10 only (never in the training of "
                        "edged's nn4 weights; default for nn4); train = everyone else (where edged's defaults "
                        "were chosen)")
    q.add_argument("--sizes", default="10,100,all", metavar="LIST", help="gallery sizes N (default 10,100,all)")
    q.add_argument("--k", default="1,2,3", metavar="LIST", help="faces enrolled per person (default 1,2,3)")
    q.add_argument("--draws", type=int, metavar="D", help="random galleries per size (default 10 for N=10, 5 for "
                                                          "N=100, 1 for larger)")
    q.add_argument("--cohort", type=int, default=0, metavar="PEOPLE",
                   help="this many other people's faces play the strangers a site already stored (default 0)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--plot", metavar="PNG", help="write DIR against FPIR (log) to this PNG file")
    q.add_argument("--enroll-mirror", action=argparse.BooleanOptionalAction, default=None,
                   help="enrolled samples mirror-averaged as `edged enroll` stores them (default: config "
                        "enroll.mirror, on)")
    json_option(q)
    q.add_argument("--cache", metavar="DIR", help="face cache directory (default ~/.cache/edged)")
    q.add_argument("--workers", type=int, metavar="N", help="processes for detection and dlib (default: CPU count)")
    q.set_defaults(func=cmd_eval_openset)

    from edged.cli.eval_liveness import register_liveness

    register_liveness(bench)


def cmd_eval_lfw(ctx: Context) -> int:
    from edged.eval.facecache import FaceCache, embed_images

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
    with FaceCache.in_dir(args.cache) as cache, ctx.progress(len(paths), f"lfw {embedder.name}") as bar:
        found = embed_images(cache, paths, embedder, args.flip, args.workers, _bar_progress(bar))
    if found.lost:
        raise EvalError(f"{found.lost[0]}: could not be analysed (unreadable image?); {len(found.lost)} of "
                        f"{len(paths)} images")
    vec_of = found.vectors
    a = np.array([vec_of[str(data / pr.a)] for pr in pairs])
    b = np.array([vec_of[str(data / pr.b)] for pr in pairs])
    dist = np.sum((a - b) ** 2, axis=1, dtype=np.float64)
    same = np.array([pr.same for pr in pairs])
    fold_of = np.array([pr.fold for pr in pairs])
    result = evaluate(dist, same, fold_of, folds)
    fallbacks = sum(1 for p in paths if not found.detected[p])
    if roc_path:
        _write_roc(roc_path, dist, same, fold_of, folds, result, embedder.name)
    report = _report(result, embedder, fallbacks, len(paths), found.computed, time.monotonic() - start, roc_path)
    report["flip"] = bool(args.flip)
    if ctx.json:
        ctx.emit_json(report)
    else:
        _print_table(ctx, report)
    return 0


def _bar_progress(bar: Any) -> Callable[[int, int], None]:
    """A face-cache progress callback driving a CLI progress bar (its total grows as work is found)."""
    def on_progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done)

    return on_progress


def _check_roc_path(roc: str | None, option: str = "--roc") -> Path | None:
    if roc is None:
        return None
    path = Path(roc)
    if path.suffix.lower() != ".png":
        raise EvalError(f"{option} {roc}: the plot is written as PNG; give a file name ending in .png")
    if not path.parent.resolve().is_dir():
        raise EvalError(f"{option} {roc}: directory {path.parent} does not exist")
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


# ---- open set ----

def _int_list(text: str, option: str, allow_all: bool = False) -> tuple[int, ...]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if allow_all and part == "all":
            out.append(0)
            continue
        if not part.isdigit() or int(part) < 1:
            raise EvalError(f"{option} {text}: expected positive whole numbers separated by commas"
                            + (" (or 'all')" if allow_all else ""))
        out.append(int(part))
    return tuple(out)


def cmd_eval_openset(ctx: Context) -> int:
    from edged.eval.facecache import FaceCache, embed_images
    from edged.eval.openset import Protocol, evaluate_openset, labelled_faces
    from edged.gallery.match import MatchRule
    from edged.vision.imageio import IMAGE_EXTENSIONS

    args = ctx.args
    start = time.monotonic()
    data = Path(args.data)
    if not data.is_dir():
        raise EvalError(f"--data {data}: not a directory")
    plot = _check_roc_path(args.plot, "--plot")
    sizes = _int_list(args.sizes, "--sizes", allow_all=True)
    ks = _int_list(args.k, "--k")
    if args.cohort < 0:
        raise EvalError(f"--cohort {args.cohort}: must be >= 0")
    if args.draws is not None and args.draws < 1:
        raise EvalError(f"--draws {args.draws}: must be at least 1")
    embedder = ctx.embedder(args.embedder)
    pool = args.pool or ("heldout" if embedder.name == "nn4" else "all")
    among = None
    if pool != "all":
        from edged.eval.split import EVAL_FOLDS, lfw_people, people_by_fold

        if not args.pairs:
            raise EvalError(f"--pool {pool} needs --pairs pairs.txt (it names the people of folds 6-10)")
        folds = people_by_fold(args.pairs)
        heldout = {p for f, people in folds.items() if f in EVAL_FOLDS for p in people}
        among = heldout if pool == "heldout" else set(lfw_people(data)) - heldout
    paths = sorted(str(p) for p in data.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not paths:
        raise EvalError(f"--data {data}: no images")
    with FaceCache.in_dir(args.cache) as cache, ctx.progress(len(paths), f"openset {embedder.name}") as bar:
        found = embed_images(cache, paths, embedder, False, args.workers, _bar_progress(bar))
    faces = labelled_faces(paths, found.vectors, found.detected, data)
    cfg = ctx.config
    draws = {10: 10, 100: 5} if args.draws is None else {n: args.draws for n in sizes}
    protocol = Protocol(sizes=sizes, ks=ks, draws=draws, cohort_people=args.cohort, seed=args.seed)
    mirror = cfg.enroll.mirror if args.enroll_mirror is None else args.enroll_mirror
    if mirror:
        faces = _with_mirrored_enrollment(ctx, faces, embedder, args, protocol.min_images, among)
    rules = {"nearest sample, LFW threshold (edged <= 0.1)": MatchRule(embedder.threshold, None, "min", 1),
             "configured": MatchRule.of(embedder, cfg.embedder, cfg.match)}
    with ctx.progress(1, "draws") as bar:
        report = evaluate_openset(faces, rules, protocol, among, _bar_progress(bar))
    report.update(embedder=embedder.name, version=embedder.version, pool=pool, images=len(paths),
                  enroll_mirror=bool(mirror),
                  no_face=len(paths) - len(faces.paths), computed=found.computed,
                  seconds=round(time.monotonic() - start, 1), plot=str(plot) if plot else None)
    if plot:
        _plot_openset(plot, report)
    if ctx.json:
        ctx.emit_json({k: v for k, v in report.items() if k != "curves"})
    else:
        _print_openset(ctx, report)
    return 0


def _with_mirrored_enrollment(ctx: Context, faces: Any, embedder: Any, args: argparse.Namespace,
                              min_images: int, among: set[str] | None) -> Any:
    """`faces` whose enrollable faces (people with >= `min_images` of them) carry the mirror-averaged embedding
    enrollment stores (`enroll.mirror`); the mirror images are embedded once and cached."""
    from dataclasses import replace

    from edged.eval.facecache import FaceCache, embed_images
    from edged.eval.openset import eligible_people

    people = set(eligible_people(faces, min_images, among).tolist())
    chosen = [i for i, p in enumerate(faces.person) if int(p) in people]
    paths = [faces.paths[i] for i in chosen]
    with FaceCache.in_dir(args.cache) as cache, ctx.progress(len(paths), "mirror images") as bar:
        found = embed_images(cache, paths, embedder, True, args.workers, _bar_progress(bar))
    vectors = faces.vectors.copy()
    for i, path in zip(chosen, paths, strict=True):
        vectors[i] = found.vectors[path]
    return replace(faces, enroll_vectors=vectors)


def _plot_openset(path: Path, report: dict[str, Any]) -> None:
    from edged.eval.plots import Series, plot_curves

    series = [Series(name, np.array(c["fpir"]), np.array(c["dir"])) for name, c in report["curves"].items()
              if name.endswith("k=3")] or [Series(n, np.array(c["fpir"]), np.array(c["dir"]))
                                          for n, c in report["curves"].items()]
    plot_curves(path, series, title=f"LFW open set, {report['embedder']}: DIR against FPIR (k=3 enrolled)",
                xlabel="FPIR (share of strangers named)", ylabel="DIR (enrolled people named correctly)",
                log_x=True, y_range=(0.0, 1.0))


def _print_openset(ctx: Context, r: dict[str, Any]) -> None:
    ctx.print(f"LFW open set, embedder {r['embedder']} ({r['version']}), pool {r['pool']}: {r['faces']} faces, "
              f"{r['eligible_people']} people with >= 4 faces; cohort {r['protocol']['cohort_people']} people")
    for name, rule in r["rules"].items():
        ctx.print(f"  rule {name!r}: " + ", ".join(f"{k} {v}" for k, v in rule.items()))
    header = f"{'rule':<32} {'N':>5} {'k':>2}  {'DIR@1e-2':>8} {'DIR@1e-3':>8} {'DIR@1e-4':>8}  " \
             f"{'FPIR(rule)':>10} {'DIR(rule)':>9}  strangers"
    ctx.print(header)
    ctx.print("-" * len(header))
    for row in r["results"]:
        at = row["dir_at_fpir"]
        cfg = row["configured"]
        ctx.print(f"{row['rule'][:32]:<32} {row['gallery_size']:>5} {row['enrolled_per_person']:>2}  "
                  f"{at['0.01']['dir']:>8.4f} {at['0.001']['dir']:>8.4f} {at['0.0001']['dir']:>8.4f}  "
                  f"{cfg['fpir']:>10.5f} {cfg['dir']:>9.4f}  {row['strangers']}")
    if r["plot"]:
        ctx.print(f"plot: {r['plot']}")
