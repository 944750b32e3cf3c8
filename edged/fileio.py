"""Writing files whole or not at all; reading untrusted input files safely (regular files only, size
capped, names fit for messages); catching what C libraries write to stderr."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from edged.errors import EdgedError


def atomic_write(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o600,
                 error: type[EdgedError] = EdgedError) -> None:
    """Write `data` to `path` via a temp file in the same directory, fsync, chmod and rename.

    On failure nothing is left behind and `error` is raised with a one-line message naming the file.
    """
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise error(f"cannot write {target}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise error(f"cannot write {target}: {exc.strerror or exc}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# ---- reading untrusted input files ----

#: Longest file name shown in a message; longer ones keep their start and end.
SHOWN_MAX = 160


def write_private_cache(path: Path, data: bytes) -> None:
    """Write a cache file 0600, making each missing directory above it 0700 (a models or cache directory holds
    biometric-adjacent data); `OSError` / `EdgedError` when it cannot be written."""
    for directory in reversed([p for p in (path.parent, *path.parent.parents) if not p.exists()]):
        directory.mkdir(mode=0o700)
    atomic_write(path, data, 0o600)


def shown(path: str | bytes | os.PathLike[str] | os.PathLike[bytes], limit: int = SHOWN_MAX) -> str:
    """A file name fit for a one-line message: undecodable bytes as \\xNN, control characters escaped,
    names longer than `limit` shortened in the middle ('...'), so any name prints without an error."""
    try:
        text = os.fsdecode(path)
    except (TypeError, ValueError):
        text = repr(path)
    out = []
    for c in text:
        code = ord(c)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF or not c.isprintable():
            out.append(c.encode("unicode_escape").decode("ascii"))
        else:
            out.append(c)
    text = "".join(out)
    if len(text) > limit:
        keep = max(limit - 3, 2)
        text = f"{text[: keep - keep // 3]}...{text[len(text) - keep // 3:]}"
    return text


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _why(exc: OSError) -> str:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return "no such file"
    if exc.errno == errno.ENAMETOOLONG:
        return "file name too long"
    if exc.errno == errno.ELOOP:
        return "too many levels of symbolic links"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return f"cannot read ({exc.strerror or exc})"


def check_regular(path: str | os.PathLike[str], max_bytes: int, error: type[EdgedError] = EdgedError,
                  what: str = "file") -> os.stat_result:
    """stat() `path` (following symlinks) and refuse anything but a non-empty regular file of at most
    `max_bytes`: FIFOs, devices, sockets and directories are refused without being opened, so nothing blocks.
    Raises `error` with a one-line message naming the file."""
    name = shown(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise error(f"{name}: {_why(exc)}") from exc
    except ValueError as exc:  # an embedded NUL byte
        raise error(f"{name}: invalid file name ({exc})") from exc
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{name}: is a directory, not {what}")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{name}: is {_kind_of(st.st_mode)}, not {what}")
    if st.st_size == 0:
        raise error(f"{name}: empty file")
    if st.st_size > max_bytes:
        raise error(f"{name}: file too large ({_mib(st.st_size)}, limit {_mib(max_bytes)})")
    return st


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.1f} GiB"


def read_regular(path: str | os.PathLike[str], max_bytes: int, error: type[EdgedError] = EdgedError,
                 what: str = "file") -> bytes:
    """The bytes of a regular file of at most `max_bytes` (see `check_regular`).

    The file is opened non-blocking and checked again on the open descriptor (a FIFO swapped in after the
    stat cannot block), and no more than `max_bytes` are ever read (a file that grows is refused)."""
    check_regular(path, max_bytes, error, what)
    name = shown(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise error(f"{name}: {_why(exc)}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{name}: is {_kind_of(st.st_mode)}, not {what}")
        chunks = [os.read(fd, min(st.st_size, max_bytes) + 1)]  # the whole file in one buffer, usually
        total = len(chunks[0])
        while total <= max_bytes and chunks[-1]:
            chunks.append(os.read(fd, min(1 << 20, max_bytes + 1 - total)))
            total += len(chunks[-1])
        if total > max_bytes:
            raise error(f"{name}: file too large (more than {_mib(max_bytes)}, the limit)")
    except OSError as exc:
        raise error(f"{name}: {_why(exc)}") from exc
    finally:
        os.close(fd)
    if total == 0:
        raise error(f"{name}: empty file")
    return chunks[0] if len(chunks[0]) == total else b"".join(chunks)


# ---- what C libraries write to stderr ----

_fd2_lock = threading.Lock()
#: Lines C libraries (libjpeg, libpng, libtiff, libwebp, FFmpeg, OpenCV) write to file descriptor 2.
LIBRARY_LINE = re.compile(
    r"^\s*(\[\s*(WARN|ERROR|INFO|DEBUG|FATAL|VERBOSE)\b|\[[^\]]{1,80} @ (0x)?[0-9a-fA-F]+\]|\[OPENCV:|libpng |"
    r"libtiff|TIFF\w*:|Corrupt JPEG|Premature end of JPEG|Invalid (JPEG|SOS)|Inconsistent progression|"
    r"Unknown Adobe|Warning: unknown JFIF|Application transferred|Bogus |Not a JPEG|Unsupported |OpenCV|"
    r"JPEG |Quantization table|Huffman table|Improper call|Wrong JPEG|Maximum supported|Empty JPEG|"
    r"Sampling factors|Scan script|Invalid |Unexpected |Warning, |Read error|zlib|Error)")
#: At most this many bytes of captured output are looked at.
CAPTURE_MAX = 64 * 1024


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Redirect file descriptor 2 for the duration of the block; yields a list that holds, after the block,
    the lines written there that look like C-library diagnostics (`LIBRARY_LINE`). Any other line (another
    thread's log record, written meanwhile) is passed on to the real stderr afterwards, late but not lost.
    Keep the block short: one decode or one open."""
    lines: list[str] = []
    with _fd2_lock:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:
            yield lines
            return
        try:
            sink = os.memfd_create("edged-stderr", getattr(os, "MFD_CLOEXEC", 0))
        except (AttributeError, OSError):
            sink = -1
        if sink < 0:
            try:
                with tempfile.TemporaryFile() as tmp:
                    sink = os.dup(tmp.fileno())
            except OSError:
                os.close(saved)
                yield lines
                return
        try:
            os.dup2(sink, 2)
            try:
                yield lines
            finally:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                _sort_captured(sink, lines)
        finally:
            os.close(saved)
            os.close(sink)


