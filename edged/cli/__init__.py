"""The `edged` command line."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from edged import __version__
from edged.errors import EdgedError

#: Command modules; each has `register(subparsers)` adding commands whose handler is `func(ctx) -> int`.
COMMAND_MODULES = ("faces", "gallery", "unknowns", "audit", "run", "web", "fleet", "service", "models", "eval",
                   "bench", "train")

log = logging.getLogger("edged")


def _global_options(parser: argparse.ArgumentParser, default: object = None) -> None:
    """--config, --gallery and -v; accepted before the command and after it (`edged run --config x.yaml`)."""
    def given(value: object) -> object:
        return argparse.SUPPRESS if default is argparse.SUPPRESS else value

    parser.add_argument("--config", metavar="FILE", default=given(None),
                        help="YAML config (default: $EDGED_CONFIG, else built-in defaults)")
    parser.add_argument("--gallery", metavar="PATH", default=given(None),
                        help="gallery file (default: $EDGED_GALLERY, else config gallery.path)")
    parser.add_argument("-v", "--verbose", action="count", default=given(0),
                        help="more log output (-vv for debug)")


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every (nested) command parser below `parser`."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                out += [child, *_subparsers(child)]
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edged", description="Face recognition daemon for edge devices.")
    parser.add_argument("--version", action="version", version=f"edged {__version__}")
    _global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"edged.cli.{name}").register(sub)
    for child in _subparsers(parser):
        _global_options(child, argparse.SUPPRESS)  # given after the command, they override the ones before
    return parser


def main(argv: list[str] | None = None) -> int:
    from edged.cli.common import Context

    if "run" in (sys.argv[1:] if argv is None else argv):
        # Until the daemon installs its handlers (after the imports and model loads), a SIGHUP (reload) must not
        # kill it; SIGTERM keeps its default (stop now).
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
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
