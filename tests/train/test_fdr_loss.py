"""D-FINE's FGL and DDF losses on hand-made inputs, their criterion wiring, and a short FDR training run."""

from __future__ import annotations

import math

import pytest
import torch

import rtdetr
from rtdetr.nn.fdr import weighting_function
from rtdetr.train import HungarianMatcher, RTDETRCriterion, total_loss
from rtdetr.train.fdr_loss import ddf_loss, fgl_loss, go_indices

IMGSZ = 160


def test_fgl_equals_its_formula():
    # N = 4, a = 0.5, c = 4: bins W = [-1, -0.5, 0, 0.5, 1].
    project = weighting_function(4, 0.5, 4.0)
    torch.testing.assert_close(project, torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))
    ref = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    # Edge distances (l, t, r, b) = (0.25, -0.75, 0.375, 0.0) in ref units:
    # x1 = 0.5 - 0.2 * 0.75 = 0.35, y1 = 0.5 - 0.4 * -0.25 = 0.6, x2 = 0.5 + 0.2 * 0.875 = 0.675, y2 = 0.5 + 0.4 * 0.5 = 0.7
    x1, y1, x2, y2 = 0.35, 0.6, 0.675, 0.7
    tgt = torch.tensor([[(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]])
    # (left bin, w_left, w_right) per edge, by hand: 0.25 in [0, 0.5]; -0.75 in [-1, -0.5]; 0.375 in [0, 0.5]; 0 at bin 2.
    bins = [(2, 0.5, 0.5), (0, 0.5, 0.5), (2, 0.25, 0.75), (2, 1.0, 0.0)]
    corners = torch.randn(1, 4, 5, generator=torch.Generator().manual_seed(0))
    iou, num_boxes = torch.tensor([0.6]), 2.0
    logp = corners.log_softmax(-1)[0]
    expected = sum(-(wl * logp[e, n] + wr * logp[e, n + 1]) for e, (n, wl, wr) in enumerate(bins)) * 0.6 / num_boxes
    got = fgl_loss(corners, ref, tgt, iou, project, num_boxes)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_fgl_is_smallest_at_the_target_two_bin_distribution():
    project = weighting_function(4, 0.5, 4.0)
    ref = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    tgt = torch.tensor([[0.5, 0.5, 0.3, 0.3]])  # every edge out by 0.25: half bin 2, half bin 3
    ideal = torch.log(torch.tensor([1e-9, 1e-9, 0.5, 0.5, 1e-9])).expand(1, 4, 5)
    one = torch.tensor([1.0])
    best = fgl_loss(ideal, ref, tgt, one, project, 1.0)
    assert best.item() == pytest.approx(4 * math.log(2), rel=1e-4)  # the entropy of (0.5, 0.5), per edge
    for seed in range(5):
        other = torch.randn(1, 4, 5, generator=torch.Generator().manual_seed(seed))
        assert fgl_loss(other, ref, tgt, one, project, 1.0) > best


def test_ddf_zero_for_equal_distributions_positive_otherwise_and_teacher_gets_no_gradient():
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(2, 3, 4, 9, generator=g).requires_grad_(True)
    matched = torch.tensor([[True, False, False], [False, True, False]])
    weight = torch.rand(2, 3, generator=g)
    assert ddf_loss(teacher.detach().clone(), teacher, matched, weight).item() == pytest.approx(0.0, abs=1e-6)
    student = (teacher.detach() + 0.5 * torch.randn(2, 3, 4, 9, generator=g)).requires_grad_(True)
    loss = ddf_loss(student, teacher, matched, weight)
    assert loss.item() > 0
    loss.backward()
    assert teacher.grad is None and student.grad is not None and student.grad.abs().sum() > 0


def test_ddf_equals_its_formula():
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(1, 3, 4, 5, generator=g), torch.randn(1, 3, 4, 5, generator=g)
    matched = torch.tensor([[True, False, False]])
    weight = torch.tensor([[0.8, 0.3, 0.1]])
    t = 5.0
    p_t, p_s = (teacher / t).softmax(-1), (student / t).softmax(-1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(-1).mean(-1)[0] * t * t  # per query, mean over edges
    pos, neg = 0.8 * kl[0], (0.3 * kl[1] + 0.1 * kl[2]) / 2
    expected = (math.sqrt(1) * pos + math.sqrt(2) * neg) / (math.sqrt(1) + math.sqrt(2))
    torch.testing.assert_close(ddf_loss(student, teacher, matched, weight, temperature=t), expected)


def test_go_indices_union_with_majority_target():
    t = torch.tensor
    layer_a = [(t([3, 7]), t([0, 1])), (t([1]), t([0]))]
    layer_b = [(t([3, 5]), t([1, 0])), (t([1]), t([0]))]
    layer_c = [(t([3, 9]), t([0, 1])), (t([2]), t([0]))]
    (q0, t0), (q1, t1) = go_indices([layer_a, layer_b, layer_c])
    # image 0: query 3 matched to target 0 twice and 1 once -> 0; queries 5, 7, 9 once each
    assert q0.tolist() == [3, 5, 7, 9] and t0.tolist() == [0, 0, 1, 1]
    assert q1.tolist() == [1, 2] and t1.tolist() == [0, 0]


# ------------------------------------------------------------------ criterion wiring


def _small(name: str) -> rtdetr.RTDETR:
    torch.manual_seed(0)
    return rtdetr.build_model(
        name, num_classes=3, num_queries=50, num_denoising=10, eval_spatial_size=(IMGSZ, IMGSZ)
    ).train()


def _targets() -> list[dict[str, torch.Tensor]]:
    return [
        {"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.4]])},
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]])},
    ]


