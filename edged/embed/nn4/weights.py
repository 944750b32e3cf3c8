"""nn4.small2 weights in every supported format, loaded into `NN4Small2` with layer-by-layer checks.

Formats:

* ``pt``: a PyTorch state dict with OpenFace's key names (`nn4.small2.v1.pt`, OpenFace's port),
  a training checkpoint ``{"state_dict": ...}``, or the project's own file (below). Always read
  with ``torch.load(..., weights_only=True)``.
* ``t7``: the original Lua Torch7 model (`nn4.small2.v1.t7`): an ``nn.Sequential`` walked depth
  first; its layer sequence (kinds, kernel sizes, strides, pads, pooling semantics, LRN
  constants, BN eps) must equal NN4Small2's forward sequence, then its parameters map in order.
* ``csv``: a directory of per-layer CSV files as exported by Keras-OpenFace (Torch order).
* the project's own file: ``torch.save({"format": "edged-nn4", "format_version": 1, "meta":
  {name, threshold, alignment, source...}, "state_dict": {...}})``; fp16 tensors allowed.

Every problem raises `ModelFileError` with one line naming the file and the layer.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from edged.embed.nn4.net import Inception, L2Pool, NN4Small2
from edged.embed.nn4.torch7 import TorchObject, read_t7
from edged.errors import ModelFileError
from edged.fileio import (
    atomic_write,
    file_digests,  # noqa: F401  (re-exported: weights files are hashed here too)
)

log = logging.getLogger(__name__)

#: Format tag of the project's own weights file.
EDGED_FORMAT = "edged-nn4"
EDGED_FORMAT_VERSION = 1
#: Keras-OpenFace CSV file suffixes per state-dict entry.
_CSV_SUFFIX = {"weight": "w", "bias": "b", "running_mean": "m", "running_var": "v"}
_LIST_MAX = 8


@dataclass
class LoadedWeights:
    """A checked NN4Small2 state dict (float32, CPU) and what is known about it."""

    state_dict: dict[str, Tensor]
    fmt: str  # "t7", "pt", "edged", "csv"
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


# ---- helpers ----

@dataclass(frozen=True)
class ModelIdentity:
    """What an embedder reports about its weights."""

    name: str
    version: str  # registry name when verified against the registry, else name@sha256-prefix
    threshold: float
    alignment: str
    verified: bool
    #: The door operating point when measured (registry `open_set`), else None.
    open_set_threshold: float | None = None
    open_set_max_ratio: float | None = None


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_MAX])
    return shown + (f" and {len(items) - _LIST_MAX} more" if len(items) > _LIST_MAX else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line[:200]




def atomic_write_bytes(path: str | Path, data: bytes, mode: int = 0o600) -> None:
    """Write a file whole or not at all (temp file, fsync, chmod, rename)."""
    atomic_write(path, data, mode)


@cache
def expected_shapes() -> dict[str, tuple[int, ...]]:
    """NN4Small2's state-dict keys and shapes."""
    return {k: tuple(v.shape) for k, v in NN4Small2().state_dict().items()}


