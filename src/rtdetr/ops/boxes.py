"""Box format conversions and overlap measures.

Formats used across the package:

* ``cxcywh``: (center x, center y, width, height), usually normalized to [0, 1]
  by the image size; this is what the model predicts and the loss consumes.
* ``xyxy``: (x1, y1, x2, y2) corners, normalized or in pixels.

All functions are pure, batched over leading dimensions, and differentiable.
Overlap measures upcast half precision to float32, because areas of small
normalized boxes underflow in fp16/bf16.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "paired_box_iou",
    "paired_generalized_box_iou",
]


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """[..., 4] (cx, cy, w, h) -> [..., 4] (x1, y1, x2, y2)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """[..., 4] (x1, y1, x2, y2) -> [..., 4] (cx, cy, w, h)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


def _upcast(t: Tensor) -> Tensor:
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def box_area(boxes: Tensor) -> Tensor:
    """[..., 4] xyxy -> [...] area (float32 or wider)."""
    boxes = _upcast(boxes)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise IoU of xyxy boxes.

    Args:
        boxes1: [N, 4] xyxy.
        boxes2: [M, 4] xyxy.

    Returns:
        (iou [N, M], union [N, M]).
    """
    boxes1, boxes2 = _upcast(boxes1), _upcast(boxes2)
    area1, area2 = box_area(boxes1), box_area(boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])  # [N, M, 2]
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])  # [N, M, 2]
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return inter / union, union


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalized IoU (Rezatofighi et al., 2019) of xyxy boxes.

    Args:
        boxes1: [N, 4] xyxy with x2 >= x1 and y2 >= y1.
        boxes2: [M, 4] xyxy.

    Returns:
        [N, M] GIoU in [-1, 1].
    """
    boxes1, boxes2 = _upcast(boxes1), _upcast(boxes2)
    iou, union = box_iou(boxes1, boxes2)
    lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    hull = wh[..., 0] * wh[..., 1]
    return iou - (hull - union) / hull


def paired_box_iou(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """IoU of corresponding xyxy boxes: boxes1 [N, 4], boxes2 [N, 4] -> (iou [N], union [N]).

    The diagonal of :func:`box_iou` without building the N x N matrix (what a loss
    over matched pairs needs).
    """
    boxes1, boxes2 = _upcast(boxes1), _upcast(boxes2)
    lt = torch.max(boxes1[:, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, 2:], boxes2[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = box_area(boxes1) + box_area(boxes2) - inter
    return inter / union, union


def paired_generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU of corresponding xyxy boxes: [N, 4], [N, 4] -> [N] (the diagonal of :func:`generalized_box_iou`)."""
    boxes1, boxes2 = _upcast(boxes1), _upcast(boxes2)
    iou, union = paired_box_iou(boxes1, boxes2)
    lt = torch.min(boxes1[:, :2], boxes2[:, :2])
    rb = torch.max(boxes1[:, 2:], boxes2[:, 2:])
    wh = (rb - lt).clamp(min=0)
    hull = wh[:, 0] * wh[:, 1]
    return iou - (hull - union) / hull
