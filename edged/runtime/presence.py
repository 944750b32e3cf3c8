"""Person presence: present on a sighting, absent after a while without one (pure; timeline seconds passed in)."""

from __future__ import annotations

from edged.types import PresenceChange, PresenceState


class Presence:
    """Present on a sighting, absent after `absent_after_s` (timeline seconds) without one."""

    def __init__(self, absent_after_s: float = 60.0) -> None:
        self.absent_after_s = absent_after_s
        self._last: dict[str, tuple[float, float]] = {}  # person -> (t, wall) of the last sighting

    @property
    def present(self) -> list[str]:
        return sorted(self._last)

    def seen(self, person: str, t: float, wall: float) -> PresenceChange | None:
        """Record a sighting; returns the change when the person was absent before."""
        was_present = person in self._last
        self._last[person] = (t, wall)
        return None if was_present else PresenceChange(person, PresenceState.PRESENT, wall)

    def due(self, t: float) -> list[PresenceChange]:
        """People not seen for `absent_after_s`."""
        gone = [p for p, (seen_t, _) in self._last.items() if t - seen_t >= self.absent_after_s]
        return [PresenceChange(p, PresenceState.ABSENT, self._last.pop(p)[1]) for p in sorted(gone)]

    def flush(self) -> list[PresenceChange]:
        """Everyone absent now (end of stream)."""
        out = [PresenceChange(p, PresenceState.ABSENT, wall) for p, (_, wall) in sorted(self._last.items())]
        self._last.clear()
        return out

    def forget(self, people: set[str]) -> list[PresenceChange]:
        """People removed from the gallery: absent now."""
        out = [PresenceChange(p, PresenceState.ABSENT, self._last.pop(p)[1]) for p in sorted(people & set(self._last))]
        return out
