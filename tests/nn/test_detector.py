"""Behaviour of the assembled detector beyond reference parity."""

from __future__ import annotations

import pytest
import torch

import rtdetr
from rtdetr.nn.encoder import sincos_position_embedding_2d
from rtdetr.train import HungarianMatcher, RTDETRCriterion, total_loss


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    return rtdetr.build_model("rtdetr_r18vd", num_queries=50).eval()


def _perturb_bn(model):
    # Fresh BN statistics are (0, 1); give them values so fused / batched paths are really exercised.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(1 + 0.1 * torch.rand(m.num_features, generator=g))


@pytest.mark.parametrize("size", [(480, 640), (320, 320), (353, 517)])
def test_dynamic_input_sizes_give_finite_outputs(r18, size):
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        out = r18(x)
    assert out.pred_logits.shape == (1, 50, 80)
    assert out.pred_boxes.shape == (1, 50, 4)
    assert torch.isfinite(out.pred_logits).all() and torch.isfinite(out.pred_boxes).all()
    assert (out.pred_boxes >= 0).all() and (out.pred_boxes <= 1).all()


def test_batch_equals_single_images(r18):
    x = torch.rand(2, 3, 320, 256)
    with torch.no_grad():
        both = r18(x)
        singles = [r18(x[i : i + 1]) for i in range(2)]
    for i, single in enumerate(singles):
        torch.testing.assert_close(both.pred_logits[i], single.pred_logits[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(both.pred_boxes[i], single.pred_boxes[0], atol=1e-5, rtol=1e-4)


def test_eval_idx_stops_early_and_equals_that_layer_of_the_full_model():
    torch.manual_seed(0)
    full = rtdetr.build_model("rtdetr_r18vd", num_queries=30, num_denoising=0).double()
    _perturb_bn(full)
    with torch.no_grad():  # the fresh box heads are zero (identity refinement): make layers differ
        for p in full.decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    early = rtdetr.build_model("rtdetr_r18vd", num_queries=30, num_denoising=0, eval_idx=0).double()
    early.load_state_dict(full.state_dict())
    early.eval()

    calls = []
    hooks = [layer.register_forward_hook(lambda *a: calls.append(1)) for layer in early.decoder.decoder.layers]
    x = torch.rand(1, 3, 256, 256, dtype=torch.float64)
    with torch.no_grad():
        out_early = early(x)
    for h in hooks:
        h.remove()
    assert len(calls) == 1, "eval_idx=0 must run only the first decoder layer"

    # Training mode reports every layer; keep BN in eval mode so the numbers are comparable.
    full.train()
    for m in full.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    with torch.no_grad():
        out_full = full(x)
    layer0 = out_full["aux_outputs"][0]
    torch.testing.assert_close(out_early.pred_logits, layer0["pred_logits"], atol=1e-10, rtol=0)
    torch.testing.assert_close(out_early.pred_boxes, layer0["pred_boxes"], atol=1e-10, rtol=0)
    # and the default (last layer) differs from layer 0
    assert not torch.allclose(out_full.pred_boxes, layer0["pred_boxes"])


def _targets():
    return [
        {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},
        {"labels": torch.tensor([3, 7]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.1, 0.1]])},
    ]


def test_training_forward_with_an_empty_image_backpropagates_everywhere():
    torch.manual_seed(0)
    model = rtdetr.build_model("rtdetr_r18vd", num_queries=40).train()
    criterion = RTDETRCriterion(matcher=HungarianMatcher(), num_classes=80)
    out = model(torch.rand(2, 3, 192, 192), _targets())
    assert len(out["aux_outputs"]) == 3  # decoder layers 0, 1 + encoder head
    assert len(out["dn_aux_outputs"]) == 3
    assert out["dn_meta"]["dn_num_group"] == 50 and out["dn_meta"]["dn_num_split"] == [200, 40]
    assert out["dn_aux_outputs"][0]["pred_logits"].shape == (2, 200, 80)
    loss = total_loss(criterion(out, _targets()))
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad


def test_training_forward_with_all_empty_batch():
    torch.manual_seed(0)
    model = rtdetr.build_model("rtdetr_r18vd", num_queries=40).train()
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}] * 2
    out = model(torch.rand(2, 3, 160, 160), empty)
    assert "dn_aux_outputs" not in out  # nothing to denoise
    loss = total_loss(RTDETRCriterion(matcher=HungarianMatcher(), num_classes=80)(out, empty))
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.decoder.enc_score_head.weight.grad.abs().sum() > 0


