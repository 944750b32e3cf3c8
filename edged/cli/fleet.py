"""`edged fleet ...`: make a fleet, let boxes join it, see every box, sync without cameras."""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

from edged.cli.common import Context, json_option
from edged.errors import ConfigError, EdgedError

#: `edged fleet status` waits this long for the boxes' retained health, and reads health of at most this size.
STATUS_WAIT_S = 3.0
HEALTH_MAX = 64 * 1024


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fleet", help="boxes sharing one gallery over MQTT: init, join, admit, revoke, status, sync",
                       description="Boxes with the same fleet.id share their gallery: every enroll, removal, rename "
                                   "and ignore-list change is published as a signed record, retained on the broker "
                                   "(docs/fleet.md).")
    fsub = p.add_subparsers(dest="fleet_command", metavar="ACTION")
    fsub.required = True
    q = fsub.add_parser("init", help="make a new fleet with this box as its first member (and root)",
                        description="Writes the fleet's root key and this box's key and certificate into fleet.dir "
                                    "(0600) and prints the fleet token the other boxes join with.")
    _ids(q)
    q.set_defaults(func=cmd_init)
    q = fsub.add_parser("join", help="join a fleet: with its token (prints a join request), then --cert CERT",
                        description="Step 1 on the new box: 'edged fleet join TOKEN' stores the fleet's root key, "
                                    "makes this box's key and prints a join request. Step 2 on the root's box: "
                                    "'edged fleet admit REQUEST' prints a certificate. Step 3 here: "
                                    "'edged fleet join --cert CERT'.")
    q.add_argument("token", nargs="?", metavar="TOKEN", help="the fleet token 'edged fleet init' printed")
    q.add_argument("--cert", metavar="CERT", help="the certificate 'edged fleet admit' printed for this box")
    _ids(q)
    q.set_defaults(func=cmd_join)
    q = fsub.add_parser("admit", help="on the root's box: a certificate for a box's join request")
    q.add_argument("request", metavar="REQUEST", help="the join request 'edged fleet join TOKEN' printed")
    _ids(q)
    q.set_defaults(func=cmd_admit)
    q = fsub.add_parser("revoke", help="on the root's box: stop trusting a box (a stolen or retired one)",
                        description="Adds every key admitted for BOX to the fleet's signed revocation list; the "
                                    "running daemon (or 'edged fleet sync') of this box publishes it, every box "
                                    "refuses that box's records from then on. Records it made before stay.")
    q.add_argument("box", metavar="BOX")
    _ids(q)
    q.set_defaults(func=cmd_revoke)
    q = fsub.add_parser("token", help="print this fleet's token again (to join another box)")
    _ids(q)
    q.set_defaults(func=cmd_token)
    q = fsub.add_parser("status", help="every box of the fleet: online, stale or offline, gallery, cameras")
    q.add_argument("--wait", type=float, default=STATUS_WAIT_S, metavar="S",
                   help=f"seconds to wait for the boxes' retained health (default {STATUS_WAIT_S})")
    _ids(q)
    json_option(q)
    q.set_defaults(func=cmd_status)
    q = fsub.add_parser("sync", help="keep this box's gallery in step with the fleet, without cameras (until "
                                     "SIGTERM or Ctrl-C)",
                        description="For an enrollment box or a server with no camera; the daemon ('edged run') "
                                    "syncs by itself when fleet.enabled is true.")
    _ids(q)
    q.set_defaults(func=cmd_sync)


def _ids(q: argparse.ArgumentParser) -> None:
    q.add_argument("--fleet-id", metavar="ID", help="the fleet (default config fleet.id)")
    q.add_argument("--box-id", metavar="ID", help="this box (default config fleet.box_id, else device_id)")
    q.add_argument("--dir", metavar="DIR", help="the key directory (default config fleet.dir, else beside the "
                                                "gallery: <gallery dir>/fleet)")


def _dir(ctx: Context) -> Path:
    from edged.config import fleet_dir

    return Path(ctx.args.dir).expanduser() if ctx.args.dir else fleet_dir(ctx.config, ctx.gallery_path())


def _box(ctx: Context) -> str:
    from edged.config import fleet_box

    return ctx.args.box_id or fleet_box(ctx.config)


