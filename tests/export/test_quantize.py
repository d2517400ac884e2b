"""Int8 static QDQ quantization: the graph is quantized where intended, runs, and stays close to fp32.

Random weights score every query about the same, so which detections come out on
top is decided by tiny differences and is no measure of quantization error. The
quantized part (backbone + encoder) is therefore also checked on its own output:
its features must match fp32 closely. (On a trained model the README reports AP.)
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import Tensor, nn

from rtdetr.data.image_io import load_image
from rtdetr.export import model_metadata, quantize_onnx_int8, read_onnx_metadata
from rtdetr.export.onnx import write_onnx_metadata
from rtdetr.export.quantize import ImageCalibrationReader, list_images, preprocess_image
from rtdetr.infer.onnx_backend import OnnxBackend

from .conftest import IMGSZ


def _calib_batch(calib_dir, n: int = 4) -> tuple[Tensor, Tensor]:
    files = list_images(calib_dir)[:n]
    images = torch.cat([preprocess_image(load_image(f), IMGSZ) for f in files])
    return images, torch.tensor([[400, 300]] * len(files))


def test_calibration_reader_preprocesses_like_inference(calib_dir):
    reader = ImageCalibrationReader(calib_dir, IMGSZ, max_images=3)
    assert len(reader) == 3
    feeds = [reader.get_next() for _ in range(4)]
    assert feeds[-1] is None
    x = feeds[0]["images"]
    assert x.shape == (1, 3, IMGSZ, IMGSZ) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert feeds[0]["orig_target_sizes"].tolist() == [[IMGSZ, IMGSZ]]
    reader.set_range(1, 2)  # onnxruntime's strided calibration
    assert np.array_equal(reader.get_next()["images"], feeds[1]["images"]) and reader.get_next() is None
    with pytest.raises(ValueError, match="has no images"):
        ImageCalibrationReader(calib_dir.parent / "annotations", IMGSZ)


def test_int8_static_qdq_graph_runs(cli_int8, calib_dir):
    fp32_path, out, _ = cli_int8  # quantize_onnx_int8 through `rtdetr export --int8`
    proto = onnx.load(str(out))
    quant = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert len(quant) > 50 and any(t.data_type == onnx.TensorProto.INT8 for t in proto.graph.initializer)
    assert any(n.name.startswith("/model/backbone/") for n in quant)
    assert any(n.name.startswith("/model/encoder/") for n in quant)
    # Float by default: the decoder after its input projections and the whole postprocess, so no
    # tensor they produce is quantized (nodes the optimizer added have names without a scope).
    producers = {out: n for n in proto.graph.node for out in n.output}
    scopes = ("/model/backbone/", "/model/encoder/", "/model/decoder/input_proj")
    quantized_from = [producers[q.input[0]].name for q in quant if q.input[0] in producers]
    assert not [name for name in quantized_from if name.startswith("/") and not name.startswith(scopes)]
    meta = read_onnx_metadata(out)
    assert meta.precision == "int8" and meta == read_onnx_metadata(fp32_path).with_precision("int8")

    images, sizes = _calib_batch(calib_dir)
    fp32 = OnnxBackend(fp32_path, threads=1)(images, sizes)
    int8 = OnnxBackend(out, threads=1)(images, sizes)
    assert int8[1].shape == fp32[1].shape and torch.isfinite(int8[1]).all()
    assert not torch.equal(int8[2], fp32[2])  # really quantized
    # Score distributions agree (sorted scores are a stable statistic even when ranks are not).
    assert (int8[2] - fp32[2]).abs().max() < 0.01
    assert int8[2].unique().numel() > 100  # scores are not on an 8-bit grid: the postprocess stayed float


class _BackboneEncoder(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone, self.encoder = model.backbone, model.encoder

    def forward(self, images: Tensor) -> Tensor:
        return torch.cat([f.flatten(2) for f in self.encoder(self.backbone(images))], 2)  # [B, C, sum(h*w)]


class _Features(nn.Module):
    """The part quantized by default, as a graph with the detector's inputs and node names (/model/backbone/...)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = _BackboneEncoder(model)

    def forward(self, images: Tensor, orig_target_sizes: Tensor) -> Tensor:
        keep = (orig_target_sizes[:, :1, None] > 0).to(images.dtype)  # uses the second input
        return self.model(images) * keep


def test_int8_backbone_encoder_features_match_fp32(tiny_model, calib_dir, tmp_path):
    import copy

    model = copy.deepcopy(tiny_model).deploy()
    images, sizes = _calib_batch(calib_dir)
    path = tmp_path / "features.onnx"
    torch.onnx.export(_Features(model), (images[:1], sizes[:1]), str(path), input_names=["images", "orig_target_sizes"],
                      output_names=["features"], opset_version=17, dynamo=False,
                      dynamic_axes={"images": {0: "b"}, "orig_target_sizes": {0: "b"}})  # fmt: skip
    proto = onnx.load(str(path))
    write_onnx_metadata(proto, model_metadata(model, imgsz=IMGSZ))
    onnx.save(proto, str(path))
    out = quantize_onnx_int8(path, tmp_path / "features_int8.onnx", calib_dir, max_images=8)

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    feed = {"images": images.numpy(), "orig_target_sizes": sizes.numpy()}
    ref = ort.InferenceSession(str(path), options).run(None, feed)[0]
    got = ort.InferenceSession(str(out), options).run(None, feed)[0]
    rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    cos = float((got * ref).sum() / (np.linalg.norm(got) * np.linalg.norm(ref)))
    assert 0 < rel < 0.08 and cos > 0.995, (rel, cos)


def test_int8_rejects_non_fp32_input(tiny_onnx, calib_dir, tmp_path):
    proto = onnx.load(str(tiny_onnx))
    meta = read_onnx_metadata(tiny_onnx).with_precision("fp16")
    write_onnx_metadata(proto, meta)
    onnx.save(proto, str(tmp_path / "half.onnx"))
    with pytest.raises(ValueError, match="needs an fp32 model, this one is fp16"):
        quantize_onnx_int8(tmp_path / "half.onnx", tmp_path / "q.onnx", calib_dir)
