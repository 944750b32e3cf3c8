"""Reading images: every odd input gives RGB uint8 or a one-line error naming the file."""

from __future__ import annotations

import os
import struct
import time
import zlib

import cv2
import numpy as np
import pytest

from edged.errors import ImageError
from edged.fileio import captured_stderr, read_regular
from edged.vision.imageio import (
    MAX_DECODE_BYTES,
    MAX_FILE_BYTES,
    decode_image,
    load_image,
    read_header,
    to_rgb8,
)


def test_jpeg_is_rgb_uint8(openface_dir):
    img = load_image(openface_dir / "lennon-1.jpg")
    assert img.dtype == np.uint8 and img.shape == (1050, 1400, 3)
    bgr = cv2.imread(str(openface_dir / "lennon-1.jpg"))
    assert np.array_equal(img, bgr[:, :, ::-1])


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"this is not an image at all", "not a readable image"),
])
def test_bad_bytes(tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as info:
        load_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


def test_truncated_jpeg(tmp_path, openface_dir):
    data = (openface_dir / "clapton-1.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated JPEG"):
        load_image(path)


def test_truncated_png(tmp_path, openface_dir):
    _, buf = cv2.imencode(".png", cv2.imread(str(openface_dir / "clapton-2.jpg")))
    path = tmp_path / "cut.png"
    path.write_bytes(buf.tobytes()[:-200])
    with pytest.raises(ImageError, match="truncated PNG"):
        load_image(path)


def test_png_with_alpha_grey_and_16bit(tmp_path, openface_dir):
    bgr = cv2.imread(str(openface_dir / "clapton-2.jpg"))
    bgra = np.dstack([bgr, np.full(bgr.shape[:2], 128, np.uint8)])
    cv2.imwrite(str(tmp_path / "alpha.png"), bgra)
    assert np.array_equal(load_image(tmp_path / "alpha.png"), bgr[:, :, ::-1])

    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    g = load_image(tmp_path / "grey.png")
    assert g.shape == bgr.shape and np.array_equal(g[:, :, 0], grey) and np.array_equal(g[:, :, 2], grey)

    deep = bgr.astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    assert np.array_equal(load_image(tmp_path / "deep.png"), bgr[:, :, ::-1])


def test_to_rgb8_rejects_odd_arrays():
    with pytest.raises(ImageError, match="channels"):
        to_rgb8(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageError, match="pixel type"):
        to_rgb8(np.zeros((4, 4, 3), np.int32))
    with pytest.raises(ImageError, match="too large"):
        to_rgb8(np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (20000, 20000, 3), (0, 0, 0)))


def test_decode_names_the_source():
    with pytest.raises(ImageError, match=r"^camera: empty file"):
        decode_image(b"", "camera")


# ---- untrusted files: sizes from the header, non-regular files, names, decoder chatter ----

def _sof_at(data: bytes) -> int:
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        if (i := data.find(marker)) > 0:
            return i
    raise AssertionError("no SOF")


def forged_jpeg(width: int, height: int, keep: int | None = 4096, pad: int = 0, params: list[int] | None = None,
                ) -> bytes:
    """A real JPEG whose frame header claims width x height, cut to `keep` bytes, `pad` zero bytes, then EOI."""
    _, buf = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8), params or [])
    data = bytearray(buf.tobytes())
    i = _sof_at(bytes(data))
    data[i + 5:i + 9] = struct.pack(">HH", height, width)
    body = bytes(data[:keep] if keep else data[:-2])
    return body + b"\x00" * pad + b"\xff\xd9"


def png_with_ihdr(width: int, height: int, idat: bytes = b"\x00" * 64) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(idat)) + chunk(b"IEND", b"")


