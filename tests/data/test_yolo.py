"""YOLO (Ultralytics) layout: data.yaml + images/ + labels/, and its COCO-gt equivalent."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from rtdetr.data import DatasetError, build_dataset, resolve_dataset
from rtdetr.data.yolo import label_path_for

from .conftest import write_image


def _yolo(root: Path, names: str = "[cat, dog, bird]") -> Path:
    write_image(root / "images/train/a.jpg", 100, 50)
    write_image(root / "images/train/sub/b.png", 40, 40)
    write_image(root / "images/train/c.png", 20, 20)  # no label file: a negative
    write_image(root / "images/val/v.png", 64, 32)
    labels = root / "labels"
    (labels / "train/sub").mkdir(parents=True)
    (labels / "val").mkdir(parents=True)
    (labels / "train/a.txt").write_text("2 0.5 0.5 0.2 0.4\n0 0.1 0.2 0.2 0.2\n\n")
    (labels / "train/sub/b.txt").write_text("1 0.25 0.25 0.75 0.25 0.75 0.75\n")  # polygon
    (labels / "val/v.txt").write_text("1 0.5 0.5 1.0 1.0\n")
    (root / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: images/val\nnames: {names}\n")
    return root / "data.yaml"


def test_label_path_convention():
    assert label_path_for(Path("/d/images/train/x.jpg")) == Path("/d/labels/train/x.txt")
    assert label_path_for(Path("/images/d/images/x.JPG")) == Path("/images/d/labels/x.txt")
    assert label_path_for(Path("/d/flat/x.png")) == Path("/d/flat/x.txt")


def test_loads_and_matches_coco_gt(tmp_path: Path, caplog):
    yaml_path = _yolo(tmp_path)
    spec = resolve_dataset(tmp_path)  # the folder holding data.yaml works like the yaml itself
    assert spec.format == "yolo" and spec.class_names == ["cat", "dog", "bird"] and spec.category_ids == [0, 1, 2]
    assert resolve_dataset(yaml_path) == spec
    with caplog.at_level(logging.INFO, logger="rtdetr.data"):
        ds = build_dataset(spec, "train")
    assert "1 without a label file" in caplog.text
    assert ds.file_names == ["images/train/a.jpg", "images/train/c.png", "images/train/sub/b.png"]
    image, target = ds[0]
    assert image.shape == (3, 50, 100) and target["orig_size"].tolist() == [100, 50]
    boxes = target["boxes"].as_subclass(torch.Tensor)
    assert torch.allclose(boxes, torch.tensor([[40.0, 15.0, 60.0, 35.0], [0.0, 5.0, 20.0, 15.0]]))
    assert target["labels"].tolist() == [2, 0]
    assert ds[1][1]["boxes"].shape == (0, 4)
    assert torch.allclose(ds[2][1]["boxes"].as_subclass(torch.Tensor), torch.tensor([[10.0, 10.0, 30.0, 30.0]]))

    gt = ds.coco_gt()
    assert [c["id"] for c in gt["categories"]] == [0, 1, 2]
    assert [(im["id"], im["width"], im["height"]) for im in gt["images"]] == [(0, 100, 50), (1, 20, 20), (2, 40, 40)]
    for i in range(len(ds)):
        _, target = ds[i]
        anns = [a for a in gt["annotations"] if a["image_id"] == ds.image_ids[i]]
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        assert torch.allclose(torch.tensor(xyxy).reshape(-1, 4), target["boxes"].as_subclass(torch.Tensor))
        assert [a["category_id"] for a in anns] == target["labels"].tolist()
    assert len(build_dataset(spec, "val")) == 1


def test_names_mapping_and_txt_lists(tmp_path: Path):
    _yolo(tmp_path, names="{0: cat, 1: dog, 2: bird}")
    (tmp_path / "val.txt").write_text("images/val/v.png\n./images/train/a.jpg\n")
    (tmp_path / "data.yaml").write_text("train: images/train\nval: val.txt\nnames: {0: cat, 1: dog, 2: bird}\nnc: 3\n")
    ds = build_dataset(tmp_path / "data.yaml", "val")
    assert ds.class_names == ["cat", "dog", "bird"] and len(ds) == 2
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: [a, b]\nnc: 3\n")
    with pytest.raises(DatasetError, match="nc=3 but 2 names"):
        resolve_dataset(tmp_path)


def test_errors_name_file_and_line(tmp_path: Path):
    _yolo(tmp_path)
    bad = "7 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n0 1.5 0.5 0.2 0.2\n0 40 20 10 10\nx 1 1 1 1\n"
    (tmp_path / "labels/train/a.txt").write_text(bad)
    with pytest.raises(DatasetError) as info:
        build_dataset(tmp_path, "train")
    message = str(info.value)
    assert "5 problem(s)" in message
    assert "class indices outside 0..2" in message and "a.txt:1" in message
    assert "a.txt:2" in message and "a.txt:5" in message
    # two of the three boxes checked far outside [0, 1]: pixel coordinates, the split is refused
    assert "(2 of 3 boxes, over 10%: YOLO labels are 'class cx cy w h' normalized" in message
    assert "a.txt:3" in message and "a.txt:4" in message
    (tmp_path / "data.yaml").write_text("train: images/nope\nval: images/val\nnames: [a, b, c]\n")
    with pytest.raises(FileNotFoundError, match="images/nope"):
        build_dataset(tmp_path, "train")


def test_slightly_outside_is_clipped(tmp_path: Path, caplog):
    _yolo(tmp_path)
    (tmp_path / "labels/val/v.txt").write_text("0 0.5 0.5 1.01 1.0\n1 0.5 0.5 0.0 0.3\n")
    with caplog.at_level(logging.WARNING, logger="rtdetr.data"):
        ds = build_dataset(tmp_path, "val")
    assert "boxes clipped to [0, 1]" in caplog.text and "zero-size boxes skipped" in caplog.text
    assert ds[0][1]["boxes"].as_subclass(torch.Tensor).tolist() == [[0.0, 0.0, 64.0, 32.0]]


def test_one_box_far_outside_among_many_is_clipped(tmp_path: Path, caplog):
    _yolo(tmp_path)
    lines = ["0 0.5 0.5 0.1 0.1"] * 12 + ["1 0.9 0.5 0.4 0.2"]  # the last reaches 0.1 past the right edge
    (tmp_path / "labels/val/v.txt").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="rtdetr.data"):
        ds = build_dataset(tmp_path, "val")
    assert "1 x boxes reaching more than 0.01 outside the image, clipped to it (e.g. " in caplog.text
    assert "v.txt:13" in caplog.text
    boxes = ds[0][1]["boxes"].as_subclass(torch.Tensor)
    assert len(boxes) == 13 and torch.allclose(boxes[-1], torch.tensor([44.8, 12.8, 64.0, 19.2]))
