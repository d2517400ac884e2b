"""ONNX export of the end-to-end detector (network + top-K postprocess in one graph).

Graph: inputs ``images`` float32 [B, 3, S, S] (RGB in [0, 1], bilinear-resized,
no mean/std) and ``orig_target_sizes`` int64 [B, 2] (original width, height);
outputs ``labels`` int64 [B, K] (contiguous), ``boxes`` float32 [B, K, 4] (xyxy in
original pixels) and ``scores`` float32 [B, K], sorted by score, K =
``num_top_queries`` (300). No score threshold inside: shapes are static, callers
filter. S is fixed at export (anchors and position embeddings are constants);
B is 1 or, with ``dynamic_batch``, any.

Uses the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``):
it needs only the ``onnx`` package, and it exports this model at opset 16+
(``GridSample``) without graph breaks. The metadata written is described in
:mod:`rtdetr.export.metadata`.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from .graph import INPUT_NAMES, OUTPUT_NAMES, check_imgsz, example_inputs, export_module
from .metadata import ExportMetadata, model_metadata

__all__ = ["DEFAULT_OPSET", "export_onnx", "onnx_op_types", "read_onnx_metadata", "require_onnx", "write_onnx_metadata"]

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
MIN_OPSET = 16  # GridSample (bilinear deformable attention) entered the standard at opset 16


def require_onnx():
    """Import ``onnx`` or fail naming the extra to install."""
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("ONNX export needs the onnx package: pip install 'rtdetr[export]'") from exc
    return onnx


def write_onnx_metadata(model_proto, meta: ExportMetadata) -> None:
    """Replace ``model_proto.metadata_props`` entries with ``meta`` (other keys are kept)."""
    props = meta.to_props()
    kept = [p for p in model_proto.metadata_props if p.key not in props]
    del model_proto.metadata_props[:]
    for p in kept:
        model_proto.metadata_props.add(key=p.key, value=p.value)
    for key, value in props.items():
        model_proto.metadata_props.add(key=key, value=value)


def read_onnx_metadata(path: str | Path) -> ExportMetadata:
    """Metadata of an exported ``.onnx`` file (reads the header, not the weights)."""
    from .metadata import parse_metadata

    onnx = require_onnx()
    proto = onnx.load(str(path), load_external_data=False)
    return parse_metadata({p.key: p.value for p in proto.metadata_props}, source=str(path))


def onnx_op_types(path_or_proto) -> set[str]:
    """Operator types used by an ONNX graph (top level), e.g. to assert there is no ``GridSample``."""
    onnx = require_onnx()
    proto = onnx.load(str(path_or_proto)) if isinstance(path_or_proto, (str, Path)) else path_or_proto
    return {node.op_type for node in proto.graph.node}


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    imgsz: int = 640,
    dynamic_batch: bool = False,
    half: bool = False,
    opset: int = DEFAULT_OPSET,
    class_names: list[str] | None = None,
) -> Path:
    """Export a detector to ONNX with its postprocessor and metadata.

    Args:
        model: an :class:`~rtdetr.RTDETR` (``rtdetr.build_model`` / ``model_from_checkpoint``).
            It is not modified: a deploy-fused (RepVGG-folded) copy is traced.
        path: output ``.onnx`` file (parent folders are created).
        imgsz: square input side S, a multiple of 32.
        dynamic_batch: make the batch dimension symbolic (``batch``) on all inputs and outputs.
        half: float16 network (for GPUs; inputs and outputs stay float32). On the
            CPU, onnxruntime runs fp16 graphs but usually slower than fp32.
        opset: ONNX opset (>= 16, default 17).
        class_names: names per contiguous label (default ``model.class_names``).

    Returns:
        The written path.
    """
    onnx = require_onnx()
    check_imgsz(imgsz)
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET} (GridSample in the deformable attention), got {opset}")
    meta = model_metadata(
        model, imgsz=imgsz, dynamic_batch=dynamic_batch, precision="fp16" if half else "fp32", class_names=class_names
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = export_module(model, half=half)
    args = example_inputs(imgsz, batch=1)
    dynamic_axes = {name: {0: "batch"} for name in (*INPUT_NAMES, *OUTPUT_NAMES)} if dynamic_batch else None

    start = time.perf_counter()
    with warnings.catch_warnings(), torch.no_grad():
        # Tracing warns about every Python-level shape check (fixed at export, by design).
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    write_onnx_metadata(proto, meta)
    proto.doc_string = f"RT-DETR {meta.model_name} end-to-end detector exported by rtdetr {meta.rtdetr_version}"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    log.info(
        "exported %s to %s (opset %d, %dx%d, %s, %s batch) in %.1f s, %.1f MB",
        meta.model_name,
        path,
        opset,
        imgsz,
        imgsz,
        meta.precision,
        "dynamic" if dynamic_batch else "fixed",
        time.perf_counter() - start,
        path.stat().st_size / 1e6,
    )
    return path
