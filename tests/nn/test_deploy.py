"""deploy(): RepVGG fusion and BatchNorm folding leave the function unchanged."""

import copy

import pytest
import torch
from torchvision.ops import FrozenBatchNorm2d

import rtdetr
from rtdetr.nn.hgnetv2 import LearnableAffineBlock


@pytest.mark.parametrize("preset", ["rtdetr_r18vd", "rtdetrv2_hgnetv2_n", "dfine_cspdarknet_n"])
def test_deploy_folds_every_norm_and_keeps_outputs(preset):
    torch.manual_seed(0)
    model = rtdetr.build_model(preset, num_classes=4, num_queries=30, num_top_queries=30).double().eval()
    for m in model.modules():  # non-trivial statistics, so folding has work to do
        if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
        if isinstance(m, LearnableAffineBlock):  # both signs: they fold into different clamps
            m.scale.data.uniform_(-1.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    x = torch.rand(1, 3, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        ref = model(x)
        deployed = copy.deepcopy(model).deploy()
        out = deployed(x)
    norms = [n for n, m in deployed.named_modules() if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d))]
    assert norms == []
    assert not any(isinstance(m, LearnableAffineBlock) for m in deployed.modules())
    torch.testing.assert_close(out["pred_logits"], ref["pred_logits"], atol=1e-9, rtol=0)
    torch.testing.assert_close(out["pred_boxes"], ref["pred_boxes"], atol=1e-9, rtol=0)
    unfolded = copy.deepcopy(model).deploy(fold_bn=False)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in unfolded.modules())
