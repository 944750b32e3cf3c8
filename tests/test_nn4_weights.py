"""nn4.small2 weight formats: OpenFace .pt state dicts, Torch7 .t7, Keras-OpenFace CSV directories
and the project's own file all load into the same NN4Small2; bad files give one-line errors.

The helpers at the top write random nn4.small2 weights in every format (test_models.py reuses
them). The Torch7 writer builds the module tree that Lua `torch.save` produces for OpenFace's
`nn4.small2.def.lua` (2016-01-08): nn.Sequential of SpatialConvolutionMM, SpatialBatchNormalization,
ReLU, SpatialMaxPooling, SpatialCrossMapLRN, dpnn nn.Inception (a DepthConcat of Sequential
branches; SpatialLPPooling = Square, SpatialAveragePooling, MulConstant(k*k), Sqrt), nn.Reshape,
SpatialAveragePooling, nn.View, nn.Linear, nn.Normalize(2), with the fields those classes carry.
That file is read back by two independent readers (the `torchfile` package and OpenCV's Torch
importer, which also runs the network) as well as by edged.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchfile

from edged.embed.nn4.net import NN4Small2
from edged.embed.nn4.preprocess import to_network_input
from edged.embed.nn4.torch7 import Storage, TorchObject, read_t7, write_t7
from edged.embed.nn4.weights import keras_csv_names, load_nn4, read_keras_csv_dir, read_weights, save_weights
from edged.errors import ModelFileError
from edged.vision.align import OPENFACE_96, FaceAligner
from edged.vision.detect import FaceDetector
from edged.vision.imageio import load_image

F32 = np.float32


def random_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """NN4Small2 weights with PyTorch's default init and plausible BN statistics."""
    torch.manual_seed(seed)
    model = NN4Small2()
    generator = torch.Generator().manual_seed(seed + 1)
    for name, tensor in model.state_dict().items():
        if name.endswith("running_mean"):
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
        elif name.endswith("running_var"):
            tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
        elif name.endswith("num_batches_tracked"):
            tensor.fill_(1000)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.normal_(0, 0.1, generator=generator)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def write_csv_dir(state: dict[str, torch.Tensor], directory: Path) -> Path:
    """The Keras-OpenFace export: one comma-separated row per tensor, Torch order."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem, (key, _) in keras_csv_names().items():
        values = state[key].numpy().astype(np.float64).ravel()
        (directory / f"{stem}.csv").write_text(",".join(map(repr, values.tolist())) + "\n")
    return directory


class _T7Builder:
    def __init__(self, state: dict[str, torch.Tensor], mm: bool, running_std: bool) -> None:
        self.state = {k: v.numpy() for k, v in state.items()}
        self.mm = mm
        self.running_std = running_std

    @staticmethod
    def module(cls: str, **fields: object) -> TorchObject:
        base = {"train": False, "output": np.zeros(0, F32), "gradInput": np.zeros(0, F32),
                "_type": "torch.FloatTensor"}
        return TorchObject(f"nn.{cls}", {**base, **fields})

    def conv(self, key: str, kernel: int, stride: int = 1, pad: int = 0, mm: bool | None = None) -> TorchObject:
        weight = self.state[f"{key}.weight"].astype(F32)
        cout, cin = weight.shape[:2]
        use_mm = self.mm if mm is None else mm
        return self.module(
            "SpatialConvolutionMM" if use_mm else "SpatialConvolution",
            weight=weight.reshape(cout, -1) if use_mm else weight, bias=self.state[f"{key}.bias"].astype(F32),
            gradWeight=np.zeros(0, F32), gradBias=np.zeros(0, F32), nInputPlane=cin, nOutputPlane=cout,
            kW=kernel, kH=kernel, dW=stride, dH=stride, padW=pad, padH=pad, finput=np.zeros(0, F32))

    def bn(self, key: str) -> TorchObject:
        var = self.state[f"{key}.running_var"].astype(np.float64)
        stats = ({"running_std": (1.0 / np.sqrt(var + 1e-5)).astype(F32)} if self.running_std
                 else {"running_var": var.astype(F32)})
        return self.module("SpatialBatchNormalization", weight=self.state[f"{key}.weight"].astype(F32),
                           bias=self.state[f"{key}.bias"].astype(F32),
                           running_mean=self.state[f"{key}.running_mean"].astype(F32), eps=1e-5, momentum=0.1,
                           affine=True, nDim=4, **stats)

    def relu(self) -> TorchObject:
        return self.module("ReLU", threshold=0.0, val=0.0, inplace=False)

    def maxpool(self, k: int, s: int, pad: int = 0) -> TorchObject:
        return self.module("SpatialMaxPooling", kW=k, kH=k, dW=s, dH=s, padW=pad, padH=pad, ceil_mode=False,
                           indices=np.zeros(0, F32))

    def avgpool(self, k: int, s: int) -> TorchObject:
        return self.module("SpatialAveragePooling", kW=k, kH=k, dW=s, dH=s, padW=0, padH=0, ceil_mode=False,
                           count_include_pad=True, divide=True)

    def lppool(self, planes: int, mean_instead_of_sum: bool = False) -> TorchObject:
        inner = [self.module("Square"), self.avgpool(3, 3)]
        if not mean_instead_of_sum:
            inner.append(self.module("MulConstant", constant_scalar=9.0, inplace=False))
        inner.append(self.module("Sqrt", eps=0.0))
        return self.module("SpatialLPPooling", modules=inner, kW=3, kH=3, dW=3, dH=3, nInputPlane=planes)

    def lrn(self) -> TorchObject:
        return self.module("SpatialCrossMapLRN", size=5, alpha=1e-4, beta=0.75, k=1.0, scale=np.zeros(0, F32))

    def seq(self, *modules: TorchObject) -> TorchObject:
        return self.module("Sequential", modules=list(modules))

    def inception(self, block: str, kernels: tuple[int, ...], strides: tuple[int, ...], pool: TorchObject,
                  pool_proj: bool, reduce: bool) -> TorchObject:
        branches = []
        for i, (k, s) in enumerate(zip(kernels, strides, strict=True)):
            p = f"{block}.branches.{i}"
            branches.append(self.seq(self.conv(f"{p}.0", 1, mm=False), self.bn(f"{p}.1"), self.relu(),
                                     self.conv(f"{p}.3", k, s, k // 2, mm=False), self.bn(f"{p}.4"), self.relu()))
        i = len(kernels)
        pool_branch = [pool]
        if pool_proj:
            pool_branch += [self.conv(f"{block}.branches.{i}.1", 1, mm=False), self.bn(f"{block}.branches.{i}.2"),
                            self.relu()]
        branches.append(self.seq(*pool_branch))
        if reduce:
            p = f"{block}.branches.{i + 1}"
            branches.append(self.seq(self.conv(f"{p}.0", 1, mm=False), self.bn(f"{p}.1"), self.relu()))
        concat = self.module("DepthConcat", modules=branches, dimension=2, outputSize=Storage(np.zeros(4, np.int64)))
        # dpnn keeps the pool and the transfer module as fields too (written after `modules`)
        return self.module("Inception", modules=[concat], depthConcat=concat, pool=pool, transfer=self.relu(),
                           kernelSize=list(kernels), kernelStride=list(strides), padding=True, batchNorm=True)

    def reshape(self, *size: int) -> TorchObject:
        return self.module("Reshape", size=Storage(np.array(size, np.int64)), nelement=int(np.prod(size)),
                           batchsize=Storage(np.array((1, *size), np.int64)), batchMode=True)

    def build(self, lp_mean: bool = False, pool_3b: str = "lp") -> TorchObject:
        pool_3b_module = self.maxpool(3, 2) if pool_3b == "max" else self.lppool(256, lp_mean)
        return self.seq(
            self.conv("conv1", 7, 2, 3), self.bn("bn1"), self.relu(), self.maxpool(3, 2, 1), self.lrn(),
            self.conv("conv2", 1), self.bn("bn2"), self.relu(),
            self.conv("conv3", 3, 1, 1), self.bn("bn3"), self.relu(), self.lrn(), self.maxpool(3, 2, 1),
            self.inception("incept3a", (3, 5), (1, 1), self.maxpool(3, 2), True, True),
            self.inception("incept3b", (3, 5), (1, 1), pool_3b_module, True, True),
            self.inception("incept3c", (3, 5), (2, 2), self.maxpool(3, 2), False, False),
            self.inception("incept4a", (3, 5), (1, 1), self.lppool(640, lp_mean), True, True),
            self.inception("incept4e", (3, 5), (2, 2), self.maxpool(3, 2), False, False),
            self.inception("incept5a", (3,), (1,), self.lppool(960, lp_mean), True, True),
            self.reshape(736, 3, 3),
            self.inception("incept5b", (3,), (1,), self.maxpool(3, 2), True, True),
            self.avgpool(3, 1),
            self.reshape(736),
            self.module("View", size=Storage(np.array([736], np.int64)), numElements=736, numInputDims=1),
            self.module("Linear", weight=self.state["ln.weight"].astype(F32), bias=self.state["ln.bias"].astype(F32),
                        gradWeight=np.zeros(0, F32), gradBias=np.zeros(0, F32)),
            self.module("Normalize", p=2.0, eps=1e-10),
        )


def nn4_t7_model(state: dict[str, torch.Tensor], mm: bool = True, running_std: bool = False,
                 lp_mean: bool = False, pool_3b: str = "lp") -> TorchObject:
    """The Torch7 module tree of nn4.small2 holding `state`; options build deliberately wrong variants."""
    return _T7Builder(state, mm, running_std).build(lp_mean=lp_mean, pool_3b=pool_3b)


def write_t7_file(state: dict[str, torch.Tensor], path: Path, **options: object) -> Path:
    path.write_bytes(write_t7(nn4_t7_model(state, **options)))  # type: ignore[arg-type]
    return path


# ---- tests ----



@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return random_state_dict(0)


@pytest.fixture(scope="module")
def t7_file(state, tmp_path_factory) -> Path:
    return write_t7_file(state, tmp_path_factory.mktemp("t7") / "nn4.small2.t7")


@pytest.fixture(scope="module")
def csv_dir(state, tmp_path_factory) -> Path:
    return write_csv_dir(state, tmp_path_factory.mktemp("csv") / "weights")


@pytest.fixture(scope="module")
def real_faces(openface_dir) -> np.ndarray:
    """Aligned 96x96 crops of real faces (OpenFace's example photos)."""
    detector, aligner = FaceDetector("hog", upsample=0), FaceAligner(OPENFACE_96)
    crops = []
    for name in ("lennon-1", "clapton-1", "carell", "adams"):
        image = load_image(openface_dir / f"{name}.jpg")
        crops.append(aligner.align(image, detector.detect(image)[0]))
    return np.stack(crops)


def _embed(model: NN4Small2, faces: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(to_network_input(faces))).numpy()


def test_t7_reads_back_exactly_and_torchfile_agrees(state, t7_file):
    loaded = read_weights(t7_file)
    assert loaded.fmt == "t7"
    for key, value in state.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(loaded.state_dict[key], value), key
    # an independent reader sees the same module tree and the same numbers
    tree = torchfile.load(str(t7_file))
    top = [m._typename.decode() for m in tree.modules]
    assert top[:5] == ["nn.SpatialConvolutionMM", "nn.SpatialBatchNormalization", "nn.ReLU",
                       "nn.SpatialMaxPooling", "nn.SpatialCrossMapLRN"]
    assert top.count("nn.Inception") == 7 and top[-2:] == ["nn.Linear", "nn.Normalize"]
    np.testing.assert_array_equal(tree.modules[0].weight, state["conv1.weight"].numpy().reshape(64, -1))
    lppool = tree.modules[14].modules[0].modules[2].modules[0]  # 3b: Inception > DepthConcat > pool branch
    assert lppool._typename == b"nn.SpatialLPPooling"
    assert [m._typename for m in lppool.modules] == [b"nn.Square", b"nn.SpatialAveragePooling",
                                                      b"nn.MulConstant", b"nn.Sqrt"]


def test_opencv_runs_the_t7_file_like_nn4small2(state, t7_file, real_faces, tmp_path):
    """OpenCV's Torch importer is an independent implementation of Torch7 semantics (LPPooling,
    CrossMapLRN, DepthConcat padding, Normalize): on the same weights it must match NN4Small2."""
    model = NN4Small2()
    model.load_state_dict(state)
    ours = _embed(model, real_faces)
    net = cv2.dnn.readNetFromTorch(str(t7_file))
    net.setInput(to_network_input(real_faces))
    theirs = net.forward()
    assert theirs.shape == (4, 128)
    np.testing.assert_allclose(theirs, ours, atol=1e-5)  # measured: 1e-7
    # the comparison can fail: an L2 pool over the window *mean* changes OpenCV's output (measured 4e-3)
    wrong = write_t7_file(state, tmp_path / "mean.t7", lp_mean=True)
    net = cv2.dnn.readNetFromTorch(str(wrong))
    net.setInput(to_network_input(real_faces))
    assert np.abs(net.forward() - ours).max() > 1e-3


def test_every_format_gives_the_same_embeddings(state, t7_file, csv_dir, real_faces, tmp_path):
    openface_pt = tmp_path / "openface.pt"
    torch.save({k: v.clone() for k, v in state.items()}, openface_pt)  # what OpenFace's port saves
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, checkpoint)
    t7_plain = write_t7_file(state, tmp_path / "conv.t7", mm=False, running_std=True)  # older nn: running_std
    own = tmp_path / "own.pt"
    save_weights(own, state, name="random", threshold=0.5, alignment=OPENFACE_96.name)
    reference = _embed(load_nn4(openface_pt), real_faces)
    assert np.allclose(np.linalg.norm(reference, axis=1), 1, atol=1e-5)
    for path in (checkpoint, t7_file, csv_dir, own):
        np.testing.assert_array_equal(_embed(load_nn4(path), real_faces), reference, err_msg=str(path))
    np.testing.assert_allclose(_embed(load_nn4(t7_plain), real_faces), reference, atol=1e-5)


