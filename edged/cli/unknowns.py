"""`edged unknowns ...` (review, cluster, name or ignore unknown visitors) and `edged ignore ...` (the ignore list)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edged.cli.common import Context, json_option
from edged.cli.gallery import open_gallery, pick_embedder, plural
from edged.errors import EdgedError
from edged.gallery.store import validate_display_name, validate_name

if TYPE_CHECKING:
    from edged.gallery.unknowns import Cluster, UnknownSample, UnknownVisit

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("unknowns", help="review, cluster, name or ignore the unknown visitors the daemon stored",
                       description="Unknown visitors live in the gallery file (mode 0600); nothing else is written "
                                   "unless asked (--crops DIR).")
    usub = p.add_subparsers(dest="unknowns_command", metavar="ACTION")
    usub.required = True
    q = usub.add_parser("list", help="stored visits, newest first")
    q.add_argument("--cluster", type=int, metavar="N", help="only the visits of cluster N")
    q.add_argument("--limit", type=int, metavar="N", help="at most N visits")
    json_option(q)
    q.set_defaults(func=cmd_list)
    q = usub.add_parser("show", help="one visit and its samples")
    q.add_argument("id", type=int, metavar="ID")
    q.add_argument("--crops", metavar="DIR", help="also write the visit's face crops as PNG files (0600) into DIR")
    json_option(q)
    q.set_defaults(func=cmd_show)
    q = usub.add_parser("cluster", help="group the visits by face (DBSCAN) and number the groups")
    q.add_argument("--eps", type=float, metavar="D",
                   help="radius: mean squared L2 between two visits' samples (default config unknowns.cluster_eps)")
    q.add_argument("--min-samples", type=int, default=1, metavar="N",
                   help="DBSCAN min_samples (1: every visit is in a cluster)")
    json_option(q)
    q.set_defaults(func=cmd_cluster)
    q = usub.add_parser("name", help="enroll a cluster's best samples as a person and delete its visits")
    q.add_argument("cluster", type=int, metavar="CLUSTER")
    q.add_argument("name", metavar="NAME", help="person name: letters, digits, '_', '.', '-' (new or enrolled)")
    q.add_argument("--display-name", metavar="TEXT", help="free-text name shown in events")
    json_option(q)
    q.set_defaults(func=cmd_name)
    q = usub.add_parser("ignore", help="move a cluster's samples to the ignore list and delete its visits")
    q.add_argument("cluster", type=int, metavar="CLUSTER")
    q.add_argument("label", metavar="LABEL")
    json_option(q)
    q.set_defaults(func=cmd_ignore_cluster)
    q = usub.add_parser("delete", help="delete visits")
    q.add_argument("ids", type=int, nargs="+", metavar="ID")
    json_option(q)
    q.set_defaults(func=cmd_delete)
    q = usub.add_parser("purge", help="delete old visits (retention)")
    q.add_argument("--older-than", type=float, metavar="DAYS",
                   help="visits last seen longer ago (default config unknowns.retention_days)")
    q.add_argument("--keep", type=int, metavar="N", help="keep at most the newest N (default unknowns.max_visits)")
    json_option(q)
    q.set_defaults(func=cmd_purge)

    p = sub.add_parser("ignore", help="the ignore list: faces never to name (a poster, a face on the TV)")
    isub = p.add_subparsers(dest="ignore_command", metavar="ACTION")
    isub.required = True
    q = isub.add_parser("add", help="add the faces of photos under LABEL (quality gates as in enroll)")
    q.add_argument("label", metavar="LABEL", help="letters, digits, '_', '.', '-'")
    q.add_argument("photos", nargs="+", metavar="PHOTO", help="image or directory of images")
    q.add_argument("--largest", action="store_true", help="take the largest face of pictures with several")
    json_option(q)
    q.set_defaults(func=cmd_ignore_add)
    q = isub.add_parser("list", help="ignore labels")
    json_option(q)
    q.set_defaults(func=cmd_ignore_list)
    q = isub.add_parser("remove", help="delete a label and its samples")
    q.add_argument("label", metavar="LABEL")
    json_option(q)
    q.set_defaults(func=cmd_ignore_remove)


# ---- output helpers ----

def _visit_json(v: UnknownVisit) -> dict[str, Any]:
    return {"id": v.id, "camera": v.camera, "first_seen": v.first_seen, "last_seen": v.last_seen,
            "track_id": v.track_id, "candidate": v.candidate,
            "distance": None if v.distance is None else round(v.distance, 6), "reason": v.reason,
            "cluster": v.cluster, "samples": v.samples, "created": v.created}


def _sample_json(s: UnknownSample) -> dict[str, Any]:
    return {"id": s.id, "visit": s.visit_id, "embedder": s.embedder, "face_px": s.face_px,
            "sharpness": round(s.sharpness, 1), "crop": s.crop_format is not None, "created": s.created}


def _cluster_json(c: Cluster) -> dict[str, Any]:
    return {"cluster": c.id, "size": c.size, "samples": c.samples, "first_seen": c.first_seen,
            "last_seen": c.last_seen, "visits": [v.id for v in c.visits],
            "candidates": sorted({v.candidate for v in c.visits if v.candidate}),
            "best": None if c.best is None else _sample_json(c.best)}


def _visit_line(v: UnknownVisit) -> str:
    cluster = "-" if v.cluster is None else str(v.cluster)
    distance = "" if v.distance is None else f"{v.distance:.3f}"
    return (f"{v.id:>6}  {v.last_seen:<20}  {v.camera:<12}  {v.samples:>7}  {cluster:>7}  "
            f"{v.candidate or '-':<16}  {distance:>8}  {v.reason or ''}")


def _write_crops(directory: str, samples: list[UnknownSample]) -> list[str]:
    from edged.gallery.transfer import atomic_write

    out = Path(directory)
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgedError(f"cannot create {out}: {exc.strerror or exc}") from exc
    written = []
    for s in samples:
        if s.crop_png:
            target = out / f"unknown-{s.visit_id}-{s.id}.png"
            atomic_write(target, s.crop_png, 0o600)
            written.append(str(target))
    return written


# ---- unknowns ----

def cmd_list(ctx: Context) -> int:
    from edged.gallery.unknowns import visits

    args = ctx.args
    with open_gallery(ctx) as gallery:
        found = visits(gallery, cluster=args.cluster, limit=args.limit)
    clustered = {v.cluster for v in found if v.cluster is not None}
    if ctx.json:
        ctx.emit_json({"visits": [_visit_json(v) for v in found], "clusters": len(clustered),
                       "unclustered": sum(v.cluster is None for v in found)})
        return 0
    if found:
        ctx.print(f"{'ID':>6}  {'LAST SEEN':<20}  {'CAMERA':<12}  SAMPLES  CLUSTER  {'CANDIDATE':<16}  "
                  f"DISTANCE  REASON")
        for v in found:
            ctx.print(_visit_line(v))
    ctx.print(f"{len(found)} visits, {sum(v.samples for v in found)} samples, {len(clustered)} clusters "
              f"({ctx.gallery_path()})")
    return 0


def cmd_show(ctx: Context) -> int:
    from edged.gallery.unknowns import samples_of, visit

    args = ctx.args
    with open_gallery(ctx) as gallery:
        v = visit(gallery, args.id)
        samples = samples_of(gallery, args.id, with_crops=bool(args.crops))
    written = _write_crops(args.crops, samples) if args.crops else []
    if ctx.json:
        ctx.emit_json({**_visit_json(v), "sample_list": [_sample_json(s) for s in samples], "crops_written": written})
        return 0
    ctx.print(f"visit {v.id}: {v.camera} {v.first_seen} - {v.last_seen}, track {v.track_id}, "
              f"nearest {v.candidate or '-'}" + (f" ({v.distance:.3f})" if v.distance is not None else "")
              + f", {v.reason or 'unknown'}, cluster {'-' if v.cluster is None else v.cluster}")
    for s in samples:
        ctx.print(f"  #{s.id:<6} {s.face_px:>4} px  sharpness {s.sharpness:7.1f}  {s.created}  "
                  f"{'crop' if s.crop_format else 'no crop'}")
    if written:
        ctx.print(f"wrote {len(written)} crops to {args.crops}")
    return 0


def cmd_cluster(ctx: Context) -> int:
    from edged.gallery.unknowns import cluster, default_version, enroll_blocker

    args = ctx.args
    eps = ctx.config.unknowns.cluster_eps if args.eps is None else args.eps
    if not 0.0 < eps <= 4.0:
        raise EdgedError(f"--eps must be in (0, 4], got {eps:g}")
    if args.min_samples < 1:
        raise EdgedError(f"--min-samples must be >= 1, got {args.min_samples}")
    with open_gallery(ctx) as gallery:
        version = default_version(gallery)
        found = cluster(gallery, version, eps, args.min_samples) if version else []
        blockers = {c.id: enroll_blocker(gallery, [v.id for v in c.visits], ctx.config.enroll) for c in found}
    if ctx.json:
        ctx.emit_json({"eps": eps, "embedder_version": version,
                       "clusters": [{**_cluster_json(c), "not_enrollable": blockers[c.id]} for c in found]})
        return 0
    for c in found:
        who = ", ".join(sorted({v.candidate for v in c.visits if v.candidate})) or "-"
        best = f", best sample #{c.best.id} ({c.best.face_px} px)" if c.best else ""
        blocked = f"; not enrollable yet: {blockers[c.id]}" if blockers[c.id] else ""
        ctx.print(f"cluster {c.id}: {c.size} visits ({', '.join(str(v.id) for v in c.visits)}), {c.samples} samples, "
                  f"last seen {c.last_seen}, nearest {who}{best}{blocked}")
    ctx.print(f"{sum(c.size for c in found)} visits in {len(found)} clusters (eps {eps:g}); "
              f"name one with 'edged unknowns name CLUSTER NAME'")
    return 0


def cmd_name(ctx: Context) -> int:
    from edged.gallery.unknowns import name_cluster

    args = ctx.args
    name = validate_name(args.name)
    display = validate_display_name(args.display_name) if args.display_name is not None else None
    with open_gallery(ctx) as gallery:
        embedder = None
        if ctx.config.enroll.mirror:  # the samples embedded again from their crops, mirror-averaged as enroll does
            from edged.models.embedders import embedder_from_config

            embedder = embedder_from_config(ctx.config, gallery.embedder_name() or None)
        report = name_cluster(gallery, args.cluster, name, ctx.config.enroll, display_name=display, embedder=embedder)
    if ctx.json:
        ctx.emit_json({"cluster": report.cluster, "name": name, "visits": report.visits, "added": report.added,
                       "rejected": [{"source": s, "reason": r} for s, r in report.rejected],
                       "surplus": report.surplus})
        return 0
    reasons = ", ".join(f"{r} {n}" for r, n in report.reason_counts().most_common())
    ctx.print(f"named cluster {args.cluster} as {name}: added {report.added} samples from {len(report.visits)} "
              f"visits, rejected {len(report.rejected)}" + (f" ({reasons})" if reasons else "")
              + (f"; {report.surplus} more not needed" if report.surplus else ""))
    return 0


def cmd_ignore_cluster(ctx: Context) -> int:
    from edged.gallery.unknowns import ignore_cluster

    args = ctx.args
    label = validate_name(args.label)
    with open_gallery(ctx) as gallery:
        moved = ignore_cluster(gallery, args.cluster, label)
    if ctx.json:
        ctx.emit_json({"cluster": args.cluster, "label": label, "samples": moved})
    else:
        ctx.print(f"moved {moved} samples of cluster {args.cluster} to the ignore list as {label}")
    return 0


def cmd_delete(ctx: Context) -> int:
    from edged.gallery.unknowns import delete

    with open_gallery(ctx) as gallery:
        n = delete(gallery, ctx.args.ids)
    if ctx.json:
        ctx.emit_json({"deleted": n})
    else:
        ctx.print(f"deleted {n} visits")
    return 0


def cmd_purge(ctx: Context) -> int:
    from edged.gallery.unknowns import purge

    args, cfg = ctx.args, ctx.config.unknowns
    days = cfg.retention_days if args.older_than is None else args.older_than
    keep = cfg.max_visits if args.keep is None else args.keep
    if days < 0:
        raise EdgedError(f"--older-than must be >= 0 days, got {days:g}")
    if keep < 0:
        raise EdgedError(f"--keep must be >= 0, got {keep}")
    with open_gallery(ctx) as gallery:
        n = purge(gallery, days, keep)
    if ctx.json:
        ctx.emit_json({"purged": n, "older_than_days": days, "keep": keep})
    else:
        ctx.print(f"purged {n} visits (older than {days:g} days, or beyond the newest {keep})")
    return 0


# ---- ignore ----

def cmd_ignore_add(ctx: Context) -> int:
    from edged.gallery.enroll import expand_sources
    from edged.gallery.unknowns import ignore_photos

    args = ctx.args
    label = validate_name(args.label)
    items = expand_sources(args.photos)
    with ctx.progress(len(items), f"ignore {label}") as bar:
        def on_item(item: Any, outcome: str) -> None:
            log.info("ignore: %s: %s", item.path, outcome)
            bar.update()

        report = ignore_photos(ctx.gallery_path(), label, items, ctx.config.enroll,
                               lambda gallery: pick_embedder(ctx, gallery, None), largest=args.largest,
                               on_item=on_item)
    if ctx.json:
        ctx.emit_json({"label": label, "added": len(report.samples),
                       "rejected": [{"source": s, "reason": r} for s, r in report.rejected]})
    else:
        for source, reason in report.rejected:
            ctx.print(f"rejected {source}: {reason}")
        ctx.print(f"added {plural(len(report.samples), 'ignore sample')} as {label}, rejected {len(report.rejected)}")
    if not report.samples:
        raise EdgedError(f"no ignore samples added for {label}: every photo was rejected")
    return 0


def cmd_ignore_list(ctx: Context) -> int:
    from edged.gallery.unknowns import ignore_labels

    with open_gallery(ctx) as gallery:
        labels = ignore_labels(gallery)
    if ctx.json:
        ctx.emit_json({"labels": [{"label": x.label, "samples": x.samples, "embedder_versions": x.embedder_versions,
                                   "created": x.created, "updated": x.updated} for x in labels]})
        return 0
    if labels:
        width = max(len(x.label) for x in labels)
        ctx.print(f"{'LABEL':<{width}}  SAMPLES  UPDATED")
        for x in labels:
            ctx.print(f"{x.label:<{width}}  {x.samples:>7}  {x.updated}")
    ctx.print(f"{len(labels)} ignore labels, {sum(x.samples for x in labels)} samples ({ctx.gallery_path()})")
    return 0


def cmd_ignore_remove(ctx: Context) -> int:
    from edged.gallery.unknowns import remove_ignore

    with open_gallery(ctx) as gallery:
        n = remove_ignore(gallery, ctx.args.label)
    if ctx.json:
        ctx.emit_json({"label": ctx.args.label, "removed": n})
    else:
        ctx.print(f"removed ignore label {ctx.args.label} ({n} samples)")
    return 0
