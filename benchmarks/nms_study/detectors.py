"""The detectors of the NMS study behind one interface: preprocess -> forward -> postprocess.

Every detector sees the same input, a decoded uint8 RGB image ``[3, H, W]`` in host
memory, and runs the same preprocessing: copy to the device, resize to ``S x S``
(torchvision's resize, bilinear with antialias, as our evaluation transforms do; a
no-op for the synthetic set, whose images are already ``S x S``), float, ``/ 255``.
For YOLO this plain resize equals Ultralytics' letterbox, because a square image
letterboxed into a square input needs no padding; non-square images would differ.

Detections come back as the COCO evaluator wants them: xyxy pixels in the original
image, scores, and dataset category ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as TF

from rtdetr import build_postprocessor
from rtdetr.nn.postprocess import PostProcessor

from .ops import yolo_candidates, yolo_nms

__all__ = ["Preprocess", "RTDETRRunner", "YoloRunner", "load_ours", "load_yolo", "untrained_ours"]


@dataclass
class Preprocess:
    """uint8 ``[3, H, W]`` host image -> float ``[1, 3, S, S]`` in [0, 1] on ``device``."""

    imgsz: int
    device: torch.device

    def __call__(self, image: Tensor) -> Tensor:
        x = image.to(self.device, non_blocking=True)  # copy uint8: 4x fewer bytes than float
        if tuple(x.shape[-2:]) != (self.imgsz, self.imgsz):
            x = TF.resize(x, [self.imgsz, self.imgsz], antialias=True)
        return (x.float() / 255.0)[None]


class RTDETRRunner:
    """Our model + its top-K postprocessor; ``score_threshold`` is its only knob.

    Args:
        name: label in tables and plots.
        model: an RT-DETR model (``deploy()``-ed, eval mode, on the device).
        category_ids: contiguous label -> dataset category id.
        score_threshold: detections below it are dropped (None keeps all top-K).
        trained: False for latency-only models (random weights: a DETR's compute does
            not depend on its weights, so their latency is valid, their AP is not).
    """

    kind = "rtdetr"

    def __init__(
        self,
        name: str,
        model: nn.Module,
        category_ids: Sequence[int],
        *,
        score_threshold: float | None = None,
        trained: bool = True,
    ) -> None:
        self.name = name
        self.model = model
        self.trained = trained
        self.category_ids = list(category_ids)
        self.post = self.with_threshold(score_threshold)
        self.num_queries = int(model.config.decoder.num_queries)
        self.num_layers = int(model.config.decoder.num_layers)
        self.eval_idx = int(model.config.decoder.eval_idx) % self.num_layers

    def with_threshold(self, score_threshold: float | None) -> PostProcessor:
        """This model's postprocessor (top-K from its config) with another score threshold."""
        post = build_postprocessor(self.model, score_threshold=score_threshold, category_ids=self.category_ids)
        return post.to(next(self.model.parameters()).device)

    @property
    def score_threshold(self) -> float | None:
        return self.post.score_threshold

    @property
    def setting(self) -> str:
        thr = "none" if self.score_threshold is None else f"{self.score_threshold:g}"
        return f"top-{self.post.num_top_queries}, score > {thr}, {self.eval_idx + 1}/{self.num_layers} decoder layers"

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out = self.model(x)
        return {"pred_logits": out["pred_logits"], "pred_boxes": out["pred_boxes"]}

    def postprocess(self, raw: dict[str, Tensor], orig_wh: Tensor) -> dict[str, Tensor]:
        return self.post(raw, orig_wh[None])[0]

    @staticmethod
    def scores(raw: dict[str, Tensor]) -> Tensor:
        """``[C, Q]`` class scores of the (single) image, the layout ``count_above`` takes."""
        return raw["pred_logits"][0].sigmoid().T


class YoloRunner:
    """An Ultralytics detection model + our NMS (``ops``) at one (conf, IoU) setting.

    Args:
        name: label in tables and plots.
        model: Ultralytics ``DetectionModel`` (fused, eval mode, on the device).
        category_ids: YOLO class index -> dataset category id.
        imgsz: the square input size (boxes are scaled from it to the original image).
        conf, iou: the two NMS thresholds; ``multi_label`` and ``max_det`` as in ``ops``.
    """

    kind = "yolo"
    trained = True

    def __init__(
        self,
        name: str,
        model: nn.Module,
        category_ids: Sequence[int],
        imgsz: int,
        *,
        conf: float = 0.001,
        iou: float = 0.7,
        multi_label: bool = True,
        max_det: int = 300,
    ) -> None:
        self.name = name
        self.model = model
        self.imgsz = imgsz
        self.conf, self.iou, self.multi_label, self.max_det = conf, iou, multi_label, max_det
        device = next(model.parameters()).device
        self.category_ids = torch.as_tensor(list(category_ids), dtype=torch.int64, device=device)

    @property
    def setting(self) -> str:
        labels = "multi-label" if self.multi_label else "best class"
        return f"NMS conf > {self.conf:g}, IoU {self.iou:g}, {labels}, max {self.max_det}"

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        out = out[0] if isinstance(out, (tuple, list)) else out  # eval mode: (decoded, raw head maps)
        return out[0]  # [4 + nc, A] of the single image

    def postprocess(self, raw: Tensor, orig_wh: Tensor, conf: float | None = None, iou: float | None = None) -> dict:
        cand = yolo_candidates(raw, self.conf if conf is None else conf, multi_label=self.multi_label)
        boxes, scores, cls = yolo_nms(cand, self.iou if iou is None else iou, self.max_det)
        return self.finish(boxes, scores, cls, orig_wh)

    def finish(self, boxes: Tensor, scores: Tensor, cls: Tensor, orig_wh: Tensor) -> dict[str, Tensor]:
        """Input-pixel boxes -> original-image pixels; class index -> category id."""
        scale = (orig_wh.to(boxes) / self.imgsz).repeat(2)
        return {"boxes": boxes * scale, "scores": scores, "labels": self.category_ids[cls]}

    @staticmethod
    def scores(raw: Tensor) -> Tensor:
        """``[nc, A]`` class scores, the layout ``count_above`` takes."""
        return raw[4:]


def load_ours(path: str | Path, device: torch.device, eval_idx: int | None = None) -> tuple[nn.Module, list[int]]:
    """A trained model from one of our checkpoints (EMA weights), deployed on ``device``."""
    from rtdetr.loader import model_from_checkpoint

    overrides: dict[str, Any] = {} if eval_idx is None else {"decoder__eval_idx": eval_idx}
    model = model_from_checkpoint(path, **overrides)
    return model.deploy().to(device), list(model.category_ids)


def untrained_ours(preset: str, num_classes: int, imgsz: int, device: torch.device) -> nn.Module:
    """A randomly initialized preset at ``imgsz``, for latency only."""
    from rtdetr import build_model

    model = build_model(preset, num_classes=num_classes, eval_spatial_size=(imgsz, imgsz))
    return model.deploy().to(device)


def load_yolo(path: str | Path, device: torch.device) -> nn.Module:
    """An Ultralytics checkpoint as a fused float32 ``DetectionModel`` (what its predictor runs)."""
    from ultralytics import YOLO

    model = YOLO(str(path)).model
    return model.float().fuse(verbose=False).eval().to(device)
