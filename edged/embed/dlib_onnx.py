"""dlib's face ResNet on ONNX Runtime: the network read from dlib's own model file, written as an ONNX graph.

dlib runs `dlib_face_recognition_resnet_model_v1.dat` on one core without BLAS (~80 ms a face here, holding
Python's GIL). The same network on ONNX Runtime takes ~4-5 ms a face on one core and gives the same descriptors
(max abs difference ~3e-7 on real chips), so galleries, thresholds and the face cache stay valid.

* `read_resnet(path)` parses dlib's serialisation of the network (dlib/dnn: `add_layer` versions, then the
  input layer, then each layer's details bottom-up, each followed by its `add_layer` state: three flags and
  three empty tensors). Integers are dlib's packed form (a control byte: byte count, 0x80 = negative; then
  little-endian bytes), floats a packed mantissa and exponent, tensors a version, 4 dimensions and raw
  little-endian float32. Only the layers this network uses are understood; anything else is an error naming
  the file and the byte offset.
* `build_onnx(net)` writes the graph with `onnx.helper` (no torch): uint8 RGB chips (N, 150, 150, 3) ->
  `(x - dlib's channel means) / 256` -> 29 convolutions, each with its following `affine` (inference batch norm)
  folded in -> dlib's residual blocks (`add_prev`: the sum over the larger of the two shapes, the smaller one
  zero-padded at the end, as dlib's `tt::add` does) -> global average -> the 128-d `fc_no_bias`. Raw
  descriptors out (norm ~1.4), as `dlib.face_recognition_model_v1.compute_face_descriptor` returns them.
* `load_runner(path, reference, cache_dir)` checks a fresh export against dlib itself on probe chips and caches
  it in `<models dir>/cache/` under the model file's sha256 and the recipe version (0600, written atomically),
  with dlib's descriptors of the probe chips in its metadata; a cached export is checked against those at every
  load (dlib's model is not loaded then): one that does not reproduce them is rebuilt; a fresh one that does not
  reproduce dlib raises `ExportCheckError` (the embedder then falls back to dlib's own code and says so).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edged.embed.ort_runner import INPUT_NAME, OrtRunner, machine_key, optimize_for_this_machine
from edged.errors import EdgedError
from edged.fileio import write_private_cache

log = logging.getLogger(__name__)

#: Bumped whenever the graph or its preprocessing changes: part of every cached export's name and metadata.
RECIPE_VERSION = 1
OPSET = 17
OUTPUT_NAME = "descriptors"
CHIP_SIZE = 150
#: Largest max-abs difference to dlib's own descriptors accepted on the probe chips (they differ by ~3e-7).
PROBE_TOLERANCE = 1e-4
META_SOURCE = "edged.dlib_model_sha256"
META_RECIPE = "edged.recipe"
#: dlib's own descriptors of the probe chips, recorded at build time (hex float32): a cached export is checked
#: against them at every start without loading dlib's model.
META_PROBES = "edged.dlib_probe_descriptors"
PROBES = 2
#: The network's layer counts (dlib_face_recognition_resnet_model_v1): a different file is refused.
EXPECTED_LAYERS = {"con": 29, "affine": 29, "relu": 29, "add_prev": 14, "avg_pool": 5, "max_pool": 1, "fc": 1}


class DlibModelError(EdgedError):
    """dlib's model file cannot be read as the face ResNet."""


class ExportCheckError(Exception):
    """An export does not reproduce dlib's descriptors (internal: triggers a rebuild or the fallback)."""


@dataclass
class Layer:
    """One layer of the network, bottom-up: its kind and, for con/affine/pool/fc, its parameters."""

    kind: str
    params: np.ndarray | None = None
    #: con: (filters, channels, rows, cols, stride, padding); pools: (rows, cols, stride, padding); fc: (in, out).
    shape: tuple[int, ...] = ()


