"""`edged embed` and `edged compare`: embeddings and squared-L2 distances of still images."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np

from edged.cli.common import Context, embedder_option, json_option
from edged.distance import squared_l2
from edged.embed.faces import FacePipeline, FaceResult
from edged.errors import EdgedError, NoFaceError, UsageError
from edged.vision.imageio import load_image


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="print the embedding of the largest face in each image")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    embedder_option(p)
    json_option(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("compare", help="squared L2 distances between the largest faces of images (2 or more)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="two or more images (fewer: usage error, exit 2)")
    embedder_option(p)
    json_option(p)
    p.set_defaults(func=cmd_compare)


@dataclass
class Embedded:
    path: str
    face: FaceResult | None
    error: str | None


def embed_largest(pipeline: FacePipeline, paths: list[str]) -> list[Embedded]:
    """The largest face of each image, or the one-line reason it has none."""
    out = []
    for path in paths:
        try:
            image = load_image(path)
            boxes = pipeline.detect(image)
            if not boxes:
                raise NoFaceError(f"{path}: no face found")
            out.append(Embedded(path, pipeline.process(image, boxes[:1])[0], None))
        except EdgedError as exc:
            out.append(Embedded(path, None, str(exc)))
    return out


def _report_errors(results: list[Embedded]) -> int:
    failed = [r for r in results if r.error]
    for r in failed:
        print(f"edged: error: {r.error}", file=sys.stderr)
    return 1 if failed else 0


def cmd_embed(ctx: Context) -> int:
    embedder = ctx.embedder(ctx.args.embedder)
    results = embed_largest(FacePipeline(embedder), ctx.args.images)
    if ctx.json:
        ctx.emit_json({
            "embedder": embedder.name, "threshold": embedder.threshold,
            "results": [{
                "image": r.path,
                "embedding": [round(float(x), 7) for x in r.face.embedding] if r.face else None,
                "box": r.face.box.as_list() if r.face else None,
                "error": r.error,
            } for r in results],
        })
    else:
        for r in results:
            if r.face:
                values = " ".join(f"{x:.6f}" for x in r.face.embedding)
                ctx.print(f"{r.path}\t{','.join(map(str, r.face.box.as_list()))}\t{values}")
    return _report_errors(results)


def cmd_compare(ctx: Context) -> int:
    if len(ctx.args.images) < 2:
        raise UsageError(f"compare needs at least 2 images, got {len(ctx.args.images)} (the embedding of one image: "
                         f"edged embed IMAGE)")
    embedder = ctx.embedder(ctx.args.embedder)
    results = embed_largest(FacePipeline(embedder), ctx.args.images)
    good = [r for r in results if r.face]
    dist = squared_l2(np.array([r.face.embedding for r in good]), np.array([r.face.embedding for r in good])) \
        if good else np.zeros((0, 0))
    pairs = [(i, j) for i in range(len(good)) for j in range(i + 1, len(good))]
    if ctx.json:
        ctx.emit_json({"embedder": embedder.name, "threshold": embedder.threshold,
                       "pairs": [{"a": good[i].path, "b": good[j].path, "distance": round(float(dist[i, j]), 6)}
                                 for i, j in pairs]})
    else:
        for i, j in pairs:
            verdict = "same person" if dist[i, j] < embedder.threshold else "different people"
            ctx.print(f"Comparing {good[i].path} with {good[j].path}.")
            ctx.print(f"  + Squared l2 distance between representations: {dist[i, j]:.3f} ({verdict})")
        if len(good) > 2:
            names = [str(k + 1) for k in range(len(good))]
            ctx.print("")
            ctx.print(f"squared L2 ({embedder.name}, threshold {embedder.threshold:.3f}):")
            ctx.print("      " + "".join(f"{n:>7}" for n in names))
            for k, row in enumerate(dist):
                ctx.print(f"{names[k]:>5} " + "".join(f"{x:7.3f}" for x in row) + f"  {good[k].path}")
    return _report_errors(results)
