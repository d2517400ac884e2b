"""Tests for the Hungarian matcher."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rtdetr.ops.boxes import box_cxcywh_to_xyxy, generalized_box_iou
from rtdetr.train.matcher import HungarianMatcher, validate_targets


def _random_boxes(n: int, gen: torch.Generator, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    cxcy = torch.rand(n, 2, generator=gen, dtype=dtype) * 0.6 + 0.2
    wh = torch.rand(n, 2, generator=gen, dtype=dtype) * 0.3 + 0.05
    return torch.cat([cxcy, wh], dim=-1)


def _random_case(sizes: list[int], num_queries: int = 20, num_classes: int = 10, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    bs = len(sizes)
    outputs = {
        "pred_logits": torch.randn(bs, num_queries, num_classes, generator=gen, dtype=torch.float64),
        "pred_boxes": _random_boxes(bs * num_queries, gen).view(bs, num_queries, 4),
    }
    targets = [
        {"labels": torch.randint(0, num_classes, (n,), generator=gen), "boxes": _random_boxes(n, gen)} for n in sizes
    ]
    return outputs, targets


def _assert_empty(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    for idx in pair:
        assert idx.dtype == torch.int64
        assert idx.shape == (0,)


def test_batched_equals_per_image():
    sizes = [3, 0, 5, 1, 7]
    outputs, targets = _random_case(sizes)
    matcher = HungarianMatcher()
    batched = matcher(outputs, targets)
    assert len(batched) == len(sizes)
    for i, n in enumerate(sizes):
        single = matcher({k: v[i : i + 1] for k, v in outputs.items()}, [targets[i]])[0]
        q, t = batched[i]
        assert q.dtype == t.dtype == torch.int64
        assert len(q) == len(t) == n
        assert torch.equal(q, single[0]) and torch.equal(t, single[1])
        # One-to-one on both sides.
        assert len(set(q.tolist())) == n and sorted(t.tolist()) == list(range(n))


def test_images_without_boxes():
    outputs, targets = _random_case([0, 2, 0])
    indices = HungarianMatcher()(outputs, targets)
    _assert_empty(indices[0])
    _assert_empty(indices[2])
    assert len(indices[1][0]) == 2


def test_all_empty_batch():
    outputs, targets = _random_case([0, 0])
    indices = HungarianMatcher()(outputs, targets)
    assert len(indices) == 2
    for pair in indices:
        _assert_empty(pair)


def test_known_permutation():
    # Queries 0..4 are the targets in a shuffled order with confident, correct
    # classes; queries 5..9 are far-away low-score distractors.
    num_classes = 6
    gen = torch.Generator().manual_seed(1)
    tgt_boxes = torch.tensor(
        [
            [0.2, 0.2, 0.1, 0.1],
            [0.7, 0.3, 0.2, 0.1],
            [0.5, 0.5, 0.3, 0.3],
            [0.3, 0.8, 0.1, 0.2],
            [0.8, 0.8, 0.15, 0.15],
        ]
    )
    tgt_labels = torch.tensor([0, 3, 5, 1, 3])
    perm = torch.tensor([3, 0, 4, 1, 2])  # query q predicts target perm[q]
    logits = torch.full((10, num_classes), -6.0)
    logits[torch.arange(5), tgt_labels[perm]] = 6.0
    boxes = torch.cat([tgt_boxes[perm], torch.tensor([[0.95, 0.05, 0.02, 0.02]]).repeat(5, 1)])
    boxes[:5] += 0.01 * torch.rand(5, 4, generator=gen)
    outputs = {"pred_logits": logits[None], "pred_boxes": boxes[None]}
    q, t = HungarianMatcher()(outputs, [{"labels": tgt_labels, "boxes": tgt_boxes}])[0]
    assert q.tolist() == [0, 1, 2, 3, 4]
    assert t.tolist() == perm.tolist()


def _cost_by_hand(p: float, pbox: list[float], tbox: list[float], giou: float) -> float:
    pos = 0.25 * (1 - p) ** 2 * -math.log(p + 1e-8)
    neg = 0.75 * p**2 * -math.log(1 - p + 1e-8)
    l1 = sum(abs(a - b) for a, b in zip(pbox, tbox))
    return 2 * (pos - neg) + 5 * l1 - 2 * giou


def test_assignment_is_optimal_for_written_out_cost():
    # An independent scalar evaluation of the documented cost, brute-forced over
    # every injective assignment of 3 targets to 5 queries.
    outputs, targets = _random_case([3], num_queries=5, num_classes=4, seed=3)
    logits, boxes = outputs["pred_logits"][0], outputs["pred_boxes"][0]
    tgt = targets[0]
    giou = generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(tgt["boxes"]))
    cost = [
        [
            _cost_by_hand(
                torch.sigmoid(logits[q, tgt["labels"][j]]).item(),
                boxes[q].tolist(),
                tgt["boxes"][j].tolist(),
                giou[q, j].item(),
            )
            for j in range(3)
        ]
        for q in range(5)
    ]
    best = min(sum(cost[q][j] for j, q in enumerate(qs)) for qs in itertools.permutations(range(5), 3))
    q, t = HungarianMatcher()(outputs, targets)[0]
    got = sum(cost[qi][ti] for qi, ti in zip(q.tolist(), t.tolist()))
    assert got == pytest.approx(best, abs=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_inputs(dtype):
    outputs, targets = _random_case([4, 2])
    outputs = {k: v.to(dtype) for k, v in outputs.items()}
    targets = [{"labels": t["labels"], "boxes": t["boxes"].to(dtype)} for t in targets]
    indices = HungarianMatcher()(outputs, targets)
    assert [len(q) for q, _ in indices] == [4, 2]


def test_non_finite_cost_raises():
    outputs, targets = _random_case([2, 3])
    outputs["pred_logits"][1, 4, :] = float("nan")
    with pytest.raises(ValueError, match="image 1 .*non-finite"):
        HungarianMatcher()(outputs, targets)


def test_validate_targets_messages():
    good = {"labels": torch.tensor([1]), "boxes": torch.rand(1, 4)}
    with pytest.raises(ValueError, match="target 1 has no 'boxes'"):
        validate_targets([good, {"labels": torch.tensor([1])}])
    with pytest.raises(ValueError, match=r"target 0 'boxes' must be .*\[N, 4\]"):
        validate_targets([{"labels": torch.tensor([1]), "boxes": torch.rand(4)}])
    with pytest.raises(ValueError, match="target 0 has 2 'labels' but 1 'boxes'"):
        validate_targets([{"labels": torch.tensor([1, 2]), "boxes": torch.rand(1, 4)}])
    with pytest.raises(ValueError, match=r"target 1 'labels' must lie in \[0, 5\)"):
        validate_targets([good, {"labels": torch.tensor([5]), "boxes": torch.rand(1, 4)}], num_classes=5)
