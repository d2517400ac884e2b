"""Training and evaluation transforms (DESIGN section 6), on torchvision.transforms.v2.

Every transform is called as ``transforms(image, target)`` with the sample format
of ``rtdetr.data.base`` (uint8 ``tv_tensors.Image`` [3, H, W], ``target["boxes"]`` a
``tv_tensors.BoundingBoxes`` XYXY in pixels). The output is a float32 image
[3, S, S] in [0, 1] (S = ``imgsz``) and ``target["boxes"]`` a float32 [N, 4] tensor,
cxcywh normalized to [0, 1]; ``labels`` shrink with the boxes that augmentation
removes; ``image_id`` and ``orig_size`` pass through unchanged.

Training: RandomPhotometricDistort (p 0.5) -> RandomZoomOut (fill 0) -> RandomIoUCrop
(p 0.8) -> SanitizeBoundingBoxes (min 1 px) -> RandomHorizontalFlip -> Resize ->
ToDtype(float, scaled) -> SanitizeBoundingBoxes -> normalized cxcywh. The first three
are the "strong" augmentations: from ``stop_epoch`` on they are skipped (RT-DETRv2
trains its last epochs on clean images); ``set_epoch`` is visible to DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from rtdetr.ops.boxes import box_xyxy_to_cxcywh

from .epoch import EpochSchedule

__all__ = ["RandomIoUCropP", "ToModelFormat", "DetectionTransforms", "build_transforms"]


def _find_boxes(sample: Any) -> tv_tensors.BoundingBoxes | None:
    """The first BoundingBoxes in a (nested) tuple / list / dict sample."""
    if isinstance(sample, tv_tensors.BoundingBoxes):
        return sample
    children = sample.values() if isinstance(sample, dict) else sample if isinstance(sample, (tuple, list)) else ()
    for child in children:
        found = _find_boxes(child)
        if found is not None:
            return found
    return None


class RandomIoUCropP:
    """``v2.RandomIoUCrop`` applied with probability ``p``; samples without boxes pass unchanged.

    Without boxes, torchvision's crop keeps re-drawing until it happens to pick its
    "no crop" option (no crop can contain a box centre), so skipping them is both
    what it would end up doing and much cheaper.
    """

    def __init__(self, p: float = 0.8, **crop_kwargs: Any):
        self.p = p
        self.crop = v2.RandomIoUCrop(**crop_kwargs)

    def __call__(self, *inputs: Any) -> Any:
        sample = inputs if len(inputs) > 1 else inputs[0]
        # Always draw, so the random stream does not depend on the box count.
        apply = torch.rand(()).item() < self.p
        boxes = _find_boxes(sample)
        if not apply or boxes is None or boxes.shape[0] == 0:
            return sample
        return self.crop(*inputs)

    def __repr__(self) -> str:
        return f"RandomIoUCropP(p={self.p}, {self.crop})"


class ToModelFormat:
    """Final step: image -> plain float tensor; boxes -> float32 [N, 4] cxcywh normalized by (W, H)."""

    def __call__(self, image: Tensor, target: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        target = dict(target)
        boxes = target["boxes"]
        h, w = boxes.canvas_size
        xyxy = v2.functional.convert_bounding_box_format(
            boxes, new_format=tv_tensors.BoundingBoxFormat.XYXY
        ).as_subclass(Tensor)
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        target["boxes"] = box_xyxy_to_cxcywh(xyxy.float() / scale).clamp_(0.0, 1.0).reshape(-1, 4)
        return image.as_subclass(Tensor), target

    def __repr__(self) -> str:
        return "ToModelFormat(cxcywh, normalized)"


class DetectionTransforms(EpochSchedule):
    """Strong augmentations (until ``stop_epoch``) followed by the always-on pipeline.

    Args:
        strong: transforms skipped from ``stop_epoch`` on.
        base: transforms always applied, after ``strong``.
        stop_epoch: first epoch without ``strong``; None keeps them forever.
    """

    def __init__(self, strong: Sequence[Any], base: Sequence[Any], stop_epoch: int | None = None):
        super().__init__(stop_epoch)
        self.strong = v2.Compose(list(strong)) if strong else None
        self.base = v2.Compose(list(base))

    @property
    def strong_active(self) -> bool:
        return self.strong is not None and self.before_stop_epoch

    def __call__(self, image: Any, target: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        if self.strong_active:
            image, target = self.strong(image, target)
        return self.base(image, target)

    def __repr__(self) -> str:
        return f"DetectionTransforms(stop_epoch={self.stop_epoch}, strong={self.strong}, base={self.base})"


def build_transforms(
    train: bool,
    imgsz: int = 640,
    *,
    stop_epoch: int | None = None,
    distort_p: float = 0.5,
    zoom_out_p: float = 0.5,
    zoom_out_side_range: tuple[float, float] = (1.0, 4.0),
    iou_crop_p: float = 0.8,
    flip_p: float = 0.5,
    min_box_size: float = 1.0,
) -> DetectionTransforms:
    """The training (``train=True``) or evaluation pipeline at ``imgsz`` x ``imgsz``.

    Evaluation is Resize -> ToDtype -> normalized cxcywh. See the module docstring
    for training, and the argument names for the knobs (defaults follow the paper).
    """
    base = [
        v2.Resize((imgsz, imgsz)),
        v2.ToDtype(torch.float32, scale=True),  # images only: uint8 [0, 255] -> float [0, 1]
    ]
    if not train:
        return DetectionTransforms([], base + [ToModelFormat()])
    strong = [
        v2.RandomPhotometricDistort(p=distort_p),
        v2.RandomZoomOut(fill=0, side_range=zoom_out_side_range, p=zoom_out_p),
        RandomIoUCropP(p=iou_crop_p),
        v2.SanitizeBoundingBoxes(min_size=min_box_size),  # drops what the crop cut away
    ]
    base = [
        v2.RandomHorizontalFlip(p=flip_p),
        *base,
        v2.SanitizeBoundingBoxes(min_size=min_box_size),  # boxes under 1 px after resizing
        ToModelFormat(),
    ]
    return DetectionTransforms(strong, base, stop_epoch)
