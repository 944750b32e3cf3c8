"""Temporal voting and presence: K-of-M, unknown, once per (track, person), left, take-over."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edged.gallery.match import Matcher
from edged.runtime.presence import Presence
from edged.runtime.vote import Voter
from edged.types import Box, MatchResult, UnknownReason

BOX = Box(10, 10, 90, 90)


def hit(name: str, d: float = 0.1) -> MatchResult:
    return MatchResult(name, d, 1 - d / 0.36, name)


def miss(candidate: str = "x", d: float = 0.3) -> MatchResult:
    return MatchResult(None, d, max(0.0, 1 - d / 0.36), candidate)


def feed(voter: Voter, track: int, results: list[MatchResult], start_frame: int = 0, fps: float = 10.0):
    out = []
    for i, r in enumerate(results):
        f = start_frame + i
        out.append(voter.observe(track, r, BOX, f, f / fps, 1000.0 + f / fps))
    return out


@pytest.mark.pure
def test_k_of_m_names_a_track_once() -> None:
    voter = Voter(k=2, m=3)
    steps = feed(voter, 1, [hit("ann", 0.12), miss(), hit("ann", 0.08), hit("ann"), hit("ann")])
    assert steps[0] == [] and steps[1] == []
    [event] = steps[2]
    assert (event.kind, event.person, event.track_id, event.frame) == ("recognized", "ann", 1, 2)
    assert event.distance == pytest.approx(0.08) and event.wall == pytest.approx(1000.2)
    assert steps[3] == [] and steps[4] == []  # once per (track, person), not per frame
    assert voter.identity(1) == "ann" and voter.is_settled(1)


@pytest.mark.pure
def test_disagreement_keeps_the_track_undecided() -> None:
    voter = Voter(k=2, m=3)
    steps = feed(voter, 1, [hit("ann"), hit("bob"), miss()])
    assert steps == [[], [], []] and voter.identity(1) is None and not voter.is_settled(1)


@pytest.mark.pure
def test_unknown_after_m_unmatched_recognitions_once() -> None:
    voter = Voter(k=2, m=3)
    steps = feed(voter, 7, [miss(d=0.3), miss(d=0.25), miss(d=0.4), miss(), miss()])
    assert steps[:2] == [[], []]
    [event] = steps[2]
    assert (event.kind, event.person, event.track_id) == ("unknown", None, 7)
    assert event.distance == pytest.approx(0.25)
    assert steps[3:] == [[], []] and voter.is_settled(7)
    # an unknown face later recognised (e.g. after enrolment) is announced
    [named] = feed(voter, 7, [hit("ann"), hit("ann")], start_frame=5)[1]
    assert (named.kind, named.person) == ("recognized", "ann")


@pytest.mark.pure
def test_named_track_stays_named_when_face_turns_away() -> None:
    voter = Voter(k=2, m=3)
    feed(voter, 1, [hit("ann"), hit("ann")])
    assert feed(voter, 1, [miss(), miss(), miss()], start_frame=2) == [[], [], []]
    assert voter.identity(1) == "ann" and voter.is_settled(1)


@pytest.mark.pure
def test_left_after_window_with_last_seen_frame() -> None:
    voter = Voter(k=2, m=3, left_after_s=2.0)
    feed(voter, 1, [hit("ann"), hit("ann")])
    voter.seen(1, Box(20, 20, 100, 100), 30, 3.0, 1003.0)
    voter.track_ended(1, 4.0)
    assert voter.due(4.99) == []
    [left] = voter.due(5.0)
    assert (left.kind, left.person, left.track_id, left.frame, left.box) == ("left", "ann", 1, 30,
                                                                             Box(20, 20, 100, 100))
    assert left.wall == 1003.0
    assert voter.due(100.0) == []


@pytest.mark.pure
def test_new_track_of_same_person_within_window_takes_over_silently() -> None:
    voter = Voter(k=2, m=3, left_after_s=2.0)
    [first] = [e for s in feed(voter, 1, [hit("ann"), hit("ann")]) for e in s]
    assert first.kind == "recognized" and not first.resumed
    voter.track_ended(1, 0.5)
    # a detector gap: the same person comes back as track 2 within left_after_s: the visit goes on (only a
    # `resumed` recognized, for per-track decisions, that nothing publishes as a new arrival)
    assert [(e.kind, e.track_id, e.resumed, e.visit_id) for s in feed(voter, 2, [hit("ann"), hit("ann")],
                                                                       start_frame=10) for e in s] == [
        ("recognized", 2, True, first.visit_id)]
    assert voter.due(10.0) == []  # no left for track 1: track 2 holds ann now
    voter.track_ended(2, 1.2)
    [left] = voter.due(3.2)
    assert (left.kind, left.track_id) == ("left", 2)
    # after the window a new arrival is announced again
    [again] = feed(voter, 3, [hit("ann"), hit("ann")], start_frame=50)[1]
    assert (again.kind, again.track_id) == ("recognized", 3)


@pytest.mark.pure
def test_duplicate_live_tracks_announce_a_person_once() -> None:
    voter = Voter(k=2, m=3)
    a = feed(voter, 1, [hit("ann"), hit("ann")])
    b = feed(voter, 2, [hit("ann"), hit("ann")])
    assert [(e.kind, e.track_id, e.resumed) for s in a + b for e in s] == [("recognized", 1, False),
                                                                           ("recognized", 2, True)]
    assert voter.holders() == {"ann": 2}


@pytest.mark.pure
def test_reidentified_track_leaves_old_person() -> None:
    voter = Voter(k=1, m=1)
    feed(voter, 1, [hit("ann")])
    [left, rec] = feed(voter, 1, [hit("bob")], start_frame=1)[0]
    assert (left.kind, left.person) == ("left", "ann") and (rec.kind, rec.person) == ("recognized", "bob")


@pytest.mark.pure
def test_unsettle_and_flush() -> None:
    voter = Voter(k=2, m=3)
    feed(voter, 1, [hit("ann"), hit("ann")])
    feed(voter, 2, [miss(), miss(), miss()])
    voter.unsettle_all()
    assert not voter.is_settled(1) and voter.identity(1) == "ann"
    events = voter.flush()
    assert sorted((e.kind, e.track_id, e.person) for e in events) == [("left", 1, "ann"), ("left", 2, None)]
    assert voter.flush() == []


@pytest.mark.pure
def test_invalid_k_m() -> None:
    with pytest.raises(ValueError):
        Voter(k=4, m=3)


@pytest.mark.pure
def test_presence_present_then_absent() -> None:
    p = Presence(absent_after_s=5.0)
    first = p.seen("ann", 0.0, 100.0)
    assert first is not None and (first.person, first.state, first.last_seen) == ("ann", "present", 100.0)
    assert p.seen("ann", 3.0, 103.0) is None
    assert p.due(7.9) == []
    [gone] = p.due(8.0)
    assert (gone.state, gone.last_seen) == ("absent", 103.0)
    assert p.seen("ann", 9.0, 109.0).state == "present"
    assert [c.person for c in p.forget({"ann", "zed"})] == ["ann"] and p.present == []


def test_votes_on_real_embeddings(openface_dir: Path, dlib_pipeline) -> None:
    """Lennon's two photos against a gallery of one Lennon photo and Clapton: named, Clapton unknown."""
    from edged.gallery.store import GallerySnapshot
    from edged.vision.imageio import load_image

    def emb(name: str) -> np.ndarray:
        return dlib_pipeline.process(load_image(openface_dir / name))[0].embedding

    snap = GallerySnapshot(["lennon"], np.array([0]), emb("lennon-1.jpg")[None], "v", 1)
    matcher = Matcher(snap, threshold=dlib_pipeline.embedder.threshold)
    voter = Voter(k=2, m=3)
    lennon2, clapton1, clapton2 = (emb(n) for n in ("lennon-2.jpg", "clapton-1.jpg", "clapton-2.jpg"))
    results = matcher.match(np.stack([lennon2, lennon2, clapton1, clapton2, clapton1]))
    assert [e.person for e in feed(voter, 1, results[:2])[1]] == ["lennon"]
    [unknown] = feed(voter, 2, results[2:])[2]
    assert unknown.kind == "unknown" and unknown.distance > dlib_pipeline.embedder.threshold


