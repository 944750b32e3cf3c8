"""Exceptions with one-line, user-facing messages.

Every error a user can cause (bad file, bad config, missing model) is an `EdgedError`;
the CLI prints its message on one line and exits non-zero.
"""

from __future__ import annotations


class EdgedError(Exception):
    """Base for errors shown to users as a single line."""

    exit_code = 1

    def __str__(self) -> str:
        text = " ".join(super().__str__().split())
        if text.isprintable():
            return text
        # one printable line whatever went in: control characters (ESC...) and undecodable bytes
        # (lone surrogates from file names) escaped, so printing it can neither fail nor drive a terminal
        return "".join(c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF
                       else c.encode("unicode_escape", "backslashreplace").decode("ascii") for c in text)


class ImageError(EdgedError):
    """An image file is missing, unreadable, corrupt or of an unsupported kind."""


class NoFaceError(EdgedError):
    """No face was found where one was required."""


class ModelNotInstalledError(EdgedError):
    """A model's weights are not installed."""


class ModelFileError(EdgedError):
    """A model file is corrupt, truncated, of the wrong format or has wrong shapes."""


class UsageError(EdgedError):
    """The command line asks for something the command cannot do (exit 2, like argparse's usage errors)."""

    exit_code = 2


class ConfigError(EdgedError):
    """Configuration is invalid."""

    exit_code = 2


class GalleryError(EdgedError):
    """The gallery file or an operation on it is invalid."""
