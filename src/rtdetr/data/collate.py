"""Batching, with RT-DETR's per-batch multi-scale training.

Each batch is resized as a whole to one size drawn from a list (DESIGN section 6:
480..800 with 640 three times, so the evaluation size is the most frequent).
Boxes are normalized cxcywh, so they need no change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .epoch import EpochSchedule

__all__ = ["BatchCollator", "default_multi_scales", "MULTI_SCALES_640"]

MULTI_SCALES_640: tuple[int, ...] = (480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800)


def default_multi_scales(imgsz: int = 640) -> list[int]:
    """The 640 list scaled by ``imgsz / 640``, rounded to multiples of 16.

    Multiples of 16 rather than of the model's stride 32 keep the sizes distinct
    at small ``imgsz`` (320 gives 240, 256, ..., 400); the model accepts any size.
    """
    return [max(32, int(s * imgsz / 640 / 16 + 0.5) * 16) for s in MULTI_SCALES_640]


class BatchCollator(EpochSchedule):
    """``collate_fn`` for a DataLoader of ``(image, target)`` samples.

    Returns ``(images, targets)``: images [B, 3, S, S] (stacked; all samples must share
    one size, which the transforms' Resize guarantees) and the list of target dicts.
    While ``epoch < stop_epoch`` (always, when ``stop_epoch`` is None) and
    ``multi_scales`` is given, the batch is bilinearly resized to a size drawn with
    torch's global RNG (deterministic per DataLoader worker seed).

    Args:
        multi_scales: candidate sizes, e.g. ``default_multi_scales(imgsz)``; None disables.
        stop_epoch: first epoch trained at the fixed size only.
    """

    def __init__(self, multi_scales: Sequence[int] | None = None, stop_epoch: int | None = None):
        super().__init__(stop_epoch)
        self.multi_scales = list(multi_scales) if multi_scales else None

    @property
    def multi_scale_active(self) -> bool:
        return self.multi_scales is not None and self.before_stop_epoch

    def __call__(self, batch: Sequence[tuple[Tensor, dict[str, Any]]]) -> tuple[Tensor, list[dict[str, Any]]]:
        images = torch.stack([image.as_subclass(Tensor) for image, _ in batch])
        targets = [target for _, target in batch]
        if self.multi_scale_active:
            size = self.multi_scales[int(torch.randint(len(self.multi_scales), ()).item())]
            if size != images.shape[-1] or size != images.shape[-2]:
                if not images.is_floating_point():
                    raise TypeError("multi-scale resizing needs float images (apply the transforms first)")
                images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        return images, targets

    def __repr__(self) -> str:
        return f"BatchCollator(multi_scales={self.multi_scales}, stop_epoch={self.stop_epoch})"
