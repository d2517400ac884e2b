"""Turn raw outputs into per-image detections in original-image pixels. No NMS is needed."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..ops.boxes import box_cxcywh_to_xyxy

__all__ = ["PostProcessor"]

_HALF_TYPES = (torch.bfloat16, torch.float16)


class PostProcessor(nn.Module):
    """sigmoid -> top-K over all (query, class) pairs -> xyxy boxes in pixels.

    Args:
        num_classes: classes of the model's logits.
        num_top_queries: detections kept per image (K, default 300).
        score_threshold: if set, :meth:`forward` drops detections scoring below it.
        category_ids: optional contiguous-label -> dataset-id table (e.g. the 80
            COCO ids); labels are mapped through it.

    :meth:`forward_tensors` is the export-friendly batched form (fixed K, no
    data-dependent control flow); :meth:`forward` returns a list of dicts.
    """

    def __init__(
        self,
        num_classes: int = 80,
        *,
        num_top_queries: int = 300,
        score_threshold: float | None = None,
        category_ids: list[int] | Tensor | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_top_queries = num_top_queries
        self.score_threshold = score_threshold
        if category_ids is not None:
            ids = torch.as_tensor(category_ids, dtype=torch.int64)
            if ids.numel() != num_classes:
                raise ValueError(f"category_ids has {ids.numel()} entries for {num_classes} classes")
            self.register_buffer("category_ids", ids, persistent=False)
        else:
            self.category_ids = None

    def forward_tensors(self, outputs: dict, orig_target_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """
        Args:
            outputs: ``pred_logits`` [B, Q, C], ``pred_boxes`` [B, Q, 4] cxcywh normalized.
            orig_target_sizes: [B, 2] original (width, height) of each image.

        Returns:
            labels int64 [B, K], boxes [B, K, 4] xyxy pixels, scores [B, K], sorted by
            score; float32 for bf16 / fp16 outputs, else the outputs' dtype.

        Reduced-precision outputs (a bf16 / fp16 model) are upcast first: bf16 keeps 8
        significant bits, so pixel coordinates scaled in bf16 would land on a 4 px grid
        above 512 px and an 8 px grid above 1024 px, and sigmoid scores would tie.
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        if logits.shape[-1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[-1]} classes, postprocessor expects {self.num_classes}")
        # Upcast only half types: fp32 export graphs get no no-op casts, float64 stays float64.
        if logits.dtype in _HALF_TYPES:
            logits = logits.float()
        if boxes.dtype in _HALF_TYPES:
            boxes = boxes.float()
        boxes = box_cxcywh_to_xyxy(boxes) * orig_target_sizes.repeat(1, 2).unsqueeze(1).to(boxes.dtype)
        k = min(self.num_top_queries, logits.shape[1] * logits.shape[2])
        scores, index = torch.topk(logits.sigmoid().flatten(1), k, dim=-1)  # over Q * C pairs
        labels = index % self.num_classes
        query = index // self.num_classes
        boxes = boxes.gather(1, query.unsqueeze(-1).expand(-1, -1, 4))
        if self.category_ids is not None:
            labels = self.category_ids[labels]
        return labels, boxes, scores

    def forward(self, outputs: dict, orig_target_sizes: Tensor) -> list[dict[str, Tensor]]:
        """Per-image dicts with ``labels`` [N], ``boxes`` [N, 4] xyxy pixels, ``scores`` [N]."""
        labels, boxes, scores = self.forward_tensors(outputs, orig_target_sizes)
        results = []
        for lab, box, sco in zip(labels, boxes, scores):
            if self.score_threshold is not None:
                keep = sco >= self.score_threshold
                lab, box, sco = lab[keep], box[keep], sco[keep]
            results.append({"labels": lab, "boxes": box, "scores": sco})
        return results
