"""Reading images from files into the pipeline's one pixel format: RGB uint8, HxWx3.

Errors name the file and what is wrong with it in one line (`ImageError`).

Untrusted input is checked before any decoder runs:

* only regular files (no FIFO, device, socket or directory, also behind a symlink) of at most
  `MAX_FILE_BYTES` are read, and never more than that many bytes (`edged.fileio.read_regular`);
* the width and height are read from the header (JPEG SOF, PNG IHDR, BMP, WebP VP8/VP8L/VP8X, TIFF IFD,
  PNM/PAM) and an image above `MAX_PIXELS`, or one whose decoding would need more than `MAX_DECODE_BYTES`
  (output, JPEG coefficient buffers for progressive files, an EXIF rotation's copy, 16-bit samples...),
  is refused; so is a header that claims more pixels than the file has data for (a forged or truncated
  file); formats without such a check (GIF, JPEG 2000, OpenEXR, HDR, AVIF...) are not decoded at all;
* what libjpeg/libpng/libtiff and OpenCV write to stderr while decoding is caught
  (`edged.fileio.captured_stderr`) and the telling part folded into the one error line; a JPEG whose
  decoder reports missing data (premature end, bad Huffman code) is refused as truncated or corrupt.
"""

from __future__ import annotations

import logging
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edged.errors import ImageError
from edged.fileio import captured_stderr, library_message, read_regular, shown

log = logging.getLogger(__name__)

