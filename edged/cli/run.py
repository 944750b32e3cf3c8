"""`edged run` (the daemon) and `edged check-config FILE...`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from edged.cli.common import Context, json_option
from edged.config import ConfigErrors, load_config, mqtt_password
from edged.errors import ConfigError, EdgedError, GalleryError
from edged.fileio import atomic_write

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the recognition daemon (camera -> recognition -> MQTT)",
                       description="Run the daemon with the config from --config or $EDGED_CONFIG. Stops on "
                                   "SIGTERM/SIGINT or at the end of a video file; SIGHUP reloads the gallery.")
    p.add_argument("--source", metavar="SRC", help="override camera.source (index, /dev/videoN, URL or video file)")
    p.add_argument("--stats-json", metavar="FILE", help="write run statistics (fps, stage times, RSS...) at exit")
    p.add_argument("--create", action="store_true",
                   help="start with an empty gallery when there is none (default: refuse; 'edged enroll' creates it)")
    json_option(p, "print the run statistics as JSON on stdout at exit")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate config files; print every problem with key and line")
    p.add_argument("files", nargs="+", metavar="FILE")
    json_option(p)
    p.set_defaults(func=cmd_check_config)




def cmd_run(ctx: Context) -> int:
    from edged.runtime.daemon import Daemon
    from edged.runtime.systemd import setup_logging

    if not (ctx.args.config or os.environ.get("EDGED_CONFIG")):
        raise ConfigError("edged run needs a config file: --config FILE or $EDGED_CONFIG "
                          "(see config/edged.yaml for a commented example)")
    cfg = ctx.config
    if ctx.args.source is not None:
        if cfg.multi_camera:
            raise ConfigError(f"--source replaces the camera's source, but this config has {len(cfg.cameras)} "
                              "cameras (cameras:): set each camera's source in the config")
        source: int | str = int(ctx.args.source) if ctx.args.source.isdigit() else ctx.args.source
        cfg = cfg.model_copy(update={"camera": cfg.camera.model_copy(update={"source": source})})
    level = {0: cfg.logging.level, 1: "INFO", 2: "DEBUG"}[min(ctx.args.verbose, 2)]
    if ctx.args.verbose == 1 and cfg.logging.level == "DEBUG":
        level = "DEBUG"
    setup_logging(level, cfg.logging.target)
    gallery = ctx.gallery_path()
    if not ctx.args.create and not gallery.exists():
        # a mistyped --gallery (or a lost state directory) must not become an empty gallery: everyone "unknown"
        raise GalleryError(f"{gallery}: no gallery here; enroll people first (edged --gallery {gallery} enroll NAME "
                           f"PHOTO...) or start with an empty one: edged run --create")
    stats_path = Path(ctx.args.stats_json) if ctx.args.stats_json else None
    if stats_path is not None and not stats_path.parent.is_dir():
        raise EdgedError(f"--stats-json {stats_path}: directory {stats_path.parent} does not exist")
    daemon = Daemon(cfg, gallery_path=gallery, embedder=ctx.embedder(), create=ctx.args.create)
    stats = daemon.run()
    payload = stats.to_dict()
    if stats_path is not None:
        atomic_write(stats_path, json.dumps(payload, indent=2) + "\n")
    if ctx.json:
        ctx.emit_json(payload)
    log.info("edged stopped (%s): %d frames in %.1f s, %.1f fps", stats.exit_reason, stats.frames_processed,
             stats.wall_s, stats.fps)
    return 0


def _int8_problem(cfg: Any) -> str | None:
    """Why the configured nn4 int8 model cannot run (missing, made from other weights, an old recipe), or None."""
    import numpy as np

    from edged.models.embedders import embedder_from_config

    try:
        embedder = embedder_from_config(cfg)
        size = embedder.alignment.size
        embedder.embed(np.zeros((1, size, size, 3), np.uint8))
    except EdgedError as exc:
        return str(exc)
    return None


def cmd_check_config(ctx: Context) -> int:
    results = []
    for name in ctx.args.files:
        try:
            cfg = load_config(name)
        except ConfigErrors as exc:
            results.append({"file": name, "ok": False, "problems": exc.problems})
            continue
        if cfg.liveness.enabled and cfg.liveness.require != "motion":
            from edged.models.liveness import minifasnet_paths
            from edged.models.store import models_dir

            try:
                minifasnet_paths(models_dir(cfg.models.dir), check=False)
            except EdgedError as exc:
                results.append({"file": name, "ok": False, "problems": [f"{name}: liveness.enabled: {exc}"]})
                continue
        if cfg.fleet.enabled and cfg.fleet.id:
            from edged.config import fleet_box, fleet_dir
            from edged.fleet.keys import load_box

            try:
                # the gallery the daemon would use (--gallery, $EDGED_GALLERY, gallery.path): the keys sit beside it
                load_box(fleet_dir(cfg, ctx.args.gallery or os.environ.get("EDGED_GALLERY") or None), cfg.fleet.id,
                         fleet_box(cfg))
            except EdgedError as exc:
                results.append({"file": name, "ok": False, "problems": [f"{name}: fleet: {exc}"]})
                continue
        if cfg.embedder.name == "nn4" and cfg.embedder.backend == "onnxruntime-int8":
            problem = _int8_problem(cfg)  # the daemon would refuse it at start: say so here
            if problem:
                results.append({"file": name, "ok": False, "problems": [f"{name}: embedder.backend: {problem}"]})
                continue
        notes = []
        from edged.models.detectors import choose_detector
        from edged.models.store import models_dir

        try:
            choice = choose_detector(cfg.detector, models_dir(cfg.models.dir), check=False)
        except EdgedError as exc:
            results.append({"file": name, "ok": False, "problems": [f"{name}: detector.backend: {exc}"]})
            continue
        if choice.note:
            notes.append(choice.note)
        if cfg.mqtt.username and mqtt_password(cfg.mqtt) is None:
            notes.append("mqtt.username is set but no password was found (mqtt.password, password_file, "
                         "$EDGED_MQTT_PASSWORD or $CREDENTIALS_DIRECTORY/mqtt_password)")
        results.append({"file": name, "ok": True, "problems": [], "notes": notes})
    if ctx.json:
        ctx.emit_json({"results": results})
    else:
        for r in results:
            if r["ok"]:
                ctx.print(f"{r['file']}: OK")
                for note in r["notes"]:
                    ctx.print(f"{r['file']}: note: {note}")
            else:
                for problem in r["problems"]:
                    print(f"edged: error: {problem}", file=sys.stderr)
    return 0 if all(r["ok"] for r in results) else ConfigError.exit_code
