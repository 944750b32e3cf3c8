"""Frame sources on real video files (pacing, backpressure, ROI, vanishing files, reconnect backoff);
the V4L2 path with a fake capture device (the only mock: no camera hardware here)."""

from __future__ import annotations

import itertools
import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.camera.grabber import Grabber
from edged.camera.source import CameraError, FrameSource, crop_and_resize, redact_url, source_kind
from edged.config import CameraConfig
from edged.types import Frame
from tests.conftest import CLIP_FPS, CLIP_FRAMES, FakeCamera, run_cli, wait_until


def drain(grabber: Grabber, until: float = 30.0) -> list[Frame]:
    out = []
    deadline = time.monotonic() + until
    while not grabber.finished and time.monotonic() < deadline:
        frame = grabber.get(0.2)
        if frame is not None:
            out.append(frame)
    return out


class VirtualClock:
    """A clock that only moves when the grabber pauses (pacing), so pacing is checked without wall time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    def pause(self, seconds: float) -> bool:
        self.pauses.append(seconds)
        self.now += seconds
        return False


def test_source_kinds_and_redaction() -> None:
    assert source_kind(0) == "v4l2" and source_kind("2") == "v4l2" and source_kind("/dev/video1") == "v4l2"
    assert source_kind("rtsp://cam.local/stream") == "stream" and source_kind("https://x/y.mjpg") == "stream"
    assert source_kind("/srv/door.mp4") == "file" and source_kind("clip.mp4") == "file"
    assert redact_url("rtsp://admin:hunter2@10.0.0.5:554/s1") == "rtsp://***@10.0.0.5:554/s1"
    assert "hunter2" not in redact_url("rtsp://admin:hunter2@cam/")


def test_file_not_realtime_delivers_every_frame(clip: Path, clip_frames: list[np.ndarray]) -> None:
    stop = threading.Event()
    grabber = Grabber(CameraConfig(source=str(clip), realtime=False), stop)
    grabber.start()
    time.sleep(0.3)  # a slow consumer: the grabber must wait (backpressure), not drop
    frames = drain(grabber)
    assert grabber.join(2.0)
    assert [f.index for f in frames] == list(range(CLIP_FRAMES))
    assert np.allclose([f.t for f in frames], np.arange(CLIP_FRAMES) / CLIP_FPS, atol=1e-6)
    assert np.array_equal(frames[0].image, clip_frames[0]) and np.array_equal(frames[11].image, clip_frames[11])
    status = grabber.status()
    assert status.state == "ended" and status.frames_read == CLIP_FRAMES and status.frames_dropped == 0
    assert grabber.finished


def test_file_realtime_is_paced_at_the_files_rate(clip: Path) -> None:
    """`realtime: true` hands a file's frames over no sooner than a camera would: frame k at start + k / fps,
    checked on the injected clock (it only moves when the grabber pauses)."""
    clock = VirtualClock()
    stop = threading.Event()
    grabber = Grabber(CameraConfig(source=str(clip), realtime=True), stop, clock=clock, pause=clock.pause)
    start = clock.now
    grabber.start()
    handed: list[tuple[float, Frame]] = []
    while not handed or handed[-1][1].index < 60:
        frame = grabber.get(5.0)
        assert frame is not None
        handed.append((clock.now, frame))
    stop.set()
    assert grabber.join(2.0)
    for at, frame in handed:
        assert at >= start + frame.t - 1e-9  # never early
        assert frame.t == pytest.approx(frame.index / CLIP_FPS, abs=1e-6)
    indices = [f.index for _, f in handed]
    assert indices == sorted(set(indices)) and indices[0] == 0
    # the grabber waited out the video's own time, frame by frame
    assert sum(clock.pauses) == pytest.approx(clock.now - start) and clock.now - start >= handed[-1][1].t - 1e-9
    assert all(p <= 1 / CLIP_FPS + 1e-6 for p in clock.pauses)


def test_file_realtime_reader_that_falls_behind_skips_instead_of_racing(clip: Path) -> None:
    """A starved reader (here: the clock jumps 0.5 s while frame 10 is read) skips the frames a live camera
    would have shown meanwhile, so video time stays with the clock; racing through them instead would let
    3 s of video pass in less than 3 s of wall time and end presence early (a CI failure once)."""
    clock = VirtualClock()
    stop = threading.Event()
    grabber = Grabber(CameraConfig(source=str(clip), realtime=True), stop, clock=clock, pause=clock.pause)
    read = grabber.source.read

    def starved_read() -> np.ndarray | None:
        image = read()
        if grabber._index == 10:
            clock.now += 0.5
        return image

    grabber.source.read = starved_read  # type: ignore[method-assign]
    start = clock.now
    grabber.start()
    handed: list[tuple[float, Frame]] = []
    while not handed or handed[-1][1].index < 40:
        frame = grabber.get(5.0)
        assert frame is not None
        handed.append((clock.now, frame))
    stop.set()
    assert grabber.join(2.0)
    indices = [f.index for _, f in handed]
    late = round(0.5 * CLIP_FPS) - 3  # the jump came while frame 10 was read, a frame after frame 9's due time
    assert 10 in indices and not set(range(11, 11 + late)) & set(indices), str(indices)
    for at, frame in handed:
        assert frame.t == pytest.approx(frame.index / CLIP_FPS, abs=1e-6)
        if frame.index == 10:
            continue  # the frame being read while the reader was starved: late by nature
        assert at - start - 1.0 / CLIP_FPS <= frame.t + 1e-6 and at >= start + frame.t - 1e-9, (at - start, frame.t)
    status = grabber.status()
    assert grabber.skipped >= late - 2 and status.frames_dropped >= grabber.skipped
    assert status.frames_dropped + len(handed) + len(grabber.slot) == status.frames_read


def test_file_realtime_drops_for_a_slow_consumer(clip: Path) -> None:
    """A consumer slower than the file's rate gets the newest frame; the ones in between are dropped and counted."""
    stop = threading.Event()
    grabber = Grabber(CameraConfig(source=str(clip), realtime=True), stop)
    grabber.start()
    got = []
    while len(got) < 6:
        frame = grabber.get(2.0)
        if frame is not None:
            got.append(frame)
        time.sleep(0.2)  # slower than 30 fps: only the newest frame is kept
    stop.set()
    assert grabber.join(2.0)
    status = grabber.status()
    assert status.state == "stopped"
    assert status.frames_dropped > 10
    assert status.frames_dropped + len(got) + len(grabber.slot) == status.frames_read
    indices = [f.index for f in got]
    assert indices == sorted(indices) and all(b - a >= 3 for a, b in itertools.pairwise(indices)), indices


