"""Dense task-aligned supervision of the encoder tokens: the assignment and losses on hand-made
inputs, and the model option (training-only outputs, eval unchanged)."""

from __future__ import annotations

import math

import pytest
import torch

import rtdetr
from rtdetr.ops.boxes import box_cxcywh_to_xyxy, box_iou, paired_generalized_box_iou
from rtdetr.train.criterion import build_criterion
from rtdetr.train.dense_loss import dense_losses, task_aligned_assign
from rtdetr.train.train_config import TrainConfig

# A 4 x 4 grid of tokens (centres at 0.125, 0.375, 0.625, 0.875), row-major.
_C = torch.tensor([0.125, 0.375, 0.625, 0.875])
CENTERS = torch.stack(torch.meshgrid(_C, _C, indexing="xy"), -1).reshape(16, 2)  # [16, (x, y)]
VALID = torch.ones(16, dtype=torch.bool)


def _token_boxes(side: float = 0.25) -> torch.Tensor:
    return torch.cat([CENTERS, torch.full((16, 2), side)], -1)  # [16, 4] cxcywh


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_positives_are_the_topk_aligned_candidates_inside_the_box():
    gt = torch.tensor([[0.5, 0.5, 0.5, 0.5]])  # covers the 4 central tokens (5, 6, 9, 10)
    boxes = _token_boxes()
    boxes[5] = torch.tensor([0.5, 0.5, 0.5, 0.5])  # exact: IoU 1
    boxes[0] = torch.tensor([0.5, 0.5, 0.5, 0.5])  # exact too, but its centre is outside the box
    logits = torch.full((16, 2), _logit(0.25))
    logits[6, 1] = _logit(0.81)  # token 6 scores the class much higher
    target, tboxes, pos = task_aligned_assign(
        logits, boxes, CENTERS, VALID, torch.tensor([1]), gt, topk=2, alpha=0.5, beta=6.0
    )
    iou = box_iou(box_cxcywh_to_xyxy(gt), box_cxcywh_to_xyxy(boxes))[0][0]
    score = logits[:, 1].sigmoid()
    align = score.sqrt() * iou.pow(6)
    # candidates 5, 6, 9, 10; token 5 (IoU 1) and token 6 (higher score) lead the alignment
    assert pos.nonzero().flatten().tolist() == [5, 6]
    expected = align[[5, 6]] / align[[5, 6]].max() * iou[[5, 6]].max()
    torch.testing.assert_close(target[[5, 6], 1], expected)
    assert target[:, 0].abs().sum() == 0 and target[pos.logical_not()].abs().sum() == 0
    assert torch.equal(tboxes[pos], gt.expand(2, -1))


def test_a_token_claimed_by_two_boxes_keeps_the_one_it_overlaps_most():
    gts = torch.tensor([[0.5, 0.5, 0.9, 0.9], [0.375, 0.375, 0.3, 0.3]])  # both hold token 5's centre
    boxes = _token_boxes()
    boxes[5] = torch.tensor([0.375, 0.375, 0.3, 0.3])  # overlaps gt 1 exactly
    logits = torch.zeros(16, 3)
    target, tboxes, pos = task_aligned_assign(logits, boxes, CENTERS, VALID, torch.tensor([0, 2]), gts, topk=16)
    assert pos[5] and torch.equal(tboxes[5], gts[1])
    assert target[5, 2] > 0 and target[5, 0] == 0
    # gt 0 keeps the other candidates inside it
    assert pos.sum() == int(((CENTERS - 0.5).abs() < 0.45).all(-1).sum())


def test_a_box_between_centres_gets_its_nearest_token_and_invalid_tokens_get_nothing():
    tiny = torch.tensor([[0.24, 0.22, 0.02, 0.02]])  # no centre inside; token 0 (0.125, 0.125) is nearest
    boxes = _token_boxes()
    _, _, pos = task_aligned_assign(torch.zeros(16, 1), boxes, CENTERS, VALID, torch.tensor([0]), tiny)
    assert pos.nonzero().flatten().tolist() == [0]
    valid = VALID.clone()
    valid[0] = False
    _, _, pos = task_aligned_assign(torch.zeros(16, 1), boxes, CENTERS, valid, torch.tensor([0]), tiny)
    assert pos.nonzero().flatten().tolist() == [1]  # then token 1 (0.375, 0.125)


def test_no_boxes_no_positives():
    target, _, pos = task_aligned_assign(
        torch.zeros(16, 2), _token_boxes(), CENTERS, VALID, torch.zeros(0, dtype=torch.long), torch.zeros(0, 4)
    )
    assert not pos.any() and target.abs().sum() == 0


