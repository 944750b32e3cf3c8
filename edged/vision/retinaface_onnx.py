"""The RetinaFace detector (Caffe, `edged models fetch retinaface`) on ONNX Runtime.

The network is read from its own files: the layer graph from `deploy.prototxt` (a small text-format parser
below), the weights through OpenCV's Caffe importer (`cv2.dnn.Net.getParam`, the blobs as stored). It is
written as an ONNX graph with `onnx.helper` (no torch): each BatchNorm + Scale folded into the convolution
before it, RGB uint8 NHWC in (the mean subtracted in the graph, the BGR channel order folded into the first
convolution), the six head convolutions (box offsets and face / background scores at strides 8, 16, 32) out.
What Caffe's PriorBox, Softmax and DetectionOutput layers do after them is done here in numpy (`decode`): the
same anchors, CENTER_SIZE decoding with the variances, the confidence threshold, greedy NMS at the prototxt's
IoU, top_k and keep_top_k. Checked against OpenCV DNN on a probe image at every load (the raw heads within
`HEAD_TOLERANCE`);
cached as `<models dir>/cache/retinaface-<sha>.r<RECIPE_VERSION>.onnx` (0600).

On the 2-core development machine ONNX Runtime takes 0.76-0.83 of OpenCV DNN's time from 640x360 to 1920x1080
(`edged bench`, `cameras.detectors.sizes.*.retinaface_ort_vs_opencv`), with the same boxes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edged.errors import EdgedError, ModelFileError
from edged.fileio import write_private_cache

log = logging.getLogger(__name__)

#: Bump when the graph written for the same files changes.
RECIPE_VERSION = 1
INPUT_NAME = "image"
#: OpenCV's blobFromImage mean for this network (B, G, R).
MEAN_BGR = (104.0, 117.0, 123.0)
#: The raw head outputs of the ONNX graph and OpenCV's must agree to this (absolute; they are O(1..10)).
HEAD_TOLERANCE = 2e-3


# ---- the prototxt ----

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}:]|[^\s{}:"]+')


def parse_prototxt(text: str) -> list[tuple[str, Any]]:
    """Protobuf text format as nested (key, value) lists: a value is a string or a list of pairs."""
    tokens = _TOKEN.findall(re.sub(r"#[^\n]*", "", text))

    def block(i: int, nested: bool) -> tuple[list[tuple[str, Any]], int]:
        out: list[tuple[str, Any]] = []
        while i < len(tokens):
            key = tokens[i]
            if key == "}":
                if not nested:
                    raise ValueError("unbalanced '}'")
                return out, i + 1
            if i + 1 >= len(tokens):
                raise ValueError(f"{key!r} without a value")
            if tokens[i + 1] == ":" and i + 2 < len(tokens) and tokens[i + 2] != "{":
                value = tokens[i + 2]
                out.append((key, value[1:-1] if value.startswith('"') else value))
                i += 3
            elif tokens[i + 1] == "{" or (tokens[i + 1] == ":" and tokens[i + 2] == "{"):
                sub, i = block(i + (2 if tokens[i + 1] == "{" else 3), True)
                out.append((key, sub))
            else:
                raise ValueError(f"unexpected {tokens[i + 1]!r} after {key!r}")
        if nested:
            raise ValueError("missing '}'")
        return out, i

    return block(0, False)[0]


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    params: dict[str, list[str]]


def _values(pairs: list[tuple[str, Any]], key: str) -> list[Any]:
    return [v for k, v in pairs if k == key]


def read_layers(prototxt: str | list[tuple[str, Any]]) -> list[Layer]:
    """The prototxt's layers (its text, or `parse_prototxt` of it) with their scalar parameters (every `*_param`
    block flattened, repeated keys kept)."""
    layers = []
    for body in _values(parse_prototxt(prototxt) if isinstance(prototxt, str) else prototxt, "layer"):
        params: dict[str, list[str]] = {}
        for key, value in body:
            if key.endswith("_param") and isinstance(value, list):
                for k, v in value:
                    if isinstance(v, str):
                        params.setdefault(k, []).append(v)
                    elif k == "nms_param":
                        for k2, v2 in v:
                            params.setdefault(k2, []).append(v2)
        layers.append(Layer(_values(body, "name")[0], _values(body, "type")[0], tuple(_values(body, "bottom")),
                            tuple(_values(body, "top")), params))
    return layers


def _one(layer: Layer, key: str, default: str | None = None) -> str:
    values = layer.params.get(key)
    if not values:
        if default is None:
            raise ModelFileError(f"layer {layer.name}: no {key}")
        return default
    return values[0]


# ---- the heads' meaning (PriorBox, DetectionOutput) ----

@dataclass(frozen=True)
class Head:
    """One stride's outputs: the ONNX output names of its box and score convolutions and its anchors."""

    loc: str
    conf: str
    min_sizes: tuple[float, ...]
    step: float
    offset: float