def test_own_format_meta_half_precision_and_permissions(state, real_faces, tmp_path):
    path = tmp_path / "half.pt"
    save_weights(path, state, name="tiny", threshold=0.7, alignment=OPENFACE_96.name, half=True, source="x.t7")
    assert (path.stat().st_mode & 0o777) == 0o600
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == "edged-nn4" and raw["state_dict"]["conv1.weight"].dtype == torch.float16
    loaded = read_weights(path)
    assert loaded.fmt == "edged" and loaded.meta == {"name": "tiny", "threshold": 0.7,
                                                     "alignment": OPENFACE_96.name, "source": "x.t7"}
    assert loaded.state_dict["conv1.weight"].dtype == torch.float32
    assert torch.equal(loaded.state_dict["ln.weight"], state["ln.weight"].half().float())
    full = NN4Small2()
    full.load_state_dict(state)
    np.testing.assert_allclose(_embed(load_nn4(path), real_faces), _embed(full, real_faces), atol=5e-3)
    assert not list(tmp_path.glob(".*.tmp"))


def test_csv_directory_names_every_missing_file(state, csv_dir, tmp_path):
    directory = Path(shutil.copytree(csv_dir, tmp_path / "csv"))
    for stem in ("inception_4a_pool_bn_v", "dense_b"):
        (directory / f"{stem}.csv").unlink()
    (directory / "inception_5a_3x3_conv2_m.csv").write_text("1,2,3\n")  # strays of the original export are ignored
    with pytest.raises(ModelFileError) as err:
        read_weights(directory)
    assert "2 of 224 files missing" in str(err.value)
    assert "inception_4a_pool_bn_v.csv" in str(err.value) and "dense_b.csv" in str(err.value)
    partial, missing = read_keras_csv_dir(directory, allow_missing=True)
    assert missing == ["dense_b.csv", "inception_4a_pool_bn_v.csv"]
    assert "ln.bias" not in partial and torch.equal(partial["ln.weight"], state["ln.weight"])


