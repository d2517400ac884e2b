"""rtdetr: RT-DETR and RT-DETRv2 object detectors, faithful to the reference and fast.

Public names are imported on first use (see :mod:`rtdetr._lazy`), so ``import
rtdetr`` and the command line's ``--help`` do not wait for PyTorch.
"""

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from .errors import UserError

__version__ = "0.1.0"

_EXPORTS = {
    "build_model": ".loader",
    "build_backbone": ".builder",
    "build_postprocessor": ".builder",
    "load_model": ".loader",
    "list_models": ".config",
    "get_config": ".config",
    "RTDETRConfig": ".config",
    "RTDETR": ".nn",
    "DetectionOutput": ".nn",
    "PostProcessor": ".nn",
    "Detector": ".infer",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from .builder import build_backbone, build_postprocessor
    from .config import RTDETRConfig, get_config, list_models
    from .infer import Detector
    from .loader import build_model, load_model
    from .nn import RTDETR, DetectionOutput, PostProcessor

__all__ = [*_EXPORTS, "UserError", "__version__"]
