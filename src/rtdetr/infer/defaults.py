"""Inference defaults shared by the Python API, the command line and the HTTP service.

Torch-free, so that building the CLI parser (which shows these defaults) loads no PyTorch.
"""

from __future__ import annotations

__all__ = ["DEFAULT_CONF"]

# The score threshold everything uses unless told otherwise: ``Detector.predict``,
# ``rtdetr predict``, ``rtdetr benchmark``'s end-to-end scope and the HTTP service.
# One value, so the same image gives the same detections through every entry point.
DEFAULT_CONF = 0.5
