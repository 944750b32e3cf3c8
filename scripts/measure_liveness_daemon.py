"""Synthetic photo attacks through the daemon's path: `RecognitionPipeline` with liveness on, each attacked person
enrolled (as `edged enroll` does) from the very photo the attack shows, so the face is named and checked the way a
door camera checks it (correlation tracker between detections, texture worker). `edged eval liveness` measures
the cues with a detection on every frame instead; this measures what the daemon's own box-keeping does to them.

    .venv/bin/python scripts/measure_liveness_daemon.py [--count 100] [--require motion] [--landmark-trees N]

Prints the attacks, how many could be enrolled, how many were named, accepted (any live verdict: APCER over the
named ones) and refused. Needs ../shared (or EDGED_SHARED). 2026-12-03, 2 cores: 100 attacks in ~4 min;
`--require motion`: 1 of 83 accepted; default (texture+motion): 0 of 83. 2026-12-04 (AMD EPYC, ~6 min each):
`--require motion` 1 of 83 (the full landmark model), 4 of 83 with `--landmark-trees 250`, 9 with 150; default
rule with 150 trees 0 of 83.
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time
from pathlib import Path

import yaml

from edged.config import parse_config
from edged.eval.liveness import pick_photos, synthetic_photo_inputs
from edged.gallery.enroll import enroll_person, expand_sources
from edged.gallery.match import MatchRule
from edged.gallery.store import Gallery
from edged.models.embedders import embedder_from_config
from edged.runtime.pipeline import RecognitionPipeline
from edged.types import Frame

SHARED = Path(os.environ.get("EDGED_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
ONNX = SHARED / "models" / "minifasnet" / "onnx"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--require", default=None, help="liveness.require (default: the config's default)")
    parser.add_argument("--landmark-stages", type=int, help="liveness.landmark_stages (default: the config's)")
    parser.add_argument("--landmark-trees", type=int, help="liveness.landmark_trees (default: the config's)")
    args = parser.parse_args()
    photos = pick_photos(SHARED / "data" / "lfw" / "lfw-deepfunneled", args.count, seed=0)
    attacks = synthetic_photo_inputs(photos, seed=0)
    with tempfile.TemporaryDirectory(prefix="edged-attacks-") as name:
        work = Path(name)
        os.chmod(work, 0o700)
        models = work / "models"
        models.mkdir()
        for f in ("MiniFASNetV2.onnx", "MiniFASNetV1SE.onnx"):
            (models / f).symlink_to(ONNX / f)
        liveness = {"enabled": True, **({"require": args.require} if args.require else {}),
                    **({"landmark_stages": args.landmark_stages} if args.landmark_stages else {}),
                    **({"landmark_trees": args.landmark_trees} if args.landmark_trees else {})}
        base = {"device_id": "attacks", "camera": {"source": "attack.mp4"}, "detector": {"backend": "hog"},
                "models": {"dir": str(models)}, "liveness": liveness}
        cfg = parse_config(yaml.safe_dump(base))
        embedder = embedder_from_config(cfg)
        counts: collections.Counter[str] = collections.Counter()
        accepted: list[str] = []
        first: RecognitionPipeline | None = None
        start = time.monotonic()
        for photo, attack in zip(photos, attacks, strict=True):
            gallery = work / f"{photo.stem}.db"
            report = enroll_person(gallery, "victim", expand_sources([str(photo)]), cfg.enroll, lambda _g: embedder)
            if not report.samples:
                counts["not enrollable"] += 1
                continue
            run_cfg = parse_config(yaml.safe_dump({**base, "gallery": {"path": str(gallery)}}))
            pipeline = RecognitionPipeline.from_config(run_cfg, embedder, share=first)
            first = first or pipeline
            pipeline.set_matcher(MatchRule.of(embedder, run_cfg.embedder, run_cfg.match).matcher(
                Gallery(gallery).snapshot(embedder.version)))
            named = live = False
            last = None
            for index, (t, image) in enumerate(attack.frames()):
                result = pipeline.process(Frame(image, index, t, 0.0))
                named = named or any(o.identity == "victim" for o in result.observations)
                for verdict in result.liveness:
                    last, live = verdict, live or bool(verdict.live)
            counts["named"] += named
            if live:
                accepted.append(attack.name)
            counts["accepted" if live else "refused" if last is not None and last.live is False else "undecided"] += 1
        if first is not None and first.liveness is not None and first.liveness.worker is not None:
            first.liveness.worker.close()
    named = counts["named"] or 1
    print(f"{len(attacks)} attacks in {time.monotonic() - start:.0f} s: {dict(counts)}; accepted "
          f"{len(accepted)} of {counts['named']} named (APCER {len(accepted) / named:.3f}): {accepted}")


if __name__ == "__main__":
    main()
