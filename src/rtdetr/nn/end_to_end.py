"""Detector + postprocessor as one module: the graph that is exported and served."""

from __future__ import annotations

from torch import Tensor, nn

from .postprocess import PostProcessor

__all__ = ["EndToEndDetector"]


class EndToEndDetector(nn.Module):
    """``(images, orig_target_sizes) -> (labels, boxes, scores)`` with fixed top-K.

    Inputs:
        images: float [B, 3, S, S] RGB in [0, 1] (resized to the model size, no mean/std).
        orig_target_sizes: int64 or float [B, 2], each image's original (width, height).

    Outputs (sorted by score, K = ``postprocessor.num_top_queries``):
        labels int64 [B, K] (contiguous, or dataset ids when the postprocessor maps them),
        boxes [B, K, 4] xyxy in original-image pixels, scores [B, K] in [0, 1].

    No score threshold is applied inside, so the graph has static output shapes
    (what ONNX, TensorRT and CUDA graphs want); callers filter by score.
    """

    def __init__(self, model: nn.Module, postprocessor: PostProcessor) -> None:
        super().__init__()
        self.model = model
        self.postprocessor = postprocessor

    def forward(self, images: Tensor, orig_target_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        outputs = self.model(images)
        # The postprocessor upcasts reduced-precision outputs itself: boxes are scaled to
        # pixels and scores computed in float32 even when the model ran in bf16 / fp16.
        return self.postprocessor.forward_tensors(outputs, orig_target_sizes)
