"""Hungarian matching between predicted queries and ground-truth boxes.

RT-DETR supervises its queries one-to-one: each ground-truth box is assigned to
exactly one query by minimizing a cost that mixes a focal-style class term, the
L1 distance of the boxes and their negative GIoU. Unmatched queries learn
"no object" through the classification loss.

Target format (shared with the criterion): one dict per image with
``labels`` int64 [N] (contiguous class ids) and ``boxes`` [N, 4] cxcywh
normalized to [0, 1]. N may be 0.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from rtdetr.ops.boxes import box_cxcywh_to_xyxy, generalized_box_iou

__all__ = ["HungarianMatcher", "validate_targets"]

logger = logging.getLogger(__name__)

# One (query_idx int64 [K], target_idx int64 [K]) pair per image.
Indices = list[tuple[Tensor, Tensor]]
# One dict per image: ``labels`` int64 [N], ``boxes`` [N, 4] cxcywh normalized.
Targets = Sequence[Mapping[str, Tensor]]


def validate_targets(targets: Targets, num_classes: int | None = None) -> None:
    """Check that every target dict has well-formed ``labels`` and ``boxes``.

    Args:
        targets: per image, ``labels`` integer [N] and ``boxes`` [N, 4].
        num_classes: when given, also check that every label lies in
            [0, num_classes) (costs one host-device sync for the whole batch).

    Raises:
        ValueError: naming the image index and the offending field.
    """
    for i, t in enumerate(targets):
        for key in ("labels", "boxes"):
            if key not in t:
                raise ValueError(f"target {i} has no '{key}' field (got keys {sorted(t)})")
        labels, boxes = t["labels"], t["boxes"]
        if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(
                f"target {i} 'labels' must be an integer tensor of shape [N], got {labels.dtype} {tuple(labels.shape)}"
            )
        if boxes.dim() != 2 or boxes.shape[-1] != 4 or not boxes.dtype.is_floating_point:
            raise ValueError(
                f"target {i} 'boxes' must be a float tensor of shape [N, 4] (cxcywh), "
                f"got {boxes.dtype} {tuple(boxes.shape)}"
            )
        if labels.shape[0] != boxes.shape[0]:
            raise ValueError(f"target {i} has {labels.shape[0]} 'labels' but {boxes.shape[0]} 'boxes'")
    if num_classes is None or not targets:
        return
    bad = [((t["labels"] < 0) | (t["labels"] >= num_classes)).any() for t in targets]
    # Stack first so the whole batch costs a single host-device sync.
    if bool(torch.stack(bad).any()):
        i = next(i for i, b in enumerate(bad) if bool(b))
        raise ValueError(f"target {i} 'labels' must lie in [0, {num_classes}), got {targets[i]['labels'].tolist()}")


def _empty_indices(n: int) -> Indices:
    empty = torch.zeros(0, dtype=torch.int64)
    return [(empty, empty.clone()) for _ in range(n)]


class HungarianMatcher(nn.Module):
    """Optimal one-to-one assignment of queries to ground-truth boxes.

    cost = cost_class * focal_class_cost + cost_bbox * L1(cxcywh)
           + cost_giou * (-GIoU(xyxy))

    The focal class cost uses p = sigmoid(logit) at the target's class:
    ``alpha (1-p)^gamma (-log p) - (1-alpha) p^gamma (-log(1-p))``, i.e. the
    focal loss of calling the query positive minus that of calling it negative.

    Non-finite costs (NaN/inf predictions, or degenerate boxes making GIoU
    0/0) raise a ValueError instead of being sanitized: they mean training has
    already diverged or the data is broken, and silently matching on garbage
    would hide that.
    """

    def __init__(
        self,
        *,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        alpha: float = 0.25,
        gamma: float = 2.0,
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("all matcher costs are 0; the assignment would be arbitrary")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.alpha = alpha
        self.gamma = gamma

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_bbox={self.cost_bbox}, "
            f"cost_giou={self.cost_giou}, alpha={self.alpha}, gamma={self.gamma}"
        )

    @torch.no_grad()
    def forward(self, outputs: Mapping[str, Tensor], targets: Targets) -> Indices:
        """Match queries to targets, image by image.

        Args:
            outputs: ``pred_logits`` [B, Q, C] (raw logits) and ``pred_boxes``
                [B, Q, 4] cxcywh normalized.
            targets: B dicts with ``labels`` int64 [N_b] and ``boxes`` [N_b, 4]
                cxcywh normalized.

        Returns:
            B pairs (query_idx, target_idx), int64 [K_b] each on the CPU, with
            K_b = min(Q, N_b); query_idx is sorted ascending.
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        bs, num_queries = logits.shape[:2]
        if len(targets) != bs:
            raise ValueError(f"got {len(targets)} targets for a batch of {bs} predictions")
        validate_targets(targets)
        sizes = [int(t["boxes"].shape[0]) for t in targets]
        if sum(sizes) == 0:
            logger.debug("no target boxes in the batch; nothing to match")
            return _empty_indices(bs)

        # Low-precision logits/boxes: log and cdist are unreliable (or missing on CPU) in fp16.
        dtype = torch.promote_types(logits.dtype, torch.float32)
        prob = logits.flatten(0, 1).to(dtype).sigmoid()  # [B*Q, C]
        out_boxes = boxes.flatten(0, 1).to(dtype)  # [B*Q, 4]
        tgt_labels = torch.cat([t["labels"] for t in targets]).long()
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).to(dtype)

        # The class cost only needs the columns of the classes present in the batch.
        p = prob[:, tgt_labels]  # [B*Q, N]
        pos = self.alpha * (1 - p) ** self.gamma * -(p + 1e-8).log()
        neg = (1 - self.alpha) * p**self.gamma * -(1 - p + 1e-8).log()
        cost_class = pos - neg
        cost_bbox = torch.cdist(out_boxes, tgt_boxes, p=1)
        cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(out_boxes), box_cxcywh_to_xyxy(tgt_boxes))
        cost = self.cost_class * cost_class + self.cost_bbox * cost_bbox + self.cost_giou * cost_giou

        # Off-diagonal blocks (query of image a vs. box of image b) are computed and
        # ignored: one batched op beats B small ones, and the transfer happens once.
        cost = cost.view(bs, num_queries, -1).cpu()
        indices: Indices = []
        for i, c in enumerate(cost.split(sizes, dim=-1)):
            c_i = c[i]
            if c_i.shape[1] == 0:
                indices.extend(_empty_indices(1))
                continue
            if not torch.isfinite(c_i).all():
                n_bad = int((~torch.isfinite(c_i)).sum())
                raise ValueError(
                    f"matching cost of image {i} has {n_bad} non-finite entries (NaN/inf); "
                    "check pred_logits/pred_boxes for NaN and target boxes for zero size"
                )
            rows, cols = linear_sum_assignment(c_i.numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices
