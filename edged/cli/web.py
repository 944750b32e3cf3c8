"""`edged web ...`: the web page without the daemon, its password and API tokens."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
import time
from typing import TYPE_CHECKING

from edged.cli.common import Context
from edged.errors import EdgedError

if TYPE_CHECKING:
    from edged.web.auth import AuthFile

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("web", help="the web page: serve it alone, set its password, manage API tokens",
                       description="Without ACTION: serve the page and REST API from the gallery file (people, "
                                   "unknown visitors, access log) without the daemon; the live view and the events "
                                   "need `edged run` with web.enabled. Settings: the config's web section.")
    p.set_defaults(func=cmd_serve)
    wsub = p.add_subparsers(dest="web_command", metavar="ACTION")
    q = wsub.add_parser("serve", help="serve the page (the default)")
    q.add_argument("--port", type=int, help="port (default web.port)")
    q.set_defaults(func=cmd_serve)
    q = wsub.add_parser("set-password", help="set the page's password (asked twice; or one line on stdin)")
    q.set_defaults(func=cmd_set_password)
    q = wsub.add_parser("add-token", help="make an API token NAME (printed once; only its hash is kept)")
    q.add_argument("name", metavar="NAME")
    q.set_defaults(func=cmd_add_token)
    q = wsub.add_parser("tokens", help="list API token names")
    q.set_defaults(func=cmd_tokens)
    q = wsub.add_parser("remove-token", help="revoke an API token")
    q.add_argument("name", metavar="NAME")
    q.set_defaults(func=cmd_remove_token)


def _auth(ctx: Context) -> AuthFile:
    from edged.web.auth import AuthFile
    from edged.web.server import auth_path

    return AuthFile(auth_path(ctx.config, ctx.gallery_path()))


def cmd_set_password(ctx: Context) -> int:
    auth = _auth(ctx)
    if sys.stdin.isatty():
        first = getpass.getpass("new web password: ")
        if getpass.getpass("again: ") != first:
            raise EdgedError("the two passwords differ; nothing changed")
    else:
        first = sys.stdin.readline(4096).rstrip("\r\n")
    auth.set_password(first)
    ctx.print(f"web password set in {auth.path} (argon2 hash, mode 0600); logged-in sessions of a running "
              f"page stay until they expire or it restarts")
    return 0


def cmd_add_token(ctx: Context) -> int:
    auth = _auth(ctx)
    token = auth.add_token(ctx.args.name, time.time())
    print(token)
    print(f"API token {ctx.args.name!r} made; it is shown only now (send it as 'Authorization: Bearer TOKEN')",
          file=sys.stderr)
    return 0


def cmd_tokens(ctx: Context) -> int:
    for t in _auth(ctx).tokens():
        ctx.print(f"{t.name}  {t.created}")
    return 0


def cmd_remove_token(ctx: Context) -> int:
    if not _auth(ctx).remove_token(ctx.args.name):
        raise EdgedError(f"no API token named {ctx.args.name!r}")
    ctx.print(f"API token {ctx.args.name!r} revoked")
    return 0


def cmd_serve(ctx: Context) -> int:
    from edged.models.embedders import embedder_from_config
    from edged.web.app import WebContext, create_app
    from edged.web.server import WebServer

    cfg = ctx.config
    port = getattr(ctx.args, "port", None)
    if port is not None:
        if not 1 <= port <= 65535:
            raise EdgedError(f"--port: must be 1-65535, got {port}")
        cfg = cfg.model_copy(update={"web": cfg.web.model_copy(update={"port": port})})
    auth = _auth(ctx)
    if not auth.has_password:
        log.warning("web: no password set: nobody can log in until `edged web set-password`")
    web = cfg.web
    app = create_app(WebContext(cfg, ctx.gallery_path(), auth, live=None,
                                make_embedder=lambda name: embedder_from_config(cfg, name),
                                tls=bool(web.tls.cert_file and web.tls.key_file)))
    logging.getLogger("edged").setLevel(min(logging.getLogger("edged").level or logging.INFO, logging.INFO))
    WebServer(app, web).run_foreground()
    return 0
