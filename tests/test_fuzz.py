"""Fuzzing edged's untrusted inputs: image files, config files, gallery export files.

In-process properties (hypothesis; the profile sets how many examples, see tests/conftest.py):

* images: `decode_image` on mutated real JPEG/PNG/BMP/WebP/TIFF/PNM bytes (flipped, inserted, deleted,
  repeated bytes, truncations, forged sizes in the headers, appended end markers) and on headers forged from
  scratch gives an RGB uint8 HxWx3 array within `MAX_PIXELS`, or an `ImageError` of one printable line; no
  C library writes to stderr; every example within the deadline (5 s);
* configs: `parse_config` on generated YAML (random structures, the example config with values replaced,
  tags, anchors and aliases, deep nesting, huge numbers, NaN and infinities, odd strings, mutated text) gives
  a `Config` without a non-finite number, or `ConfigErrors` (exit code 2) whose message and problems are one
  line each, naming the file;
* imports: `import_gallery` on mutated valid export files (values replaced, keys dropped, embeddings and crops
  swapped for bad ones, the checksum recomputed so the values are what is tested; or raw byte damage) stores
  only unit, finite embeddings and decodable crops, or raises a one-line `GalleryError` and leaves the
  gallery exactly as it was.

The CLI path: generated bad inputs of each kind run through `edged.cli.main` in a child process
(tests/fuzz_child.py: stdout/stderr caught at the descriptor level, a 10 s alarm per command): no traceback,
no hang, exit 0/1/2 as documented with exactly one `edged: error:` line whenever it is not 0, and the child's
peak RSS under 1 GiB. A sample also runs as `python -m edged ...`, one process per input, 10 s timeout each.
The worst inputs for memory (the largest images the limits let through, an export near its size limit) run in
their own child, whose peak RSS must stay under 1 GiB.

`scripts/test.sh --hypothesis-profile=fuzz tests/test_fuzz.py` runs the acceptance size: 1,000 examples per
property and 1,200 generated inputs through the CLI.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import math
import os
import random
import re
import struct
import subprocess
import sys
import tempfile
import zlib
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edged.config import Config, ConfigError, ConfigErrors, parse_config  # noqa: E402
from edged.errors import GalleryError, ImageError  # noqa: E402
from edged.gallery.store import Gallery, NewSample  # noqa: E402
from edged.gallery.transfer import MAX_EXPORT_BYTES, _canonical, export_gallery, import_gallery  # noqa: E402
from edged.vision.imageio import MAX_DECODE_BYTES, MAX_PIXELS, decode_image, encode_png  # noqa: E402
from tests.conftest import OPENFACE, ROOT  # noqa: E402

VERSION = "dlib_face_recognition_resnet_model_v1"
CROP_FORMAT = "edged-face-224-roll-112px-v1"
#: Per-kind count of generated inputs through the CLI in one child: 15 (ci profile), 400 (fuzz: 1,200 in all).
FULL = settings.default.max_examples >= 1000
CLI_PER_KIND = 400 if FULL else 15
#: Per-kind inputs run as one `python -m edged` process each.
PROCESS_PER_KIND = 10 if FULL else 2
GIB = 1024.0  # MiB


def fuzz_seed() -> int:
    return int(os.environ.get("EDGED_FUZZ_SEED", "20240501"))


# ---- helpers ----

def one_line(exc: BaseException, name: str) -> str:
    message = str(exc)
    assert message and "\n" not in message and "\r" not in message and message.isprintable(), repr(message)
    assert name in message, message
    return message


class Fd2:
    """What reaches file descriptor 2 during the block (C libraries included)."""

    def __enter__(self) -> Fd2:
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._file = tempfile.TemporaryFile()
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read(65536).decode("utf-8", "replace")
        self._file.close()


# ---- seeds: small real images in every supported format ----

@cache
def seeds() -> dict[str, bytes]:
    """Real pictures (a face from ../shared, shrunk so decoding stays fast) in every format and variant."""
    face = cv2.imread(str(OPENFACE / "clapton-2.jpg"))
    assert face is not None, "test data missing"
    small = cv2.resize(face, (48, 40), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    out: dict[str, bytes] = {}

    def enc(name: str, ext: str, img: np.ndarray, params: list[int] | None = None) -> None:
        ok, buf = cv2.imencode(ext, img, params or [])
        assert ok, name
        out[name] = buf.tobytes()

    enc("jpeg", ".jpg", small)
    enc("jpeg-progressive", ".jpg", small, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    enc("jpeg-444", ".jpg", small, [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])
    enc("jpeg-grey", ".jpg", grey)
    enc("jpeg-restart", ".jpg", small, [cv2.IMWRITE_JPEG_RST_INTERVAL, 1])
    enc("png", ".png", small)
    enc("png-alpha", ".png", np.dstack([small, grey]))
    enc("png-grey16", ".png", grey.astype(np.uint16) * 257)
    enc("bmp", ".bmp", small)
    enc("bmp-grey", ".bmp", grey)
    enc("webp", ".webp", small)
    enc("webp-lossless", ".webp", small, [cv2.IMWRITE_WEBP_QUALITY, 101])
    enc("tiff", ".tif", small)
    enc("tiff16", ".tif", small.astype(np.uint16) * 257)
    enc("ppm", ".ppm", small)
    enc("pgm", ".pgm", grey)
    enc("pam", ".pam", small)
    enc("pbm", ".pbm", (grey > 128).astype(np.uint8) * 255)
    out["photo"] = (OPENFACE / "clapton-2.jpg").read_bytes()  # a real camera JPEG, whole
    return out


# ---- mutations (one applier for hypothesis and for the seeded CLI corpus) ----

#: (kind, where in the file as a fraction, an integer, bytes)
Op = tuple[str, float, int, bytes]
OP_KINDS = ("flip", "set", "insert", "delete", "truncate", "repeat", "forge", "forge", "end", "zero")


def _put(data: bytearray, at: int, fmt: str, value: int) -> None:
    size = struct.calcsize(fmt)
    if at >= 0 and at + size <= len(data):
        struct.pack_into(fmt, data, at, value % (1 << (8 * size)))


def forge_size(data: bytearray, width: int, height: int) -> None:
    """Write `width` x `height` into the size fields of whatever header `data` starts with."""
    if data[:3] == b"\xff\xd8\xff":
        for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2"):
            i = data.find(marker)
            if i > 0:
                _put(data, i + 5, ">H", height)
                _put(data, i + 7, ">H", width)
                return
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        _put(data, 16, ">I", width)
        _put(data, 20, ">I", height)
        if len(data) >= 33 and (width ^ height) & 1:  # half the time the CRC is kept right for libpng
            _put(data, 29, ">I", zlib.crc32(bytes(data[12:29])))
    elif data[:2] == b"BM":
        _put(data, 18, "<i", width - (1 << 31) if width >= 1 << 31 else width)
        _put(data, 22, "<i", height - (1 << 31) if height >= 1 << 31 else height)
    elif data[:4] == b"RIFF":
        kind = bytes(data[12:16])
        if kind == b"VP8 ":
            _put(data, 26, "<H", width & 0x3FFF)
            _put(data, 28, "<H", height & 0x3FFF)
        elif kind == b"VP8L":
            _put(data, 21, "<I", ((width - 1) & 0x3FFF) | (((height - 1) & 0x3FFF) << 14))
    elif data[:4] in (b"II*\x00", b"MM\x00*"):
        big = data[:2] == b"MM"
        ifd = struct.unpack_from(">I" if big else "<I", data, 4)[0]
        if ifd + 2 <= len(data):
            count = struct.unpack_from(">H" if big else "<H", data, ifd)[0]
            for k in range(min(count, 64)):
                at = ifd + 2 + 12 * k
                if at + 12 > len(data):
                    break
                tag, kind = struct.unpack_from(">HH" if big else "<HH", data, at)
                if tag in (256, 257):
                    value = width if tag == 256 else height
                    _put(data, at + 2, ">H" if big else "<H", 4)  # LONG
                    _put(data, at + 8, ">I" if big else "<I", value)
    elif data[:3] == b"P7\n":
        text = re.sub(rb"WIDTH \d+", b"WIDTH %d" % width, bytes(data), count=1)
        data[:] = re.sub(rb"HEIGHT \d+", b"HEIGHT %d" % height, text, count=1)
    elif data[:1] == b"P" and data[1:2] in b"123456":
        head = f"P{chr(data[1])}\n{width} {height}\n".encode()
        rest = bytes(data[2:])
        tokens = rest.split(maxsplit=3 if data[1:2] not in b"14" else 2)
        tail = tokens[-1] if len(tokens) >= (4 if data[1:2] not in b"14" else 3) else b""
        maxval = tokens[2] + b"\n" if data[1:2] not in b"14" and len(tokens) > 2 else b""
        data[:] = head + maxval + tail


def apply_ops(data: bytes, ops: list[Op]) -> bytes:
    buf = bytearray(data)
    for kind, where, value, extra in ops:
        at = min(int(where * len(buf)), max(len(buf) - 1, 0))
        if kind == "flip" and buf:
            buf[at] ^= (value % 255) + 1
        elif kind == "set" and buf:
            buf[at] = value % 256
        elif kind == "insert":
            buf[at:at] = extra
        elif kind == "delete":
            del buf[at:at + 1 + value % 64]
        elif kind == "truncate":
            del buf[at:]
        elif kind == "repeat":
            buf[at:at] = buf[at:at + 1 + value % 512]
        elif kind == "forge":
            big = [0, 1, 2, 255, 65535, 16383, 1 << 15, 10_950, 30_000, 60_000, 1 << 24, (1 << 31) - 1, (1 << 32) - 1]
            width = big[value % len(big)] if value & 1 else value % 20_000
            height = big[(value >> 4) % len(big)] if value & 2 else (value >> 8) % 20_000
            forge_size(buf, width, height)
        elif kind == "end":
            buf += b"\xff\xd9" if value & 1 else b"\x00\x00\x00\x00IEND\xaeB`\x82"
        elif kind == "zero":
            buf[at:at + 1 + value % 4096] = bytes(len(buf[at:at + 1 + value % 4096]))
    return bytes(buf)


def random_ops(rng: random.Random, n: int | None = None) -> list[Op]:
    return [(rng.choice(OP_KINDS), rng.random(), rng.getrandbits(32), rng.randbytes(rng.choice((1, 2, 4, 16, 200))))
            for _ in range(n or rng.randint(1, 5))]


ops_strategy = st.lists(st.tuples(st.sampled_from(OP_KINDS), st.floats(0, 1), st.integers(0, 2**32 - 1),
                                  st.binary(max_size=64)), min_size=1, max_size=6)


def forged_from_scratch(fmt: str, width: int, height: int, body: bytes) -> bytes:
    """A header of `fmt` claiming `width` x `height`, followed by `body`."""
    if fmt == "jpeg":
        sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height % 65536, width % 65536, 3) + \
            b"\x01\x22\x00\x02\x11\x00\x03\x11\x00"
        sos = b"\xff\xda" + struct.pack(">HB", 12, 3) + b"\x01\x00\x02\x11\x03\x11\x00\x3f\x00"
        return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + sof + sos + body + b"\xff\xd9"
    if fmt == "png":
        ihdr = struct.pack(">IIBBBBB", width % 2**32, height % 2**32, 8, 2, 0, 0, 0)
        chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
        idat = zlib.compress(body)
        return (b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", len(idat)) + b"IDAT" + idat +
                struct.pack(">I", zlib.crc32(b"IDAT" + idat)) + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    if fmt == "bmp":
        header = struct.pack("<2sIHHI", b"BM", 54 + len(body), 0, 0, 54)
        dib = struct.pack("<IiiHHIIiiII", 40, width % 2**31, height % 2**31, 1, 24, 0, len(body), 0, 0, 0, 0)
        return header + dib + body
    if fmt == "pnm":
        return f"P6\n{width} {height}\n255\n".encode() + body
    if fmt == "tiff":
        entries = [(256, 4, 1, width % 2**32), (257, 4, 1, height % 2**32), (258, 3, 1, 8), (262, 3, 1, 1),
                   (273, 4, 1, 8 + 2 + 12 * 6 + 4), (277, 3, 1, 1)]
        ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
        return b"II*\x00" + struct.pack("<I", 8) + ifd + body
    if fmt == "webp":
        vp8l = b"\x2f" + struct.pack("<I", ((width - 1) & 0x3FFF) | (((height - 1) & 0x3FFF) << 14)) + body
        return b"RIFF" + struct.pack("<I", 4 + 8 + len(vp8l)) + b"WEBPVP8L" + struct.pack("<I", len(vp8l)) + vp8l
    raise AssertionError(fmt)


SCRATCH_FORMATS = ("jpeg", "png", "bmp", "pnm", "tiff", "webp")


def check_image(data: bytes) -> None:
    """The image property: an RGB uint8 array within the limits, or one ImageError line; nothing on fd 2."""
    with Fd2() as fd2:
        try:
            image = decode_image(data, "fuzz.img")
        except ImageError as exc:
            one_line(exc, "fuzz.img")
        else:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert image.shape[0] * image.shape[1] <= MAX_PIXELS and image.flags.c_contiguous
    assert fd2.text == "", fd2.text


@given(seed=st.sampled_from(sorted(seeds())), ops=ops_strategy)
def test_fuzz_mutated_images(seed: str, ops: list[Op]) -> None:
    check_image(apply_ops(seeds()[seed], ops))


@given(fmt=st.sampled_from(SCRATCH_FORMATS), width=st.integers(0, 2**32 - 1) | st.integers(0, 12_000),
       height=st.integers(0, 2**32 - 1) | st.integers(0, 12_000), body=st.binary(max_size=4096))
def test_fuzz_forged_image_headers(fmt: str, width: int, height: int, body: bytes) -> None:
    check_image(forged_from_scratch(fmt, width, height, body))


# ---- configs ----

EXAMPLE_CONFIG = (ROOT / "config" / "edged.yaml").read_text()
BASE_CONFIG: dict[str, Any] = yaml.safe_load(EXAMPLE_CONFIG)

scalars = (st.none() | st.booleans() | st.integers() | st.integers(-(10**40), 10**40) |
           st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40) |
           st.sampled_from(["0", "1e999", "-.inf", ".nan", "0x1F", "0o17", "1_000", "yes", "off", "~", "2024-13-45",
                            "12:30", "/dev/video0", "rtsp://u:p@h/s", "9" * 5000, "\x00", "\udcff", "\u202e"]))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c,
                                                                                    max_size=4), max_leaves=12)


def _dump(obj: Any) -> str:
    try:
        return yaml.safe_dump(obj, allow_unicode=True, sort_keys=False)
    except (yaml.YAMLError, ValueError, TypeError):
        return json.dumps(obj, default=str)


@st.composite
def replaced_config(draw: st.DrawFn) -> str:
    """The example config with some values (or whole sections) replaced or removed."""
    cfg = copy.deepcopy(BASE_CONFIG)
    for _ in range(draw(st.integers(1, 4))):
        node: Any = cfg
        path = []
        while isinstance(node, dict) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node)))
            path.append(key)
            if not isinstance(node[key], dict):
                break
            node = node[key]
        parent: Any = cfg
        for key in path[:-1]:
            parent = parent[key]
        target = path[-1] if path else draw(st.sampled_from(sorted(cfg)))
        if draw(st.integers(0, 5)) == 0:
            parent.pop(target, None)
        else:
            parent[target] = draw(values)
    return _dump(cfg)


TAGS = ["!!python/object/apply:os.system ['true']", "!!python/name:os.system", "!!binary aGVsbG8=", "!env HOME",
        "!!set {a: null}", "!!omap [a: 1]", "!!int 12", "!!int x", "!!float .nan", "!!timestamp 2024-13-45",
        "!!str 0123", "!<tag:yaml.org,2002:python/none> ''", "!!merge <<", "!local x", "!!null ''"]


@st.composite
def evil_yaml(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 9))
    base = "device_id: door\ncamera: {source: 0}\n"
    if kind == 0:  # deep nesting, flow or block
        n = draw(st.integers(1, 3000))
        if draw(st.booleans()):
            return base + "x: " + "[" * n + "]" * n + "\n"
        return base + "".join("  " * i + f"k{i}:\n" for i in range(min(n, 400))) + "  " * min(n, 400) + "v\n"
    if kind == 1:  # anchors and aliases, billion laughs
        levels = draw(st.integers(1, 12))
        lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        for i in range(1, levels):
            lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}" if i > 1 else "*a"] * 9) + "]")
        return base + "\n".join(lines) + "\n"
    if kind == 2:  # tags
        return base + f"{draw(st.sampled_from(['mqtt', 'x', 'camera']))}: {draw(st.sampled_from(TAGS))}\n"
    if kind == 3:  # huge numbers
        digits = draw(st.integers(1, 6000))
        key = draw(st.sampled_from(["mqtt: {port: ", "embedder: {threshold: ", "camera: {source: ", "vote: {k: "]))
        number = draw(st.sampled_from(["9" * digits, "1e" + "9" * min(digits, 50), "-" + "9" * digits,
                                       "0." + "0" * digits + "1", "0x" + "f" * digits]))
        rest = "" if key.startswith("camera") else "camera: {source: 0}\n"
        return "device_id: door\n" + key + number + "}\n" + rest
    if kind == 4:  # NaN and infinities anywhere numeric
        section, key = draw(st.sampled_from([("match", "threshold"), ("embedder", "threshold"), ("vote", "k"),
                                             ("camera", "reconnect_min_s"), ("detector", "scale"),
                                             ("enroll", "duplicate_max"), ("mqtt", "port")]))
        value = draw(st.sampled_from([".nan", ".NaN", ".inf", "-.inf", ".Inf", "1e400", "-1e400", "nan", "inf"]))
        return base + f"{section}:\n  {key}: {value}\n"
    if kind == 5:  # strings: control characters, bidi, tabs, very long
        text = draw(st.text(max_size=200))
        return base + f"device_id: {json.dumps(text)}\n" if draw(st.booleans()) else base + f"x: {text}\n"
    if kind == 6:  # arbitrary text
        return draw(st.text(max_size=500))
    if kind == 7:  # random structures
        return _dump(draw(values))
    if kind == 8:  # merge keys and complex keys
        return base + draw(st.sampled_from(["<<: {a: 1}\n", "? [a]\n: 1\n", "? {a: 1}\n: 2\n", "mqtt: {<<: *x}\n",
                                            "a: 1\na: 2\n", "--- \n--- \n", "%YAML 1.1\n---\nx: 1\n", "\ufeffx: 1\n"]))
    # mutated example config text
    ops = draw(st.lists(st.tuples(st.sampled_from(OP_KINDS[:6]), st.floats(0, 1), st.integers(0, 2**32 - 1),
                                  st.binary(max_size=8)), min_size=1, max_size=4))
    return apply_ops(EXAMPLE_CONFIG.encode(), ops).decode("utf-8", "replace")


def _finite_everywhere(obj: Any) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite_everywhere(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return all(_finite_everywhere(v) for v in obj)
    return True


def check_config(text: str) -> None:
    try:
        cfg = parse_config(text, "fuzz.yaml")
    except ConfigError as exc:
        assert exc.exit_code == 2
        one_line(exc, "fuzz.yaml")
        if isinstance(exc, ConfigErrors):
            assert exc.problems and all(p.startswith("fuzz.yaml") for p in exc.problems)
    else:
        assert isinstance(cfg, Config) and _finite_everywhere(cfg.model_dump())


@given(text=replaced_config() | evil_yaml())
def test_fuzz_config_loading(text: str) -> None:
    check_config(text)


def test_config_with_a_huge_hex_number_is_one_problem() -> None:
    """Found by this fuzzing: Python has no repr of an integer past 4,300 digits (YAML builds one from hex)."""
    check_config("device_id: door\ncamera: {source: 0}\nmqtt: {port: 0x" + "f" * 4000 + "}\n")


def test_config_problems_are_one_line_each(tmp_path: Path) -> None:
    """Found by this fuzzing: a key holding a newline was echoed raw into its problem (two lines)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("device_id: door\ncamera: {source: 0}\naccess:\n  ? \"a\\nb\"\n  : 1\n")
    done = subprocess.run([sys.executable, "-m", "edged", "check-config", str(bad)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr


# ---- gallery imports ----

@cache
def valid_export() -> dict[str, Any]:
    """A real export file's document: ann (two samples with crops), bob (one without)."""
    rng = np.random.default_rng(7)

    def unit() -> np.ndarray:
        v = rng.normal(size=128).astype(np.float32)
        return v / np.linalg.norm(v)

    crop = encode_png(np.full((224, 224, 3), 90, np.uint8))
    with tempfile.TemporaryDirectory() as tmp:
        with Gallery(Path(tmp) / "g.db") as g:
            g.add_samples("ann", [NewSample(unit(), "dlib", VERSION, "a1.jpg", 120, 210.5, crop, CROP_FORMAT),
                                  NewSample(unit(), "dlib", VERSION, "a2.jpg", 130, 220.0, crop, CROP_FORMAT)],
                          display_name="Ann")
            g.add_samples("bob", [NewSample(unit(), "dlib", VERSION, "b1.jpg", 140, 230.0)])
            export_gallery(g, Path(tmp) / "e.json")
        return json.loads((Path(tmp) / "e.json").read_text())


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) |
    st.text(max_size=30) | st.sampled_from(["", "AAAA", "2024-05-01T12:00:00Z", "edged-face-224-roll-112px-v1"]),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8)


def _b64_floats(values: np.ndarray) -> str:
    return base64.b64encode(np.asarray(values, "<f4").tobytes()).decode()


embeddings = st.sampled_from([np.zeros(128), np.full(128, 3e38), np.full(128, np.nan), np.full(128, np.inf),
                              np.ones(128), np.ones(127) / np.sqrt(127), np.ones(129) / np.sqrt(129),
                              np.ones(128) / np.sqrt(128) * 1.01, -np.ones(128) / np.sqrt(128),
                              np.eye(128)[0]]).map(_b64_floats) | st.binary(max_size=600).map(
    lambda b: base64.b64encode(b).decode())


@st.composite
def mutated_export(draw: st.DrawFn) -> bytes:
    doc = copy.deepcopy(valid_export())
    payload = doc["payload"]
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(payload) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = payload
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        action = draw(st.integers(0, 9))
        if action == 0 and isinstance(parent, dict):
            parent.pop(key, None)
        elif action == 1 and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
        elif action == 2 and key == "embedding":
            parent[key] = draw(embeddings)
        elif action == 3 and key == "crop_png" and parent[key]:
            crop = base64.b64decode(parent[key])
            parent[key] = base64.b64encode(apply_ops(crop, draw(ops_strategy))).decode()
        elif action == 4:
            parent[key] = draw(embeddings)
        else:
            parent[key] = draw(json_values)
    if draw(st.integers(0, 9)):
        doc["sha256"] = hashlib.sha256(_canonical(payload)).hexdigest()  # the values are what is tested
    raw = json.dumps(doc).encode()
    if draw(st.integers(0, 9)) == 0:
        raw = apply_ops(raw, draw(ops_strategy))
    return raw


