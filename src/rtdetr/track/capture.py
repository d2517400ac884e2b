"""Frames for tracking: everything ``predict`` reads, plus cameras and network streams.

* an ``int`` (or a string of digits) is a camera index (``cv2.VideoCapture(0)``);
* a string with ``://`` (``rtsp://``, ``http://``, ...) is a stream OpenCV opens;
* anything else goes to :func:`rtdetr.infer.sources.iter_frames` (files, folders, globs,
  videos, in-memory images).

Each frame carries the *sequence* it belongs to (what ids persist within): the video
file, the folder of a still image, or the camera / stream.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..infer.sources import Frame, OnError, Source, iter_frames, read_capture

__all__ = ["SequenceFrame", "iter_sequence_frames", "is_live_source", "CaptureError"]

log = logging.getLogger(__name__)


class CaptureError(UserError, OSError):
    """A camera or stream OpenCV cannot open."""


@dataclass
class SequenceFrame:
    """A decoded frame and where it sits.

    Attributes:
        frame: the decoded image and its source (see :class:`rtdetr.infer.sources.Frame`).
        sequence: the key ids persist within (video path, image folder, camera or URL).
        position: 0-based frame number within the sequence.
    """

    frame: Frame
    sequence: str
    position: int


def is_live_source(source: object) -> bool:
    """True for a camera index or a stream URL."""
    if isinstance(source, int) and not isinstance(source, bool):
        return True
    return isinstance(source, str) and (source.isdigit() or "://" in source)


def _iter_capture(source: int | str) -> Iterator[Frame]:
    try:
        import cv2
    except ImportError as exc:
        raise ImportError("reading cameras and streams needs OpenCV: pip install 'rtdetr[video]'") from exc
    index = int(source) if isinstance(source, int) or source.isdigit() else None
    name = f"camera{index}" if index is not None else str(source)
    cap = cv2.VideoCapture(index if index is not None else source)
    if not cap.isOpened():
        raise CaptureError(f"cannot open {'camera ' + str(index) if index is not None else 'stream ' + name}")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not np.isfinite(fps) or fps <= 0 or fps > 1000:
        fps = 30.0  # cameras often report 0; the lost-track buffer then assumes 30 fps
    with closing(read_capture(cap)) as frames:  # released even if the caller stops early
        for n, image in enumerate(frames):
            yield Frame(image, name, n, frame=n, fps=fps)


def iter_sequence_frames(source: Source | int, *, on_error: OnError = "skip") -> Iterator[SequenceFrame]:
    """Decode ``source`` (see the module docstring) into frames tagged with their sequence."""
    frames = _iter_capture(source) if is_live_source(source) else iter_frames(source, on_error=on_error)
    current, position = None, 0
    for frame in frames:
        if frame.frame is not None:  # a video, camera or stream: the source itself
            key = frame.source or "video"
        elif frame.source is not None:  # a still image: its folder is the sequence
            key = str(Path(frame.source).parent)
        else:
            key = "images"  # in-memory images: one sequence
        if key != current or frame.frame == 0:  # the same video listed twice: two sequences
            current, position = key, 0
        yield SequenceFrame(frame, key, position)
        position += 1
