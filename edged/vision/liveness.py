"""Passive liveness over a face track: texture, blinks and 3-D motion combined into one verdict.

A door camera has no screen to prompt anyone, so liveness is judged from what a person does anyway.
`LivenessState` (one per face track) is fed `update(t, image_rgb, box, landmarks68)` on checked frames and
answers `verdict(t)`; time is passed in, nothing here reads a clock. Three independent cues:

* **texture** (`edged.vision.antispoof.TextureModel`, Silent-Face's MiniFASNet pair): the median
  real-probability of the track's last `TEXTURE_WINDOW` samples; the models run on every
  `texture_every_n`-th update (they cost 7-15 ms per face, blink + parallax ~0.7 ms; the daemon runs them on a
  worker thread and hands the samples in with `add_texture`);
* **blink** (`edged.vision.blink.BlinkDetector`): a fast dip of both eyes below the track's own open-eye
  level; squints, eyes shut for seconds and single-eye glitches are not blinks;
* **parallax** (`edged.vision.parallax.ParallaxTracker`): how badly one homography explains the landmark
  motion between frames; a photo or a screen moves as a plane.

Decision (`LivenessConfig.require`, default "texture+motion"; limits measured in docs/liveness.md):

1. fewer than `min_frames` updates or less than `min_seconds` since the first one: undecided (`live` None);
2. texture (when required): undecided until `texture_samples` samples; then it fails when the median is below
   `texture_min` -> `live` False at once (a print or a screen);
3. motion (when required): a blink, or a parallax score >= `parallax_min` ("texture+blink": a blink only);
   none yet -> undecided until `max_seconds` after the first update, then `live` False ("no blink or 3-D
   motion"); a later blink or parallax still turns it True (the verdict is recomputed from the evidence
   each time, it is not latched);
4. everything required passed -> `live` True.

`score` (0-1) summarises the same rule: the smaller of the required cues' terms, each 0.5 exactly at its
limit (texture: the median mapped piecewise linearly so `texture_min` -> 0.5; motion: 1 after a blink,
else parallax / (2 parallax_min), at most 1). With enough evidence, `live` is True exactly when `score` >= 0.5.

**Licence**: the blink and parallax cues use dlib's 68-point landmark model
(`shape_predictor_68_face_landmarks.dat`), trained on iBUG 300-W, whose terms exclude commercial use.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edged.config import LivenessConfig
from edged.types import Box, liveness_dict
from edged.vision.antispoof import TextureModel
from edged.vision.blink import BlinkDetector, BlinkParams
from edged.vision.parallax import ParallaxParams, ParallaxTracker

#: The texture cue is the median of this many latest samples.
TEXTURE_WINDOW = 15


@dataclass(frozen=True)
class LivenessVerdict:
    """What the track's cues say at time `t` of `verdict(t)`, and why."""

    #: True = live person, False = refused (an attack, or no motion within max_seconds), None = not decided yet.
    live: bool | None
    #: 0-1; >= 0.5 when every required cue passes (see the module docstring).
    score: float
    #: Median MiniFASNet real-probability of the recent samples; None before the first sample (or unused).
    texture: float | None
    #: A blink was seen (True); eyes seen open but no blink yet (False); no open-eye baseline yet (None).
    blink: bool | None
    #: Parallax score (homography residual over the inter-ocular distance); None before enough moving pairs.
    parallax: float | None
    #: Updates (checked frames) so far, and seconds from the first to `t`.
    frames: int
    seconds: float
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (audit log, MQTT, `--json`)."""
        return liveness_dict(self)


def _texture_term(value: float, limit: float) -> float:
    """0 -> 0, limit -> 0.5, 1 -> 1, linear in between."""
    if value <= limit:
        return 0.5 * value / limit if limit > 0 else 0.5
    return 0.5 + 0.5 * (value - limit) / (1.0 - limit) if limit < 1 else 1.0


class LivenessState:
    """The liveness evidence of one face track. Not thread-safe (one per track); `texture` may be shared.

    `update` takes RGB uint8 frames, the track's box (`edged.types.Box`) and that frame's dlib 68-point
    landmarks. `texture` is required unless `cfg.require` is "motion".
    """

    def __init__(self, cfg: LivenessConfig | None = None, texture: TextureModel | None = None,
                 blink: BlinkParams | None = None, parallax: ParallaxParams | None = None) -> None:
        self.cfg = cfg or LivenessConfig()
        self.uses_texture = self.cfg.require != "motion"
        self.uses_motion = self.cfg.require != "texture"
        if self.uses_texture and texture is None:
            raise ValueError(f"liveness.require {self.cfg.require!r} needs the texture model")
        self.texture_model = texture if self.uses_texture else None
        self.blinks = BlinkDetector(blink)
        self.parallax = ParallaxTracker(parallax)
        self._texture: deque[float] = deque(maxlen=TEXTURE_WINDOW)
        self.texture_seen = 0
        self._texture_wait = 0  # updates until the texture models run again
        self.frames = 0
        self.first_t: float | None = None
        self.last_t: float | None = None
        self._verdict_t = float("-inf")  # the latest time a verdict was computed for

    def update(self, t: float, image_rgb: np.ndarray, box: Box, landmarks: np.ndarray, texture: bool = True,
               defer_texture: bool = False) -> bool:
        """One checked frame of the track (frames must come in time order; an older one is ignored).
        `texture` False: no texture sample on this frame (e.g. the face is not named yet); the next allowed
        update takes one at once when one is due. `defer_texture`: a due sample is not computed here; the
        caller computes it (e.g. in a worker thread) and hands it to `add_texture`. Returns whether a texture
        sample was due on this frame (taken, or left to the caller)."""
        if self.last_t is not None and t <= self.last_t:
            return False
        pts = np.asarray(landmarks, dtype=np.float64)
        if pts.shape != (68, 2):
            raise ValueError(f"liveness needs dlib's 68-point landmarks, got shape {pts.shape}")
        if self.first_t is None:
            self.first_t = t
        self.last_t = t
        due = self.texture_model is not None and texture and self._texture_wait <= 0
        if due:
            if not defer_texture:
                assert self.texture_model is not None
                self.add_texture(self.texture_model.real_probability(image_rgb, box))
            self._texture_wait = self.cfg.texture_every_n
        self._texture_wait -= 1
        self.frames += 1
        if self.uses_motion:
            self.blinks.add_landmarks(t, pts)
            self.parallax.add(t, pts)
        return due

    def add_texture(self, probability: float) -> None:
        """A texture sample computed elsewhere (e.g. in a batch); counts like one from `update`."""
        self._texture.append(float(probability))
        self.texture_seen += 1

    @property
    def texture_values(self) -> list[float]:
        """The recent texture samples (at most `TEXTURE_WINDOW`), oldest first."""
        return list(self._texture)

    @property
    def texture(self) -> float | None:
        return float(np.median(self._texture)) if self._texture else None

    def time_may_change_verdict(self, t: float) -> bool:
        """Whether the verdict at `t` can differ from the last one computed (or the last update's): with no new
        frame only time passes, which matters only when it crosses `min_seconds` (enough time to decide) or
        `max_seconds` (no motion cue in time: refused)."""
        if self.first_t is None or self.last_t is None:
            return False
        before = max(self.last_t, self._verdict_t) - self.first_t
        now = t - self.first_t
        return any(before < limit <= now for limit in (self.cfg.min_seconds, self.cfg.max_seconds))

    def verdict(self, t: float | None = None) -> LivenessVerdict:
        """The verdict at time `t` (default: the last update's time)."""
        cfg = self.cfg
        now = t if t is not None else (self.last_t if self.last_t is not None else 0.0)
        self._verdict_t = max(self._verdict_t, now)
        seconds = 0.0 if self.first_t is None else max(0.0, now - self.first_t)
        reasons: list[str] = []
        texture = self.texture if self.uses_texture else None
        blink_seen = bool(self.blinks.blinks)
        blink: bool | None = True if blink_seen else (False if self.blinks.open_seen else None)
        parallax = self.parallax.score if self.uses_motion else None

        terms: list[float] = []
        texture_ok: bool | None = None
        if self.uses_texture:
            if texture is None or len(self._texture) < min(cfg.texture_samples, TEXTURE_WINDOW):
                reasons.append(f"texture: {len(self._texture)} of {cfg.texture_samples} samples")
                terms.append(0.5 * (texture or 0.0) / max(cfg.texture_min, 1e-9) if texture is not None else 0.0)
            else:
                texture_ok = texture >= cfg.texture_min
                terms.append(_texture_term(texture, cfg.texture_min))
                reasons.append(f"texture {texture:.2f} {'>=' if texture_ok else '<'} {cfg.texture_min:.2f} "
                               f"(median of {len(self._texture)} samples)")
        motion_ok: bool | None = None
        if self.uses_motion:
            blink_only = cfg.require == "texture+blink"
            if blink_seen:
                b = self.blinks.blinks[0]
                offset = b.t - (self.first_t or 0.0)
                reasons.append(f"blink at {offset:.2f} s ({len(self.blinks.blinks)} in all; both eyes to "
                               f"{max(b.left, b.right):.2f} of open, {b.width:.2f} s)")
            else:
                reasons.append("no blink yet" if blink is not None else "eyes not seen open yet")
            if self.blinks.dips_seen:
                last = self.blinks.dips[-1]
                reasons.append(f"{self.blinks.dips_seen} eye dip(s) not counted as blinks, last: {last.reason}")
            par_ok = parallax is not None and parallax >= cfg.parallax_min and not blink_only
            if parallax is None:
                reasons.append(f"parallax: {self.parallax.pairs} moving frame pairs of "
                               f"{self.parallax.params.min_pairs} needed")
            else:
                reasons.append(f"parallax {parallax:.3f} {'>=' if parallax >= cfg.parallax_min else '<'} "
                               f"{cfg.parallax_min:.3f} ({self.parallax.pairs} pairs)"
                               + (" (not counted: texture+blink)" if blink_only else ""))
            motion_ok = blink_seen or par_ok
            par_term = 0.0 if parallax is None or blink_only else min(1.0, parallax / (2.0 * cfg.parallax_min))
            terms.append(1.0 if blink_seen else par_term)
        score = float(min(terms)) if terms else 0.0

        live: bool | None
        if self.frames < cfg.min_frames or seconds < cfg.min_seconds:
            live = None
            reasons.insert(0, f"collecting: {self.frames} frames, {seconds:.2f} s (need {cfg.min_frames}, "
                              f"{cfg.min_seconds:g} s)")
        elif texture_ok is False:
            live = False
            reasons.insert(0, "refused: texture looks like a print or a screen")
        elif self.uses_texture and texture_ok is None:
            live = None
        elif self.uses_motion and not motion_ok:
            if seconds >= cfg.max_seconds:
                live = False
                reasons.insert(0, f"refused: no blink or 3-D motion within {cfg.max_seconds:g} s")
            else:
                live = None
        else:
            live = True
            reasons.insert(0, "live")
        return LivenessVerdict(live, score, texture, blink, parallax, self.frames, seconds, reasons)
