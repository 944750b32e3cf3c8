"""`edged models list|fetch|import|verify`: embedder weights in the models directory."""

from __future__ import annotations

import argparse

from edged.cli.common import Context, json_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, download, import and verify embedder weights")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True

    q = msub.add_parser("list", help="registered and installed models, with paths and checksums")
    json_option(q)
    q.set_defaults(func=cmd_list)

    q = msub.add_parser("fetch", help="download a registered model, verify its checksum, install it")
    q.add_argument("name", metavar="NAME", help="model name from 'edged models list', e.g. nn4.small2.v1")
    q.add_argument("--format", choices=("t7", "pt"), help="which file of the model (default: the first listed)")
    q.add_argument("--url", help="download from this URL instead (default: $EDGED_MODELS_BASE_URL/FILE, "
                                 "else the registry's)")
    q.add_argument("--force", action="store_true", help="download even if already installed")
    q.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default 60)")
    json_option(q)
    q.set_defaults(func=cmd_fetch)

    q = msub.add_parser("import", help="check weights (t7, pt, Keras-OpenFace CSV dir) and install them")
    q.add_argument("path", metavar="PATH", help="nn4.small2 weights: .t7, .pt or a directory of CSV files")
    q.add_argument("--name", help="model name (default: the registered name if the checksum matches, "
                                  "else the file name)")
    q.add_argument("--threshold", type=float, help="squared-L2 match threshold of unregistered weights "
                                                   "(default: recorded in the file, else 0.99)")
    q.add_argument("--force", action="store_true", help="replace an installed model of the same name")
    json_option(q)
    q.set_defaults(func=cmd_import)

    q = msub.add_parser("verify", help="check checksums and load every installed model (or those named)")
    q.add_argument("names", nargs="*", metavar="NAME")
    json_option(q)
    q.set_defaults(func=cmd_verify)


def cmd_list(ctx: Context) -> int:
    from edged.models import store as models
    from edged.models.registry import load_registry

    directory = ctx.models_dir()
    rows = models.list_models(directory, load_registry())
    if ctx.json:
        ctx.emit_json({"models_dir": str(directory), "models": rows})
        return 0
    ctx.print(f"models directory: {directory}")
    for row in rows:
        state = "installed" if row["installed"] else "not installed"
        checksum = f"md5 {row['md5']}" if row["md5"] else (f"sha256 {row['sha256']}" if row["sha256"] else "")
        ctx.print(f"{row['name']:<24} {row['format']:<6} {state:<14} {row['path']}  {checksum}".rstrip())
    return 0


def cmd_fetch(ctx: Context) -> int:
    from edged.models import store as models
    from edged.models.registry import load_registry

    registry = load_registry()
    entry = registry.require(ctx.args.name)
    file = entry.file_of(ctx.args.format)
    progress = ctx.progress(max(file.size or 0, 1) // 1024, f"fetch {file.file} (KiB)")

    def report(done: int, total: int) -> None:
        if total:
            progress.total = total // 1024
        progress.update(done // 1024)

    try:
        path, downloaded = models.fetch(entry.name, ctx.models_dir(), registry, fmt=ctx.args.format,
                                        url=ctx.args.url, force=ctx.args.force, timeout=ctx.args.timeout,
                                        progress=report)
    finally:
        progress.close()
    if ctx.json:
        ctx.emit_json({"name": entry.name, "path": str(path), "downloaded": downloaded})
    else:
        ctx.print(f"{entry.name}: {'installed' if downloaded else 'already installed'} at {path}")
    return 0


def cmd_import(ctx: Context) -> int:
    from edged.models import store as models
    from edged.models.registry import load_registry

    result = models.import_weights(ctx.args.path, ctx.models_dir(), load_registry(), name=ctx.args.name,
                                   threshold=ctx.args.threshold, force=ctx.args.force)
    if ctx.json:
        ctx.emit_json({"name": result.name, "path": str(result.path), "source_format": result.source_format,
                       "registered": result.registered, "threshold": result.threshold})
    else:
        known = "registered model" if result.registered else "unregistered weights"
        ctx.print(f"{result.name}: imported {known} from {result.source_format} to {result.path} "
                  f"(threshold {result.threshold:g})")
    return 0


def cmd_verify(ctx: Context) -> int:
    from edged.models import store as models
    from edged.models.registry import load_registry

    directory = ctx.models_dir()
    results = models.verify(directory, load_registry(), ctx.args.names or None)
    if ctx.json:
        ctx.emit_json({"models_dir": str(directory), "results": [
            {"name": r.name, "path": str(r.path), "ok": r.ok, "message": r.message} for r in results]})
    else:
        if not results:
            ctx.print(f"no models installed in {directory}")
        for r in results:
            ctx.print(f"{r.name}: {r.path}: {r.message}")
    return 0 if all(r.ok for r in results) else 1
