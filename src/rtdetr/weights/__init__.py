"""Pretrained weights: the registry of published checkpoints, loading, and conversion.

```python
import rtdetr
from rtdetr.weights import list_weights, load_weights, convert_checkpoint

list_weights("rtdetr_r18vd")                       # [WeightsEntry(... tag='coco' ...), ...]
model = rtdetr.build_model("rtdetr_r18vd", weights="coco")      # COCO, names on model.class_names
model = rtdetr.build_model("rtdetr_r50vd", weights="hf:PekingU/rtdetr_r50vd")

model = rtdetr.build_model("rtdetr_r18vd", num_classes=3)       # fine-tune to 3 classes
report = load_weights(model, "coco+o365", allow_head_mismatch=True)
report.reinitialized_keys                           # the re-initialized score heads

convert_checkpoint("best.pth", "hf_dir", to="hf")   # -> transformers from_pretrained folder
```

Offline: a published checkpoint is read from ``<torch hub dir>/checkpoints/<file>``
(``TORCH_HOME``); without network the error names the URL and that path.
"""

from .convert import ConvertTarget, convert_checkpoint
from .errors import UnsafeCheckpointError, WeightsDownloadError, WeightsError, WeightsFormatError, WeightsMismatchError
from .formats import Checkpoint, read_checkpoint
from .hf_config import hf_config_dict
from .hf_naming import from_hf_state_dict, to_hf_state_dict
from .infer import infer_model_names
from .loading import LoadReport, load_weights, read_weights, resolve_weights
from .registry import WEIGHTS, WeightsEntry, get_weights, list_weights

__all__ = [
    "load_weights",
    "LoadReport",
    "resolve_weights",
    "read_weights",
    "convert_checkpoint",
    "ConvertTarget",
    "list_weights",
    "get_weights",
    "WeightsEntry",
    "WEIGHTS",
    "read_checkpoint",
    "Checkpoint",
    "to_hf_state_dict",
    "from_hf_state_dict",
    "hf_config_dict",
    "infer_model_names",
    "WeightsError",
    "WeightsDownloadError",
    "WeightsFormatError",
    "WeightsMismatchError",
    "UnsafeCheckpointError",
]
