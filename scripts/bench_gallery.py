#!/usr/bin/env python3
"""Timings for the gallery issue: enroll and identify per image, matching against large galleries,
and the cost of the daemon's change-counter poll.

    .venv/bin/python scripts/bench_gallery.py [--sizes 1000 10000 100000] [--skip-images]

Enroll/identify use the real knn_examples photos with the dlib embedder (models loaded and warmed up
before timing). Matching uses synthetic unit vectors (people of 10 samples each), on one BLAS
thread unless OPENBLAS_NUM_THREADS/OMP_NUM_THREADS say otherwise (as the daemon matches one track at
a time; on a shared, loaded machine multi-threaded BLAS mostly measures scheduler contention).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edged.gallery.match import Matcher  # noqa: E402
from edged.gallery.store import Gallery, GallerySnapshot, NewSample  # noqa: E402

KNN = ROOT.parent / "shared" / "data" / "face_recognition-examples" / "knn_examples"


def timed(fn, repeat: int) -> tuple[float, float]:
    """Median and min seconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def synthetic(n: int, per_person: int = 10, seed: int = 0) -> GallerySnapshot:
    rng = np.random.default_rng(seed)
    people = max(1, n // per_person)
    centres = rng.normal(size=(people, 128)).astype(np.float32)
    labels = np.arange(n) % people
    vecs = centres[labels] + 0.5 * rng.normal(size=(n, 128)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return GallerySnapshot([f"p{i:06d}" for i in range(people)], labels.astype(np.int64), vecs, "synthetic", 0)


def bench_match(sizes: list[int]) -> None:
    rng = np.random.default_rng(1)
    print("match (synthetic unit vectors, 10 samples per person; median of repeats)")
    print(f"{'samples':>8} {'people':>7} {'score':>7} {'build ms':>9} {'1 face ms':>10} {'10 faces ms':>12}")
    for n in sizes:
        snap = synthetic(n)
        q1 = rng.normal(size=(1, 128)).astype(np.float32)
        q10 = rng.normal(size=(10, 128)).astype(np.float32)
        for score in ("min", "mean_k"):
            build, _ = timed(lambda s=score, snap=snap: Matcher(snap, 0.18, score=s), 3)
            m = Matcher(snap, 0.18, score=score)
            t1, _ = timed(lambda m=m, q=q1: m.match(q), 20 if n < 100_000 else 7)
            t10, _ = timed(lambda m=m, q=q10: m.match(q), 10 if n < 100_000 else 5)
            print(f"{n:>8} {len(snap.names):>7} {score:>7} {build * 1e3:9.2f} {t1 * 1e3:10.2f} {t10 * 1e3:12.2f}")
    snap = synthetic(1000)
    build, _ = timed(lambda: Matcher(snap, 0.18, method="svm"), 1)
    m = Matcher(snap, 0.18, method="svm")
    t1, _ = timed(lambda: m.match(rng.normal(size=(1, 128)).astype(np.float32)), 20)
    print(f"svm, 1000 samples / 100 people: fit {build:.2f} s, match 1 face {t1 * 1e3:.2f} ms")


def bench_counter() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.db"
        snap = synthetic(10_000)
        with Gallery(path) as g:
            by_person: dict[int, list[int]] = {}
            for i, lab in enumerate(snap.labels):
                by_person.setdefault(int(lab), []).append(i)
            t0 = time.perf_counter()
            for lab, rows in by_person.items():
                g.add_samples(snap.names[lab], [NewSample(snap.vectors[i], "dlib", "synthetic", "x.jpg", 100, 100.0)
                                                for i in rows])
            add_s = time.perf_counter() - t0
            reader = Gallery(path, create=False)
            med, _ = timed(reader.change_counter, 2000)
            snap_t, _ = timed(lambda: reader.snapshot("synthetic"), 5)
            reader.close()
        per_add = add_s / len(by_person) * 1e3
        print(f"gallery: {len(by_person)} add_samples transactions of 10 samples: {per_add:.2f} ms each; "
              f"change_counter() {med * 1e6:.1f} us; snapshot() of 10k samples {snap_t * 1e3:.1f} ms")


def bench_images() -> None:
    from edged.config import EnrollConfig
    from edged.embed.faces import FacePipeline
    from edged.gallery.enroll import Enroller, expand_sources
    from edged.models.embedders import get_embedder
    from edged.vision.imageio import load_image

    pipeline = FacePipeline(get_embedder("dlib"))
    train = expand_sources([KNN / "train"])
    tests = sorted((KNN / "test").iterdir())
    Enroller(pipeline, EnrollConfig()).run(train[:1])  # load models
    t0 = time.perf_counter()
    report = Enroller(pipeline, EnrollConfig()).run(train)
    enroll_s = (time.perf_counter() - t0) / len(train)
    labels = [s.source for s in report.samples]
    snap = GallerySnapshot(sorted(set(labels)), np.array([sorted(set(labels)).index(s) for s in labels]),
                           np.stack([s.embedding for s in report.samples]), "dlib", 0)
    matcher = Matcher(snap, 0.18)
    per_image = []
    faces = 0
    for path in tests:
        t0 = time.perf_counter()
        found = pipeline.process(load_image(path))
        matcher.match(np.array([f.embedding for f in found]))
        per_image.append(time.perf_counter() - t0)
        faces += len(found)
    sizes = [load_image(p).shape[:2] for p in tests]
    print(f"enroll: {enroll_s * 1e3:.0f} ms per image ({len(train)} knn_examples/train photos, 374x630 to 2204x970, "
          f"detect+landmarks+crop+embed+PNG, HOG upsample 1)")
    print(f"identify: {statistics.mean(per_image) * 1e3:.0f} ms per image (mean; min {min(per_image) * 1e3:.0f}, "
          f"max {max(per_image) * 1e3:.0f}) over {len(tests)} knn_examples/test photos with {faces} faces, "
          f"sizes {min(sizes)}..{max(sizes)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--skip-images", action="store_true", help="skip the enroll/identify timings")
    args = ap.parse_args()
    print(f"cpu cores: {os.cpu_count()}, numpy {np.__version__}, "
          f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}, load {os.getloadavg()[0]:.1f}")
    if not args.skip_images:
        bench_images()
    bench_counter()
    bench_match(args.sizes)


if __name__ == "__main__":
    main()
