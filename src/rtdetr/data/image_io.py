"""Reading images as RGB uint8 tensors, whatever their file mode.

Every image enters the pipeline as a ``tv_tensors.Image`` uint8 [3, H, W] RGB,
in its display orientation (EXIF orientation applied, as cameras and viewers do
and as annotation tools usually show it). Mode conversions:

* ``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` -> RGB (PIL's conversion);
* ``RGBA``, ``LA``, ``PA``, ``P`` with transparency -> alpha dropped (the stored colour
  is kept, like OpenCV's ``imread``, so results match models trained that way);
* 16-bit / 32-bit integer (``I;16*``, ``I``) -> the top 8 of 16 bits (value / 257),
  replicated to 3 channels; float (``F``) -> [0, 1] assumed when max <= 1, else
  clipped to [0, 255].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision import tv_tensors

from .issues import ImageReadError

__all__ = ["load_image", "image_size", "exif_orientation", "pil_to_tensor"]

_EXIF_ORIENTATION = 0x0112
# Orientations 5-8 rotate by 90 degrees, so width and height trade places.
_SWAPS_AXES = {5, 6, 7, 8}


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright) of an opened PIL image."""
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # malformed EXIF blocks should not make a readable image unreadable
        return 1


def image_size(path: str | Path, *, exif: bool = True) -> tuple[int, int]:
    """(width, height) of an image in display orientation, reading only the header."""
    try:
        with Image.open(path) as image:
            w, h = image.size
            if exif and exif_orientation(image) in _SWAPS_AXES:
                w, h = h, w
            return w, h
    except FileNotFoundError:
        raise
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """PIL image of any mode -> uint8 [H, W, 3]."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image)
        if mode == "F":
            values = values.astype(np.float64)
            scale = 255.0 if values.size and np.nanmax(values) <= 1.0 else 1.0
            gray = np.clip(np.nan_to_num(values * scale), 0, 255).round().astype(np.uint8)
        else:
            # 16-bit data (PIL opens 16-bit PNGs as I;16 or I): keep the 8 most significant bits.
            gray = (np.clip(values.astype(np.int64), 0, 65535) // 257).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def pil_to_tensor(image: Image.Image, *, exif: bool = True) -> tv_tensors.Image:
    """An opened PIL image of any mode -> ``tv_tensors.Image`` uint8 [3, H, W] RGB (EXIF applied)."""
    if exif and exif_orientation(image) != 1:
        image = ImageOps.exif_transpose(image)
    array = _to_rgb_array(image)
    # np.array copies: PIL-backed arrays are read-only, which torch warns about.
    return tv_tensors.Image(torch.from_numpy(np.array(array, dtype=np.uint8)).permute(2, 0, 1).contiguous())


def load_image(path: str | Path, *, exif: bool = True) -> tv_tensors.Image:
    """Decode ``path`` to a ``tv_tensors.Image`` uint8 [3, H, W] RGB.

    Args:
        path: image file.
        exif: apply the EXIF orientation (True), or keep the stored pixel layout.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageReadError: the file exists but cannot be decoded; the message names it.
    """
    try:
        with Image.open(path) as image:
            image.load()  # decode now, inside the try, so truncation errors name the file
            return pil_to_tensor(image, exif=exif)
    except FileNotFoundError:
        raise
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"cannot decode image {path}: {exc}") from exc