@pytest.mark.timeout(20)
def test_huge_jpeg_header_is_refused_before_decoding():
    # measured: 4 KB claiming 30000x30000 made libjpeg allocate > 4 GB and run for 14 s
    t0 = time.monotonic()
    with pytest.raises(ImageError, match=r"^x.jpg: image too large \(30000x30000, limit 120 MP\)$"):
        decode_image(forged_jpeg(30000, 30000), "x.jpg")
    assert time.monotonic() - t0 < 1.0


def test_huge_png_header_is_an_image_error():
    # measured: a cv2.error traceback (CV_IO_MAX_IMAGE_PIXELS assertion)
    with pytest.raises(ImageError, match=r"image too large \(60000x60000"):
        decode_image(png_with_ihdr(60000, 60000), "big.png")


@pytest.mark.parametrize("data, fmt, size", [
    (lambda: forged_jpeg(10000, 10000), "JPEG", "10000x10000"),  # 100 MP would be allocated, then filled grey
    (lambda: png_with_ihdr(9000, 9000), "PNG", "9000x9000"),
])
def test_header_claiming_more_pixels_than_the_data_holds(data, fmt, size):
    with pytest.raises(ImageError, match=f"^f.img: truncated or forged {fmt}: its header claims {size} pixels"):
        decode_image(data(), "f.img")


def test_image_that_would_need_too_much_memory_to_decode():
    # progressive 4:4:4: coefficient buffers (6 bytes a pixel) plus the output; enough data to look real
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    data = forged_jpeg(10000, 10000, keep=None, pad=700_000, params=params)
    header = read_header(data)
    assert header.format == "JPEG" and header.decode_bytes > MAX_DECODE_BYTES
    with pytest.raises(ImageError, match=r"too large to decode \(10000x10000 JPEG needs about \d+ MiB, limit 768"):
        decode_image(data, "p.jpg")


@pytest.mark.timeout(10)
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)  # measured: `edged identify x.jpg` hung forever in read()
    with pytest.raises(ImageError, match=r"x.jpg: is a FIFO \(named pipe\), not an image$"):
        load_image(fifo)


def test_symlink_to_a_device_or_directory_is_refused(tmp_path):
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")  # measured: read /dev/zero until memory ran out
    with pytest.raises(ImageError, match=r"zero.jpg: is a character device, not an image$"):
        load_image(tmp_path / "zero.jpg")
    (tmp_path / "dir.png").symlink_to(tmp_path)
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path / "dir.png")
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    with pytest.raises(ImageError, match="too many levels of symbolic links"):
        load_image(tmp_path / "loop.jpg")


