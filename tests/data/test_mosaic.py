"""Mosaic composites (DEIM dense one-to-one): geometry, empty images, the stop epoch, determinism."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from rtdetr.data.collate import BatchCollator
from rtdetr.data.mosaic import MosaicDataset, compose_mosaic
from rtdetr.data.transforms import build_transforms


def _sample(h: int, w: int, rects: list[tuple[int, int, int, int]], first_label: int, image_id: int = 0):
    """A black uint8 image with filled rectangles (x1, y1, x2, y2); rectangle j has colour label+1 in every channel."""
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    labels = []
    for j, (x1, y1, x2, y2) in enumerate(rects):
        label = first_label + j
        image[:, y1:y2, x1:x2] = 40 * (label + 1)
        labels.append(label)
    boxes = torch.tensor(rects, dtype=torch.float32).reshape(-1, 4)
    target = {
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "image_id": torch.tensor(image_id),
        "orig_size": torch.tensor([w, h]),
    }
    return tv_tensors.Image(image), target


class _Dataset(torch.utils.data.Dataset):
    """Minimal DetectionDataset stand-in: raw samples via load_sample, transforms in __getitem__."""

    def __init__(self, samples: list, transforms: Any = None):
        self.samples, self.transforms = samples, transforms
        self.epochs: list[int] = []

    def __len__(self) -> int:
        return len(self.samples)

    def load_sample(self, i: int):
        image, target = self.samples[i]
        return image.clone(), dict(target)

    def __getitem__(self, i: int):
        image, target = self.load_sample(i)
        return self.transforms(image, target) if self.transforms is not None else (image, target)

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


def _four_samples():
    return [
        _sample(96, 128, [(10, 20, 60, 70), (100, 5, 120, 90)], 0, image_id=11),
        _sample(128, 96, [(30, 40, 80, 100)], 2),
        _sample(64, 64, [(4, 4, 60, 30)], 3),
        _sample(80, 160, [(0, 0, 40, 80), (120, 10, 158, 70)], 4),
    ]


@pytest.mark.parametrize("center", [(64, 64), (40, 88), (90, 35)])
def test_boxes_land_where_their_pixels_are(center):
    image, target = compose_mosaic(_four_samples(), 128, center, min_box_size=1.0, min_visible=0.0)
    assert image.shape == (3, 128, 128) and image.dtype == torch.uint8
    assert target["boxes"].canvas_size == (128, 128)
    assert target["image_id"].item() == 11 and target["orig_size"].tolist() == [128, 128]
    assert len(target["labels"]) >= 1
    plane = image[0].int()

    def solid(v: int) -> torch.Tensor:
        """[H, W] bool: pixels of colour v whose 4 neighbours are v too (resize blends are one pixel thick)."""
        eq = torch.nn.functional.pad(plane == v, (1, 1, 1, 1), value=True)  # the canvas edge does not erode
        return eq[1:-1, 1:-1] & eq[:-2, 1:-1] & eq[2:, 1:-1] & eq[1:-1, :-2] & eq[1:-1, 2:]

    for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
        colour = 40 * (label + 1)
        x1, y1, x2, y2 = box
        # The inside of the box (one pixel in from each edge, for the resize's blur) is the rectangle's colour.
        inner = plane[round(y1) + 1 : round(y2) - 1, round(x1) + 1 : round(x2) - 1]
        if inner.numel():
            assert (inner == colour).all(), (label, box)
        # And that colour does not extend past the box.
        ys, xs = torch.nonzero(solid(colour), as_tuple=True)
        assert xs.min() >= x1 - 1 and xs.max() + 1 <= x2 + 1 and ys.min() >= y1 - 1 and ys.max() + 1 <= y2 + 1
    # Every rectangle still visible on the canvas has its box.
    visible = {v // 40 - 1 for v in plane.unique().tolist() if v and solid(v).any()}
    assert visible and visible <= set(target["labels"].tolist())


def test_slivers_and_tiny_boxes_are_dropped():
    # Centre far right: image 1 (top-right) keeps a 4-pixel-wide strip, too little of its box.
    samples = _four_samples()
    _, kept = compose_mosaic(samples, 128, (124, 64))
    assert 2 not in kept["labels"].tolist()
    _, all_kept = compose_mosaic(samples, 128, (124, 64), min_box_size=0.0, min_visible=0.0)
    assert 2 in all_kept["labels"].tolist()


def test_empty_images():
    empty = [_sample(64, 64, [], 0) for _ in range(4)]
    image, target = compose_mosaic(empty, 64, (32, 32))
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    mixed = [_sample(64, 64, [], 0), _sample(64, 64, [(8, 8, 56, 56)], 1), *empty[:2]]
    _, target = compose_mosaic(mixed, 64, (32, 32))
    assert target["labels"].tolist() == [1]
    torch.testing.assert_close(target["boxes"].as_subclass(torch.Tensor), torch.tensor([[36.0, 4.0, 60.0, 28.0]]))


def test_stop_epoch_switches_it_off_and_the_epoch_reaches_the_dataset():
    inner = _Dataset(_four_samples())
    ds = MosaicDataset(inner, prob=1.0, size=128, stop_epoch=2)
    ds.set_epoch(1)
    assert ds.mosaic_active and ds[1][0].shape == (3, 128, 128)
    ds.set_epoch(2)
    assert not ds.mosaic_active and ds[1][0].shape == (3, 128, 96)  # the plain sample
    assert inner.epochs == [1, 2]
    assert not MosaicDataset(inner, prob=0.0, size=128).mosaic_active


def test_deterministic_under_a_seed():
    ds = MosaicDataset(_Dataset(_four_samples()), prob=0.5, size=128)

    def draw(seed: int) -> list:
        torch.manual_seed(seed)
        return [ds[i] for i in range(4)]

    a, b, c = draw(0), draw(0), draw(1)
    for (ia, ta), (ib, tb) in zip(a, b):
        assert torch.equal(ia, ib) and torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["labels"], tb["labels"])
    assert any(not torch.equal(ia, ic) if ia.shape == ic.shape else True for (ia, _), (ic, _) in zip(a, c))


def test_with_the_training_transforms_in_dataloader_workers():
    """Composite -> the normal training pipeline, in a worker process, seeded by the loader's generator."""
    ds = MosaicDataset(_Dataset(_four_samples(), build_transforms(True, 64)), prob=1.0, size=64)

    def batches() -> list:
        loader = DataLoader(
            ds, batch_size=2, num_workers=1, collate_fn=BatchCollator(), generator=torch.Generator().manual_seed(5)
        )
        return list(loader)

    first, second = batches(), batches()
    for (images, targets), (images2, targets2) in zip(first, second):
        assert images.shape == (2, 3, 64, 64) and images.dtype == torch.float32
        assert torch.equal(images, images2)
        for t, t2 in zip(targets, targets2):
            assert t["boxes"].shape[1] == 4 and ((t["boxes"] >= 0) & (t["boxes"] <= 1)).all()
            assert torch.equal(t["boxes"], t2["boxes"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="prob"):
        MosaicDataset(_Dataset([]), prob=1.5, size=64)
    with pytest.raises(ValueError, match="4 samples"):
        compose_mosaic(_four_samples()[:3], 64, (32, 32))
