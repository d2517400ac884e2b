"""HTTP detection service (``rtdetr serve``): FastAPI app, dynamic batching, metrics, web page.

Needs the ``serve`` extra (``pip install 'rtdetr[serve]'``). ``create_app`` is
imported lazily so that ``rtdetr.serve.command`` (used by the CLI) works without it.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "create_app": ".app",
    "DynamicBatcher": ".batcher",
    "BatchResult": ".batcher",
    "QueueFull": ".batcher",
    "BatcherClosed": ".batcher",
    "filter_detections": ".batcher",
    "ImageRejected": ".image_bytes",
    "decode_image": ".image_bytes",
    "encode_png": ".image_bytes",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .app import create_app
    from .batcher import BatcherClosed, BatchResult, DynamicBatcher, QueueFull, filter_detections
    from .image_bytes import ImageRejected, decode_image, encode_png

__all__ = list(_EXPORTS)