def test_file_over_the_size_limit_is_refused_unread(tmp_path):
    big = tmp_path / "big.jpg"
    with open(big, "wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(ImageError, match=r"big.jpg: file too large \(64.0 MiB, limit 64.0 MiB\)"):
        load_image(big)


def test_read_regular_never_reads_past_the_limit(tmp_path):
    path = tmp_path / "grows.bin"
    path.write_bytes(b"x" * 100)
    assert read_regular(path, 100, ImageError) == b"x" * 100
    with pytest.raises(ImageError, match="file too large"):
        read_regular(path, 99, ImageError)


def test_odd_file_names_give_short_escaped_messages(tmp_path):
    long_name = str(tmp_path / ("a" * 300 + ".jpg"))  # measured: OSError ENAMETOOLONG traceback
    with pytest.raises(ImageError, match="file name too long") as info:
        load_image(long_name)
    message = str(info.value)
    assert len(message) < 220 and "..." in message and message.endswith(".jpg: file name too long")
    raw = os.fsencode(tmp_path) + b"/caf\xe9\x1b[31m.jpg"  # Latin-1 byte and an escape sequence
    with open(raw, "wb") as fh:
        fh.write(b"not an image")
    with pytest.raises(ImageError) as info:
        load_image(raw)
    message = str(info.value)
    assert "caf\\xe9\\x1b[31m.jpg: not a readable image" in message and message.isprintable()
    with pytest.raises(ImageError) as info:
        load_image(os.fsdecode(raw))  # the same name as str (surrogate escapes)
    assert "caf\\xe9\\x1b[31m.jpg" in str(info.value)


def test_libjpeg_warnings_are_folded_into_the_error(openface_dir, capfd):
    data = (openface_dir / "clapton-1.jpg").read_bytes()
    cut = data[: len(data) // 2] + b"\xff\xd9"  # has an EOI, so only the decoder sees the missing data
    with pytest.raises(ImageError, match=r"^cut.jpg: truncated or corrupt JPEG \(Corrupt JPEG data: premature end"):
        decode_image(cut, "cut.jpg")
    assert capfd.readouterr().err == ""  # measured: libjpeg's line leaked to stderr before edged's


def test_libpng_errors_are_folded_into_the_error(openface_dir, capfd):
    _, buf = cv2.imencode(".png", cv2.imread(str(openface_dir / "clapton-2.jpg")))
    data = bytearray(buf.tobytes())
    i = data.index(b"IDAT") + 4
    data[i + 10:i + 4000] = bytes(3990)  # deflate data destroyed, CRC now wrong
    with pytest.raises(ImageError, match=r"^bad.png: not a readable image \(corrupt PNG: .*libpng") as info:
        decode_image(bytes(data), "bad.png")
    assert "\n" not in str(info.value)
    assert capfd.readouterr().err == ""


def test_captured_stderr_passes_other_lines_on(capfd):
    with captured_stderr() as said:
        os.write(2, b"libpng warning: iCCP: known incorrect sRGB profile\n")
        os.write(2, b"INFO edged.runtime: another thread's log line\n")
    assert said == ["libpng warning: iCCP: known incorrect sRGB profile"]
    assert capfd.readouterr().err == "INFO edged.runtime: another thread's log line\n"


@pytest.mark.parametrize("ext, params, convert", [
    (".bmp", [], None), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101], None), (".webp", [], None),
    (".tif", [], None), (".tif", [], "u16"), (".tif", [], "f32"), (".ppm", [], None), (".pgm", [], "grey"),
    (".pam", [], None), (".ppm", [], "u16"), (".pbm", [], "bits"), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], None),
    (".png", [], "u16"),
])
def test_every_supported_format_decodes_like_opencv(tmp_path, openface_dir, ext, params, convert):
    bgr = cv2.imread(str(openface_dir / "clapton-2.jpg"))
    img = {None: bgr, "u16": bgr.astype(np.uint16) * 257, "f32": bgr.astype(np.float32) / 255,
           "grey": cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY),
           "bits": (cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) > 128).astype(np.uint8) * 255}[convert]
    path = tmp_path / f"img{ext}"
    assert cv2.imwrite(str(path), img, params)
    header = read_header(path.read_bytes())
    assert (header.width, header.height) == (bgr.shape[1], bgr.shape[0])
    ref = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if ref.dtype == np.uint16:
        ref = (ref >> 8).astype(np.uint8)
    elif ref.dtype == np.float32:
        ref = np.clip(ref * 255.0 + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(load_image(path), ref[:, :, ::-1])


def test_ascii_pnm_and_unsupported_formats(tmp_path):
    (tmp_path / "a.pgm").write_bytes(b"P2\n# comment\n3 2\n255\n1 2 3\n4 5 6\n")
    assert load_image(tmp_path / "a.pgm")[:, :, 0].tolist() == [[1, 2, 3], [4, 5, 6]]
    (tmp_path / "a.gif").write_bytes(b"GIF89a" + bytes(100))
    with pytest.raises(ImageError, match=r"a.gif: unsupported format \(GIF; edged reads JPEG, PNG"):
        load_image(tmp_path / "a.gif")


def test_edged_errors_are_always_one_printable_line():
    err = ImageError("bad\x1b[2J name\udcff\nsecond line")
    assert str(err) == "bad\\x1b[2J name\\udcff second line" and str(err).isprintable()
