"""`edged models list|fetch|import|verify`: embedder weights (and the liveness models) in the models directory."""

from __future__ import annotations

import argparse

from edged.cli.common import Context, json_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, download, import and verify embedder weights and the liveness models")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True

    q = msub.add_parser("list", help="registered and installed models (and dlib's files), with paths, checksums and "
                                     "licences")
    json_option(q)
    q.set_defaults(func=cmd_list)

    q = msub.add_parser("fetch", help="download a registered model, verify its checksum, install it")
    q.add_argument("name", metavar="NAME", help="model name from 'edged models list', e.g. nn4.small2.v1")
    q.add_argument("--format", choices=("t7", "pt", "onnx"),
                   help="which file of the model (default: the first listed; every file of minifasnet)")
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

    q = msub.add_parser("verify", help="check checksums and load every installed model (or those named; "
                                       "'dlib': dlib's files)")
    q.add_argument("names", nargs="*", metavar="NAME")
    json_option(q)
    q.set_defaults(func=cmd_verify)


def cmd_list(ctx: Context) -> int:
    from edged.models import store as models
    from edged.models.dlib_models import PACKAGE, dlib_rows
    from edged.models.registry import load_registry

    directory = ctx.models_dir()
    rows = models.list_models(directory, load_registry())
    dlib = dlib_rows()
    if ctx.json:
        ctx.emit_json({"models_dir": str(directory), "models": rows + dlib})
        return 0
    ctx.print(f"models directory: {directory}")
    for row in rows:
        state = "installed" if row["installed"] else "not installed"
        checksum = f"md5 {row['md5']}" if row["md5"] else (f"sha256 {row['sha256']}" if row["sha256"] else "")
        ctx.print(f"{row['name']:<24} {row['format']:<6} {state:<14} {row['path']}  {checksum}".rstrip())
    ctx.print(f"dlib's model files (the {PACKAGE} package):")
    for row in dlib:
        state = "installed" if row["installed"] else "not installed"
        ctx.print(f"{row['name']:<24} {row['format']:<6} {state:<14} {row['path'] or row['file']}")
        ctx.print(f"{'':<24} for {row['description']}; licence: {row['licence']}")
    return 0


def cmd_fetch(ctx: Context) -> int:
    from edged.models import store as models
    from edged.models.registry import load_registry

    registry = load_registry()
    entry = registry.require(ctx.args.name)
    bars = []

    def progress_of(file: models.ModelFile) -> models.ProgressFn:
        progress = ctx.progress(max(file.size or 0, 1) // 1024, f"fetch {file.file} (KiB)")
        bars.append(progress)

        def report(done: int, total: int) -> None:
            if total:
                progress.total = total // 1024
            progress.update(done // 1024)

        return report

    try:
        fetched = models.fetch_all(entry.name, ctx.models_dir(), registry, fmt=ctx.args.format, url=ctx.args.url,
                                   force=ctx.args.force, timeout=ctx.args.timeout, progress=progress_of)
    finally:
        for bar in bars:
            bar.close()
    path, downloaded = fetched[0]
    if ctx.json:
        out: dict[str, object] = {"name": entry.name, "path": str(path), "downloaded": downloaded}
        if len(fetched) > 1:
            out["downloaded"] = any(d for _, d in fetched)
            out["files"] = [{"path": str(p), "downloaded": d} for p, d in fetched]
        ctx.emit_json(out)
    else:
        for p, d in fetched:
            ctx.print(f"{entry.name}: {'installed' if d else 'already installed'} at {p}")
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
    from edged.errors import EdgedError
    from edged.models import store as models
    from edged.models.dlib_models import NAME as DLIB
    from edged.models.dlib_models import verify_dlib
    from edged.models.registry import load_registry

    directory = ctx.models_dir()
    registry = load_registry()
    names = list(dict.fromkeys(ctx.args.names))
    known = [e.name for e in registry.entries] + [m.name for m in models.installed_models(directory, registry)
                                                  if m.entry is None] + [DLIB]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise EdgedError(f"unknown model{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                         f"(known: {', '.join(dict.fromkeys(known))}; see 'edged models list')")
    others = [n for n in names if n != DLIB]
    results = models.verify(directory, registry, others) if others or not names else []
    if not names or DLIB in names:
        results += [models.VerifyResult(*row) for row in verify_dlib()]
    if ctx.json:
        ctx.emit_json({"models_dir": str(directory), "results": [
            {"name": r.name, "path": str(r.path), "ok": r.ok, "message": r.message} for r in results]})
    else:
        if not results:
            ctx.print(f"no models installed in {directory}")
        for r in results:
            ctx.print(f"{r.name}: {r.path}: {r.message}")
    return 0 if all(r.ok for r in results) else 1
