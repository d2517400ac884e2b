"""The module every exporter traces: a deploy-fused copy of the detector plus the top-K postprocess."""

from __future__ import annotations

import copy
import logging

import torch
from torch import Tensor, nn

from ..nn.end_to_end import EndToEndDetector
from ..nn.postprocess import PostProcessor

__all__ = ["INPUT_NAMES", "OUTPUT_NAMES", "check_imgsz", "example_inputs", "export_module"]

log = logging.getLogger(__name__)

INPUT_NAMES = ("images", "orig_target_sizes")
OUTPUT_NAMES = ("labels", "boxes", "scores")


class _HalfPrecision(nn.Module):
    """Runs a half-precision detector on float32 images and returns float32 outputs.

    The graph input stays float32 (what every caller already has) and the box
    arithmetic of the postprocess stays float32: in fp16, pixel coordinates above
    1024 would be quantized to whole or even pixels.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        out = self.model(images.half())
        return {"pred_logits": out["pred_logits"].float(), "pred_boxes": out["pred_boxes"].float()}


def check_imgsz(imgsz: int) -> int:
    """Validate the square export size (a positive multiple of 32, the coarsest stride)."""
    if not isinstance(imgsz, int) or imgsz <= 0 or imgsz % 32:
        raise ValueError(f"imgsz must be a positive multiple of 32 (the backbone's stride), got {imgsz!r}")
    return imgsz


def export_module(model: nn.Module, *, half: bool = False) -> EndToEndDetector:
    """A deploy-fused, eval-mode copy of ``model`` wrapped with its postprocessor.

    The caller's model is left untouched (a deep copy is fused). Labels come out
    contiguous (0..num_classes-1); ``category_ids`` travel as metadata instead.

    Args:
        model: an :class:`~rtdetr.RTDETR` with ``.config``.
        half: run the network in float16 (inputs and outputs stay float32).

    Returns:
        ``EndToEndDetector``: ``(images float32 [B, 3, S, S] in [0, 1], orig_target_sizes
        int64 [B, 2] (w, h)) -> (labels int64 [B, K], boxes float32 [B, K, 4] xyxy px,
        scores float32 [B, K])``, on the CPU.
    """
    cfg = getattr(model, "config", None)
    if cfg is None:
        raise ValueError("model has no .config: build it with rtdetr.build_model or model_from_checkpoint")
    net = copy.deepcopy(model).cpu().float()
    if hasattr(net, "deploy"):
        net.deploy()  # RepVGG 3x3 + 1x1 branches folded into one conv in the traced graph
    net.eval()
    post = PostProcessor(cfg.num_classes, num_top_queries=cfg.num_top_queries)
    inner: nn.Module = _HalfPrecision(net.half()) if half else net
    return EndToEndDetector(inner, post).eval()


def example_inputs(imgsz: int, batch: int = 1, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Deterministic tracing / checking inputs: images float32 [B, 3, S, S], sizes int64 [B, 2].

    Original sizes differ from S and between images so that the box scaling is exercised.
    """
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, imgsz, imgsz, generator=g)
    sizes = torch.tensor([[640 + 32 * i, 480 + 16 * i] for i in range(batch)], dtype=torch.int64)
    return images, sizes