#: Refuse images above this many pixels (a 16k x 10k photo would need GBs of RAM downstream).
MAX_PIXELS = 120_000_000
#: Refuse image files larger than this (checked with stat and enforced while reading).
MAX_FILE_BYTES = 64 * 1024 * 1024
#: Refuse images whose decoding would need more memory than this (estimated from the header).
MAX_DECODE_BYTES = 768 * 1024 * 1024
#: Extensions treated as images when walking directories.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"})
#: Formats decoded (each has its header checked first).
SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "WebP", "TIFF", "PNM")

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
#: Formats OpenCV could decode but whose header is not checked here: refused by name.
_UNCHECKED = ((b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
              (b"\xff\x4f\xff\x51", "JPEG 2000"), (b"\x76\x2f\x31\x01", "OpenEXR"), (b"#?RADIANCE", "Radiance HDR"),
              (b"#?RGBE", "Radiance HDR"), (b"\x59\xa6\x6a\x95", "Sun raster"), (b"PF\n", "PFM"), (b"Pf\n", "PFM"),
              (b"II+\x00", "BigTIFF"), (b"MM\x00+", "BigTIFF"))
#: libjpeg warnings that mean image data is missing (the decoder filled the rest with grey).
_JPEG_DATA_LOST = re.compile(r"premature end|bad Huffman code|bad arithmetic code|instead of RST", re.IGNORECASE)


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an encoded image says, before decoding."""

    format: str
    width: int
    height: int
    #: Estimated peak bytes the decoder and the conversion to RGB uint8 need.
    decode_bytes: int
    #: Bytes of pixel data the file holds, and the least an image of this size can be coded in (a file with
    #: fewer is truncated, or its header forged to make the decoder allocate a huge image).
    data_bytes: int = 0
    min_data_bytes: int = 0


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """True when the file name has an image extension."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _check_truncated(path: str, data: bytes) -> None:
    if data.startswith(_JPEG_SOI):
        # A complete JPEG ends with EOI; allow trailing padding some cameras append.
        if _JPEG_EOI not in data[-4096:]:
            raise ImageError(f"{path}: truncated JPEG (no end-of-image marker)")
    elif data.startswith(_PNG_SIG) and b"IEND" not in data[-64:]:
        raise ImageError(f"{path}: truncated PNG (no IEND chunk)")


# ---- headers ----

class _Bad(Exception):
    """A malformed header (turned into an ImageError naming the file)."""


def _u16(data: bytes, at: int, big: bool = True) -> int:
    if at < 0 or at + 2 > len(data):
        raise _Bad("header cut short")
    return int(struct.unpack_from(">H" if big else "<H", data, at)[0])


def _u32(data: bytes, at: int, big: bool = True) -> int:
    if at < 0 or at + 4 > len(data):
        raise _Bad("header cut short")
    return int(struct.unpack_from(">I" if big else "<I", data, at)[0])


def _tiff_tags(data: bytes, base: int, wanted: set[int]) -> dict[int, int]:
    """First values of `wanted` tags in the first IFD of the TIFF structure at `base` (a TIFF file or EXIF)."""
    order = data[base:base + 2]
    if order not in (b"II", b"MM"):
        raise _Bad("bad TIFF byte order")
    big = order == b"MM"
    if _u16(data, base + 2, big) != 42:
        raise _Bad("bad TIFF magic")
    ifd = base + _u32(data, base + 4, big)
    count = _u16(data, ifd, big)
    if count > 4096:
        raise _Bad(f"TIFF directory of {count} entries")
    found: dict[int, int] = {}
    for k in range(count):
        at = ifd + 2 + 12 * k
        tag, kind, n = _u16(data, at, big), _u16(data, at + 2, big), _u32(data, at + 4, big)
        if tag not in wanted or n == 0:
            continue
        size = {1: 1, 3: 2, 4: 4, 6: 1, 8: 2, 9: 4, 16: 8}.get(kind)
        if size is None:
            raise _Bad(f"TIFF tag {tag} of type {kind}")
        where = at + 8 if size * n <= 4 else base + _u32(data, at + 8, big)
        if size == 1:
            if where >= len(data):
                raise _Bad("header cut short")
            found[tag] = data[where]
        elif size == 2:
            found[tag] = _u16(data, where, big)
        elif size == 4:
            found[tag] = _u32(data, where, big)
        else:
            found[tag] = int(struct.unpack_from(">Q" if big else "<Q", data, where)[0]) \
                if where + 8 <= len(data) else -1
            if found[tag] < 0:
                raise _Bad("header cut short")
    return found


def _jpeg(data: bytes) -> ImageHeader:
    i, sof = 2, None
    while True:
        if i >= len(data):
            raise _Bad("no frame header (SOF)")
        if data[i] != 0xFF:
            raise _Bad(f"marker expected at byte {i}")
        while i < len(data) and data[i] == 0xFF:
            i += 1
        if i >= len(data):
            raise _Bad("no frame header (SOF)")
        marker = data[i]
        i += 1
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            continue
        if marker == 0xD9:
            raise _Bad("no frame header (SOF) before end of image")
        length = _u16(data, i)
        if length < 2 or i + length > len(data):
            raise _Bad(f"segment 0x{marker:02X} runs past the end of the file")
        seg = data[i + 2:i + length]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if sof is not None:
                raise _Bad("two frame headers")
            if len(seg) < 6:
                raise _Bad("frame header cut short")
            precision, height, width, nf = seg[0], _u16(seg, 1), _u16(seg, 3), seg[5]
            if nf == 0 or len(seg) < 6 + 3 * nf:
                raise _Bad("frame header cut short")
            sampling = [(seg[7 + 3 * c] >> 4, seg[7 + 3 * c] & 15) for c in range(nf)]
            if any(not (1 <= h <= 4 and 1 <= v <= 4) for h, v in sampling):
                raise _Bad("bad sampling factors")
            sof = (marker, precision, width, height, sampling)
        if marker == 0xDA:
            if sof is None:
                raise _Bad("scan before frame header")
            first_scan_components = seg[0] if seg else 0
            break
        i += length
    marker, precision, width, height, sampling = sof
    if width == 0 or height == 0:
        raise _Bad(f"frame header gives a {width}x{height} image")
    hmax, vmax = max(h for h, _ in sampling), max(v for _, v in sampling)
    blocks = [(math.ceil(width * h / hmax / 8) + h) * (math.ceil(height * v / vmax / 8) + v) for h, v in sampling]
    sample = 2 if precision > 8 else 1
    out = width * height * 3 * sample
    progressive = marker in (0xC2, 0xC6, 0xCA, 0xCE)
    coefficients = sum(blocks) * 128 if progressive or first_scan_components < len(sampling) else 0
    # imdecode decodes (with the coefficient buffers of a multi-scan file), then copies (or rotates, for
    # EXIF orientation: measured to take the copy's place) into the array it returns
    need = out + max(out, coefficients)
    minimum = 0
    if marker < 0xC9 and marker != 0xC3:  # Huffman coding: each block of each component costs >= 1 bit
        minimum = sum(math.ceil(width * h / hmax / 8) * math.ceil(height * v / vmax / 8) for h, v in sampling) // 8
    return ImageHeader("JPEG", width, height, need, len(data) - i, minimum)


def _png(data: bytes) -> ImageHeader:
    if _u32(data, 8) != 13 or data[12:16] != b"IHDR":
        raise _Bad("first chunk is not IHDR")
    width, height = _u32(data, 16), _u32(data, 20)
    depth, colour = data[24], data[25]
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour)
    allowed = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
    if channels is None or depth not in allowed[colour]:
        raise _Bad(f"bad colour type {colour} / bit depth {depth}")
    if not (0 < width < 2**31 and 0 < height < 2**31):
        raise _Bad(f"header gives a {width}x{height} image")
    # walk the chunks: lengths must stay inside the file; APNG (acTL) and EXIF (eXIf) need more memory
    at, animated, exif = 8, False, False
    while at + 8 <= len(data):
        length, kind = _u32(data, at), data[at + 4:at + 8]
        if length > 2**31 - 1 or at + 12 + length > len(data):
            raise _Bad(f"chunk {kind!r} runs past the end of the file")
        animated |= kind == b"acTL"
        exif |= kind == b"eXIf"
        if kind in (b"IDAT", b"IEND"):
            break
        at += 12 + length
    sample = 2 if depth == 16 else 1
    out = width * height * 3 * sample
    need = 2 * out + (out if exif else 0)  # decode + copy (+ an EXIF rotation, to be safe)
    if animated:
        need += 3 * width * height * 4 * sample  # the frame being composed, the previous one and the output
    raw = height * (1 + math.ceil(width * channels * depth / 8))
    minimum = raw // 1032  # deflate compresses at most 1032:1
    return ImageHeader("PNG", width, height, need, len(data), minimum)


