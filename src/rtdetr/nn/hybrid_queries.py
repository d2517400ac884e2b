"""Training-only one-to-many query group (H-DETR-style hybrid matching).

DETR's one-to-one matching gives each ground truth a single positive query, which
makes early training slow. Hybrid matching adds, in training only, a second group
of K2 queries that runs through the same decoder layers and heads but is matched
one-to-many (each ground truth repeated k times; see
:func:`rtdetr.train.criterion.repeat_targets`), so the shared weights get many more
positives per image. The two groups must not exchange information: the
self-attention mask blocks every link between the one-to-many group and the
others (main queries and denoising queries), so the main queries compute exactly
what they would without the group. At inference the group is never built: outputs,
weights and exported graphs are those of the plain model.

Query layout in training: ``[denoising (D) | main (K) | one-to-many (K2)]``.
The K2 queries are the encoder's top-K2 tokens (the same top-k ranking as the main
queries, so the best proposals are in both groups; ``torch.topk`` is sorted, so the
first K of one top-max(K, K2) selection are the main queries of the plain model).
This keeps K2 independent of the number of encoder tokens left after the main K
(only 500 at 320 px for the ``n`` preset); K2 is capped at the token count.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["hybrid_attn_mask", "split_o2m"]


def hybrid_attn_mask(base: Tensor | None, num_before: int, num_o2m: int, device: torch.device) -> Tensor:
    """Self-attention mask [N + K2, N + K2] bool (True = blocked) with the one-to-many group appended.

    Args:
        base: the mask of the first N queries (denoising + main), [N, N], or None
            (nothing blocked among them).
        num_before: N, the queries in front of the group (D + K).
        num_o2m: K2.
        device: where to make the mask.
    """
    size = num_before + num_o2m
    mask = torch.zeros((size, size), dtype=torch.bool, device=device)
    if base is not None:
        if base.shape != (num_before, num_before):
            raise ValueError(f"base mask has shape {tuple(base.shape)}, expected ({num_before}, {num_before})")
        mask[:num_before, :num_before] = base
    # The groups see only themselves: the main queries' outputs stay those of the plain
    # model, and the one-to-many group cannot copy answers from the denoising queries.
    mask[num_before:, :num_before] = True
    mask[:num_before, num_before:] = True
    return mask


def split_o2m(boxes: Tensor, logits: Tensor, num_o2m: int) -> tuple[Tensor, Tensor, list[dict[str, Tensor]]]:
    """Cut the trailing one-to-many queries off the decoder outputs.

    Args:
        boxes: [L, B, N + K2, 4] cxcywh per decoder layer; logits: [L, B, N + K2, C].
        num_o2m: K2.

    Returns:
        (boxes [L, B, N, 4], logits [L, B, N, C], one dict per layer with the group's
        ``pred_logits`` [B, K2, C] and ``pred_boxes`` [B, K2, 4]).
    """
    n = boxes.shape[2] - num_o2m
    outputs = [{"pred_logits": lg, "pred_boxes": bx} for lg, bx in zip(logits[:, :, n:], boxes[:, :, n:])]
    return boxes[:, :, :n], logits[:, :, :n], outputs
