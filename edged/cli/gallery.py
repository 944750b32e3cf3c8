"""`edged enroll`, `edged identify`, `edged gallery ...` and `edged calibrate`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edged.cli.common import Context, embedder_option, json_option
from edged.embed.base import Embedder
from edged.errors import EdgedError, GalleryError
from edged.gallery.store import Gallery, validate_display_name, validate_name
from edged.gallery.transfer import atomic_write, export_gallery, import_gallery

if TYPE_CHECKING:
    from edged.camera.source import FrameSource
    from edged.gallery.enroll import EnrollReport

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("enroll", help="add face samples of one person to the gallery",
                       description="Enroll NAME from images, directories of images, videos and/or a camera. "
                                   "Quality gates (config section enroll) reject inputs with the reason printed.")
    p.add_argument("name", metavar="NAME", help="person name: letters, digits, '_', '.', '-'")
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="image, directory of images, or video file")
    p.add_argument("--camera", nargs="?", const="", metavar="SOURCE",
                   help="also look at a camera for --seconds: 0, /dev/videoN, rtsp://... or a video file "
                        "(default: config camera.source); the person should look at it and turn a little")
    p.add_argument("--seconds", type=float, default=10.0, metavar="S", help="how long to watch the camera (10)")
    p.add_argument("--display-name", metavar="TEXT", help="free-text name shown in events (default: NAME)")
    p.add_argument("--largest", action="store_true", help="take the largest face of pictures with several")
    embedder_option(p, "the gallery's, else config embedder.name")
    json_option(p)
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("identify", help="name every face in images using the gallery")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    embedder_option(p, "the gallery's embedder")
    p.add_argument("--threshold", type=float, metavar="D", help="squared-L2 threshold (default: the embedder's)")
    json_option(p)
    p.set_defaults(func=cmd_identify)

    p = sub.add_parser("gallery", help="list and manage enrolled people")
    gsub = p.add_subparsers(dest="gallery_command", metavar="ACTION")
    gsub.required = True
    q = gsub.add_parser("list", help="enrolled people")
    json_option(q)
    q.set_defaults(func=cmd_list)
    q = gsub.add_parser("show", help="one person's samples")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--crops", metavar="DIR", help="also write the stored face crops as PNG files into DIR")
    json_option(q)
    q.set_defaults(func=cmd_show)
    q = gsub.add_parser("remove", help="delete a person and all their samples")
    q.add_argument("name", metavar="NAME")
    q.set_defaults(func=cmd_remove)
    q = gsub.add_parser("rename", help="rename a person")
    q.add_argument("old", metavar="OLD")
    q.add_argument("new", metavar="NEW")
    q.add_argument("--display-name", metavar="TEXT")
    q.set_defaults(func=cmd_rename)
    q = gsub.add_parser("export", help="write people, embeddings and crops to a checksummed JSON file")
    q.add_argument("file", metavar="FILE")
    q.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    q.set_defaults(func=cmd_export)
    q = gsub.add_parser("import", help="add the people and samples of an export file")
    q.add_argument("file", metavar="FILE")
    q.set_defaults(func=cmd_import)
    q = gsub.add_parser("reembed", help="recompute every embedding from the stored face crops")
    embedder_option(q, "config embedder.name")
    json_option(q)
    q.set_defaults(func=cmd_reembed)
    q = gsub.add_parser("plot", help="2-D map of the gallery's embeddings coloured by person (PNG)")
    q.add_argument("file", metavar="FILE.png")
    q.add_argument("--method", choices=("tsne", "pca"), default="tsne")
    q.set_defaults(func=cmd_plot)

    p = sub.add_parser("calibrate", help="FAR/FRR of the gallery's own samples and a suggested threshold")
    p.add_argument("--target-far", type=float, default=0.001, metavar="RATE",
                   help="false accept rate to stay under (default 0.001)")
    p.add_argument("--plot", metavar="FILE.png", help="save the FAR/FRR curves as a PNG")
    json_option(p)
    p.set_defaults(func=cmd_calibrate)


# ---- helpers ----

def open_gallery(ctx: Context, create: bool = False) -> Gallery:
    return Gallery(ctx.gallery_path(), create=create)


def pick_embedder(ctx: Context, gallery: Gallery | None, requested: str | None) -> Embedder:
    """--embedder, else the gallery's own embedder, else config; refuses one that mismatches the gallery."""
    stored_name = gallery.embedder_name() if gallery else None
    embedder: Embedder = ctx.embedder(requested or stored_name or ctx.config.embedder.name)
    stored = gallery.embedder_version() if gallery else None
    if stored and embedder.version != stored:
        raise GalleryError(f"{gallery.path if gallery else ''}: gallery holds {stored} embeddings, not "
                           f"{embedder.version} ({embedder.name}); mixing embedders is refused "
                           f"(convert with 'edged gallery reembed --embedder {embedder.name}')")
    return embedder