def _fleet_id(ctx: Context) -> str:
    fleet = ctx.args.fleet_id or ctx.config.fleet.id
    if not fleet:
        raise ConfigError("fleet.id: not set (give --fleet-id ID or set fleet.id in the config)")
    return fleet


def cmd_init(ctx: Context) -> int:
    from edged.fleet.keys import init_fleet
    from edged.gallery.store import utc_now

    directory, fleet, box = _dir(ctx), _fleet_id(ctx), _box(ctx)
    token = init_fleet(directory, fleet, box, utc_now())
    ctx.print(f"fleet {fleet!r} made in {directory}; this box is {box!r} and holds the root key "
              f"({directory / 'root.key'}: keep a copy offline, it admits boxes)")
    ctx.print("on each other box run:")
    ctx.print(f"  edged fleet join {token}")
    return 0


def cmd_token(ctx: Context) -> int:
    from edged.fleet.keys import fleet_token

    ctx.print(fleet_token(_dir(ctx)))
    return 0


def cmd_join(ctx: Context) -> int:
    from edged.fleet.keys import install_certificate, join_fleet

    directory = _dir(ctx)
    if ctx.args.cert:
        if ctx.args.token:
            raise EdgedError("give the fleet token or --cert, not both (step 1, then step 3)")
        cert = install_certificate(directory, ctx.args.cert)
        ctx.print(f"box {cert.box!r} is now a member of fleet {cert.fleet!r} (certificate in {directory / 'box.cert'});"
                  f" set fleet.enabled: true and fleet.id: {cert.fleet} in the config")
        return 0
    if not ctx.args.token:
        raise EdgedError("give the fleet token ('edged fleet init' printed it), or --cert CERT")
    box = _box(ctx)
    request = join_fleet(directory, ctx.args.token, box)
    ctx.print(f"box {box!r}: key made in {directory / 'box.key'} (0600, it never leaves this box). On the root's box "
              f"run:")
    ctx.print(f"  edged fleet admit {request}")
    ctx.print("and then here: edged fleet join --cert CERT")
    return 0


def cmd_admit(ctx: Context) -> int:
    from edged.fleet.keys import admit
    from edged.gallery.store import utc_now

    box, cert = admit(_dir(ctx), ctx.args.request, utc_now())
    ctx.print(f"certificate for box {box!r}; on that box run:")
    ctx.print(f"  edged fleet join --cert {cert}")
    return 0


def cmd_revoke(ctx: Context) -> int:
    from edged.fleet.keys import revoke
    from edged.gallery.store import utc_now

    rev = revoke(_dir(ctx), ctx.args.box, utc_now())
    ctx.print(f"box {ctx.args.box!r} revoked (revocation list version {rev.version}, {len(rev.keys)} key(s)); this "
              f"box's running 'edged run' or 'edged fleet sync' publishes it within fleet.poll_s, and every box "
              f"refuses that box's records from then on")
    return 0


def _mqtt(ctx: Context) -> tuple[Any, str | None]:
    from edged.config import mqtt_password

    cfg = ctx.config.mqtt
    if not cfg.enabled:
        raise ConfigError("mqtt.enabled: false, but the fleet syncs over MQTT")
    return cfg, mqtt_password(cfg)


def collect_health(ctx: Context, prefix: str, wait: float) -> dict[str, dict[str, Any]]:
    """The retained health of every box (`<prefix>/box/+/health`), read for at most `wait` seconds."""
    import os

    from edged.runtime.mqtt import make_client, why_unreachable

    cfg, password = _mqtt(ctx)
    boxes: dict[str, dict[str, Any]] = {}
    done = threading.Event()
    connected = threading.Event()
    nonce = os.urandom(8).hex()
    marker = f"{prefix}/status/{nonce}"
    client = make_client(cfg, f"edged-fleet-status-{nonce}", password, clean_session=True)

    def on_connect(client, userdata, flags, reason, properties):
        if not reason.is_failure:
            connected.set()
            client.subscribe([(f"{prefix}/box/+/health", 1), (marker, 1)])

    def on_subscribe(client, userdata, mid, reasons, properties):
        client.publish(marker, b"1", qos=1)

    def on_message(client, userdata, message):
        if message.topic == marker:
            done.set()
            return
        if len(message.payload) > HEALTH_MAX:
            return
        try:
            obj = json.loads(message.payload)
        except ValueError:
            return
        if isinstance(obj, dict) and isinstance(obj.get("box"), str):
            boxes[obj["box"]] = obj

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
    client.loop_start()
    try:
        if not connected.wait(wait):
            raise EdgedError(f"fleet status: cannot reach the broker {cfg.host}:{cfg.port}: {why_unreachable(cfg)}")
        done.wait(wait)
    finally:
        client.disconnect()
        client.loop_stop()
    return boxes