@pytest.mark.pure
def test_unknown_carries_the_nearest_candidate_and_why() -> None:
    voter = Voter(k=2, m=3)
    results = [MatchResult(None, 0.2, 0.4, "ann", reason=UnknownReason.TOO_FAR),
               MatchResult(None, 0.15, 0.45, "bob", reason=UnknownReason.AMBIGUOUS),
               MatchResult(None, 0.3, 0.2, "ann", reason=UnknownReason.TOO_FAR)]
    [event] = feed(voter, 3, results)[2]
    assert event.kind == "unknown" and event.person is None
    assert (event.candidate, event.reason, event.distance) == ("bob", "ambiguous", pytest.approx(0.15))


@pytest.mark.pure
def test_a_face_on_the_ignore_list_raises_no_event_at_all() -> None:
    voter = Voter(k=2, m=3, left_after_s=0.0)
    ignored = MatchResult(None, 0.1, 0.0, "ann", reason=UnknownReason.IGNORED, ignored="poster")
    steps = feed(voter, 4, [ignored, miss(), ignored, ignored, miss(), miss()])
    assert steps == [[]] * 6 and voter.identity(4) == "ignored" and voter.is_settled(4)
    voter.track_ended(4, 10.0)
    assert voter.due(100.0) == [] and voter.flush() == []  # no left for a track that was never announced


@pytest.mark.pure
def test_low_quality_faces_do_not_vote_and_end_as_unknown_low_quality() -> None:
    voter = Voter(k=2, m=3)
    out = []
    for i in range(3):
        out.append(voter.observe(5, hit("ann", 0.05), BOX, i, i / 10, 1000 + i / 10, low_quality=True))
    assert out[:2] == [[], []]
    [event] = out[2]
    assert event.kind == "unknown" and event.reason == "low quality" and event.person is None
    # a good face later still names the track (the visitor came closer)
    voter2 = Voter(k=2, m=3)
    voter2.observe(6, hit("ann"), BOX, 0, 0.0, 1000.0, low_quality=True)
    steps = feed(voter2, 6, [hit("ann"), hit("ann")], start_frame=1)
    assert steps[1] and steps[1][0].kind == "recognized" and steps[1][0].person == "ann"
