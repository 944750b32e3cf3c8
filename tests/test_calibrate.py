"""Safe calibration (`edged calibrate`: FPIR on impostor faces, never looser without evidence, duplicate people)
and the identity checks of `edged enroll`; pure tests on vectors of known geometry, CLI tests on real photos."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.stats import beta

from edged.config import EmbedderConfig, MatchConfig
from edged.gallery.calibrate import (
    Duplicate,
    calibrate,
    duplicate_people,
    faces_needed,
    fpir_at,
    fpir_upper,
    nameable_scores,
    threshold_for_fpir,
)
from edged.gallery.enroll import identity_warnings
from edged.gallery.match import MatchRule
from edged.gallery.store import Gallery, GallerySnapshot, NewSample
from tests.conftest import FR, enroll_cli, run_cli

TRAIN = FR / "knn_examples" / "train"
TEST = FR / "knn_examples" / "test"
PEOPLE = ["alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"]
VERSION = "dlib_face_recognition_resnet_model_v1"
DIM = 128
#: The rule of the pure tests: nearest sample within 0.18, no margin test.
RULE = MatchRule(0.18, None, "min")


# ---- pure: vectors of known geometry ----

def axis(i: int) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[i] = 1.0
    return v


def at_distance(centre: int, d: float, rng: np.random.Generator, free: slice = slice(20, DIM)) -> np.ndarray:
    """A unit vector at squared L2 `d` from axis `centre`, orthogonal to every other axis below 20."""
    other = np.zeros(DIM)
    other[free] = rng.normal(size=DIM)[free]
    other /= np.linalg.norm(other)
    cos = 1.0 - d / 2.0
    return (cos * axis(centre) + math.sqrt(1.0 - cos * cos) * other).astype(np.float32)


def snapshot(names: list[str], labels: list[int], vectors: list[np.ndarray]) -> GallerySnapshot:
    return GallerySnapshot(names, np.array(labels), np.array(vectors, np.float32), VERSION, 1)


def five_people(rng: np.random.Generator) -> GallerySnapshot:
    """Five people on axes 0-4, two samples each (0.05 apart)."""
    vectors, labels = [], []
    for p in range(5):
        vectors += [axis(p), at_distance(p, 0.05, rng)]
        labels += [p, p]
    return snapshot([f"p{p}" for p in range(5)], labels, vectors)


@pytest.mark.pure
def test_fpir_upper_is_the_exact_clopper_pearson_bound():
    for named, faces in [(1, 10), (3, 50), (7, 400), (49, 5000), (9, 10)]:
        assert fpir_upper(named, faces) == pytest.approx(beta.ppf(0.95, named + 1, faces - named), rel=1e-9)
    for faces in (1, 10, 300, 3000):
        exact = 1.0 - 0.05 ** (1.0 / faces)
        assert fpir_upper(0, faces) == pytest.approx(exact, rel=1e-12)
        assert exact <= 3.0 / faces  # the rule of three is the (slightly looser) reading of it
    assert fpir_upper(10, 10) == 1.0 and fpir_upper(0, 0) == 1.0
    assert np.all(np.diff(fpir_upper(np.arange(50), 500)) > 0)
    assert faces_needed(1e-3) == 3000 and faces_needed(0.01) == 300 and faces_needed(0.02) == 150
    assert fpir_upper(0, faces_needed(1e-3)) <= 1e-3


@pytest.mark.pure
@pytest.mark.parametrize("rule", [RULE, MatchRule(0.18, None, "mean_k", 2), MatchRule(0.18, 0.8, "min"),
                                  MatchRule(0.18, 0.6, "centroid"), MatchRule(0.18, 0.9, "centroid", method="svm"),
                                  MatchRule(0.18, 0.6, "centroid", adaptive=True)])
def test_fpir_counts_what_the_matcher_names(rule):
    """FPIR at any threshold is exactly the number of impostor faces Matcher.match names at that threshold."""
    rng = np.random.default_rng(1)
    snap = five_people(rng)
    # strangers near person 0 (some also near person 1: ambiguous for the margin test), and far ones
    faces = [at_distance(0, d, rng) for d in rng.uniform(0.02, 0.6, 40)]
    mix = [(axis(0) + axis(1)) / np.sqrt(2) * np.cos(a) + np.sin(a) * at_distance(5, 0.0, rng)
           for a in rng.uniform(0.0, 0.5, 20)]
    impostors = np.array(faces + [m / np.linalg.norm(m) for m in mix], np.float32)
    nameable = nameable_scores(rule.matcher(snap), impostors)
    thresholds = [0.03, 0.1, 0.18, 0.25, 0.4, 0.7, 1.2]
    for f in fpir_at(nameable, len(impostors), thresholds):
        named = sum(r.name is not None for r in replace(rule, threshold=f.threshold).matcher(snap).match(impostors))
        assert f.named == named, (rule, f.threshold)
        assert f.faces == len(impostors) and f.upper == pytest.approx(float(fpir_upper(named, len(impostors))))
    assert 0 < fpir_at(nameable, len(impostors), [0.18])[0].named < len(impostors)


@pytest.mark.pure
def test_too_few_impostors_keep_the_current_threshold():
    rng = np.random.default_rng(2)
    snap = five_people(rng)
    far = np.array([at_distance(p % 5, d, rng) for p, d in enumerate(rng.uniform(0.5, 1.5, 40))])
    cal = calibrate(snap, RULE, impostors=far)  # none named anywhere near 0.18, but 40 faces show nothing
    assert cal.suggested == 0.18 and not cal.supported
    assert cal.at_current.named == 0 and cal.at_current.upper == pytest.approx(1 - 0.05 ** (1 / 40))
    assert cal.at_current.rule_of_three == pytest.approx(3 / 40)
    assert cal.faces_needed == 3000 and cal.more_faces_needed == 2960
    assert "2960 more needed" in cal.reason and "3000 with none named" in cal.reason
    # no impostors at all: the same, and the pair FAR (looser here) is only a secondary figure
    alone = calibrate(snap, RULE)
    assert alone.suggested == 0.18 and alone.impostor_faces == 0 and alone.more_faces_needed == 3000
    assert alone.pair is not None and alone.pair.threshold > 0.18
    # a looser current threshold with strangers named: always tighten, below the nearest named one
    near = np.concatenate([far, [at_distance(3, 0.1205, rng), at_distance(1, 0.2, rng)]])
    tight = calibrate(snap, replace(RULE, threshold=0.3), impostors=near)
    assert tight.at_current.named == 2 and not tight.supported
    assert tight.suggested == pytest.approx(0.12) and tight.at_suggested.named == 0
    assert tight.reason.startswith("tighter")


@pytest.mark.pure
def test_enough_impostors_support_the_largest_safe_threshold():
    rng = np.random.default_rng(3)
    snap = five_people(rng)
    d = rng.uniform(0.3, 1.5, 4000)
    impostors = np.array([at_distance(i % 5, x, rng) for i, x in enumerate(d)])
    d = ((impostors[:, None].astype(np.float64) - snap.vectors[None]) ** 2).sum(axis=2).min(axis=1)  # brute force
    cal = calibrate(snap, RULE, impostors=impostors)
    # 4000 faces allow 0 named at 1e-3 (1 named gives 0.0012): just below the nearest stranger, looser
    assert cal.supported and cal.at_suggested.within(1e-3) and cal.at_suggested.named == 0
    assert cal.suggested == pytest.approx(math.floor(d.min() / 0.001) * 0.001, abs=1e-9) and cal.suggested > 0.18
    assert cal.more_faces_needed == 0 and cal.reason.startswith("looser")
    [nearest] = fpir_at(nameable_scores(RULE.matcher(snap), impostors), 4000, [d.min() + 1e-5])
    assert nearest.named == 1 and nearest.upper > 1e-3  # one more step would name the nearest stranger
    # at 1e-2 more may be named: the threshold sits below the (allowed + 1)-th nearest stranger
    loose = calibrate(snap, RULE, impostors=impostors, target_fpir=0.01)
    allowed = int(np.nonzero(fpir_upper(np.arange(100), 4000) <= 0.01)[0].max())
    assert loose.suggested < np.sort(d)[allowed] <= loose.suggested + 0.0011
    assert loose.at_suggested.named == allowed and loose.at_suggested.upper <= 0.01
    # five strangers inside the current threshold: the evidence asks for a tighter rule
    close = np.concatenate([impostors, [at_distance(2, x, rng) for x in (0.1005, 0.11, 0.12, 0.15, 0.17)]])
    tight = calibrate(snap, RULE, impostors=close)
    assert tight.supported and tight.suggested == pytest.approx(0.1) and tight.reason.startswith("tighter")
    assert tight.at_current.named == 5 and tight.at_current.upper > 1e-3
    assert threshold_for_fpir(np.zeros(0), 10, 1e-3) is None


@pytest.mark.pure
def test_duplicate_people_are_pairs_within_the_threshold():
    rng = np.random.default_rng(4)
    base = five_people(rng)
    twin = at_distance(2, 0.04, rng)  # "p2b" is p2 again
    snap = snapshot([*base.names, "p2b", "p9"], [*base.labels.tolist(), 5, 6], [*base.vectors, twin, axis(9)])
    dups = duplicate_people(snap, RULE)
    assert [(x.first, x.second) for x in dups] == [("p2", "p2b")]
    assert dups[0].distance == pytest.approx(min(((base.vectors[base.labels == 2] - twin) ** 2).sum(axis=1)),
                                             abs=1e-5)
    assert dups[0].message == f"p2 and p2b look like one person ({dups[0].distance:.3f}): merge or remove one"
    assert duplicate_people(snap, replace(RULE, threshold=0.03)) == [] and duplicate_people(base, RULE) == []
    # the rule names p2b's sample p2 even when the 1:1 "same person" distance is smaller, and the other way
    assert duplicate_people(snap, RULE, same_person=0.01) == dups
    assert duplicate_people(snap, replace(RULE, threshold=0.01), same_person=0.18) == dups
    # with a margin test and centroids, p2b's sample is still named p2
    assert duplicate_people(snap, MatchRule(0.085, 0.6, "centroid"), same_person=0.01) == dups
    assert calibrate(snap, RULE).duplicates == dups and isinstance(dups[0], Duplicate)


def new_samples(vectors: list[np.ndarray], names: list[str]) -> list[NewSample]:
    return [NewSample(v, "dlib", VERSION, n, 100, 100.0) for v, n in zip(vectors, names, strict=True)]


@pytest.mark.pure
def test_identity_warnings_on_known_geometry():
    rng = np.random.default_rng(5)
    snap = five_people(rng)
    # a photo of p3 added to p1 (who has two samples): looks like p3
    [w] = identity_warnings("p1", new_samples([at_distance(3, 0.06, rng)], ["x.jpg"]), snap, RULE, 0.18)
    assert re.fullmatch(r"these photos look like p3 \(0\.060\), not p1, nearest p1 sample [12]\.\d{3}: x\.jpg", w), w
    # a new name whose photos all lie on p4: a duplicate identity naming p4 (and no separate look-like warning)
    [w] = identity_warnings("p4bis", new_samples([at_distance(4, 0.03, rng), at_distance(4, 0.07, rng)],
                                                 ["a.jpg", "b.jpg"]), snap, RULE, 0.18)
    assert w.startswith("p4bis and p4 look like one person (0.0") and "p4 is already enrolled" in w
    # a new person's second photo is nobody's: far from their first one
    first, second = axis(7), at_distance(7, 0.5, rng, slice(10, 11))
    out = identity_warnings("new", new_samples([first, second], ["1.jpg", "2.jpg"]), snap, RULE, 0.18)
    assert out == [f"{s} is far from new's other samples (0.500 > threshold 0.180): another person or a bad photo?"
                   for s in ("1.jpg", "2.jpg")]
    # an ordinary second photo of p0: nothing to say; nor without a gallery
    assert identity_warnings("p0", new_samples([at_distance(0, 0.08, rng)], ["ok.jpg"]), snap, RULE, 0.18) == []
    assert identity_warnings("p0", new_samples([axis(0)], ["ok.jpg"]), None, RULE, 0.18) == []
    # the door rule (centroid, margin) names the photo p3 though the 1:1 distance is stricter: still a warning
    [w] = identity_warnings("p1", new_samples([at_distance(3, 0.06, rng)], ["y.jpg"]), snap,
                            MatchRule(0.085, 0.6, "centroid"), 0.01)
    assert w.startswith("these photos look like p3 (0.060), not p1")


# ---- real photos through the CLI ----

def g(path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("--gallery", str(path), *args, env=env)


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("edged: error: ")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def state(path: Path) -> tuple:
    """People, samples and vectors a user could observe, and the change counter."""
    with Gallery(path, create=False) as gal:
        snap = gal.snapshot(VERSION)
        return ([(p.name, p.display_name, p.samples, p.updated) for p in gal.people()],
                [(s.id, s.source) for s in gal.samples()], snap.names, snap.labels.tolist(), snap.vectors.tobytes(),
                gal.change_counter())


def one_image_people(lfw_dir: Path, count: int) -> list[Path]:
    """The photos of the first `count` LFW people (alphabetical) with a single photo: nobody enrolled here."""
    out = []
    for person in sorted((lfw_dir / "lfw-deepfunneled").iterdir()):
        photos = list(person.iterdir())
        if len(photos) == 1:
            out.append(photos[0])
            if len(out) == count:
                break
    return out


def link_folder(folder: Path, photos: list[Path]) -> Path:
    """A folder of symbolic links to the shared photos (nothing copied)."""
    folder.mkdir(parents=True)
    for photo in photos:
        (folder / photo.name).symlink_to(photo)
    return folder


@pytest.fixture(scope="module")
def knn(tmp_path_factory, shared) -> Path:
    """The five knn_examples/train people, enrolled through the CLI."""
    path = tmp_path_factory.mktemp("knn") / "gallery.db"
    for person in PEOPLE:
        enroll_cli(path, person, TRAIN / person)
    return path


@pytest.fixture(scope="module")
def door(dlib_embedder) -> MatchRule:
    """The rule `edged calibrate` measures with the default config: dlib's door operating point."""
    return MatchRule.of(dlib_embedder, EmbedderConfig(), MatchConfig())


