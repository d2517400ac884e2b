"""Dense one-to-many supervision of the encoder tokens (training only).

RT-DETR trains its encoder heads (``enc_score_head``, ``enc_bbox_head``) only through the
K tokens that query selection picks, each Hungarian-matched one to one: with a few
objects per image, a handful of the S tokens get a positive signal per step and the
scores of the others are never trained. Early in a from-scratch run that is what keeps
the query selection (and the features below it) from settling. A dense detector
(YOLOv8) instead gives every object its ~10 best-aligned locations as positives.

This option adds that dense signal to the encoder tokens, as RT-DETRv3's dense positive
supervision and Co-DETR's auxiliary one-to-many heads do, but with the heads the model
already has: the score and box that ``enc_score_head`` / ``enc_bbox_head`` predict for
every token (model field ``dense_enc_outputs``) are assigned to the ground truth by
task-aligned assignment (TOOD; YOLOv8's assigner) and trained with BCE towards the
normalized alignment, plus L1 and GIoU weighted by it. Nothing changes at inference.

Assignment, per image, for ground truth g and token s (all detached):

* candidates: tokens whose anchor centre lies inside box g (a box too small to hold a
  centre gets the nearest token), invalid (border) tokens excluded;
* alignment ``t = p^alpha * IoU^beta``: p the token's score at g's class, IoU of its box
  with g;
* the ``topk`` candidates by t are positives of g; a token positive for several boxes
  keeps the one it overlaps most;
* target score of a positive: ``t / max_g(t) * max_g(IoU)`` (maxima over g's positives),
  so the best-aligned token of each object aims at that object's best IoU.

Losses (unweighted; the criterion multiplies them by 1, 5 and 2 like its other terms,
times ``dense_loss_weight``), with T the sum of all target scores (averaged over processes
under torch.distributed; at least 1):
``loss_dense_cls = sum BCE(logits, targets) / T`` over every valid (token, class) pair,
``loss_dense_bbox = sum_pos w * |box - gt|_1 / T`` and ``loss_dense_giou = sum_pos w *
(1 - GIoU) / T`` with w the positive's target score.

Formats: ``pred_logits`` [B, S, C] raw logits; ``pred_boxes`` [B, S, 4] cxcywh normalized;
``anchor_centers`` [S, 2] normalized (x, y); ``valid`` [S] bool; targets as in
:mod:`rtdetr.train.matcher`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from rtdetr.ops.boxes import box_cxcywh_to_xyxy, box_iou, paired_generalized_box_iou

__all__ = ["DENSE_LOSS_NAMES", "task_aligned_assign", "dense_losses"]

DENSE_LOSS_NAMES = ("loss_dense_cls", "loss_dense_bbox", "loss_dense_giou")


@torch.no_grad()
def task_aligned_assign(
    logits: Tensor,
    boxes: Tensor,
    anchor_centers: Tensor,
    valid: Tensor,
    labels: Tensor,
    gt_boxes: Tensor,
    *,
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
    eps: float = 1e-9,
) -> tuple[Tensor, Tensor, Tensor]:
    """One image's task-aligned assignment of S tokens to G ground-truth boxes.

    Args:
        logits: [S, C] token class logits (C = 1: class-agnostic, every label counts as 0).
        boxes: [S, 4] token boxes, cxcywh normalized.
        anchor_centers: [S, 2] the tokens' anchor centres (x, y), normalized.
        valid: [S] bool, tokens that may be assigned.
        labels: [G] int64 class indices.
        gt_boxes: [G, 4] cxcywh normalized.
        topk: positives per ground truth (at most).
        alpha, beta: exponents of the score and the IoU in the alignment.

    Returns:
        (target_scores [S, C] float32: the normalized alignment at each positive's class, 0
        elsewhere; target_boxes [S, 4] cxcywh, its box (rows of non-positives are
        arbitrary); positive [S] bool).
    """
    logits, boxes, gt_boxes = logits.float(), boxes.float(), gt_boxes.float()
    num_tokens, num_classes = logits.shape
    target_scores = logits.new_zeros(num_tokens, num_classes)
    num_gt = int(labels.shape[0])
    if num_gt == 0:
        return target_scores, boxes.new_zeros(num_tokens, 4), torch.zeros_like(valid)
    labels = labels.long() if num_classes > 1 else torch.zeros_like(labels, dtype=torch.long)
    gt_xyxy = box_cxcywh_to_xyxy(gt_boxes)  # [G, 4]
    x, y = anchor_centers[:, 0], anchor_centers[:, 1]  # [S]
    inside = (
        (x > gt_xyxy[:, 0:1]) & (x < gt_xyxy[:, 2:3]) & (y > gt_xyxy[:, 1:2]) & (y < gt_xyxy[:, 3:4]) & valid
    )  # [G, S]
    # A box smaller than the token spacing may hold no centre: it gets its nearest token.
    dist2 = (anchor_centers[None] - gt_boxes[:, None, :2]).pow(2).sum(-1).masked_fill(~valid, float("inf"))  # [G, S]
    empty = ~inside.any(1)  # [G]
    if empty.any():
        nearest = dist2.argmin(1)  # [G]
        inside[empty, nearest[empty]] = True
    iou = box_iou(gt_xyxy, box_cxcywh_to_xyxy(boxes))[0].nan_to_num(0.0)  # [G, S]
    score = logits.sigmoid()[:, labels].T  # [G, S]: each token's score at g's class
    align = score.pow(alpha) * iou.pow(beta) * inside
    # Candidates rank above every non-candidate, even where their alignment is 0.
    ranked = align.masked_fill(~inside, -1.0).topk(min(topk, num_tokens), dim=1).indices  # [G, k]
    positive = torch.zeros_like(inside).scatter_(1, ranked, True) & inside  # [G, S]
    shared = positive.sum(0) > 1  # [S]
    if shared.any():  # a token claimed by several boxes keeps the one it overlaps most
        best = iou.masked_fill(~positive, -1.0).argmax(0)  # [S]
        keep = F.one_hot(best, num_gt).T.bool()  # [G, S]
        positive = torch.where(shared, positive & keep, positive)
    align, iou = align * positive, iou * positive
    norm = align / (align.amax(1, keepdim=True) + eps) * iou.amax(1, keepdim=True)  # [G, S]
    is_pos = positive.any(0)  # [S]
    gt_idx = positive.float().argmax(0)  # [S], meaningful where is_pos
    pos_idx = is_pos.nonzero().squeeze(1)
    target_scores[pos_idx, labels[gt_idx[pos_idx]]] = norm.amax(0)[pos_idx]
    return target_scores, gt_boxes[gt_idx], is_pos


def dense_losses(
    dense: Mapping[str, Tensor],
    targets: list[dict[str, Tensor]],
    *,
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
    cls_loss: str = "bce",
) -> dict[str, Tensor]:
    """Unweighted ``loss_dense_cls``, ``loss_dense_bbox`` and ``loss_dense_giou`` (scalars) of the
    decoder's ``enc_dense_outputs`` against ``targets`` (B dicts with ``labels`` [N],
    ``boxes`` [N, 4] cxcywh normalized); see the module docstring for the formulas."""
    logits, boxes = dense["pred_logits"], dense["pred_boxes"]  # [B, S, C], [B, S, 4]
    centers, valid = dense["anchor_centers"], dense["valid"]  # [S, 2], [S]
    if len(targets) != logits.shape[0]:
        raise ValueError(f"got {len(targets)} targets for a batch of {logits.shape[0]} dense outputs")
    assigned = [
        task_aligned_assign(lg, bx, centers, valid, t["labels"], t["boxes"], topk=topk, alpha=alpha, beta=beta)
        for lg, bx, t in zip(logits.detach(), boxes.detach(), targets)
    ]
    target_scores = torch.stack([a[0] for a in assigned])  # [B, S, C]
    target_boxes = torch.stack([a[1] for a in assigned])  # [B, S, 4]
    positive = torch.stack([a[2] for a in assigned])  # [B, S]
    total = target_scores.sum()
    if dist.is_available() and dist.is_initialized():  # one scale on every rank, like num_boxes
        dist.all_reduce(total)
        total = total / dist.get_world_size()
    total = total.clamp(min=1.0)
    logits = logits.float()
    weight = None
    if cls_loss == "vfl":  # varifocal: negatives focal-weighted, positives weighted by their target
        weight = 0.75 * logits.detach().sigmoid().pow(2.0) * (target_scores == 0) + target_scores
    elif cls_loss != "bce":
        raise ValueError(f"dense cls_loss must be 'bce' or 'vfl', got {cls_loss!r}")
    cls = F.binary_cross_entropy_with_logits(logits, target_scores, weight=weight, reduction="none").sum(-1)  # [B, S]
    loss_cls = (cls * valid).sum() / total
    weight = target_scores.sum(-1)[positive]  # [P]
    pred, gt = boxes.float()[positive], target_boxes[positive].to(torch.float32)  # [P, 4]
    loss_bbox = ((pred - gt).abs().sum(-1) * weight).sum() / total
    giou = paired_generalized_box_iou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(gt))
    loss_giou = ((1 - giou) * weight).sum() / total
    return {"loss_dense_cls": loss_cls, "loss_dense_bbox": loss_bbox, "loss_dense_giou": loss_giou}
