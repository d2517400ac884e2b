"""Training / evaluation transforms: output format, empty images, the stop epoch."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision import tv_tensors

from rtdetr.data import build_dataset, build_transforms
from rtdetr.data.transforms import RandomIoUCropP


def _sample(h: int = 60, w: int = 80, boxes=((10.0, 5.0, 50.0, 40.0), (60.0, 30.0, 78.0, 58.0))):
    image = tv_tensors.Image(torch.randint(0, 256, (3, h, w), dtype=torch.uint8))
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes).reshape(-1, 4), format="XYXY", canvas_size=(h, w)),
        "labels": torch.arange(len(boxes), dtype=torch.int64),
        "image_id": torch.tensor(7),
        "orig_size": torch.tensor([w, h]),
    }
    return image, target


def _check_output(image, target, size):
    assert type(image) is torch.Tensor and image.dtype == torch.float32 and image.shape == (3, size, size)
    assert 0.0 <= image.min() and image.max() <= 1.0
    boxes = target["boxes"]
    assert type(boxes) is torch.Tensor and boxes.dtype == torch.float32 and boxes.shape[1:] == (4,)
    assert boxes.shape[0] == target["labels"].shape[0]
    assert ((boxes >= 0) & (boxes <= 1)).all() and (boxes[:, 2:] > 0).all()
    cx, cy, w, h = boxes.unbind(-1)  # cxcywh: the box stays inside the image
    assert (cx - w / 2 >= -1e-6).all() and (cx + w / 2 <= 1 + 1e-6).all() and (cy + h / 2 <= 1 + 1e-6).all()
    assert int(target["image_id"]) == 7


def test_eval_pipeline_exact():
    image, target = _sample()
    out_image, out = build_transforms(False, 40)(image, target)
    _check_output(out_image, out, 40)
    expected = torch.tensor([[30 / 80, 22.5 / 60, 40 / 80, 35 / 60], [69 / 80, 44 / 60, 18 / 80, 28 / 60]])
    assert torch.allclose(out["boxes"], expected) and out["labels"].tolist() == [0, 1]
    assert out["orig_size"].tolist() == [80, 60]


def test_train_pipeline_format_and_empty_images():
    torch.manual_seed(0)
    strong = build_transforms(True, 48, distort_p=1.0, zoom_out_p=1.0, iou_crop_p=1.0)
    for _ in range(30):
        _check_output(*strong(*_sample()), 48)
        empty_image, empty_target = strong(*_sample(boxes=()))
        _check_output(empty_image, empty_target, 48)
        assert empty_target["boxes"].shape == (0, 4)


def test_iou_crop_skips_boxless_samples():
    crop = RandomIoUCropP(p=1.0)
    image, target = _sample(boxes=())
    out_image, out_target = crop(image, target)
    assert out_image is image and out_target is target
    torch.manual_seed(1)
    cropped = [crop(*_sample())[0].shape for _ in range(20)]
    assert any(shape != (3, 60, 80) for shape in cropped)  # with boxes it does crop


def test_stop_epoch_turns_strong_augmentation_off():
    train = build_transforms(True, 40, stop_epoch=3, distort_p=1.0, zoom_out_p=1.0, iou_crop_p=1.0)
    evaluate = build_transforms(False, 40)
    image, target = _sample()
    ref_image, ref = evaluate(image, target)
    torch.manual_seed(0)
    train.set_epoch(2)
    assert train.strong_active
    changed = [not torch.equal(train(image, target)[0], ref_image) for _ in range(4)]
    assert all(changed)  # photometric distortion with p=1 always changes pixels

    train.set_epoch(3)
    assert not train.strong_active and train.epoch == 3
    for _ in range(10):  # only the flip remains: output == eval output, or its mirror image
        out_image, out = train(image, target)
        if torch.equal(out_image, ref_image):
            assert torch.allclose(out["boxes"], ref["boxes"])
        else:
            assert torch.equal(out_image, ref_image.flip(-1))
            mirrored = ref["boxes"].clone()
            mirrored[:, 0] = 1 - mirrored[:, 0]
            assert torch.allclose(out["boxes"], mirrored, atol=1e-6)


def test_dataset_forwards_set_epoch(synth_dir: Path):
    transforms = build_transforms(True, 64, stop_epoch=1)
    ds = build_dataset(synth_dir, "val", transforms)
    ds.set_epoch(5)
    assert transforms.epoch == 5 and not transforms.strong_active
    image, target = ds[0]
    _check_output(image, {**target, "image_id": torch.tensor(7)}, 64)