def _bmp(data: bytes) -> ImageHeader:
    dib = _u32(data, 14, big=False)
    if dib == 12:
        width, height, bpp, compression = _u16(data, 18, False), _u16(data, 20, False), _u16(data, 24, False), 0
    elif dib in (16, 40, 52, 56, 64, 108, 124):
        width, height = struct.unpack_from("<ii", data, 18) if len(data) >= 26 else (0, 0)
        bpp = _u16(data, 28, False)
        compression = _u32(data, 30, False) if dib >= 40 else 0
    else:
        raise _Bad(f"unknown BMP header size {dib}")
    height = abs(height)
    if width <= 0 or height == 0:
        raise _Bad(f"header gives a {width}x{height} image")
    if bpp not in (1, 4, 8, 16, 24, 32):
        raise _Bad(f"{bpp} bits per pixel")
    minimum = (width * bpp + 31) // 32 * 4 * height if compression in (0, 3, 6) else 0  # uncompressed rows
    return ImageHeader("BMP", width, height, 2 * width * height * 3 + (width * 4 + 64) * 4, len(data) - 14 - dib,
                       minimum)


def _webp(data: bytes) -> ImageHeader:
    if len(data) < 32:  # OpenCV's decoder reads a 32-byte header
        raise _Bad("header cut short")
    kind = data[12:16]
    if kind == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise _Bad("bad VP8 start code")
        width, height = _u16(data, 26, False) & 0x3FFF, _u16(data, 28, False) & 0x3FFF
        animated = False
    elif kind == b"VP8L":
        if len(data) < 25 or data[20] != 0x2F:
            raise _Bad("bad VP8L signature")
        bits = _u32(data, 21, False)
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        animated = False
    elif kind == b"VP8X":
        if len(data) < 30:
            raise _Bad("header cut short")
        animated = bool(data[20] & 0x02)
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
    else:
        raise _Bad(f"unknown WebP chunk {kind!r}")
    if width == 0 or height == 0:
        raise _Bad(f"header gives a {width}x{height} image")
    need = width * height * (4 + 3 + 3) + (2 * width * height * 4 if animated else 0)
    return ImageHeader("WebP", width, height, need)