def gallery_state(path: Path) -> tuple:
    with Gallery(path, create=False) as g:
        return ([(p.name, p.display_name, p.samples, p.created, p.updated) for p in g.people()],
                [(s.person, s.source, s.embedding.tobytes(), s.crop_png) for s in g.samples(with_crops=True)],
                g.change_counter())


def check_import(raw: bytes, tmp: Path) -> None:
    path = tmp / "fuzz.json"
    path.write_bytes(raw)
    gallery = tmp / "g.db"
    with Gallery(gallery) as g:
        g.add_samples("carol", [NewSample(np.eye(128, dtype=np.float32)[5], "dlib", VERSION, "c.jpg", 100, 50.0)])
    before = gallery_state(gallery)
    try:
        with Gallery(gallery, create=False) as g:
            import_gallery(g, path)
    except GalleryError as exc:
        one_line(exc, "fuzz.json")
        assert gallery_state(gallery) == before
    else:
        with Gallery(gallery, create=False) as g:
            for s in g.samples(with_crops=True):
                assert np.all(np.isfinite(s.embedding)) and abs(float(np.linalg.norm(s.embedding)) - 1) <= 1e-3
                if s.crop_png is not None:
                    assert decode_image(s.crop_png, "crop").shape == (224, 224, 3)


@given(raw=mutated_export())
def test_fuzz_gallery_import(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        check_import(raw, Path(tmp))


# ---- the CLI path, in a child process ----

def corpus(tmp: Path, per_kind: int, seed: int) -> tuple[list[list[str]], dict[int, Path]]:
    """`per_kind` generated bad images, configs and export files, written under `tmp`, as edged command
    lines; and for each import job the gallery it writes to."""
    rng = random.Random(seed)
    jobs: list[list[str]] = []
    galleries: dict[int, Path] = {}
    names = sorted(seeds())
    template = tmp / "template.db"
    with Gallery(template) as g:
        g.add_samples("carol", [NewSample(np.eye(128, dtype=np.float32)[5], "dlib", VERSION, "c.jpg", 100, 50.0)])
    for i in range(per_kind):
        if rng.random() < 0.8:
            data = apply_ops(seeds()[rng.choice(names)], random_ops(rng))
        else:
            data = forged_from_scratch(rng.choice(SCRATCH_FORMATS), rng.choice([0, 1, 40, 9000, 30000, 2**31]),
                                       rng.choice([0, 1, 40, 9000, 30000, 2**31]), rng.randbytes(rng.randint(0, 3000)))
        path = tmp / f"img{i}.{rng.choice(['jpg', 'png', 'bmp', 'webp', 'tif', 'ppm'])}"
        path.write_bytes(data)
        jobs.append(["embed", "--json", str(path)])
    for i in range(per_kind):
        path = tmp / f"cfg{i}.yaml"
        path.write_bytes(seeded_config(rng).encode("utf-8", "surrogateescape"))
        # a command that loads the config and touches no file it names (the gallery path could be /dev/zero)
        jobs.append(["--config", str(path), "embed", "--embedder", "dlib", str(tmp / "absent.png")])
    for i in range(per_kind):
        path = tmp / f"export{i}.json"
        path.write_bytes(seeded_export(rng))
        gallery = tmp / f"g{i}.db"
        gallery.write_bytes(template.read_bytes())
        gallery.chmod(0o600)
        galleries[len(jobs)] = gallery
        jobs.append(["--gallery", str(gallery), "gallery", "import", str(path)])
    return jobs, galleries


NASTY = [None, True, False, 0, -1, 2**63, 10**40, 1e308, -1e-308, 0.5, "", " ", "x" * 5000, "\x00", "\u202e",
         "\udcff", "AAAA", "2024-13-45", ".nan", "1e999", [], [None], {}, {"a": {"b": {}}}, "../etc/passwd",
         "rtsp://u:p@h/s", "/dev/zero", "9" * 5000]


def _replace_somewhere(doc: Any, rng: random.Random, value: Any) -> None:
    paths = [p for p in _paths(doc) if p]
    if not paths:
        return
    path = rng.choice(paths)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if rng.random() < 0.15 and isinstance(parent, dict):
        parent.pop(path[-1], None)
    else:
        parent[path[-1]] = value


def seeded_config(rng: random.Random) -> str:
    """One generated config text (the rng-driven counterpart of the hypothesis strategies above)."""
    kind = rng.randint(0, 5)
    base = "device_id: door\ncamera: {source: 0}\n"
    if kind == 0:
        return apply_ops(EXAMPLE_CONFIG.encode(), random_ops(rng, rng.randint(1, 4))).decode("utf-8", "replace")
    if kind == 1:
        cfg = copy.deepcopy(BASE_CONFIG)
        for _ in range(rng.randint(1, 3)):
            _replace_somewhere(cfg, rng, rng.choice(NASTY))
        return _dump(cfg)
    if kind == 2:
        n = rng.choice([33, 100, 5000, 100_000])
        return base + "x: " + "[" * n + "]" * n + "\n"
    if kind == 3:
        return base + rng.choice(["mqtt", "x", "camera"]) + ": " + rng.choice(TAGS) + "\n"
    if kind == 4:
        section, key = rng.choice([("match", "threshold"), ("vote", "k"), ("camera", "reconnect_min_s"),
                                   ("mqtt", "port"), ("enroll", "duplicate_max")])
        value = rng.choice([".nan", ".inf", "-.inf", "1e400", "9" * 5000, "0x" + "f" * 300, "!!float .nan"])
        return base + f"{section}:\n  {key}: {value}\n"
    levels = rng.randint(2, 10)
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}" if i > 1 else "*a"] * 9) + "]" for i in range(1, levels)]
    return base + "\n".join(lines) + "\n"


