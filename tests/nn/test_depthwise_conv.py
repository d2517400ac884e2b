"""DepthwiseConv2d: an nn.Conv2d everywhere, float32 under CPU autocast."""

import torch
from torch import nn

import rtdetr
from rtdetr.nn.layers import DepthwiseConv2d


def test_same_as_conv2d_and_float32_under_cpu_autocast():
    torch.manual_seed(0)
    dw = DepthwiseConv2d(16, 3, stride=2, padding=1)
    ref = nn.Conv2d(16, 16, 3, 2, padding=1, groups=16, bias=False)
    ref.load_state_dict(dw.state_dict())  # same keys and shapes
    x = torch.randn(2, 16, 20, 20, requires_grad=True)
    assert torch.equal(dw(x), ref(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = dw(x)
        y_bf16 = ref(x)
    assert y.dtype == torch.float32 and y_bf16.dtype == torch.bfloat16
    assert torch.allclose(y, ref(x), atol=1e-5)
    y.sum().backward()
    assert dw.weight.grad is not None and x.grad is not None


def test_hgnetv2_uses_it_for_its_depthwise_convs_only():
    model = rtdetr.build_model("rtdetrv2_hgnetv2_n", num_classes=3)
    dws = [m for m in model.modules() if isinstance(m, DepthwiseConv2d)]
    assert dws and all(m.groups == m.in_channels == m.out_channels > 1 for m in dws)
    others = [m for m in model.modules() if type(m) is nn.Conv2d]
    assert all(not (m.groups > 1 and m.groups == m.in_channels == m.out_channels) for m in others)
