"""Uploaded bytes -> RGB uint8 tensors, and tensors -> PNG bytes, with limits checked first.

A client controls every byte of an upload, so the decoder refuses what it cannot
handle *before* spending memory on pixels:

* zero bytes -> 400; not a recognised image format -> 415 (only the common
  photo formats are tried, which also keeps the decoder attack surface small);
* dimensions above ``max_pixels`` / ``max_side`` -> 413, read from the header only
  (a 100-byte PNG can claim 100k x 100k pixels: a decompression bomb);
* recognised but undecodable (truncated, corrupt) -> 400.

Pixels are converted as :func:`rtdetr.data.image_io.load_image` does for files
(EXIF orientation applied, any mode to RGB), so the service sees exactly what the
rest of the package would see for the same file.
"""

from __future__ import annotations

import io
import logging

import torch
from PIL import Image, UnidentifiedImageError

from ..data.image_io import load_image
from ..data.issues import ImageReadError

__all__ = ["ImageRejected", "probe_image", "decode_image", "encode_png", "ALLOWED_FORMATS"]

logger = logging.getLogger(__name__)

# PIL format names tried on uploads; MPO is the multi-picture JPEG that phones write.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF")


class ImageRejected(Exception):
    """An upload the service will not decode; ``status_code`` is the HTTP answer."""

    def __init__(self, status_code: int, detail: str):
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


def _available_formats() -> list[str]:
    """The allowed formats that this Pillow build can open (registers all plugins once)."""
    Image.init()
    return [f for f in ALLOWED_FORMATS if f in Image.OPEN]


def probe_image(data: bytes, *, max_pixels: int = 40_000_000, max_side: int = 20_000) -> tuple[str, int, int]:
    """(format, width, height) read from the header alone, after the same checks as :func:`decode_image`.

    Raises:
        ImageRejected: empty, not an image, unreadable header, or dimensions over the limits.
    """
    if not data:
        raise ImageRejected(400, "empty upload: the request carried no image bytes")
    try:
        with Image.open(io.BytesIO(data), formats=_available_formats()) as image:
            fmt, (w, h) = image.format or "unknown", image.size
    except Image.DecompressionBombError as exc:  # PIL's own (higher) ceiling
        raise ImageRejected(413, f"image dimensions too large: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected(415, f"not a supported image (expected one of {', '.join(ALLOWED_FORMATS)})") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # a header that parses halfway
        raise ImageRejected(400, f"cannot read the image header: {exc}") from exc
    if w <= 0 or h <= 0:
        raise ImageRejected(400, f"image has no pixels ({w}x{h})")
    if w > max_side or h > max_side or w * h > max_pixels:
        raise ImageRejected(
            413,
            f"image dimensions {w}x{h} exceed the limit ({max_pixels} pixels, {max_side} px per side)",
        )
    return fmt, w, h


def decode_image(data: bytes, *, max_pixels: int = 40_000_000, max_side: int = 20_000) -> torch.Tensor:
    """Decode an uploaded image to uint8 [3, H, W] RGB in display orientation.

    Args:
        data: the uploaded file's bytes.
        max_pixels: largest accepted width x height, checked before decoding.
        max_side: largest accepted width or height, checked before decoding.

    Raises:
        ImageRejected: with the HTTP status (400, 413 or 415) and a message for the client.
    """
    fmt, w, h = probe_image(data, max_pixels=max_pixels, max_side=max_side)
    try:
        tensor = load_image(io.BytesIO(data))  # type: ignore[arg-type]  # PIL opens file objects too
    except ImageReadError as exc:
        cause = exc.__cause__ or exc
        raise ImageRejected(400, f"cannot decode the {fmt} image ({w}x{h}): {cause}") from exc
    except (MemoryError, Image.DecompressionBombError) as exc:
        raise ImageRejected(413, f"image too large to decode ({w}x{h})") from exc
    logger.debug("decoded %s %dx%d (%d bytes)", fmt, w, h, len(data))
    return tensor.as_subclass(torch.Tensor)


def encode_png(image: torch.Tensor) -> bytes:
    """uint8 [3, H, W] RGB -> PNG file bytes."""
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a uint8 [3, H, W] image, got {image.dtype} {tuple(image.shape)}")
    array = image.permute(1, 2, 0).contiguous().cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()