def seeded_export(rng: random.Random) -> bytes:
    """One generated export file (the rng-driven counterpart of `mutated_export`)."""
    doc = copy.deepcopy(valid_export())
    bad_vectors = [np.zeros(128), np.full(128, 3e38), np.full(128, np.nan), np.ones(128), np.ones(127) / np.sqrt(127)]
    for _ in range(rng.randint(1, 3)):
        choice = rng.random()
        try:  # an earlier change may have replaced the structure these two expect
            if choice < 0.3:
                sample = doc["payload"]["people"][0]["samples"][rng.randint(0, 1)]
                sample["embedding"] = _b64_floats(rng.choice(bad_vectors))
                continue
            if choice < 0.45:
                sample = doc["payload"]["people"][0]["samples"][rng.randint(0, 1)]
                crop = base64.b64decode(sample["crop_png"])
                sample["crop_png"] = base64.b64encode(apply_ops(crop, random_ops(rng))).decode()
                continue
        except (TypeError, KeyError, IndexError, ValueError):
            pass
        _replace_somewhere(doc["payload"], rng, rng.choice(NASTY))
    if rng.random() < 0.9:
        doc["sha256"] = hashlib.sha256(_canonical(doc["payload"])).hexdigest()
    raw = json.dumps(doc).encode()
    return apply_ops(raw, random_ops(rng)) if rng.random() < 0.1 else raw


