"""Everything ``predict`` accepts, streamed as RGB uint8 frames.

A source is a file path (image or video), a folder, a glob pattern, a PIL image,
a numpy array, a tensor, or a list mixing those. Files are decoded one at a time,
so a folder of a million images or an hour of video is read in bounded memory.

In-memory conventions (stated because libraries differ):

* numpy arrays are ``[H, W]`` (gray) or ``[H, W, 3|4]`` **RGB(A)**, channels last,
  uint8, uint16 (scaled by 1/257) or float in [0, 1]. OpenCV users: convert BGR
  with ``img[..., ::-1]`` first.
* tensors are ``[3, H, W]`` or a batch ``[B, 3, H, W]``, channels first, RGB, uint8
  or float in [0, 1].

Unreadable files (corrupt, truncated, not really an image, a video OpenCV cannot
open) are skipped by default with one warning each, so one bad file does not stop
a folder of thousands; ``on_error="raise"`` stops at the first instead. If every
file was unreadable, nothing was predicted and the stream raises. Paths that do not
exist, and folders or patterns that name no media, are errors either way.
"""

from __future__ import annotations

import glob as globlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..data.image_io import load_image, pil_to_tensor
from ..data.issues import ImageReadError
from ..errors import UserError

__all__ = [
    "Frame",
    "iter_frames",
    "read_capture",
    "expand_path",
    "Source",
    "OnError",
    "SourceNotFoundError",
    "NothingReadableError",
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "is_video",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})

Source = str | os.PathLike | Image.Image | np.ndarray | Tensor | Iterable[Any]
# "skip": warn and go on; "raise": stop at the first unreadable file; a callable(path, error):
# skip and warn, and call it too (e.g. to count the skipped files).
OnError = Literal["skip", "raise"] | Callable[[str, Exception], None]


class SourceNotFoundError(UserError, FileNotFoundError):
    """A source path does not exist, or a folder / pattern names no image or video files."""


class NothingReadableError(UserError, ValueError):
    """Every file of the source was unreadable (each was skipped), so nothing was predicted."""


@dataclass
class Frame:
    """One decoded image.

    Attributes:
        image: uint8 [3, H, W] RGB.
        source: the file it came from (None for in-memory inputs).
        index: position in the whole stream (0, 1, ...).
        frame: frame number within a video file (None for still images).
        fps: the video's frame rate (None for still images).
    """

    image: Tensor
    source: str | None
    index: int
    frame: int | None = None
    fps: float | None = None


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _array_to_tensor(array: np.ndarray) -> Tensor:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"numpy image must be [H, W], [H, W, 3] or [H, W, 4] (RGB, channels last), got {array.shape}")
    if array.dtype == np.uint8:
        pixels = array
    elif array.dtype == np.uint16:
        pixels = (array // 257).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        pixels = (np.clip(np.nan_to_num(array), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    else:
        raise ValueError(f"numpy image dtype must be uint8, uint16 or float in [0, 1], got {array.dtype}")
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    pixels = pixels[:, :, :3]  # drop alpha
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).contiguous()


def _tensor_to_images(tensor: Tensor) -> list[Tensor]:
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 4 or tensor.shape[1] != 3:
        raise ValueError(f"tensor images must be [3, H, W] or [B, 3, H, W] RGB, got shape {tuple(tensor.shape)}")
    if tensor.is_floating_point():
        tensor = (tensor.detach().clamp(0, 1) * 255).round().to(torch.uint8)
    elif tensor.dtype != torch.uint8:
        raise ValueError(f"tensor images must be uint8 or float in [0, 1], got {tensor.dtype}")
    return list(tensor.cpu())


def expand_path(path: str | os.PathLike) -> list[str]:
    """A file, folder (searched recursively) or glob pattern -> the media files it names, sorted.

    Raises:
        SourceNotFoundError: the path does not exist, or names no image or video files.
    """
    path = os.fspath(path)
    if any(ch in path for ch in "*?[") and not os.path.exists(path):
        matches = sorted(p for p in globlib.glob(path, recursive=True) if os.path.isfile(p))
        if not matches:
            raise SourceNotFoundError(f"no files match the pattern {path!r}")
        return matches
    p = Path(path)
    if p.is_dir():
        files = sorted(
            str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
        )
        if not files:
            raise SourceNotFoundError(
                f"no images or videos found in {path} (looked for {', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))})"
            )
        return files
    if not p.exists():
        raise SourceNotFoundError(f"no such file or folder: {path}")
    return [str(p)]