@dataclass
class ResNet:
    """dlib's face ResNet as read from its file."""

    mean_rgb: tuple[float, float, float]
    size: int
    layers: list[Layer] = field(default_factory=list)


class _Reader:
    def __init__(self, data: bytes, label: str) -> None:
        self.data, self.pos, self.label = data, 0, label

    def fail(self, what: str) -> DlibModelError:
        return DlibModelError(f"{self.label}: not dlib's face ResNet model ({what} at byte {self.pos})")

    def need(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise self.fail("file ends early")

    def int(self) -> int:
        self.need(1)
        control = self.data[self.pos]
        size = control & 0x0F
        if size > 8:
            raise self.fail("bad integer")
        self.pos += 1
        self.need(size)
        value = int.from_bytes(self.data[self.pos:self.pos + size], "little")
        self.pos += size
        return -value if control & 0x80 else value

    def str(self) -> str:
        n = self.int()
        if not 0 <= n <= 64:
            raise self.fail("bad string")
        self.need(n)
        text = self.data[self.pos:self.pos + n].decode("latin-1")
        self.pos += n
        return text

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return float(mantissa) * 2.0 ** exponent

    def ints(self, n: int) -> list[int]:
        return [self.int() for _ in range(n)]

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            raise self.fail("unknown tensor version")
        dims = self.ints(4)
        if min(dims) < 0:
            raise self.fail("bad tensor shape")
        count = int(np.prod(dims))
        self.need(4 * count)
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).astype(np.float32)
        self.pos += 4 * count
        return values

    def layer_state(self) -> None:
        """What `add_layer` writes after a layer's details: three flags ('0'/'1') and three tensors."""
        self.need(3)
        if not set(self.data[self.pos:self.pos + 3]) <= {ord("0"), ord("1")}:
            raise self.fail("bad layer state")
        self.pos += 3
        for _ in range(3):
            self.tensor()


def parse_resnet(data: bytes, label: str = "dlib model") -> ResNet:
    """The network in `data` (the bytes of dlib_face_recognition_resnet_model_v1.dat)."""
    r = _Reader(data, label)
    marker = bytes([1, len("input_rgb_image_sized")]) + b"input_rgb_image_sized"
    start = data.find(marker)
    if start < 0 or not data[:40].count(b"loss_metric"):
        raise r.fail("no loss_metric network with an input_rgb_image_sized input")
    r.pos = start
    r.str()
    mean = (r.float(), r.float(), r.float())
    rows, cols = r.ints(2)
    if rows != cols:
        raise r.fail("input not square")
    net = ResNet(mean, rows)
    while r.pos < len(data):
        while r.pos + 1 < len(data) and data[r.pos] == 1 and data[r.pos + 1] in (1, 2):
            r.pos += 2  # an add_layer / tag version between layers
        if r.pos >= len(data):
            break
        name = r.str()
        if name == "con_4":
            params = r.tensor()
            filters, nr, nc, stride_y, stride_x, pad_y, pad_x = r.ints(7)
            alias = r.ints(5)
            r.ints(5)  # the biases' alias
            for _ in range(4):
                r.float()  # learning-rate and weight-decay multipliers
            channels = alias[2]
            if (stride_y, pad_y) != (stride_x, pad_x) or params.size != filters * (channels * nr * nc + 1):
                raise r.fail("unexpected convolution")
            net.layers.append(Layer("con", params, (filters, channels, nr, nc, stride_y, pad_y)))
        elif name == "affine_":
            params = r.tensor()
            r.ints(10)  # gamma and beta aliases
            if r.int() != 0:
                raise r.fail("affine layer not in conv mode")
            net.layers.append(Layer("affine", params))
        elif name in ("relu_", "add_prev_"):
            net.layers.append(Layer(name[:-1]))
        elif name in ("max_pool_2", "avg_pool_2"):
            nr, nc, stride_y, stride_x, pad_y, pad_x = r.ints(6)
            if (nr, stride_y, pad_y) != (nc, stride_x, pad_x):
                raise r.fail("unexpected pooling")
            net.layers.append(Layer(name[:-2], None, (nr, nc, stride_y, pad_y)))
        elif name == "fc_2":
            outputs, inputs = r.ints(2)
            params = r.tensor()
            r.ints(10)
            if r.int() != 1 or params.size != inputs * outputs:
                raise r.fail("unexpected fully connected layer")
            for _ in range(4):
                r.float()
            net.layers.append(Layer("fc", params, (inputs, outputs)))
        else:
            raise r.fail(f"unsupported layer {name!r}")
        r.layer_state()
    counts = {kind: sum(1 for layer in net.layers if layer.kind == kind) for kind in EXPECTED_LAYERS}
    if counts != EXPECTED_LAYERS or net.size != CHIP_SIZE:
        raise DlibModelError(f"{label}: not dlib's face ResNet model (layers {counts}, input {net.size})")
    return net


