"""Batch collation and per-batch multi-scale resizing."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from rtdetr.data import BatchCollator, build_dataset, build_transforms, default_multi_scales


def _batch(n: int = 3, size: int = 32):
    return [(torch.rand(3, size, size), {"labels": torch.tensor([i]), "boxes": torch.rand(1, 4)}) for i in range(n)]


def test_default_multi_scales():
    assert default_multi_scales(640) == [480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800]
    assert default_multi_scales(320) == [240, 256, 272, 288, 304, 320, 320, 320, 336, 352, 368, 384, 400]
    assert all(s % 16 == 0 for s in default_multi_scales(416))


def test_stacks_without_multi_scale():
    batch = _batch()
    images, targets = BatchCollator()(batch)
    assert images.shape == (3, 3, 32, 32) and torch.equal(images[1], batch[1][0])
    assert [int(t["labels"]) for t in targets] == [0, 1, 2]


def test_multi_scale_until_stop_epoch():
    collate = BatchCollator(multi_scales=[16, 48, 64], stop_epoch=2)
    torch.manual_seed(0)
    sizes = {collate(_batch())[0].shape[-1] for _ in range(20)}
    assert sizes == {16, 48, 64}
    collate.set_epoch(2)
    assert {collate(_batch())[0].shape[-1] for _ in range(10)} == {32}
    # deterministic given torch's RNG
    collate.set_epoch(0)
    torch.manual_seed(5)
    first = [collate(_batch())[0].shape[-1] for _ in range(8)]
    torch.manual_seed(5)
    assert [collate(_batch())[0].shape[-1] for _ in range(8)] == first


def test_epoch_reaches_persistent_workers(synth_dir: Path):
    transforms = build_transforms(True, 64, stop_epoch=1)
    ds = build_dataset(synth_dir, "val", transforms)
    collate = BatchCollator(multi_scales=[32, 96], stop_epoch=1)
    loader = DataLoader(ds, batch_size=3, num_workers=1, persistent_workers=True, collate_fn=collate)
    sizes = {}
    for epoch in (0, 1, 2):
        ds.set_epoch(epoch)
        collate.set_epoch(epoch)
        sizes[epoch] = {images.shape[-1] for images, _ in loader}
    assert sizes[0] <= {32, 96} and sizes[1] == sizes[2] == {64}
