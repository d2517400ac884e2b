"""rtdetr: RT-DETR and RT-DETRv2 object detectors, faithful to the reference and fast."""

from .builder import build_backbone, build_model, build_postprocessor
from .config import RTDETRConfig, get_config, list_models
from .nn import RTDETR, DetectionOutput, PostProcessor

__version__ = "0.1.0"

__all__ = [
    "build_model",
    "build_backbone",
    "build_postprocessor",
    "list_models",
    "get_config",
    "RTDETRConfig",
    "RTDETR",
    "DetectionOutput",
    "PostProcessor",
    "__version__",
]
