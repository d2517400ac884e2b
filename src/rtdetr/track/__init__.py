"""Multi-object tracking on top of the detector: ``Detector.track`` and ``rtdetr track``.

Association is the ``trackers`` library's (``pip install 'rtdetr[track]'``); this package
adapts it (class-aware, ids across classes, lost-track buffer in seconds), reads cameras
and streams, writes MOTChallenge files, scores with ``motmetrics`` and generates synthetic
videos with ground-truth tracks.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "TRACKERS": ".adapter",
    "Tracker": ".adapter",
    "TrackerError": ".adapter",
    "make_tracker": ".adapter",
    "TrackedDetections": ".results",
    "track_stream": ".stream",
    "TrackLog": ".mot",
    "read_mot": ".mot",
    "mot_scores": ".metrics",
    "make_clip": ".synthetic",
    "Clip": ".synthetic",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .adapter import TRACKERS, Tracker, TrackerError, make_tracker
    from .metrics import mot_scores
    from .mot import TrackLog, read_mot
    from .results import TrackedDetections
    from .stream import track_stream
    from .synthetic import Clip, make_clip

__all__ = [
    "TRACKERS",
    "Tracker",
    "TrackerError",
    "make_tracker",
    "TrackedDetections",
    "track_stream",
    "TrackLog",
    "read_mot",
    "mot_scores",
    "make_clip",
    "Clip",
]
