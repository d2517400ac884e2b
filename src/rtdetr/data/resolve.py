"""Find out what a dataset path is, and build its splits.

``resolve_dataset(path)`` accepts:

* a COCO-layout folder: ``annotations/instances_<split>.json`` with images in
  ``<split>/`` (also COCO's own ``instances_val2017.json`` + ``val2017/``, and
  ``images/<split>/``); the split is named without the year (``val2017`` -> ``val``);
* a COCO-style YAML::

      format: coco
      path: .                    # optional root, relative to this file
      train: {images: train2017, annotations: annotations/instances_train2017.json}
      val: {images: val2017, annotations: annotations/instances_val2017.json}

* a YOLO (Ultralytics) ``data.yaml``, or a folder holding one: ``path`` (root,
  relative to the YAML file when relative), ``train`` / ``val`` / ``test`` (a folder,
  a ``.txt`` image list, or a list of those, relative to the root), ``names`` (a list,
  or a ``{index: name}`` mapping), optional ``nc``.

``build_dataset(spec_or_path, split)`` returns the split's ``DetectionDataset``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import DetectionDataset, Transform
from .coco import CocoDetection, read_coco_categories
from .issues import DatasetError, DatasetNotFoundError
from .yolo import YoloDetection

__all__ = ["SplitSource", "DatasetSpec", "resolve_dataset", "build_dataset"]

_YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")
_SPLIT_KEYS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitSource:
    """Where one split lives. COCO: one image folder + ``annotations``; YOLO: folders / lists."""

    images: tuple[Path, ...]
    annotations: Path | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A resolved dataset: its format, splits and class table.

    ``category_ids[label]`` is the dataset id of contiguous label ``label`` (COCO ids
    sorted ascending; 0..C-1 for YOLO); ``class_names[label]`` its name.
    """

    format: str  # "coco" or "yolo"
    root: Path
    splits: dict[str, SplitSource] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> SplitSource:
        if name not in self.splits:
            raise DatasetError(f"dataset {self.root} has no split {name!r} (available: {sorted(self.splits)})")
        return self.splits[name]


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"reading {path} needs PyYAML (pip install pyyaml)") from exc
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DatasetError(f"cannot parse {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path} should hold a mapping (train/val/names ...), got {type(data).__name__}")
    return data


def _coco_spec(root: Path, splits: dict[str, SplitSource]) -> DatasetSpec:
    if not splits:
        raise DatasetNotFoundError(f"no COCO annotation files (annotations/instances_<split>.json) under {root}")
    # Categories come from one file (val first: it is the small one) and are shared by all splits,
    # so that a label means the same class in training and evaluation.
    first = splits.get("val") or next(iter(splits.values()))
    category_ids, class_names = read_coco_categories(first.annotations)
    return DatasetSpec("coco", root, splits, class_names, category_ids)


def _resolve_coco_folder(root: Path) -> DatasetSpec:
    ann_dir = root / "annotations"
    if not ann_dir.is_dir():
        raise DatasetNotFoundError(
            f"{root} is not a dataset: expected annotations/instances_<split>.json (COCO) or data.yaml (YOLO)"
        )
    splits: dict[str, SplitSource] = {}
    for ann_file in sorted(ann_dir.glob("instances_*.json")):
        stem = ann_file.stem[len("instances_") :]
        split = re.sub(r"\d{4}$", "", stem) or stem  # "val2017" -> "val"
        candidates = [root / stem, root / split, root / "images" / stem, root / "images" / split]
        image_dir = next((c for c in candidates if c.is_dir()), candidates[0])
        splits[split] = SplitSource((image_dir,), ann_file)
    if not splits:
        raise DatasetNotFoundError(f"no annotation files matching {ann_dir}/instances_<split>.json")
    return _coco_spec(root, splits)


