"""Anchors and the top-K choice of uncertainty-minimal query selection.

The decoder scores every encoder token (``enc_score_head``), predicts a box for
it relative to a fixed anchor (``enc_bbox_head``) and starts from the K best
tokens. This module holds the parts that are plain functions of tensors.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["QuerySelectMethod", "QUERY_SELECT_METHODS", "generate_anchors", "select_topk"]

QuerySelectMethod = Literal["default", "one2many", "agnostic"]
QUERY_SELECT_METHODS: tuple[str, ...] = ("default", "one2many", "agnostic")


def generate_anchors(
    spatial_shapes: list[tuple[int, int]], *, grid_size: float = 0.05, eps: float = 0.01
) -> tuple[Tensor, Tensor]:
    """Anchor boxes for every memory token, in logit space, float32.

    Level l (h x w) has boxes centered on its cells with side ``grid_size * 2**l``.
    A token is valid when all four coordinates lie in (eps, 1 - eps); invalid ones
    get +inf so sigmoid maps them to 1. Float32 on purpose: the reference computes
    anchors in float32 even in a float64 model.

    Returns:
        anchors [1, S, 4] (cxcywh logits), valid_mask [1, S, 1] bool, S = sum(h * w).
    """
    anchors = []
    for lvl, (h, w) in enumerate(spatial_shapes):
        gy, gx = torch.meshgrid(
            torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
        )
        cxcy = (torch.stack([gx, gy], -1) + 0.5) / torch.tensor([w, h], dtype=torch.float32)  # [h, w, 2]
        wh = torch.full_like(cxcy, grid_size * 2.0**lvl)
        anchors.append(torch.cat([cxcy, wh], -1).reshape(1, h * w, 4))
    out = torch.cat(anchors, 1)
    valid = ((out > eps) & (out < 1 - eps)).all(-1, keepdim=True)
    out = torch.log(out / (1 - out))
    return torch.where(valid, out, torch.inf), valid


def select_topk(enc_logits: Tensor, k: int, method: QuerySelectMethod = "default") -> Tensor:
    """Indices [B, K] of the tokens that become decoder queries.

    Args:
        enc_logits: [B, S, C] encoder class logits (C = 1 for "agnostic").
        k: queries to select.
        method: "default": best K tokens by their max class logit;
            "one2many": best K (token, class) pairs, a token may come back once per class
            (RT-DETRv2 option); "agnostic": best K by a single class-agnostic
            objectness logit (RT-DETRv2 option; the score head has one output).
    """
    tokens = enc_logits.shape[1]
    if k > tokens and method != "one2many":
        raise ValueError(
            f"the input gives only {tokens} encoder tokens, fewer than the {k} queries to select; "
            f"use a larger image or fewer queries (num_queries <= {tokens}; CLI: --set num_queries={tokens})"
        )
    if method == "default":
        return torch.topk(enc_logits.max(-1).values, k, dim=-1).indices
    if method == "one2many":
        return torch.topk(enc_logits.flatten(1), k, dim=-1).indices // enc_logits.shape[-1]
    if method == "agnostic":
        if enc_logits.shape[-1] != 1:
            raise ValueError(f"'agnostic' selection needs one objectness logit, got {enc_logits.shape[-1]}")
        return torch.topk(enc_logits.squeeze(-1), k, dim=-1).indices
    raise ValueError(f"query_select_method must be one of {QUERY_SELECT_METHODS}, got {method!r}")
