"""Temporal voting: from per-frame matches of a track to identity events; and person presence.

Pure computation: callers pass the timeline seconds `t` (and the wall-clock `wall` to stamp events).

Per track, the last M recognitions are kept. A track gets a name when K of them agree on it
(each named by the matcher's rule); a track that stays unmatched for M recognitions in a row becomes
`unknown`, carrying its nearest candidate, distance and why it was not named. K recognitions matching
the ignore list make the track *ignored*: it raises no event at all (a poster, a face on the TV).
Low-quality faces (too small, blurred, turned away, cut off) do not vote; M of them in a row with no
decision make the track `unknown` with reason "low quality". A track with a decision is *settled* and
needs no more recognitions until the caller's periodic re-check; a re-check that leaves the window
without a K-majority unsettles it again.

Events are announced once per (track, person):

* `recognized` when a person is first named while nobody else's track holds that name. If the
  same person is already held by another live track, or by a track that ended less than
  `left_after_s` ago, the new track takes over silently (a detector gap or a duplicate track
  is not a new arrival).
* `unknown` once per track, after M unmatched recognitions.
* `left` once the track holding a person (or an unknown track) has been gone for `left_after_s`
  without being taken over; it carries the frame and time the face was last seen.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, replace

from edged.types import Box, EventKind, IdentityEvent, MatchResult, UnknownReason

RECOGNIZED = EventKind.RECOGNIZED
UNKNOWN = EventKind.UNKNOWN
LEFT = EventKind.LEFT
#: The identity of a track that matched the ignore list (never announced).
IGNORED = "ignored"


@dataclass(frozen=True)
class _Vote:
    name: str | None
    distance: float
    confidence: float
    candidate: str | None
    reason: UnknownReason | None

    @property
    def ignored(self) -> bool:
        return self.reason == UnknownReason.IGNORED


@dataclass
class _TrackVotes:
    window: deque[_Vote]
    #: The name this track holds, UNKNOWN, IGNORED, or None (undecided).
    identity: str | None = None
    settled: bool = False
    last_box: Box | None = None
    last_frame: int = 0
    last_t: float = 0.0
    last_wall: float = 0.0
    distance: float = 4.0
    confidence: float = 0.0
    candidate: str | None = None
    reason: UnknownReason | None = None
    #: Low-quality faces in a row (they do not vote).
    low_quality: int = 0
    #: The visit this track belongs to (shared by its recognized/unknown and the matching left; 0 = none yet).
    visit: int = 0


@dataclass
class _Pending:
    """A track that ended while holding a person or unknown: `left` is due at `due`."""

    track_id: int
    person: str | None
    due: float
    event: IdentityEvent


class Voter:
    """K-of-M voting per track and once-per-(track, person) announcements."""

    def __init__(self, k: int = 2, m: int = 3, left_after_s: float = 2.0) -> None:
        if not 1 <= k <= m:
            raise ValueError(f"need 1 <= k <= m, got k={k}, m={m}")
        self.k = k
        self.m = m
        self.left_after_s = left_after_s
        self._tracks: dict[int, _TrackVotes] = {}
        #: person -> track id currently holding the name (live or pending left).
        self._holders: dict[str, int] = {}
        self._pending: dict[int, _Pending] = {}
        self._visits = 0

    # ---- queries ----

    def identity(self, track_id: int) -> str | None:
        """The person a track is held as, "unknown", "ignored", or None while undecided."""
        state = self._tracks.get(track_id)
        return state.identity if state else None

    def is_settled(self, track_id: int) -> bool:
        state = self._tracks.get(track_id)
        return bool(state and state.settled)

    def holders(self) -> dict[str, int]:
        """Person -> id of the live track holding that name."""
        return {p: tid for p, tid in self._holders.items() if tid in self._tracks}

    # ---- updates ----

    def observe(self, track_id: int, result: MatchResult, box: Box, frame: int, t: float,
                wall: float, low_quality: bool = False) -> list[IdentityEvent]:
        """Add one recognition of a track; returns the events it triggers (at most two).

        `low_quality`: the face was too poor to be named (the caller's quality gate); it does not vote.
        """
        state = self._state(track_id)
        self.seen(track_id, box, frame, t, wall)
        if low_quality:
            state.low_quality += 1
            if state.identity is None and state.low_quality >= self.m:
                state.settled = True
                state.identity = UNKNOWN
                state.distance, state.confidence, state.candidate = float(result.distance), 0.0, result.candidate
                state.reason = UnknownReason.LOW_QUALITY
                state.visit = self._new_visit()
                return [self._event(UNKNOWN, track_id, None, state)]
            return []
        state.low_quality = 0
        state.window.append(_Vote(result.name, float(result.distance), float(result.confidence), result.candidate,
                                  result.reason))
        named = [v.name for v in state.window if v.name is not None]
        best, votes = Counter(named).most_common(1)[0] if named else (None, 0)
        if best is not None and votes >= self.k:
            state.settled = True
            agreeing = [v for v in state.window if v.name == best]
            top = min(agreeing, key=lambda v: v.distance)
            state.distance, state.confidence, state.candidate, state.reason = top.distance, top.confidence, best, None
            return self._claim(track_id, state, best)
        if sum(v.ignored for v in state.window) >= self.k and state.identity in (None, UNKNOWN):
            state.settled = True
            state.identity = IGNORED  # no event, ever: and an earlier unknown was the poster after all
            return []
        if len(state.window) == self.m and not named:
            # M unmatched in a row: an undecided track becomes unknown; a named one keeps its name
            # (a face turned away is still the same person) until a re-check names someone else.
            state.settled = True
            if state.identity is None:
                top = min(state.window, key=lambda v: v.distance)
                state.distance, state.confidence = top.distance, top.confidence
                state.candidate, state.reason = top.candidate, top.reason
                state.identity = UNKNOWN
                state.visit = self._new_visit()
                return [self._event(UNKNOWN, track_id, None, state)]
            return []
        state.settled = False
        return []

    def _state(self, track_id: int) -> _TrackVotes:
        state = self._tracks.get(track_id)
        if state is None:
            state = self._tracks[track_id] = _TrackVotes(deque(maxlen=self.m))
        return state

    def seen(self, track_id: int, box: Box, frame: int, t: float, wall: float) -> None:
        """Record where and when a track was last seen (for its `left` event)."""
        state = self._state(track_id)
        state.last_box, state.last_frame, state.last_t, state.last_wall = box, frame, t, wall

    def unsettle_all(self) -> None:
        """Ask for fresh recognitions of every track (e.g. after the gallery changed)."""
        for state in self._tracks.values():
            state.settled = False
            state.window.clear()

    def forget(self, people: set[str]) -> list[IdentityEvent]:
        """People removed (or renamed) in the gallery: no track holds their name any more. Their visits end
        now (a `left` each) and the tracks are recognised again."""
        out: list[IdentityEvent] = []
        for person in sorted(people):
            holder = self._holders.pop(person, None)
            state = self._tracks.get(holder) if holder is not None else None
            if holder is not None and state is not None and state.identity == person:
                out.append(self._event(LEFT, holder, person, state))
                state.identity = None
                state.settled = False
                state.window.clear()
        return out

    def track_ended(self, track_id: int, t: float) -> None:
        """A track is gone: its `left` event becomes due after `left_after_s` unless taken over."""
        state = self._tracks.pop(track_id, None)
        if state is None or state.identity in (None, IGNORED) or state.last_box is None:
            return
        person = None if state.identity == UNKNOWN else state.identity
        if person is not None and self._holders.get(person) != track_id:
            return  # another track took this person over
        left = self._event(LEFT, track_id, person, state)
        self._pending[track_id] = _Pending(track_id, person, state.last_t + self.left_after_s, left)

    def due(self, t: float) -> list[IdentityEvent]:
        """`left` events whose time has come."""
        out = []
        for tid, pending in sorted(self._pending.items(), key=lambda kv: kv[1].due):
            if pending.due <= t:
                out.append(self._release(tid))
        return out

    def flush(self) -> list[IdentityEvent]:
        """End of stream: every track ends now and every `left` is announced."""
        for tid in list(self._tracks):
            self.track_ended(tid, float("inf"))
        return [self._release(tid) for tid in sorted(self._pending, key=lambda k: self._pending[k].due)]

    # ---- internals ----

    def _release(self, track_id: int) -> IdentityEvent:
        pending = self._pending.pop(track_id)
        if pending.person is not None and self._holders.get(pending.person) == track_id:
            del self._holders[pending.person]
        return pending.event

    def _claim(self, track_id: int, state: _TrackVotes, person: str) -> list[IdentityEvent]:
        if state.identity == person:
            return []
        events: list[IdentityEvent] = []
        previous = state.identity
        if previous not in (None, UNKNOWN, IGNORED) and self._holders.get(previous) == track_id:
            # Re-identified as someone else: the previous person left this track.
            del self._holders[previous]
            events.append(self._event(LEFT, track_id, previous, state))
        state.identity = person
        holder = self._holders.get(person)
        self._holders[person] = track_id
        if holder is not None and holder != track_id:
            # taken over: no left for the old track, no new recognition; the visit goes on under this track
            # (a `resumed` recognized says so, for what decides per track: the door)
            pending = self._pending.pop(holder, None)
            other = self._tracks.get(holder)
            state.visit = pending.event.visit_id if pending is not None else (other.visit if other else state.visit)
            if other is not None:
                other.identity = None
                other.settled = False
                other.window.clear()
            events.append(replace(self._event(RECOGNIZED, track_id, person, state), resumed=True))
            return events
        state.visit = self._new_visit()
        events.append(self._event(RECOGNIZED, track_id, person, state))
        return events

    def _new_visit(self) -> int:
        self._visits += 1
        return self._visits

    @staticmethod
    def _event(kind: EventKind, track_id: int, person: str | None, state: _TrackVotes) -> IdentityEvent:
        assert state.last_box is not None
        votes = sum(v.name == person for v in state.window) if kind == RECOGNIZED else 0
        return IdentityEvent(kind, track_id, person, state.distance, state.confidence, state.last_box,
                             state.last_frame, state.last_t, state.last_wall, state.candidate,
                             state.reason if kind == UNKNOWN else None, votes=votes, visit_id=state.visit)
