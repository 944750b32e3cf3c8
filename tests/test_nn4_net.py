"""NN4Small2 against the facts of OpenFace's definitions (no weights needed).

Sources: `models/openface/nn4.small2.def.lua` (2016-01-08, the definition nn4.small2.v1 was
trained with) and `openface/openfacenet.py` (OpenFace's PyTorch port, whose state-dict keys
`nn4.small2.v1.pt` uses). Expected values below are transcribed from those files or computed
here by hand from Torch7's documented formulas, never by the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from edged.embed.nn4.net import Inception, L2Pool, NN4Small2

#: openfacenet.py's Inception arguments: (name, inputSize, reduceSize, outputSize, kernelSize).
UPSTREAM_BLOCKS = [
    ("incept3a", 192, (96, 16, 32, 64), (128, 32), (3, 5)),
    ("incept3b", 256, (96, 32, 64, 64), (128, 64), (3, 5)),
    ("incept3c", 320, (128, 32, None, None), (256, 64), (3, 5)),
    ("incept4a", 640, (96, 32, 128, 256), (192, 64), (3, 5)),
    ("incept4e", 640, (160, 64, None, None), (256, 128), (3, 5)),
    ("incept5a", 1024, (96, 96, 256), (384,), (3,)),
    ("incept5b", 736, (96, 96, 256), (384,), (3,)),
]


def _bn(prefix: str, n: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{p}": (n,) for p in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()}


def _conv(prefix: str, cout: int, cin: int, k: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (cout, cin, k, k), f"{prefix}.bias": (cout,)}


def upstream_state_shapes() -> dict[str, tuple[int, ...]]:
    """State-dict keys and shapes of openfacenet.OpenFaceNet, derived from its constructor logic:
    conv branches [conv1x1, BN, ReLU, convKxK, BN, ReLU], then the pool branch [pool, conv, BN,
    ReLU] (conv only if reduceSize has an entry), then the reduce branch [conv, BN, ReLU]."""
    shapes = _conv("conv1", 64, 3, 7) | _bn("bn1", 64) | _conv("conv2", 64, 64, 1) | _bn("bn2", 64)
    shapes |= _conv("conv3", 192, 64, 3) | _bn("bn3", 192)
    for name, cin, reduce, out, kernels in UPSTREAM_BLOCKS:
        for i, k in enumerate(kernels):
            p = f"{name}.branches.{i}"
            shapes |= _conv(f"{p}.0", reduce[i], cin, 1) | _bn(f"{p}.1", reduce[i])
            shapes |= _conv(f"{p}.3", out[i], reduce[i], k) | _bn(f"{p}.4", out[i])
        i = len(kernels)
        if len(reduce) > i and reduce[i] is not None:
            shapes |= _conv(f"{name}.branches.{i}.1", reduce[i], cin, 1) | _bn(f"{name}.branches.{i}.2", reduce[i])
        if len(reduce) > i + 1 and reduce[i + 1] is not None:
            p = f"{name}.branches.{i + 1}"
            shapes |= _conv(f"{p}.0", reduce[i + 1], cin, 1) | _bn(f"{p}.1", reduce[i + 1])
    return shapes | {"ln.weight": (128, 736), "ln.bias": (128,)}


def test_state_dict_keys_are_openface_ports():
    ours = {k: tuple(v.shape) for k, v in NN4Small2().state_dict().items()}
    assert ours == upstream_state_shapes()


def test_parameter_count_matches_lua_definition():
    # nn4.small2.def.lua: "Number of Parameters from net:getParameters() with embSize=128: 3733968"
    assert sum(p.numel() for p in NN4Small2().parameters()) == 3_733_968


def test_block_output_sizes_for_96px_input():
    model = NN4Small2().eval()
    sizes = {}
    for name, block in model.named_children():
        if isinstance(block, Inception):
            block.register_forward_hook(lambda m, i, o, name=name: sizes.__setitem__(name, tuple(o.shape[1:])))
    with torch.inference_mode():
        features = model.features(torch.rand(2, 3, 96, 96))
    assert sizes == {"incept3a": (256, 12, 12), "incept3b": (320, 12, 12), "incept3c": (640, 6, 6),
                     "incept4a": (640, 6, 6), "incept4e": (1024, 3, 3), "incept5a": (736, 3, 3),
                     "incept5b": (736, 3, 3)}
    assert features.shape == (2, 736)


def test_pool_branches_follow_the_january_2016_definition():
    model = NN4Small2()
    pools = {name: block.branches[block.branch_names.index("pool")][0]
             for name, block in model.named_children() if isinstance(block, Inception)}
    for name in ("incept3a", "incept3c", "incept4e", "incept5b"):
        pool = pools[name]
        assert isinstance(pool, nn.MaxPool2d) and (pool.kernel_size, pool.stride, pool.padding) == (3, 2, 0), name
    for name in ("incept3b", "incept4a", "incept5a"):
        assert isinstance(pools[name], L2Pool) and (pools[name].kernel, pools[name].stride) == (3, 3), name


def test_l2_pool_is_the_root_of_the_window_sum():
    x = torch.arange(-18.0, 18.0).reshape(1, 1, 6, 6)
    out = L2Pool(3, 3).eval()(x)
    expected = [[math.sqrt(sum(float(x[0, 0, r, c]) ** 2 for r in range(3 * i, 3 * i + 3)
                               for c in range(3 * j, 3 * j + 3))) for j in range(2)] for i in range(2)]
    np.testing.assert_allclose(out[0, 0].numpy(), expected, rtol=1e-6)
    torch.testing.assert_close(out, nn.LPPool2d(2, 3, 3)(x))


def test_smaller_branch_outputs_are_zero_padded_floor_half_before():
    """dpnn DepthConcat: a 5x5 branch output inside 12x12 starts at floor((12-5)/2) = 3."""
    block = Inception(1, [], nn.MaxPool2d(3, stride=2), None, 1).eval()
    with torch.no_grad():
        reduce_conv = block.branches[1][0]
        reduce_conv.weight.fill_(1.0)
        reduce_conv.bias.zero_()
    x = torch.rand(1, 1, 12, 12) + 0.1
    with torch.inference_mode():
        out = block(x)
    assert out.shape == (1, 2, 12, 12)
    pooled = np.array([[x[0, 0, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max().item() for j in range(5)] for i in range(5)])
    channel = out[0, 0].numpy()
    np.testing.assert_allclose(channel[3:8, 3:8], pooled, rtol=1e-6)
    mask = np.ones((12, 12), bool)
    mask[3:8, 3:8] = False
    assert not channel[mask].any()


def test_lrn_is_torch7_cross_map_lrn():
    """SpatialCrossMapLRN(5, 1e-4, 0.75, k=1): x_c / (k + alpha/size * sum_{|c'-c|<=2} x_c'^2)^beta."""
    model = NN4Small2()
    x = torch.randn(1, 7, 3, 3) * 20
    out = model.lrn(x).numpy()[0]
    a = x.numpy()[0].astype(np.float64)
    for c in range(7):
        window = (a[max(0, c - 2):c + 3] ** 2).sum(axis=0)
        np.testing.assert_allclose(out[c], a[c] / (1 + 1e-4 / 5 * window) ** 0.75, rtol=1e-5)


def test_batchnorm_eps_and_unit_outputs_independent_of_batch():
    model = NN4Small2().eval()
    assert {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-5}
    x = torch.rand(5, 3, 96, 96)
    with torch.inference_mode():
        batch = model(x)
        single = model(x[2:3])
    torch.testing.assert_close(batch.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(batch[2:3], single, atol=1e-5, rtol=1e-4)
