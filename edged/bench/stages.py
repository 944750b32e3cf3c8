"""Stage timings of `edged bench`: decode, detect, align, dlib embed and match, on real inputs."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edged.bench.common import (
    ANN_MIN_SIZE,
    ANN_NPROBES,
    DECODE_PHOTOS,
    DETECT_PHOTO,
    DETECT_SIZES,
    DETECT_UPSAMPLES,
    FACE_PHOTOS,
    QUERY_DISTANCE,
    SAMPLES_PER_PERSON,
    BenchError,
    BenchPlan,
    Runner,
    interleaved,
    nearest_rows,
    perturbed_queries,
    random_unit_vectors,
    ratio,
    resize_to,
    summary,
    time_one,
)

log = logging.getLogger(__name__)


# ---- stage: decode, detect, align ----

def bench_decode(shared: Path, plan: BenchPlan) -> dict[str, Any]:
    """JPEG bytes -> RGB uint8 (`edged.imageio.decode_image`), file read excluded."""
    from edged.vision.imageio import decode_image

    out: dict[str, Any] = {}
    for rel in DECODE_PHOTOS:
        data = (shared / rel).read_bytes()
        image = decode_image(data, rel.name)
        out[f"jpeg_{image.shape[1]}x{image.shape[0]}"] = {
            "file": rel.name, "bytes": len(data), **summary(time_one(lambda d=data: decode_image(d), plan.repeats))}
    return out


def bench_detect(shared: Path, plan: BenchPlan) -> dict[str, Any]:
    """dlib HOG on a real photo resized to each resolution, upsample 0 and 1."""
    from edged.vision.detect import FaceDetector
    from edged.vision.imageio import load_image

    photo = load_image(shared / DETECT_PHOTO)
    out: dict[str, Any] = {}
    for width, height in DETECT_SIZES:
        image = resize_to(photo, width, height)
        for upsample in DETECT_UPSAMPLES:
            detector = FaceDetector("hog", upsample=upsample)
            faces = len(detector.detect(image))
            out[f"{width}x{height}_upsample{upsample}"] = {
                "faces": faces, **summary(time_one(lambda d=detector, i=image: d.detect(i), plan.repeats))}
    return out


@dataclass
class AlignedFaces:
    """Real faces from the photos, aligned for each embedder."""

    openface96: list[np.ndarray]
    chips150: list[np.ndarray]


def bench_align(shared: Path, plan: BenchPlan) -> tuple[dict[str, Any], AlignedFaces]:
    """Per face: 68-point landmarks + OpenFace 96 crop (nn4) and 5-point landmarks + dlib 150 chip."""
    from edged.vision.align import DLIB_CHIP_150, OPENFACE_96, FaceAligner, LandmarkPredictor
    from edged.vision.detect import FaceDetector
    from edged.vision.imageio import load_image
    from edged.vision.landmark_trees import FASTER_OPTION_TREES, FULL_STAGES

    detector = FaceDetector("hog", upsample=1)
    faces = []
    for rel in FACE_PHOTOS:
        image = load_image(shared / rel)
        scale = min(1.0, 800.0 / max(image.shape[:2]))
        faces += [(image, box) for box in detector.detect(image, scale)[:1]]
    if not faces:
        raise BenchError("no face found in the align-stage photos")
    nn4_aligner, dlib_aligner = FaceAligner(OPENFACE_96), FaceAligner(DLIB_CHIP_150)
    # the faster landmarks `liveness.landmark_trees` can choose for the blink and parallax cues (not the default)
    option = (FULL_STAGES, FASTER_OPTION_TREES)
    liveness = LandmarkPredictor(68, stages=option[0], trees=option[1])
    marks68 = [nn4_aligner.landmarks(img, box) for img, box in faces]
    marks5 = [dlib_aligner.landmarks(img, box) for img, box in faces]
    runners: dict[str, Runner] = {
        "landmarks68": lambda: [nn4_aligner.landmarks(img, box) for img, box in faces],
        "landmarks68_fewer_trees": lambda: [liveness.predict(img, box) for img, box in faces],
        "openface96": lambda: [nn4_aligner.crop(img, box, m) for (img, box), m in zip(faces, marks68, strict=True)],
        "landmarks5": lambda: [dlib_aligner.landmarks(img, box) for img, box in faces],
        "dlib_chip150": lambda: [dlib_aligner.crop(img, box, m) for (img, box), m in zip(faces, marks5, strict=True)],
    }
    times = interleaved(runners, plan.repeats)
    per_face = {name: summary(t, per=len(faces)) for name, t in times.items()}
    result: dict[str, Any] = {"faces": len(faces), "per_face": per_face,
                              "nn4_per_face_ms": round(per_face["landmarks68"]["median_ms"]
                                                       + per_face["openface96"]["median_ms"], 4),
                              "dlib_per_face_ms": round(per_face["landmarks5"]["median_ms"]
                                                        + per_face["dlib_chip150"]["median_ms"], 4),
                              "liveness_landmarks": {
                                  "stages": option[0], "trees_per_stage": option[1],
                                  "full_vs_fewer_trees": round(per_face["landmarks68"]["median_ms"]
                                                               / per_face["landmarks68_fewer_trees"]["median_ms"],
                                                               2),
                                  "error_over_iod": round(landmark_error(
                                      marks68, [liveness.predict(img, box) for img, box in faces]), 4)}}
    aligned = AlignedFaces([nn4_aligner.crop(img, box, m) for (img, box), m in zip(faces, marks68, strict=True)],
                           [dlib_aligner.crop(img, box, m) for (img, box), m in zip(faces, marks5, strict=True)])
    return result, aligned


def landmark_error(reference: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> float:
    """Mean landmark distance between two sets of 68-point landmarks over the reference's inter-ocular distance."""
    from edged.vision.parallax import inter_ocular

    return float(np.mean([np.linalg.norm(np.asarray(a) - np.asarray(b), axis=1).mean() / max(inter_ocular(a), 1e-6)
                          for a, b in zip(reference, other, strict=True)]))