@pytest.fixture
def gallery(knn, tmp_path) -> Path:
    target = tmp_path / "gallery.db"
    shutil.copy2(knn, target)
    return target


def test_few_impostors_refuse_to_loosen(knn, door, lfw_dir, tmp_path):
    folder = link_folder(tmp_path / "strangers", one_image_people(lfw_dir, 12))
    (folder / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    cv2.imwrite(str(folder / "wall.png"), np.full((200, 200, 3), 128, np.uint8))  # a photo without a face
    # --target-far 0.05: the gallery's own pairs would allow a much looser threshold (0.28)
    proc = g(knn, "calibrate", "--json", "--impostors", str(folder), "--target-far", "0.05")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["impostor_faces"] == 12 and out["impostor_photos"]["images"] == 14
    assert {Path(s["source"]).name: s["reason"].split(" (")[0] for s in out["impostor_photos"]["skipped"]} == {
        "junk.jpg": "unreadable", "wall.png": "no face"}
    assert out["rule"] == door.describe() and out["current_threshold"] == door.threshold
    assert out["far_threshold"] > 0.25 > door.threshold
    assert out["suggested_threshold"] <= door.threshold and out["supported"] is False
    assert out["faces_needed"] == 3000 and out["more_faces_needed"] == 2988
    at = out["fpir_at_current"]
    assert at["faces"] == 12 and at["upper"] == pytest.approx(float(beta.ppf(0.95, at["named"] + 1, 12 - at["named"])))
    assert out["duplicates"] == []
    text = g(knn, "calibrate", "--impostors", str(folder))
    assert text.returncode == 0, text.stderr
    assert "2988 more needed (3000 with none named)" in text.stdout
    assert "skipped" in text.stdout and "wall.png: no face" in text.stdout
    assert "probable duplicate identities: none" in text.stdout
    assert f"current threshold {door.threshold:.3f}: {at['named']} of 12 impostor faces named, FPIR " in text.stdout
    assert "at 95% (Clopper-Pearson)" in text.stdout
    # a loose configured rule (0.3, no margin test) names most of these strangers: the suggestion tightens below
    # them all
    config = tmp_path / "edged.yaml"
    config.write_text("device_id: test\ncamera:\n  source: 0\nembedder:\n  threshold: 0.3\nmatch:\n  margin: false\n")
    loose = json.loads(g(knn, "calibrate", "--json", "--impostors", str(folder),
                         env={"EDGED_CONFIG": str(config)}).stdout)
    assert loose["rule"]["threshold"] == 0.3 and loose["rule"]["max_ratio"] is None
    assert loose["current_threshold"] == 0.3 and loose["fpir_at_current"]["named"] >= 6
    assert loose["suggested_threshold"] < 0.3 and loose["fpir_at_suggested"]["named"] == 0
    assert loose["reason"].startswith("tighter")


@pytest.mark.slow
def test_many_impostors_give_fpir_with_a_bound(knn, door, lfw_dir, tmp_path):
    folder = link_folder(tmp_path / "strangers", one_image_people(lfw_dir, 200))
    proc = g(knn, "calibrate", "--json", "--impostors", str(folder), "--target-fpir", "0.02")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    n = out["impostor_faces"]
    assert n + len(out["impostor_photos"]["skipped"]) == 200 and n >= 190
    for f in [out["fpir_at_current"], out["fpir_at_suggested"], *out["fpir_curve"]]:
        k = f["named"]
        assert f["faces"] == n and f["fpir"] == pytest.approx(k / n)
        assert f["upper"] == pytest.approx(float(beta.ppf(0.95, k + 1, n - k)) if k else 1 - 0.05 ** (1 / n))
        assert f["rule_of_three"] == (pytest.approx(3 / n) if k == 0 else None)
    named = [f["named"] for f in out["fpir_curve"]]
    assert named == sorted(named) and named[-1] > 0  # more strangers named as the threshold loosens
    # enough faces for 0.02: the suggestion is backed by its bound, and is the largest threshold that is
    assert out["supported"] is True and out["fpir_at_suggested"]["upper"] <= 0.02
    assert all(f["upper"] > 0.02 for f in out["fpir_curve"] if f["threshold"] > out["suggested_threshold"])
    if out["fpir_at_current"]["upper"] > 0.02:
        assert out["suggested_threshold"] < door.threshold
    else:
        assert out["suggested_threshold"] >= door.threshold


def test_one_person_under_two_names(gallery, lfw_dir):
    blair = sorted((lfw_dir / "lfw-deepfunneled" / "Tony_Blair").iterdir())
    enroll_cli(gallery, "alice", *blair[0:3])
    proc = enroll_cli(gallery, "alice2", *blair[4:7])
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: alice2 and alice look like one person (0.")
    assert "alice is already enrolled; merge or remove one" in warnings[0]
    assert "added 3 samples for alice2" in proc.stdout
    out = json.loads(g(gallery, "calibrate", "--json").stdout)
    [dup] = out["duplicates"]
    assert (dup["first"], dup["second"]) == ("alice", "alice2") and dup["distance"] <= 0.18
    with Gallery(gallery, create=False) as gal:
        snap = gal.snapshot(VERSION)
    a, b = (snap.vectors[snap.labels == snap.names.index(n)] for n in ("alice", "alice2"))
    assert dup["distance"] == pytest.approx(((a[:, None] - b[None]) ** 2).sum(axis=2).min(), abs=1e-5)
    text = g(gallery, "calibrate")
    assert f"  alice and alice2 look like one person ({dup['distance']:.3f}): merge or remove one" in text.stdout


def test_photo_of_someone_else_warns_and_strict_refuses(gallery):
    before = state(gallery)
    proc = g(gallery, "enroll", "--strict", "biden", str(TEST / "obama1.jpg"))
    assert proc.returncode == 1
    assert "warning: these photos look like obama (0.0" in proc.stdout and "not biden" in proc.stdout
    assert "stored nothing for biden" in proc.stdout
    one_line_error(proc, "--strict", "nothing stored")
    assert state(gallery) == before
    # an ordinary further photo of obama: no warning
    proc = g(gallery, "enroll", "obama", str(TEST / "obama_and_biden.jpg"), "--largest")
    assert proc.returncode == 0, proc.stderr
    assert "warning:" not in proc.stdout
    # without --strict the user decides: stored, with the warning in --json
    proc = g(gallery, "enroll", "--json", "biden", str(TEST / "obama1.jpg"))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["added"] == 1 and out["refused"] is False
    [warning] = out["warnings"]
    assert re.fullmatch(r"these photos look like obama \(0\.\d{3}\), not biden, nearest biden sample 0\.\d{3}: "
                        r"obama1\.jpg", warning), warning
    with Gallery(gallery, create=False) as gal:
        assert gal.person("biden").samples == 3


def test_outlier_photo_warns(tmp_path, lfw_dir):
    lfw = lfw_dir / "lfw-deepfunneled"
    path = tmp_path / "gallery.db"
    proc = enroll_cli(path, "carol", lfw / "Colin_Powell" / "Colin_Powell_0001.jpg",
                      lfw / "George_W_Bush" / "George_W_Bush_0001.jpg")
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2
    assert all("is far from carol's other samples (" in w and "another person or a bad photo?" in w
               for w in warnings)
    proc = g(path, "enroll", "--strict", "dave", str(lfw / "Colin_Powell" / "Colin_Powell_0002.jpg"),
             str(lfw / "Colin_Powell" / "Colin_Powell_0003.jpg"))
    # two photos of Colin Powell under a new name, and carol holds one: a probable duplicate of carol
    assert proc.returncode == 1 and "warning: dave and carol look like one person" in proc.stdout
    with Gallery(path, create=False) as gal:
        assert [p.name for p in gal.people()] == ["carol"]
