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
    from edged.gallery.calibrate import Calibration, Fpir, ImpostorFaces
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
    p.add_argument("--strict", action="store_true",
                   help="treat identity warnings (photos that look like someone else, a probable duplicate "
                        "person, an outlier photo) as errors: store nothing and exit 1")
    embedder_option(p, "the gallery's, else config embedder.name")
    json_option(p)
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("identify", help="name every face in images using the gallery")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    embedder_option(p, "the gallery's embedder")
    p.add_argument("--threshold", type=float, metavar="D",
                   help="the door threshold (squared L2; default: config embedder.threshold, else the embedder's)")
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

    p = sub.add_parser("calibrate", help="how often the rule names a stranger (FPIR), a safe threshold, duplicates",
                       description="FPIR (1:N): the share of impostor faces (people who are not enrolled) that the "
                                   "configured rule names, with a 95% upper bound; the threshold suggested for "
                                   "--target-fpir (never looser than the current one unless the impostor evidence "
                                   "supports it); enrolled people who look like one person; and, secondary, the "
                                   "FAR/FRR of the gallery's own sample pairs.")
    p.add_argument("--impostors", metavar="DIR",
                   help="photos of people who are NOT enrolled (searched recursively; the largest face of each)")
    p.add_argument("--target-fpir", type=float, default=0.001, metavar="RATE",
                   help="FPIR whose 95%% upper bound the suggestion must stay within (default 0.001)")
    p.add_argument("--no-stored", dest="stored", action="store_false",
                   help="leave out the impostor faces the gallery stores (unknown visitors, the ignore list)")
    p.add_argument("--target-far", type=float, default=0.001, metavar="RATE",
                   help="secondary: false accept rate of the gallery's own sample pairs (default 0.001)")
    p.add_argument("--plot", metavar="FILE.png", help="save the FPIR and pair FAR/FRR curves as a PNG")
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