def threshold_of(ctx: Context, embedder: Embedder, override: float | None = None) -> float:
    """--threshold, else config embedder.threshold (when it configures this embedder), else the embedder's."""
    if override is not None:
        if not 0.0 < override <= 4.0:
            raise EdgedError(f"--threshold must be in (0, 4], got {override}")
        return override
    cfg = ctx.config.embedder
    if cfg.threshold is not None and cfg.name == embedder.name:
        return cfg.threshold
    return embedder.threshold


def _err(msg: str) -> None:
    print(f"edged: error: {msg}", file=sys.stderr)


# ---- enroll ----

def cmd_enroll(ctx: Context) -> int:
    from edged.gallery.enroll import enroll_person, expand_sources

    args = ctx.args
    name = validate_name(args.name)
    display = validate_display_name(args.display_name) if args.display_name is not None else None
    if not args.sources and args.camera is None:
        raise EdgedError("enroll: give at least one SOURCE or --camera")
    if not 0 < args.seconds <= 3600:
        raise EdgedError(f"--seconds: must be in (0, 3600], got {args.seconds:g}")
    items = expand_sources(args.sources)
    camera = _open_camera(ctx, args.camera) if args.camera is not None else None
    try:
        with ctx.progress(len(items), f"enroll {name}") as bar:
            def on_item(item: Any, outcome: str) -> None:
                log.info("enroll: %s: %s", item.path, outcome)
                bar.update()

            def on_camera(source: FrameSource) -> None:
                print(f"enroll {name}: look at the camera {source.name} for {args.seconds:g} s, turning a little",
                      file=sys.stderr)

            report = enroll_person(ctx.gallery_path(), name, items, ctx.config.enroll,
                                   lambda gallery: pick_embedder(ctx, gallery, args.embedder), display_name=display,
                                   largest=args.largest, camera=camera, camera_seconds=args.seconds,
                                   on_item=on_item, on_camera=on_camera)
    finally:
        if camera is not None:
            camera.close()
    _print_enroll(ctx, name, report)
    if not report.samples:
        _err(f"no samples added for {name}: every input was rejected")
        return 1
    return 0


def _print_enroll(ctx: Context, name: str, report: EnrollReport) -> None:
    if ctx.json:
        ctx.emit_json({"name": name, "added": len(report.samples),
                       "rejected": [{"source": s, "reason": r} for s, r in report.rejected],
                       "surplus_frames": report.surplus})
        return
    frames: Counter[str] = Counter()
    for source, reason in report.rejected:
        if "#frame" in source:
            frames[source.split("#frame")[0]] += 1
        else:
            ctx.print(f"rejected {source}: {reason}")
    for video, n in frames.items():
        by_reason = Counter(r.split(" (")[0] for s, r in report.rejected if s.startswith(video + "#frame"))
        ctx.print(f"rejected {n} frames of {video}: " + ", ".join(f"{k} {v}" for k, v in by_reason.most_common()))
    reasons = ", ".join(f"{reason} {n}" for reason, n in report.reason_counts().most_common())
    extra = f"; {report.surplus} more usable frames not needed" if report.surplus else ""
    ctx.print(f"added {len(report.samples)} samples for {name}, rejected {len(report.rejected)}"
              + (f" ({reasons})" if reasons else "") + extra)


