"""Synthetic presentation attacks for the liveness evaluation: seeded, deterministic videos.

* `photo_attack`: a printed photo held in front of the camera. The still photo gets a white paper border and
  a print look (less contrast, warmer paper white), and is placed as a plane in 3-D in front of a pinhole
  camera (focal length = frame width): distance, yaw, pitch, roll and position follow smooth random curves
  (three sinusoids each, 0.1-0.7 Hz: a hand slowly moving and tilting the print) plus hand shake (low-pass
  filtered noise around 4-8 Hz), so every frame is the photo under a homography. It is drawn over a random
  background (gradient, blurred shapes, noise) with a soft moving glare, then the camera: a slight blur,
  sensor noise and JPEG compression (quality 55-90 per video).
* `replay_attack`: a real clip replayed on a phone or tablet held in front of the camera. Each source frame
  is shown on a screen (display gamma, brightness, colour cast, an RGB sub-pixel stripe pattern at 3x the
  screen's pixel pitch that aliases into moiré when the camera resamples it, a black bezel), and the screen
  moves like the print above (smaller tilts), over a background, with glare, blur, noise and JPEG.

Everything comes from `numpy.random.default_rng(seed)`; the same inputs and seed give the same frames.
Frames are RGB uint8, as `edged.camera.source.FrameSource` gives them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

#: Frame size of the synthetic camera (width, height).
FRAME_SIZE = (640, 480)
#: Frames per second of the synthetic photo attacks (a door camera's rate).
PHOTO_FPS = 15.0
#: Length of a synthetic photo attack (seconds).
PHOTO_SECONDS = 4.0


@dataclass(frozen=True)
class AttackVideo:
    """One synthetic attack: its frames (RGB uint8), their rate and how it was made."""

    kind: str  # "photo" or "replay"
    source: str  # the photo or clip it was made from
    seed: int
    fps: float
    frames: list[np.ndarray] = field(repr=False)
    #: The random choices (face size, tilt ranges, JPEG quality...), for reports.
    params: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return len(self.frames) / self.fps

    def timed(self) -> Iterator[tuple[float, np.ndarray]]:
        """(t, frame) pairs, t = index / fps."""
        for i, frame in enumerate(self.frames):
            yield i / self.fps, frame


# ---- motion ----

def _smooth(rng: np.random.Generator, t: np.ndarray, amplitude: float, low: float = 0.1,
            high: float = 0.7) -> np.ndarray:
    """A smooth random curve: three sinusoids of random frequency (Hz) and phase, peak about `amplitude`."""
    out = np.zeros_like(t)
    for _ in range(3):
        freq = rng.uniform(low, high)
        out += rng.uniform(0.5, 1.0) * np.sin(2 * math.pi * freq * t + rng.uniform(0, 2 * math.pi))
    return out * (amplitude / 2.0)


def _shake(rng: np.random.Generator, n: int, fps: float, amplitude: float) -> np.ndarray:
    """Hand shake: white noise low-pass filtered to a few Hz (a moving average over ~1/6 s), RMS `amplitude`."""
    width = max(1, round(fps / 6))
    raw = rng.normal(0, 1, n + width)
    filtered = np.convolve(raw, np.ones(width) / width, mode="valid")[:n]
    std = float(filtered.std()) or 1.0
    return filtered * (amplitude / std)


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation matrix for yaw (about y), pitch (about x), roll (about z), radians."""
    cy, sy, cp, sp, cr, sr = (math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch), math.cos(roll),
                              math.sin(roll))
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return ry @ rx @ rz


def plane_homography(size: tuple[int, int], frame: tuple[int, int], scale: float, yaw: float, pitch: float,
                     roll: float, shift: tuple[float, float], distance: float = 1.0) -> np.ndarray:
    """The homography drawing a flat picture of `size` (w, h) into a `frame` (w, h) camera image.

    The picture, `scale` frame pixels per picture pixel when frontal at distance 1, is centred on the optical
    axis, rotated (radians), moved by `shift` (frame pixels at distance 1) and placed at `distance` (1 = the
    focal length) in front of a pinhole camera whose focal length is the frame width.
    """
    w, h = size
    fw, fh = frame
    f = float(fw)
    k = np.array([[f, 0, fw / 2.0], [0, f, fh / 2.0], [0, 0, 1.0]])
    r = _rotation(yaw, pitch, roll)
    # picture pixel (u, v) -> plane point ((u - w/2) * scale / f, (v - h/2) * scale / f, 0) in focal units
    to_plane = np.array([[scale / f, 0, -w / 2.0 * scale / f], [0, scale / f, -h / 2.0 * scale / f], [0, 0, 1.0]])
    t = np.array([shift[0] / f, shift[1] / f, distance])
    extrinsic = np.column_stack([r[:, 0], r[:, 1], t])
    hom = k @ extrinsic @ to_plane
    return hom / hom[2, 2]


