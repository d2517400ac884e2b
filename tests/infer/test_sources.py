"""Every input kind predict accepts decodes to the right RGB uint8 image, in order."""

import numpy as np
import pytest
import torch
from PIL import Image

from rtdetr.infer.sources import iter_frames


def _rgb(h=20, w=30, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def test_folder_is_recursive_sorted_and_skips_other_files(tmp_path):
    (tmp_path / "sub").mkdir()
    Image.fromarray(_rgb(seed=1)).save(tmp_path / "b.png")
    Image.fromarray(_rgb(seed=2)).save(tmp_path / "a.png")
    Image.fromarray(_rgb(seed=3)).save(tmp_path / "sub" / "c.bmp")
    (tmp_path / "notes.txt").write_text("not an image")
    frames = list(iter_frames(tmp_path))
    assert [f.source.split("/")[-1] for f in frames] == ["a.png", "b.png", "c.bmp"]
    assert [f.index for f in frames] == [0, 1, 2]
    assert torch.equal(frames[0].image, torch.from_numpy(_rgb(seed=2)).permute(2, 0, 1))


def test_glob_and_list_of_mixed_sources(tmp_path):
    for i in range(3):
        Image.fromarray(_rgb(seed=i)).save(tmp_path / f"x{i}.png")
    assert len(list(iter_frames(str(tmp_path / "x*.png")))) == 3
    mixed = [str(tmp_path / "x0.png"), Image.fromarray(_rgb(seed=5)), _rgb(seed=6), torch.rand(2, 3, 8, 9)]
    frames = list(iter_frames(mixed))
    assert len(frames) == 5
    assert frames[0].source.endswith("x0.png") and frames[1].source is None
    assert all(f.image.dtype == torch.uint8 and f.image.shape[0] == 3 for f in frames)
    assert frames[3].image.shape == (3, 8, 9)


@pytest.mark.parametrize(
    "array, expected_pixel",
    [
        (np.full((4, 5), 7, np.uint8), [7, 7, 7]),  # gray
        (np.dstack([np.full((4, 5), v, np.uint8) for v in (1, 2, 3, 200)]), [1, 2, 3]),  # RGBA: alpha dropped
        (np.full((4, 5, 3), 257 * 9, np.uint16), [9, 9, 9]),  # 16-bit: top 8 bits
        (np.full((4, 5, 3), 0.5, np.float32), [128, 128, 128]),  # float in [0, 1]
    ],
)
def test_numpy_kinds(array, expected_pixel):
    (frame,) = iter_frames(array)
    assert frame.image.shape == (3, 4, 5)
    assert frame.image[:, 0, 0].tolist() == expected_pixel


def test_pil_modes_convert_to_rgb():
    rgb = _rgb()
    pal = Image.fromarray(rgb).convert("P")
    for image in (
        Image.fromarray(rgb).convert("L"),
        Image.fromarray(rgb).convert("RGBA"),
        pal,
        Image.fromarray(rgb).convert("CMYK"),
    ):
        (frame,) = iter_frames(image)
        assert frame.image.shape == (3, 20, 30) and frame.image.dtype == torch.uint8


def test_float_tensor_is_scaled_and_uint8_kept():
    (f,) = iter_frames(torch.ones(3, 2, 2))
    assert f.image.unique().tolist() == [255]
    (g,) = iter_frames(torch.full((3, 2, 2), 4, dtype=torch.uint8))
    assert g.image.unique().tolist() == [4]


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        list(iter_frames(tmp_path / "missing.jpg"))
    with pytest.raises(FileNotFoundError, match="no images or videos found in"):
        list(iter_frames(tmp_path))
    with pytest.raises(FileNotFoundError, match="no files match"):
        list(iter_frames(str(tmp_path / "*.jpg")))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        list(iter_frames(np.zeros((2, 3, 5), np.uint8)))
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        list(iter_frames(torch.zeros(4, 8, 8)))
    with pytest.raises(TypeError, match="unsupported source type"):
        list(iter_frames(3.5))
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="bad.jpg"):
        list(iter_frames(tmp_path / "bad.jpg"))


def test_sources_are_streamed_lazily(tmp_path):
    for i in range(3):
        Image.fromarray(_rgb(seed=i)).save(tmp_path / f"{i}.png")
    (tmp_path / "3.png").write_bytes(b"corrupt")  # only reached on the fourth frame
    frames = iter_frames(tmp_path)
    assert next(frames).source.endswith("0.png")
