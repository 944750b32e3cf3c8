"""`edged train`: build training data, distil nn4.small2 from dlib, fine-tune with triplets."""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

from edged.cli.common import Context, json_option
from edged.errors import EdgedError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train nn4.small2 weights (distillation from dlib, triplet fine-tuning)")
    tsub = p.add_subparsers(dest="train_command", metavar="STEP")
    tsub.required = True

    q = tsub.add_parser("prepare", help="align training faces and cache dlib teacher embeddings")
    q.add_argument("--lfw", required=True, metavar="DIR", help="LFW image directory (person/person_0001.jpg)")
    q.add_argument("--pairs", required=True, metavar="FILE", help="LFW View 2 pairs.txt (folds 6-10 held out)")
    q.add_argument("--extra", action="append", default=[], metavar="DIR", help="unlabeled face folder (repeatable)")
    q.add_argument("--exclude-within", type=float, default=0.2,
                   help="drop unlabeled faces this close (squared L2, dlib) to any evaluation person")
    q.add_argument("--cache", metavar="DIR", help="face cache directory (default ~/.cache/edged)")
    q.add_argument("--out", required=True, metavar="FILE.npz")
    q.add_argument("--workers", type=int, default=None)
    json_option(q)
    q.set_defaults(func=cmd_prepare)

    d = tsub.add_parser("distill", help="train nn4.small2 to reproduce dlib ResNet embeddings")
    d.add_argument("--data", required=True, metavar="FILE.npz", help="output of 'edged train prepare'")
    d.add_argument("--workdir", required=True, metavar="DIR", help="checkpoints and history (resumable)")
    _common_training_args(d, epochs=16, lr=2e-3, batch=64)
    d.add_argument("--relational", type=float, default=1.0, help="weight of the pairwise-distance term")
    d.add_argument("--val-lfw", metavar="DIR", help="LFW image directory for per-epoch verification accuracy")
    d.add_argument("--val-pairs", metavar="FILE", help="pairs.txt for --val-lfw")
    d.add_argument("--val-folds", default="1-5", help="folds scored after each epoch (default 1-5: train people, "
                   "so optimistic; the honest test is 'edged eval lfw --folds 6-10' on the result)")
    d.add_argument("--cache", metavar="DIR", help="face cache directory (for --val-lfw)")
    d.set_defaults(func=cmd_distill)

    z = tsub.add_parser("quantize", help="make the int8 ONNX model of nn4 weights (embedder.backend onnxruntime-int8)")
    z.add_argument("--weights", default=None, metavar="MODEL",
                   help="nn4 model name or weights file (default: the best installed)")
    z.add_argument("--data", required=True, metavar="FILE.npz",
                   help="output of 'edged train prepare': calibration faces are drawn from it")
    z.add_argument("--faces", type=int, default=400, help="calibration faces (default 400)")
    z.add_argument("--seed", type=int, default=0)
    z.add_argument("--out", default=None, metavar="FILE.onnx",
                   help="default: beside the weights, <stem>.int8.onnx (where the backend looks)")
    json_option(z)
    z.set_defaults(func=cmd_quantize)

    t = tsub.add_parser("triplet", help="fine-tune with triplet loss on labelled folders (folder/person/*.jpg)")
    t.add_argument("--data", required=True, metavar="DIR", help="folder with one sub-folder of images per person")
    t.add_argument("--workdir", required=True, metavar="DIR")
    t.add_argument("--people", type=int, default=16, help="P people per batch")
    t.add_argument("--per-person", type=int, default=4, help="K faces per person per batch")
    t.add_argument("--margin", type=float, default=0.2)
    t.add_argument("--cache", metavar="DIR")
    _common_training_args(t, epochs=10, lr=2e-4, batch=None)
    t.set_defaults(func=cmd_triplet)


def _common_training_args(p: argparse.ArgumentParser, epochs: int, lr: float, batch: int | None) -> None:
    p.add_argument("--init", metavar="WEIGHTS", help="start from these nn4 weights (model name or file)")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--lr", type=float, default=lr)
    if batch:
        p.add_argument("--batch-size", type=int, default=batch)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="stop after the epoch in which this much training time has passed")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint in --workdir")
    p.add_argument("--export", metavar="FILE.pt", help="write the final weights in edged's format with a model card")
    p.add_argument("--name", default="nn4.small2.edged-custom", help="model name recorded in the export")
    json_option(p)


def _cache_path(arg: str | None) -> Path:
    base = Path(arg) if arg else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edged"
    return base / "faces.sqlite"


