"""`edged embed` and `edged compare` as a user runs them."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edged.models.registry import registry_path
from tests.conftest import run_cli

PEOPLE = ["lennon-1", "lennon-2", "clapton-1", "clapton-2"]


def test_compare_json_separates_people(openface_dir):
    paths = [str(openface_dir / f"{n}.jpg") for n in PEOPLE]
    proc = run_cli("compare", "--embedder", "dlib", "--json", *paths)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["embedder"] == "dlib" and 0 < out["threshold"] < 4
    assert len(out["pairs"]) == 6
    dist = {(p["a"].rsplit("/", 1)[1][:-4], p["b"].rsplit("/", 1)[1][:-4]): p["distance"] for p in out["pairs"]}
    same = [dist[("lennon-1", "lennon-2")], dist[("clapton-1", "clapton-2")]]
    cross = [v for k, v in dist.items() if k[0][:3] != k[1][:3]]
    assert len(cross) == 4
    assert max(same) < out["threshold"] < min(cross)


def test_compare_table(openface_dir):
    proc = run_cli("compare", *[str(openface_dir / f"{n}.jpg") for n in PEOPLE[:3]])
    assert proc.returncode == 0, proc.stderr
    assert "Squared l2 distance between representations" in proc.stdout
    assert proc.stdout.count("Comparing") == 3


@pytest.mark.pure
@pytest.mark.parametrize("images", [0, 1])
def test_compare_needs_two_images(tmp_path, images):
    """One image has no pair to compare: a usage error (exit 2, like argparse's), before any model loads."""
    args = [str(tmp_path / "one.jpg")] * images  # never read
    proc = run_cli("compare", *args)
    if images == 0:  # argparse itself: IMAGE is required
        assert proc.returncode == 2 and "the following arguments are required: IMAGE" in proc.stderr
        return
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("edged: error: compare needs at least 2 images, got 1 (the embedding of one image: "
                           "edged embed IMAGE)\n")


def test_embed_json_reports_each_image(openface_dir, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0garbage\xff\xd9")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((100, 100, 3), 200, np.uint8))
    good = str(openface_dir / "carell.jpg")
    proc = run_cli("embed", "--json", good, str(corrupt), str(empty), str(blank))
    assert proc.returncode == 1
    results = json.loads(proc.stdout)["results"]
    assert [r["error"] is None for r in results] == [True, False, False, False]
    vec = np.array(results[0]["embedding"])
    assert vec.shape == (128,) and abs(np.linalg.norm(vec) - 1) < 1e-4
    assert len(results[0]["box"]) == 4
    assert "not a readable image" in results[1]["error"] and str(corrupt) in results[1]["error"]
    assert "empty file" in results[2]["error"]
    assert "no face" in results[3]["error"]
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("edged: error: ") for line in errors)
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("kind", ["alpha", "grey", "deep", "tiny", "huge"])
def test_odd_images(openface_dir, tmp_path, kind):
    bgr = cv2.imread(str(openface_dir / "clapton-2.jpg"))
    path = tmp_path / f"{kind}.png"
    if kind == "alpha":
        cv2.imwrite(str(path), np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)]))
    elif kind == "grey":
        cv2.imwrite(str(path), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    elif kind == "deep":
        cv2.imwrite(str(path), bgr.astype(np.uint16) * 257)
    elif kind == "tiny":
        cv2.imwrite(str(path), cv2.resize(bgr, (10, 10)))
    else:
        path = tmp_path / "huge.jpg"
        canvas = np.full((3000, 4000, 3), 90, np.uint8)
        canvas[1000:1400, 1800:2200] = bgr
        cv2.imwrite(str(path), canvas)
    proc = run_cli("embed", "--json", str(path))
    assert "Traceback" not in proc.stderr
    result = json.loads(proc.stdout)["results"][0]
    if kind == "tiny":
        assert proc.returncode == 1 and "no face" in result["error"]
    else:
        assert proc.returncode == 0, proc.stderr
        assert result["error"] is None and len(result["embedding"]) == 128


def test_nn4_without_weights_says_how_to_install(openface_dir, tmp_path):
    registry = tmp_path / "registry.json"  # the official entry only: no shipped weights to fall back on
    official = [e for e in json.loads(registry_path().read_text())["models"] if e["name"] == "nn4.small2.v1"]
    registry.write_text(json.dumps({"registry_version": 1, "models": official}))
    proc = run_cli("embed", "--embedder", "nn4", str(openface_dir / "carell.jpg"),
                   env={"EDGED_MODELS": str(tmp_path / "models"), "EDGED_REGISTRY": str(registry)})
    assert proc.returncode != 0
    assert "edged models" in proc.stderr and "Traceback" not in proc.stderr