def plural(count: int, noun: str, many: str | None = None) -> str:
    """`1 sample`, `2 samples` (`many` for irregular plurals)."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def _err(msg: str) -> None:
    print(f"edged: error: {msg}", file=sys.stderr)


# ---- enroll ----

def cmd_enroll(ctx: Context) -> int:
    from edged.gallery.enroll import enroll_person, expand_sources
    from edged.gallery.match import MatchRule

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
        # one step per image and per frame examined of a video or the camera (a video counts 1 until it starts)
        with ctx.progress(len(items) + (camera is not None), f"enroll {name}") as bar:
            video = {"examined": 0, "planned": 0}

            def on_frame(examined: int, planned: int) -> None:
                if examined == 1:
                    bar.total += max(planned, 1) - 1
                elif examined > max(planned, 1):  # more frames than the estimate
                    bar.total += 1
                video.update(examined=examined, planned=max(planned, examined))
                bar.update()

            def on_item(item: Any, outcome: str) -> None:
                log.info("enroll: %s: %s", item.path, outcome)
                bar.update(bar.done + video["planned"] - video["examined"] if video["examined"] else None)
                video.update(examined=0, planned=0)

            def on_camera(source: FrameSource) -> None:
                print(f"enroll {name}: look at the camera {source.name} for {args.seconds:g} s, turning a little",
                      file=sys.stderr)

            report = enroll_person(ctx.gallery_path(), name, items, ctx.config.enroll,
                                   lambda gallery: pick_embedder(ctx, gallery, args.embedder), display_name=display,
                                   largest=args.largest, camera=camera, camera_seconds=args.seconds,
                                   on_item=on_item, on_camera=on_camera, on_frame=on_frame,
                                   rule_of=lambda e: MatchRule.of(e, ctx.config.embedder, ctx.config.match),
                                   strict=args.strict)
    finally:
        if camera is not None:
            camera.close()
    _print_enroll(ctx, name, report)
    if report.refused:
        _err(f"enroll --strict: {len(report.warnings)} warning(s) for {name}; nothing stored")
        return 1
    if not report.samples:
        _err(f"no samples added for {name}: every input was rejected")
        return 1
    return 0


def _print_enroll(ctx: Context, name: str, report: EnrollReport) -> None:
    if ctx.json:
        ctx.emit_json({"name": name, "added": 0 if report.refused else len(report.samples),
                       "rejected": [{"source": s, "reason": r} for s, r in report.rejected],
                       "surplus_frames": report.surplus, "warnings": report.warnings, "refused": report.refused})
        return
    frames: Counter[str] = Counter()
    for source, reason in report.rejected:
        if "#frame" in source:
            frames[source.split("#frame")[0]] += 1
        else:
            ctx.print(f"rejected {source}: {reason}")
    for video, n in frames.items():
        by_reason = Counter(r.split(" (")[0] for s, r in report.rejected if s.startswith(video + "#frame"))
        ctx.print(f"rejected {plural(n, 'frame')} of {video}: "
                  + ", ".join(f"{k} {v}" for k, v in by_reason.most_common()))
    for warning in report.warnings:
        ctx.print(f"warning: {warning}")
    reasons = ", ".join(f"{reason} {n}" for reason, n in report.reason_counts().most_common())
    extra = f"; {plural(report.surplus, 'more usable frame')} not needed" if report.surplus else ""
    added = (f"stored nothing for {name} (--strict: {plural(len(report.samples), 'accepted sample')} held back)"
             if report.refused else f"added {plural(len(report.samples), 'sample')} for {name}")
    ctx.print(f"{added}, rejected {len(report.rejected)}" + (f" ({reasons})" if reasons else "") + extra)


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
    from edged.gallery.identify import identify_faces
    from edged.gallery.match import MatchRule
    from edged.gallery.unknowns import site_matcher
    from edged.vision.imageio import load_image

    args = ctx.args
    if args.threshold is not None and not 0.0 < args.threshold <= 4.0:
        raise EdgedError(f"--threshold must be in (0, 4], got {args.threshold}")
    cfg = ctx.config
    with open_gallery(ctx) as gallery:
        embedder = pick_embedder(ctx, gallery, args.embedder)
        snapshot = gallery.snapshot(embedder.version)
        rule = MatchRule.of(embedder, cfg.embedder, cfg.match, args.threshold)
        matcher = site_matcher(gallery, rule, snapshot, embedder.version)
    pipeline = FacePipeline(embedder)
    results: list[dict[str, Any]] = []
    failed = 0
    with ctx.progress(len(args.images), "identify") as bar:
        for path in args.images:
            entry: dict[str, Any] = {"image": path, "faces": []}
            try:
                entry["faces"] = identify_faces(load_image(path), pipeline, matcher, cfg.quality)
            except EdgedError as exc:
                entry["error"] = str(exc)
                failed += 1
                _err(str(exc))
            results.append(entry)
            bar.update()
    if ctx.json:
        ctx.emit_json({"rule": rule.describe(), "cohort": matcher.cohort_size, "results": results})
    else:
        for entry in results:
            if "error" in entry:
                continue
            if not entry["faces"]:
                ctx.print(f"{entry['image']}: no faces")
            for f in entry["faces"]:
                ctx.print(f"{entry['image']}: {_who(f)} distance {f['distance']:.3f} confidence {f['confidence']:.2f} "
                          f"box {','.join(map(str, f['box']))}")
    return 1 if failed else 0


def _who(face: dict[str, Any]) -> str:
    """The name, or why not: 'unknown (too far: nearest alice 0.160 > 0.125)'."""
    if face["name"]:
        return str(face["name"])
    reason, nearest = face["reason"], face["candidate"]
    if reason == "low quality":
        return f"unknown (low quality: {face['quality']}; nearest {nearest})"
    if reason == "ignored":
        return f"unknown (ignored: looks like {face['ignored']!r} on the ignore list)"
    if reason == "too far":
        return f"unknown (too far: nearest {nearest} {face['distance']:.3f} > {face['threshold']:.3f})"
    if reason == "ambiguous":
        return (f"unknown (ambiguous: nearest {nearest} {face['distance']:.3f} is not clearly nearer than the next "
                f"identity, ratio {face['ratio']:.2f})")
    return f"unknown (nearest {nearest})"


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
    ctx.print(f"{plural(len(people), 'person', 'people')}, {plural(sum(p.samples for p in people), 'sample')}"
              f"{embedder} ({ctx.gallery_path()})")
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
    ctx.print(f"{person.name} ({person.display_name}): {plural(person.samples, 'sample')}, created {person.created}, "
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
    ctx.print(f"removed {ctx.args.name} ({plural(n, 'sample')})")
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
    ctx.print(f"exported {plural(counts['people'], 'person', 'people')}, {plural(counts['samples'], 'sample')} "
              f"to {target} (mode 0600: it holds biometric data)")
    return 0


def cmd_import(ctx: Context) -> int:
    from edged.fileio import shown
    from edged.gallery.transfer import load_export

    loaded = load_export(ctx.args.file)  # every field verified before anything is created or written
    with open_gallery(ctx, create=True) as gallery:
        counts = import_gallery(gallery, loaded)
    new_people = plural(counts["people"], "new person", "new people")
    ctx.print(f"imported {plural(counts['samples'], 'sample')} ({new_people}, "
              f"{counts['skipped']} already present) from {shown(ctx.args.file)}")
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
            vectors = embed_crops(embedder, [s.crop_png or b"" for s in samples], progress=bar.update,
                                  mirror=ctx.config.enroll.mirror)
        old = {s.id: s.embedding for s in samples}
        gallery.replace_embeddings(embedder.name, embedder.version,
                                   {s.id: v for s, v in zip(samples, vectors, strict=True)}, expected_counter=counter)
    shift = [float(np.sum((old[s.id] - v) ** 2)) for s, v in zip(samples, vectors, strict=True)]
    if ctx.json:
        ctx.emit_json({"embedder": embedder.name, "version": embedder.version, "samples": len(samples),
                       "max_shift": round(max(shift), 6) if shift else 0.0})
    else:
        ctx.print(f"re-embedded {plural(len(samples), 'sample')} with {embedder.name} ({embedder.version})")
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

#: Stored impostor faces (unknown visitors, ignore list) calibrate reads at most, newest first.
STORED_IMPOSTORS_MAX = 100_000

def cmd_calibrate(ctx: Context) -> int:
    from edged.gallery.calibrate import calibrate, embed_impostor_photos, impostor_photos
    from edged.gallery.match import MatchRule
    from edged.gallery.unknowns import cohort

    args = ctx.args
    for flag, value in (("--target-fpir", args.target_fpir), ("--target-far", args.target_far)):
        if not 0.0 < value < 1.0:
            raise EdgedError(f"{flag} must be between 0 and 1, got {value}")
    photos = impostor_photos(args.impostors) if args.impostors else []
    with open_gallery(ctx) as gallery:
        embedder = pick_embedder(ctx, gallery, None)
        snap = gallery.snapshot(embedder.version)
        stored = cohort(gallery, embedder.version, STORED_IMPOSTORS_MAX) if args.stored else None
    found = None
    if photos:
        with ctx.progress(len(photos), "impostor photos") as bar:
            found = embed_impostor_photos(embedder, photos, progress=bar.update)
    parts = [v for v in (found.vectors if found else None, stored) if v is not None and len(v)]
    rule = MatchRule.of(embedder, ctx.config.embedder, ctx.config.match)
    try:
        cal = calibrate(snap, rule, args.target_far, target_fpir=args.target_fpir,
                        impostors=np.concatenate(parts) if parts else None, same_person=embedder.threshold)
    except GalleryError as exc:
        raise GalleryError(f"{ctx.gallery_path()}: {exc}") from exc
    n_stored = 0 if stored is None else len(stored)
    if args.plot:
        _plot_calibration(args.plot, embedder.name, cal)
    if ctx.json:
        ctx.emit_json(_calibration_json(embedder.name, cal, args, found, n_stored))
        return 0
    _print_calibration(ctx, embedder.name, cal, args, found, n_stored)
    return 0


def _fpir_json(f: Fpir) -> dict[str, Any]:
    return {"threshold": f.threshold, "named": f.named, "faces": f.faces, "fpir": f.rate, "upper": f.upper,
            "rule_of_three": f.rule_of_three}


def _calibration_json(embedder: str, cal: Calibration, args: argparse.Namespace,
                       found: ImpostorFaces | None, stored: int) -> dict[str, Any]:
    pair = cal.pair
    out: dict[str, Any] = {
        "embedder": embedder, "people": cal.people, "samples": cal.samples, "rule": cal.rule.describe(),
        "current_threshold": cal.current, "suggested_threshold": cal.suggested, "target_fpir": cal.target_fpir,
        "supported": cal.supported, "reason": cal.reason, "impostor_faces": cal.impostor_faces,
        "faces_needed": cal.faces_needed, "more_faces_needed": cal.more_faces_needed,
        "impostor_photos": None if found is None else {
            "dir": args.impostors, "images": found.images, "faces": len(found.sources),
            "skipped": [{"source": s, "reason": r} for s, r in found.skipped]},
        "stored_impostors": stored,
        "fpir_at_current": _fpir_json(cal.at_current), "fpir_at_suggested": _fpir_json(cal.at_suggested),
        "fpir_curve": [_fpir_json(f) for f in cal.table],
        "duplicates": [{"first": d.first, "second": d.second, "distance": d.distance, "message": d.message}
                       for d in cal.duplicates],
        # secondary: the gallery's own sample pairs (not a 1:N figure); the keys earlier versions printed
        "target_far": cal.pair.target_far if pair else args.target_far,
        "genuine_pairs": len(pair.pairs.genuine) if pair else 0,
        "impostor_pairs": len(pair.pairs.impostor) if pair else 0,
        "far_threshold": pair.threshold if pair else None,
        "far_at_current": float(pair.at.far[0]) if pair else None,
        "frr_at_current": float(pair.at.frr[0]) if pair else None,
        "far_at_suggested": float(pair.at.far[1]) if pair else None,
        "frr_at_suggested": float(pair.at.frr[1]) if pair else None,
        "far_at_far_threshold": float(pair.at.far[2]) if pair else None,
        "frr_at_far_threshold": float(pair.at.frr[2]) if pair else None,
        "eer": {"threshold": pair.eer_threshold, "rate": pair.eer} if pair else None,
        "curve": [], "plot": args.plot}
    if pair:
        from edged.gallery.calibrate import error_curve

        table = error_curve(pair.pairs, cal.thresholds)
        out["curve"] = [{"threshold": float(t), "far": float(a), "frr": float(r)}
                        for t, a, r in zip(table.thresholds, table.far, table.frr, strict=True)]
    return out


def _print_calibration(ctx: Context, embedder: str, cal: Calibration, args: argparse.Namespace,
                       found: ImpostorFaces | None, stored: int) -> None:
    m, pair = cal.rule, cal.pair
    margin = f"max_ratio {m.max_ratio:g}" if m.max_ratio is not None else "no margin test"
    adaptive = (" (for one person with 3 samples; per person it follows N and their samples)" if m.adaptive
                else "")
    ctx.print(f"{embedder}: {cal.people} people, {cal.samples} samples; rule: {m.method}, score {m.score}, "
              f"threshold {cal.current:.3f}{adaptive}, {margin}")
    if found is not None:
        ctx.print(f"impostor photos {args.impostors}: {found.images} images, {len(found.sources)} faces, "
                  f"{len(found.skipped)} skipped")
        for source, reason in found.skipped:
            ctx.print(f"  skipped {source}: {reason}")
    if stored:
        ctx.print(f"stored impostor faces (unknown visitors, ignore list): {stored}")
    ctx.print(f"FPIR = share of the {cal.impostor_faces} impostor faces the rule names among the {cal.people} people "
              f"(1:N); upper = its one-sided 95% Clopper-Pearson bound. pair FAR/FRR = the gallery's own sample pairs "
              f"(secondary, not 1:N)")
    far = None
    if pair:
        from edged.gallery.calibrate import error_curve

        far = error_curve(pair.pairs, cal.thresholds)
    ctx.print(f"{'threshold':>9}  {'named':>11}  {'FPIR':>7}  {'upper':>7}  {'pair FAR':>8}  {'pair FRR':>8}")
    for i, f in enumerate(cal.table):
        pairs = f"  {far.far[i]:8.4f}  {far.frr[i]:8.4f}" if far is not None else f"  {'-':>8}  {'-':>8}"
        mark = "  <- current" if abs(f.threshold - round(cal.current, 3)) < 1e-9 else ""
        mark += "  <- suggested" if abs(f.threshold - round(cal.suggested, 3)) < 1e-9 else ""
        fpir = (f"{f'{f.named}/{f.faces}':>11}  {f.rate:7.4f}  {f.upper:7.4f}" if f.faces
                else f"{'-':>11}  {'-':>7}  {'-':>7}")
        ctx.print(f"{f.threshold:9.3f}  {fpir}{pairs}{mark}")
    ctx.print(f"current threshold {cal.current:.3f}: {_fpir_text(cal.at_current)}")
    ctx.print(f"suggested threshold for FPIR <= {cal.target_fpir:g}: {cal.suggested:.3f} ({cal.reason})")
    if cal.suggested != cal.current:
        ctx.print(f"  at {cal.suggested:.3f}: {_fpir_text(cal.at_suggested)}")
    if cal.duplicates:
        ctx.print(f"probable duplicate identities ({len(cal.duplicates)}):")
        for dup in cal.duplicates:
            ctx.print(f"  {dup.message}")
    else:
        ctx.print("probable duplicate identities: none")
    if pair:
        ctx.print(f"pair FAR (secondary, --target-far): {len(pair.pairs.genuine)} genuine and "
                  f"{len(pair.pairs.impostor)} impostor pairs of the gallery's own samples; FAR <= "
                  f"{pair.target_far:g} up to {pair.threshold:.3f} (FRR {pair.at.frr[2]:.4f}); at the current "
                  f"{cal.current:.3f}: FAR {pair.at.far[0]:.4f}, FRR {pair.at.frr[0]:.4f}; equal error rate "
                  f"{pair.eer:.4f} at {pair.eer_threshold:.3f}")
        if pair.far_resolution > pair.target_far:
            ctx.print(f"note: with {len(pair.pairs.impostor)} impostor pairs FAR is measured in steps of "
                      f"{pair.far_resolution:.4f}; pair FAR is not used for the suggestion")
    else:
        ctx.print("pair FAR (secondary): needs 2 people and one person with 2 or more samples")
    ctx.print("set it with embedder.threshold in the config file")
    if args.plot:
        ctx.print(f"wrote {args.plot}")


def _fpir_text(f: Fpir) -> str:
    if not f.faces:
        return "no impostor faces, FPIR unknown"
    text = (f"{f.named} of {f.faces} impostor faces named, FPIR {f.rate:.4f}, "
            f"FPIR <= {f.upper:.4g} at 95% (Clopper-Pearson)")
    if f.rule_of_three is not None:
        text += f"; rule of three: FPIR <= 3/{f.faces} = {f.rule_of_three:.4g}"
    return text


def _plot_calibration(path: str, embedder: str, cal: Calibration) -> None:
    from edged.eval.plots import Series, plot_curves

    series = []
    if cal.impostor_faces:
        t = np.array([f.threshold for f in cal.curve])
        series += [Series("FPIR (impostor faces named, 1:N)", t, np.array([f.rate for f in cal.curve])),
                   Series("FPIR 95% upper bound", t, np.array([f.upper for f in cal.curve]))]
    if cal.pair:
        c = cal.pair.curve
        series += [Series("pair FAR (gallery's impostor pairs accepted)", c.thresholds, c.far),
                   Series("pair FRR (gallery's genuine pairs rejected)", c.thresholds, c.frr)]
    if not series:
        raise EdgedError("--plot: nothing to plot (no impostor faces and no sample pairs)")
    pairs = (f", {len(cal.pair.pairs.genuine)} genuine / {len(cal.pair.pairs.impostor)} impostor pairs"
             if cal.pair else "")
    plot_curves(path, series, title=f"{embedder}: {cal.people} people, {cal.impostor_faces} impostor faces{pairs}",
                xlabel="threshold (squared L2)", ylabel="rate", y_range=(0.0, 1.0),
                vlines=[(cal.current, "current = suggested")] if cal.suggested == cal.current
                else [(cal.current, "current"), (cal.suggested, "suggested")])
