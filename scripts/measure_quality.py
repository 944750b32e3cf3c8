"""Measure `edged.vision.quality` on real faces: the numbers behind `QualityConfig`'s defaults.

    .venv/bin/python scripts/measure_quality.py [--shared ../shared] [--lfw-step 1] [--jobs 2] [--csv out.csv]

Faces: LFW deep-funneled (the detection nearest the image centre: the labelled person), the OpenFace and
face_recognition example photos (every face), and every frame of the Hamilton clip (every face); all found
with `FaceDetector("hog", upsample=1)` and measured with 68- and 5-point landmarks. Prints percentiles of
each measure per source and the share of faces the default `QualityConfig` keeps, then the synthetic bad
cases (blur, downscaling, cropping through the face) on the example photos.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import multiprocessing
import sqlite3
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edged.config import QualityConfig  # noqa: E402
from edged.types import Box  # noqa: E402
from edged.vision import quality  # noqa: E402
from edged.vision.align import LandmarkPredictor  # noqa: E402
from edged.vision.detect import FaceDetector  # noqa: E402
from edged.vision.imageio import IMAGE_EXTENSIONS, load_image  # noqa: E402

_det = FaceDetector("hog", upsample=1)
_p68 = LandmarkPredictor(68)
_p5 = LandmarkPredictor(5)

FIELDS = ["source", "file", "frame", "left", "top", "right", "bottom", "score", "face_px", "sharpness",
          "yaw68", "yaw5", "off68", "off68_tip", "off5", "drop68", "drop5", "jaw_turn", "truncated", "reason",
          "reason5"]


def jaw_turn(lm68: np.ndarray) -> float:
    """Independent yaw cue (68 points): offset of the eyes' midpoint from the jaw contour's midpoint along the
    eye line, over half the contour width (points 0 and 16). A cylinder head model makes it sin(yaw)."""
    left, right, _ = quality.eyes_and_nose(lm68)
    axis = (right - left) / np.hypot(*(right - left))
    a, b = float(np.dot(lm68[0], axis)), float(np.dot(lm68[16], axis))
    mid = float(np.dot((left + right) / 2, axis))
    return (mid - (a + b) / 2) / max((b - a) / 2, 1e-6)


def nose_drop(landmarks: np.ndarray) -> float:
    """Vertical distance of the nose point below the eye line, over the inter-ocular distance."""
    left, right, nose = quality.eyes_and_nose(landmarks)
    axis = right - left
    down = np.array([-axis[1], axis[0]])
    return float(np.dot(nose - (left + right) / 2, down)) / float(np.dot(axis, axis))


def measure(image: np.ndarray, box: Box, cfg: QualityConfig | None = None) -> dict[str, object]:
    lm68, lm5 = _p68.predict(image, box), _p5.predict(image, box)
    q68, q5 = quality.assess(image, box, lm68), quality.assess(image, box, lm5)
    tip = lm68.copy()
    tip[33] = lm68[30]
    return {"left": box.left, "top": box.top, "right": box.right, "bottom": box.bottom,
            "score": round(box.score, 3), "face_px": q68.face_px, "sharpness": round(q68.sharpness, 2),
            "yaw68": round(q68.yaw, 2), "yaw5": round(q5.yaw, 2),
            "off68": round(quality.nose_offset(lm68), 4), "off68_tip": round(quality.nose_offset(tip), 4),
            "off5": round(quality.nose_offset(lm5), 4), "drop68": round(nose_drop(lm68), 4),
            "drop5": round(nose_drop(lm5), 4), "jaw_turn": round(jaw_turn(lm68), 4),
            "truncated": int(q68.truncated or q5.truncated),
            "reason": quality.low_quality_reason(q68, cfg or QualityConfig()) or "",
            "reason5": quality.low_quality_reason(q5, cfg or QualityConfig()) or ""}


def _lfw_one(path: str) -> dict[str, object] | None:
    image = load_image(path)
    h, w = image.shape[:2]
    boxes = _det.detect(image)
    if not boxes:
        return None
    centre = np.array([w / 2, h / 2])
    box = min(boxes, key=lambda b: float(np.hypot(*(np.array(b.center) - centre))))
    return {"source": "lfw", "file": str(Path(path).relative_to(Path(path).parents[1])), "frame": "",
            **measure(image, box)}


def photos(shared: Path) -> list[Path]:
    data = shared / "data"
    found = [p for d in (data / "openface-examples", data / "face_recognition-examples")
             for p in sorted(d.rglob("*")) if p.suffix.lower() in IMAGE_EXTENSIONS]
    return found


def collect(shared: Path, lfw_step: int, jobs: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    lfw = sorted((shared / "data" / "lfw" / "lfw-deepfunneled").glob("*/*.jpg"))[::lfw_step]
    with multiprocessing.Pool(jobs) as pool:
        lfw_rows = pool.map(_lfw_one, map(str, lfw), chunksize=64)
    rows += [r for r in lfw_rows if r is not None]
    print(f"LFW: {len(lfw)} images, {len(rows)} with a face", file=sys.stderr)
    for path in photos(shared):
        image = load_image(path)
        for box in _det.detect(image):
            rows.append({"source": "photos", "file": str(path.relative_to(shared / "data")), "frame": "",
                         **measure(image, box)})
    cap = cv2.VideoCapture(str(shared / "data" / "face_recognition-examples" / "short_hamilton_clip.mp4"))
    index = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        image = np.ascontiguousarray(bgr[:, :, ::-1])
        for box in _det.detect(image):
            rows.append({"source": "hamilton", "file": "short_hamilton_clip.mp4", "frame": index,
                         **measure(image, box)})
        index += 1
    cap.release()
    return rows


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    v = np.asarray(values, dtype=float)
    qs = np.percentile(v, [0, 0.5, 1, 5, 50, 95, 99, 99.5, 100])
    return " ".join(f"{x:8.2f}" for x in qs)


def report(rows: list[dict[str, object]]) -> None:
    cfg = QualityConfig()
    print(f"defaults: {cfg!r}")
    print(f"{'':24}{'min':>8} {'p0.5':>8} {'p1':>8} {'p5':>8} {'p50':>8} {'p95':>8} {'p99':>8} {'p99.5':>8} "
          f"{'max':>8}")
    for source in ("lfw", "photos", "hamilton"):
        mine = [r for r in rows if r["source"] == source]
        if not mine:
            continue
        print(f"{source}: {len(mine)} faces; kept by the defaults: "
              f"{sum(not r['reason'] for r in mine) / len(mine):.2%} (68-point landmarks), "
              f"{sum(not r['reason5'] for r in mine) / len(mine):.2%} (5-point)")
        for key in ("face_px", "sharpness", "yaw68", "yaw5", "off68", "off5", "drop68", "drop5", "jaw_turn",
                    "score"):
            vals = [float(r[key]) for r in mine]  # type: ignore[arg-type]
            if key.startswith(("yaw", "off", "jaw")):
                vals = [abs(x) for x in vals]
                key = f"|{key}|"
            print(f"  {key:22}{percentiles(vals)}")
        for column in ("reason", "reason5"):
            kinds: dict[str, int] = {}
            for r in mine:
                if r[column]:
                    kind = str(r[column]).split(" (")[0]
                    kinds[kind] = kinds.get(kind, 0) + 1
            print(f"  rejected ({'68' if column == 'reason' else '5'}-point): {kinds}")


def pairs(shared: Path, cache: Path, rows: list[dict[str, object]], threshold: float = 0.18) -> None:
    """LFW View 2 pairs: dlib's errors at its threshold, by the worse yaw / sharpness of the two faces (read-only
    from the face cache's stored dlib embeddings)."""
    db = sqlite3.connect(f"file:{cache}?mode=ro", uri=True)
    vec: dict[str, np.ndarray] = {}
    for path, blob in db.execute("SELECT f.path, e.vec FROM faces f JOIN embeddings e ON e.sha1 = f.sha1 "
                                 "WHERE e.variant = 'plain' AND e.version LIKE 'dlib%'"):
        v = np.frombuffer(blob, np.float32)
        vec[str(Path(path).relative_to(Path(path).parents[1]))] = v / np.linalg.norm(v)
    db.close()
    lfw = {str(r["file"]): r for r in rows if r["source"] == "lfw"}
    found: list[tuple[bool, float, float, float]] = []  # same?, worse |yaw|, worse sharpness, distance
    for line in (shared / "data" / "lfw" / "pairs.txt").read_text().splitlines()[1:]:
        f = line.split("\t")
        if len(f) == 3:
            a, b, same = f"{f[0]}/{f[0]}_{int(f[1]):04d}.jpg", f"{f[0]}/{f[0]}_{int(f[2]):04d}.jpg", True
        elif len(f) == 4:
            a, b, same = f"{f[0]}/{f[0]}_{int(f[1]):04d}.jpg", f"{f[2]}/{f[2]}_{int(f[3]):04d}.jpg", False
        else:
            continue
        if a in vec and b in vec and a in lfw and b in lfw:
            yaw = max(abs(float(lfw[a]["yaw5"])), abs(float(lfw[b]["yaw5"])))  # type: ignore[arg-type]
            sharp = min(float(lfw[a]["sharpness"]), float(lfw[b]["sharpness"]))  # type: ignore[arg-type]
            found.append((same, yaw, sharp, float(((vec[a] - vec[b]) ** 2).sum())))
    print(f"LFW View 2 pairs with both faces measured: {len(found)}; dlib errors at squared L2 {threshold}")
    for name, col, bins in (("worse |yaw5|", 1, (0, 15, 25, 35, 40, 45, 90)),
                            ("worse sharpness", 2, (0, 40, 60, 100, 200, 1e9))):
        for lo, hi in itertools.pairwise(bins):
            same = [p[3] for p in found if p[0] and lo <= p[col] < hi]
            diff = [p[3] for p in found if not p[0] and lo <= p[col] < hi]
            fr = f"{np.mean(np.array(same) > threshold):.1%}" if same else "-"
            fa = f"{np.mean(np.array(diff) <= threshold):.1%}" if diff else "-"
            print(f"  {name} {lo:g}-{hi:g}: same {len(same)} (false reject {fr}), different {len(diff)} "
                  f"(false accept {fa})")


