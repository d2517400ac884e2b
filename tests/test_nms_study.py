"""The NMS study's measured functions (benchmarks/nms_study/ops.py) on small hand-made tensors."""

from __future__ import annotations

import pytest
import torch

from benchmarks.nms_study import ops as nms_ops


def _raw(boxes_xywh: list[list[float]], scores: list[list[float]]) -> torch.Tensor:
    """One image's YOLO-layout output [4 + nc, A] from per-anchor boxes and per-anchor class scores."""
    return torch.cat([torch.tensor(boxes_xywh).T, torch.tensor(scores).T], dim=0)


# Anchors 0 and 1 overlap (IoU 340 / 460 = 0.74), anchor 2 is far away; two classes.
RAW = _raw(
    [[50, 50, 20, 20], [53, 50, 20, 20], [200, 200, 10, 10]],
    [[0.9, 0.02], [0.8, 0.3], [0.004, 0.6]],
)


def test_count_above_pairs_and_anchors():
    pairs, anchors = nms_ops.count_above(RAW[4:], [0.001, 0.01, 0.25, 0.85])
    assert pairs == [6, 5, 4, 1]  # pairs strictly above each threshold
    assert anchors == [3, 3, 3, 1]  # anchors whose best class is above


def test_candidates_multi_label_vs_best_class():
    boxes, scores, cls = nms_ops.yolo_candidates(RAW, 0.25)
    pairs = sorted(zip(scores.tolist(), cls.tolist()))
    assert [c for _, c in pairs] == [1, 1, 0, 0] and [s for s, _ in pairs] == pytest.approx([0.3, 0.6, 0.8, 0.9])
    i = scores.tolist().index(pytest.approx(0.9))
    assert boxes[i].tolist() == [40.0, 40.0, 60.0, 60.0]  # xywh -> xyxy
    _, scores, cls = nms_ops.yolo_candidates(RAW, 0.25, multi_label=False)
    assert sorted(scores.tolist()) == pytest.approx([0.6, 0.8, 0.9]) and sorted(cls.tolist()) == [0, 0, 1]
    _, scores, _ = nms_ops.yolo_candidates(RAW, 0.01, max_nms=2)
    assert scores.tolist() == pytest.approx([0.9, 0.8])  # the cap keeps the best


def test_nms_is_class_aware_and_follows_iou():
    cand = nms_ops.yolo_candidates(RAW, 0.25)
    _, scores, cls = nms_ops.yolo_nms(cand, iou=0.7)
    # class 0: anchor 1 (0.8) suppressed by anchor 0 (0.9); class 1 boxes do not overlap each other
    assert scores.tolist() == pytest.approx([0.9, 0.6, 0.3]) and cls.tolist() == [0, 1, 1]
    _, scores, _ = nms_ops.yolo_nms(cand, iou=0.8)  # overlap 0.74 is below this IoU: both survive
    assert scores.tolist() == pytest.approx([0.9, 0.8, 0.6, 0.3])
    _, scores, _ = nms_ops.yolo_nms(cand, iou=0.8, max_det=2)
    assert scores.tolist() == pytest.approx([0.9, 0.8])


def test_timing_helpers():
    calls = []
    out, seconds = nms_ops.timed(lambda: calls.append(1), int, "ff", base=16)  # args and kwargs reach fn
    assert out == 255 and seconds >= 0 and len(calls) == 2  # synced before and after
    s = nms_ops.summarize_ms([0.001, 0.003, 0.002, 0.010])
    assert s["median_ms"] == pytest.approx(2.5) and s["mean_ms"] == pytest.approx(4.0)
    assert s["p90_ms"] == pytest.approx(10.0) and s["n"] == 4
