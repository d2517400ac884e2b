"""Inference: the ``Detector`` predict API, input sources, results and drawing."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "Backend": ".backend",
    "class_colors": ".draw",
    "draw_detections": ".draw",
    "Detector": ".predictor",
    "preprocess": ".predictor",
    "Detections": ".results",
    "Frame": ".sources",
    "iter_frames": ".sources",
    "TorchBackend": ".torch_backend",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .backend import Backend
    from .draw import class_colors, draw_detections
    from .predictor import Detector, preprocess
    from .results import Detections
    from .sources import Frame, iter_frames
    from .torch_backend import TorchBackend

__all__ = [
    "Detector",
    "Detections",
    "Backend",
    "TorchBackend",
    "preprocess",
    "iter_frames",
    "Frame",
    "draw_detections",
    "class_colors",
]
