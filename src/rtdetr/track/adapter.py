"""Our adapter over the ``trackers`` library (Roboflow; ByteTrack, SORT, OC-SORT).

The library does the association (Kalman prediction, IoU matching, track lifecycle).
What it leaves to us, handled here:

* **class-aware tracking**: its trackers ignore the class, so a track could jump from a
  "car" to a "person" box. One library tracker runs per class (``class_aware=True``,
  the default), and every class's tracker is stepped each frame, with no boxes when the
  class is absent, so lost tracks age by frames, not by sightings of their class.
* **ids unique across classes and 1-based** (MOTChallenge): per-class trackers number
  their tracks from 0 each; ``(class, library id)`` pairs are mapped to one counter.
* **lost-track buffer in seconds**: the library counts it in frames of a 30 fps video
  and scales by ``frame_rate``; ``lost_seconds * 30`` at the video's real fps gives a
  buffer of ``lost_seconds`` whatever the frame rate.
* **our result objects**: :class:`~rtdetr.infer.Detections` in, :class:`TrackedDetections`
  out (boxes, scores and labels exactly the detector's, rows of unconfirmed tracks dropped),
  plus recent centres per track for drawing trails.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..infer.results import Detections
from .results import TrackedDetections

__all__ = ["TRACKERS", "Tracker", "TrackerError", "make_tracker"]

log = logging.getLogger(__name__)

#: tracker name -> class name in the ``trackers`` package
TRACKERS: dict[str, str] = {"bytetrack": "ByteTrackTracker", "sort": "SORTTracker", "ocsort": "OCSORTTracker"}

_INSTALL_HINT = "tracking needs the `trackers` package: pip install 'rtdetr[track]'"


class TrackerError(UserError, ValueError):
    """A bad tracker name or setting (unknown tracker, negative buffer, non-positive fps)."""


def _tracker_class(name: str) -> type:
    if name not in TRACKERS:
        raise TrackerError(f"unknown tracker {name!r}; available: {', '.join(TRACKERS)}")
    try:
        import trackers
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(_INSTALL_HINT, name="trackers") from exc
    return getattr(trackers, TRACKERS[name])


class Tracker:
    """Assigns persistent ids to per-frame detections of one sequence.

    Args:
        name: ``"bytetrack"`` (default), ``"sort"`` or ``"ocsort"``.
        fps: the sequence's frame rate (for the lost-track buffer).
        lost_seconds: how long a track that lost its object is kept for re-association.
        class_aware: one tracker per class (a track never changes class); False tracks
            all classes together (a detection may then continue a track of another class,
            useful when the detector flickers between similar classes).
        trail: box centres kept per track for drawing (0: none).
        options: other keyword arguments of the library's tracker class, e.g.
            ``track_activation_threshold=0.5``, ``minimum_consecutive_frames=1``.

    Call :meth:`update` once per frame, in order; :meth:`reset` between sequences.
    """

    def __init__(
        self,
        name: str = "bytetrack",
        *,
        fps: float = 30.0,
        lost_seconds: float = 1.0,
        class_aware: bool = True,
        trail: int = 30,
        **options: Any,
    ) -> None:
        if not fps or not np.isfinite(fps) or fps <= 0:
            raise TrackerError(f"fps must be a positive number, got {fps}")
        if not np.isfinite(lost_seconds) or lost_seconds < 0:
            raise TrackerError(f"lost_seconds must be >= 0, got {lost_seconds}")
        self.name = name
        self.fps = float(fps)
        self.lost_seconds = float(lost_seconds)
        self.class_aware = class_aware
        self.trail = trail
        self._cls = _tracker_class(name)
        # The library's buffer unit is "frames at 30 fps", scaled by frame_rate inside.
        self._kwargs = {"lost_track_buffer": round(self.lost_seconds * 30), "frame_rate": self.fps, **options}
        try:
            self._cls(**self._kwargs)  # bad option names or values fail here, before any frame
        except TypeError as exc:
            raise TrackerError(f"tracker {name!r}: {exc}") from exc
        self.reset()

    def reset(self) -> None:
        """Forget all tracks (the next frame starts a new sequence; ids restart at 1)."""
        self._per_class: dict[int, Any] = {}
        self._ids: dict[tuple[int, int], int] = {}
        self._trails: dict[int, deque[tuple[float, float]]] = {}
        self.frames = 0

    def _library_tracker(self, key: int) -> Any:
        if key not in self._per_class:
            self._per_class[key] = self._cls(**self._kwargs)
        return self._per_class[key]

    def update(self, det: Detections) -> TrackedDetections:
        """Track one frame's detections (boxes xyxy pixels, scores, labels); frames in order.

        Returns:
            the detections that belong to a confirmed track, with their ``track_ids``.
        """
        import supervision as sv

        self.frames += 1
        boxes = det.boxes.detach().float().cpu().numpy().reshape(-1, 4).astype(np.float32)
        scores = det.scores.detach().float().cpu().numpy().reshape(-1)
        labels = det.labels.detach().cpu().numpy().reshape(-1).astype(np.int64)
        keys = labels if self.class_aware else np.zeros_like(labels)
        for k in np.unique(keys).tolist():
            self._library_tracker(int(k))  # a class seen for the first time gets its tracker now
        rows: list[int] = []
        ids: list[int] = []
        for key, tracker in self._per_class.items():
            sel = np.flatnonzero(keys == key)
            # Every class's tracker steps every frame (empty when absent) so lost tracks age in time.
            batch = sv.Detections(
                xyxy=boxes[sel].reshape(-1, 4),
                confidence=scores[sel],
                class_id=labels[sel],
                data={"row": sel},
            )
            out = tracker.update(batch)
            if len(out) == 0:
                continue
            for row, lib_id in zip(out.data["row"].tolist(), out.tracker_id.tolist()):
                if lib_id < 0:  # not (yet) a confirmed track
                    continue
                rows.append(int(row))
                ids.append(self._ids.setdefault((key, int(lib_id)), len(self._ids) + 1))
        order = sorted(range(len(rows)), key=lambda i: rows[i])  # keep the detector's (score) order
        rows, ids = [rows[i] for i in order], [ids[i] for i in order]
        index = torch.as_tensor(rows, dtype=torch.int64)
        trails: dict[int, list[tuple[float, float]]] = {}
        for tid, row in zip(ids, rows):
            x0, y0, x1, y1 = boxes[row].tolist()
            hist = self._trails.setdefault(tid, deque(maxlen=max(1, self.trail)))
            hist.append(((x0 + x1) / 2, (y0 + y1) / 2))
            trails[tid] = list(hist)
        kept = det.filter(index)
        return TrackedDetections(
            **{f: getattr(kept, f) for f in kept.__dataclass_fields__},
            track_ids=torch.as_tensor(ids, dtype=torch.int64),
            trails=trails if self.trail else {},
        )


def make_tracker(name: str = "bytetrack", **kwargs: Any) -> Tracker:
    """A :class:`Tracker` (same arguments); the name says which library tracker associates."""
    return Tracker(name, **kwargs)