def test_csv_bad_values_name_the_file(csv_dir, tmp_path):
    directory = Path(shutil.copytree(csv_dir, tmp_path / "csv"))
    (directory / "bn1_m.csv").write_text("0.1,zero,0.3\n")
    with pytest.raises(ModelFileError, match=r"bn1_m\.csv: not a comma-separated list of numbers"):
        read_weights(directory)
    (directory / "bn1_m.csv").write_text(",".join(["0.5"] * 63) + "\n")
    with pytest.raises(ModelFileError, match=r"bn1_m\.csv: expected 64 values, found 63"):
        read_weights(directory)


def test_t7_errors_name_the_layer(state, t7_file, tmp_path):
    truncated = tmp_path / "truncated.t7"
    truncated.write_bytes(t7_file.read_bytes()[: t7_file.stat().st_size // 2])
    with pytest.raises(ModelFileError, match=r"truncated\.t7: not a valid Torch7 file: truncated or corrupt"):
        read_weights(truncated)
    wrong = dict(state)
    wrong["incept3a.branches.0.3.weight"] = torch.zeros(128, 96, 3, 2)
    with pytest.raises(ModelFileError, match=r"incept3a\.branches\.0\.3: weight has shape \(128, 96, 3, 2\), "
                                             r"expected \(128, 96, 3, 3\)"):
        read_weights(write_t7_file(wrong, tmp_path / "shape.t7", mm=False))
    with pytest.raises(ModelFileError, match=r"not nn4\.small2 at layer \d+ .*SpatialMaxPooling.*"
                                             r"expected \('l2pool'.*incept3b\.branches\.2\.0"):
        read_weights(write_t7_file(state, tmp_path / "max.t7", pool_3b="max"))
    with pytest.raises(ModelFileError, match=r"window scale 0\.111111 \(nn4\.small2 needs p=2 and the sum\)"):
        read_weights(write_t7_file(state, tmp_path / "mean.t7", lp_mean=True))


def test_pt_errors(state, tmp_path):
    bad_shape = dict(state)
    bad_shape["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(bad_shape, tmp_path / "shape.pt")
    with pytest.raises(ModelFileError, match=r"shape\.pt: wrong shapes: conv1\.weight expected \(64, 3, 7, 7\) "
                                             r"got \(64, 3, 5, 5\)"):
        read_weights(tmp_path / "shape.pt")
    torch.save({k: v for k, v in state.items() if k != "ln.weight"}, tmp_path / "missing.pt")
    with pytest.raises(ModelFileError, match=r"incomplete nn4\.small2 weights: missing ln\.weight"):
        read_weights(tmp_path / "missing.pt")
    torch.save({**state, "fc.weight": torch.zeros(2)}, tmp_path / "extra.pt")
    with pytest.raises(ModelFileError, match=r"unexpected entries fc\.weight"):
        read_weights(tmp_path / "extra.pt")
    nan = dict(state)
    nan["bn2.bias"] = torch.full((64,), float("nan"))
    torch.save(nan, tmp_path / "nan.pt")
    with pytest.raises(ModelFileError, match=r"bn2\.bias: contains NaN"):
        read_weights(tmp_path / "nan.pt")
    good = tmp_path / "good.pt"
    torch.save(state, good)
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:100_000])
    with pytest.raises(ModelFileError, match=r"cut\.pt: not a loadable PyTorch weights file"):
        read_weights(tmp_path / "cut.pt")


class _Exploit:
    """A pickle payload that would create a file if unpickled without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"conv1.weight": _Exploit(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ModelFileError, match=r"evil\.pt: not a loadable PyTorch weights file"):
        read_weights(tmp_path / "evil.pt")
    assert not marker.exists()


def test_unknown_and_empty_files(tmp_path):
    (tmp_path / "empty.t7").write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"empty\.t7: empty file"):
        read_weights(tmp_path / "empty.t7")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelFileError, match=r"notes\.txt: unknown weights format"):
        read_weights(tmp_path / "notes.txt")
    with pytest.raises(ModelFileError, match=r"nothing\.pt: no such file"):
        read_weights(tmp_path / "nothing.pt")


def _i32(v: int) -> bytes:
    return struct.pack("<i", v)


def _i64(*vs: int) -> bytes:
    return struct.pack(f"<{len(vs)}q", *vs)


def _str(s: str) -> bytes:
    return _i32(len(s)) + s.encode()


def test_torch7_reader_shared_storage_versions_and_back_references(tmp_path):
    """Hand-assembled bytes as Lua writes them after getParameters(): two tensors viewing one
    flattened storage at offsets, a version-less legacy object, a 'V 2' class and a back-reference."""
    storage = _i32(4) + _i32(3) + _str("V 1") + _str("torch.FloatStorage") + _i64(10) + struct.pack(
        "<10f", *range(10))
    tensor_a = _i32(4) + _i32(2) + _str("V 1") + _str("torch.FloatTensor") + _i32(2) + _i64(2, 3) + _i64(3, 1) + \
        _i64(2) + storage  # offset 2 (1-based): elements 1..6
    tensor_b = _i32(4) + _i32(4) + _str("V 1") + _str("torch.FloatTensor") + _i32(1) + _i64(3) + _i64(1) + \
        _i64(8) + _i32(4) + _i32(3)  # back-reference to storage 3: elements 7..9
    bn_fields = _i32(3) + _i32(6) + _i32(2) + _i32(2) + _str("weight") + tensor_a + _i32(2) + _str("eps") + \
        _i32(1) + struct.pack("<d", 1e-5)
    bn = _i32(4) + _i32(5) + _str("V 2") + _str("nn.SpatialBatchNormalization") + bn_fields
    legacy = _i32(4) + _i32(7) + _str("nn.ReLU") + _i32(3) + _i32(8) + _i32(0)  # no "V n" string
    top = _i32(3) + _i32(1) + _i32(4) + _i32(2) + _str("bn") + bn + _i32(2) + _str("b") + tensor_b + \
        _i32(2) + _str("relu") + legacy + _i32(2) + _str("again") + _i32(4) + _i32(5)
    path = tmp_path / "hand.t7"
    path.write_bytes(top)
    ours = read_t7(path)
    assert ours["bn"].class_name == "nn.SpatialBatchNormalization" and ours["bn"].version == 2
    np.testing.assert_array_equal(ours["bn"].fields["weight"], [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(ours["b"], [7, 8, 9])
    assert ours["relu"].class_name == "nn.ReLU" and ours["relu"].version == 0
    assert ours["again"] is ours["bn"]
    theirs = torchfile.load(str(path))
    np.testing.assert_array_equal(theirs[b"bn"].weight, ours["bn"].fields["weight"])
    np.testing.assert_array_equal(theirs[b"b"], ours["b"])
    with pytest.raises(ModelFileError, match=r"hand\.t7: not a valid Torch7 file: truncated"):
        read_t7(top[:-3], name=str(path))
    with pytest.raises(ModelFileError, match=r"unknown type tag 9"):
        read_t7(_i32(9))
    bad_offset = top.replace(_i64(8) + _i32(4) + _i32(3), _i64(9) + _i32(4) + _i32(3))
    with pytest.raises(ModelFileError, match=r"needs element 10 of 10"):
        read_t7(bad_offset)


def test_torchfile_falls_short_on_hostile_files_so_edged_keeps_its_reader(tmp_path):
    """Why edged reads .t7 itself instead of with `torchfile`: on a corrupt or hostile file torchfile
    either tries to allocate what the file claims (a storage of 2^40 floats: 4 TiB) or silently returns a
    truncated string; edged's reader refuses both with one line naming the file, before allocating."""
    huge_storage = _i32(4) + _i32(1) + _str("V 1") + _str("torch.FloatStorage") + _i64(1 << 40) + b"\0" * 64
    truncated_string = _i32(2) + _i32(1 << 30) + b"abc"
    for name, data in (("storage.t7", huge_storage), ("string.t7", truncated_string)):
        (tmp_path / name).write_bytes(data)
    with pytest.raises(MemoryError):
        torchfile.load(str(tmp_path / "storage.t7"))
    assert torchfile.load(str(tmp_path / "string.t7")) == b"abc"  # 3 of 2^30 bytes, no error
    for name in ("storage.t7", "string.t7"):
        with pytest.raises(ModelFileError, match=rf"{name}: not a valid Torch7 file: truncated"):
            read_t7(tmp_path / name)