def _open_camera(ctx: Context, source: str) -> FrameSource:
    """The camera to enroll from: `source`, else the config's camera.source; opened (CameraError if not)."""
    from edged.camera.source import FrameSource

    cfg = ctx.config.camera
    if source:
        cfg = cfg.model_copy(update={"source": int(source) if source.isdigit() else source})
    camera = FrameSource(cfg)
    camera.open()
    return camera


# ---- identify ----

def cmd_identify(ctx: Context) -> int:
    from edged.embed.faces import FacePipeline
    from edged.gallery.match import Matcher
    from edged.vision.imageio import load_image

    args = ctx.args
    with open_gallery(ctx) as gallery:
        embedder = pick_embedder(ctx, gallery, args.embedder)
        snapshot = gallery.snapshot(embedder.version)
    cfg = ctx.config.match
    matcher = Matcher(snapshot, threshold_of(ctx, embedder, args.threshold), cfg.method, cfg.score, cfg.k)
    pipeline = FacePipeline(embedder)
    results: list[dict[str, Any]] = []
    failed = 0
    with ctx.progress(len(args.images), "identify") as bar:
        for path in args.images:
            entry: dict[str, Any] = {"image": path, "faces": []}
            try:
                faces = pipeline.process(load_image(path))
            except EdgedError as exc:
                entry["error"] = str(exc)
                failed += 1
                _err(str(exc))
                faces = []
            matches = matcher.match(np.array([f.embedding for f in faces])) if faces else []
            for face, m in zip(faces, matches, strict=True):
                entry["faces"].append({"box": face.box.as_list(), "name": m.name, "distance": round(m.distance, 6),
                                       "confidence": round(m.confidence, 4), "candidate": m.candidate})
            results.append(entry)
            bar.update()
    if ctx.json:
        ctx.emit_json({"results": results})
    else:
        for entry in results:
            if "error" in entry:
                continue
            if not entry["faces"]:
                ctx.print(f"{entry['image']}: no faces")
            for f in entry["faces"]:
                who = f["name"] if f["name"] else f"unknown (nearest {f['candidate']})"
                ctx.print(f"{entry['image']}: {who} distance {f['distance']:.3f} confidence {f['confidence']:.2f} "
                          f"box {','.join(map(str, f['box']))}")
    return 1 if failed else 0


# ---- gallery ----

def cmd_list(ctx: Context) -> int:
    with open_gallery(ctx) as gallery:
        people = gallery.people()
        versions = gallery.embedder_versions()
    if ctx.json:
        ctx.emit_json({"people": [{"name": p.name, "display_name": p.display_name, "samples": p.samples,
                                   "created": p.created, "updated": p.updated} for p in people],
                       "embedder": versions[0][0] if versions else None})
        return 0
    if people:
        width = max(len(p.name) for p in people)
        ctx.print(f"{'NAME':<{width}}  SAMPLES  UPDATED               DISPLAY NAME")
        for p in people:
            ctx.print(f"{p.name:<{width}}  {p.samples:>7}  {p.updated:<20}  {p.display_name}")
    embedder = f", embedder {versions[0][0]}" if versions else ""
    ctx.print(f"{len(people)} people, {sum(p.samples for p in people)} samples{embedder} ({ctx.gallery_path()})")
    return 0


def cmd_show(ctx: Context) -> int:
    args = ctx.args
    with open_gallery(ctx) as gallery:
        person = gallery.person(args.name)
        samples = gallery.samples(args.name, with_crops=bool(args.crops))
    written = []
    if args.crops:
        out = Path(args.crops)
        try:
            out.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise EdgedError(f"cannot create {out}: {exc.strerror or exc}") from exc
        for s in samples:
            if s.crop_png:
                target = out / f"{person.name}-{s.id}.png"
                atomic_write(target, s.crop_png, 0o600)
                written.append(str(target))
    if ctx.json:
        ctx.emit_json({"name": person.name, "display_name": person.display_name, "created": person.created,
                       "updated": person.updated,
                       "samples": [{"id": s.id, "source": s.source, "face_px": s.face_px,
                                    "sharpness": round(s.sharpness, 1), "created": s.created,
                                    "embedder": s.embedder, "crop": s.crop_format is not None} for s in samples],
                       "crops_written": written})
        return 0
    ctx.print(f"{person.name} ({person.display_name}): {person.samples} samples, created {person.created}, "
              f"updated {person.updated}")
    for s in samples:
        crop = "crop" if s.crop_format else "no crop"
        ctx.print(f"  #{s.id:<5} {s.source:<40} {s.face_px:>4} px  sharpness {s.sharpness:7.1f}  {s.created}  {crop}")
    if written:
        ctx.print(f"wrote {len(written)} crops to {args.crops}")
    return 0


