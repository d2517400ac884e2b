"""DEIM's matchability-aware loss, the one-to-many (hybrid matching) losses and their settings."""

from __future__ import annotations

import math

import pytest
import torch

from rtdetr.errors import UserError
from rtdetr.train import HungarianMatcher, RTDETRCriterion
from rtdetr.train.criterion import build_criterion, repeat_targets
from rtdetr.train.train_config import TrainConfig, split_overrides


def _bce(x: float, y: float) -> float:
    p = 1 / (1 + math.exp(-x))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# One image, one box of class 0, two queries, two classes. Query 1's box is the target
# shifted right by 0.05: overlap 0.15 x 0.2 = 0.03, union 0.04 + 0.04 - 0.03 = 0.05, IoU 0.6.
LOGITS = torch.tensor([[[0.3, -1.0], [2.0, 0.5]]], dtype=torch.float64)
TARGET_BOX = torch.tensor([[0.5, 0.5, 0.2, 0.2]], dtype=torch.float64)
PRED_BOXES = torch.tensor([[[0.1, 0.1, 0.05, 0.05], [0.55, 0.5, 0.2, 0.2]]], dtype=torch.float64)
TARGETS = [{"labels": torch.tensor([0]), "boxes": TARGET_BOX}]
IOU = 0.6


def _crit(cls_loss: str, **kw) -> RTDETRCriterion:
    return RTDETRCriterion(
        matcher=HungarianMatcher(), num_classes=2, weight_dict={cls_loss: 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}, **kw
    )


@pytest.mark.parametrize(("alpha", "gamma"), [(1.0, 1.5), (0.5, 2.0)])
def test_mal_equals_its_formula_by_hand(alpha, gamma):
    outputs = {"pred_logits": LOGITS, "pred_boxes": PRED_BOXES}
    losses = _crit("loss_mal", mal_alpha=alpha, mal_gamma=gamma)(outputs, TARGETS)

    def neg(x: float) -> float:
        return alpha * _sig(x) ** gamma * _bce(x, 0.0)

    # Positive (query 1, class 0): BCE towards IoU^gamma with weight 1 (not IoU).
    expected = neg(0.3) + neg(-1.0) + _bce(2.0, IOU**gamma) + neg(0.5)
    assert "loss_vfl" not in losses
    assert losses["loss_mal"].item() == pytest.approx(expected, rel=1e-12)


def test_vfl_weights_the_positive_by_iou_mal_does_not():
    outputs = {"pred_logits": LOGITS, "pred_boxes": PRED_BOXES}
    vfl = _crit("loss_vfl")(outputs, TARGETS)["loss_vfl"].item()
    neg = sum(0.75 * _sig(x) ** 2 * _bce(x, 0.0) for x in (0.3, -1.0, 0.5))
    assert vfl == pytest.approx(neg + IOU * _bce(2.0, IOU), rel=1e-12)


def test_mal_gradient_flows_and_is_finite_on_an_empty_image():
    logits = LOGITS.clone().requires_grad_()
    targets = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4, dtype=torch.float64)}]
    loss = _crit("loss_mal")({"pred_logits": logits, "pred_boxes": PRED_BOXES}, targets)["loss_mal"]
    loss.backward()
    assert torch.isfinite(loss) and (logits.grad > 0).all()  # every score pushed down