def tile_batch(faces: Sequence[np.ndarray], n: int) -> np.ndarray:
    """n faces cycling through `faces`, stacked (N, S, S, 3)."""
    return np.stack([faces[i % len(faces)] for i in range(n)])


def bench_dlib_embed(chips: Sequence[np.ndarray], plan: BenchPlan) -> dict[str, Any]:
    """dlib's ResNet as the daemon runs it (ONNX Runtime when available) and dlib's own code, interleaved on the
    same chips (batch and one face), with their agreement (max abs difference of the raw descriptors)."""
    from edged.models.embedders import get_embedder

    default = get_embedder("dlib")
    own = get_embedder("dlib", backend="dlib")
    batch = np.stack(chips)
    one = batch[:1]
    times = interleaved({"default": lambda: default.embed(batch), "dlib": lambda: own.embed(batch),
                         "default_1": lambda: default.embed(one), "dlib_1": lambda: own.embed(one)}, plan.repeats)
    out: dict[str, Any] = {"batch": len(batch), "per": "face", "backend": default.backend,  # type: ignore[attr-defined]
                           **summary(times["default"], per=len(batch))}
    out["dlib_own"] = summary(times["dlib"], per=len(batch))
    out["batch_1"] = {"median_ms": summary(times["default_1"])["median_ms"],
                      "dlib_own_median_ms": summary(times["dlib_1"])["median_ms"]}
    out["ratio_dlib_own_default"] = ratio(out["dlib_own"]["median_ms"], out["median_ms"])
    out["max_abs_diff_raw"] = float(np.abs(default.embed_raw(batch) - own.embed_raw(batch)).max())  # type: ignore[attr-defined]
    return out


# ---- stage: match ----

def _ann_index(vectors: np.ndarray) -> tuple[Any, int, float]:
    """A faiss IVF-Flat index over `vectors` (sqrt(N) lists, trained on 40 samples per list); its build seconds."""
    import faiss

    n = len(vectors)
    nlist = max(16, int(np.sqrt(n)))
    quantizer = faiss.IndexFlatL2(vectors.shape[1])
    index = faiss.IndexIVFFlat(quantizer, vectors.shape[1], nlist, faiss.METRIC_L2)
    start = time.perf_counter()
    train = vectors[np.random.default_rng(1).choice(n, size=min(n, 40 * nlist), replace=False)]
    index.train(train)
    index.add(vectors)
    return index, nlist, time.perf_counter() - start


