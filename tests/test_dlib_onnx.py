"""dlib's face ResNet on ONNX Runtime: read from dlib's own model file, the same descriptors as dlib on real faces."""

from __future__ import annotations

import logging
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from edged.embed import dlib_onnx
from edged.embed.dlib_onnx import DlibModelError, load_runner, parse_resnet, read_resnet
from edged.embed.dlib_resnet import DlibResNetEmbedder
from edged.errors import EdgedError
from edged.vision import dlib_files
from edged.vision.imageio import load_image
from tests.conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def reference():
    import dlib

    return dlib.face_recognition_model_v1(dlib_files.model_path(dlib_files.RESNET))


@pytest.fixture(scope="module")
def chips(openface_dir: Path, fr_dir: Path, dlib_pipeline) -> np.ndarray:
    """dlib chips of real faces: OpenFace's and face_recognition's example photos (16 faces)."""
    out = []
    for path in sorted(openface_dir.glob("*.jpg")) + sorted(fr_dir.glob("*.jpg")):
        out += [f.crop for f in dlib_pipeline.process(load_image(path))]
    assert len(out) >= 12
    return np.stack(out[:16])


def _own(reference, chips: np.ndarray) -> np.ndarray:
    return np.array([np.asarray(v) for v in reference.compute_face_descriptor(list(chips))], np.float32)


def test_the_network_read_from_dlibs_file_reproduces_dlib_on_real_faces(reference, chips, tmp_path: Path) -> None:
    net = read_resnet(dlib_files.model_path(dlib_files.RESNET))
    assert net.size == 150 and np.allclose(net.mean_rgb, (122.782, 117.001, 104.298), atol=1e-3)
    assert [layer.kind for layer in net.layers[:4]] == ["con", "affine", "relu", "max_pool"]
    assert net.layers[0].shape == (32, 3, 7, 7, 2, 0) and net.layers[-1].shape == (256, 128)
    runner = load_runner(dlib_files.model_path(dlib_files.RESNET), lambda: reference, tmp_path / "cache", threads=2)
    expected = _own(reference, chips)
    batch = runner.run(chips)
    singles = np.concatenate([runner.run(chips[i:i + 1]) for i in range(len(chips))])
    assert batch.shape == (len(chips), 128)
    assert float(np.abs(batch - expected).max()) < 1e-5
    assert float(np.abs(singles - expected).max()) < 1e-5
    norms = np.linalg.norm(batch, axis=1)  # raw descriptors, as dlib returns them
    assert norms.min() > 1.1 and norms.max() < 1.8, norms


def test_the_embedder_defaults_to_onnxruntime_with_dlibs_embeddings(chips, tmp_path: Path) -> None:
    fast = DlibResNetEmbedder(cache_dir=tmp_path / "cache")
    own = DlibResNetEmbedder(backend="dlib")
    assert fast.backend == "onnxruntime" and own.backend == "dlib"
    a, b = fast.embed(chips), own.embed(chips)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert float(np.abs(a - b).max()) < 1e-5
    assert fast.version == own.version and fast.cache_version == own.cache_version  # galleries and caches stay valid


