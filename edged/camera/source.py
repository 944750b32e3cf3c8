"""The one video reader: V4L2 cameras, RTSP/HTTP streams and video files, all through OpenCV.

`FrameSource` wraps one `cv2.VideoCapture` (no threads): `open()`, `read()` RGB uint8 frames (after the
region of interest and resize), `skip()` frames without decoding them, `close()`. The daemon's grabber
(`edged.camera.grabber`), `edged enroll` (video files and `--camera`) and the bench all read through it,
so they agree on colour (RGB), on the frame rate of files without one (`FALLBACK_FPS`) and on errors.

Video files are untrusted input like images: only a regular file (no FIFO, device or directory, also behind a
symlink) of at most `MAX_VIDEO_BYTES` is opened, by its absolute path, with the FFmpeg backend. FFmpeg's own
log is silenced (`OPENCV_FFMPEG_LOGLEVEL`, unless set in the environment: 24 shows its warnings) and
whatever OpenCV writes to stderr while a file is opened is caught and folded into the one-line `CameraError`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

# Read by OpenCV when the first FFmpeg capture is created: FFmpeg's messages ("moov atom not found",
# "error while decoding MB ...") would otherwise reach the terminal around edged's one-line errors.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET

import cv2
import numpy as np

from edged.config import CameraConfig
from edged.errors import EdgedError
from edged.fileio import captured_stderr, check_regular, library_message, shown

log = logging.getLogger(__name__)

_V4L2_PATH = re.compile(r"^/dev/video\d+$")
_URL = re.compile(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp)://", re.IGNORECASE)
#: Frames per second assumed for a source that reports none.
FALLBACK_FPS = 30.0
#: Refuse video files larger than this (a sanity limit: frames are streamed, never read whole).
MAX_VIDEO_BYTES = 16 * 2**30


class CameraError(EdgedError):
    """A frame source cannot be opened or read."""


class Capture(Protocol):
    """The part of `cv2.VideoCapture` the sources use."""

    def isOpened(self) -> bool: ...
    def read(self) -> tuple[bool, Any]: ...
    def get(self, prop: int) -> float: ...
    def set(self, prop: int, value: float) -> bool: ...
    def grab(self) -> bool: ...
    def release(self) -> None: ...


#: Builds a capture from (source, OpenCV API preference); tests substitute a fake camera here.
CaptureFactory = Callable[[int | str, int], Capture]


def opencv_capture(source: int | str, api: int, timeout_s: float = 5.0) -> Capture:
    """A `cv2.VideoCapture`; network streams get open and read timeouts so a dead stream fails instead of hanging."""
    if isinstance(source, str) and _URL.match(source):
        ms = int(timeout_s * 1000)
        return cv2.VideoCapture(source, api, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
    return cv2.VideoCapture(source, api)


def source_kind(source: int | str) -> str:
    """"v4l2" (index or /dev/videoN), "stream" (URL) or "file"."""
    if isinstance(source, int) or (isinstance(source, str) and source.strip().isdigit()):
        return "v4l2"
    if _V4L2_PATH.match(source):
        return "v4l2"
    if _URL.match(source):
        return "stream"
    return "file"


def redact_url(source: int | str) -> str:
    """The source for logs: credentials in a URL (rtsp://user:pass@host) are masked."""
    return re.sub(r"(://)[^/@\s]+@", r"\1***@", str(source))


def crop_and_resize(image: np.ndarray, roi: list[int] | None, max_width: int | None) -> np.ndarray:
    """Cut the region of interest (clipped to the image), then downscale to at most `max_width`."""
    if roi is not None:
        h, w = image.shape[:2]
        left, top = min(max(roi[0], 0), w), min(max(roi[1], 0), h)
        right, bottom = min(max(roi[2], 0), w), min(max(roi[3], 0), h)
        if right <= left or bottom <= top:
            raise CameraError(f"camera.roi {roi} lies outside the {w}x{h} frame")
        image = image[top:bottom, left:right]
    if max_width is not None and image.shape[1] > max_width:
        h, w = image.shape[:2]
        image = cv2.resize(image, (max_width, max(1, round(h * max_width / w))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


class FrameSource:
    """One opened OpenCV capture: `open()`, `read()` RGB frames, `skip()`, `close()`. Not thread-safe."""

    def __init__(self, cfg: CameraConfig, capture_factory: CaptureFactory | None = None) -> None:
        self.cfg = cfg
        self.kind = source_kind(cfg.source)
        self.name = shown(cfg.source) if self.kind == "file" else redact_url(cfg.source)
        self._factory = capture_factory or (lambda src, api: opencv_capture(src, api, cfg.read_timeout_s))
        self._cap: Capture | None = None
        self._first: Any = None
        #: Frames per second reported by the source (0 when unknown).
        self.reported_fps = 0.0
        #: Frames in a video file (0 when unknown or live).
        self.frame_count = 0

    @classmethod
    def for_file(cls, path: str | os.PathLike[str]) -> FrameSource:
        """A reader of one video file, every frame at full size."""
        return cls(CameraConfig(source=str(path)))

    @property
    def fps(self) -> float:
        """Frames per second: the source's own, else `FALLBACK_FPS`."""
        return self.reported_fps or FALLBACK_FPS

    def open(self) -> None:
        """Open the source or raise `CameraError` saying why not.

        A video file must deliver its first frame here (a corrupt file or an unknown codec fails now,
        not at the first read); that frame is the first `read()`.
        """
        self.close()
        source: int | str = self.cfg.source
        api = cv2.CAP_ANY
        if self.kind == "v4l2":
            api = cv2.CAP_V4L2
            if isinstance(source, str) and source.strip().isdigit():
                source = int(source)
            if isinstance(source, str) and not os.path.exists(source):
                raise CameraError(f"{source}: no such camera device")
        elif self.kind == "stream":
            api = cv2.CAP_FFMPEG
        else:
            api = cv2.CAP_FFMPEG  # not CAP_ANY: no image-sequence backend reading "%d" in the name
            source = self._check_file(str(source))
            with captured_stderr() as said:
                try:
                    self._open_file(source, api)
                except cv2.error as exc:
                    said.append(str(exc).strip().splitlines()[-1] if str(exc).strip() else "OpenCV error")
                    self._fail_file()
            if said:
                log.debug("%s: OpenCV said: %s", self.name, " | ".join(said))
            if self._cap is None:
                telling = [line for line in said if "can't be used to capture by name" not in line]
                why = library_message(telling) if telling else ""
                raise CameraError(f"{self.name}: cannot open video (corrupt, truncated or unsupported codec"
                                  f"{': ' + why if why else ''})")
            return
        cap = self._factory(source, api)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"{self.name}: cannot open {self.kind} source")
        if self.kind == "v4l2":
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a stale buffered one
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.reported_fps = fps if 0.0 < fps < 1000.0 else 0.0
        self._cap = cap

    @staticmethod
    def _check_file(source: str) -> str:
        """The absolute path of a video file fit to open (FFmpeg reads "proto:..." names as protocols)."""
        path = Path(source).expanduser()
        try:
            os.stat(path)
        except FileNotFoundError as exc:
            raise CameraError(f"{shown(source)}: no such video file") from exc
        except (OSError, ValueError):
            pass  # check_regular says what
        check_regular(path, MAX_VIDEO_BYTES, CameraError, "a video file")
        if not os.access(path, os.R_OK):
            raise CameraError(f"{shown(source)}: permission denied")
        return os.path.abspath(path)

    def _open_file(self, source: str, api: int) -> None:
        """Open a video file and read its first frame; `self._cap` stays None when either fails."""
        cap = self._factory(source, api)
        if not cap.isOpened():
            cap.release()
            return
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.reported_fps = fps if 0.0 < fps < 1000.0 else 0.0
        self.frame_count = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        ok, first = cap.read()
        if not ok or first is None or getattr(first, "size", 0) == 0:
            cap.release()
            return
        self._first = first
        self._cap = cap

    def _fail_file(self) -> None:
        if self._cap is not None:
            self._cap.release()
        self._cap = None
        self._first = None

    @property
    def is_open(self) -> bool:
        return self._cap is not None

    def _next(self) -> Any:
        if self._first is not None:
            bgr, self._first = self._first, None
            return bgr
        assert self._cap is not None
        ok, bgr = self._cap.read()
        return bgr if ok else None

    def read(self) -> np.ndarray | None:
        """The next frame as RGB uint8 after ROI/resize, or None at end of file / on a read failure."""
        if self._cap is None:
            return None
        bgr = self._next()
        if bgr is None or getattr(bgr, "size", 0) == 0:
            return None
        if bgr.ndim == 2:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
        else:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGB if bgr.shape[2] == 4 else cv2.COLOR_BGR2RGB)
        return crop_and_resize(rgb, self.cfg.roi, self.cfg.max_width)

    def skip(self) -> bool:
        """Pass over one frame without decoding it; False at the end."""
        if self._cap is None:
            return False
        if self._first is not None:
            self._first = None
            return True
        return bool(self._cap.grab())

    def frames(self, step: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        """(frame index, RGB frame) for every `step`-th frame until the end (the others are skipped)."""
        index = 0
        while True:
            if index % step == 0:
                frame = self.read()
                if frame is None:
                    return
                yield index, frame
            elif not self.skip():
                return
            index += 1

    def close(self) -> None:
        self._first = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
