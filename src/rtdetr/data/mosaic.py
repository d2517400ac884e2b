"""Mosaic composites: DEIM's "dense one-to-one" augmentation, as a dataset wrapper.

One-to-one matching gives each ground truth a single positive query, so an image
with few objects trains few queries. DEIM raises the number of positives per image
by stitching four images into one: with probability ``prob`` a training sample is a
2x2 mosaic of itself and three other samples drawn at random, each scaled so its
longer side is half the canvas and placed in one quadrant around a random centre;
what falls outside the canvas is cut off. The wrapped dataset's own transforms then
run on the composite as on any image. From ``stop_epoch`` on it is off (the last
epochs train on the real image statistics, as RT-DETRv2's strong augmentation does).

It needs the other samples, so it is a dataset wrapper rather than a transform.
Random draws use torch's global RNG, which DataLoader seeds per worker from the
loader's generator: a run is reproducible for a given seed and worker count.

Formats: the wrapped dataset's raw samples (``load_sample``): uint8 ``tv_tensors.Image``
[3, H, W], ``target["boxes"]`` ``tv_tensors.BoundingBoxes`` XYXY pixels. A composite has
canvas ``size`` x ``size``, the first image's ``image_id`` and ``orig_size`` = (size, size).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from .epoch import EpochSchedule

__all__ = ["MosaicDataset", "compose_mosaic"]

logger = logging.getLogger(__name__)

Sample = tuple[Tensor, dict[str, Any]]


def compose_mosaic(
    samples: list[Sample],
    size: int,
    center: tuple[int, int],
    *,
    min_box_size: float = 2.0,
    min_visible: float = 0.1,
    fill: int = 0,
) -> Sample:
    """Stitch four raw samples into one ``size`` x ``size`` image around ``center``.

    Sample q (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) is resized so
    its longer side is ``size // 2`` and placed with its inner corner at ``center``
    = (x, y) pixels; pixels outside the canvas are dropped. Its boxes move with it
    and are clipped to the visible part; a box is dropped when, after clipping, a
    side is under ``min_box_size`` pixels or under ``min_visible`` of its area
    remains (a sliver of an object is not a learnable target).
    """
    if len(samples) != 4:
        raise ValueError(f"a mosaic needs 4 samples, got {len(samples)}")
    cell = size // 2
    xc, yc = center
    canvas = torch.full((3, size, size), fill, dtype=torch.uint8)
    all_boxes, all_labels = [], []
    for q, (image, target) in enumerate(samples):
        h, w = image.shape[-2:]
        scale = cell / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        tile = TF.resize(image.as_subclass(Tensor), [nh, nw], antialias=True)
        x0 = xc - nw if q in (0, 2) else xc
        y0 = yc - nh if q in (0, 1) else yc
        # Visible part of the tile, in canvas coordinates.
        vx1, vy1, vx2, vy2 = max(x0, 0), max(y0, 0), min(x0 + nw, size), min(y0 + nh, size)
        if vx2 > vx1 and vy2 > vy1:
            canvas[:, vy1:vy2, vx1:vx2] = tile[:, vy1 - y0 : vy2 - y0, vx1 - x0 : vx2 - x0]
        boxes = target["boxes"].as_subclass(Tensor).float().reshape(-1, 4)
        # Resize scales each axis by its own rounded factor, exactly as the pixels moved.
        boxes = boxes * torch.tensor([nw / w, nh / h, nw / w, nh / h]) + torch.tensor([x0, y0, x0, y0])
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        clipped = torch.stack(
            [
                boxes[:, 0].clamp(vx1, vx2),
                boxes[:, 1].clamp(vy1, vy2),
                boxes[:, 2].clamp(vx1, vx2),
                boxes[:, 3].clamp(vy1, vy2),
            ],
            dim=1,
        )
        bw, bh = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
        keep = (bw >= min_box_size) & (bh >= min_box_size) & (bw * bh >= min_visible * area)
        all_boxes.append(clipped[keep])
        all_labels.append(target["labels"][keep])
    first = samples[0][1]
    out = {
        "boxes": tv_tensors.BoundingBoxes(torch.cat(all_boxes), format="XYXY", canvas_size=(size, size)),
        "labels": torch.cat(all_labels),
        "image_id": first["image_id"],
        "orig_size": torch.tensor([size, size], dtype=torch.int64),
    }
    return tv_tensors.Image(canvas), out


class MosaicDataset(EpochSchedule, Dataset):
    """Wraps a :class:`~rtdetr.data.base.DetectionDataset`; see the module docstring.

    Args:
        dataset: has ``load_sample(i)`` (raw sample) and ``transforms`` (applied after
            composing, or to the plain sample).
        prob: probability that a sample is a mosaic (0 disables, 1 always).
        size: canvas side in pixels (the training size suits: the composite then
            needs no further downscaling).
        stop_epoch: first epoch without mosaics; None keeps them on.
        min_box_size / min_visible / fill: see :func:`compose_mosaic`.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        prob: float,
        size: int,
        stop_epoch: int | None = None,
        min_box_size: float = 2.0,
        min_visible: float = 0.1,
        fill: int = 0,
    ) -> None:
        super().__init__(stop_epoch)
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"mosaic prob must lie in [0, 1], got {prob}")
        if size < 2:
            raise ValueError(f"mosaic size must be at least 2 pixels, got {size}")
        self.dataset = dataset
        self.prob = prob
        self.size = size
        self.min_box_size = min_box_size
        self.min_visible = min_visible
        self.fill = fill

    # What the Trainer and the launcher read from a training dataset.
    @property
    def name(self) -> str:
        return getattr(self.dataset, "name", type(self.dataset).__name__)

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def class_names(self) -> list[str]:
        return self.dataset.class_names

    @property
    def category_ids(self) -> list[int]:
        return self.dataset.category_ids

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """Set this schedule's epoch and the wrapped dataset's (its transforms have their own stop epoch)."""
        super().set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    @property
    def mosaic_active(self) -> bool:
        return self.prob > 0 and self.before_stop_epoch

    def __getitem__(self, index: int) -> Sample:
        if not self.mosaic_active or torch.rand(()).item() >= self.prob:
            return self.dataset[index]
        others = torch.randint(len(self.dataset), (3,)).tolist()
        lo, hi = self.size // 4, self.size - self.size // 4
        center = (int(torch.randint(lo, hi + 1, ()).item()), int(torch.randint(lo, hi + 1, ()).item()))
        samples = [self.dataset.load_sample(i) for i in [index, *others]]
        image, target = compose_mosaic(
            samples, self.size, center, min_box_size=self.min_box_size, min_visible=self.min_visible, fill=self.fill
        )
        transforms = getattr(self.dataset, "transforms", None)
        return transforms(image, target) if transforms is not None else (image, target)

    def __repr__(self) -> str:
        return f"MosaicDataset({self.dataset!r}, prob={self.prob}, size={self.size}, stop_epoch={self.stop_epoch})"