def read_capture(cap: Any) -> Iterator[Tensor]:
    """The frames of an opened ``cv2.VideoCapture`` as RGB uint8 [3, H, W], until it ends; releases it."""
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                return
            rgb = np.ascontiguousarray(bgr[:, :, ::-1])  # OpenCV decodes to BGR
            yield torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
    finally:
        cap.release()


def _iter_video(path: str) -> Iterator[tuple[Tensor, int, float]]:
    try:
        import cv2
    except ImportError as exc:
        raise ImportError(f"reading video {path} needs OpenCV: pip install 'rtdetr[video]'") from exc
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise ImageReadError(f"cannot open video {path} (unsupported codec or not a video)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or 30.0
    n = 0
    with closing(read_capture(cap)) as frames:  # released even if the caller stops early
        for n, image in enumerate(frames, start=1):
            yield image, n - 1, fps
    if n == 0:
        raise ImageReadError(f"video {path} has no decodable frames")


class _Skips:
    """What the stream skipped: the policy, and how many files it skipped (with the first error)."""

    def __init__(self, on_error: OnError):
        if not (on_error in ("skip", "raise") or callable(on_error)):
            raise ValueError(f"on_error must be 'skip', 'raise' or a callable(path, error), got {on_error!r}")
        self.on_error = on_error
        self.count = 0
        self.first: Exception | None = None

    def handle(self, path: str, error: Exception) -> None:
        """Re-raise ``error`` (policy "raise"), or record and announce that ``path`` is skipped."""
        if self.on_error == "raise":
            raise error
        self.count += 1
        self.first = self.first or error
        reason = " ".join(str(error).split())  # one line, whatever the decoder said
        log.warning("skipped unreadable file: %s", reason if path in reason else f"{path}: {reason}")
        if callable(self.on_error):
            self.on_error(path, error)


def _iter_file(path: str, skips: _Skips) -> Iterator[tuple[Tensor, str | None, int | None, float | None]]:
    """The frames of one file; an unreadable file goes to ``skips`` (raised or skipped)."""
    try:
        if is_video(path):
            for image, n, fps in _iter_video(path):
                yield image, path, n, fps
            return
        image = load_image(path).as_subclass(Tensor)
    except FileNotFoundError as exc:  # listed, then gone before it was read
        skips.handle(path, ImageReadError(f"cannot read {path}: it disappeared ({exc.strerror})"))
        return
    except ImageReadError as exc:
        skips.handle(path, exc)
        return
    yield image, path, None, None


def _iter_items(source: Source, skips: _Skips) -> Iterator[tuple[Tensor, str | None, int | None, float | None]]:
    if isinstance(source, (str, os.PathLike)):
        for path in expand_path(source):
            yield from _iter_file(path, skips)
    elif isinstance(source, Image.Image):
        yield pil_to_tensor(source).as_subclass(Tensor), getattr(source, "filename", None) or None, None, None
    elif isinstance(source, np.ndarray):
        yield _array_to_tensor(source), None, None, None
    elif isinstance(source, Tensor):
        for image in _tensor_to_images(source):
            yield image, None, None, None
    elif isinstance(source, Iterable):
        for item in source:
            if isinstance(item, (list, tuple)) and not isinstance(item, (str, bytes)):
                raise TypeError("nested lists of sources are not supported; flatten the list")
            yield from _iter_items(item, skips)
    else:
        raise TypeError(
            f"unsupported source type {type(source).__name__}: expected a path, folder, glob, video, "
            "PIL image, numpy array, tensor or a list of those"
        )


def iter_frames(source: Source, *, on_error: OnError = "skip") -> Iterator[Frame]:
    """Decode ``source`` lazily into :class:`Frame` objects, in order.

    Args:
        source: see the module docstring.
        on_error: what an unreadable file does: ``"skip"`` it with a logged warning naming
            it and why (default), ``"raise"`` its :class:`~rtdetr.data.ImageReadError`, or
            a callable ``(path, error)``: skip, warn, and call it (to count or collect them).

    Raises:
        SourceNotFoundError: a path does not exist, or a folder or pattern holds no media.
        ImageReadError: an unreadable file, with ``on_error="raise"``; or the only file of
            the source was unreadable.
        NothingReadableError: several files and all of them unreadable (nothing to predict).
    """
    skips = _Skips(on_error)
    index = -1
    for index, (image, path, frame, fps) in enumerate(_iter_items(source, skips)):
        yield Frame(image=image, source=path, index=index, frame=frame, fps=fps)
    if index < 0 and skips.count:
        if skips.count == 1 and skips.first is not None:
            raise skips.first  # the one file's own error says it best
        raise NothingReadableError(
            f"none of the {skips.count} files could be read (each is named in a warning above); "
            f"the first: {skips.first}"
        )
