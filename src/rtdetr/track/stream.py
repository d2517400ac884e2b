"""Detect and track, frame by frame: what ``Detector.track`` and ``rtdetr track`` run."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..infer.defaults import DEFAULT_CONF
from ..infer.sources import OnError, Source
from .adapter import Tracker
from .capture import iter_sequence_frames
from .results import TrackedDetections

if TYPE_CHECKING:
    from ..infer.predictor import Detector

__all__ = ["track_stream"]

log = logging.getLogger(__name__)


def track_stream(
    detector: Detector,
    source: Source | int,
    *,
    tracker: str = "bytetrack",
    fps: float | None = None,
    lost_seconds: float = 1.0,
    class_aware: bool = True,
    conf: float = DEFAULT_CONF,
    classes: list[int] | None = None,
    max_det: int = 300,
    keep_images: bool = True,
    on_error: OnError = "skip",
    tracker_options: dict[str, Any] | None = None,
) -> Iterator[TrackedDetections]:
    """Yield :class:`TrackedDetections` per frame of ``source``, in order.

    Ids persist within a sequence (a video, a folder of frames, a camera or stream) and
    restart with the next. ``fps`` overrides the frame rate the lost-track buffer is
    measured with (default: the video's; 30 for still images). Frames are detected one at
    a time (a tracker needs each frame's result before the next; live sources give frames
    one by one anyway).
    """
    options = dict(tracker_options or {})
    # Bad tracker names and settings fail here, before the first frame is decoded.
    active = Tracker(tracker, fps=fps or 30.0, lost_seconds=lost_seconds, class_aware=class_aware, **options)
    current = None
    for item in iter_sequence_frames(source, on_error=on_error):
        frame = item.frame
        if item.position == 0 or item.sequence != current:
            current = item.sequence
            rate = fps or frame.fps or 30.0
            active = Tracker(tracker, fps=rate, lost_seconds=lost_seconds, class_aware=class_aware, **options)
            log.debug("sequence %s at %.2f fps", current, rate)
        (det,) = detector.predict_images([frame.image], conf=conf, classes=classes, max_det=max_det)
        det.source, det.frame, det.fps, det.index = frame.source, frame.frame, frame.fps, frame.index
        det.image = frame.image if keep_images else None
        t0 = time.perf_counter()
        tracked = active.update(det)
        tracked.speed["track"] = (time.perf_counter() - t0) * 1e3  # the tracker's added time, ms
        tracked.sequence = item.sequence
        yield tracked
