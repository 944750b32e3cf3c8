"""An inference-only form of `NN4Small2` for CPU runtimes: exact rewrites, the same embeddings.

`FastNN4(model)` is derived from a loaded `NN4Small2` (which stays the single definition of the
network) by rewrites that change the arithmetic only by float rounding:

* batch norm folded into the convolution before it (eval-mode running statistics, in float64);
* the pixel scale (1/255) folded into conv1: the input is the aligned faces as they come, uint8
  NHWC, cast and transposed inside the network (no numpy pass per batch);
* LRN without `Pow`: the channel-window sum of squares as one 2-D average pool over a
  (N, 1, C, H*W) view, and x / s^0.75 as x / (sqrt(s) * sqrt(sqrt(s))) (ONNX Runtime's own LRN
  kernel and its `Pow` are several times slower than the whole rest of the block);
* L2 pooling as sqrt(avg_pool(x^2)) with the window-size factor moved into the next convolution
  (sqrt(9 m) = 3 sqrt(m)); ONNX `LpPool` is a slow scalar kernel in ONNX Runtime;
* the zero padding of smaller inception branch outputs with amounts fixed at construction (96 px
  faces), so the exported graph has no shape arithmetic (no Shape/Gather/If chains);
* optionally (`merge_1x1`) the 1x1 convolutions that read an inception block's input merged into
  one convolution whose output is split by channel (measured neutral in ONNX Runtime, which then
  has to reorder the split outputs; off by default, see docs/performance-nn4.md).

`export_onnx(model)` exports it for ONNX Runtime (`edged.embed.nn4_ort`).
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edged.distance import L2_EPS
from edged.embed.nn4.net import Inception, L2Pool, NN4Small2
from edged.embed.nn4.preprocess import IMG_DIM, PIXEL_SCALE
from edged.embed.ort_runner import INPUT_NAME

#: Bumped whenever the rewrites or the export change: part of every cached export's key.
RECIPE_VERSION = 1
#: ONNX opset of the export.
OPSET = 17
OUTPUT_NAME = "embeddings"
BLOCKS = ("incept3a", "incept3b", "incept3c", "incept4a", "incept4e", "incept5a", "incept5b")


class _Pad(torch.autograd.Function):
    """Zero padding of the last two dims, exported as one ONNX `Pad` with constant amounts
    (torch's exporter builds the amounts with a chain of shape ops, even for constants)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, left: int, right: int, top: int, bottom: int) -> Tensor:
        return F.pad(x, (left, right, top, bottom))

    @staticmethod
    def symbolic(g: Any, x: Any, left: int, right: int, top: int, bottom: int) -> Any:
        pads = g.op("Constant", value_t=torch.tensor([0, 0, top, left, 0, 0, bottom, right], dtype=torch.int64))
        return g.op("Pad", x, pads, mode_s="constant")


class FastLRN(nn.Module):
    """Cross-channel LRN x / (k + alpha/size * sum of x^2 over `size` channels)^beta, for a fixed C x H x W."""

    def __init__(self, lrn: nn.LocalResponseNorm, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = int(lrn.size), float(lrn.alpha), float(lrn.beta), float(lrn.k)
        self.channels, self.height, self.width = shape

    def forward(self, x: Tensor) -> Tensor:
        c, h, w = self.channels, self.height, self.width
        squares = (x * x).reshape(-1, 1, c, h * w)
        # the same window as F.local_response_norm: size // 2 channels before, (size - 1) // 2 after, zeros outside
        mean = F.avg_pool2d(F.pad(squares, (0, 0, self.size // 2, (self.size - 1) // 2)), (self.size, 1), stride=1)
        s = mean.reshape(-1, c, h, w) * self.alpha + self.k
        if self.beta == 0.75:
            root = s.sqrt()
            return x / (root * root.sqrt())
        return x / s.pow(self.beta)

    def extra_repr(self) -> str:
        return (f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, "
                f"shape={self.channels}x{self.height}x{self.width}")


class RootSumPool(nn.Module):
    """sqrt(mean of x^2 over each window): L2 pooling with its kernel*kernel factor left to the next conv."""

    def __init__(self, pool: L2Pool) -> None:
        super().__init__()
        self.kernel, self.stride = pool.kernel, pool.stride

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x * x, self.kernel, self.stride).sqrt()


# ---- rewrites ----

def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, in_scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Weight and bias of `conv(in_scale * x)` followed by eval-mode `bn`, as one convolution."""
    if bn.running_mean is None or bn.running_var is None or conv.bias is None:
        raise ValueError("fold_bn needs a biased conv and batch norm with running statistics")
    gain = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    weight = conv.weight.detach().double() * gain[:, None, None, None] * in_scale
    bias = (conv.bias.detach().double() - bn.running_mean.double()) * gain + bn.bias.detach().double()
    return weight.float(), bias.float()


def _conv(like: nn.Conv2d, weight: Tensor, bias: Tensor) -> nn.Conv2d:
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], like.kernel_size, like.stride, like.padding)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    return conv


def _folded(conv: nn.Module, bn: nn.Module, in_scale: float = 1.0) -> nn.Conv2d:
    assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
    return _conv(conv, *fold_bn(conv, bn, in_scale))


def _branch_sizes(block: Inception, in_channels: int, size: int) -> list[tuple[int, int]]:
    with torch.no_grad():
        x = torch.zeros(1, in_channels, size, size)
        return [(int(o.shape[2]), int(o.shape[3])) for o in (branch(x) for branch in block.eval().branches)]


class FastInception(nn.Module):
    """An `Inception` block with BN folded, static output padding and optionally merged input 1x1 convs."""

    def __init__(self, block: Inception, in_channels: int, size: int, merge_1x1: bool = False) -> None:
        super().__init__()
        self.reduce = nn.ModuleList()  # 1x1 convs reading the block input: conv-branch reduces, then the 1x1 branch
        self.spatial = nn.ModuleList()  # kxk conv of each conv branch
        self.pool: nn.Module = nn.Identity()
        self.pool_proj: nn.Module | None = None
        one_by_one: nn.Conv2d | None = None
        for label, branch in zip(block.branch_names, block.branches, strict=True):
            layers = list(branch)
            if label == "pool":
                pool = layers[0]
                # RootSumPool leaves sqrt(k*k) = k to the projection after it (always there in nn4)
                scale = float(pool.kernel) if isinstance(pool, L2Pool) and len(layers) > 1 else 1.0
                self.pool = RootSumPool(pool) if scale != 1.0 else pool
                if len(layers) > 1:
                    self.pool_proj = _folded(layers[1], layers[2], in_scale=scale)
            elif label == "1x1":
                one_by_one = _folded(layers[0], layers[1])
            else:
                self.reduce.append(_folded(layers[0], layers[1]))
                self.spatial.append(_folded(layers[3], layers[4]))
        if one_by_one is not None:
            self.reduce.append(one_by_one)
        self.has_1x1 = one_by_one is not None
        self.split = [int(c.out_channels) for c in self.reduce]  # type: ignore[union-attr]
        self.merged: nn.Conv2d | None = None
        if merge_1x1:
            convs = list(self.reduce)
            self.merged = nn.Conv2d(in_channels, sum(self.split), 1)
            with torch.no_grad():
                self.merged.weight.copy_(torch.cat([c.weight for c in convs]))  # type: ignore[misc]
                self.merged.bias.copy_(torch.cat([c.bias for c in convs]))  # type: ignore[misc]
            self.reduce = nn.ModuleList()
        sizes = _branch_sizes(block, in_channels, size)
        height, width = max(h for h, _ in sizes), max(w for _, w in sizes)
        #: F.pad amounts (left, right, top, bottom) per branch output, in concat order
        self.pads = [((width - w) // 2, width - w - (width - w) // 2, (height - h) // 2, height - h - (height - h) // 2)
                     for h, w in sizes]

    def forward(self, x: Tensor) -> Tensor:
        if self.merged is not None:
            reduced = list(torch.split(F.relu(self.merged(x)), self.split, dim=1))
        else:
            reduced = [F.relu(conv(x)) for conv in self.reduce]
        outs = [F.relu(conv(r)) for conv, r in zip(self.spatial, reduced, strict=False)]
        pooled = self.pool(x)
        outs.append(F.relu(self.pool_proj(pooled)) if self.pool_proj is not None else pooled)
        if self.has_1x1:
            outs.append(reduced[-1])
        outs = [_Pad.apply(o, *pad) if any(pad) else o for o, pad in zip(outs, self.pads, strict=True)]
        return torch.cat(outs, dim=1)


class FastNN4(nn.Module):
    """`NN4Small2` for inference: uint8 NHWC (N, 96, 96, 3) RGB faces -> (N, 128) unit vectors (float32)."""

    def __init__(self, model: NN4Small2, merge_1x1: bool = False) -> None:
        super().__init__()
        model = model.eval()
        self.conv1 = _folded(model.conv1, model.bn1, in_scale=1.0 / PIXEL_SCALE)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = _folded(model.conv2, model.bn2)
        self.conv3 = _folded(model.conv3, model.bn3)
        with torch.no_grad():  # the fixed sizes each stage sees with 96 px faces
            x = model.maxpool(model.conv1(torch.zeros(1, 3, IMG_DIM, IMG_DIM)))
            self.lrn1 = FastLRN(model.lrn, tuple(x.shape[1:]))
            x = model.conv3(model.conv2(x))
            self.lrn2 = FastLRN(model.lrn, tuple(x.shape[1:]))
            x = model.maxpool(x)
            blocks = []
            for name in BLOCKS:
                block = getattr(model, name)
                blocks.append(FastInception(block, int(x.shape[1]), int(x.shape[2]), merge_1x1))
                x = block(x)
        if tuple(x.shape[2:]) != (3, 3):
            raise ValueError(f"nn4.small2 on {IMG_DIM} px faces should end at 3x3, got {tuple(x.shape[2:])}")
        self.blocks = nn.Sequential(*blocks)
        self.ln = nn.Linear(model.ln.in_features, model.ln.out_features)
        with torch.no_grad():
            self.ln.weight.copy_(model.ln.weight)
            self.ln.bias.copy_(model.ln.bias)
        self.eval()

    def forward(self, faces: Tensor) -> Tensor:
        x = faces.permute(0, 3, 1, 2).float()
        x = self.lrn1(self.maxpool(F.relu(self.conv1(x))))
        x = F.relu(self.conv2(x))
        x = self.maxpool(self.lrn2(F.relu(self.conv3(x))))
        x = self.blocks(x)
        x = self.ln(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(L2_EPS)


def export_onnx(model: NN4Small2, merge_1x1: bool = False, metadata: dict[str, str] | None = None) -> bytes:
    """The ONNX model of `FastNN4(model)`: input 'faces' uint8 (N, 96, 96, 3), output 'embeddings' (N, 128).

    `metadata` goes into the model's metadata_props (e.g. which weights it was made from).
    """
    fast = FastNN4(model, merge_1x1=merge_1x1)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(fast, (torch.zeros(1, IMG_DIM, IMG_DIM, 3, dtype=torch.uint8),), buffer, dynamo=False,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=OPSET,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          do_constant_folding=True)
    data = buffer.getvalue()
    if not metadata:
        return data
    import onnx

    proto = onnx.load_model_from_string(data)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()