def test_the_export_is_cached_private_and_a_corrupt_one_is_rebuilt(reference, tmp_path: Path, caplog) -> None:
    cache = tmp_path / "models" / "cache"
    model = dlib_files.model_path(dlib_files.RESNET)
    first = load_runner(model, lambda: reference, cache, threads=1)
    digest = dlib_onnx.file_digest(model)
    export, opt = dlib_onnx.cache_path(cache, digest), dlib_onnx.optimized_path(cache, digest)
    assert sorted(cache.iterdir()) == sorted([export, opt])  # the export and ORT's form of it for this machine
    for path in (export, opt):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    assert first.optimized  # the sessions run the optimised form (the weights once in memory)
    built = export.read_bytes()
    mtime = export.stat().st_mtime_ns

    def no_dlib():
        raise AssertionError("a cached export is checked against the descriptors it recorded, not against dlib")

    again = load_runner(model, no_dlib, cache, threads=1)
    assert export.stat().st_mtime_ns == mtime and again.optimized  # reused, not rebuilt
    probes = dlib_onnx.probe_chips(2)
    assert float(np.abs(again.run(probes) - _own(reference, probes)).max()) < 1e-5
    opt.write_bytes(b"not an onnx file")  # a damaged optimised form is remade from the export
    with caplog.at_level(logging.WARNING, "edged.embed.dlib_onnx"):
        remade = load_runner(model, no_dlib, cache, threads=1)
    assert "stored optimised form not usable" in caplog.text and "making it again" in caplog.text
    assert remade.optimized and opt.stat().st_size > 1_000_000
    assert float(np.abs(remade.run(probes) - _own(reference, probes)).max()) < 1e-5
    caplog.clear()
    export.write_bytes(built[: len(built) // 3])
    with caplog.at_level(logging.WARNING, "edged.embed.dlib_onnx"):
        runner = load_runner(model, lambda: reference, cache, threads=1)
    assert "cached dlib export not usable" in caplog.text and "rebuilding" in caplog.text
    assert export.read_bytes() == built  # the same export again
    assert runner.run(dlib_onnx.probe_chips(1)).shape == (1, 128)


def test_other_or_damaged_model_files_are_refused_in_one_line(tmp_path: Path) -> None:
    data = Path(dlib_files.model_path(dlib_files.RESNET)).read_bytes()
    for label, payload in (("truncated", data[: len(data) // 2]), ("empty", b""),
                           ("landmarks", Path(dlib_files.model_path(dlib_files.SHAPE_5)).read_bytes()[:200_000])):
        with pytest.raises(DlibModelError) as err:
            parse_resnet(payload, f"{label}.dat")
        text = str(err.value)
        assert text.startswith(f"{label}.dat: not dlib's face ResNet model") and "\n" not in text, text
    with pytest.raises(DlibModelError, match="cannot read"):
        read_resnet(tmp_path / "missing.dat")


def test_an_export_that_does_not_reproduce_dlib_falls_back_or_fails_in_one_line(chips, tmp_path: Path,
                                                                               monkeypatch, caplog) -> None:
    monkeypatch.setattr(dlib_onnx, "PROBE_TOLERANCE", 0.0)  # no export is exact to the bit: the check fails
    auto = DlibResNetEmbedder(cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.WARNING, "edged.embed.dlib_resnet"):
        assert auto.backend == "dlib"
    assert "using dlib's own code" in caplog.text and "differs from dlib" in caplog.text
    assert auto.embed(chips[:2]).shape == (2, 128)
    with pytest.raises(EdgedError, match=r"embedder\.backend onnxruntime: dlib's ResNet cannot run on ONNX Runtime"):
        DlibResNetEmbedder(backend="onnxruntime", cache_dir=tmp_path / "cache").embed(chips[:1])


def test_a_dlib_daemon_does_not_load_torch(tmp_path: Path) -> None:
    import subprocess

    code = ("import sys, numpy as np; from edged.models.embedders import get_embedder; "
            "e = get_embedder('dlib'); e.embed(np.zeros((1, 150, 150, 3), np.uint8)); "
            "print(e.backend, 'torch' in sys.modules)")
    env = {**os.environ, "EDGED_MODELS": str(tmp_path / "models")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["onnxruntime", "False"], out.stderr[-2000:]


def test_check_config_refuses_a_backend_of_the_other_embedder(tmp_path: Path) -> None:
    cfg = tmp_path / "edged.yaml"
    cfg.write_text("device_id: door\ncamera: {source: 0}\nembedder: {name: dlib, backend: onnxruntime-int8}\n")
    out = run_cli("check-config", str(cfg))
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "embedder.backend" in text and "not a backend of the dlib embedder" in text, text
    cfg.write_text("device_id: door\ncamera: {source: 0}\nembedder: {name: nn4, backend: dlib}\n")
    out = run_cli("check-config", str(cfg))
    assert out.returncode != 0 and "not a backend of the nn4 embedder" in out.stdout + out.stderr
    cfg.write_text("device_id: door\ncamera: {source: 0}\nembedder: {name: dlib, backend: dlib}\n")
    assert run_cli("check-config", str(cfg)).returncode == 0
