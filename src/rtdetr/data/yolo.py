"""YOLO (Ultralytics) layout: image folders with a parallel ``labels`` tree.

For an image ``.../images/<sub>/name.jpg`` the labels are in
``.../labels/<sub>/name.txt``, one object per line: ``class cx cy w h``, all but
the class normalized to [0, 1] in the EXIF-oriented image. A line with more
than five numbers is a polygon (``class x1 y1 x2 y2 ...``) and contributes its
bounding box. Category ids are the class indices 0..C-1.

Validation, reported all at once like the COCO reader:

* fatal: a split source (folder or ``.txt`` list) that does not exist
  (``FileNotFoundError``); listed images that are missing; unparsable lines;
  class indices outside 0..C-1; negative width/height; more than ``max_outside_share``
  of the boxes reaching over ``box_tolerance`` (normalized) outside [0, 1] (pixel
  coordinates where YOLO has normalized ones);
* repaired with a logged warning: boxes outside [0, 1] (clipped; those over
  ``box_tolerance`` out reported apart), zero-size boxes, clipped ones included (skipped);
* logged at INFO: images without a label file or with an empty one (kept as negatives).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from .base import DetectionDataset, ImageRecord, Transform
from .issues import IssueLog

__all__ = ["YoloDetection", "IMAGE_EXTENSIONS", "list_images", "label_path_for"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def list_images(source: Path) -> list[Path]:
    """Images of one split source: a folder (searched recursively) or a ``.txt`` list of paths.

    Relative paths in a list file are resolved against the list file's folder.
    """
    if source.is_dir():
        found = []
        for folder, _, files in os.walk(source):
            found += [Path(folder) / f for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
        return sorted(found)
    if source.is_file() and source.suffix == ".txt":
        lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines()]
        return [p if p.is_absolute() else (source.parent / p) for p in (Path(line) for line in lines if line)]
    raise FileNotFoundError(f"YOLO image source not found (expected a folder or a .txt list): {source}")


def label_path_for(image: Path) -> Path:
    """``.../images/x/name.jpg`` -> ``.../labels/x/name.txt`` (next to the image if no ``images`` folder)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):  # the last "images" component, as Ultralytics does
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def _parse_label_file(
    path: Path, num_classes: int, tolerance: float, issues: IssueLog, far: list[str]
) -> tuple[list[tuple[float, float, float, float]], list[int], int]:
    """Boxes (normalized xyxy), labels and the count of boxes checked against the image of
    one label file; boxes over ``tolerance`` outside [0, 1] are appended to ``far`` (and clipped)."""
    boxes, labels, checked = [], [], 0
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        try:
            values = [float(v) for v in fields]
        except ValueError:
            issues.error("unparsable label lines", f"{where}: {line.strip()[:60]!r}")
            continue
        if len(values) < 5 or (len(values) > 5 and len(values) % 2 == 0) or not all(map(math.isfinite, values)):
            issues.error("label lines that are neither 'class cx cy w h' nor a polygon", f"{where}")
            continue
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < num_classes:
            issues.error(f"class indices outside 0..{num_classes - 1}", f"{where}: class {fields[0]}")
            continue
        if len(values) == 5:
            cx, cy, w, h = values[1:]
            if w < 0 or h < 0:
                issues.error("boxes with negative width or height", where)
                continue
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        else:
            xs, ys = values[1::2], values[2::2]
            x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        checked += 1
        overhang = max(-x1, -y1, x2 - 1.0, y2 - 1.0)
        if overhang > tolerance:
            far.append(where)
        elif overhang > 1e-6:
            issues.warn("boxes clipped to [0, 1]", where)
        x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, 1.0), min(y2, 1.0)
        if x2 <= x1 or y2 <= y1:
            issues.warn("zero-size boxes skipped", where)
            continue
        boxes.append((x1, y1, x2, y2))
        labels.append(int(cls))
    return boxes, labels, checked


class YoloDetection(DetectionDataset):
    """One split of a YOLO-layout dataset.

    Args:
        sources: image folders and/or ``.txt`` image lists making up the split.
        class_names: names of classes 0..C-1 (from ``data.yaml``).
        root: folder that ``file_name`` entries (and the COCO gt) are relative to.
        transforms: applied as ``transforms(image, target)``.
        box_tolerance: normalized overhang beyond [0, 1] that counts as only imprecise.
        max_outside_share: the share of boxes that may overhang by more than that (they
            are clipped too) before the split is refused as holding pixel coordinates.
    """

    def __init__(
        self,
        sources: Path | str | list[Path | str],
        class_names: list[str],
        *,
        root: Path | str | None = None,
        transforms: Transform | None = None,
        box_tolerance: float = 0.01,
        max_outside_share: float = 0.1,
    ):
        sources = [Path(s) for s in (sources if isinstance(sources, (list, tuple)) else [sources])]
        if not class_names:
            raise ValueError("a YOLO dataset needs class names ('names' in data.yaml)")
        name = ", ".join(str(s) for s in sources)
        root = Path(root) if root is not None else (sources[0] if sources[0].is_dir() else sources[0].parent)
        issues = IssueLog(name)
        images: list[Path] = []
        for source in sources:
            images += list_images(source)
        records, unlabeled, far, checked = [], 0, [], 0
        for path in images:
            if not path.is_file():
                issues.error("listed images that do not exist", str(path))
                continue
            label_file = label_path_for(path)
            boxes, labels = [], []
            if label_file.is_file():
                boxes, labels, n = _parse_label_file(label_file, len(class_names), box_tolerance, issues, far)
                checked += n
            else:
                unlabeled += 1
            try:
                file_name = path.relative_to(root).as_posix()
            except ValueError:
                file_name = path.as_posix()
            records.append(
                ImageRecord(
                    image_id=len(records),
                    file_name=file_name,
                    path=path,
                    boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                    labels=np.asarray(labels, dtype=np.int64),
                )
            )
        expected = "YOLO labels are 'class cx cy w h' normalized by the image size, not pixels"
        issues.far_boxes(far, checked, limit=f"{box_tolerance:g}", max_share=max_outside_share, expected=expected)
        issues.finish(logger)
        if not records:
            logger.warning("%s: no images found", name)
        logger.info(
            "%s: %d images (%d without a label file, %d without boxes; kept as negatives), %d boxes",
            name,
            len(records),
            unlabeled,
            sum(1 for r in records if len(r.labels) == 0),
            sum(len(r.labels) for r in records),
        )
        self.root = root
        super().__init__(
            records,
            list(class_names),
            list(range(len(class_names))),
            transforms,
            normalized_boxes=True,
            name=name,
        )
