"""Images of any mode load as RGB uint8 [3, H, W] in display orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rtdetr.data import ImageReadError, image_size, load_image


def _check(image: torch.Tensor, h: int, w: int) -> None:
    assert image.dtype == torch.uint8 and image.shape == (3, h, w)


def test_gray_rgba_palette(tmp_path: Path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray).save(tmp_path / "l.png")
    image = load_image(tmp_path / "l.png")
    _check(image, 3, 4)
    assert torch.equal(image[0], torch.from_numpy(gray)) and torch.equal(image[0], image[2])

    rgba = np.zeros((5, 6, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    image = load_image(tmp_path / "rgba.png")
    _check(image, 5, 6)
    assert image[:, 0, 0].tolist() == [200, 0, 0]

    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[:2] = (10, 200, 30)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as f:
        assert f.mode == "P"
    image = load_image(tmp_path / "p.png")
    _check(image, 4, 4)
    assert image[:, 0, 0].tolist() == [10, 200, 30] and image[:, 3, 3].tolist() == [0, 0, 0]


def test_16_bit(tmp_path: Path):
    values = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as f:
        assert f.mode.startswith("I")
    image = load_image(tmp_path / "deep.png")
    _check(image, 1, 3)
    assert image[0, 0].tolist() == [0, 128, 255] and torch.equal(image[0], image[1])


def test_exif_orientation(tmp_path: Path):
    # Stored 20 wide x 10 high, left half red; orientation 6 = "rotate 90 degrees clockwise to view".
    pixels = np.zeros((10, 20, 3), dtype=np.uint8)
    pixels[:, :10] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    assert image_size(tmp_path / "rot.jpg") == (10, 20)
    assert image_size(tmp_path / "rot.jpg", exif=False) == (20, 10)
    image = load_image(tmp_path / "rot.jpg")
    _check(image, 20, 10)  # now 10 wide, 20 high; the stored left column is the top row
    top, bottom = image[:, 2, 5].tolist(), image[:, 17, 5].tolist()
    assert top[0] > 200 and top[1] < 60 and bottom[0] < 60
    _check(load_image(tmp_path / "rot.jpg", exif=False), 10, 20)


def test_unreadable(tmp_path: Path):
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    with pytest.raises(ImageReadError, match="bad.jpg"):
        load_image(tmp_path / "bad.jpg")
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(tmp_path / "cut.jpg")
    data = (tmp_path / "cut.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        load_image(tmp_path / "cut.jpg")
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "absent.png")
