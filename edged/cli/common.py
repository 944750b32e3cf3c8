"""Shared CLI plumbing: context (config, paths), JSON output, progress bars."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TextIO

from edged.config import Config, default_config, load_config


def json_option(parser: argparse.ArgumentParser, help: str = "machine-readable output") -> None:
    """`--json`: one JSON object on stdout instead of tables (and no progress bars)."""
    parser.add_argument("--json", action="store_true", help=help)


def embedder_option(parser: argparse.ArgumentParser, default: str = "config embedder.name (dlib)") -> None:
    """`--embedder dlib|nn4`."""
    from edged.embed import EMBEDDERS

    parser.add_argument("--embedder", choices=EMBEDDERS, help=f"default: {default}")


@dataclass
class Context:
    """What every command gets: parsed arguments and lazily loaded settings."""

    args: argparse.Namespace
    out: TextIO = field(default_factory=lambda: sys.stdout)

    @cached_property
    def config(self) -> Config:
        path = self.args.config or os.environ.get("EDGED_CONFIG")
        return load_config(path) if path else default_config()

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    def gallery_path(self) -> Path:
        """--gallery, else $EDGED_GALLERY, else config gallery.path (default ~/.local/share/edged/gallery.db)."""
        chosen = self.args.gallery or os.environ.get("EDGED_GALLERY") or self.config.gallery.path
        return Path(chosen).expanduser()

    def models_dir(self) -> Path:
        from edged.models.store import models_dir

        return models_dir(self.config.models.dir)

    def embedder(self, name: str | None = None) -> Any:
        """The embedder chosen on the command line (or in config), with config options applied."""
        from edged.models.embedders import embedder_from_config

        return embedder_from_config(self.config, name)

    def print(self, *parts: Any) -> None:
        print(*parts, file=self.out)

    def emit_json(self, obj: Any) -> None:
        """One line of valid JSON: a non-finite number (NaN, Infinity: not JSON) is written as null."""
        try:
            text = json.dumps(obj, indent=None, separators=(",", ":"), allow_nan=False)
        except ValueError:
            text = json.dumps(_finite(obj), indent=None, separators=(",", ":"), allow_nan=False)
        self.out.write(text + "\n")
        self.out.flush()

    def progress(self, total: int, label: str) -> Progress:
        return Progress(total, label, enabled=not self.json and sys.stderr.isatty())


def _finite(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None (JSON has no such numbers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


class Progress:
    """A tqdm progress bar on stderr, shown only on a terminal: `update(done)` sets the count, `update()` adds one."""

    def __init__(self, total: int, label: str, enabled: bool = True) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=max(total, 0), desc=label, disable=not enabled, file=sys.stderr, dynamic_ncols=True,
                         leave=True)

    @property
    def total(self) -> int:
        return int(self._bar.total or 0)

    @total.setter
    def total(self, value: int) -> None:
        self._bar.total = max(value, 0)

    @property
    def done(self) -> int:
        return int(self._bar.n)

    def update(self, done: int | None = None, extra: str = "") -> None:
        if extra:
            self._bar.set_postfix_str(extra, refresh=False)
        self._bar.update(1 if done is None else done - self._bar.n)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