def synthetic(shared: Path) -> None:
    """Blur, downscale and crop the example photos' faces and print what `assess` says."""
    cfg = QualityConfig()
    data = shared / "data"
    names = [data / "openface-examples" / n for n in ("lennon-1.jpg", "lennon-2.jpg", "clapton-1.jpg",
                                                       "clapton-2.jpg", "carell.jpg", "adams.jpg")]
    names += [data / "face_recognition-examples" / n for n in ("obama.jpg", "biden.jpg", "obama2.jpg")]
    print("blur: sigma as a fraction of the face size -> sharpness (and reason) per photo")
    for path in names:
        image = load_image(path)
        box = _det.detect(image)[0]
        lm = _p5.predict(image, box)
        out = []
        for frac in (0.0, 0.01, 0.02, 0.03, 0.05, 0.08):
            blurred = image if frac == 0 else cv2.GaussianBlur(image, (0, 0), frac * box.width)
            q = quality.assess(blurred, box, lm)
            out.append(f"{frac:.2f}:{q.sharpness:7.1f}{'*' if quality.low_quality_reason(q, cfg) else ' '}")
        print(f"  {path.name:16} {box.width:4d} px  " + " ".join(out))
    print("downscaled so the face is N px (detected with upsample 2): N -> reason")
    for path in names[:3]:
        image = load_image(path)
        box = _det.detect(image)[0]
        for target in (60, 40, 25):
            f = target / box.width
            small = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
            found = FaceDetector("hog", upsample=2).detect(small)
            if not found:
                print(f"  {path.name:16} {target:3d} px: not detected")
                continue
            q = quality.assess(small, found[0], _p5.predict(small, found[0]))
            print(f"  {path.name:16} {target:3d} px: face_px {q.face_px} sharpness {q.sharpness:.1f} "
                  f"yaw {q.yaw:.1f}: {quality.low_quality_reason(q, cfg)}")
    print("cropped through the face (keeping this fraction of the box width): detected? reason")
    for path in names:
        image = load_image(path)
        box = _det.detect(image)[0]
        out = []
        for keep in (0.9, 0.75, 0.6, 0.5):
            cut = np.ascontiguousarray(image[:, : box.left + round(keep * box.width)])
            found = _det.detect(cut)
            if not found:
                out.append(f"{keep}: -")
                continue
            q = quality.assess(cut, found[0], _p5.predict(cut, found[0]))
            out.append(f"{keep}: {quality.low_quality_reason(q, cfg)}")
        print(f"  {path.name:16} " + "; ".join(out))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--lfw-step", type=int, default=1, help="use every Nth LFW image")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--csv", type=Path, help="write every face's measures here")
    parser.add_argument("--from-csv", type=Path, help="report on a CSV written before instead of measuring")
    parser.add_argument("--cache", type=Path, help="edged's face cache (faces.sqlite, with dlib embeddings of "
                        "LFW): also print LFW View 2 pair errors by yaw and sharpness")
    args = parser.parse_args()
    if args.from_csv:
        with args.from_csv.open() as fh:
            rows: list[dict[str, object]] = list(csv.DictReader(fh))
        cfg = QualityConfig()
        for r in rows:  # yaw and the reasons under the current NOSE_DEPTH and defaults
            for off, yaw, reason in (("off68", "yaw68", "reason"), ("off5", "yaw5", "reason5")):
                r[yaw] = math.degrees(math.atan2(float(r[off]), quality.NOSE_DEPTH))  # type: ignore[arg-type]
                q = quality.FaceQuality(int(r["face_px"]), float(r["sharpness"]), float(r[yaw]),  # type: ignore[arg-type]
                                        bool(int(r["truncated"])), float(r["score"]))  # type: ignore[arg-type]
                r[reason] = quality.low_quality_reason(q, cfg) or ""
    else:
        rows = collect(args.shared, args.lfw_step, args.jobs)
        if args.csv:
            with args.csv.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, FIELDS)
                writer.writeheader()
                writer.writerows(rows)
    report(rows)
    if args.cache:
        pairs(args.shared, args.cache, rows)
    synthetic(args.shared)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