def test_roi_and_resize(clip: Path, clip_frames: list[np.ndarray]) -> None:
    stop = threading.Event()
    cfg = CameraConfig(source=str(clip), realtime=False, roi=[100, 40, 500, 340], max_width=200)
    grabber = Grabber(cfg, stop)
    grabber.start()
    frame = grabber.get(5.0)
    stop.set()
    grabber.join(2.0)
    assert frame is not None and frame.image.shape == (150, 200, 3)
    expected = cv2.resize(clip_frames[0][40:340, 100:500], (200, 150), interpolation=cv2.INTER_AREA)
    assert np.array_equal(frame.image, expected)
    assert crop_and_resize(clip_frames[0], None, 1000).shape == (360, 640, 3)  # never upscales


def test_roi_outside_frame_fails_with_clear_status(clip: Path) -> None:
    stop = threading.Event()
    grabber = Grabber(CameraConfig(source=str(clip), realtime=False, roi=[700, 0, 900, 100]), stop)
    grabber.start()
    assert grabber.join(5.0)
    status = grabber.status()
    assert status.state == "failed" and "outside the 640x360 frame" in status.detail and grabber.finished


def test_missing_file_waited_for_retries_with_backoff_until_it_appears(tmp_path: Path, clip: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edged.camera.grabber")
    path = tmp_path / "later.mp4"
    stop = threading.Event()
    grabber = Grabber(CameraConfig(source=str(path), realtime=False, wait_for_file=True), stop)
    grabber.start()
    assert wait_until(lambda: grabber.status().failures >= 3, 5.0)  # attempts after 0, 0.5 and 1.5 s
    status = grabber.status()
    assert status.state == "reconnecting" and "no such video file" in status.detail and status.retry_in_s == 2.0
    delays = [r.args[1] for r in caplog.records if "retrying in" in r.getMessage()]
    assert delays[:3] == [0.5, 1.0, 2.0]
    assert grabber.get(0.01) is None and not grabber.finished
    shutil.copy(clip, path)
    frame = grabber.get(5.0)
    assert frame is not None and frame.index == 0
    status = grabber.status()
    assert status.state == "streaming" and status.failures == 0 and status.reconnects >= 3
    stop.set()
    assert grabber.join(2.0)


def test_looping_file_that_vanishes_is_reopened_when_back(tmp_path: Path, clip: Path) -> None:
    path = tmp_path / "door.mp4"
    shutil.copy(clip, path)
    stop = threading.Event()
    grabber = Grabber(CameraConfig(source=str(path), realtime=False, loop=True, reconnect_max_s=0.5), stop)
    grabber.start()
    first = grabber.get(5.0)
    assert first is not None
    path.unlink()  # the open file is read to its end; reopening for the next loop must fail
    frames = [first]
    assert wait_until(lambda: (frames.extend(f for f in [grabber.get(0.05)] if f) or
                               grabber.status().state == "reconnecting") and len(grabber.slot) == 0, 20.0)
    while (f := grabber.get(0.05)) is not None:
        frames.append(f)
    assert [f.index for f in frames] == list(range(CLIP_FRAMES))
    assert "no such video file" in grabber.status().detail
    shutil.copy(clip, path)
    again = grabber.get(3.0)
    stop.set()
    grabber.join(2.0)
    assert again is not None and again.index == CLIP_FRAMES  # counting continues across loops
    assert again.t == pytest.approx(CLIP_FRAMES / CLIP_FPS, abs=1e-6)


def test_v4l2_camera_reconnects_after_read_failure(clip_frames: list[np.ndarray]) -> None:
    opened: list[tuple[object, int, FakeCamera]] = []

    def factory(source, api):
        cam = FakeCamera(clip_frames, fail_after=5 if not opened else 1000)
        opened.append((source, api, cam))
        return cam

    stop = threading.Event()
    grabber = Grabber(CameraConfig(source="0", reconnect_min_s=0.1), stop, capture_factory=factory)
    grabber.start()
    got = []
    assert wait_until(lambda: (got.extend(f for f in [grabber.get(0.05)] if f) or len(opened) >= 2)
                      and len(got) >= 8, 10.0)
    stop.set()
    assert grabber.join(2.0)
    assert [(s, a) for s, a, _ in opened[:2]] == [(0, cv2.CAP_V4L2), (0, cv2.CAP_V4L2)]
    assert opened[0][2].props[cv2.CAP_PROP_BUFFERSIZE] == 1 and opened[0][2].released
    assert [f.index for f in got] == sorted(f.index for f in got)
    assert any(np.array_equal(f.image, clip_frames[0]) for f in got)  # converted back to RGB
    assert got[-1].t > got[0].t and abs(got[-1].t - time.monotonic()) < 5  # live: monotonic clock
    status = grabber.status()
    assert status.reconnects == 1 and status.state == "stopped"


def test_enrolling_from_a_live_camera_samples_the_newest_frames(clip_frames: list[np.ndarray]) -> None:
    """`edged enroll --camera`: at most 5 frames per second of wall time are examined, the rest are read
    and dropped; the run ends after `seconds` or when the camera fails."""
    from edged.gallery.enroll import iter_camera_frames

    cams: list[FakeCamera] = []

    def factory(source, api):
        cams.append(FakeCamera(clip_frames, fail_after=1000))
        return cams[-1]

    source = FrameSource(CameraConfig(source="0"), capture_factory=factory)
    source.open()
    clock = lambda: cams[0].reads / 30.0  # noqa: E731  the camera's own 30 fps as the clock
    got = [index for index, frame in iter_camera_frames(source, seconds=1.0, max_fps=5.0, clock=clock)]
    assert 4 <= len(got) <= 5 and got[0] == 0 and all(6 <= b - a <= 7 for a, b in itertools.pairwise(got))
    assert cams[0].reads == 30  # read through to the end of the second, then stopped
    source.close()
    cams.clear()
    source = FrameSource(CameraConfig(source="0"), capture_factory=lambda s, a: cams.append(
        FakeCamera(clip_frames, fail_after=8)) or cams[-1])
    source.open()
    assert [i for i, _ in iter_camera_frames(source, seconds=10.0, max_fps=5.0, clock=clock)] == [0, 6]


# ---- video files that cannot be opened ----

def _failed_detail(cfg: CameraConfig, timeout: float = 10.0) -> str:
    stop = threading.Event()
    grabber = Grabber(cfg, stop)
    grabber.start()
    ended = grabber.join(timeout)
    stop.set()
    assert ended, grabber.status()  # measured: retried forever with loop: false
    status = grabber.status()
    assert status.state == "failed" and grabber.finished and status.reconnects == 0, status
    return status.detail


def test_missing_file_fails_at_once_unless_waited_for(tmp_path: Path) -> None:
    detail = _failed_detail(CameraConfig(source=str(tmp_path / "gone.mp4"), realtime=False))
    assert detail == f"{tmp_path / 'gone.mp4'}: no such video file (camera.wait_for_file: true waits for the file)"


def test_truncated_file_fails_with_one_clear_line_and_no_ffmpeg_chatter(tmp_path: Path, clip: Path,
                                                                        capfd: pytest.CaptureFixture[str]) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[:100_000])  # the moov atom is at the end: FFmpeg cannot open it
    detail = _failed_detail(CameraConfig(source=str(cut), realtime=False))
    assert detail.startswith(f"{cut}: cannot open video (corrupt, truncated or unsupported codec")
    assert "moov" not in capfd.readouterr().err  # measured: "[mov,mp4,... @ 0x...] moov atom not found"