def run_child(jobs: list[list[str]], tmp: Path, timeout: float) -> dict[str, Any]:
    jobs_file, results_file = tmp / "jobs.json", tmp / "results.json"
    jobs_file.write_text(json.dumps(jobs))
    done = subprocess.run([sys.executable, "-m", "tests.fuzz_child", str(jobs_file), str(results_file)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "EDGED_CONFIG": "", "EDGED_GALLERY": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == "", done.stderr[-3000:]  # nothing escaped the per-job capture
    return json.loads(results_file.read_text())


def check_cli_results(results: list[dict[str, Any]], galleries: dict[int, Path], template: tuple) -> dict[str, int]:
    """Every job: no traceback, within 10 s, and exit 0 without an error line or 1/2 (2 only for a config)
    with exactly one `edged: error:` line and nothing else on stderr; a failed import changed nothing."""
    counts = {"jobs": len(results), "errors": 0, "ok": 0}
    problems = []
    for i, r in enumerate(results):
        kind = {"embed": "image", "--config": "config"}.get(r["argv"][0], "import")
        errors = [line for line in r["stderr"].splitlines() if line.startswith("edged: error: ")]
        other = [line for line in r["stderr"].splitlines() if line.strip() and not line.startswith("edged: ")]
        what = f"{' '.join(r['argv'])}: code {r['code']}, {r['seconds']:.1f} s\n{r['stderr'][-2000:]}{r['traceback']}"
        allowed = {"image": (0, 1), "config": (1, 2), "import": (0, 1)}[kind]
        counts[f"{kind} exit {r['code']}"] = counts.get(f"{kind} exit {r['code']}", 0) + 1
        if r["traceback"] or "Traceback" in r["stderr"]:
            problems.append("traceback: " + what)
        elif r["seconds"] > 10:
            problems.append("slow: " + what)
        elif r["code"] not in allowed:
            problems.append(f"exit code not in {allowed}: " + what)
        elif r["code"] == 0:
            counts["ok"] += 1
            if errors:
                problems.append("error line but exit 0: " + what)
        else:
            counts["errors"] += 1
            if len(errors) != 1 or other:
                problems.append("not exactly one error line: " + what)
            elif kind == "config" and r["code"] == 1 and "absent.png: no such file" not in errors[0]:
                problems.append("a valid config, but not the expected error: " + what)
            if i in galleries and gallery_state(galleries[i]) != template:
                problems.append("failed import changed the gallery: " + what)
    assert not problems, f"{len(problems)} problems, first ones:\n" + "\n\n".join(problems[:5])
    return counts


def test_fuzz_cli_corpus(tmp_path: Path) -> None:
    """Generated bad inputs through the CLI in a child: no traceback, no hang, one error line, < 1 GiB."""
    jobs, galleries = corpus(tmp_path, CLI_PER_KIND, fuzz_seed())
    out = run_child(jobs, tmp_path, timeout=60 + 10 * len(jobs))
    counts = check_cli_results(out["results"], galleries, gallery_state(tmp_path / "template.db"))
    slowest = max(r["seconds"] for r in out["results"])
    print(f"fuzz CLI corpus: {counts}, slowest {slowest:.2f} s, peak RSS {out['peak_rss_mb']:.0f} MiB")
    assert counts["errors"] >= len(jobs) // 2
    assert out["peak_rss_mb"] < GIB


def test_fuzz_cli_sample_in_separate_processes(tmp_path: Path) -> None:
    """A sample of the corpus as a user runs it: `python -m edged ...`, one process each, 10 s at most."""
    jobs, galleries = corpus(tmp_path, PROCESS_PER_KIND, fuzz_seed() + 1)
    template = gallery_state(tmp_path / "template.db")
    for i, argv in enumerate(jobs):
        done = subprocess.run([sys.executable, "-m", "edged", *argv], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, env={**os.environ, "EDGED_CONFIG": "", "EDGED_GALLERY": ""})
        assert "Traceback" not in done.stderr, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        if done.returncode != 0:
            assert done.returncode in (1, 2) and len(lines) == 1 and lines[0].startswith("edged: error: "), \
                (argv, done.returncode, done.stderr)
            if i in galleries:
                assert gallery_state(galleries[i]) == template
        else:
            assert not [line for line in lines if line.startswith("edged: error: ")], done.stderr


# ---- the worst inputs for memory, in their own child ----

def _forged_jpeg(width: int, height: int, pad: int, params: list[int]) -> bytes:
    _, buf = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8), params)
    data = bytearray(buf.tobytes())
    forge_size(data, width, height)
    return bytes(data[:-2]) + b"\x00" * pad + b"\xff\xd9"