def read_resnet(path: str | os.PathLike[str]) -> ResNet:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DlibModelError(f"{path}: cannot read dlib's model ({exc.strerror or exc})") from None
    return parse_resnet(data, str(path))


def build_onnx(net: ResNet, metadata: dict[str, str] | None = None) -> bytes:
    """The ONNX graph of `net` (see the module): uint8 (N, 150, 150, 3) RGB chips -> (N, 128) raw descriptors."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []
    names = iter(range(1_000_000))

    def const(value: np.ndarray, label: str) -> str:
        name = f"{label}_{next(names)}"
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], **attrs: Any) -> str:
        out = f"{op.lower()}_{next(names)}"
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    x = node("Cast", [INPUT_NAME], to=TensorProto.FLOAT)
    x = node("Sub", [x, const(np.array(net.mean_rgb, np.float32).reshape(1, 1, 1, 3), "mean")])
    x = node("Mul", [x, const(np.array(1.0 / 256.0, np.float32), "scale")])
    x = node("Transpose", [x], perm=[0, 3, 1, 2])
    shape = (3, net.size, net.size)  # channels, rows, cols of `x`

    def pad_to(t: str, have: tuple[int, int, int], want: tuple[int, int, int]) -> str:
        if have == want:
            return t
        pads = [0, 0, 0, 0, 0, want[0] - have[0], want[1] - have[1], want[2] - have[2]]
        return node("Pad", [t, const(np.array(pads, np.int64), "pads")])

    layers = net.layers
    block_in: tuple[str, tuple[int, int, int]] | None = None  # the current residual block's input
    branch: tuple[str, tuple[int, int, int]] | None = None  # a down block's convolution branch (dlib's tag2)
    seen_stem = False
    i = 0
    while i < len(layers):
        layer = layers[i]
        if layer.kind == "con":
            if seen_stem and block_in is None:
                block_in = (x, shape)
            filters, channels, nr, nc, stride, pad = layer.shape
            assert layer.params is not None
            weights = layer.params[:filters * channels * nr * nc].reshape(filters, channels, nr, nc)
            bias = layer.params[filters * channels * nr * nc:]
            if i + 1 < len(layers) and layers[i + 1].kind == "affine":  # fold the affine (inference batch norm)
                affine = layers[i + 1].params
                assert affine is not None
                gamma, beta = affine[:filters], affine[filters:]
                weights = weights * gamma[:, None, None, None]
                bias = bias * gamma + beta
                i += 1
            x = node("Conv", [x, const(weights.astype(np.float32), "w"), const(bias.astype(np.float32), "b")],
                     kernel_shape=[nr, nc], strides=[stride, stride], pads=[pad] * 4)
            shape = (filters, (shape[1] + 2 * pad - nr) // stride + 1, (shape[2] + 2 * pad - nc) // stride + 1)
        elif layer.kind == "relu":
            x = node("Relu", [x])
            if i > 0 and layers[i - 1].kind == "add_prev":
                block_in = None  # the block ends with its relu
        elif layer.kind == "max_pool":
            k, _, stride, pad = layer.shape
            x = node("MaxPool", [x], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
            shape = (shape[0], (shape[1] + 2 * pad - k) // stride + 1, (shape[2] + 2 * pad - k) // stride + 1)
            seen_stem = True
        elif layer.kind == "avg_pool":
            k, _, stride, pad = layer.shape
            if k == 0:  # avg_pool_everything
                x = node("ReduceMean", [x], axes=[2, 3], keepdims=0)
                shape = (shape[0], 1, 1)
            else:  # a down block: the pooled block input, to be added to the convolution branch
                if block_in is None:
                    raise DlibModelError("dlib model: pooling outside a residual block")
                branch = (x, shape)
                source, have = block_in
                x = node("AveragePool", [source], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
                shape = (have[0], (have[1] + 2 * pad - k) // stride + 1, (have[2] + 2 * pad - k) // stride + 1)
        elif layer.kind == "add_prev":
            other, other_shape = branch if branch is not None else (block_in or (None, None))
            if other is None or other_shape is None:
                raise DlibModelError("dlib model: add_prev without its block input")
            want = (max(shape[0], other_shape[0]), max(shape[1], other_shape[1]), max(shape[2], other_shape[2]))
            x = node("Add", [pad_to(x, shape, want), pad_to(other, other_shape, want)])
            shape, branch = want, None
        elif layer.kind == "fc":
            assert layer.params is not None
            inputs, outputs = layer.shape
            x = node("MatMul", [x, const(layer.params.reshape(inputs, outputs), "fc")])
        elif layer.kind == "affine":
            raise DlibModelError("dlib model: an affine layer not after a convolution")
        i += 1
    nodes[-1].output[0] = OUTPUT_NAME
    graph = helper.make_graph(
        nodes, "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", net.size, net.size, 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 128])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edged")
    model.ir_version = min(model.ir_version, 8)
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def file_digest(path: str | os.PathLike[str]) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def probe_chips(n: int = PROBES) -> np.ndarray:
    """Fixed pseudo-random uint8 chips: a check of the arithmetic against dlib, not of recognition."""
    return np.random.default_rng(20261203).integers(0, 256, (n, CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8)


def reference_descriptors(reference: Any, chips: np.ndarray) -> np.ndarray:
    """dlib's own raw descriptors (`reference`: a `dlib.face_recognition_model_v1`)."""
    return np.array([np.asarray(v) for v in reference.compute_face_descriptor(list(chips))], np.float32)