def _sort_captured(sink: int, lines: list[str]) -> None:
    """Read what `captured_stderr` caught: library lines into `lines`, anything else back to stderr."""
    try:
        size = os.lseek(sink, 0, os.SEEK_END)
        os.lseek(sink, max(0, size - CAPTURE_MAX), os.SEEK_SET)
        text = os.read(sink, CAPTURE_MAX).decode("utf-8", "replace")
    except OSError:
        return
    passed = []
    follows = False  # continuation lines of a library message (OpenCV's "> expected ..." lines)
    for line in text.splitlines():
        if not line.strip():
            continue
        follows = bool(LIBRARY_LINE.match(line)) or (follows and line[:1] in (">", " ", "\t"))
        (lines if follows else passed).append(line)
    if passed:
        with contextlib.suppress(Exception):
            sys.stderr.write("\n".join(passed) + "\n")
            sys.stderr.flush()


def library_message(lines: list[str], limit: int = 120) -> str:
    """The most telling captured library line, without OpenCV's log prefix, shortened for a message."""
    best = ""
    for line in lines:
        text = re.sub(r"^\s*\[\s*\w+:[^\]]*\]\s*(global\s+)?(\S+\s+\(\d+\)\s+)?(\S+\s+)?", "", line).strip()
        text = re.sub(r"^\[[^\]]{1,80} @ (0x)?[0-9a-fA-F]+\]\s*", "", text)
        if text and not best:
            best = text
        if re.search(r"error|corrupt|premature|invalid|not a|unsupported|bad", text, re.IGNORECASE):
            best = text
            break
    return shown(best, limit)


def file_digests(path: str | Path) -> tuple[str, str]:
    """(md5, sha256) hex digests of a file, or of a CSV weights directory's files in name order."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.suffix == ".csv") if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            md5.update(f.name.encode() + b"\0")
            sha.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                md5.update(chunk)
                sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()
