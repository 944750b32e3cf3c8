"""Shared CLI plumbing: context (config, paths), JSON output, progress bars."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TextIO

from edged.config import Config, default_config, load_config


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
        from edged.models import models_dir

        return models_dir(self.config.models.dir)

    def embedder(self, name: str | None = None) -> Any:
        """The embedder chosen on the command line (or in config), with config options applied."""
        from edged.embed import get_embedder

        cfg = self.config.embedder
        chosen = name or cfg.name
        if chosen == "nn4":
            return get_embedder("nn4", weights=cfg.weights, device=cfg.device, threads=cfg.threads,
                                backend=cfg.backend, models_dir=str(self.models_dir()))
        return get_embedder(chosen)

    def print(self, *parts: Any) -> None:
        print(*parts, file=self.out)

    def emit_json(self, obj: Any) -> None:
        json.dump(obj, self.out, indent=None, separators=(",", ":"))
        self.out.write("\n")
        self.out.flush()

    def progress(self, total: int, label: str) -> Progress:
        return Progress(total, label, enabled=not self.json and sys.stderr.isatty())


class Progress:
    """A one-line progress bar on stderr (only on a terminal)."""

    def __init__(self, total: int, label: str, enabled: bool = True, width: int = 30) -> None:
        self.total = max(total, 0)
        self.label = label
        self.enabled = enabled
        self.width = width
        self.done = 0
        self.start = time.monotonic()
        self._last = 0.0
        self.extra = ""

    def update(self, done: int | None = None, extra: str = "") -> None:
        self.done = self.done + 1 if done is None else done
        self.extra = extra or self.extra
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and self.done < self.total):
            return
        self._last = now
        frac = self.done / self.total if self.total else 1.0
        filled = int(frac * self.width)
        elapsed = now - self.start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
                         f"{self.done}/{self.total} {elapsed:.0f}s eta {eta:.0f}s {self.extra}\033[K")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