def check_export(runner: OrtRunner, expected: np.ndarray, digest: str) -> float:
    """Max abs difference to dlib's own descriptors of the probe chips (`expected`); raises `ExportCheckError`
    when the export is another model's or does not reproduce them (batch, and one face either way)."""
    meta = runner.metadata
    if meta.get(META_SOURCE) != digest or meta.get(META_RECIPE) != str(RECIPE_VERSION):
        raise ExportCheckError(f"made from another model file or recipe ({meta.get(META_SOURCE, '?')[:12]}, "
                               f"recipe {meta.get(META_RECIPE, '?')})")
    chips = probe_chips(len(expected))
    diff = 0.0
    for got in (runner.run(chips), *(runner.run_single(chips[:1], how) for how in runner.single.options)):
        diff = max(diff, float(np.abs(got - expected[:len(got)]).max()))
    if not diff <= PROBE_TOLERANCE:
        raise ExportCheckError(f"differs from dlib by {diff:.2e} (> {PROBE_TOLERANCE:g})")
    return diff


def _stored_probes(runner: OrtRunner) -> np.ndarray:
    """dlib's descriptors of the probe chips, as the export recorded them when it was built and checked."""
    raw = runner.metadata.get(META_PROBES)
    if not raw:
        raise ExportCheckError("no probe descriptors recorded")
    values = np.frombuffer(bytes.fromhex(raw), dtype="<f4")
    if values.size != PROBES * 128:
        raise ExportCheckError("bad probe descriptors")
    return values.reshape(PROBES, 128)


