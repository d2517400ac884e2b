"""TorchScript export: the traced end-to-end detector, loadable without this package.

``torch.jit.load(path)`` gives a module ``(images float32 [B, 3, S, S] in [0, 1],
orig_target_sizes int64 [B, 2] (w, h)) -> (labels int64 [B, K], boxes float32
[B, K, 4] xyxy px, scores float32 [B, K])``. The metadata table of
:mod:`rtdetr.export.metadata` is stored as the extra file ``metadata.json``
(read it with :func:`read_torchscript_metadata`). The trace is made at batch 1
but holds no batch-size constants, so any batch runs; S is fixed.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from .graph import check_imgsz, example_inputs, export_module
from .metadata import ExportMetadata, model_metadata, parse_metadata

__all__ = ["METADATA_FILE", "export_torchscript", "load_torchscript", "read_torchscript_metadata"]

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"


def export_torchscript(
    model: nn.Module,
    path: str | Path,
    *,
    imgsz: int = 640,
    half: bool = False,
    class_names: list[str] | None = None,
) -> Path:
    """Trace the deploy-fused detector + postprocessor and save it with ``torch.jit.save``.

    Args:
        model: an :class:`~rtdetr.RTDETR` (not modified; a fused copy is traced on the CPU).
        path: output file (``.torchscript`` by convention).
        imgsz: square input side S, a multiple of 32.
        half: float16 network inside (inputs and outputs stay float32); run it on a GPU
            with ``module.cuda()``.
        class_names: names per contiguous label (default ``model.class_names``).
    """
    check_imgsz(imgsz)
    meta = model_metadata(
        model, imgsz=imgsz, dynamic_batch=True, precision="fp16" if half else "fp32", class_names=class_names
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = export_module(model, half=half)
    args = example_inputs(imgsz)
    start = time.perf_counter()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # torch.jit is deprecated in favour of torch.export but remains the loadable-anywhere format.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        traced = torch.jit.trace(module, args, check_trace=False)
        traced = torch.jit.freeze(traced.eval()) if not half else traced
        torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(meta.to_props())})
    log.info(
        "exported %s to %s (TorchScript, %dx%d, %s) in %.1f s",
        meta.model_name,
        path,
        imgsz,
        imgsz,
        meta.precision,
        time.perf_counter() - start,
    )
    return path


def load_torchscript(path: str | Path, **kwargs) -> torch.jit.ScriptModule:
    """``torch.jit.load`` on the CPU, without torch.jit's deprecation warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        return torch.jit.load(str(path), map_location="cpu", **kwargs).eval()


def read_torchscript_metadata(path: str | Path) -> ExportMetadata:
    """Metadata stored with a TorchScript export."""
    extra = {METADATA_FILE: ""}
    load_torchscript(path, _extra_files=extra)
    if not extra[METADATA_FILE]:
        raise ValueError(f"{path}: no {METADATA_FILE} inside; export it with `rtdetr export --format torchscript`")
    return parse_metadata(json.loads(extra[METADATA_FILE]), source=str(path))