@dataclass(frozen=True)
class _Motion:
    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    distance: np.ndarray


def _motion(rng: np.random.Generator, n: int, fps: float, tilt_deg: float, roll_deg: float, shift_px: float,
            depth: float, shake_px: float) -> _Motion:
    t = np.arange(n) / fps
    rad = math.radians
    shake_rad = shake_px / FRAME_SIZE[0]
    return _Motion(
        yaw=np.radians(_smooth(rng, t, tilt_deg)) + _shake(rng, n, fps, shake_rad),
        pitch=np.radians(_smooth(rng, t, tilt_deg)) + _shake(rng, n, fps, shake_rad),
        roll=np.radians(_smooth(rng, t, roll_deg)) + _shake(rng, n, fps, rad(0.3)),
        dx=_smooth(rng, t, shift_px) + _shake(rng, n, fps, shake_px),
        dy=_smooth(rng, t, shift_px) + _shake(rng, n, fps, shake_px),
        distance=1.0 + _smooth(rng, t, depth, 0.05, 0.4),
    )


# ---- scene and camera ----

def random_background(rng: np.random.Generator, size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """A room-like background: a two-colour gradient, a few blurred rectangles and ellipses, noise (RGB)."""
    w, h = size
    c0, c1 = rng.uniform(40, 220, 3), rng.uniform(40, 220, 3)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (math.cos(angle) * xx / w + math.sin(angle) * yy / h)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    img = (c0[None, None, :] * (1 - ramp[..., None]) + c1[None, None, :] * ramp[..., None]).astype(np.float32)
    for _ in range(int(rng.integers(3, 8))):
        color = tuple(float(c) for c in rng.uniform(20, 235, 3))
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x0, y0), (x0 + int(rng.integers(30, w // 2)), y0 + int(rng.integers(30, h // 2))),
                          color, -1)
        else:
            cv2.ellipse(img, (x0, y0), (int(rng.integers(15, w // 4)), int(rng.integers(15, h // 4))),
                        float(rng.uniform(0, 180)), 0, 360, color, -1)
    img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(1.5, 6.0)))
    img += rng.normal(0, 3, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _glare(size: tuple[int, int], centre: tuple[float, float], radius: float, strength: float) -> np.ndarray:
    w, h = size
    xx = np.arange(w, dtype=np.float32)[None, :]
    yy = np.arange(h, dtype=np.float32)[:, None]
    d2 = ((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (radius * radius)
    return (strength * np.exp(-d2)).astype(np.float32)


def _composite(background: np.ndarray, picture: np.ndarray, hom: np.ndarray, glare: np.ndarray,
               brightness: float) -> np.ndarray:
    """The picture warped by `hom` over the background, lit (brightness, additive glare on the picture)."""
    size = (background.shape[1], background.shape[0])
    warped = cv2.warpPerspective(picture, hom, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mask = cv2.warpPerspective(np.full(picture.shape[:2], 255, np.uint8), hom, size, flags=cv2.INTER_LINEAR)
    alpha = (mask.astype(np.float32) / 255.0)[..., None]
    lit = warped.astype(np.float32) * brightness + glare[..., None] * alpha
    out = background.astype(np.float32) * (1 - alpha) + lit * alpha
    return np.clip(out, 0, 255).astype(np.uint8)


class _Camera:
    """The camera's own look: optics blur, sensor noise, JPEG compression (RGB in, RGB out).

    The noise of each frame is one of a few noise images drawn once per video, shifted by a random offset
    (drawing fresh Gaussian noise for every 640x480 frame would cost more than the rest of the rendering).
    """

    def __init__(self, rng: np.random.Generator, size: tuple[int, int], blur: float, noise: float,
                 quality: int) -> None:
        self.rng, self.blur, self.quality = rng, blur, quality
        self.bank = [rng.standard_normal((size[1], size[0], 3), dtype=np.float32) * np.float32(noise)
                     for _ in range(3)]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return _camera(self.rng, image, self.blur, self.bank, self.quality)


def _camera(rng: np.random.Generator, image: np.ndarray, blur: float, bank: list[np.ndarray],
            quality: int) -> np.ndarray:
    img = cv2.GaussianBlur(image, (0, 0), blur) if blur > 0 else image
    noise = np.roll(bank[int(rng.integers(len(bank)))], (int(rng.integers(image.shape[0])),
                                                         int(rng.integers(image.shape[1]))), axis=(0, 1))
    noisy = np.clip(img.astype(np.float32) + noise, 0, 255)
    bgr = np.ascontiguousarray(noisy.astype(np.uint8)[:, :, ::-1])
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 image
        raise RuntimeError("JPEG encoding failed")
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])


# ---- attacks ----

def make_print(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The photo as a print: white paper border (5-12% of its size), less contrast, warmer paper white."""
    h, w = photo.shape[:2]
    border = round(max(h, w) * rng.uniform(0.05, 0.12))
    contrast = rng.uniform(0.8, 0.95)
    tint = np.array([rng.uniform(0.97, 1.0), rng.uniform(0.95, 0.99), rng.uniform(0.88, 0.96)], np.float32)
    img = (photo.astype(np.float32) - 128.0) * contrast + 128.0 + rng.uniform(-5, 15)
    paper = np.full((h + 2 * border, w + 2 * border, 3), 245.0, np.float32)
    paper[border:border + h, border:border + w] = img
    return np.clip(paper * tint, 0, 255).astype(np.uint8)


def photo_attack(photo: np.ndarray, seed: int, *, source: str = "", seconds: float = PHOTO_SECONDS,
                 fps: float = PHOTO_FPS, size: tuple[int, int] = FRAME_SIZE,
                 face_fraction: float = 0.45) -> AttackVideo:
    """A printed `photo` (RGB uint8) held in front of the camera for `seconds`, moved by smooth homographies.

    `face_fraction` is how much of the frame width the photo (without its border) spans on average (LFW's
    250 px images hold a face of about 110 px, so 0.45 of 640 px gives faces of about 130 px).
    """
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 photo, got shape {photo.shape} dtype {photo.dtype}")
    rng = np.random.default_rng(seed)
    n = max(1, round(seconds * fps))
    printed = make_print(photo, rng)
    scale = size[0] * face_fraction * rng.uniform(0.85, 1.2) / photo.shape[1]
    tilt, roll = rng.uniform(8, 25), rng.uniform(3, 10)
    shake = rng.uniform(0.5, 3.0)
    motion = _motion(rng, n, fps, tilt_deg=tilt, roll_deg=roll, shift_px=size[0] * rng.uniform(0.02, 0.08),
                     depth=rng.uniform(0.05, 0.2), shake_px=shake)
    background = random_background(rng, size)
    quality = int(rng.integers(55, 91))
    camera = _Camera(rng, size, rng.uniform(0.3, 1.0), rng.uniform(1.5, 4.0), quality)
    brightness = rng.uniform(0.8, 1.1)
    glare_strength = rng.uniform(0, 60)
    frames = []
    for i in range(n):
        hom = plane_homography((printed.shape[1], printed.shape[0]), size, scale, motion.yaw[i], motion.pitch[i],
                               motion.roll[i], (motion.dx[i], motion.dy[i]), motion.distance[i])
        centre = (size[0] * (0.5 + 2.0 * motion.yaw[i]), size[1] * (0.3 + 2.0 * motion.pitch[i]))
        glare = _glare(size, centre, size[0] * 0.25, glare_strength)
        frames.append(camera(_composite(background, printed, hom, glare, brightness)))
    params = {"tilt_deg": round(tilt, 2), "roll_deg": round(roll, 2), "shake_px": round(shake, 2),
              "scale": round(scale, 3), "jpeg_quality": quality, "glare": round(glare_strength, 1)}
    return AttackVideo("photo", source, seed, fps, frames, params)


def _screen(frame: np.ndarray, rng_params: dict[str, float], bezel: int) -> np.ndarray:
    """A source frame as a display shows it: gamma, brightness, colour cast, RGB stripes at 3x, bezel."""
    img = frame.astype(np.float32) / 255.0
    img = np.power(img, rng_params["gamma"]) * rng_params["brightness"]
    img = img * np.array([rng_params["r"], rng_params["g"], rng_params["b"]], np.float32)
    w = img.shape[1]
    # each pixel becomes three columns (R, G, B sub-pixels), the others dimmed: the pattern a camera aliases
    stripes = np.repeat(img, 3, axis=1)
    keep = np.full((3, 3), rng_params["leak"], np.float32)
    np.fill_diagonal(keep, 1.0)
    stripes *= np.tile(keep, (w, 1))[None, :, :] * (3.0 / (1.0 + 2.0 * rng_params["leak"]))
    stripes = np.repeat(stripes, 3, axis=0)  # square sub-pixel cells
    # the row gaps between pixels
    stripes[2::3] *= rng_params["row_gap"]
    out = np.clip(stripes * 255.0, 0, 255).astype(np.uint8)
    return cv2.copyMakeBorder(out, bezel, bezel, bezel, bezel, cv2.BORDER_CONSTANT, value=(12, 12, 14))


def replay_attack(frames: Sequence[np.ndarray], fps: float, seed: int, *, source: str = "",
                  size: tuple[int, int] = FRAME_SIZE, seconds: float | None = None,
                  screen_fraction: float = 0.8) -> AttackVideo:
    """The real clip `frames` (RGB uint8 at `fps`) replayed on a screen held in front of the camera.

    The screen spans about `screen_fraction` of the frame width; each frame of the clip is shown once (so the
    replay runs at the clip's own rate), at most `seconds` of it.
    """
    if not frames:
        raise ValueError("replay_attack needs at least one frame")
    rng = np.random.default_rng(seed)
    n = len(frames) if seconds is None else min(len(frames), max(1, round(seconds * fps)))
    params = {"gamma": rng.uniform(0.85, 1.15), "brightness": rng.uniform(0.85, 1.15), "r": rng.uniform(0.9, 1.0),
              "g": rng.uniform(0.92, 1.0), "b": rng.uniform(0.95, 1.08), "leak": rng.uniform(0.15, 0.4),
              "row_gap": rng.uniform(0.6, 0.9), "optics": rng.uniform(0.25, 0.45)}
    src_h, src_w = frames[0].shape[:2]
    # the screen's own resolution: the clip is shown 360-480 pixels wide
    screen_w = int(rng.integers(360, 481))
    screen_h = max(1, round(src_h * screen_w / src_w))
    src_w, src_h = screen_w, screen_h
    bezel = round(src_w * 3 * rng.uniform(0.02, 0.06))
    scale = size[0] * screen_fraction * rng.uniform(0.9, 1.1) / (src_w * 3 + 2 * bezel)
    tilt, roll = rng.uniform(5, 15), rng.uniform(2, 6)
    shake = rng.uniform(0.5, 2.5)
    motion = _motion(rng, n, fps, tilt_deg=tilt, roll_deg=roll, shift_px=size[0] * rng.uniform(0.01, 0.05),
                     depth=rng.uniform(0.03, 0.1), shake_px=shake)
    background = random_background(rng, size)
    quality = int(rng.integers(60, 91))
    camera = _Camera(rng, size, rng.uniform(0.3, 0.9), rng.uniform(1.5, 3.5), quality)
    glare_strength = rng.uniform(10, 70)
    out = []
    for i in range(n):
        shown = cv2.resize(frames[i], (screen_w, screen_h), interpolation=cv2.INTER_AREA)
        screen = _screen(shown, params, bezel)
        # the lens blurs the screen before the sensor samples it: what survives of the sub-pixel pattern
        # aliases into moiré (`optics` is that blur in camera pixels)
        screen = cv2.GaussianBlur(screen, (0, 0), params["optics"] / scale)
        hom = plane_homography((screen.shape[1], screen.shape[0]), size, scale, motion.yaw[i], motion.pitch[i],
                               motion.roll[i], (motion.dx[i], motion.dy[i]), motion.distance[i])
        centre = (size[0] * (0.6 + 2.0 * motion.yaw[i]), size[1] * (0.35 + 2.0 * motion.pitch[i]))
        glare = _glare(size, centre, size[0] * 0.3, glare_strength)
        out.append(camera(_composite(background, screen, hom, glare, 1.0)))
    info = {"tilt_deg": round(tilt, 2), "roll_deg": round(roll, 2), "shake_px": round(shake, 2),
            "scale": round(scale, 4), "jpeg_quality": quality, "glare": round(glare_strength, 1),
            **{k: round(v, 3) for k, v in params.items()}}
    return AttackVideo("replay", source, seed, fps, out, info)