@pytest.mark.parametrize("cls_loss", ["bce", "vfl"])
def test_losses_equal_their_formulas(cls_loss):
    torch.manual_seed(0)
    logits = torch.randn(2, 16, 2, requires_grad=True)
    boxes = (_token_boxes() + 0.03 * torch.randn(2, 16, 4)).clamp(0.05, 0.95)
    valid = VALID.clone()
    valid[15] = False
    targets = [
        {"labels": torch.tensor([1, 0]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.25, 0.75, 0.5, 0.5]])},
        {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)},
    ]
    dense = {"pred_logits": logits, "pred_boxes": boxes, "anchor_centers": CENTERS, "valid": valid}
    got = dense_losses(dense, targets, topk=3, cls_loss=cls_loss)
    t0, b0, p0 = task_aligned_assign(logits[0].detach(), boxes[0], CENTERS, valid, **_gt(targets[0]), topk=3)
    assert 4 <= p0.sum() <= 6  # 3 per box; they share candidate token 9
    total = t0.sum().clamp(min=1.0)  # "at least 1"
    p = logits.detach().sigmoid()
    scores = torch.stack([t0, torch.zeros(16, 2)])
    bce = -(scores * p.log() + (1 - scores) * (1 - p).log())
    if cls_loss == "vfl":
        bce = bce * (0.75 * p.pow(2) * (scores == 0) + scores)
    torch.testing.assert_close(got["loss_dense_cls"], (bce.sum(-1) * valid).sum() / total)
    w = t0.sum(-1)[p0]
    l1 = ((boxes[0][p0] - b0[p0]).abs().sum(-1) * w).sum() / total
    giou = paired_generalized_box_iou(box_cxcywh_to_xyxy(boxes[0][p0]), box_cxcywh_to_xyxy(b0[p0]))
    torch.testing.assert_close(got["loss_dense_bbox"], l1)
    torch.testing.assert_close(got["loss_dense_giou"], ((1 - giou) * w).sum() / total)
    got["loss_dense_cls"].backward()
    assert logits.grad[0, 15].abs().sum() == 0  # the invalid token is not trained


def _gt(t):
    return {"labels": t["labels"], "gt_boxes": t["boxes"]}


TARGETS = [
    {"labels": torch.tensor([3, 1]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.2]])},
    {"labels": torch.tensor([4]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
]


def _model(dense: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return rtdetr.build_model("rtdetrv2_hgnetv2_n", num_classes=5, num_queries=20, dense_enc_outputs=dense)


def test_option_is_off_in_presets_and_changes_no_weights_or_eval_outputs():
    assert rtdetr.get_config("rtdetrv2_hgnetv2_n").decoder.dense_enc_outputs is False
    plain, dense = _model(False).eval(), _model(True).eval()
    dense.load_state_dict(plain.state_dict())  # strict: nothing of its own
    x = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        a, b = plain(x), dense(x)
    assert a.keys() == b.keys() == {"pred_logits", "pred_boxes"}
    assert torch.equal(a["pred_logits"], b["pred_logits"]) and torch.equal(a["pred_boxes"], b["pred_boxes"])


def test_training_adds_every_tokens_outputs_and_the_criterion_their_losses():
    plain, dense = _model(False).train(), _model(True).train()
    dense.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 160, 160)
    torch.manual_seed(1)
    a = plain(x, TARGETS)
    torch.manual_seed(1)
    b = dense(x, TARGETS)
    d = b["enc_dense_outputs"]
    tokens = 10 * 10 + 5 * 5  # strides 16 and 32 at 160 px
    assert d["pred_logits"].shape == (2, tokens, 5) and d["pred_boxes"].shape == (2, tokens, 4)
    assert d["anchor_centers"].shape == (tokens, 2) and d["valid"].shape == (tokens,)
    torch.testing.assert_close(d["anchor_centers"][0], torch.tensor([0.05, 0.05]))
    # The selected queries are the same tokens with the same boxes: the main outputs agree.
    torch.testing.assert_close(b["pred_boxes"], a["pred_boxes"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b["aux_outputs"][-1]["pred_boxes"], a["aux_outputs"][-1]["pred_boxes"])
    crit = build_criterion(TrainConfig(dense_loss_weight=0.5), 5)
    la, lb = crit(a, TARGETS), crit(b, TARGETS)
    assert set(lb) - set(la) == {"loss_dense_cls", "loss_dense_bbox", "loss_dense_giou"}
    raw = dense_losses(d, TARGETS)
    torch.testing.assert_close(lb["loss_dense_bbox"], raw["loss_dense_bbox"] * 5.0 * 0.5)
    torch.testing.assert_close(lb["loss_dense_cls"], raw["loss_dense_cls"] * 1.0 * 0.5)
    sum(lb.values()).backward()
    assert dense.decoder.enc_score_head.weight.grad.abs().sum() > 0
    off = build_criterion(TrainConfig(dense_loss_weight=0.0), 5)(b, TARGETS)
    assert not any("dense" in k for k in off)


def test_bad_settings_are_refused():
    from rtdetr.errors import UserError

    with pytest.raises(UserError, match="dense_cls_loss .* must be one of bce, vfl, got 'focal'"):
        TrainConfig(dense_cls_loss="focal")
    with pytest.raises(UserError, match="dense_topk"):
        TrainConfig(dense_topk=0)
    with pytest.raises(ValueError, match="2 targets for a batch of 1"):
        dense_losses(
            {
                "pred_logits": torch.zeros(1, 16, 2),
                "pred_boxes": _token_boxes()[None],
                "anchor_centers": CENTERS,
                "valid": VALID,
            },
            TARGETS,
        )


def test_bce_on_an_image_without_boxes_pushes_every_score_down():
    logits = torch.zeros(1, 16, 2, requires_grad=True)
    dense = {"pred_logits": logits, "pred_boxes": _token_boxes()[None], "anchor_centers": CENTERS, "valid": VALID}
    loss = dense_losses(dense, [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}])
    torch.testing.assert_close(loss["loss_dense_cls"], torch.tensor(32 * math.log(2.0)))  # total clamped at 1
    loss["loss_dense_cls"].backward()
    torch.testing.assert_close(logits.grad, torch.full_like(logits, 0.5))