def test_default_settings_build_the_reference_criterion():
    crit = build_criterion(TrainConfig(), num_classes=2)
    assert crit.weight_dict == {"loss_vfl": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    assert (crit.alpha, crit.gamma) == (0.75, 2.0)
    mal = build_criterion(TrainConfig(loss_cls="mal", mal_gamma=2.0, mal_alpha=0.5), num_classes=2)
    assert mal.weight_dict == {"loss_mal": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    assert (mal.mal_gamma, mal.mal_alpha) == (2.0, 0.5)


def test_repeat_targets_tiles_boxes_and_labels():
    t = {"labels": torch.tensor([3, 1]), "boxes": torch.rand(2, 4), "image_id": torch.tensor(7)}
    (r,) = repeat_targets([t], 3)
    assert r["labels"].tolist() == [3, 1, 3, 1, 3, 1]
    torch.testing.assert_close(r["boxes"], t["boxes"].repeat(3, 1))
    assert r["image_id"] is t["image_id"]


def _o2m_outputs() -> dict:
    # Main group: query 0 hits the box. One-to-many group: queries 0 and 2 hit it exactly, 1 is far.
    box = [0.5, 0.5, 0.2, 0.2]
    far = [0.1, 0.1, 0.05, 0.05]
    main = {"pred_logits": torch.tensor([[[1.0, -2.0]]]), "pred_boxes": torch.tensor([[box]])}
    o2m = {
        "pred_logits": torch.tensor([[[1.0, -2.0], [0.0, 0.0], [-1.0, 0.5]]]),
        "pred_boxes": torch.tensor([[box, far, box]]),
    }
    return {**main, "o2m_outputs": [o2m]}


def test_o2m_group_matches_each_box_k_times():
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    crit = RTDETRCriterion(matcher=HungarianMatcher(), num_classes=2, o2m_repeat=2, o2m_weight=0.5)
    losses = crit(_o2m_outputs(), targets)
    assert set(losses) == {"loss_vfl", "loss_bbox", "loss_giou", "loss_vfl_o2m_0", "loss_bbox_o2m_0", "loss_giou_o2m_0"}
    # Both exact queries are matched (the far one is not): zero box losses.
    assert losses["loss_bbox_o2m_0"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["loss_giou_o2m_0"].item() == pytest.approx(0.0, abs=1e-6)
    # VFL over 2 matched (IoU 1) queries, normalized by 1 box x k=2, times the 0.5 weight.
    pos = _bce(1.0, 1.0) + _bce(-1.0, 1.0)
    neg = sum(0.75 * _sig(x) ** 2 * _bce(x, 0.0) for x in (-2.0, 0.0, 0.0, 0.5))
    assert losses["loss_vfl_o2m_0"].item() == pytest.approx(0.5 * (pos + neg) / 2, rel=1e-5)


def test_o2m_losses_are_skipped_at_weight_zero_and_absent_without_the_group():
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    outputs = _o2m_outputs()
    off = RTDETRCriterion(matcher=HungarianMatcher(), num_classes=2, o2m_weight=0.0)(outputs, targets)
    plain = RTDETRCriterion(matcher=HungarianMatcher(), num_classes=2)(
        {k: v for k, v in outputs.items() if k != "o2m_outputs"}, targets
    )
    assert set(off) == set(plain) == {"loss_vfl", "loss_bbox", "loss_giou"}
    for k in plain:
        assert torch.equal(off[k], plain[k])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("loss_cls", "focal"),
        ("mal_gamma", -1.0),
        ("o2m_repeat", 0),
        ("o2m_loss_weight", -0.5),
        ("mosaic_prob", 1.5),
        ("mosaic_stop_epoch", -1),
    ],
)
def test_bad_sample_efficiency_settings_name_the_field(field, value):
    with pytest.raises(UserError, match=rf"{field} \(--set {field}=\.\.\.\) must be"):
        TrainConfig(**{field: value})


def test_set_overrides_split_between_model_and_training():
    model, train = split_overrides({"num_queries": 100, "num_o2m_queries": 200, "loss_cls": "mal", "mosaic_prob": 0.5})
    assert model == {"num_queries": 100, "num_o2m_queries": 200}
    assert train == {"loss_cls": "mal", "mosaic_prob": 0.5}


def test_mosaic_stop_epoch_follows_stop_epoch_unless_set():
    assert TrainConfig(stop_epoch=7).mosaic_until == 7
    assert TrainConfig(stop_epoch=7, mosaic_stop_epoch=3).mosaic_until == 3
    assert TrainConfig().mosaic_until is None