@dataclass(frozen=True)
class Decoding:
    heads: tuple[Head, ...]
    variances: tuple[float, float, float, float]
    confidence_threshold: float
    nms_threshold: float
    top_k: int
    keep_top_k: int


def _source_conv(layers: dict[str, Layer], producers: dict[str, str], blob: str) -> str:
    """Follow Flatten / Permute back to the convolution whose output `blob` rearranges."""
    while True:
        layer = layers[producers[blob]]
        if layer.kind == "Convolution":
            return layer.tops[0]
        if layer.kind not in ("Flatten", "Permute"):
            raise ModelFileError(f"layer {layer.name}: a {layer.kind} between a head and its Concat")
        if layer.kind == "Permute" and [int(v) for v in layer.params.get("order", [])] != [0, 2, 3, 1]:
            raise ModelFileError(f"layer {layer.name}: Permute order other than 0 2 3 1")
        blob = layer.bottoms[0]


def decoding_of(layers: Sequence[Layer]) -> Decoding:
    by_name = {layer.name: layer for layer in layers}
    producers: dict[str, str] = {}
    for layer in layers:
        for top in layer.tops:
            producers[top] = layer.name
    out = [layer for layer in layers if layer.kind == "DetectionOutput"]
    if len(out) != 1:
        raise ModelFileError("not an SSD-style detector: expected one DetectionOutput layer")
    det = out[0]
    if _one(det, "code_type", "CORNER") != "CENTER_SIZE" or _one(det, "share_location", "true") != "true":
        raise ModelFileError(f"layer {det.name}: only CENTER_SIZE boxes with a shared location are supported")
    loc_cat, conf_cat, prior_cat = (by_name[producers[b]] for b in det.bottoms)
    while conf_cat.kind in ("Flatten", "Softmax", "Reshape"):  # the scores' softmax: `decode` does it
        conf_cat = by_name[producers[conf_cat.bottoms[0]]]
    if not all(layer.kind == "Concat" for layer in (loc_cat, conf_cat, prior_cat)):
        raise ModelFileError(f"layer {det.name}: its inputs are not the Concat of the heads")
    heads = []
    variances: tuple[float, ...] = ()
    for loc, conf, prior in zip(loc_cat.bottoms, conf_cat.bottoms, prior_cat.bottoms, strict=True):
        p = by_name[producers[prior]]
        if p.kind != "PriorBox" or p.params.get("max_size") or p.params.get("aspect_ratio"):
            raise ModelFileError(f"layer {p.name}: only square PriorBox anchors (min_size) are supported")
        variances = tuple(float(v) for v in p.params["variance"])
        heads.append(Head(_source_conv(by_name, producers, loc), _source_conv(by_name, producers, conf),
                          tuple(float(v) for v in p.params["min_size"]), float(_one(p, "step")),
                          float(_one(p, "offset", "0.5"))))
    if len(variances) != 4:
        raise ModelFileError("PriorBox: expected four variances")
    return Decoding(tuple(heads), variances, float(_one(det, "confidence_threshold", "0.0")),  # type: ignore[arg-type]
                    float(_one(det, "nms_threshold", "0.3")), int(_one(det, "top_k", "400")),
                    int(_one(det, "keep_top_k", "200")))


