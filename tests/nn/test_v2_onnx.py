"""A discrete-sampling RT-DETRv2 exports to ONNX without GridSample and runs in onnxruntime."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import rtdetr
from rtdetr.nn.deformable_attention import MSDeformableAttention

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install onnx onnxruntime)")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnx onnxruntime)")

OPSET = 17


class _Outputs(nn.Module):
    """The detector with tuple outputs, which is what the TorchScript exporter takes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(images)
        return out["pred_logits"], out["pred_boxes"]


def _export(module: nn.Module, args: tuple) -> bytes:
    buf = io.BytesIO()
    # The TorchScript exporter: the dynamo one needs onnxscript, which is not a dependency.
    torch.onnx.export(module.eval(), args, buf, opset_version=OPSET, dynamo=False)
    return buf.getvalue()


def _op_types(data: bytes) -> set[str]:
    return {node.op_type for node in onnx.load_from_string(data).graph.node}


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning", "ignore::UserWarning")
def test_discrete_model_exports_without_grid_sample_and_matches_eager():
    torch.manual_seed(0)
    model = rtdetr.build_model(
        "rtdetrv2_r18vd", cross_attn_method="discrete", num_queries=30, num_top_queries=30, eval_spatial_size=(320, 320)
    ).eval()
    # Fresh heads put every reference box on an anchor (a pixel center) with axis-aligned
    # offsets, i.e. exactly on a rounding boundary of the discrete rule, where any two
    # runtimes may legitimately pick neighbouring pixels. Generic weights avoid that.
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    wrapped = _Outputs(model)
    x = torch.rand(1, 3, 320, 320, generator=torch.Generator().manual_seed(1))
    data = _export(wrapped, (x,))
    ops = _op_types(data)
    assert "GridSample" not in ops and "GatherElements" in ops

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    logits, boxes = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ref_logits, ref_boxes = wrapped(x)
    torch.testing.assert_close(torch.from_numpy(logits), ref_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.from_numpy(boxes), ref_boxes, atol=1e-5, rtol=1e-4)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning", "ignore::UserWarning")
def test_default_attention_exports_grid_sample():
    """Guards the test above: the same export of the bilinear attention does contain GridSample."""
    shapes = [(8, 8), (4, 4)]

    class Attn(nn.Module):
        def __init__(self, method: str) -> None:
            super().__init__()
            self.attn = MSDeformableAttention(32, 4, 2, 2, method=method)

        def forward(self, query, boxes, value):
            return self.attn(query, boxes, value, shapes)

    args = (torch.randn(1, 5, 32), torch.rand(1, 5, 1, 4), torch.randn(1, 80, 32))
    assert "GridSample" in _op_types(_export(Attn("default"), args))
    assert "GridSample" not in _op_types(_export(Attn("discrete"), args))
