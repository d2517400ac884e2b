"""The RT-DETR model, one concept per module."""

from .cspdarknet import CSPDarknet
from .decoder import RTDETRDecoder
from .detector import RTDETR, DetectionOutput
from .encoder import HybridEncoder
from .hgnetv2 import HGNetv2
from .postprocess import PostProcessor
from .presnet import PResNet

__all__ = [
    "RTDETR",
    "DetectionOutput",
    "HybridEncoder",
    "RTDETRDecoder",
    "PResNet",
    "HGNetv2",
    "CSPDarknet",
    "PostProcessor",
]
