"""Contrastive denoising (DN) queries for training (DINO-style, as in RT-DETR).

Ground-truth boxes are noised into extra decoder queries that must be
reconstructed: "positive" copies are moved by less than half their size and
must recover their box and class, "negative" copies are moved further and must
predict background. They give the decoder a stable, matching-free training
signal; at inference none are created.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..ops.boxes import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh
from .inverse_sigmoid import inverse_sigmoid

__all__ = ["DenoisingGroup", "build_denoising_group"]


@dataclass
class DenoisingGroup:
    """Denoising queries to prepend to the matching queries.

    Attributes:
        class_embed: [B, D, C] embedded (noised) labels, D = max_gt * 2 * num_group.
        boxes_unact: [B, D, 4] noised boxes, cxcywh in logit space.
        attn_mask: [D + Q, D + Q] bool, True where attention is blocked.
        meta: ``dn_positive_idx`` (per image, the D-indices of positive queries,
            group-major), ``dn_num_group``, ``dn_num_split`` = [D, Q]; the loss uses it.
    """

    class_embed: Tensor
    boxes_unact: Tensor
    attn_mask: Tensor
    meta: dict


def build_denoising_group(
    targets: list[dict[str, Tensor]],
    *,
    num_classes: int,
    num_queries: int,
    class_embed: nn.Embedding,
    num_denoising: int = 100,
    label_noise_ratio: float = 0.5,
    box_noise_scale: float = 1.0,
) -> DenoisingGroup | None:
    """Noised copies of the targets (labels int64 [N], boxes cxcywh normalized [N, 4]).

    Returns None when there is nothing to denoise (``num_denoising <= 0`` or no
    image in the batch has a box), in which case training uses matching queries only.
    """
    if num_denoising <= 0:
        return None
    num_gts = [len(t["labels"]) for t in targets]
    max_gt = max(num_gts, default=0)
    if max_gt == 0:
        return None
    weight = class_embed.weight
    device, dtype = weight.device, weight.dtype
    num_group = max(num_denoising // max_gt, 1)
    bs = len(targets)

    # Pad every image to max_gt; padding uses the "no object" class index (embeds to zero).
    labels = torch.full((bs, max_gt), num_classes, dtype=torch.int64, device=device)
    boxes = torch.zeros((bs, max_gt, 4), dtype=dtype, device=device)
    pad_mask = torch.zeros((bs, max_gt), dtype=torch.bool, device=device)
    for i, (t, n) in enumerate(zip(targets, num_gts)):
        if n:
            labels[i, :n] = t["labels"].to(device)
            boxes[i, :n] = t["boxes"].to(device=device, dtype=dtype)
            pad_mask[i, :n] = True

    # Layout along D: group 0 [positives (max_gt), negatives (max_gt)], group 1 [...], ...
    labels = labels.tile(1, 2 * num_group)
    boxes = boxes.tile(1, 2 * num_group, 1)
    pad_mask = pad_mask.tile(1, 2 * num_group)
    negative = torch.zeros((bs, 2 * max_gt, 1), dtype=dtype, device=device)
    negative[:, max_gt:] = 1
    negative = negative.tile(1, num_group, 1)  # [B, D, 1]
    positive = (1 - negative).squeeze(-1) * pad_mask
    positive_idx = torch.nonzero(positive)[:, 1].split([n * num_group for n in num_gts])
    num_dn = 2 * max_gt * num_group

    if label_noise_ratio > 0:
        # Each real label is resampled uniformly with probability ratio / 2.
        flip = torch.rand(labels.shape, device=device) < label_noise_ratio * 0.5
        new_labels = torch.randint_like(labels, 0, num_classes)
        labels = torch.where(flip & pad_mask, new_labels, labels)

    if box_noise_scale > 0:
        corners = box_cxcywh_to_xyxy(boxes)
        half_wh = (boxes[..., 2:] * 0.5).tile(1, 1, 2) * box_noise_scale
        sign = torch.randint_like(boxes, 0, 2) * 2.0 - 1.0
        # positives move by u in [0, 1) of half the size, negatives by u in [1, 2)
        magnitude = torch.rand_like(boxes)
        magnitude = (magnitude + 1.0) * negative + magnitude * (1 - negative)
        corners = (corners + magnitude * sign * half_wh).clamp(0.0, 1.0)
        boxes = box_xyxy_to_cxcywh(corners)
    boxes_unact = inverse_sigmoid(boxes)

    # Matching queries must not see DN queries (they would leak the answer), and
    # DN groups must not see each other.
    size = num_dn + num_queries
    attn_mask = torch.zeros((size, size), dtype=torch.bool, device=device)
    attn_mask[num_dn:, :num_dn] = True
    group = torch.arange(num_dn, device=device) // (2 * max_gt)
    attn_mask[:num_dn, :num_dn] = group[:, None] != group[None, :]

    meta = {"dn_positive_idx": positive_idx, "dn_num_group": num_group, "dn_num_split": [num_dn, num_queries]}
    return DenoisingGroup(class_embed(labels), boxes_unact, attn_mask, meta)