def _init_model(ctx: Context, init: str | None):
    from edged.embed.nn4.net import NN4Small2

    if not init:
        return NN4Small2()
    from edged.embed.nn4.embedder import load_nn4

    return load_nn4(init, models_dir=str(ctx.models_dir()))


def _set_threads(n: int) -> None:
    import torch

    if n > 0:
        torch.set_num_threads(n)


def cmd_prepare(ctx: Context) -> int:
    from edged.eval.facecache import FaceCache
    from edged.train.prepare import build_distill_set

    a = ctx.args
    cache = FaceCache(_cache_path(a.cache))
    bars: dict[str, object] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            bars[stage] = ctx.progress(total, stage)
        bars[stage].update(done)  # type: ignore[attr-defined]

    started = time.monotonic()
    data, report = build_distill_set(cache, a.lfw, a.pairs, a.extra, a.exclude_within, a.workers, progress)
    for bar in bars.values():
        bar.close()  # type: ignore[attr-defined]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    data.save(a.out)
    summary = {**asdict(report), "out": a.out, "seconds": round(time.monotonic() - started, 1)}
    if ctx.json:
        ctx.emit_json(summary)
    else:
        ctx.print(f"training faces: {report.faces} ({report.lfw_train_images} LFW images of "
                  f"{report.lfw_train_people} train people, {report.extra_images} unlabeled)")
        ctx.print(f"held out: {report.lfw_eval_people} people of folds 6-10 ({report.lfw_eval_images} images); "
                  f"unlabeled faces dropped as within {report.exclude_within} of them: "
                  f"{report.extra_dropped_near_eval}; no face: {report.skipped_no_face}")
        ctx.print(f"wrote {a.out}")
    return 0


def _step_bar(ctx: Context, label: str):
    state: dict = {}

    def on_step(step: int, total: int, loss: float) -> None:
        if "bar" not in state:
            state["bar"] = ctx.progress(total, label)
            state["avg"] = loss
        state["avg"] = 0.98 * state["avg"] + 0.02 * loss
        state["bar"].update(step, f"loss {state['avg']:.4f}")

    return on_step, state


def _finish(ctx: Context, model, history: dict, args: argparse.Namespace, kind: str, extra: dict) -> int:
    card = {"name": args.name, "kind": kind, "epochs_run": len(history["epochs"]),
            "train_seconds": round(history["seconds"], 1), "history": history["epochs"], **extra}
    if args.export:
        from edged.train.export import export_model

        export_model(model, args.export, card)
    if ctx.json:
        ctx.emit_json(card)
    else:
        for rec in history["epochs"]:
            ctx.print(json.dumps(rec))
        ctx.print(f"trained {card['epochs_run']} epochs in {card['train_seconds']:.0f} s"
                  + (f"; exported {args.export}" if args.export else ""))
    return 0


def cmd_distill(ctx: Context) -> int:
    from edged.train.data import AugmentConfig
    from edged.train.distill import DistillSet, distill_batches, make_distill_loss
    from edged.train.loop import LoopConfig, run_training

    a = ctx.args
    _set_threads(a.threads)
    if not Path(a.data).is_file():
        raise EdgedError(f"{a.data}: no such file (make it with 'edged train prepare')")
    data = DistillSet.load(a.data)
    model = _init_model(ctx, a.init)
    cfg = LoopConfig(epochs=a.epochs, lr=a.lr, seed=a.seed, time_budget_s=a.time_budget)
    aug = AugmentConfig()
    on_epoch = None
    if a.val_lfw and a.val_pairs:
        from edged.eval.facecache import FaceCache
        from edged.train.validate import LfwProbe

        probe = LfwProbe.build(FaceCache(_cache_path(a.cache)), a.val_lfw, a.val_pairs, a.val_folds)

        def on_epoch(epoch: int, model) -> dict[str, float]:
            result = probe.evaluate(model)
            return {"val_accuracy": round(result.accuracy_mean, 4), "val_threshold": round(result.threshold, 3)}

    on_step, state = _step_bar(ctx, "distill")
    history = run_training(model, cfg, a.workdir, len(data) // a.batch_size,
                           lambda epoch, rng: distill_batches(data, a.batch_size, aug, rng),
                           make_distill_loss(a.relational), resume=not a.no_resume, on_step=on_step,
                           on_epoch=on_epoch)
    if "bar" in state:
        state["bar"].close()
    extra = {"data": {"faces": len(data), "file": a.data}, "loop": asdict(cfg), "augment": asdict(aug),
             "relational": a.relational, "batch_size": a.batch_size}
    return _finish(ctx, model, history, a, "distill", extra)


def cmd_triplet(ctx: Context) -> int:
    from edged.eval.facecache import FaceCache
    from edged.train.data import AugmentConfig
    from edged.train.labelled import load_labelled
    from edged.train.loop import LoopConfig, run_training
    from edged.train.triplet import make_triplet_loss, pk_batches

    a = ctx.args
    _set_threads(a.threads)
    data = load_labelled(FaceCache(_cache_path(a.cache)), a.data)
    model = _init_model(ctx, a.init)
    cfg = LoopConfig(epochs=a.epochs, lr=a.lr, seed=a.seed, time_budget_s=a.time_budget, warmup_steps=10)
    aug = AugmentConfig()
    people_with_two = sum(1 for lab in set(data.labels.tolist()) if (data.labels == lab).sum() >= 2)
    steps = max(1, people_with_two // min(a.people, max(people_with_two, 1)))
    on_step, state = _step_bar(ctx, "triplet")
    history = run_training(model, cfg, a.workdir, steps,
                           lambda epoch, rng: pk_batches(data, a.people, a.per_person, aug, rng),
                           make_triplet_loss(a.margin), resume=not a.no_resume, on_step=on_step)
    if "bar" in state:
        state["bar"].close()
    extra = {"data": {"faces": len(data), "people": len(data.names), "folder": a.data}, "loop": asdict(cfg),
             "margin": a.margin}
    return _finish(ctx, model, history, a, "triplet", extra)


def cmd_quantize(ctx: Context) -> int:
    """Quantise, then measure the int8 model beside fp32 on faces of the set that were not used to calibrate."""
    import numpy as np

    from edged.embed.nn4.ort import OrtNN4, fresh_export, state_digest
    from edged.embed.nn4.quantize import MIN_CALIBRATION, int8_path, quantize_int8
    from edged.embed.nn4.weights import atomic_write_bytes
    from edged.models.embedders import create_nn4_embedder
    from edged.train.data import centre_crop

    a = ctx.args
    if a.faces < MIN_CALIBRATION:
        raise EdgedError(f"--faces {a.faces}: need at least {MIN_CALIBRATION} calibration faces")
    data = _load_set(a.data)
    if len(data) < a.faces + 1:
        raise EdgedError(f"--data {a.data}: {len(data)} faces, need more than --faces {a.faces}")
    started = time.monotonic()
    embedder = create_nn4_embedder(a.weights, device="cpu", models_dir=str(ctx.models_dir()), backend="torch")
    module = embedder.module()
    digest = state_digest(module.state_dict())
    order = np.random.default_rng(a.seed).permutation(len(data))
    calib = np.stack([centre_crop(data.canvases[i]) for i in order[:a.faces]])
    check = np.stack([centre_crop(data.canvases[i]) for i in order[a.faces:a.faces + 400]])
    exported = fresh_export(module, digest)
    model = quantize_int8(exported, digest, calib)
    out = Path(a.out) if a.out else int8_path(embedder.weights_path)
    atomic_write_bytes(out, model)
    fp32, int8 = OrtNN4(exported), OrtNN4(model)
    d = ((fp32.run(check) - int8.run(check)) ** 2).sum(axis=1)
    summary = {"out": str(out), "weights": embedder.version, "calibration_faces": len(calib),
               "bytes": len(model), "check_faces": len(check),
               "sq_l2_to_fp32": {"median": round(float(np.median(d)), 6), "p99": round(float(np.percentile(d, 99)), 6),
                                 "max": round(float(d.max()), 6)},
               "seconds": round(time.monotonic() - started, 1)}
    fp32.close()
    int8.close()
    if ctx.json:
        ctx.emit_json(summary)
    else:
        s = summary["sq_l2_to_fp32"]
        ctx.print(f"wrote {out} ({len(model) / 1e6:.1f} MB, calibrated on {len(calib)} faces of {a.data})")
        ctx.print(f"int8 against fp32 on {len(check)} other faces: squared L2 median {s['median']:.5f}, "
                  f"p99 {s['p99']:.5f}, max {s['max']:.5f}")
        ctx.print("use it with embedder.backend: onnxruntime-int8")
    return 0


def _load_set(path: str):
    from edged.train.distill import DistillSet

    try:
        return DistillSet.load(path)
    except (OSError, KeyError, ValueError) as exc:
        raise EdgedError(f"--data {path}: not a training set made by 'edged train prepare' ({exc})") from None
