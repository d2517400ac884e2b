"""COCO reader: category mapping, crowd / negative handling, validation messages, layouts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from rtdetr.data import CocoDetection, DatasetError, ImageReadError, build_dataset, resolve_dataset

from .conftest import write_coco

CATS = [(90, "toothbrush"), (3, "car"), (17, "cat")]  # unsorted and non-contiguous on purpose


def _basic(root: Path) -> Path:
    return write_coco(
        root,
        images=[(10, "a.png", 40, 30), (20, "b.png", 50, 20), (30, "empty.png", 16, 16)],
        annotations=[
            {"image_id": 10, "category_id": 17, "bbox": [1, 2, 10, 5]},
            {"image_id": 10, "category_id": 90, "bbox": [20, 10, 15, 15]},
            {"image_id": 20, "category_id": 3, "bbox": [0, 0, 50, 20]},
            {"image_id": 20, "category_id": 3, "bbox": [5, 5, 10, 10], "iscrowd": 1},
        ],
        categories=CATS,
    )


def test_category_mapping_both_ways(tmp_path: Path):
    ann = _basic(tmp_path)
    ds = CocoDetection(ann, tmp_path / "train")
    assert ds.category_ids == [3, 17, 90] and ds.class_names == ["car", "cat", "toothbrush"]
    assert [ds.category_id_to_label(c) for c in (3, 17, 90)] == [0, 1, 2]
    assert [ds.label_to_category_id(i) for i in range(3)] == [3, 17, 90]
    image, target = ds[0]
    assert target["labels"].tolist() == [1, 2] and target["labels"].dtype == torch.int64
    assert target["boxes"].as_subclass(torch.Tensor).tolist() == [[1, 2, 11, 7], [20, 10, 35, 25]]
    assert target["boxes"].canvas_size == (30, 40) and target["boxes"].format.name == "XYXY"
    assert int(target["image_id"]) == 10 and target["orig_size"].tolist() == [40, 30]
    assert image.shape == (3, 30, 40) and image.dtype == torch.uint8


def test_crowd_ignored_negatives_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    ann = _basic(tmp_path)
    with caplog.at_level(logging.INFO, logger="rtdetr.data"):
        ds = CocoDetection(ann, tmp_path / "train")
    assert "1 crowd annotations ignored" in caplog.text and "1 without boxes" in caplog.text
    assert ds.image_ids == [10, 20, 30]
    assert ds[1][1]["labels"].tolist() == [0]  # the crowd box is not a training target
    _, target = ds[2]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    gt = ds.coco_gt()  # the evaluator still sees the crowd region
    assert sum(a["iscrowd"] for a in gt["annotations"]) == 1 and len(gt["images"]) == 3


def test_missing_annotation_file_and_image_dir(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="instances_nope.json"):
        CocoDetection(tmp_path / "instances_nope.json", tmp_path)
    ann = _basic(tmp_path)
    with pytest.raises(FileNotFoundError, match="no_images"):
        CocoDetection(ann, tmp_path / "no_images")
    with pytest.raises(FileNotFoundError, match="not a dataset"):
        resolve_dataset(tmp_path / "train")
    with pytest.raises(FileNotFoundError, match="dataset not found"):
        resolve_dataset(tmp_path / "nowhere")


def test_all_problems_reported_together(tmp_path: Path):
    ann = write_coco(
        tmp_path,
        images=[(1, "ok.png", 40, 30), (2, "missing.png", 40, 30)],
        annotations=[
            {"image_id": 1, "category_id": 3, "bbox": [30, 20, 20, 5]},  # 10 px beyond the right edge
            {"image_id": 1, "category_id": 3, "bbox": [20, 10, 38, 25]},  # [x1, y1, x2, y2] by mistake
            {"image_id": 1, "category_id": 99, "bbox": [1, 1, 5, 5]},  # unknown category
            {"image_id": 1, "category_id": 3, "bbox": [1, 1, -2, 5]},  # negative width
            {"image_id": 7, "category_id": 3, "bbox": [1, 1, 5, 5]},  # unknown image
            {"image_id": 1, "category_id": 3, "bbox": [1, 1, 5]},  # malformed
        ],
        categories=[(3, "car")],
    )
    (tmp_path / "train" / "missing.png").unlink()
    with pytest.raises(DatasetError) as info:
        CocoDetection(ann, tmp_path / "train")
    message = str(info.value)
    assert "instances_train.json" in message and "7 problem(s)" in message
    assert "missing.png" in message
    # both checked boxes far out: the whole file is taken for another box format
    assert "outside the image by more than 2 px (2 of 2 boxes" in message and "ann 1 in ok.png" in message
    assert "[x, y, width, height] in pixels, not [x1, y1, x2, y2]" in message
    assert "unknown category id" in message and "category_id 99" in message
    assert "negative width or height" in message and "ann 4" in message
    assert "unknown image id" in message and "image_id 7" in message
    assert "malformed bbox" in message
    assert info.value.issues["annotations with an unknown category id"][0] == 1
    assert isinstance(info.value, ValueError)


def test_small_overhang_clipped_and_zero_size_skipped_with_warning(tmp_path: Path, caplog):
    ann = write_coco(
        tmp_path,
        images=[(1, "a.png", 40, 30)],
        annotations=[
            {"image_id": 1, "category_id": 3, "bbox": [-1.5, 25, 10, 6]},  # overhangs by 1.5 px and 1 px
            {"image_id": 1, "category_id": 3, "bbox": [5, 5, 0, 4]},  # zero width
        ],
        categories=[(3, "car")],
    )
    with caplog.at_level(logging.WARNING, logger="rtdetr.data"):
        ds = CocoDetection(ann, tmp_path / "train")
    assert "1 x boxes clipped to the image" in caplog.text and "1 x zero-size boxes skipped" in caplog.text
    assert "ann 2 in a.png" in caplog.text
    assert ds[0][1]["boxes"].as_subclass(torch.Tensor).tolist() == [[0.0, 25.0, 8.5, 30.0]]


def test_a_few_boxes_far_outside_are_clipped_not_fatal(tmp_path: Path, caplog):
    """As the reference loader does: an annotation slip in one box of many does not refuse the file."""
    boxes = [[i, 2, 5, 5] for i in range(30)]  # thirty good boxes, 1 px apart
    boxes += [[30, 20, 20, 5], [50, 40, 5, 5]]  # 10 px over the right edge; wholly outside (clipped to nothing)
    ann = write_coco(
        tmp_path,
        images=[(1, "a.png", 40, 30)],
        annotations=[{"image_id": 1, "category_id": 3, "bbox": b} for b in boxes],
        categories=[(3, "car")],
    )
    with caplog.at_level(logging.WARNING, logger="rtdetr.data"):
        ds = CocoDetection(ann, tmp_path / "train")
    assert "2 x boxes reaching more than 2 px outside the image, clipped to it" in caplog.text
    assert "ann 31 in a.png: [30, 20, 20, 5] in 40x30" in caplog.text and "1 x zero-size boxes skipped" in caplog.text
    got = ds[0][1]["boxes"].as_subclass(torch.Tensor).tolist()
    assert len(got) == 31 and got[-1] == [30.0, 20.0, 40.0, 25.0]
    with pytest.raises(DatasetError, match=r"2 of 32 boxes, over 5%"):  # the share is a parameter
        CocoDetection(ann, tmp_path / "train", max_outside_share=0.05)


def test_corrupt_image_named_when_loaded(tmp_path: Path):
    ann = _basic(tmp_path)
    (tmp_path / "train" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    ds = CocoDetection(ann, tmp_path / "train")  # construction does not decode images
    with pytest.raises(ImageReadError, match="b.png"):
        ds[1]


def test_image_size_mismatch_is_an_error(tmp_path: Path):
    ann = _basic(tmp_path)
    data = json.loads(ann.read_text())
    data["images"][0]["width"] = 41
    ann.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"a.png is 40x30 but the annotations say 41x30"):
        CocoDetection(ann, tmp_path / "train")[0]


def test_resolve_coco2017_naming_and_shared_categories(tmp_path: Path):
    write_coco(
        tmp_path,
        [(1, "t.png", 8, 8)],
        [{"image_id": 1, "category_id": 5, "bbox": [0, 0, 4, 4]}],
        [(5, "five"), (2, "two")],
        split="train2017",
    )
    write_coco(tmp_path, [(1, "v.png", 8, 8)], [], [(5, "five"), (2, "two")], split="val2017")
    spec = resolve_dataset(tmp_path)
    assert sorted(spec.splits) == ["train", "val"] and spec.category_ids == [2, 5]
    assert spec.splits["train"].images == (tmp_path / "train2017",)
    train = build_dataset(spec, "train")
    assert train[0][1]["labels"].tolist() == [1]
    with pytest.raises(DatasetError, match="no split 'test'"):
        build_dataset(spec, "test")


def test_coco_yaml(tmp_path: Path):
    write_coco(
        tmp_path / "d",
        [(1, "t.png", 8, 8)],
        [{"image_id": 1, "category_id": 5, "bbox": [0, 0, 4, 4]}],
        [(5, "five")],
        split="val",
    )
    yaml_path = tmp_path / "coco.yaml"
    yaml_path.write_text("format: coco\npath: d\nval: {images: val, annotations: annotations/instances_val.json}\n")
    spec = resolve_dataset(yaml_path)
    assert spec.format == "coco" and list(spec.splits) == ["val"] and spec.class_names == ["five"]
    assert len(build_dataset(yaml_path, "val")) == 1
