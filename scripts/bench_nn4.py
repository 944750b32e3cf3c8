#!/usr/bin/env python3
"""Micro-benchmark of nn4.small2 CPU runtimes, all in ONE process, interleaved (A B C ... A B C ...).

Same network and weights everywhere (random weights by default: speed does not depend on their
values; `--weights FILE` for real ones), real aligned faces from ../shared (openface examples,
tiled to the batch size), preprocessing included in every runtime (uint8 faces in, embeddings out).
Reports the median of `--runs` interleaved runs per runtime, per face, at batch 1 and 16, and the
max abs difference of every runtime to eager PyTorch.

Runtimes:
  edged nn4                  the embedder's public embed() with its automatic CPU backend
  torch eager                NN4Small2 as defined (torch.set_num_threads(cores))
  torch eager channels_last  the same with channels_last input and weights
  torch FastNN4 cl           the rewritten module (edged.embed.nn4_fast) in torch, channels_last
  ORT plain                  ONNX Runtime on edged.embed.onnx_export.export_plain_onnx (torch's LRN
                             decomposition), intra_op_num_threads = cores, default options
  ORT plain, LRN op          the plain export with LRN as ONNX's LRN op (what OpenCV needs)
  OpenCV DNN                 cv2.dnn on the LRN-op export
  ORT FastNN4 1 session      edged's export on one session using all cores (no data parallelism)
  ORT FastNN4 merged 1x1     the same with the inception input 1x1 convs merged

ONNX Runtime's workers keep spinning for tens of ms after a run unless told otherwise, stealing a
core from whatever runs next in an interleaved benchmark; `--peer-spin` default|stop chooses
whether the peer ORT sessions keep that default or stop spinning at the end of each run
(`session.force_spinning_stop`; it does not slow their own run).

    nice -n 19 .venv/bin/python scripts/bench_nn4.py --runs 30 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = Path(os.environ.get("EDGED_SHARED", ROOT.parent / "shared"))


def real_faces() -> list[np.ndarray]:
    from edged.vision.align import OPENFACE_96, FaceAligner
    from edged.vision.detect import FaceDetector
    from edged.vision.imageio import load_image

    detector, aligner = FaceDetector("hog", upsample=1), FaceAligner(OPENFACE_96)
    faces = []
    for path in sorted((SHARED / "data" / "openface-examples").glob("*.jpg")):
        image = load_image(path)
        faces += [aligner.align(image, box) for box in detector.detect(image)]
    if not faces:
        raise SystemExit(f"no faces found under {SHARED}/data/openface-examples")
    return faces


def ort_session(data: bytes | str, threads: int, spin: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if spin == "stop":
        options.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


Runner = Callable[[np.ndarray], np.ndarray]


def build_runtimes(weights: Path, workdir: Path, threads: int, spin: str) -> tuple[dict[str, Runner], object]:
    import cv2
    import torch

    from edged.embed.nn4.fast import FastNN4, export_onnx
    from edged.embed.nn4.onnx_export import export_plain_onnx
    from edged.embed.nn4.preprocess import to_network_input
    from edged.embed.nn4.weights import load_nn4
    from edged.models.embedders import create_nn4_embedder

    torch.set_num_threads(threads)
    model = load_nn4(weights)
    embedder = create_nn4_embedder(str(weights), device="cpu", models_dir=str(workdir / "models"))
    embedder.embed(np.zeros((1, 96, 96, 3), np.uint8))  # load, export, cache now

    model_cl = load_nn4(weights).to(memory_format=torch.channels_last)
    fast_cl = FastNN4(load_nn4(weights)).to(memory_format=torch.channels_last)

    plain_path = export_plain_onnx(model, workdir / "plain.onnx")
    lrn_path = export_plain_onnx(model, workdir / "plain-lrn-op.onnx", lrn_op=True)
    ort_plain = ort_session(str(plain_path), threads, spin)
    ort_lrn = ort_session(str(lrn_path), threads, spin)
    net = cv2.dnn.readNetFromONNX(str(lrn_path))
    fast_one = ort_session(export_onnx(model), threads, "stop")
    fast_merged = ort_session(export_onnx(model, merge_1x1=True), threads, "stop")

    def torch_run(m, channels_last: bool = False):
        def run(faces):
            x = torch.from_numpy(to_network_input(faces))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                return m(x).numpy()
        return run

    def fast_torch(faces):
        with torch.inference_mode():
            return fast_cl(torch.from_numpy(faces)).numpy()

    def opencv(faces):
        net.setInput(to_network_input(faces))
        return net.forward()

    return {
        "edged nn4": embedder.embed,
        "torch eager": torch_run(model),
        "torch eager channels_last": torch_run(model_cl, True),
        "torch FastNN4 channels_last": fast_torch,
        "ORT plain": lambda f: ort_plain.run(None, {"input": to_network_input(f)})[0],
        "ORT plain, LRN op": lambda f: ort_lrn.run(None, {"input": to_network_input(f)})[0],
        "OpenCV DNN (LRN op export)": opencv,
        "ORT FastNN4, 1 session": lambda f: fast_one.run(None, {"faces": f})[0],
        "ORT FastNN4 merged 1x1, 1 session": lambda f: fast_merged.run(None, {"faces": f})[0],
    }, embedder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--weights", type=Path, help="nn4 weights file (default: random weights)")
    parser.add_argument("--only", nargs="+", help="runtime names to include (edged nn4 and ORT plain always)")
    parser.add_argument("--peer-spin", choices=["default", "stop"], default="stop")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    from edged.embed.nn4.net import NN4Small2
    from edged.embed.nn4.ort import usable_cores
    from edged.embed.nn4.weights import save_weights
    from edged.models.store import NN4_ALIGNMENT

    threads = usable_cores()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        weights = args.weights
        if weights is None:
            torch.manual_seed(0)
            weights = workdir / "random.edged.pt"
            save_weights(weights, NN4Small2().state_dict(), name="random", threshold=0.99, alignment=NN4_ALIGNMENT)
        runtimes, embedder = build_runtimes(weights, workdir, threads, args.peer_spin)
        if args.only:
            keep = {"edged nn4", "ORT plain", *args.only}
            runtimes = {k: v for k, v in runtimes.items() if k in keep}
        faces = real_faces()
        reference = runtimes.get("torch eager")
        result: dict = {"threads": threads, "runs": args.runs, "faces": len(faces), "peer_spin": args.peer_spin,
                        "edged_backend": embedder.backend, "load_average": os.getloadavg(),
                        "cpu": platform.processor() or platform.machine(), "batches": {}}
        for n in args.batches:
            batch = np.stack([faces[i % len(faces)] for i in range(n)])
            if reference is not None:
                ref = reference(batch)
                diffs = {k: float(np.abs(run(batch) - ref).max()) for k, run in runtimes.items()}
            else:
                diffs = {}
            times: dict[str, list[float]] = {k: [] for k in runtimes}
            for round_ in range(args.runs + 2):
                for name, run in runtimes.items():
                    start = time.perf_counter()
                    run(batch)
                    if round_ >= 2:
                        times[name].append(time.perf_counter() - start)
            base = statistics.median(times["ORT plain"])
            rows = {}
            for name, t in times.items():
                median = statistics.median(t)
                rows[name] = {"ms_per_face": round(1000 * median / n, 3), "ratio_to_ort_plain": round(median / base, 3),
                              "max_abs_diff_vs_torch": diffs.get(name)}
            result["batches"][str(n)] = rows
            print(f"batch {n} ({args.runs} interleaved runs, median, {threads} threads, load {os.getloadavg()[0]:.2f})")
            for name, row in rows.items():
                diff = f"{row['max_abs_diff_vs_torch']:.1e}" if row["max_abs_diff_vs_torch"] is not None else "-"
                print(f"  {name:36s} {row['ms_per_face']:8.3f} ms/face   x{row['ratio_to_ort_plain']:.3f} of ORT plain"
                      f"   diff {diff}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
