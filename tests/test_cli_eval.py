"""`edged eval lfw` as a user runs it, on small pairs files cut from the real pairs.txt with real LFW images."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import run_cli

SCHEMA = {"embedder": str, "folds": list, "accuracy_mean": float, "accuracy_std": float, "auc": float,
          "threshold": float, "fallbacks": int, "pairs": int}


def _cut(lines: list[str], per_fold: int, keep: set[int] | None = None, n: int = 300) -> str:
    """A View 2 file with the first `per_fold` matched and mismatched pairs of each fold; folds not in
    `keep` become garbage lines (reading them would fail)."""
    out = [f"10\t{per_fold}"]
    for f in range(1, 11):
        base = 1 + (f - 1) * 2 * n
        chosen = lines[base:base + per_fold] + lines[base + n:base + n + per_fold]
        out += chosen if keep is None or f in keep else ["#### not a pair ####"] * len(chosen)
    return "\n".join(out) + "\n"


def _images(text: str, data: Path) -> set[str]:
    """Distinct image paths of a pairs text (header skipped, garbage lines ignored), parsed here."""
    found = set()
    for line in text.splitlines()[1:]:
        f = line.split("\t")
        if len(f) == 3:
            found |= {f"{f[0]}/{f[0]}_{int(f[1]):04d}.jpg", f"{f[0]}/{f[0]}_{int(f[2]):04d}.jpg"}
        elif len(f) == 4:
            found |= {f"{f[0]}/{f[0]}_{int(f[1]):04d}.jpg", f"{f[2]}/{f[2]}_{int(f[3]):04d}.jpg"}
    return {str(data / p) for p in found}


@pytest.fixture(scope="module")
def setup(lfw_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    lines = (lfw_dir / "pairs.txt").read_text().splitlines()
    small = root / "pairs_small.txt"
    small.write_text(_cut(lines, 2))
    return {"root": root, "lines": lines, "small": small, "cache": root / "cache",
            "data": lfw_dir / "lfw-deepfunneled"}


def _eval(setup, *extra: str, pairs: Path | None = None) -> tuple[dict, str]:
    proc = run_cli("eval", "lfw", "--data", str(setup["data"]), "--pairs", str(pairs or setup["small"]),
                   "--embedder", "dlib", "--cache", str(setup["cache"]), "--workers", "2", *extra)
    assert proc.returncode == 0, proc.stderr
    return (json.loads(proc.stdout) if "--json" in extra else {}), proc.stdout


@pytest.mark.slow  # moved out of the default run (~10 min budget); CI runs it
def test_ten_folds_json_and_roc(setup):
    roc = setup["root"] / "roc.png"
    out, _ = _eval(setup, "--json", "--roc", str(roc))
    for key, kind in SCHEMA.items():
        assert isinstance(out[key], kind), key
    assert out["embedder"] == "dlib" and out["folds"] == list(range(1, 11)) and out["pairs"] == 40
    assert [(u["fold"], u["part"], u["pairs"]) for u in out["per_fold"]] == [(f, None, 4) for f in range(1, 11)]
    assert out["threshold"] == pytest.approx(np.mean([u["threshold"] for u in out["per_fold"]]), abs=1e-5)
    assert out["accuracy_mean"] == pytest.approx(np.mean([u["accuracy"] for u in out["per_fold"]]), abs=1e-5)
    assert out["accuracy_mean"] >= 0.9 and out["auc"] >= 0.95 and 0.0 < out["threshold"] < 4.0
    images = _images(setup["small"].read_text(), setup["data"])
    assert out["images"] == len(images) == out["computed"]
    # fallbacks = images where dlib HOG (upsample 1) finds no face, not even at the retry's lowered
    # threshold; counted here independently
    from edged.eval.facecache import RETRY_MIN_SCORE
    from edged.vision.detect import FaceDetector
    from edged.vision.imageio import load_image

    detector = FaceDetector("hog", upsample=1, min_score=RETRY_MIN_SCORE)
    assert out["fallbacks"] == sum(1 for p in images if not detector.detect(load_image(p)))
    plot = cv2.imread(str(roc))
    assert plot is not None and plot.shape == (600, 800, 3)
    assert out["roc"] == str(roc) and not list(roc.parent.glob(".roc.png.*"))
    cache = setup["cache"] / "faces.sqlite"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600


@pytest.mark.slow  # reads the cache test_ten_folds_json_and_roc filled: runs beside it
def test_rerun_reads_the_cache(setup):
    first, _ = _eval(setup, "--json")
    assert first["computed"] == 0
    _, text = _eval(setup)
    assert "folds 1-10: 40 pairs" in text
    assert f"accuracy {first['accuracy_mean']:.4f} +- {first['accuracy_std']:.4f}" in text
    assert len([ln for ln in text.splitlines() if ln.split()[:1] and ln.split()[0].isdigit()]) == 10


def test_folds_6_to_10_never_read_folds_1_to_5(setup):
    text = _cut(setup["lines"], 2, keep={6, 7, 8, 9, 10})
    pairs = setup["root"] / "pairs_6_10.txt"
    pairs.write_text(text)
    out, _ = _eval(setup, "--json", "--folds", "6-10", pairs=pairs)
    assert out["folds"] == [6, 7, 8, 9, 10] and out["pairs"] == 20
    assert [u["fold"] for u in out["per_fold"]] == [6, 7, 8, 9, 10]
    assert out["images"] == len(_images(text, setup["data"]))
    proc = run_cli("eval", "lfw", "--data", str(setup["data"]), "--pairs", str(pairs), "--cache", str(setup["cache"]))
    assert proc.returncode != 0
    assert proc.stderr.strip() == (f"edged: error: {pairs}:2: expected a matched pair 'name n1 n2' (fold 1), "
                                   f"got '#### not a pair ####'")


@pytest.mark.slow  # moved out of the default run (~10 min budget); CI runs it
def test_flip_embeds_mirrored_crops_from_cached_faces(setup):
    import sqlite3

    text = _cut(setup["lines"], 2, keep={6, 7, 8, 9, 10})
    pairs = setup["root"] / "pairs_6_10_flip.txt"
    pairs.write_text(text)
    plain, _ = _eval(setup, "--json", "--folds", "6-10", pairs=pairs)
    out, _ = _eval(setup, "--json", "--folds", "6-10", "--flip", pairs=pairs)
    images = _images(text, setup["data"])
    assert out["flip"] is True and plain["flip"] is False
    assert out["computed"] == len(images)  # only the mirrored embeddings were missing
    assert out["accuracy_mean"] >= 0.9 and out["pairs"] == 20
    assert out["threshold"] != plain["threshold"]
    with sqlite3.connect(setup["cache"] / "faces.sqlite") as db:
        (flips,) = db.execute("SELECT COUNT(*) FROM embeddings WHERE variant='flip'").fetchone()
    assert flips == len(images)


@pytest.mark.slow  # moved out of the default run (~10 min budget); CI runs it
def test_single_fold_is_split_into_ten_parts(setup):
    text = _cut(setup["lines"], 10, keep={3})
    pairs = setup["root"] / "pairs_fold3.txt"
    pairs.write_text(text)
    out, _ = _eval(setup, "--json", "--folds", "3", pairs=pairs)
    assert out["folds"] == [3] and out["pairs"] == 20
    assert [(u["fold"], u["part"], u["pairs"]) for u in out["per_fold"]] == [(3, k, 2) for k in range(1, 11)]
    assert out["accuracy_mean"] >= 0.85


@pytest.mark.parametrize(("args", "message"), [
    (["--pairs", "{root}/nope.txt"], "{root}/nope.txt: no such pairs file"),
    (["--folds", "11"], "--folds '11': folds are numbered 1 to 10"),
    (["--data", "{root}/no-such-dir"], "--data {root}/no-such-dir: not a directory"),
    (["--pairs", "{root}/ghost.txt", "--folds", "1"], "{data}/Nobody_Here/Nobody_Here_0001.jpg: no such image (pair at "
                                      "{root}/ghost.txt:2); 3 of 3 images missing"),
    (["--roc", "{root}/roc.jpg"], "--roc {root}/roc.jpg: the plot is written as PNG"),
    (["--roc", "{root}/missing/roc.png"], "--roc {root}/missing/roc.png: directory {root}/missing does not exist"),
    (["--workers", "0"], "--workers 0: must be at least 1"),
])
def test_bad_input_is_one_line_error(setup, args, message):
    root = setup["root"]
    (root / "ghost.txt").write_text("1\t1\nNobody_Here\t1\t2\nNobody_Here\t1\tNobody_Else\t1\n")
    base = {"--data": str(setup["data"]), "--pairs": str(setup["small"])}
    fmt = {"root": root, "data": setup["data"]}
    argv = [a.format(**fmt) for a in args]
    for flag, value in base.items():
        if flag not in argv:
            argv += [flag, value]
    proc = run_cli("eval", "lfw", "--cache", str(setup["cache"]), *argv)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edged: error: "), proc.stderr
    assert message.format(**fmt) in lines[0]
    assert proc.stdout == ""