def _yolo_names(data: dict[str, Any], path: Path) -> list[str]:
    names = data.get("names")
    if isinstance(names, dict):
        try:
            table = {int(k): str(v) for k, v in names.items()}
        except ValueError as exc:
            raise DatasetError(f"{path}: 'names' keys must be class indices") from exc
        if sorted(table) != list(range(len(table))):
            raise DatasetError(f"{path}: 'names' indices must be 0..{len(table) - 1}, got {sorted(table)}")
        names = [table[i] for i in range(len(table))]
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{path}: 'names' (a list of class names) is required")
    if "nc" in data and int(data["nc"]) != len(names):
        raise DatasetError(f"{path}: nc={data['nc']} but {len(names)} names")
    return [str(n) for n in names]


def _resolve_yaml(path: Path) -> DatasetSpec:
    data = _load_yaml(path)
    root = Path(data["path"]) if data.get("path") else path.parent
    if not root.is_absolute():
        root = path.parent / root

    is_coco = data.get("format") == "coco" or any(
        isinstance(data.get(k), dict) and "annotations" in data[k] for k in _SPLIT_KEYS
    )
    if is_coco:
        splits = {}
        for key in _SPLIT_KEYS:
            entry = data.get(key)
            if entry is None:
                continue
            if not (isinstance(entry, dict) and "images" in entry and "annotations" in entry):
                raise DatasetError(f"{path}: COCO split {key!r} needs 'images' and 'annotations'")
            splits[key] = SplitSource((root / entry["images"],), root / entry["annotations"])
        return _coco_spec(root, splits)

    splits = {}
    for key in _SPLIT_KEYS:
        entry = data.get(key)
        if entry is None:
            continue
        entries = entry if isinstance(entry, list) else [entry]
        splits[key] = SplitSource(tuple(root / str(e) for e in entries))
    if not splits:
        raise DatasetError(f"{path}: no 'train' / 'val' entries")
    names = _yolo_names(data, path)
    return DatasetSpec("yolo", root, splits, names, list(range(len(names))))


def resolve_dataset(path: str | Path) -> DatasetSpec:
    """Identify the dataset at ``path`` (see the module docstring for the accepted layouts).

    Raises:
        DatasetNotFoundError: ``path`` or the files its layout needs do not exist (a
            ``FileNotFoundError`` and a :class:`rtdetr.errors.UserError`).
        DatasetError: a YAML or annotation file is malformed.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetNotFoundError(f"dataset not found: {path}")
    if path.is_file():
        if path.suffix.lower() in (".yaml", ".yml"):
            return _resolve_yaml(path)
        raise DatasetError(f"{path}: expected a dataset folder or a .yaml file")
    for name in _YAML_NAMES:
        if (path / name).is_file():
            return _resolve_yaml(path / name)
    return _resolve_coco_folder(path)


def build_dataset(
    spec_or_path: DatasetSpec | str | Path, split: str, transforms: Transform | None = None, **kwargs: Any
) -> DetectionDataset:
    """The ``split`` of a dataset as a torch ``Dataset`` of ``(image, target)``.

    Args:
        spec_or_path: a ``DatasetSpec`` or anything ``resolve_dataset`` accepts.
        split: "train", "val", ... (a split the spec has).
        transforms: called as ``transforms(image, target)``, e.g. ``build_transforms(...)``.
        **kwargs: passed to the reader (``box_tolerance``).
    """
    spec = spec_or_path if isinstance(spec_or_path, DatasetSpec) else resolve_dataset(spec_or_path)
    source = spec.split(split)
    if spec.format == "coco":
        return CocoDetection(
            source.annotations,
            source.images[0],
            category_ids=spec.category_ids,
            class_names=spec.class_names,
            transforms=transforms,
            **kwargs,
        )
    if spec.format == "yolo":
        return YoloDetection(list(source.images), spec.class_names, root=spec.root, transforms=transforms, **kwargs)
    raise DatasetError(f"unknown dataset format {spec.format!r}")