def cmd_remove(ctx: Context) -> int:
    with open_gallery(ctx) as gallery:
        n = gallery.remove_person(ctx.args.name)
    ctx.print(f"removed {ctx.args.name} ({n} samples)")
    return 0


def cmd_rename(ctx: Context) -> int:
    args = ctx.args
    with open_gallery(ctx) as gallery:
        gallery.rename_person(args.old, args.new)
        if args.display_name is not None:
            gallery.set_display_name(args.new, args.display_name)
    ctx.print(f"renamed {args.old} to {args.new}")
    return 0


def cmd_export(ctx: Context) -> int:
    target = Path(ctx.args.file)
    if target.exists() and not ctx.args.force:
        raise EdgedError(f"{target}: already exists (use --force to overwrite)")
    with open_gallery(ctx) as gallery:
        counts = export_gallery(gallery, target)
    ctx.print(f"exported {counts['people']} people, {counts['samples']} samples to {target} (mode 0600: "
              f"it holds biometric data)")
    return 0


def cmd_import(ctx: Context) -> int:
    from edged.gallery.transfer import read_export

    read_export(ctx.args.file)  # verify before creating anything
    with open_gallery(ctx, create=True) as gallery:
        counts = import_gallery(gallery, ctx.args.file)
    ctx.print(f"imported {counts['samples']} samples ({counts['people']} new people, "
              f"{counts['skipped']} already present) from {ctx.args.file}")
    return 0


def cmd_reembed(ctx: Context) -> int:
    from edged.gallery.enroll import CROP_FORMAT, embed_crops

    with open_gallery(ctx) as gallery:
        counter = gallery.change_counter()
        missing = gallery.samples_without_crops()
        if missing:
            raise GalleryError(f"{gallery.path}: {missing} samples have no stored face crop (enrolled with "
                               f"enroll.keep_crops: false); remove and re-enroll those people to re-embed")
        samples = gallery.samples(with_crops=True)
        bad = [s for s in samples if s.crop_format != CROP_FORMAT]
        if bad:
            raise GalleryError(f"{gallery.path}: sample {bad[0].id} has a crop of unknown format "
                               f"{bad[0].crop_format!r}")
        embedder: Embedder = ctx.embedder(ctx.args.embedder)
        with ctx.progress(len(samples), f"reembed {embedder.name}") as bar:
            vectors = embed_crops(embedder, [s.crop_png or b"" for s in samples], progress=bar.update)
        old = {s.id: s.embedding for s in samples}
        gallery.replace_embeddings(embedder.name, embedder.version,
                                   {s.id: v for s, v in zip(samples, vectors, strict=True)}, expected_counter=counter)
    shift = [float(np.sum((old[s.id] - v) ** 2)) for s, v in zip(samples, vectors, strict=True)]
    if ctx.json:
        ctx.emit_json({"embedder": embedder.name, "version": embedder.version, "samples": len(samples),
                       "max_shift": round(max(shift), 6) if shift else 0.0})
    else:
        ctx.print(f"re-embedded {len(samples)} samples with {embedder.name} ({embedder.version})")
    return 0


def cmd_plot(ctx: Context) -> int:
    from edged.eval.plots import plot_scatter, project_2d

    with open_gallery(ctx) as gallery:
        version = gallery.embedder_version()
        if version is None:
            raise GalleryError(f"{gallery.path}: gallery is empty, nothing to plot")
        snap = gallery.snapshot(version)
    method = ctx.args.method
    points = project_2d(snap.vectors, method)
    shown = "t-SNE" if method == "tsne" else "PCA"
    title = f"gallery: {len(snap.labels)} samples of {len(snap.names)} people ({shown})"
    plot_scatter(ctx.args.file, points, snap.labels, snap.names, title=title, xlabel=f"{shown} 1",
                 ylabel=f"{shown} 2")
    ctx.print(f"wrote {ctx.args.file}")
    return 0