def _png16_full(width: int, height: int) -> bytes:
    """A valid 16-bit RGB PNG of width x height (zero rows streamed through zlib, so it stays small here)."""
    comp = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * (width * 6)
    parts = [comp.compress(row * 64) for _ in range(height // 64)]
    parts.append(comp.compress(row * (height % 64)))
    parts.append(comp.flush())
    idat = b"".join(parts)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)) +
            chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _big_export(path: Path, target_bytes: int) -> int:
    """A valid export of one person with noisy crops, about `target_bytes` long; returns its sample count."""
    rng = np.random.default_rng(3)
    crop = base64.b64encode(encode_png(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))).decode()
    samples = []
    while len(samples) * (len(crop) + 900) < target_bytes:
        v = rng.normal(size=128).astype(np.float32)
        samples.append({"embedder": "dlib", "embedder_version": VERSION,
                        "embedding": _b64_floats(v / np.linalg.norm(v)), "crop_png": crop, "crop_format": CROP_FORMAT,
                        "source": f"s{len(samples)}.jpg", "face_px": 120, "sharpness": 200.0,
                        "created": "2024-05-01T12:00:00Z"})
    payload = {"exported": "2024-05-01T12:00:00Z", "people": [{"name": "big", "display_name": "Big",
               "created": "2024-05-01T12:00:00Z", "updated": "2024-05-01T12:00:00Z", "samples": samples}]}
    doc = {"format": "edged-gallery-export", "version": 1, "sha256": hashlib.sha256(_canonical(payload)).hexdigest(),
           "payload": payload}
    path.write_text(json.dumps(doc))
    return len(samples)


