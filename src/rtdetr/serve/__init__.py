"""HTTP detection service (``rtdetr serve``): FastAPI app, dynamic batching, metrics, web page.

Needs the ``serve`` extra (``pip install 'rtdetr[serve]'``). ``create_app`` is
imported lazily so that ``rtdetr.serve.command`` (used by the CLI) works without it.
"""

from __future__ import annotations

from typing import Any

from .batcher import BatcherClosed, BatchResult, DynamicBatcher, QueueFull, filter_detections
from .image_bytes import ImageRejected, decode_image, encode_png

__all__ = [
    "create_app",
    "DynamicBatcher",
    "BatchResult",
    "QueueFull",
    "BatcherClosed",
    "filter_detections",
    "ImageRejected",
    "decode_image",
    "encode_png",
]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