def _optional(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def check_state_dict(state: Mapping[str, Any], label: str, allow_missing: bool = False) -> dict[str, Tensor]:
    """Validate keys, shapes and values against NN4Small2; returns float32 CPU tensors."""
    expected = expected_shapes()
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise ModelFileError(f"{label}: not nn4.small2 weights: unexpected entries {_listing(unexpected)}")
    missing = [k for k in expected if k not in state and not _optional(k)]
    if missing and not allow_missing:
        raise ModelFileError(f"{label}: incomplete nn4.small2 weights: missing {_listing(missing)}")
    out: dict[str, Tensor] = {}
    wrong = []
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise ModelFileError(f"{label}: {key}: expected a tensor, got {type(value).__name__}")
        if tuple(value.shape) != expected[key]:
            wrong.append(f"{key} expected {expected[key]} got {tuple(value.shape)}")
            continue
        if _optional(key):
            out[key] = value.detach().to("cpu", torch.long)
            continue
        tensor = value.detach().to("cpu", torch.float32)
        if not np.isfinite(tensor.numpy()).all():
            raise ModelFileError(f"{label}: {key}: contains NaN or infinite values")
        out[key] = tensor.contiguous()
    if wrong:
        raise ModelFileError(f"{label}: wrong shapes: {_listing(wrong)}")
    bad_var = [k for k in out if k.endswith("running_var") and bool((out[k].numpy() < 0).any())]
    if bad_var:
        raise ModelFileError(f"{label}: negative running variance in {_listing(bad_var)}")
    return out


# ---- format detection ----

def detect_format(path: str | Path) -> str:
    """'csv' (directory), 't7' or 'pt', from the content (the extension only as a last resort)."""
    p = Path(path)
    if p.is_dir():
        return "csv"
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
    except FileNotFoundError as exc:
        raise ModelFileError(f"{p}: no such file") from exc
    except OSError as exc:
        raise ModelFileError(f"{p}: cannot read ({exc.strerror or exc})") from exc
    if not head:
        raise ModelFileError(f"{p}: empty file")
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "pt"
    if head[:4] == b"\x04\x00\x00\x00":
        return "t7"
    suffix = p.suffix.lower()
    if suffix == ".t7":
        return "t7"
    if suffix in (".pt", ".pth"):
        return "pt"
    raise ModelFileError(f"{p}: unknown weights format (expected a Torch7 .t7, a PyTorch .pt or a CSV directory)")


def read_weights(path: str | Path, fmt: str | None = None, label: str | None = None) -> LoadedWeights:
    """Read and check complete nn4.small2 weights in any supported format.

    `fmt` ('t7', 'pt', 'csv') skips format detection; `label` names the file in errors (default: the path).
    """
    p = Path(path)
    name = label or str(p)
    fmt = fmt or detect_format(p)
    if fmt == "csv":
        state, _ = read_keras_csv_dir(p)
        return LoadedWeights(check_state_dict(state, name), "csv", name)
    if fmt == "t7":
        return LoadedWeights(check_state_dict(state_dict_from_t7(read_t7(p, name), name), name), "t7", name)
    return _read_pt(p, name)


def load_nn4(path: str | Path, device: str | torch.device = "cpu") -> NN4Small2:
    """A fully loaded NN4Small2 in eval mode from any supported weights file."""
    model = NN4Small2()
    model.load_state_dict(read_weights(path).state_dict, strict=False)
    return model.to(device).eval()


# ---- PyTorch files ----

def _read_pt(path: Path, label: str) -> LoadedWeights:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise ModelFileError(f"{label}: cannot read ({exc.strerror or exc})") from exc
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise ModelFileError(f"{label}: not a PyTorch weights file (neither a zip archive nor a pickle)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for corrupt, truncated or unsafe files
        raise ModelFileError(f"{label}: not a loadable PyTorch weights file ({_first_line(exc)})") from exc
    if isinstance(obj, dict) and obj.get("format") == EDGED_FORMAT:
        version = obj.get("format_version")
        if version != EDGED_FORMAT_VERSION:
            raise ModelFileError(f"{label}: {EDGED_FORMAT} format version {version!r} is not supported "
                                 f"(this edged reads version {EDGED_FORMAT_VERSION})")
        meta = obj.get("meta")
        state = obj.get("state_dict")
        if not isinstance(meta, dict) or not isinstance(state, dict):
            raise ModelFileError(f"{label}: {EDGED_FORMAT} file without 'meta' and 'state_dict'")
        return LoadedWeights(check_state_dict(state, label), "edged", label, meta=dict(meta))
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise ModelFileError(f"{label}: expected a state dict, got {type(obj).__name__}")
    state = {(k[len("module."):] if isinstance(k, str) and k.startswith("module.") else k): v
             for k, v in obj.items()}
    return LoadedWeights(check_state_dict(state, label), "pt", label)


def save_weights(path: str | Path, state_dict: Mapping[str, Tensor], *, name: str, threshold: float,
                 alignment: str, half: bool = False, **extra: str | float | int) -> None:
    """Write the project's own weights file atomically (mode 0600).

    `extra` adds metadata (e.g. source, source_md5, source_sha256, licence).
    """
    state = check_state_dict(state_dict, str(path))
    if half:
        state = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    meta: dict[str, Any] = {"name": name, "threshold": float(threshold), "alignment": alignment, **extra}
    buffer = io.BytesIO()
    torch.save({"format": EDGED_FORMAT, "format_version": EDGED_FORMAT_VERSION, "meta": meta,
                "state_dict": state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


# ---- Keras-OpenFace CSV directories ----

@cache
def keras_csv_names() -> dict[str, tuple[str, tuple[int, ...]]]:
    """CSV file stem (e.g. 'inception_3a_3x3_conv1_w') -> (state-dict key, shape), every weight of nn4.small2."""
    model = NN4Small2()
    layer_names: dict[str, str] = {"conv1": "conv1", "bn1": "bn1", "conv2": "conv2", "bn2": "bn2",
                                   "conv3": "conv3", "bn3": "bn3", "ln": "dense"}
    for block_name, block in model.named_children():
        if not isinstance(block, Inception):
            continue
        prefix = "inception_" + block_name.removeprefix("incept")
        for i, (label, branch) in enumerate(zip(block.branch_names, block.branches, strict=True)):
            if label == "pool":
                numbered = {1: "pool_conv", 2: "pool_bn"}
            elif label == "1x1":
                numbered = {0: "1x1_conv", 1: "1x1_bn"}
            else:
                numbered = {0: f"{label}_conv1", 1: f"{label}_bn1", 3: f"{label}_conv2", 4: f"{label}_bn2"}
            for j, csv_name in numbered.items():
                if j < len(branch):
                    layer_names[f"{block_name}.branches.{i}.{j}"] = f"{prefix}_{csv_name}"
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for key, shape in expected_shapes().items():
        layer, _, param = key.rpartition(".")
        if param in _CSV_SUFFIX:
            out[f"{layer_names[layer]}_{_CSV_SUFFIX[param]}"] = (key, shape)
    return out


def _read_csv_values(path: Path, count: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": reported below
            values = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=1, encoding="ascii").ravel()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: cannot read ({_first_line(exc)})") from exc
    except ValueError as exc:
        raise ModelFileError(f"{path}: not a comma-separated list of numbers ({_first_line(exc)})") from exc
    if values.size != count:
        raise ModelFileError(f"{path}: expected {count} values, found {values.size}")
    return values


def read_keras_csv_dir(path: str | Path, allow_missing: bool = False) -> tuple[dict[str, Tensor], list[str]]:
    """Read a Keras-OpenFace weights directory (one CSV row per tensor, Torch order).

    Every expected file must be present unless `allow_missing`; the error names each absent file.
    Unknown extra files are ignored. Returns (state dict, absent file names).
    """
    root = Path(path)
    if not root.is_dir():
        raise ModelFileError(f"{root}: not a directory of CSV weights")
    names = keras_csv_names()
    present = {f.stem for f in root.iterdir() if f.suffix == ".csv"}
    missing = sorted(f"{stem}.csv" for stem in names if stem not in present)
    if missing and not allow_missing:
        raise ModelFileError(f"{root}: incomplete Keras-OpenFace weights: {len(missing)} of {len(names)} "
                             f"files missing: {', '.join(missing)}")
    extras = sorted(present - set(names))
    if extras:
        log.debug("%s: ignoring unknown files %s", root, ", ".join(extras))
    state: dict[str, Tensor] = {}
    for stem, (key, shape) in names.items():
        if stem in present:
            values = _read_csv_values(root / f"{stem}.csv", math.prod(shape))
            state[key] = torch.from_numpy(values.reshape(shape).astype(np.float32))
    return state, missing


# ---- Torch7 models ----

Op = tuple[Any, ...]


def _pair(h: Any, w: Any) -> tuple[int, int]:
    return (int(h), int(w))


def _rounded(x: float) -> float:
    return float(f"{float(x):.6g}")


def _reference_op(module: nn.Module) -> Op | None:
    """The signature of one NN4Small2 module as it runs in forward()."""
    if isinstance(module, nn.Conv2d):
        return ("conv", module.in_channels, module.out_channels, tuple(module.kernel_size), tuple(module.stride),
                tuple(module.padding))
    if isinstance(module, nn.BatchNorm2d):
        return ("bn", module.num_features, _rounded(module.eps))
    if isinstance(module, nn.ReLU):
        return ("relu",)
    if isinstance(module, nn.MaxPool2d):
        k, s, p = (module.kernel_size, module.stride, module.padding)
        return ("maxpool", _pair(k, k), _pair(s, s), _pair(p, p), bool(module.ceil_mode))
    if isinstance(module, L2Pool):
        return ("l2pool", _pair(module.kernel, module.kernel), _pair(module.stride, module.stride))
    if isinstance(module, nn.LocalResponseNorm):
        return ("lrn", module.size, _rounded(module.alpha), _rounded(module.beta), _rounded(module.k))
    if isinstance(module, nn.AvgPool2d):
        k, s = module.kernel_size, module.stride
        return ("avgpool", _pair(k, k), _pair(s, s))
    if isinstance(module, nn.Linear):
        return ("linear", module.in_features, module.out_features)
    if isinstance(module, Inception):
        return ("inception", len(module.branches))
    if isinstance(module, nn.Sequential):
        return ("branch",)
    return None


@cache
def reference_ops() -> tuple[tuple[str, Op], ...]:
    """(module name, signature) of NN4Small2's layers in the order forward() runs them, then the L2 norm."""
    model = NN4Small2().eval()
    names = {id(m): n for n, m in model.named_modules()}
    calls: list[tuple[str, Op]] = []
    hooks = []
    for module in model.modules():
        def record(mod: nn.Module, _inputs: Any) -> None:
            op = _reference_op(mod)
            if op is not None:
                calls.append((names[id(mod)], op))
        hooks.append(module.register_forward_pre_hook(record))
    with torch.inference_mode():
        model(torch.zeros(1, 3, 96, 96))
    for hook in hooks:
        hook.remove()
    calls.append(("normalize", ("normalize", 2.0)))
    return tuple(calls)


def _num(fields: Mapping[Any, Any], key: str, default: float | None = None) -> float:
    value = fields.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise KeyError(key)
    return float(value)


def _lp_pool_op(obj: TorchObject) -> Op:
    """SpatialLPPooling's signature; ('l2pool', k, s) only when it is sqrt of the *sum* of squares."""
    f = obj.fields
    kernel, stride = _pair(_num(f, "kH"), _num(f, "kW")), _pair(_num(f, "dH"), _num(f, "dW"))
    power_in = power_out = None
    scale = 1.0
    for child in obj.children():
        if not isinstance(child, TorchObject):
            continue
        name, cf = child.short_name, child.fields
        if name == "Square":
            power_in = 2.0
        elif name == "Sqrt":
            power_out = 0.5
        elif name == "Power":
            if power_in is None:
                power_in = _num(cf, "pow")
            else:
                power_out = _num(cf, "pow")
        elif name == "SpatialAveragePooling":
            scale /= _num(cf, "kW") * _num(cf, "kH")
        elif name == "MulConstant":
            scale *= _num(cf, "constant_scalar")
        elif name in ("SpatialSubSampling", "SpatialConvolutionMap"):  # older nn: a fixed all-equal window
            w, b = cf.get("weight"), cf.get("bias")
            if not isinstance(w, np.ndarray) or w.size == 0 or not np.all(w == w.flat[0]) or (
                    isinstance(b, np.ndarray) and np.any(b != 0)):
                return ("lppool", f"{child.class_name} with learned window weights")
            scale *= float(w.flat[0])
        else:
            return ("lppool", f"unexpected {child.class_name}")
    if power_in == 2.0 and power_out == 0.5 and abs(scale - 1.0) < 1e-6:
        return ("l2pool", kernel, stride)
    return ("lppool", f"p={power_in}, 1/p={power_out}, window scale {scale:g} (nn4.small2 needs p=2 and the sum)")


_CONTAINERS = {"Sequential", "Inception", "DepthConcat", "Decorator"}
_NO_OPS = {"Reshape", "View", "Identity"}


def _t7_op(obj: TorchObject) -> Op:
    """The signature of one Torch7 leaf module (same vocabulary as `_reference_op`)."""
    f, name = obj.fields, obj.short_name
    if name in ("SpatialConvolution", "SpatialConvolutionMM"):
        pad_w = _num(f, "padW", _num(f, "padding", 0))
        pad_h = _num(f, "padH", pad_w)
        return ("conv", int(_num(f, "nInputPlane")), int(_num(f, "nOutputPlane")), _pair(_num(f, "kH"), _num(f, "kW")),
                _pair(_num(f, "dH"), _num(f, "dW")), _pair(pad_h, pad_w))
    if name in ("SpatialBatchNormalization", "BatchNormalization"):
        mean = f.get("running_mean")
        channels = int(mean.size) if isinstance(mean, np.ndarray) else int(_num(f, "nOutput", 0))
        return ("bn", channels, _rounded(_num(f, "eps", 1e-5)))
    if name == "ReLU" or (name == "Threshold" and _num(f, "threshold", 0) == 0 and _num(f, "val", 0) == 0):
        return ("relu",)
    if name == "SpatialMaxPooling":
        return ("maxpool", _pair(_num(f, "kH"), _num(f, "kW")), _pair(_num(f, "dH"), _num(f, "dW")),
                _pair(_num(f, "padH", 0), _num(f, "padW", 0)), bool(f.get("ceil_mode", False)))
    if name == "SpatialLPPooling":
        return _lp_pool_op(obj)
    if name == "SpatialCrossMapLRN":
        return ("lrn", int(_num(f, "size")), _rounded(_num(f, "alpha")), _rounded(_num(f, "beta")),
                _rounded(_num(f, "k", 1.0)))
    if name == "SpatialAveragePooling":
        return ("avgpool", _pair(_num(f, "kH"), _num(f, "kW")), _pair(_num(f, "dH"), _num(f, "dW")))
    if name == "Linear":
        weight = f.get("weight")
        shape = weight.shape if isinstance(weight, np.ndarray) and weight.ndim == 2 else (0, 0)
        return ("linear", int(shape[1]), int(shape[0]))
    if name == "Normalize":
        return ("normalize", _num(f, "p"))
    return ("unsupported", obj.class_name)


def _walk_t7(obj: Any, path: str) -> Iterator[tuple[str, Op, TorchObject]]:
    """Depth-first (torch path, signature, module) of a Torch7 model, containers expanded."""
    if not isinstance(obj, TorchObject):
        raise ModelFileError(f"expected an nn module at {path or 'the top level'}, found {type(obj).__name__}")
    name = obj.short_name
    if name in _CONTAINERS:
        children = obj.children()
        if name == "DepthConcat":
            yield path, ("inception", len(children)), obj
        for i, child in enumerate(children, start=1):
            child_path = f"{path} > {name}[{i}]" if path else f"{name}[{i}]"
            if name == "DepthConcat":
                yield child_path, ("branch",), obj
            yield from _walk_t7(child, child_path)
        return
    if name in _NO_OPS:
        return
    try:
        op = _t7_op(obj)
    except KeyError as exc:
        raise ModelFileError(f"{obj.class_name} at {path}: missing field {exc.args[0]}") from exc
    yield f"{path} ({obj.class_name})", op, obj


def _t7_array(obj: TorchObject, key: str, where: str) -> np.ndarray:
    value = obj.fields.get(key)
    if not isinstance(value, np.ndarray) or value.size == 0:
        raise ModelFileError(f"{where}: no {key} tensor")
    return value


def state_dict_from_t7(model: Any, label: str) -> dict[str, Tensor]:
    """Map a Torch7 nn4.small2 onto NN4Small2's state dict, checking every layer on the way."""
    try:
        found = list(_walk_t7(model, ""))
    except ModelFileError as exc:
        raise ModelFileError(f"{label}: {exc}") from exc
    reference = reference_ops()
    for i, (ref, got) in enumerate(zip(reference, found, strict=False)):
        (our_name, our_op), (torch_path, their_op, _) = ref, got
        if our_op != their_op:
            raise ModelFileError(f"{label}: not nn4.small2 at layer {i + 1} ({torch_path}): "
                                 f"expected {our_op} for {our_name}, found {their_op}")
    if len(found) != len(reference):
        raise ModelFileError(f"{label}: not nn4.small2: {len(found)} layers, expected {len(reference)}")
    expected = expected_shapes()
    state: dict[str, Tensor] = {}
    for (our_name, op), (torch_path, _, obj) in zip(reference, found, strict=True):
        where = f"{label}: {torch_path} -> {our_name}"
        if op[0] in ("conv", "linear"):
            arrays = {"weight": _t7_array(obj, "weight", where), "bias": _t7_array(obj, "bias", where)}
        elif op[0] == "bn":
            arrays = {k: _t7_array(obj, k, where) for k in ("weight", "bias", "running_mean")}
            if isinstance(obj.fields.get("running_var"), np.ndarray):
                arrays["running_var"] = obj.fields["running_var"]
            else:  # older nn: running_std = 1 / sqrt(var + eps)
                std = _t7_array(obj, "running_std", where).astype(np.float64)
                arrays["running_var"] = 1.0 / np.square(std) - op[2]
        else:
            continue
        for param, array in arrays.items():
            key = f"{our_name}.{param}"
            shape = expected[key]
            # SpatialConvolutionMM keeps its weight as out x (in*kh*kw), same memory order
            mm_shape = (shape[0], math.prod(shape[1:])) if len(shape) == 4 else shape
            if tuple(array.shape) not in (shape, mm_shape):
                raise ModelFileError(f"{where}: {param} has shape {tuple(array.shape)}, expected {shape}")
            state[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32).reshape(shape))
    return state
