"""Fixtures for the data tests: a small synthetic dataset and a hand-written COCO writer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from rtdetr.data.synthetic import generate_synthetic_dataset


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 train / 6 val synthetic images at 128 px, lossless so pixels match the drawing."""
    out = tmp_path_factory.mktemp("synth")
    return generate_synthetic_dataset(out, num_train=12, num_val=6, imgsz=128, seed=3, image_format="png")


def write_image(path: Path, width: int, height: int, colour: tuple[int, int, int] = (90, 120, 150)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), colour, dtype=np.uint8)).save(path)


def write_coco(
    root: Path,
    images: list[tuple[int, str, int, int]],
    annotations: list[dict[str, Any]],
    categories: list[tuple[int, str]],
    split: str = "train",
    create_files: bool = True,
) -> Path:
    """A COCO folder ``root/annotations/instances_<split>.json`` + ``root/<split>/``; returns the json path.

    ``images``: (id, file_name, width, height); ``annotations``: dicts with at least
    image_id, category_id, bbox (ids and iscrowd are filled in when absent).
    """
    for _image_id, file_name, w, h in images:
        if create_files:
            write_image(root / split / file_name, w, h)
    (root / split).mkdir(parents=True, exist_ok=True)
    anns = []
    for i, ann in enumerate(annotations, start=1):
        ann = {"id": i, "iscrowd": 0, **ann}
        ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3] if len(ann["bbox"]) == 4 else 0)
        anns.append(ann)
    data = {
        "images": [{"id": i, "file_name": f, "width": w, "height": h} for i, f, w, h in images],
        "annotations": anns,
        "categories": [{"id": cid, "name": name} for cid, name in categories],
    }
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path