def test_reference_model_losses_unchanged_by_the_fdr_weights():
    model = _small("rtdetrv2_hgnetv2_n")
    torch.manual_seed(1)
    out = model(torch.rand(2, 3, IMGSZ, IMGSZ), _targets())
    default = RTDETRCriterion(matcher=HungarianMatcher(), num_classes=3)
    old = RTDETRCriterion(
        matcher=HungarianMatcher(), num_classes=3, weight_dict={"loss_vfl": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    )
    assert {"loss_fgl", "loss_ddf"} <= set(default.weight_dict)
    a, b = default(out, _targets()), old(out, _targets())
    assert a.keys() == b.keys() and not [k for k in a if "fgl" in k or "ddf" in k or "pre" in k]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_fdr_model_gets_fgl_ddf_and_initial_box_terms():
    model = _small("dfine_hgnetv2_n")
    out = model(torch.rand(2, 3, IMGSZ, IMGSZ), _targets())
    losses = RTDETRCriterion(matcher=HungarianMatcher(), num_classes=3)(out, _targets())
    for key in ("loss_fgl", "loss_fgl_aux_0", "loss_fgl_aux_1", "loss_fgl_dn_0", "loss_fgl_dn_2"):
        assert key in losses and losses[key] > 0, key
    for key in ("loss_ddf_aux_0", "loss_ddf_aux_1", "loss_ddf_dn_0", "loss_ddf_dn_1"):
        assert key in losses, key
    assert "loss_ddf" not in losses and "loss_ddf_dn_2" not in losses  # the teacher distils nothing into itself
    for key in ("loss_vfl_pre", "loss_bbox_pre", "loss_giou_pre", "loss_vfl_dn_pre", "loss_giou_dn_pre"):
        assert key in losses, key
    # Explicit weights without the FDR names switch those terms off.
    plain = RTDETRCriterion(
        matcher=HungarianMatcher(), num_classes=3, weight_dict={"loss_vfl": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    )(out, _targets())
    assert not [k for k in plain if "fgl" in k or "ddf" in k]
    with pytest.raises(ValueError, match="loss_dfl"):
        RTDETRCriterion(matcher=HungarianMatcher(), weight_dict={"loss_dfl": 1.0})


def test_fdr_preset_trains_on_a_repeated_batch():
    model = _small("dfine_hgnetv2_n")
    criterion = RTDETRCriterion(matcher=HungarianMatcher(), num_classes=3)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    images = torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(2))
    history, ddf = [], []
    for _ in range(20):
        losses = criterion(model(images, _targets()), _targets())
        loss = total_loss(losses)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
        ddf.append(losses["loss_ddf_aux_0"].item())
    assert sum(history[-5:]) / 5 < 0.9 * sum(history[:5]) / 5, history
    assert ddf[0] == 0 and ddf[-1] > 0  # layers start equal (zero heads), then diverge
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert out["pred_boxes"].shape == (2, 50, 4) and torch.isfinite(out["pred_boxes"]).all()


def test_fdr_without_aux_outputs_keeps_the_final_fgl():
    torch.manual_seed(0)
    model = rtdetr.build_model(
        "dfine_hgnetv2_n",
        num_classes=3,
        num_queries=50,
        num_denoising=10,
        eval_spatial_size=(IMGSZ, IMGSZ),
        aux_loss=False,
    ).train()
    out = model(torch.rand(2, 3, IMGSZ, IMGSZ), _targets())
    losses = RTDETRCriterion(matcher=HungarianMatcher(), num_classes=3)(out, _targets())
    assert losses["loss_fgl"] > 0 and "loss_giou_pre" in losses
    assert not [k for k in losses if "ddf" in k or "_aux_" in k or "_dn_" in k]
    total_loss(losses).backward()