def anchors(head: Head, rows: int, cols: int) -> np.ndarray:
    """Caffe PriorBox: (rows * cols * len(min_sizes), 4) centre x, centre y, width, height in input pixels."""
    ys, xs = np.meshgrid((np.arange(rows) + head.offset) * head.step, (np.arange(cols) + head.offset) * head.step,
                         indexing="ij")
    sizes = np.asarray(head.min_sizes)
    k = len(sizes)
    cx = np.repeat(xs.reshape(-1), k)
    cy = np.repeat(ys.reshape(-1), k)
    s = np.tile(sizes, rows * cols)
    return np.stack([cx, cy, s, s], axis=1)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy NMS (Caffe's ApplyNMSFast, eta 1): indices kept, best first; `boxes` (N, 4) x1 y1 x2 y2."""
    order = np.argsort(-scores, kind="stable")
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    kept: list[int] = []
    for i in order:
        if kept:
            k = np.asarray(kept)
            w = np.clip(np.minimum(boxes[k, 2], boxes[i, 2]) - np.maximum(boxes[k, 0], boxes[i, 0]), 0, None)
            h = np.clip(np.minimum(boxes[k, 3], boxes[i, 3]) - np.maximum(boxes[k, 1], boxes[i, 1]), 0, None)
            inter = w * h
            union = area[k] + area[i] - inter
            if np.any(inter > iou * np.where(union > 0, union, np.inf)):
                continue
        kept.append(int(i))
    return kept


def decode(outputs: dict[str, np.ndarray], decoding: Decoding, width: int, height: int,
           min_score: float) -> list[tuple[int, int, int, int, float]]:
    """What Caffe's Softmax + PriorBox + DetectionOutput make of the heads: (left, top, right, bottom, score)
    in input pixels, best first, scores >= max(min_score, the layer's threshold)."""
    boxes, scores = [], []
    for head in decoding.heads:
        loc, conf = outputs[head.loc][0], outputs[head.conf][0]  # (4k, H, W), (2k, H, W)
        k = len(head.min_sizes)
        rows, cols = loc.shape[1:]
        loc = loc.transpose(1, 2, 0).reshape(-1, 4)
        logits = conf.transpose(1, 2, 0).reshape(-1, 2).astype(np.float64)
        face = 1.0 / (1.0 + np.exp(logits[:, 0] - logits[:, 1]))  # softmax over (background, face)
        assert len(face) == rows * cols * k
        keep = face >= max(min_score, decoding.confidence_threshold)
        if not keep.any():
            continue
        prior = anchors(head, rows, cols)[keep]
        d = loc[keep].astype(np.float64)
        v = decoding.variances
        cx = prior[:, 0] + d[:, 0] * v[0] * prior[:, 2]
        cy = prior[:, 1] + d[:, 1] * v[1] * prior[:, 3]
        w = prior[:, 2] * np.exp(d[:, 2] * v[2])
        h = prior[:, 3] * np.exp(d[:, 3] * v[3])
        boxes.append(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1))
        scores.append(face[keep])
    if not boxes:
        return []
    all_boxes, all_scores = np.concatenate(boxes), np.concatenate(scores)
    top = np.argsort(-all_scores, kind="stable")[:decoding.top_k]
    all_boxes, all_scores = all_boxes[top], all_scores[top]
    kept = nms(all_boxes, all_scores, decoding.nms_threshold)[:decoding.keep_top_k]
    out = []
    for i in kept:
        x1, y1, x2, y2 = all_boxes[i]
        if np.isfinite([x1, y1, x2, y2]).all():
            out.append((round(float(x1)), round(float(y1)), round(float(x2)), round(float(y2)), float(all_scores[i])))
    return out


