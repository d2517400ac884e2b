"""The detection dataset shared by the COCO and YOLO readers.

A dataset is a list of ``ImageRecord`` (file, id, validated boxes and labels)
plus the class table. ``__getitem__`` decodes the image and returns
``(image, target)``:

* ``image``: ``tv_tensors.Image`` uint8 [3, H, W] RGB (before transforms);
* ``target["boxes"]``: ``tv_tensors.BoundingBoxes`` float32 [N, 4], XYXY in pixels,
  ``canvas_size=(H, W)``;
* ``target["labels"]``: int64 [N], contiguous labels 0..C-1;
* ``target["image_id"]``: int64 scalar; ``target["orig_size"]``: int64 [2] = (w, h).

With the transforms of ``rtdetr.data.transforms`` the image becomes float [3, S, S]
in [0, 1] and ``boxes`` a float32 [N, 4] tensor, cxcywh normalized to [0, 1].
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from .image_io import image_size, load_image
from .issues import DatasetError

__all__ = ["ImageRecord", "DetectionDataset"]

logger = logging.getLogger(__name__)

Transform = Callable[[Any, dict[str, Any]], tuple[Any, dict[str, Any]]]


@dataclass
class ImageRecord:
    """One image and its (already validated) boxes.

    ``boxes`` are float32 [N, 4] xyxy, in pixels when the dataset knows the image
    size up front (COCO), or normalized to [0, 1] (YOLO; scaled when loaded).
    ``width``/``height`` are the annotated size in display orientation, or None
    when unknown until the image is read.
    """

    image_id: int
    file_name: str
    path: Path
    boxes: np.ndarray
    labels: np.ndarray
    width: int | None = None
    height: int | None = None


class DetectionDataset(Dataset):
    """Images with boxes; see the module docstring for the sample format.

    Args:
        records: the images, in index order.
        class_names: name of each contiguous label.
        category_ids: dataset category id of each contiguous label (COCO ids, or
            0..C-1 for YOLO); ``category_ids[label]`` maps predictions back.
        transforms: called as ``transforms(image, target)``; None keeps raw samples.
        normalized_boxes: records hold boxes normalized to [0, 1] (scaled at load).
        name: what to call the dataset in messages (an annotation file or folder).
    """

    def __init__(
        self,
        records: list[ImageRecord],
        class_names: list[str],
        category_ids: list[int],
        transforms: Transform | None = None,
        *,
        normalized_boxes: bool = False,
        name: str = "dataset",
    ):
        if len(class_names) != len(category_ids):
            raise ValueError(f"{len(class_names)} class names but {len(category_ids)} category ids")
        self.records = records
        self.class_names = list(class_names)
        self.category_ids = list(category_ids)
        self.transforms = transforms
        self.normalized_boxes = normalized_boxes
        self.name = name
        self._label_of_id = {cid: i for i, cid in enumerate(self.category_ids)}
        self._coco_gt: dict[str, Any] | None = None
        self._warned_raw_orientation = False

    # ---- class table ---------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def label_to_category_id(self, label: int) -> int:
        """Contiguous label 0..C-1 -> dataset category id."""
        return self.category_ids[label]

    def category_id_to_label(self, category_id: int) -> int:
        """Dataset category id -> contiguous label (KeyError for unknown ids)."""
        return self._label_of_id[category_id]

    # ---- images --------------------------------------------------------------------
    @property
    def image_ids(self) -> list[int]:
        return [r.image_id for r in self.records]

    @property
    def file_names(self) -> list[str]:
        return [r.file_name for r in self.records]

    def image_path(self, index: int) -> Path:
        return self.records[index].path

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the transforms (strong augmentation stops at their stop epoch)."""
        if hasattr(self.transforms, "set_epoch"):
            self.transforms.set_epoch(epoch)

    def _load_oriented(self, record: ImageRecord) -> tv_tensors.Image:
        """Decode with EXIF orientation; fall back to the stored layout if the annotations used it."""
        image = load_image(record.path)
        if record.width is None or record.height is None:
            return image
        h, w = image.shape[-2:]
        if (w, h) == (record.width, record.height):
            return image
        if (h, w) == (record.width, record.height):
            # The annotation tool saw the pixels without their EXIF rotation; keep that frame,
            # otherwise every box of this image would be rotated away from its object.
            if not self._warned_raw_orientation:
                logger.warning(
                    "%s: %s is annotated in its stored orientation (EXIF rotation ignored for such images)",
                    self.name,
                    record.file_name,
                )
                self._warned_raw_orientation = True
            return load_image(record.path, exif=False)
        raise DatasetError(
            f"{self.name}: image {record.path} is {w}x{h} but the annotations say {record.width}x{record.height}"
        )

    def load_sample(self, index: int) -> tuple[tv_tensors.Image, dict[str, Any]]:
        """The untransformed sample ``index`` (formats in the module docstring)."""
        record = self.records[index]
        image = self._load_oriented(record)
        h, w = image.shape[-2:]
        boxes = record.boxes.astype(np.float32, copy=True)
        if self.normalized_boxes:
            boxes *= np.array([w, h, w, h], dtype=np.float32)
        boxes_t = torch.from_numpy(boxes).reshape(-1, 4)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes_t, format="XYXY", canvas_size=(h, w)),
            "labels": torch.from_numpy(record.labels.astype(np.int64, copy=True)),
            "image_id": torch.tensor(record.image_id, dtype=torch.int64),
            "orig_size": torch.tensor([w, h], dtype=torch.int64),
        }
        return image, target

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        image, target = self.load_sample(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    # ---- evaluation ------------------------------------------------------------------
    def coco_gt(self) -> dict[str, Any]:
        """The ground truth as a COCO-format dict (images, annotations, categories).

        Built from the records (reading image headers for sizes when needed), so an
        evaluator written for COCO works on any layout. Cached after the first call.
        """
        if self._coco_gt is None:
            self._coco_gt = self._build_coco_gt()
        return self._coco_gt

    def _build_coco_gt(self) -> dict[str, Any]:
        images, annotations = [], []
        for record in self.records:
            if record.width is None or record.height is None:
                record.width, record.height = image_size(record.path)
            w, h = record.width, record.height
            images.append({"id": record.image_id, "file_name": record.file_name, "width": w, "height": h})
            scale = np.array([w, h, w, h], dtype=np.float64) if self.normalized_boxes else np.ones(4)
            for box, label in zip(record.boxes.astype(np.float64) * scale, record.labels.tolist()):
                x1, y1, x2, y2 = (float(v) for v in box)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": record.image_id,
                        "category_id": self.category_ids[label],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1),
                        "iscrowd": 0,
                    }
                )
        categories = [{"id": cid, "name": name} for cid, name in zip(self.category_ids, self.class_names)]
        return {
            "info": {"description": f"ground truth of {self.name}"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, images={len(self)}, classes={self.num_classes})"
