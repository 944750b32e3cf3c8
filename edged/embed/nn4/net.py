"""OpenFace's nn4.small2 network in PyTorch, as defined for nn4.small2.v1 (openface
`models/openface/nn4.small2.def.lua`, 2016-01-08).

State-dict keys follow OpenFace's PyTorch port (`openface/openfacenet.py`), so
`nn4.small2.v1.pt` loads directly: conv1/bn1/conv2/bn2/conv3/bn3, inception blocks
`incept3a.branches.<b>.<layer>` (conv branches: 0 reduce conv, 1 BN, 3 conv, 4 BN; pool
branch: 0 pool, 1 conv, 2 BN; reduce branch: 0 conv, 1 BN) and `ln` (736 -> 128).

Torch7 semantics reproduced: SpatialLPPooling(p=2) is the square root of the *sum* of
squares over the window; SpatialCrossMapLRN(5, 1e-4, 0.75) with k=1; BatchNorm eps 1e-5;
inception branch outputs smaller than the largest are zero-padded floor((big-small)/2)
before and the rest after, then concatenated along channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edged.distance import EMBEDDING_DIM, L2_EPS

BN_EPS = 1e-5


class L2Pool(nn.Module):
    """Torch7 SpatialLPPooling with p=2: sqrt(sum of squares over each kernel window)."""

    def __init__(self, kernel: int = 3, stride: int = 3) -> None:
        super().__init__()
        self.kernel = kernel
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        summed = F.avg_pool2d(x * x, self.kernel, self.stride) * float(self.kernel * self.kernel)
        if self.training:
            # d sqrt(s)/ds is infinite at s = 0 (all-zero windows after ReLU): keep gradients finite.
            summed = summed.clamp_min(1e-12)
        return summed.sqrt()

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}"


def _conv_bn_relu(cin: int, cout: int, kernel: int = 1, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2), nn.BatchNorm2d(cout, eps=BN_EPS),
            nn.ReLU(inplace=True)]


class Inception(nn.Module):
    """dpnn `nn.Inception`: conv branches, a pool branch and an optional 1x1 reduce branch.

    `branch_names` labels the branches as Keras-OpenFace does ("3x3", "5x5", "pool", "1x1").
    """

    def __init__(self, cin: int, convs: Sequence[tuple[int, int, int, int]], pool: nn.Module,
                 pool_proj: int | None, reduce: int | None) -> None:
        """convs: (reduce channels, out channels, kernel, stride) per conv branch."""
        super().__init__()
        branches: list[nn.Module] = []
        self.branch_names: list[str] = []
        for red, out, kernel, stride in convs:
            branches.append(nn.Sequential(*_conv_bn_relu(cin, red), *_conv_bn_relu(red, out, kernel, stride)))
            self.branch_names.append(f"{kernel}x{kernel}")
        pool_layers: list[nn.Module] = [pool]
        if pool_proj:
            pool_layers += _conv_bn_relu(cin, pool_proj)
        branches.append(nn.Sequential(*pool_layers))
        self.branch_names.append("pool")
        if reduce:
            branches.append(nn.Sequential(*_conv_bn_relu(cin, reduce)))
            self.branch_names.append("1x1")
        self.branches = nn.ModuleList(branches)

    def forward(self, x: Tensor) -> Tensor:
        outs = [branch(x) for branch in self.branches]
        height = max(o.shape[2] for o in outs)
        width = max(o.shape[3] for o in outs)
        padded = []
        for o in outs:
            dh, dw = height - o.shape[2], width - o.shape[3]
            if dh or dw:
                o = F.pad(o, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
            padded.append(o)
        return torch.cat(padded, dim=1)


def _maxpool() -> nn.Module:
    return nn.MaxPool2d(3, stride=2)


class NN4Small2(nn.Module):
    """nn4.small2: 3x96x96 RGB in [0, 1] -> 128-d unit vectors."""

    def __init__(self, embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64, eps=BN_EPS)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.lrn = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
        self.conv2 = nn.Conv2d(64, 64, 1)
        self.bn2 = nn.BatchNorm2d(64, eps=BN_EPS)
        self.conv3 = nn.Conv2d(64, 192, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(192, eps=BN_EPS)
        self.incept3a = Inception(192, [(96, 128, 3, 1), (16, 32, 5, 1)], _maxpool(), 32, 64)
        self.incept3b = Inception(256, [(96, 128, 3, 1), (32, 64, 5, 1)], L2Pool(), 64, 64)
        self.incept3c = Inception(320, [(128, 256, 3, 2), (32, 64, 5, 2)], _maxpool(), None, None)
        self.incept4a = Inception(640, [(96, 192, 3, 1), (32, 64, 5, 1)], L2Pool(), 128, 256)
        self.incept4e = Inception(640, [(160, 256, 3, 2), (64, 128, 5, 2)], _maxpool(), None, None)
        self.incept5a = Inception(1024, [(96, 384, 3, 1)], L2Pool(), 96, 256)
        self.incept5b = Inception(736, [(96, 384, 3, 1)], _maxpool(), 96, 256)
        self.avgpool = nn.AvgPool2d(3, stride=1)
        self.ln = nn.Linear(736, embedding_dim)

    def features(self, x: Tensor) -> Tensor:
        """The 736-d pooled features before the linear layer."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.lrn(x)
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        x = self.maxpool(self.lrn(x))
        x = self.incept3a(x)
        x = self.incept3b(x)
        x = self.incept3c(x)
        x = self.incept4a(x)
        x = self.incept4e(x)
        x = self.incept5a(x)
        x = self.incept5b(x)
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.ln(self.features(x)), p=2.0, dim=1, eps=L2_EPS)