def test_worst_inputs_stay_under_1_gib(tmp_path: Path) -> None:
    """The largest inputs the limits let through, each decoded or imported in one child: peak RSS < 1 GiB."""
    side_444 = int(math.sqrt(MAX_DECODE_BYTES / 9)) - 48  # progressive 4:4:4: coefficients + output, just inside
    side = int(math.sqrt(MAX_PIXELS)) - 8  # 120 MP baseline
    cases = {
        "baseline-120mp.jpg": _forged_jpeg(side, side, 400_000, []),
        "progressive-444.jpg": _forged_jpeg(side_444, side_444, 600_000, [
            cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]),
        "deep16.png": _png16_full(7800, 7800),
        "over-the-limit.jpg": _forged_jpeg(30000, 30000, 0, []),
        "over-the-decode-limit.jpg": _forged_jpeg(10000, 10000, 700_000, [
            cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]),
    }
    export = tmp_path / "big-export.json"
    n = _big_export(export, MAX_EXPORT_BYTES - 2**20 if FULL else MAX_EXPORT_BYTES // 4)  # the full size: ~10 s
    assert export.stat().st_size <= MAX_EXPORT_BYTES
    script = (
        "import sys, json, gc\n"
        "from edged.vision.imageio import load_image\n"
        "from edged.errors import EdgedError\n"
        "from edged.gallery.store import Gallery\n"
        "from edged.gallery.transfer import import_gallery\n"
        "from tests.fuzz_child import peak_rss_mb\n"
        "out = {}\n"
        "for path in sys.argv[3:]:\n"
        "    try:\n"
        "        out[path] = 'decoded %dx%d' % load_image(path).shape[1::-1]\n"
        "    except EdgedError as exc:\n"
        "        out[path] = 'error: %s' % exc\n"
        "    gc.collect()\n"
        "    out[path + ' peak'] = peak_rss_mb()\n"
        "with Gallery(sys.argv[2]) as g:\n"
        "    out['import'] = import_gallery(g, sys.argv[1])\n"
        "out['peak'] = peak_rss_mb()\n"
        "print(json.dumps(out))\n")
    paths = []
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    done = subprocess.run([sys.executable, "-c", script, str(export), str(tmp_path / "g.db"), *paths], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == "", done.stderr[-3000:]
    out = json.loads(done.stdout)
    print(json.dumps(out, indent=1))
    assert out["import"] == {"people": 1, "samples": n, "skipped": 0}
    assert out[str(tmp_path / "deep16.png")] == "decoded 7800x7800"
    assert "image too large (30000x30000" in out[str(tmp_path / "over-the-limit.jpg")]
    assert "too large to decode" in out[str(tmp_path / "over-the-decode-limit.jpg")]
    assert out["peak"] < GIB, out


def test_fuzz_helpers_reach_every_format() -> None:
    """The seeds decode, and forging reaches each format's size fields (else the fuzzing would be blind)."""
    for name, data in seeds().items():
        assert decode_image(data, name).shape[2] == 3, name
        forged = bytearray(data)
        forge_size(forged, 30000, 30000)
        if name not in ("webp",):  # lossy WebP's size is 14 bits: 30000 wraps
            with pytest.raises(ImageError, match=r"too large|truncated or forged|not a readable"):
                decode_image(bytes(forged), name)