def _tiff(data: bytes) -> ImageHeader:
    tags = _tiff_tags(data, 0, {256, 257, 258, 277, 278, 322, 323, 274})
    width, height = tags.get(256, 0), tags.get(257, 0)
    if width == 0 or height == 0:
        raise _Bad(f"header gives a {width}x{height} image")
    bits, spp = tags.get(258, 1), tags.get(277, 1)
    if bits not in (1, 2, 4, 8, 16, 32, 64) or not 1 <= spp <= 4:
        raise _Bad(f"{spp} samples of {bits} bits per pixel")
    sample = max(1, bits // 8)
    tile_w, tile_h = (tags[322], tags[323]) if 322 in tags and 323 in tags else (width, min(tags.get(278, height),
                                                                                           height))
    if tile_w == 0 or tile_h == 0 or tile_w * tile_h > MAX_PIXELS:
        raise _Bad(f"tiles or strips of {tile_w}x{tile_h}")
    out = width * height * 3 * sample
    buffers = tile_w * tile_h * max(spp, 4) * sample * 2
    need = 2 * out + buffers + (out if tags.get(274, 1) != 1 else 0)
    return ImageHeader("TIFF", width, height, need)


_PNM_TOKEN = re.compile(rb"(?:\s|#[^\n\r]*)*(\S+)")


def _pnm(data: bytes) -> ImageHeader:
    kind = data[1:2]
    head = data[:65536]
    if kind == b"7":
        fields: dict[bytes, bytes] = {}
        end = head.find(b"ENDHDR")
        if end < 0:
            raise _Bad("no ENDHDR in the first 64 KiB")
        for line in head[3:end].splitlines():
            parts = line.split(None, 1)
            if parts and not parts[0].startswith(b"#"):
                fields[parts[0]] = parts[1].strip() if len(parts) > 1 else b""
        try:
            width, height = int(fields[b"WIDTH"]), int(fields[b"HEIGHT"])
            depth, maxval = int(fields.get(b"DEPTH", b"1")), int(fields.get(b"MAXVAL", b"255"))
        except (KeyError, ValueError) as exc:
            raise _Bad("bad PAM header") from exc
        body = len(data) - end
        per_pixel, ascii_data = depth, False
    else:
        values, at = [], 2
        for _ in range(2 if kind in (b"1", b"4") else 3):
            m = _PNM_TOKEN.match(head, at)
            if m is None or not m.group(1).isdigit() or len(m.group(1)) > 9:
                raise _Bad("bad PNM header")
            values.append(int(m.group(1)))
            at = m.end()
        width, height = values[0], values[1]
        maxval = values[2] if len(values) > 2 else 1
        depth = 3 if kind in (b"3", b"6") else 1
        body = len(data) - at
        per_pixel, ascii_data = depth, kind in (b"1", b"2", b"3")
    if width <= 0 or height <= 0 or not 0 < maxval < 65536 or not 1 <= depth <= 4:
        raise _Bad(f"header gives a {width}x{height} image, maxval {maxval}, depth {depth}")
    sample = 2 if maxval > 255 else 1
    if kind == b"4":
        minimum = math.ceil(width / 8) * height
    elif ascii_data:
        minimum = width * height * per_pixel * (1 if kind == b"1" else 2) - 1
    else:
        minimum = width * height * per_pixel * sample
    out = width * height * 3 * sample
    return ImageHeader("PNM", width, height, 2 * out, body, minimum)


def read_header(data: bytes, name: str = "<bytes>") -> ImageHeader:
    """Format, size and decoding cost of encoded image bytes, from the header alone.

    Raises `ImageError` for an unknown or unchecked format and for a malformed or implausible header."""
    head = bytes(data[:32])
    try:
        if head.startswith(b"\xff\xd8\xff"):
            return _jpeg(data)
        if head.startswith(_PNG_SIG):
            return _png(data)
        if head.startswith(b"BM") and len(data) >= 18:
            return _bmp(data)
        if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            return _webp(data)
        if head.startswith((b"II*\x00", b"MM\x00*")):
            return _tiff(data)
        if (len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"1234567" and head[1:2] != b""
                and head[2:3].isspace()):
            return _pnm(data)
    except _Bad as exc:
        fmt = {0xFF: "JPEG", 0x89: "PNG", 0x42: "BMP", 0x52: "WebP", 0x49: "TIFF", 0x4D: "TIFF", 0x50: "PNM"}.get(
            head[0], "image")
        raise ImageError(f"{name}: not a readable image (corrupt {fmt} header: {exc})") from None
    except (struct.error, IndexError, ValueError, OverflowError) as exc:
        raise ImageError(f"{name}: not a readable image (corrupt header: {type(exc).__name__})") from None
    for magic, fmt in _UNCHECKED:
        if head.startswith(magic):
            raise ImageError(f"{name}: unsupported format ({fmt}; edged reads {', '.join(SUPPORTED_FORMATS)})")
    raise ImageError(f"{name}: not a readable image (unknown or unsupported format)")


def check_header(data: bytes, name: str = "<bytes>") -> ImageHeader:
    """`read_header`, then refuse images above `MAX_PIXELS` or `MAX_DECODE_BYTES`."""
    header = read_header(data, name)
    w, h = header.width, header.height
    if w * h > MAX_PIXELS:
        raise ImageError(f"{name}: image too large ({w}x{h}, limit {MAX_PIXELS // 1_000_000} MP)")
    if header.data_bytes < header.min_data_bytes:
        raise ImageError(f"{name}: truncated or forged {header.format}: its header claims {w}x{h} pixels, which "
                         f"need at least {header.min_data_bytes} bytes of image data, but the file holds "
                         f"{max(header.data_bytes, 0)}")
    if header.decode_bytes > MAX_DECODE_BYTES:
        raise ImageError(f"{name}: image too large to decode ({w}x{h} {header.format} needs about "
                         f"{header.decode_bytes // 2**20} MiB, limit {MAX_DECODE_BYTES // 2**20} MiB)")
    return header


# ---- decoding ----

def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to RGB uint8 (HxWx3); EXIF orientation applied.

    The header is checked first (`check_header`); decoder messages are folded into the `ImageError`."""
    if not data:
        raise ImageError(f"{name}: empty file")
    _check_truncated(name, data)
    header = check_header(data, name)
    buf = np.frombuffer(data, dtype=np.uint8)
    img = None
    failure = ""
    with captured_stderr() as said:
        try:
            # IMREAD_COLOR applies EXIF orientation and expands grey to 3 channels; ANYDEPTH keeps 16-bit.
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
        except cv2.error as exc:
            failure = str(exc).strip().splitlines()[-1] if str(exc).strip() else "decoder failed"
        except MemoryError:
            failure = "not enough memory"
    if said:
        log.debug("%s: decoder said: %s", name, " | ".join(said))
    why = library_message(said) if said else ""
    if img is None:
        detail = why or failure
        raise ImageError(f"{name}: not a readable image (corrupt {header.format}"
                         f"{': ' + detail if detail else ''})")
    if header.format == "JPEG" and any(_JPEG_DATA_LOST.search(line) for line in said):
        raise ImageError(f"{name}: truncated or corrupt JPEG ({why})")
    return _to_rgb8_in_place(img, name)


def _to_rgb8_in_place(img: np.ndarray, name: str) -> np.ndarray:
    """A decoder's BGR array as RGB uint8 with as few full-size copies as possible (see `to_rgb8`)."""
    if img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        return to_rgb8(img, name, bgr=True)
    h, w = img.shape[:2]
    if h * w > MAX_PIXELS:
        raise ImageError(f"{name}: image too large ({w}x{h}, limit {MAX_PIXELS // 1_000_000} MP)")
    if img.dtype == np.uint16:
        out = np.empty(img.shape, np.uint8)
        np.right_shift(img, 8, out=out, casting="unsafe")
        img = out
    elif img.dtype in (np.float32, np.float64):
        with np.errstate(all="ignore"):
            np.multiply(img, 255.0, out=img)
            np.add(img, 0.5, out=img)
            np.nan_to_num(img, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
            np.clip(img, 0, 255, out=img)
        img = img.astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageError(f"{name}: unsupported pixel type {img.dtype}")
    img = np.ascontiguousarray(img)
    cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)
    return img


def to_rgb8(img: np.ndarray, name: str = "<array>", bgr: bool = False) -> np.ndarray:
    """Convert any 2-D/3-D image array (grey, BGR(A)/RGB(A), 8/16-bit, float 0..1) to RGB uint8."""
    if img.ndim not in (2, 3) or img.size == 0:
        raise ImageError(f"{name}: unsupported image shape {img.shape}")
    h, w = img.shape[:2]
    if h * w > MAX_PIXELS:
        raise ImageError(f"{name}: image too large ({w}x{h}, limit {MAX_PIXELS // 1_000_000} MP)")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageError(f"{name}: unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    channels = img.shape[2]
    if channels == 1:
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    if channels == 4:
        img = img[:, :, :3]
    elif channels != 3:
        raise ImageError(f"{name}: unsupported number of channels ({channels})")
    if bgr:
        img = img[:, :, ::-1]
    return np.ascontiguousarray(img)


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as RGB uint8 (HxWx3), or raise `ImageError` naming the file.

    Only a regular file of at most `MAX_FILE_BYTES` is read (FIFOs and devices are refused unopened)."""
    data = read_regular(path, MAX_FILE_BYTES, ImageError, "an image")
    return decode_image(data, shown(path))


def encode_png(rgb: np.ndarray) -> bytes:
    """Encode an RGB uint8 image as PNG bytes (lossless; used for stored face crops)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise ImageError("cannot encode image as PNG")
    return buf.tobytes()


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """Encode an RGB uint8 image as JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageError("cannot encode image as JPEG")
    return buf.tobytes()
