"""Tests for the RT-DETR criterion (VFL + L1 + GIoU over all heads)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from rtdetr.train import HungarianMatcher, RTDETRCriterion, total_loss

REPO = Path(__file__).resolve().parents[2]
DEFAULT_FIXTURE = REPO / ".." / "shared" / "reference" / "loss_seed0.pt"
FIXTURE = Path(os.environ.get("RTDETR_LOSS_FIXTURE", DEFAULT_FIXTURE))


def _criterion(num_classes: int = 80) -> RTDETRCriterion:
    return RTDETRCriterion(matcher=HungarianMatcher(), num_classes=num_classes)


def _random_outputs(bs: int, num_queries: int = 30, num_classes: int = 80, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    cxcy = torch.rand(bs, num_queries, 2, generator=gen) * 0.6 + 0.2
    wh = torch.rand(bs, num_queries, 2, generator=gen) * 0.3 + 0.05
    boxes = torch.cat([cxcy, wh], dim=-1)
    return {
        "pred_logits": torch.randn(bs, num_queries, num_classes, generator=gen).requires_grad_(),
        "pred_boxes": boxes.requires_grad_(),
    }


def test_loss_matches_reference_fixture():
    if not FIXTURE.exists():
        pytest.skip(f"loss fixture not found at {FIXTURE} (set RTDETR_LOSS_FIXTURE)")
    ref = torch.load(FIXTURE)
    losses = _criterion()(ref["outputs"], ref["targets"])
    expected = ref["expected_losses"]
    assert set(losses) == set(expected)
    for name, value in expected.items():
        assert losses[name].item() == pytest.approx(float(value), abs=1e-8, rel=0), name
    assert total_loss(losses).item() == pytest.approx(float(ref["expected_total"]), abs=1e-8, rel=0)


def test_vfl_loss_by_hand():
    # One image, one box, two queries, two classes. Query 1 predicts the box
    # exactly (IoU 1), so its class-0 target score is 1 and its BCE weight is 1;
    # all other (query, class) pairs are negatives weighted by 0.75 * p^2.
    logits = torch.tensor([[[0.3, -1.0], [2.0, 0.5]]], dtype=torch.float64)
    box = torch.tensor([[0.5, 0.5, 0.2, 0.2]], dtype=torch.float64)
    far = torch.tensor([[0.1, 0.1, 0.05, 0.05]], dtype=torch.float64)
    outputs = {"pred_logits": logits, "pred_boxes": torch.cat([far, box])[None]}
    targets = [{"labels": torch.tensor([0]), "boxes": box}]
    losses = _criterion(num_classes=2)(outputs, targets)

    def bce(x: float, y: float) -> float:
        p = 1 / (1 + math.exp(-x))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    def neg(x: float) -> float:
        p = 1 / (1 + math.exp(-x))
        return 0.75 * p**2 * bce(x, 0.0)

    expected = neg(0.3) + neg(-1.0) + bce(2.0, 1.0) + neg(0.5)
    assert losses["loss_vfl"].item() == pytest.approx(expected, rel=1e-12)
    assert losses["loss_bbox"].item() == pytest.approx(0.0, abs=1e-12)
    assert losses["loss_giou"].item() == pytest.approx(0.0, abs=1e-12)


def test_all_empty_batch_loss_is_finite_and_has_gradient():
    outputs = _random_outputs(2)
    outputs["aux_outputs"] = [_random_outputs(2, seed=1)]
    outputs["dn_aux_outputs"] = [_random_outputs(2, num_queries=4, seed=2)]
    outputs["dn_meta"] = {
        "dn_positive_idx": (torch.zeros(0, dtype=torch.int64),) * 2,
        "dn_num_group": 1,
        "dn_num_split": [4, 30],
    }
    targets = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)} for _ in range(2)]
    losses = _criterion()(outputs, targets)
    assert len(losses) == 9
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_vfl"] > 0  # scores are still pushed down
    assert losses["loss_bbox"] == 0 and losses["loss_giou"] == 0
    total_loss(losses).backward()
    grad = outputs["pred_logits"].grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # Pushing scores down means a positive gradient on every logit.
    assert (grad > 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_loss(dtype):
    gen = torch.Generator().manual_seed(0)
    outputs = _random_outputs(2)
    targets = [
        {
            "labels": torch.randint(0, 80, (n,), generator=gen),
            "boxes": torch.rand(n, 4, generator=gen) * 0.3 + 0.2,
        }
        for n in (3, 0)
    ]
    reference = _criterion()(outputs, targets)
    low = {k: v.detach().to(dtype).requires_grad_() for k, v in outputs.items()}
    losses = _criterion()(low, targets)
    total_loss(losses).backward()
    assert low["pred_logits"].grad.dtype == dtype and torch.isfinite(low["pred_logits"].grad).all()
    for name, value in losses.items():
        assert value.dtype == torch.float32
        assert value.item() == pytest.approx(reference[name].item(), rel=5e-2, abs=1e-2), name


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ({"boxes": torch.rand(2, 4)}, "target 1 has no 'labels'"),
        ({"labels": torch.tensor([1, 2])}, "target 1 has no 'boxes'"),
        ({"labels": torch.tensor([1, 2]), "boxes": torch.rand(2, 5)}, "target 1 'boxes'"),
        ({"labels": torch.tensor([1.0, 2.0]), "boxes": torch.rand(2, 4)}, "target 1 'labels'"),
        ({"labels": torch.tensor([1, 2]), "boxes": torch.rand(3, 4)}, "target 1 has 2 'labels' but 3"),
        ({"labels": torch.tensor([1, 80]), "boxes": torch.rand(2, 4)}, r"target 1 'labels' must lie in \["),
    ],
)
def test_bad_target_raises(target, match):
    good = {"labels": torch.tensor([3]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}
    with pytest.raises(ValueError, match=match):
        _criterion()(_random_outputs(2), [good, target])


def test_dn_positive_idx_size_mismatch_raises():
    outputs = _random_outputs(1)
    outputs["dn_aux_outputs"] = [_random_outputs(1, num_queries=4)]
    outputs["dn_meta"] = {
        "dn_positive_idx": (torch.tensor([0, 1, 2]),),
        "dn_num_group": 2,
        "dn_num_split": [4, 30],
    }
    targets = [{"labels": torch.tensor([1, 2]), "boxes": torch.rand(2, 4) * 0.3 + 0.2}]
    with pytest.raises(ValueError, match=r"dn_positive_idx\[0\] has 3 entries, expected 2 boxes x 2"):
        _criterion()(outputs, targets)


def test_agnostic_query_selection_trains_the_objectness_head():
    """With 'agnostic' selection the encoder head has one logit: its loss treats every target as class 0."""
    import rtdetr

    torch.manual_seed(0)
    model = rtdetr.build_model(
        "rtdetrv2_hgnetv2_n", num_classes=5, num_queries=20, query_select_method="agnostic"
    ).train()
    targets = [
        {"labels": torch.tensor([3, 1]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.2]])},
        {"labels": torch.tensor([4]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
    ]
    out = model(torch.rand(2, 3, 128, 128), targets)
    enc = out["aux_outputs"][-1]
    assert enc["pred_logits"].shape[-1] == 1
    crit = RTDETRCriterion(matcher=HungarianMatcher(), num_classes=5)
    losses = crit(out, targets)
    last = len(out["aux_outputs"]) - 1
    zeros = [{**t, "labels": torch.zeros_like(t["labels"])} for t in targets]
    num_boxes = crit.num_boxes(targets, torch.device("cpu"))
    expected = crit.loss_vfl(enc, zeros, crit.matcher(enc, zeros), num_boxes) * crit.weight_dict["loss_vfl"]
    torch.testing.assert_close(losses[f"loss_vfl_aux_{last}"], expected)
    total = total_loss(losses)
    assert torch.isfinite(total)
    total.backward()
    assert model.decoder.enc_score_head.weight.grad.abs().sum() > 0
