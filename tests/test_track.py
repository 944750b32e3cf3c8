"""Tracking on real frames: IoU association, dlib correlation tracking between detections,
track expiry and loss."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.runtime.track import Tracker, associate
from edged.types import Box
from edged.vision.detect import FaceDetector
from edged.vision.imageio import load_image

FPS = 29.97


@pytest.fixture(scope="module")
def frames(fr_dir: Path) -> dict[int, np.ndarray]:
    """Frames 82..130 of the Hamilton clip (Lin-Manuel Miranda moving on stage) and 260 (he is gone), RGB."""
    cap = cv2.VideoCapture(str(fr_dir / "short_hamilton_clip.mp4"))
    out = {}
    for i in range(261):
        ok, bgr = cap.read()
        assert ok
        if 82 <= i <= 130 or i == 260:
            out[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    cap.release()
    return out


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector("hog", upsample=0)


@pytest.mark.pure
def test_associate_is_greedy_by_iou_and_respects_minimum() -> None:
    tracks = [Box(0, 0, 100, 100), Box(200, 0, 300, 100)]
    dets = [Box(210, 5, 310, 105), Box(5, 5, 105, 105), Box(500, 500, 600, 600)]
    assert sorted(associate(tracks, dets, 0.3)) == [(0, 1), (1, 0)]
    assert associate(tracks, [Box(90, 90, 190, 190)], 0.3) == []  # IoU ~0.01
    assert associate([], dets, 0.3) == [] and associate(tracks, [], 0.3) == []


def test_correlation_tracker_follows_a_moving_face(frames: dict[int, np.ndarray], detector: FaceDetector) -> None:
    tracker = Tracker(iou_min=0.3, max_age_s=1.0, correlation=True)
    ids = set()
    follow_iou = []
    for i in range(82, 131):
        image = frames[i]
        detect = (i - 82) % 3 == 0
        boxes = detector.detect(image) if detect else None
        if detect and boxes and tracker.tracks:
            follow_iou.append(tracker.tracks[0].box.iou(boxes[0]))  # box tracked up to the previous frame
        update = tracker.update(image, boxes, i, i / FPS)
        ids |= {t.id for t in update.tracks}
    assert ids == {1}, "one face, one track for the whole sequence"
    track = tracker.tracks[0]
    assert track.first_frame == 82 and track.last_frame == 130 and track.hits >= 12 and not track.lost
    # between detections the correlation tracker keeps the box on the (moving) face
    assert len(follow_iou) >= 12 and np.median(follow_iou) > 0.6, follow_iou


def test_without_correlation_boxes_stay_until_next_detection(frames: dict[int, np.ndarray],
                                                             detector: FaceDetector) -> None:
    tracker = Tracker(correlation=False)
    first = detector.detect(frames[82])
    tracker.update(frames[82], first, 82, 82 / FPS)
    update = tracker.update(frames[83], None, 83, 83 / FPS)
    assert update.tracks[0].box == first[0]


def test_track_ends_after_max_age_without_detections(frames: dict[int, np.ndarray],
                                                     detector: FaceDetector) -> None:
    tracker = Tracker(max_age_s=0.5, correlation=True)
    started = tracker.update(frames[82], detector.detect(frames[82]), 82, 82 / FPS).started
    assert [t.id for t in started] == [1]
    ended_at = None
    for i in range(83, 110):
        update = tracker.update(frames[i], [], i, i / FPS)  # the detector ran and saw nothing
        if update.ended:
            ended_at = i
            assert [t.id for t in update.ended] == [1] and update.tracks == []
            break
    assert ended_at is not None and (ended_at - 82) / FPS > 0.5 and (ended_at - 83) / FPS <= 0.5 + 1e-9


def test_track_is_lost_when_the_face_disappears(frames: dict[int, np.ndarray], detector: FaceDetector) -> None:
    tracker = Tracker(lost_psr=5.0)
    tracker.update(frames[82], detector.detect(frames[82]), 82, 82 / FPS)
    assert not tracker.any_lost
    tracker.update(frames[83], None, 83, 83 / FPS)
    assert not tracker.any_lost and tracker.tracks[0].psr > 5.0
    tracker.update(frames[260], None, 84, 84 / FPS)  # a cut to a shot without this face
    assert tracker.any_lost and tracker.tracks[0].psr < 5.0
    blank = Tracker(lost_psr=5.0)
    blank.update(frames[82], detector.detect(frames[82]), 82, 82 / FPS)
    good_box = blank.tracks[0].box
    blank.update(np.zeros_like(frames[84]), None, 83, 83 / FPS)  # a black frame: dlib's PSR is NaN
    assert blank.any_lost and blank.tracks[0].box == good_box  # a lost track keeps its last good box
    # the next detection finds the face again and revives the track
    update = tracker.update(frames[85], detector.detect(frames[85]), 85, 85 / FPS)
    assert [t.id for t in update.tracks] == [1] and not tracker.any_lost


def test_two_faces_keep_their_ids(openface_dir: Path, detector: FaceDetector) -> None:
    image = load_image(openface_dir / "longoria-cooper.jpg")
    boxes = FaceDetector("hog", upsample=1).detect(image)
    assert len(boxes) == 2
    tracker = Tracker(correlation=False)
    first = tracker.update(image, boxes, 0, 0.0)
    by_id = {t.id: t.box for t in first.tracks}
    second = tracker.update(image, list(reversed(boxes)), 1, 0.1)  # order of detections must not matter
    assert {t.id: t.box for t in second.tracks} == by_id and second.started == []
    third = tracker.update(image, boxes[:1], 2, 0.2)
    assert len(third.tracks) == 2 and third.ended == []  # the other face is not confirmed yet, not gone


def test_only_followed_tracks_use_the_correlation_tracker(frames: dict[int, np.ndarray],
                                                          detector: FaceDetector) -> None:
    tracker = Tracker()
    detected = detector.detect(frames[82])
    tracker.update(frames[82], detected, 82, 82 / FPS)
    track = tracker.tracks[0]
    tracker.update(frames[83], None, 83, 83 / FPS, follow=set())  # settled: not followed
    assert track.box == detected[0] and not track.current and track.last_frame == 82
    tracker.update(frames[84], None, 84, 84 / FPS, follow={track.id})  # the chain broke: wait for a detection
    assert not track.current
    again = detector.detect(frames[85])
    tracker.update(frames[85], again, 85, 85 / FPS, follow={track.id})
    assert track.current and track.box == again[0]
    tracker.update(frames[86], None, 86, 86 / FPS, follow={track.id})
    assert track.current and track.box != again[0] and track.psr > 5.0 and track.last_frame == 86
