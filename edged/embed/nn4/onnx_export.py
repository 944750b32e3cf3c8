"""Plain ONNX exports of `NN4Small2`: the honest baselines for other runtimes.

`export_plain_onnx(model, path)` is a straightforward `torch.onnx.export` of the network as defined
in `edged.embed.nn4_net`, with none of edged's rewrites (`edged.embed.nn4_fast`): input 'input'
float32 NCHW (N, 3, 96, 96) RGB in [0, 1] (`edged.embed.nn4.preprocess.to_network_input`), output 'embedding'
(N, 128), dynamic batch, TorchScript exporter, opset 17, constant folding on (which, as always with
this exporter, folds eval-mode batch norm into the convolutions).

LocalResponseNorm is the one layer two runtimes need differently:

* `lrn_op=False` (default, for ONNX Runtime): torch's own decomposition (x^2, 5-D average pool, pow,
  div) as the exporter writes it. Use this for ONNX Runtime, whose `LRN` kernel is a slow scalar loop.
* `lrn_op=True` (for OpenCV DNN): LRN as ONNX's `LRN` op (same formula). OpenCV cannot import torch's
  decomposition (an `If` node and a 5-D pool) but has its own LRN layer.

Benchmarks give each peer runtime the plain export it runs best, so a speed-up reported for edged is
not a slow baseline.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from edged.embed.nn4.net import NN4Small2
from edged.embed.nn4.preprocess import IMG_DIM
from edged.embed.nn4.weights import atomic_write_bytes

PLAIN_INPUT = "input"
PLAIN_OUTPUT = "embedding"
PLAIN_OPSET = 17


class _LRNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
        return nn.functional.local_response_norm(x, size, alpha, beta, k)

    @staticmethod
    def symbolic(g: Any, x: Any, size: int, alpha: float, beta: float, k: float) -> Any:
        return g.op("LRN", x, size_i=size, alpha_f=alpha, beta_f=beta, bias_f=k)


class OnnxOpLRN(nn.Module):
    """`nn.LocalResponseNorm` that exports as one ONNX `LRN` node (computes the same in torch)."""

    def __init__(self, lrn: nn.LocalResponseNorm) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = int(lrn.size), float(lrn.alpha), float(lrn.beta), float(lrn.k)

    def forward(self, x: Tensor) -> Tensor:
        return _LRNFunction.apply(x, self.size, self.alpha, self.beta, self.k)


def plain_onnx_bytes(model: NN4Small2, dynamic_batch: bool = True, lrn_op: bool = False) -> bytes:
    """The plain export of `model` (see the module docstring); `model` itself is not changed."""
    export = copy.deepcopy(model).eval()
    if lrn_op:
        export.lrn = OnnxOpLRN(model.lrn)
    dynamic = {PLAIN_INPUT: {0: "batch"}, PLAIN_OUTPUT: {0: "batch"}} if dynamic_batch else None
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
        torch.onnx.export(export, (torch.zeros(1, 3, IMG_DIM, IMG_DIM),), buffer, dynamo=False,
                          input_names=[PLAIN_INPUT], output_names=[PLAIN_OUTPUT], opset_version=PLAIN_OPSET,
                          dynamic_axes=dynamic, do_constant_folding=True)
    return buffer.getvalue()


def export_plain_onnx(model: NN4Small2, path: str | Path, dynamic_batch: bool = True, lrn_op: bool = False) -> Path:
    """Write the plain ONNX export of `model` to `path` atomically (mode 0600); returns the path.

    `lrn_op=True` for OpenCV DNN, False (default) for ONNX Runtime; `dynamic_batch=False` fixes the batch at 1.
    """
    target = Path(path)
    atomic_write_bytes(target, plain_onnx_bytes(model, dynamic_batch, lrn_op))
    return target