def test_training_without_targets_is_a_clear_error():
    model = rtdetr.build_model("rtdetr_r18vd", num_queries=10).train()
    with pytest.raises(ValueError, match="targets"):
        model(torch.rand(1, 3, 64, 64))


def test_bad_images_are_clear_errors(r18):
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        r18(torch.rand(3, 64, 64))
    with pytest.raises(TypeError, match="floating point"):
        r18(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_deploy_matches_eager_in_float32():
    torch.manual_seed(0)
    model = rtdetr.build_model("rtdetr_r18vd", num_queries=30).eval()
    _perturb_bn(model)
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        ref = model(x)
        dep = model.deploy()(x)
    torch.testing.assert_close(dep.pred_logits, ref.pred_logits, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(dep.pred_boxes, ref.pred_boxes, atol=1e-4, rtol=1e-3)
    assert model.deploy() is model  # idempotent


def test_position_embedding_layouts():
    square_ref = sincos_position_embedding_2d(20, 20, 256, layout="reference")
    square_rc = sincos_position_embedding_2d(20, 20, 256, layout="rowcol")
    assert torch.equal(square_ref, square_rc)
    assert square_rc.dtype == torch.float32 and square_rc.shape == (1, 400, 256)
    rect = sincos_position_embedding_2d(3, 5, 8, layout="rowcol")[0]
    # token (row 1, col 4) = index 9: first half encodes the row, second half the column
    omega = 1.0 / 10000 ** (torch.arange(2) / 2)
    expected = torch.cat([(1 * omega).sin(), (1 * omega).cos(), (4 * omega).sin(), (4 * omega).cos()])
    torch.testing.assert_close(rect[9], expected)
    assert not torch.equal(rect, sincos_position_embedding_2d(3, 5, 8, layout="reference")[0])


def test_overrides_and_errors():
    model = rtdetr.build_model("rtdetr_r18vd", num_classes=3, num_queries=20, eval_idx=1)
    assert model.config.num_classes == 3 and model.decoder.eval_idx == 1
    assert model.decoder.enc_score_head.out_features == 3
    assert rtdetr.build_model("rtdetr_r18vd", encoder__hidden_dim=128).encoder.hidden_dim == 128
    with pytest.raises(ValueError, match="ambiguous"):
        rtdetr.build_model("rtdetr_r18vd", hidden_dim=128)
    with pytest.raises(ValueError, match="unknown config field"):
        rtdetr.build_model("rtdetr_r18vd", not_a_field=1)
    with pytest.raises(ValueError, match="unknown model"):
        rtdetr.build_model("rtdetr_r19vd")
    with pytest.raises(ValueError, match="eval_idx"):
        rtdetr.build_model("rtdetr_r18vd", eval_idx=3)
    assert set(rtdetr.list_models()) >= {
        "rtdetr_r18vd",
        "rtdetr_r34vd",
        "rtdetr_r50vd_m",
        "rtdetr_r50vd",
        "rtdetr_r101vd",
    }


def test_frozen_backbone_settings():
    r50 = rtdetr.build_model("rtdetr_r50vd")
    assert not any(p.requires_grad for p in r50.backbone.conv1.parameters())
    assert all(p.requires_grad for p in r50.backbone.res_layers.parameters())
    assert not any(k.startswith("backbone") and "num_batches_tracked" in k for k in r50.state_dict())


def test_too_small_input_for_the_query_count_is_a_clear_error():
    model = rtdetr.build_model("rtdetr_r18vd").eval()  # 300 queries
    with pytest.raises(ValueError, match="fewer than the 300 queries"):
        with torch.no_grad():
            model(torch.rand(1, 3, 64, 64))


def test_channels_last_training_step_matches_contiguous():
    """The trainer's CPU layout (channels-last, per-image sampling, dense gradients) changes no number."""
    import copy

    torch.manual_seed(0)
    model = rtdetr.build_model("rtdetr_r18vd", num_queries=40).double().train()
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    criterion = RTDETRCriterion(matcher=HungarianMatcher(), num_classes=80)
    x = torch.rand(2, 3, 192, 160, dtype=torch.float64)
    losses = []
    for m, images in ((model, x), (model_cl, x.contiguous(memory_format=torch.channels_last))):
        torch.manual_seed(1)  # the same denoising queries
        loss = total_loss(criterion(m(images, _targets()), _targets()))
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], atol=1e-9, rtol=0)
    for (name, p), p_cl in zip(model.named_parameters(), model_cl.parameters()):
        torch.testing.assert_close(p_cl.grad, p.grad, atol=1e-8, rtol=1e-6, msg=name)
