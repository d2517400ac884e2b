"""The backbone + encoder alone as an ONNX graph: the part int8 quantizes by default.

Quantization error is clearest on these features (before query selection turns small
errors into other top-K choices), so the int8 tests and ``benchmarks/int8_formats.py``
measure it here. The graph keeps the detector's input names and node names
(``/model/backbone/...``), so :func:`~rtdetr.export.quantize.quantize_onnx_int8` treats
it as it treats the full model.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import Tensor, nn

from .metadata import model_metadata
from .onnx import write_onnx_metadata

__all__ = ["export_features_onnx"]


class _BackboneEncoder(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone, self.encoder = model.backbone, model.encoder

    def forward(self, images: Tensor) -> Tensor:
        return torch.cat([f.flatten(2) for f in self.encoder(self.backbone(images))], 2)  # [B, C, sum(h*w)]


class _Features(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = _BackboneEncoder(model)  # attribute named as in the detector's graph

    def forward(self, images: Tensor, orig_target_sizes: Tensor) -> Tensor:
        keep = (orig_target_sizes[:, :1, None] > 0).to(images.dtype)  # the second input must stay in the graph
        return self.model(images) * keep


def export_features_onnx(model: nn.Module, path: str | Path, imgsz: int, *, dynamic_batch: bool = False) -> Path:
    """Write the deploy-fused backbone + encoder of ``model`` (left untouched) to ``path``.

    Inputs ``images`` float32 [B, 3, imgsz, imgsz] and ``orig_target_sizes`` int64 [B, 2];
    output ``features`` [B, C, S] (the encoder maps, flattened and concatenated). The
    file carries the model's rtdetr metadata.
    """
    import onnx

    path = Path(path)
    net = copy.deepcopy(model).eval()
    net.deploy()
    args = (torch.rand(1, 3, imgsz, imgsz), torch.tensor([[imgsz, imgsz]]))
    axes = {"images": {0: "batch"}, "orig_target_sizes": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(
        _Features(net),
        args,
        str(path),
        input_names=["images", "orig_target_sizes"],
        output_names=["features"],
        opset_version=17,
        dynamo=False,
        dynamic_axes=axes,
    )
    proto = onnx.load(str(path))
    write_onnx_metadata(proto, model_metadata(model, imgsz=imgsz))
    onnx.save(proto, str(path))
    return path