def box_rows(boxes: dict[str, dict[str, Any]], stale_after_s: float, now: float) -> list[dict[str, Any]]:
    """One row per box: its state (online / stale / offline), age, gallery and cameras."""
    digests = [b.get("gallery", {}).get("items") for b in boxes.values() if b.get("online")]
    common = max(set(digests), key=digests.count) if digests else None
    rows = []
    for box, h in sorted(boxes.items()):
        wall = h.get("wall")
        age = now - float(wall) if isinstance(wall, (int, float)) else None
        state = "offline" if not h.get("online") else "stale" if age is None or age > stale_after_s else "online"
        gallery = h.get("gallery") or {}
        cams = h.get("cameras") or {}
        rows.append({"box": box, "state": state, "age_s": None if age is None else round(age, 1),
                     "edged": h.get("edged"), "people": gallery.get("people"), "items": gallery.get("items"),
                     "in_step": gallery.get("items") == common if state == "online" else None,
                     "cameras": {n: c.get("state") for n, c in cams.items()} if isinstance(cams, dict) else {},
                     "last_event": h.get("last_event")})
    return rows


def cmd_status(ctx: Context) -> int:
    from edged.fleet.sync import fleet_prefix

    fleet = _fleet_id(ctx)
    cfg = ctx.config.fleet.model_copy(update={"id": fleet})
    boxes = collect_health(ctx, fleet_prefix(cfg), max(0.5, ctx.args.wait))
    rows = box_rows(boxes, cfg.stale_after_s, time.time())
    if ctx.json:
        ctx.emit_json({"fleet": fleet, "boxes": rows})
        return 0
    if not rows:
        ctx.print(f"fleet {fleet!r}: no box has published its health on this broker")
        return 0
    ctx.print(f"fleet {fleet!r}: {len(rows)} box(es)")
    for r in rows:
        age = "" if r["age_s"] is None else f", seen {r['age_s']:.0f} s ago"
        step = "" if r["in_step"] is None else ", gallery in step" if r["in_step"] else ", gallery NOT in step"
        cams = ", ".join(f"{n} {s}" for n, s in r["cameras"].items())
        ctx.print(f"  {r['box']}: {r['state']}{age}; {r['people']} people (items {r['items']}){step}"
                  + (f"; cameras: {cams}" if cams else "") + (f"; last event {r['last_event']}" if r["last_event"]
                                                               else ""))
    return 0


def open_sync(ctx: Context, embedder_version: str | None = None, health: Any = None) -> Any:
    """The fleet sync of this box (keys checked); `embedder_version` defaults to the gallery's, else the config's."""
    from edged.config import fleet_box, fleet_dir
    from edged.fleet.keys import load_box
    from edged.fleet.sync import FleetSync
    from edged.gallery.store import Gallery

    cfg = ctx.config
    fleet = _fleet_id(ctx)
    fleet_cfg = cfg.fleet.model_copy(update={"id": fleet})
    directory = Path(ctx.args.dir).expanduser() if getattr(ctx.args, "dir", None) else fleet_dir(cfg,
                                                                                                 ctx.gallery_path())
    box = getattr(ctx.args, "box_id", None) or fleet_box(cfg)
    keys = load_box(directory, fleet, box)
    mqtt, password = _mqtt(ctx)
    if embedder_version is None:
        with Gallery(ctx.gallery_path()) as g:
            embedder_version = g.embedder_version()
        if embedder_version is None:
            embedder_version = ctx.embedder().version
    return FleetSync(fleet_cfg, mqtt, password, keys, ctx.gallery_path(), str(embedder_version), health)


def cmd_sync(ctx: Context) -> int:
    sync = open_sync(ctx)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sync.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        sync.stop()
    return 0