def bench_match(sizes: Sequence[int], queries: int, threshold: float, plan: BenchPlan) -> dict[str, Any]:
    """`edged.match.Matcher` (exact, as the daemon uses it) on synthetic galleries; faiss IVF when importable.

    Queries lie at squared L2 `QUERY_DISTANCE` from a random gallery sample (a genuine face near its
    enrolled sample); recall@1 is the share whose answer is that exact-nearest sample's person (exact) or
    the exact-nearest sample itself (ANN, per `nprobe`).
    """
    from edged.distance import EMBEDDING_DIM
    from edged.gallery.match import Matcher
    from edged.gallery.store import GallerySnapshot

    try:
        import faiss  # noqa: F401

        ann_available = True
    except ImportError:
        ann_available = False
    rng = np.random.default_rng(0)
    exact: dict[str, Any] = {}
    ann: dict[str, Any] = {}
    ann_backend = None
    for n in sizes:
        vectors = random_unit_vectors(n, EMBEDDING_DIM, rng)
        labels = np.arange(n) // SAMPLES_PER_PERSON
        names = [f"p{i}" for i in range(int(labels[-1]) + 1)]
        sources = rng.choice(n, size=queries, replace=False)
        q = perturbed_queries(vectors[sources], QUERY_DISTANCE, rng)
        truth = nearest_rows(vectors, q)
        matcher = Matcher(GallerySnapshot(names, labels, vectors, "bench", 0), threshold)
        times = time_one(lambda m=matcher, q=q: [m.match(q[i:i + 1]) for i in range(len(q))], plan.repeats)
        found = [r.candidate for r in matcher.match(q)]
        del matcher
        exact[str(n)] = {"per": "query", **summary(times, per=queries), "people": len(names),
                         "recall_at_1": round(float(np.mean([f == names[labels[t]] for f, t in
                                                             zip(found, truth, strict=True)])), 4)}
        if ann_available and n >= ANN_MIN_SIZE:
            index, nlist, build_s = _ann_index(vectors)
            probes: dict[str, Any] = {}
            for nprobe in ANN_NPROBES:
                index.nprobe = nprobe
                times = time_one(lambda i=index, q=q: [i.search(q[j:j + 1], 1) for j in range(len(q))],
                                 plan.repeats)
                _, got = index.search(q, 1)
                probes[str(nprobe)] = {"per": "query", **summary(times, per=queries),
                                       "recall_at_1": round(float(np.mean(got[:, 0] == truth)), 4)}
            ann[str(n)] = {"nlist": nlist, "build_s": round(build_s, 3), "nprobe": probes}
            ann_backend = "faiss IndexIVFFlat, sqrt(N) lists, recall@1 = the exact nearest sample found"
            del index
        del vectors, labels, names
    return {"queries": queries, "query_distance": QUERY_DISTANCE, "samples_per_person": SAMPLES_PER_PERSON,
            "exact": exact,
            "ann": {"available": ann_available, "backend": ann_backend, "sizes": ann,
                    "note": None if ann_available else "faiss not installed: pip install 'edged[bench]'"}}


def bench_door_rule(rule: Any, plan: BenchPlan, people: int = 100, per_person: int = 3, cohort: int = 1000,
                    ignore: int = 20, queries: int = 50) -> dict[str, Any]:
    """What the stranger-resistant rule costs per face: the nearest-sample threshold rule against the door rule
    (template score, margin test against the runner-up and a cohort of stored strangers, the ignore list,
    adaptive thresholds) on one synthetic 100-person gallery, interleaved, one face per call."""
    from edged.distance import EMBEDDING_DIM
    from edged.gallery.match import MatchRule
    from edged.gallery.store import GallerySnapshot

    rng = np.random.default_rng(1)
    vectors = random_unit_vectors(people * per_person, EMBEDDING_DIM, rng)
    labels = np.arange(people * per_person) // per_person
    snapshot = GallerySnapshot([f"p{i}" for i in range(people)], labels, vectors, "bench", 0)
    ignored = GallerySnapshot(["poster"], np.zeros(ignore, np.int64), random_unit_vectors(ignore, EMBEDDING_DIM, rng),
                              "bench", 0)
    q = perturbed_queries(vectors[rng.choice(len(vectors), size=queries, replace=False)], QUERY_DISTANCE, rng)
    plain = MatchRule(rule.threshold, None, "min", 1).matcher(snapshot)
    door = rule.matcher(snapshot, cohort=random_unit_vectors(cohort, EMBEDDING_DIM, rng), ignore=ignored)
    times = interleaved({"nearest_sample": lambda: [plain.match(q[i:i + 1]) for i in range(queries)],
                         "door_rule": lambda: [door.match(q[i:i + 1]) for i in range(queries)]}, plan.repeats)
    out = {name: {"per": "face", **summary(t, per=queries)} for name, t in times.items()}
    return {**out, "people": people, "samples": len(vectors), "cohort": cohort, "ignore_samples": ignore,
            "rule": rule.describe(),
            "extra_ms_per_face": round(out["door_rule"]["median_ms"] - out["nearest_sample"]["median_ms"], 4)}
