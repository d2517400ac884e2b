from __future__ import annotations

import torch

from rtdetr.ops.boxes import (
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    generalized_box_iou,
    paired_box_iou,
    paired_generalized_box_iou,
)


def _boxes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cxcy = torch.rand(n, 2, generator=g, dtype=torch.float64)
    wh = 0.05 + 0.5 * torch.rand(n, 2, generator=g, dtype=torch.float64)
    return box_cxcywh_to_xyxy(torch.cat([cxcy, wh], 1))


def test_format_round_trip():
    b = _boxes(7, 0)
    torch.testing.assert_close(box_cxcywh_to_xyxy(box_xyxy_to_cxcywh(b)), b)


def test_known_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [4.0, 4.0, 5.0, 5.0]])
    iou, union = box_iou(a, b)
    torch.testing.assert_close(iou, torch.tensor([[1 / 7, 0.0]]))
    torch.testing.assert_close(union, torch.tensor([[7.0, 5.0]]))
    # disjoint boxes: hull 25, union 5 -> giou = 0 - 20/25
    torch.testing.assert_close(generalized_box_iou(a, b)[0, 1], torch.tensor(-0.8))


def test_paired_equals_matrix_diagonal():
    a, b = _boxes(9, 1), _boxes(9, 2)
    torch.testing.assert_close(paired_box_iou(a, b)[0], box_iou(a, b)[0].diag(), atol=0, rtol=0)
    torch.testing.assert_close(paired_generalized_box_iou(a, b), generalized_box_iou(a, b).diag(), atol=0, rtol=0)


def test_half_precision_is_upcast():
    a = _boxes(4, 3).half()
    assert box_iou(a, a)[0].dtype == torch.float32
    assert paired_generalized_box_iou(a, a).dtype == torch.float32
    torch.testing.assert_close(paired_box_iou(a, a)[0], torch.ones(4))
