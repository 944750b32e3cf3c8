"""Gallery import of untrusted files: every field validated before one transaction, one-line errors naming
the position and field, nothing written on any problem; duplicates checked inside the write transaction."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edged.errors import GalleryError
from edged.gallery.store import Gallery, NewSample
from edged.gallery.transfer import _canonical, export_gallery, import_gallery, load_export
from edged.vision.imageio import encode_png
from tests.conftest import FR, ROOT, run_cli

VERSION = "dlib_face_recognition_resnet_model_v1"
CROP_FORMAT = "edged-face-224-roll-112px-v1"


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return v / np.linalg.norm(v)


def crop(level: int = 90, size: int = 224) -> bytes:
    return encode_png(np.full((size, size, 3), level, np.uint8))


@pytest.fixture(scope="module")
def valid_doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real export: ann (2 samples with crops), bob (1 without)."""
    base = tmp_path_factory.mktemp("export")
    with Gallery(base / "g.db") as g:
        g.add_samples("ann", [NewSample(unit(1), "dlib", VERSION, "a1.jpg", 120, 210.5, crop(), CROP_FORMAT),
                              NewSample(unit(2), "dlib", VERSION, "a2.jpg", 130, 220.0, crop(80), CROP_FORMAT)],
                      display_name="Ann A.")
        g.add_samples("bob", [NewSample(unit(3), "dlib", VERSION, "b1.jpg", 140, 230.0)])
        export_gallery(g, base / "export.json")
    return json.loads((base / "export.json").read_text())


def write_doc(path: Path, doc: dict[str, Any], resign: bool = True) -> Path:
    if resign:
        doc["sha256"] = hashlib.sha256(_canonical(doc["payload"])).hexdigest()
    path.write_text(json.dumps(doc))
    return path


def emb(values: np.ndarray) -> str:
    return base64.b64encode(np.asarray(values, "<f4").tobytes()).decode()