# ---- calibrate ----

def cmd_calibrate(ctx: Context) -> int:
    from edged.gallery.calibrate import calibrate

    args = ctx.args
    if not 0.0 < args.target_far < 1.0:
        raise EdgedError(f"--target-far must be between 0 and 1, got {args.target_far}")
    with open_gallery(ctx) as gallery:
        embedder = pick_embedder(ctx, gallery, None)
        snap = gallery.snapshot(embedder.version)
    try:
        cal = calibrate(snap, threshold_of(ctx, embedder), args.target_far)
    except GalleryError as exc:
        raise GalleryError(f"{ctx.gallery_path()}: {exc}") from exc
    current, suggested, pairs, table, at = cal.current, cal.suggested, cal.pairs, cal.table, cal.at
    if args.plot:
        from edged.eval.plots import Series, plot_curves

        plot_curves(args.plot, [Series("FAR (impostor pairs accepted)", cal.curve.thresholds, cal.curve.far),
                                Series("FRR (genuine pairs rejected)", cal.curve.thresholds, cal.curve.frr)],
                    title=f"{embedder.name}: {len(pairs.genuine)} genuine, {len(pairs.impostor)} impostor pairs",
                    xlabel="threshold (squared L2)", ylabel="error rate", y_range=(0.0, 1.0),
                    vlines=[(current, "current"), (suggested, "suggested")])
    if ctx.json:
        ctx.emit_json({
            "embedder": embedder.name, "people": cal.people, "samples": cal.samples,
            "genuine_pairs": len(pairs.genuine), "impostor_pairs": len(pairs.impostor),
            "target_far": args.target_far, "current_threshold": current, "suggested_threshold": suggested,
            "far_at_suggested": float(at.far[1]), "frr_at_suggested": float(at.frr[1]),
            "far_at_current": float(at.far[0]), "frr_at_current": float(at.frr[0]),
            "eer": {"threshold": cal.eer_threshold, "rate": cal.eer},
            "curve": [{"threshold": float(t), "far": float(a), "frr": float(r)}
                      for t, a, r in zip(table.thresholds, table.far, table.frr, strict=True)],
            "plot": args.plot})
        return 0
    ctx.print(f"{embedder.name}: {cal.people} people, {cal.samples} samples: "
              f"{len(pairs.genuine)} genuine pairs, {len(pairs.impostor)} impostor pairs")
    ctx.print(f"{'threshold':>9}  {'FAR':>7}  {'FRR':>7}")
    for t, a, r in zip(table.thresholds, table.far, table.frr, strict=True):
        mark = "  <- current" if abs(t - round(current, 3)) < 1e-9 else ""
        mark += "  <- suggested" if abs(t - round(suggested, 3)) < 1e-9 else ""
        ctx.print(f"{t:9.3f}  {a:7.4f}  {r:7.4f}{mark}")
    ctx.print(f"equal error rate {cal.eer:.4f} at threshold {cal.eer_threshold:.3f}")
    ctx.print(f"suggested threshold for FAR <= {args.target_far:g}: {suggested:.3f} "
              f"(FAR {at.far[1]:.4f}, FRR {at.frr[1]:.4f}); current {current:.3f} "
              f"(FAR {at.far[0]:.4f}, FRR {at.frr[0]:.4f})")
    if cal.far_resolution > args.target_far:
        ctx.print(f"note: with {len(pairs.impostor)} impostor pairs FAR is measured in steps of "
                  f"{cal.far_resolution:.4f}; the suggestion only keeps every impostor pair out. Enroll more people "
                  f"for a real estimate.")
    ctx.print("set it with embedder.threshold in the config file")
    if args.plot:
        ctx.print(f"wrote {args.plot}")
    return 0
