"""CSPDarknet (C2f stages, SPPF): shapes, strides, the blocks' math, and the preset that uses it."""

import pytest
import torch
import torch.nn.functional as F

import rtdetr
from rtdetr.config import PRESETS, get_config
from rtdetr.nn.cspdarknet import SPPF, C2f, CSPDarknet


def test_maps_channels_and_strides_follow_the_config():
    net = CSPDarknet(widths=(8, 16, 24, 32, 48), depths=(1, 1, 2, 1), return_idx=(1, 2, 3)).eval()
    assert net.out_channels == [24, 32, 48] and net.strides == [8, 16, 32]
    with torch.no_grad():
        outs = net(torch.rand(2, 3, 100, 130))
    # each stride-2 conv rounds up: 100 -> 50 -> 25 -> 13 -> 7 -> 4, 130 -> 65 -> 33 -> 17 -> 9 -> 5
    assert [tuple(o.shape) for o in outs] == [(2, 24, 13, 17), (2, 32, 7, 9), (2, 48, 4, 5)]


def test_stages_after_the_last_returned_one_are_not_built():
    net = CSPDarknet(return_idx=(1,))
    assert len(net.stages) == 2 and net.out_channels == [64] and net.strides == [8]
    assert not any(isinstance(m, SPPF) for m in net.modules())  # SPPF belongs to stage 3


def test_c2f_keeps_every_bottleneck_output():
    block = C2f(6, 8, num_blocks=3)
    # halves of 4 channels: the fusing 1x1 conv reads 2 halves + 3 bottleneck outputs
    assert block.conv1.conv.out_channels == 8 and block.conv2.conv.in_channels == 5 * 4
    x = torch.rand(2, 6, 9, 9, requires_grad=True)
    y = block(x)
    assert y.shape == (2, 8, 9, 9)
    y.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters() if p.requires_grad)


def test_sppf_pools_at_5_9_and_13():
    """Three chained 5x5 stride-1 max pools are 5x5, 9x9 and 13x13 pools of the same input."""
    sppf = SPPF(4, 4).eval()
    seen = []
    sppf.conv2.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    x = torch.randn(1, 4, 11, 12)
    with torch.no_grad():
        sppf(x)
        hidden = sppf.conv1(x)
    cat = seen[0]
    assert cat.shape == (1, 8, 11, 12)
    torch.testing.assert_close(cat[:, :2], hidden)
    for i, k in enumerate((5, 9, 13), start=1):
        torch.testing.assert_close(cat[:, 2 * i : 2 * i + 2], F.max_pool2d(hidden, k, stride=1, padding=k // 2))


def test_bad_layouts_are_clear_errors():
    with pytest.raises(ValueError, match="5 widths and 4 depths"):
        CSPDarknet(widths=(16, 32, 64, 128))
    with pytest.raises(ValueError, match="even"):
        CSPDarknet(widths=(16, 32, 63, 128, 256))
    with pytest.raises(ValueError, match="out of range"):
        CSPDarknet(return_idx=(4,))


def test_preset_is_the_dfine_n_detector_on_this_backbone():
    csp, hg = PRESETS["dfine_cspdarknet_n"], PRESETS["dfine_hgnetv2_n"]
    assert (csp.encoder, csp.decoder, csp.checkpoint_layout) == (hg.encoder, hg.decoder, hg.checkpoint_layout)
    assert get_config("dfine_cspdarknet_n", depths=(1, 1, 1, 1)).backbone.depths == (1, 1, 1, 1)
    model = rtdetr.build_model("dfine_cspdarknet_n", num_classes=3)
    assert isinstance(model.backbone, CSPDarknet)
    assert model.backbone.out_channels == [128, 256] and model.backbone.strides == [16, 32]
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 320, 320))
    assert out["pred_logits"].shape == (1, 300, 3) and torch.isfinite(out["pred_boxes"]).all()
