"""`edged audit ...`: read, verify, export and purge the door's hash-chained audit log."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edged.cli.common import Context, json_option
from edged.cli.gallery import open_gallery
from edged.errors import EdgedError

if TYPE_CHECKING:
    from edged.gallery.audit import AuditRecord, VerifyReport

#: Where `verify` explains what the head hash is for.
HEAD_HINT = ("record the head hash outside this machine: removing the newest rows is only detectable "
             "against it (edged audit verify --expect-head HASH)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="the door's audit log: list, show, verify, export, purge",
                       description="Every access decision of the door, in the gallery file (mode 0600), each row "
                                   "hash-chained to the one before it so an edited or deleted row is found.")
    asub = p.add_subparsers(dest="audit_command", metavar="ACTION")
    asub.required = True
    q = asub.add_parser("list", help="recorded decisions, newest first")
    q.add_argument("--since", metavar="ISO", help="only decisions at or after this time (ISO-8601; naive = UTC)")
    q.add_argument("--until", metavar="ISO", help="only decisions before this time")
    q.add_argument("--door", metavar="D", help="only this door")
    q.add_argument("--person", metavar="P", help="only decisions about this person")
    q.add_argument("--decision", metavar="X", help="only this decision (granted, denied, alarm, ...)")
    q.add_argument("--limit", type=int, metavar="N", help="at most the newest N")
    json_option(q)
    q.set_defaults(func=cmd_list)
    q = asub.add_parser("show", help="one decision with its reasons, scores and hashes")
    q.add_argument("id", type=int, metavar="ID")
    q.add_argument("--crop", metavar="FILE.png", help="write the face crop, if one was recorded, to FILE (0600)")
    q.add_argument("--force", action="store_true", help="overwrite FILE")
    json_option(q)
    q.set_defaults(func=cmd_show)
    q = asub.add_parser("verify", help="check the hash chain; exit 1 naming the first bad row",
                        description=f"Exit 0 when the chain is intact, 1 when not. It prints the head hash: "
                                    f"{HEAD_HINT}.")
    q.add_argument("--expect-head", metavar="HASH",
                   help="a head hash recorded earlier; fail when it is no longer in the chain")
    json_option(q)
    q.set_defaults(func=cmd_verify)
    q = asub.add_parser("export", help="write the log as JSON lines (0600), oldest first",
                        description="One JSON object per row: its fields, prev_hash and hash (SHA-256 of the "
                                    "canonical JSON of the other fields, crop excluded), so the copy can be "
                                    "checked without edged.")
    q.add_argument("file", metavar="FILE")
    q.add_argument("--crops", action="store_true", help="include the face crops (base64 PNG)")
    q.add_argument("--force", action="store_true", help="overwrite FILE")
    json_option(q)
    q.set_defaults(func=cmd_export)
    q = asub.add_parser("purge", help="delete old decisions (retention); the chain stays verifiable")
    q.add_argument("--older-than", type=float, metavar="DAYS",
                   help="decisions older than this (default config audit.retention_days)")
    q.add_argument("--force", action="store_true",
                   help="purge even rows that fail verification (export them first)")
    json_option(q)
    q.set_defaults(func=cmd_purge)


# ---- output helpers ----

def _record_json(r: AuditRecord) -> dict[str, Any]:
    return {"id": r.id, "created": r.created, "door": r.door, "camera": r.camera, "decision": r.decision,
            "person": r.person, "track_id": r.track_id, "reasons": list(r.reasons), "scores": r.scores,
            "crop": r.has_crop, "config_version": r.config_version, "prev_hash": r.prev_hash, "hash": r.hash}


def _report_json(rep: VerifyReport) -> dict[str, Any]:
    return {"ok": rep.ok, "rows": rep.rows, "first_bad_id": rep.first_bad_id, "problem": rep.problem,
            "message": rep.message, "head_id": rep.head_id, "head_hash": rep.head_hash,
            "anchor_id": rep.anchor_id, "anchor_hash": rep.anchor_hash, "purged": rep.purged}


def _short(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


# ---- commands ----

def cmd_list(ctx: Context) -> int:
    from edged.gallery.audit import records

    args = ctx.args
    if args.limit is not None and args.limit < 0:
        raise EdgedError(f"--limit must be >= 0, got {args.limit}")
    with open_gallery(ctx) as gallery:
        found = records(gallery, since=args.since, until=args.until, door=args.door, person=args.person,
                        decision=args.decision, limit=args.limit)
    if ctx.json:
        ctx.emit_json({"records": [_record_json(r) for r in found]})
        return 0
    if found:
        ctx.print(f"{'ID':>7}  {'CREATED':<24}  {'DOOR':<12}  {'DECISION':<8}  {'PERSON':<16}  CROP  REASONS")
        for r in found:
            ctx.print(f"{r.id:>7}  {r.created:<24}  {r.door:<12}  {r.decision:<8}  {r.person or '-':<16}  "
                      f"{'yes' if r.has_crop else '-':<4}  {', '.join(r.reasons)}")
    ctx.print(f"{len(found)} decisions ({ctx.gallery_path()})")
    return 0


def cmd_show(ctx: Context) -> int:
    from edged.fileio import atomic_write
    from edged.gallery.audit import record

    args = ctx.args
    target = Path(args.crop).expanduser() if args.crop else None
    if target is not None and target.exists() and not args.force:
        raise EdgedError(f"{target} exists; refusing to overwrite it (--force)")
    with open_gallery(ctx) as gallery:
        r = record(gallery, args.id, with_crop=target is not None)
    if target is not None:
        if r.crop is None:
            raise EdgedError(f"audit row {r.id} has no face crop (audit.keep_crops was false)")
        atomic_write(target, r.crop, 0o600)
    if ctx.json:
        ctx.emit_json({**_record_json(r), "crop_written": str(target) if target else None})
        return 0
    ctx.print(f"audit row {r.id}: {r.created} door {r.door} camera {r.camera}: {r.decision}"
              f"{' ' + r.person if r.person else ''}" + (f" (track {r.track_id})" if r.track_id is not None else ""))
    ctx.print(f"  reasons: {', '.join(r.reasons) or '-'}")
    ctx.print(f"  scores: {_short(r.scores) or '-'}")
    ctx.print(f"  crop: {'yes' if r.has_crop else 'no'}; config version: {r.config_version or '-'}")
    ctx.print(f"  prev_hash: {r.prev_hash}")
    ctx.print(f"  hash: {r.hash}")
    if target is not None:
        ctx.print(f"wrote the face crop to {target}")
    return 0


def cmd_verify(ctx: Context) -> int:
    from edged.gallery.audit import verify

    with open_gallery(ctx) as gallery:
        rep = verify(gallery, expect_head=ctx.args.expect_head)
    if ctx.json:
        ctx.emit_json(_report_json(rep))
        return 0 if rep.ok else 1
    if not rep.ok:
        raise EdgedError(rep.message)
    ctx.print(f"{rep.message}; head: row {rep.head_id} {rep.head_hash}")
    ctx.print(HEAD_HINT)
    return 0


def cmd_export(ctx: Context) -> int:
    from edged.gallery.audit import export

    args = ctx.args
    with open_gallery(ctx) as gallery:
        n = export(gallery, args.file, crops=args.crops, overwrite=args.force)
    if ctx.json:
        ctx.emit_json({"file": args.file, "rows": n, "crops": bool(args.crops)})
    else:
        ctx.print(f"wrote {n} audit rows to {args.file}" + (" with face crops" if args.crops else ""))
    return 0


def cmd_purge(ctx: Context) -> int:
    from edged.gallery.audit import purge

    args = ctx.args
    days = ctx.config.audit.retention_days if args.older_than is None else args.older_than
    if not days >= 0:
        raise EdgedError(f"--older-than must be >= 0 days, got {days:g}")
    with open_gallery(ctx) as gallery:
        n = purge(gallery, days, force=args.force)
    if ctx.json:
        ctx.emit_json({"purged": n, "older_than_days": days})
    else:
        ctx.print(f"purged {n} audit rows older than {days:g} days")
    return 0
