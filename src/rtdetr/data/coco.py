"""COCO-format datasets: one ``instances_*.json`` plus a folder of images.

Category ids may be arbitrary (COCO's own are 1..90 with gaps): labels are the
positions of the ids sorted ascending, ``category_ids[label]`` maps back.

Validation happens once, at construction, and reports every problem together:

* fatal (one ``DatasetError`` listing counts and the first annotation ids / files):
  images listed but missing on disk, duplicate image ids, annotations of an unknown
  image or unknown category, malformed or non-finite boxes, negative width/height,
  and more than ``max_outside_share`` of the boxes reaching over ``box_tolerance``
  pixels outside their image (the sign of ``[x1, y1, x2, y2]`` or normalized boxes
  where COCO has ``[x, y, width, height]`` in pixels);
* repaired with a logged warning: boxes outside the image are clipped to it, as the
  reference loader does (those over ``box_tolerance`` px out are reported apart);
  zero-width/height boxes, clipped ones included (a few exist in COCO itself), are
  skipped;
* logged at INFO: ``iscrowd=1`` annotations (ignored for training; the evaluator
  still sees them through ``coco_gt()``, which returns the original file) and
  images without annotations (kept, as negatives).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .base import DetectionDataset, ImageRecord, Transform
from .issues import DatasetError, IssueLog

__all__ = ["CocoDetection", "read_coco_categories"]

logger = logging.getLogger(__name__)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot parse COCO annotation file {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path} is not a COCO detection file (no 'images' list)")
    return data


def read_coco_categories(ann_file: str | Path) -> tuple[list[int], list[str]]:
    """(category ids sorted ascending, their names) from a COCO annotation file."""
    path = Path(ann_file)
    data = _read_json(path)
    return _categories(data, path)


def _categories(data: dict[str, Any], path: Path) -> tuple[list[int], list[str]]:
    cats = data.get("categories")
    if not isinstance(cats, list) or not cats:
        raise DatasetError(f"{path} has no 'categories' list")
    try:
        table = sorted((int(c["id"]), str(c.get("name", c["id"]))) for c in cats)
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: malformed category entry ({exc})") from exc
    ids = [cid for cid, _ in table]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{path}: duplicate category ids in {ids}")
    return ids, [name for _, name in table]


def _files_under(directory: Path) -> set[str]:
    """File names directly in ``directory`` (one listing instead of a stat per image)."""
    with os.scandir(directory) as entries:
        return {e.name for e in entries}


class CocoDetection(DetectionDataset):
    """A COCO-layout split.

    Args:
        ann_file: ``instances_<split>.json``.
        image_dir: folder that ``file_name`` entries are relative to.
        category_ids: label -> category id table to use (so train and val share one);
            default: the file's categories sorted by id.
        class_names: names for ``category_ids`` (default: from the file).
        transforms: applied as ``transforms(image, target)``.
        box_tolerance: pixels a box may overhang its image and count as only imprecise.
        max_outside_share: the share of boxes that may overhang by more than that (they
            are clipped too) before the file is refused as being in another box format.

    Raises:
        FileNotFoundError: ``ann_file`` or ``image_dir`` does not exist.
        DatasetError: the annotations are inconsistent (see the module docstring).
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path,
        *,
        category_ids: list[int] | None = None,
        class_names: list[str] | None = None,
        transforms: Transform | None = None,
        box_tolerance: float = 2.0,
        max_outside_share: float = 0.1,
    ):
        ann_file, image_dir = Path(ann_file), Path(image_dir)
        data = _read_json(ann_file)
        if not image_dir.is_dir():
            raise FileNotFoundError(f"COCO image folder not found: {image_dir} (for {ann_file})")
        if category_ids is None:
            category_ids, file_names = _categories(data, ann_file)
            class_names = class_names or file_names
        elif class_names is None:
            names = dict(zip(*_categories(data, ann_file)))
            class_names = [names.get(cid, str(cid)) for cid in category_ids]
        self.ann_file = ann_file
        self.image_dir = image_dir
        records = self._parse(data, ann_file, image_dir, list(category_ids), box_tolerance, max_outside_share)
        super().__init__(records, list(class_names), list(category_ids), transforms, name=str(ann_file))

    @staticmethod
    def _parse(
        data: dict[str, Any],
        ann_file: Path,
        image_dir: Path,
        category_ids: list[int],
        tolerance: float,
        max_outside_share: float,
    ) -> list[ImageRecord]:
        issues = IssueLog(str(ann_file))
        label_of = {cid: i for i, cid in enumerate(category_ids)}
        present = _files_under(image_dir)

        images: dict[int, dict[str, Any]] = {}
        for entry in data["images"]:
            try:
                image_id, file_name = int(entry["id"]), str(entry["file_name"])
                width, height = int(entry["width"]), int(entry["height"])
            except (KeyError, TypeError, ValueError):
                issues.error("image entries without id/file_name/width/height", repr(entry)[:80])
                continue
            if image_id in images:
                issues.error("duplicate image ids", f"id {image_id} ({file_name})")
                continue
            if file_name not in present and not (image_dir / file_name).is_file():
                issues.error(f"image files missing from {image_dir}", file_name)
            images[image_id] = {"file_name": file_name, "width": width, "height": height, "boxes": [], "labels": []}

        crowd, checked, far = 0, 0, []  # far: "ann N in FILE: [box] in WxH" of boxes over `tolerance` px out
        for ann in data.get("annotations", []):
            ann_id = ann.get("id", "?")
            image = images.get(ann.get("image_id"))
            if image is None:
                issues.error("annotations of an unknown image id", f"ann {ann_id} (image_id {ann.get('image_id')})")
                continue
            where = f"ann {ann_id} in {image['file_name']}"
            if ann.get("iscrowd", 0):
                crowd += 1  # crowd regions are ignore-areas for COCOeval, not objects to learn
                continue
            label = label_of.get(ann.get("category_id"))
            if label is None:
                unknown = f"{where} (category_id {ann.get('category_id')})"
                issues.error("annotations with an unknown category id", unknown)
                continue
            box = ann.get("bbox")
            if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
                issues.error("malformed bbox (expected [x, y, w, h] numbers)", f"{where}: {box!r}")
                continue
            x, y, w, h = (float(v) for v in box)
            if not all(math.isfinite(v) for v in (x, y, w, h)):
                issues.error("non-finite bbox values", f"{where}: {box}")
                continue
            if w < 0 or h < 0:
                issues.error("boxes with negative width or height", f"{where}: {box}")
                continue
            W, H = image["width"], image["height"]
            checked += 1
            overhang = max(-x, -y, x + w - W, y + h - H)
            if overhang > tolerance:
                far.append(f"{where}: {box} in {W}x{H}")
            elif overhang > 0.01:
                issues.warn(f"boxes clipped to the image (overhang <= {tolerance:g} px)", where)
            x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, W), min(y + h, H)
            if x2 - x1 <= 0 or y2 - y1 <= 0:
                issues.warn("zero-size boxes skipped", f"{where}: {box}")
                continue
            image["boxes"].append((x1, y1, x2, y2))
            image["labels"].append(label)

        expected = "COCO boxes are [x, y, width, height] in pixels, not [x1, y1, x2, y2] or normalized"
        issues.far_boxes(far, checked, limit=f"{tolerance:g} px", max_share=max_outside_share, expected=expected)
        issues.finish(logger)
        records = []
        for image_id, image in images.items():
            records.append(
                ImageRecord(
                    image_id=image_id,
                    file_name=image["file_name"],
                    path=image_dir / image["file_name"],
                    boxes=np.asarray(image["boxes"], dtype=np.float32).reshape(-1, 4),
                    labels=np.asarray(image["labels"], dtype=np.int64),
                    width=image["width"],
                    height=image["height"],
                )
            )
        negatives = sum(1 for r in records if len(r.labels) == 0)
        logger.info(
            "%s: %d images (%d without boxes, kept as negatives), %d boxes, %d crowd annotations ignored",
            ann_file,
            len(records),
            negatives,
            sum(len(r.labels) for r in records),
            crowd,
        )
        return records

    def _build_coco_gt(self) -> dict[str, Any]:
        # The original file: the evaluator should see crowd regions and unclipped boxes as published.
        data = _read_json(self.ann_file)
        data.setdefault("info", {"description": str(self.ann_file)})
        data.setdefault("licenses", [])
        data.setdefault("annotations", [])
        return data