def set_sample(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(payload: dict[str, Any]) -> None:
        payload["people"][0]["samples"][1][field] = value
    return edit


def set_person(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(payload: dict[str, Any]) -> None:
        payload["people"][1][field] = value
    return edit


S = "people[0] ('ann') samples[1]: "
P = "people[1] ('bob'): "
#: (edit of a valid payload, expected message after "FILE: "); the checksum is recomputed: only values are bad.
BAD: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "zero embedding": (set_sample("embedding", emb(np.zeros(128))), S + "embedding: norm 0 (all zero), expected a "
                       "unit vector (within 0.001 of 1)"),
    "huge embedding": (set_sample("embedding", emb(np.full(128, 3e38))), S + "embedding: norm 3.39411e+39, expected"),
    "nan embedding": (set_sample("embedding", emb(np.full(128, np.nan))), S + "embedding: holds NaN or infinite"),
    "long embedding": (set_sample("embedding", emb(np.ones(129) / np.sqrt(129))), S + "embedding: 516 bytes, "
                       "expected 128 float32"),
    "not base64": (set_sample("embedding", "not base64!"), S + "embedding: not valid base64"),
    "embedding number": (set_sample("embedding", 5), S + "embedding: expected text, got int"),
    "crop not png": (set_sample("crop_png", base64.b64encode(b"\xff\xd8\xff\xe0 jpeg?").decode()),
                     S + "crop_png: not a PNG image"),
    "crop undecodable": (set_sample("crop_png", base64.b64encode(crop()[:60] + bytes(40) + b"IEND\xaeB`\x82").decode()),
                         S + "crop_png: "),
    "crop wrong size": (set_sample("crop_png", base64.b64encode(crop(size=100)).decode()),
                        S + "crop_png: 100x100 pixels, but crop_format edged-face-224-roll-112px-v1 says 224x224"),
    "crop format": (set_sample("crop_format", "selfie"), S + "crop_format: 'selfie' is not a known crop format"),
    "face_px bool": (set_sample("face_px", True), S + "face_px: expected an integer, got bool"),
    "face_px negative": (set_sample("face_px", -3), S + "face_px: -3 is outside [1, 100000]"),
    "face_px float": (set_sample("face_px", 12.5), S + "face_px: expected an integer, got float"),
    "sharpness text": (set_sample("sharpness", "sharp"), S + "sharpness: expected a number, got str"),
    "sharpness huge": (set_sample("sharpness", 1e300), S + "sharpness: 1e+300 is outside [0, 1e+12]"),
    "embedder": (set_sample("embedder", "dl ib"), S + "embedder: 'dl ib' is not a valid embedder"),
    "version missing": (set_sample("embedder_version", None), S + "embedder_version: expected text, got NoneType"),
    "source surrogate": (set_sample("source", "a\udcff.jpg"), S + "source: not valid Unicode (lone surrogate)"),
    "source list": (set_sample("source", ["x"]), S + "source: expected text, got list"),
    "created garbage": (set_sample("created", "yesterday"), S + "created: 'yesterday' is not an ISO-8601 time"),
    "created month 13": (set_sample("created", "2024-13-01T00:00:00Z"), S + "created: '2024-13-01T00:00:00Z' is not"),
    "sample not object": (lambda p: p["people"][0]["samples"].append(7), "people[0] ('ann') samples[2]: expected an "
                          "object, got int"),
    "bad name": (set_person("name", "bob smith"), "people[1] ('bob smith'): invalid name 'bob smith': contains "
                 "whitespace"),
    "name slash": (set_person("name", "../etc"), "people[1] ('../etc'): invalid name '../etc': contains a path"),
    "name number": (set_person("name", 42), "people[1]: name: expected text, got int"),
    "display control": (set_person("display_name", "Bob\x1b[2J"), P + "invalid display name 'Bob\\x1b[2J': contains "
                        "control characters"),
    "updated number": (set_person("updated", 1700000000), P + "updated: expected text, got int"),
    "samples not list": (set_person("samples", {"a": 1}), P + "samples: expected a list, got dict"),
    "duplicate person": (lambda p: p["people"].append(copy.deepcopy(p["people"][1])), "people[2] ('bob'): name: "
                         "'bob' appears twice in the export"),
    "people not list": (lambda p: p.__setitem__("people", "everyone"), "payload: people: expected a list, got str"),
    "person not object": (lambda p: p["people"].insert(0, None), "people[0]: expected an object, got NoneType"),
    "exported": (lambda p: p.__setitem__("exported", []), "payload: exported: expected text, got list"),
}


def state(path: Path) -> tuple:
    if not path.exists():
        return ()
    with Gallery(path, create=False) as g:
        return ([(p.name, p.display_name, p.samples) for p in g.people()],
                [(s.person, s.source, s.embedding.tobytes()) for s in g.samples()], g.change_counter())


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_values_with_a_valid_checksum_are_refused_whole(tmp_path, valid_doc, case):
    edit, expected = BAD[case]
    doc = copy.deepcopy(valid_doc)
    edit(doc["payload"])
    path = write_doc(tmp_path / "bad.json", doc)
    gallery = tmp_path / "g.db"
    with Gallery(gallery) as g:  # holds carol already: nothing of the file may be added
        g.add_samples("carol", [NewSample(unit(9), "dlib", VERSION, "c.jpg", 100, 100.0)])
    before = state(gallery)
    with Gallery(gallery, create=False) as g, pytest.raises(GalleryError) as info:
        import_gallery(g, path)
    message = str(info.value)
    assert message.startswith(f"{path}: {expected}"), message
    assert "\n" not in message and message.isprintable()
    assert state(gallery) == before


def test_the_valid_export_imports(tmp_path, valid_doc):
    path = write_doc(tmp_path / "ok.json", copy.deepcopy(valid_doc), resign=False)
    with Gallery(tmp_path / "g.db") as g:
        assert import_gallery(g, path) == {"people": 2, "samples": 3, "skipped": 0}
        assert [(p.name, p.display_name, p.samples) for p in g.people()] == [("ann", "Ann A.", 2), ("bob", "bob", 1)]


@pytest.mark.parametrize("content, message", [
    ('{"format": "edged-gallery-export", "version": 1, "payload": {"x": NaN}, "sha256": ""}', "NaN is not a number"),
    ('{"format": "edged-gallery-export", "version": 1, "payload": {"x": 1e999}, "sha256": ""}', "out of range"),
    ('{"format": "edged-gallery-export", "version": 1, "payload": {"x": ' + "1" * 5000 + '}}', "invalid JSON"),
    ("[" * 100_000 + "]" * 100_000, "invalid JSON"),
    ('{"format": "edged-gallery-export", "version": true, "payload": {}}', "is not a version number"),
    ('{"format": "edged-gallery-export", "version": 1, "payload": [], "sha256": "x"}', "checksum mismatch"),
    ("\xff\xfe", "invalid JSON"),
])
def test_malformed_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "x.json"
    path.write_text(content, encoding="utf-8", errors="surrogateescape")
    with pytest.raises(GalleryError, match=message) as info:
        load_export(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_non_regular_export_files_are_refused(tmp_path):
    import os

    os.mkfifo(tmp_path / "fifo.json")
    with pytest.raises(GalleryError, match="is a FIFO"):
        load_export(tmp_path / "fifo.json")


def test_cli_import_of_bad_values_is_one_line_and_creates_nothing(tmp_path, valid_doc):
    # measured: 8 tracebacks over 71 such files; zero and 3e38 embeddings accepted
    doc = copy.deepcopy(valid_doc)
    BAD["huge embedding"][0](doc["payload"])
    path = write_doc(tmp_path / "bad.json", doc)
    gallery = tmp_path / "new" / "g.db"
    done = run_cli("--gallery", str(gallery), "gallery", "import", str(path), timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"edged: error: {path}: {S}embedding: norm 3.39411e+39, expected a "
                                                f"unit vector (within 0.001 of 1)"]
    assert not gallery.exists()


def test_emit_json_never_writes_nan_or_infinity():
    import io

    from edged.cli.common import Context

    out = io.StringIO()
    Context(args=None, out=out).emit_json({"distance": float("inf"), "faces": [{"d": float("nan"), "ok": 1.5}]})
    assert json.loads(out.getvalue()) == {"distance": None, "faces": [{"d": None, "ok": 1.5}]}


IMPORTER = """
import sys, time
from pathlib import Path
from edged.gallery.store import Gallery
from edged.gallery.transfer import import_gallery
from tests.slow_commit import pause_before_commit
pause_before_commit(1.0)
while not Path(sys.argv[3]).exists():
    time.sleep(0.01)
with Gallery(sys.argv[1]) as g:
    print(import_gallery(g, sys.argv[2]))
"""


def test_two_concurrent_imports_store_each_sample_once(tmp_path, valid_doc):
    path = write_doc(tmp_path / "ok.json", copy.deepcopy(valid_doc), resign=False)
    gallery, go = tmp_path / "g.db", tmp_path / "go"
    Gallery(gallery).close()
    procs = [subprocess.Popen([sys.executable, "-c", IMPORTER, str(gallery), str(path), str(go)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    with Gallery(gallery, create=False) as g:
        assert len(g.samples()) == 3
    assert sorted(o for o, _ in outs) == sorted(["{'people': 2, 'samples': 3, 'skipped': 0}\n",
                                                 "{'people': 0, 'samples': 0, 'skipped': 3}\n"])


def test_two_concurrent_enrolls_of_the_same_photos_store_them_once(tmp_path, shared):
    # measured: two enrolls started together both stored every photo (their duplicate check read the gallery
    # before embedding; the writes came later). Each write here pauses 2 s before COMMIT, so the second
    # enrollment's transaction starts after the first stored its samples.
    gallery = tmp_path / "g.db"
    photos = [str(FR / "obama.jpg"), str(FR / "obama2.jpg"), str(FR / "obama-720p.jpg")]
    procs = [subprocess.Popen([sys.executable, "-m", "tests.slow_commit", "2", "--gallery", str(gallery), "enroll",
                               "obama", *photos, "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert "Traceback" not in outs[0][1] + outs[1][1], outs
    with Gallery(gallery, create=False) as g:
        stored = g.samples("obama")
    blobs = [s.embedding.tobytes() for s in stored]
    assert len(blobs) == len(set(blobs)) and 1 <= len(blobs) <= len(photos)
    added = sorted(json.loads(o)["added"] for o, _ in outs)
    assert added[0] == 0 and added[1] == len(blobs)
    assert sorted(p.returncode for p in procs) == [0, 1]  # the second: "every input was rejected"
    second = next(json.loads(o) for o, _ in outs if json.loads(o)["added"] == 0)
    assert all("stored meanwhile" in r["reason"] or "near-duplicate" in r["reason"] for r in second["rejected"])


def test_streamed_checksum_is_the_canonical_one():
    from edged.gallery.transfer import _canonical_chunks

    odd = {"b": [1, 2.5, -0.0, 1e300, 10**30, True, None, "é\u2028\udcff\"\\/"], "a": {"z": [], "y": {}},
           "ü": "x" * 70000, "": [[{"k": 0.1}]]}
    assert b"".join(_canonical_chunks(odd)) == _canonical(odd)