def cache_path(cache_dir: Path, digest: str) -> Path:
    return cache_dir / f"dlib-resnet-{digest[:32]}.r{RECIPE_VERSION}.onnx"


def optimized_path(cache_dir: Path, digest: str) -> Path:
    return cache_dir / f"dlib-resnet-{digest[:32]}.r{RECIPE_VERSION}.opt-{machine_key()}.onnx"


def _optimized_runner(portable: Path, digest: str, threads: int) -> OrtRunner | None:
    """A runner on ONNX Runtime's optimised form of the cached export for this machine (made now if missing),
    checked like the export; None when it cannot be made or does not check out (the export is used as it is)."""
    opt = optimized_path(portable.parent, digest)
    for attempt in (1, 2):  # a stored form that does not check out is made again, once
        made = not opt.is_file()
        try:
            if made:
                tmp = opt.with_name(f".{opt.name}.{os.getpid()}.tmp")
                try:
                    optimize_for_this_machine(portable.read_bytes(), str(tmp))
                    os.chmod(tmp, 0o600)
                    os.replace(tmp, opt)
                finally:
                    tmp.unlink(missing_ok=True)
            runner = OrtRunner(opt.read_bytes(), threads, optimized=True)
            check_export(runner, _stored_probes(runner), digest)
            return runner
        except Exception as exc:  # ORT raises several kinds; the plain export still works
            opt.unlink(missing_ok=True)
            if made or attempt == 2:
                log.warning("%s: ONNX Runtime's optimised form not usable (%s); loading the export as it is", opt,
                            str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
                return None
            log.warning("%s: stored optimised form not usable (%s); making it again", opt,
                        str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
    return None


def load_runner(model_path: str | os.PathLike[str], reference: Callable[[], Any], cache_dir: Path | None,
                threads: int = 0) -> OrtRunner:
    """An `OrtRunner` for dlib's model at `model_path`: the cached export when it reproduces the dlib descriptors
    it recorded, else built now, checked against dlib itself (`reference()`: dlib's model object, loaded only
    then) and cached. With a cache, the sessions run ONNX Runtime's optimised form of the export made for this
    machine (`<export>.opt-<machine key>.onnx`: the weights once in memory instead of twice), checked the same
    way. Raises `ExportCheckError` / `DlibModelError`."""
    digest = file_digest(model_path)
    path = cache_path(cache_dir, digest) if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            runner = OrtRunner(path.read_bytes(), 1)
            check_export(runner, _stored_probes(runner), digest)
            log.debug("dlib ResNet ONNX export from %s", path)
            return _optimized_runner(path, digest, threads) or OrtRunner(path.read_bytes(), threads)
        except Exception as exc:  # corrupt, truncated, foreign or stale: ORT raises several kinds
            log.warning("%s: cached dlib export not usable (%s); rebuilding it", path,
                        str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
    expected = reference_descriptors(reference(), probe_chips())
    data = build_onnx(read_resnet(model_path), {META_SOURCE: digest, META_RECIPE: str(RECIPE_VERSION),
                                                META_PROBES: expected.astype("<f4").tobytes().hex()})
    runner = OrtRunner(data, threads)
    check_export(runner, expected, digest)
    if path is not None:
        try:
            write_private_cache(path, data)
            for stale in path.parent.glob(f"{path.stem}.opt-*.onnx"):
                stale.unlink(missing_ok=True)  # made from an earlier file of the same name
            log.info("cached dlib's ResNet as ONNX in %s", path)
        except (OSError, EdgedError) as exc:
            log.warning("cannot cache dlib's ResNet export in %s (%s); it will be rebuilt next start", path.parent,
                        getattr(exc, "strerror", None) or exc)
            return runner
        del runner
        return _optimized_runner(path, digest, threads) or OrtRunner(data, threads)
    return runner
