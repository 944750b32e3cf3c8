"""The `edged` command line."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from edged import __version__
from edged.errors import EdgedError

#: Command modules; each has `register(subparsers)` adding commands whose handler is `func(ctx) -> int`.
COMMAND_MODULES = ("faces", "gallery", "run", "models", "eval", "bench", "train")

log = logging.getLogger("edged")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edged", description="Face recognition daemon for edge devices.")
    parser.add_argument("--version", action="version", version=f"edged {__version__}")
    parser.add_argument("--config", metavar="FILE", help="YAML config (default: $EDGED_CONFIG, else built-in defaults)")
    parser.add_argument("--gallery", metavar="PATH",
                        help="gallery file (default: $EDGED_GALLERY, else config gallery.path)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"edged.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from edged.cli.common import Context

    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(Context(args)) or 0)
    except EdgedError as exc:
        print(f"edged: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edged: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
