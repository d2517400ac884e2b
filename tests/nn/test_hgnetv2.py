"""HGNetv2 backbone: reference state-dict layout, float64 parity, sizes, freezing."""

from __future__ import annotations

import copy
import importlib.util
import json
import math

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from rtdetr.nn.hgnetv2 import HGNETV2_SPECS, HGNetv2

from ..conftest import REFERENCE_DIR

REF = REFERENCE_DIR  # ../shared/reference or $RTDETR_REFERENCE_DIR, like every parity test
MANIFEST = REF / "state_dict_v2_hgnetv2_l.json"
FORWARD = REF / "forward_v2_hgnetv2_l.pt"


def _load_fill():
    path = REF / "fill.py"
    if not path.exists():
        pytest.skip(f"reference helper {path} not found")
    spec = importlib.util.spec_from_file_location("reference_fill", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Wrapper(nn.Module):
    """Gives state-dict keys the reference's ``backbone.`` prefix (fill.py hashes key names)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone


@pytest.mark.skipif(not MANIFEST.exists(), reason=f"reference manifest {MANIFEST} not found")
def test_state_dict_matches_reference_manifest() -> None:
    entries = json.loads(MANIFEST.read_text())
    expected = [(k[len("backbone.") :], list(shape)) for k, shape, _ in entries if k.startswith("backbone.")]
    got = [(k, list(v.shape)) for k, v in HGNetv2(name="L", freeze_norm=True).state_dict().items()]
    assert got == expected


@pytest.mark.skipif(not FORWARD.exists(), reason=f"reference fixture {FORWARD} not found")
def test_forward_parity_with_reference() -> None:
    fill = _load_fill()
    model = _Wrapper(HGNetv2(name="L", return_idx=(1, 2, 3), freeze_norm=True))
    # The fixture's weights were filled in float64 (model converted first), so
    # convert before filling; filling in float32 leaves ~1e-7 rounding errors.
    model.double().eval()
    fill.fill_state_dict(model)
    expected = torch.load(FORWARD)["backbone_feats"]
    with torch.no_grad():
        feats = model.backbone(fill.reference_image(0))
    assert len(feats) == len(expected) == 3
    for got, want in zip(feats, expected):
        got = got[..., ::4, ::4]
        assert got.shape == want.shape
        torch.testing.assert_close(got, want.to(got.dtype), rtol=0.0, atol=1e-8)


@pytest.mark.parametrize("name", ["B0", "B1", "B2", "B3", "B4", "B5", "L", "X", "H"])
def test_every_size_builds_and_runs(name: str) -> None:
    torch.manual_seed(0)
    model = HGNetv2(name=name).eval()
    spec = HGNETV2_SPECS[name]
    assert model.out_channels == [spec.stages[i].out_channels for i in (1, 2, 3)]
    assert model.strides == [8, 16, 32]
    # Non-square, and 97 / 131 are not multiples of 32: every stride-2 step rounds up.
    h, w = 97, 131
    with torch.no_grad():
        feats = model(torch.rand(1, 3, h, w))
    assert [f.shape[1] for f in feats] == model.out_channels
    for f, s in zip(feats, model.strides):
        assert f.shape[-2:] == (math.ceil(h / s), math.ceil(w / s))
        assert torch.isfinite(f).all()
    lab_keys = [k for k in model.state_dict() if ".lab." in k]
    assert bool(lab_keys) == spec.use_lab


def test_lab_parameters_and_override() -> None:
    model = HGNetv2(name="B0")
    scale = model.state_dict()["stem.stem1.lab.scale"]
    assert scale.shape == (1,) and scale.item() == 1.0
    assert model.state_dict()["stem.stem1.lab.bias"].item() == 0.0
    # No LAB after activation-free convs (downsample, light conv1).
    assert not any(k.startswith("stages.1.downsample.lab") for k in model.state_dict())
    assert not any(".conv1.lab." in k for k in model.state_dict())
    assert not any(".lab." in k for k in HGNetv2(name="B0", use_lab=False).state_dict())
    assert any(".lab." in k for k in HGNetv2(name="L", use_lab=True).state_dict())


def test_return_idx_selects_stages() -> None:
    model = HGNetv2(name="B0", return_idx=(0, 3)).eval()
    assert model.out_channels == [64, 1024] and model.strides == [4, 32]
    with torch.no_grad():
        feats = model(torch.rand(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(2, 64, 16, 16), (2, 1024, 2, 2)]
    with pytest.raises(ValueError):
        HGNetv2(name="B0", return_idx=(4,))
    with pytest.raises(ValueError):
        HGNetv2(name="nope")


def test_freeze_at_and_freeze_norm() -> None:
    model = HGNetv2(name="B0", freeze_at=2, freeze_norm=True)
    assert all(not p.requires_grad for p in model.stem.parameters())
    for i, stage in enumerate(model.stages):
        assert all(p.requires_grad == (i >= 2) for p in stage.parameters())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert not any(k.endswith("num_batches_tracked") for k in model.state_dict())

    stem_only = HGNetv2(name="B0", freeze_at=0, freeze_norm=False)
    assert all(not p.requires_grad for p in stem_only.stem.parameters())
    assert all(p.requires_grad for p in stem_only.stages.parameters())
    assert any(k.endswith("num_batches_tracked") for k in stem_only.state_dict())

    trainable = HGNetv2(name="B0", freeze_at=-1, freeze_norm=False)
    assert all(p.requires_grad for p in trainable.parameters())


def test_frozen_norm_matches_batch_norm_in_eval() -> None:
    torch.manual_seed(0)
    plain = HGNetv2(name="B0", freeze_norm=False)
    for m in plain.modules():  # non-trivial statistics so the swap is actually exercised
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.1, 0.1)
    frozen = HGNetv2(name="B0", freeze_norm=True)
    missing, unexpected = frozen.load_state_dict(plain.state_dict(), strict=False)
    assert not missing and all(k.endswith("num_batches_tracked") for k in unexpected)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(plain.eval()(x), frozen.eval()(x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_backward_reaches_trainable_params() -> None:
    model = HGNetv2(name="B0", freeze_at=0)
    feats = model(torch.rand(1, 3, 64, 64))
    sum(f.mean() for f in feats).backward()
    assert all(p.grad is None for p in model.stem.parameters())
    assert model.stages[3].blocks[0].aggregation_excitation_conv.conv.weight.grad is not None


@pytest.mark.parametrize("scale", [1.7, -0.6])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_training_forward_folds_lab_into_bn_with_same_outputs_grads_and_stats(scale, momentum) -> None:
    from rtdetr.nn.hgnetv2 import ConvBNAct

    torch.manual_seed(0)
    fused = ConvBNAct(6, 8, 3, use_lab=True).double().train()
    fused.bn.momentum = momentum
    with torch.no_grad():
        fused.lab.scale.fill_(scale)
        fused.lab.bias.fill_(0.3)
        fused.bn.weight.uniform_(0.5, 1.5)
        fused.bn.bias.uniform_(-0.5, 0.5)
    ref = copy.deepcopy(fused)
    assert fused._lab_folds_into_bn(torch.zeros(1))  # the fast path is the one under test
    x = torch.randn(3, 6, 12, 10, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    for _ in range(2):  # twice: running statistics and the batch counter advance alike
        out = fused(x)
        expected = ref.lab(ref.act(ref.bn(ref.conv(x_ref))))  # the reference's op order
        torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
        g = torch.randn_like(out)
        out.backward(g)
        expected.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-12, rtol=1e-10)
    for (name, p), q in zip(fused.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-10, rtol=1e-10, msg=name)
    for (name, b), c in zip(fused.named_buffers(), ref.buffers()):
        torch.testing.assert_close(b, c, atol=1e-12, rtol=0, msg=name)
    assert not fused.eval()._lab_folds_into_bn(torch.zeros(1))  # eval keeps the reference order
    fused.train().bn.eval()  # e.g. frozen statistics while fine-tuning: running stats, reference order
    assert not fused._lab_folds_into_bn(torch.zeros(1))


def test_stem_pool_without_grad_equals_max_pool() -> None:
    torch.manual_seed(0)
    model = HGNetv2(name="B0").eval()
    x = torch.randn(2, 3, 70, 54).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fast = model.stem(x)
    with torch.enable_grad():
        slow = model.stem(x)  # nn.MaxPool2d, as the reference
    assert torch.equal(fast, slow.detach())


def test_stem_pool_traced_without_grad_uses_the_fast_form_but_onnx_keeps_maxpool(tmp_path) -> None:
    """A TorchScript trace for inference records the max of shifted views (no max_pool2d);
    an ONNX export keeps one MaxPool node for its runtime."""
    torch.manual_seed(0)
    stem = HGNetv2(name="B0").eval().stem
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        graph = str(torch.jit.trace(stem, x).graph)
    assert "max_pool2d" not in graph and "aten::maximum" in graph
    onnx = pytest.importorskip("onnx")
    path = tmp_path / "stem.onnx"
    torch.onnx.export(stem, (x,), str(path), dynamo=False)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "MaxPool" in ops and "Max" not in ops