@pytest.mark.timeout(20)
def test_fifo_device_and_directory_are_not_video_files(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.mp4")
    (tmp_path / "zero.mp4").symlink_to("/dev/zero")
    for name, kind in (("pipe.mp4", "a FIFO (named pipe)"), ("zero.mp4", "a character device")):
        with pytest.raises(CameraError, match=f"{name}: is {re.escape(kind)}, not a video file$"):
            FrameSource.for_file(tmp_path / name).open()
    with pytest.raises(CameraError, match="is a directory, not a video file"):
        FrameSource.for_file(tmp_path).open()
    assert "FIFO" in _failed_detail(CameraConfig(source=str(tmp_path / "pipe.mp4")))


def test_wait_for_file_keeps_retrying_an_unopenable_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(5000))
    stop = threading.Event()
    grabber = Grabber(CameraConfig(source=str(broken), realtime=False, wait_for_file=True, reconnect_min_s=0.05,
                                   reconnect_max_s=0.1), stop)
    grabber.start()
    assert wait_until(lambda: grabber.status().failures >= 3, 10.0)
    status = grabber.status()
    assert status.state == "reconnecting" and "cannot open video" in status.detail and not grabber.finished
    stop.set()
    assert grabber.join(5.0)


def test_daemon_with_an_unopenable_video_exits_1_with_one_line(tmp_path: Path, clip: Path) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[-50_000:])
    config = tmp_path / "edged.yaml"
    config.write_text(f"device_id: door\ncamera: {{source: '{cut}', realtime: false}}\n"
                      f"gallery: {{path: '{tmp_path / 'g.db'}'}}\n"
                      f"mqtt: {{host: 127.0.0.1, port: 9}}\nlogging: {{level: ERROR}}\n")
    done = run_cli("run", "--create", "--config", str(config), timeout=120)  # no gallery yet: --create
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("edged: error: ")]
    assert errors == [f"edged: error: {cut}: cannot open video (corrupt, truncated or unsupported codec) "
                      f"(camera.wait_for_file: true waits for the file)"], done.stderr
    assert "moov" not in done.stderr and "[mov" not in done.stderr
