"""Inference: the ``Detector`` predict API, input sources, results and drawing."""

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
