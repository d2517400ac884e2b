"""The synthetic dataset: valid COCO on disk, deterministic, tight boxes, usable by build_dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rtdetr.cli import main as cli_main
from rtdetr.data import build_dataset, resolve_dataset
from rtdetr.data.synthetic import SHAPES, generate_synthetic_dataset, render_image, shape_mask


def test_writes_valid_coco(synth_dir: Path):
    for split, count in (("train", 12), ("val", 6)):
        data = json.loads((synth_dir / "annotations" / f"instances_{split}.json").read_text())
        assert len(data["images"]) == count
        assert [c["id"] for c in data["categories"]] == [cid for _, cid in SHAPES] == [1, 2, 4, 5, 7, 8]
        image_ids = {im["id"] for im in data["images"]}
        for im in data["images"]:
            with Image.open(synth_dir / split / im["file_name"]) as f:
                assert f.size == (im["width"], im["height"]) == (128, 128)
        ann_ids = [a["id"] for a in data["annotations"]]
        assert len(set(ann_ids)) == len(ann_ids)
        for a in data["annotations"]:
            x, y, w, h = a["bbox"]
            assert a["image_id"] in image_ids and a["iscrowd"] == 0
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128
            assert 0 < a["area"] <= w * h


def test_deterministic(tmp_path: Path, synth_dir: Path):
    again = generate_synthetic_dataset(tmp_path, num_train=12, num_val=6, imgsz=128, seed=3, image_format="png")
    for rel in ("annotations/instances_train.json", "train/000005.png", "val/000002.png"):
        assert (again / rel).read_bytes() == (synth_dir / rel).read_bytes()
    other = render_image(np.random.default_rng([4, 0, 4]), 128).image
    assert not np.array_equal(other, np.asarray(Image.open(synth_dir / "train/000005.png")))


def test_boxes_are_tight_around_the_drawing_mask():
    rng = np.random.default_rng(0)
    seen_objects = seen_negative = 0
    for _ in range(40):
        sample = render_image(rng, 160)
        seen_negative += not sample.labels
        for k, (x0, y0, x1, y1) in enumerate(sample.boxes):
            seen_objects += 1
            mine = sample.owner == k
            inside = mine[y0:y1, x0:x1]
            assert inside.sum() == mine.sum() == sample.areas[k]  # nothing visible outside the box
            # every edge row / column of the box touches the object: the box is tight
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
    assert seen_objects > 60 and seen_negative >= 1


def test_shape_mask_matches_geometry():
    # A circle of radius 10 centred at (50, 40), sampled at pixel centres: columns 40..59, rows 30..49.
    xs = np.arange(100) + 0.5
    u, v = (xs[None, :] - 50) / 10, (xs[:, None] - 40) / 10
    mask = shape_mask("circle", u, v)
    cols, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
    assert (cols[0], cols[-1], rows[0], rows[-1]) == (40, 59, 30, 49)
    ring = shape_mask("ring", u, v)
    assert not ring[40, 50] and ring[31, 50]  # hole in the middle, band near the edge
    for name, _ in SHAPES:  # every class fits its unit disc and is not empty
        m = shape_mask(name, u, v)
        assert m.any() and not m[(u**2 + v**2) > 1.2].any()
    with pytest.raises(ValueError, match="unknown shape"):
        shape_mask("hexagon", u, v)


def test_written_pixels_are_the_rendering(synth_dir: Path):
    # Re-render image 1 of train and compare with the PNG on disk: the written pixels are the drawing.
    sample = render_image(np.random.default_rng([3, 0, 0]), 128)
    on_disk = np.asarray(Image.open(synth_dir / "train" / "000001.png"))
    assert np.array_equal(sample.image, on_disk)


def test_round_trips_through_build_dataset(synth_dir: Path):
    spec = resolve_dataset(synth_dir)
    assert spec.format == "coco" and spec.class_names == [n for n, _ in SHAPES]
    ds = build_dataset(spec, "train")
    data = json.loads((synth_dir / "annotations" / "instances_train.json").read_text())
    assert len(ds) == 12 and ds.num_classes == 6 and ds.category_ids == [1, 2, 4, 5, 7, 8]
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.dtype == torch.uint8 and image.shape == (3, 128, 128)
        anns = [a for a in data["annotations"] if a["image_id"] == int(target["image_id"])]
        expected = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]).reshape(-1, 4)
        assert torch.equal(target["boxes"].as_subclass(torch.Tensor), expected.float())
        assert [ds.category_ids[int(label)] for label in target["labels"]] == [a["category_id"] for a in anns]


def test_num_classes_and_cli_entry(tmp_path: Path):
    argv = ["data", "synth", str(tmp_path), "--train", "3", "--val", "2", "--imgsz", "64", "--classes", "2"]
    assert cli_main([*argv, "--format", "png"]) == 0
    data = json.loads((tmp_path / "annotations" / "instances_val.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["circle", "square"]
    assert {a["category_id"] for a in data["annotations"]} <= {1, 2}
    assert len(list((tmp_path / "train").glob("*.png"))) == 3
    with pytest.raises(ValueError):
        generate_synthetic_dataset(tmp_path, num_classes=7)


def test_object_size_and_count_knobs_shape_the_generated_set(tmp_path):
    """A second dataset with other settings: small objects (6 px .. 15% of the side), up to 14 per image."""
    out = generate_synthetic_dataset(
        tmp_path / "small", num_train=40, num_val=2, imgsz=200, num_classes=5, max_objects=14, object_size=(6, 0.15)
    )
    coco = json.loads((out / "annotations" / "instances_train.json").read_text())
    sides = [max(a["bbox"][2], a["bbox"][3]) for a in coco["annotations"]]
    per_image = [sum(a["image_id"] == im["id"] for a in coco["annotations"]) for im in coco["images"]]
    # diameter <= 30 px; stretch (<= e^0.2) and the square's corners (x 0.75 * sqrt 2) bound the box side
    assert max(sides) <= 30 * 1.23 * 1.07 + 2 and min(sides) >= 2
    assert max(per_image) > 8 and max(per_image) <= 14  # more than the default cap of 8 occurs
    assert {c["id"] for c in coco["categories"]} == {1, 2, 4, 5, 7}
    with pytest.raises(ValueError, match="object_size"):
        generate_synthetic_dataset(tmp_path / "bad", num_train=1, num_val=1, object_size=(0, 2.0))