# ---- the ONNX graph ----

def _blobs(net: Any, layer: Layer) -> list[np.ndarray]:
    """A layer's stored blobs, as OpenCV read them (OpenCV names a convolution after its output blob)."""
    import cv2

    for name in (layer.name, layer.tops[0]):
        try:
            net.getLayerId(name)
        except cv2.error:
            continue
        blobs = []
        while True:
            try:
                blob = net.getParam(name, len(blobs))
            except cv2.error:
                break
            if blob is None or blob.size == 0:
                break
            blobs.append(np.asarray(blob, np.float32))
        if blobs:
            return blobs
    raise ModelFileError(f"layer {layer.name}: no weights in the caffemodel")


def build_onnx(prototxt: str | os.PathLike[str], caffemodel: str | os.PathLike[str], net: Any = None) -> bytes:
    """The detector's network as ONNX (uint8 RGB NHWC in, the head convolutions out); `net`: OpenCV's reading of
    the two files when the caller has one (else read here)."""
    import cv2
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    try:
        parsed = parse_prototxt(Path(prototxt).read_text(encoding="utf-8", errors="replace"))
        layers = read_layers(parsed)
        if net is None:
            net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    except (ValueError, IndexError, cv2.error) as exc:
        raise ModelFileError(f"{prototxt}: not a readable Caffe network ({str(exc).strip().splitlines()[-1][:200]})"
                             ) from exc
    decoding = decoding_of(layers)
    head_outputs = {h.loc for h in decoding.heads} | {h.conf for h in decoding.heads}
    nodes: list[Any] = []
    inits: list[Any] = []
    names: dict[str, str] = {}
    counter = [0]

    def fresh(base: str) -> str:
        counter[0] += 1
        return f"{base}__{counter[0]}"

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    # uint8 RGB NHWC -> float NCHW minus the mean; the BGR order is folded into the first convolution
    x = fresh("input")
    nodes.append(helper.make_node("Cast", [INPUT_NAME], [x], to=TensorProto.FLOAT))
    y = fresh("centred")
    nodes.append(helper.make_node("Sub", [x, const("mean_rgb", np.asarray(MEAN_BGR[::-1], np.float32))], [y]))
    z = fresh("nchw")
    nodes.append(helper.make_node("Transpose", [y], [z], perm=[0, 3, 1, 2]))
    inputs = _values(parsed, "input") or ["data"]
    names[inputs[0]] = z
    first_conv = True
    skip: set[str] = set()
    for index, layer in enumerate(layers):
        if layer.name in skip:
            continue
        kind = layer.kind
        if kind == "Convolution" or kind == "Deconvolution":
            blobs = _blobs(net, layer)
            weight = blobs[0]
            out_ch = int(_one(layer, "num_output"))
            bias = blobs[1].reshape(-1) if len(blobs) > 1 else np.zeros(out_ch, np.float32)
            k = int(_one(layer, "kernel_size"))
            stride = int(_one(layer, "stride", "1"))
            pad = int(_one(layer, "pad", "0"))
            group = int(_one(layer, "group", "1"))
            dilation = int(_one(layer, "dilation", "1"))
            top = layer.tops[0]
            if kind == "Convolution":
                rest = layers[index + 1:index + 3]
                if (len(rest) == 2 and rest[0].kind == "BatchNorm" and rest[0].bottoms == (top,)
                        and rest[1].kind == "Scale" and rest[1].bottoms == rest[0].tops):
                    mean, var, factor = _blobs(net, rest[0])[:3]
                    f = float(factor.reshape(-1)[0])
                    f = 1.0 / f if f != 0 else 0.0
                    eps = float(_one(rest[0], "eps", "1e-5"))
                    gamma, beta = (b.reshape(-1) for b in _blobs(net, rest[1])[:2])
                    scale = gamma / np.sqrt(var.reshape(-1) * f + eps)
                    weight = weight * scale[:, None, None, None]
                    bias = (bias - mean.reshape(-1) * f) * scale + beta
                    skip.update(r.name for r in rest)
                    top = rest[1].tops[0]
                if first_conv:
                    if weight.shape[1] != 3:
                        raise ModelFileError(f"layer {layer.name}: the first convolution does not take 3 channels")
                    weight = weight[:, ::-1]  # the network was trained on BGR; the graph takes RGB
                    first_conv = False
            out = layer.tops[0] if layer.tops[0] in head_outputs else fresh(top)
            w_name = const(f"{layer.name}.w", weight.astype(np.float32))
            b_name = const(f"{layer.name}.b", bias.astype(np.float32))
            nodes.append(helper.make_node("Conv" if kind == "Convolution" else "ConvTranspose",
                                          [names[layer.bottoms[0]], w_name, b_name], [out],
                                          kernel_shape=[k, k], strides=[stride, stride],
                                          pads=[pad, pad, pad, pad], group=group, dilations=[dilation] * 2))
            names[top] = out
            if top != layer.tops[0]:
                names[layer.tops[0]] = out
        elif kind == "ReLU":
            slope = float(_one(layer, "negative_slope", "0"))
            out = fresh(layer.tops[0])
            nodes.append(helper.make_node("LeakyRelu", [names[layer.bottoms[0]]], [out], alpha=slope) if slope
                         else helper.make_node("Relu", [names[layer.bottoms[0]]], [out]))
            names[layer.tops[0]] = out
        elif kind == "Crop":
            if int(_one(layer, "axis", "2")) != 2 or any(int(v) for v in layer.params.get("offset", [])):
                raise ModelFileError(f"layer {layer.name}: only Crop at axis 2 with offset 0 is supported")
            shape, hw, out = fresh("shape"), fresh("hw"), fresh(layer.tops[0])
            nodes.append(helper.make_node("Shape", [names[layer.bottoms[1]]], [shape]))
            nodes.append(helper.make_node("Slice", [shape, const(fresh("s2"), np.asarray([2], np.int64)),
                                                    const(fresh("s4"), np.asarray([4], np.int64))], [hw]))
            nodes.append(helper.make_node("Slice", [names[layer.bottoms[0]], const(fresh("z2"),
                                                    np.zeros(2, np.int64)), hw,
                                                    const(fresh("ax"), np.asarray([2, 3], np.int64))], [out]))
            names[layer.tops[0]] = out
        elif kind == "Eltwise":
            if _one(layer, "operation", "SUM") != "SUM" or layer.params.get("coeff"):
                raise ModelFileError(f"layer {layer.name}: only a plain Eltwise SUM is supported")
            out = fresh(layer.tops[0])
            nodes.append(helper.make_node("Sum", [names[b] for b in layer.bottoms], [out]))
            names[layer.tops[0]] = out
        elif kind == "Concat" and all(b in names for b in layer.bottoms):
            out = fresh(layer.tops[0])
            nodes.append(helper.make_node("Concat", [names[b] for b in layer.bottoms], [out],
                                          axis=int(_one(layer, "axis", "1"))))
            names[layer.tops[0]] = out
        elif kind in ("BatchNorm", "Scale"):
            raise ModelFileError(f"layer {layer.name}: a {kind} not right after a convolution")
        # Permute / Flatten / PriorBox / Concat of the heads / Reshape / Softmax / DetectionOutput: `decode`
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, None, None, None])
               for h in decoding.heads for n in (h.loc, h.conf)]
    graph = helper.make_graph(nodes, "retinaface", [helper.make_tensor_value_info(
        INPUT_NAME, TensorProto.UINT8, [1, "height", "width", 3])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edged")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def files_digest(prototxt: str | os.PathLike[str], caffemodel: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    for path in (prototxt, caffemodel):
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


# ---- running it ----

class ExportCheckError(Exception):
    """The ONNX graph does not reproduce OpenCV DNN's heads (internal: triggers a rebuild or the fallback)."""


def probe_image() -> np.ndarray:
    """A fixed smooth pseudo-random RGB picture (120x160) both runtimes see for the check."""
    import cv2

    noise = np.random.default_rng(20261204).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    return np.ascontiguousarray(cv2.resize(noise, (160, 120), interpolation=cv2.INTER_CUBIC))


def opencv_heads(net: Any, image: np.ndarray, decoding: Decoding) -> list[np.ndarray]:
    """OpenCV DNN's raw head outputs for an RGB image (the reference the export is checked against)."""
    import cv2

    h, w = image.shape[:2]
    net.setInput(cv2.dnn.blobFromImage(image, 1.0, (w, h), MEAN_BGR, swapRB=True), "data")
    return [np.asarray(o) for o in net.forward([n for hd in decoding.heads for n in (hd.loc, hd.conf)])]


class RetinaFaceOnnx:
    """The detector on ONNX Runtime: `detect(rgb, min_score)` -> (left, top, right, bottom, score) in its pixels.

    The graph comes from `cache_dir` when a cached export of these exact files is there, else it is built
    (`build_onnx`) and cached (0600); either way the session is checked against OpenCV DNN on `probe_image` and
    `ExportCheckError` raised when it does not agree (a corrupt cached file is rebuilt once first)."""

    def __init__(self, prototxt: str | os.PathLike[str], caffemodel: str | os.PathLike[str],
                 cache_dir: Path | None = None, threads: int = 0, net: Any = None) -> None:
        """`net`: OpenCV DNN's reading of the two files when the caller has one (the reference; else read here)."""
        import cv2

        from edged.machine import usable_cores

        self.threads = threads if threads > 0 else usable_cores()
        self.decoding = decoding_of(read_layers(Path(prototxt).read_text(encoding="utf-8", errors="replace")))
        self.outputs = [n for h in self.decoding.heads for n in (h.loc, h.conf)]
        if net is None:
            net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
        probe = probe_image()
        expected = opencv_heads(net, probe, self.decoding)
        digest = files_digest(prototxt, caffemodel)
        path = cache_dir / f"retinaface-{digest[:32]}.r{RECIPE_VERSION}.onnx" if cache_dir is not None else None
        if path is not None and path.is_file():
            try:
                self._session = self._checked(path.read_bytes(), probe, expected)
                log.debug("RetinaFace ONNX export from %s", path)
                return
            except Exception as exc:  # corrupt, truncated or stale: ORT raises several kinds
                log.warning("%s: cached RetinaFace export not usable (%s); rebuilding it", path,
                            str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
        data = build_onnx(prototxt, caffemodel, net)
        self._session = self._checked(data, probe, expected)
        if path is not None:
            try:
                write_private_cache(path, data)
                log.info("cached the RetinaFace detector as ONNX in %s", path)
            except (OSError, EdgedError) as exc:
                log.warning("cannot cache the RetinaFace export in %s (%s); it will be rebuilt next start",
                            path.parent, getattr(exc, "strerror", None) or exc)

    def _checked(self, data: bytes, probe: np.ndarray, expected: list[np.ndarray]) -> Any:
        import onnxruntime as ort

        from edged.onnxrt import session_options

        session = ort.InferenceSession(data, session_options(self.threads), providers=["CPUExecutionProvider"])
        got = session.run(self.outputs, {INPUT_NAME: probe[None]})
        for name, a, b in zip(self.outputs, expected, got, strict=True):
            if a.shape != b.shape or not float(np.abs(a - b).max()) <= HEAD_TOLERANCE:
                raise ExportCheckError(f"head {name} differs from OpenCV DNN's")
        return session

    def detect(self, image: np.ndarray, min_score: float) -> list[tuple[int, int, int, int, float]]:
        h, w = image.shape[:2]
        outs = self._session.run(self.outputs, {INPUT_NAME: np.ascontiguousarray(image)[None]})
        return decode(dict(zip(self.outputs, outs, strict=True)), self.decoding, w, h, min_score)
