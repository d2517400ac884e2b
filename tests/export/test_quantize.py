"""Int8 static QDQ quantization: the graph is quantized where intended, runs, and stays close to fp32.

Random weights score every query about the same, so which detections come out on
top is decided by tiny differences and is no measure of quantization error. The
quantized part (backbone + encoder) is therefore also checked on its own output:
its features must match fp32 closely. (On a trained model the README reports AP.)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import Tensor

from rtdetr.data.image_io import load_image
from rtdetr.export import quantize_onnx_int8, read_onnx_metadata
from rtdetr.export.features import export_features_onnx
from rtdetr.export.metadata import parse_metadata
from rtdetr.export.onnx import write_onnx_metadata
from rtdetr.export.quantize import ImageCalibrationReader, list_images, max_weight_pair_sum, preprocess_image
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
    assert meta.precision == "int8" and meta == read_onnx_metadata(fp32_path).with_quantization(meta.quantization)

    images, sizes = _calib_batch(calib_dir)
    fp32 = OnnxBackend(fp32_path, threads=1)(images, sizes)
    int8 = OnnxBackend(out, threads=1)(images, sizes)
    assert int8[1].shape == fp32[1].shape and torch.isfinite(int8[1]).all()
    assert not torch.equal(int8[2], fp32[2])  # really quantized
    # Score distributions agree (sorted scores are a stable statistic even when ranks are not).
    assert (int8[2] - fp32[2]).abs().max() < 0.01
    assert int8[2].unique().numel() > 100  # scores are not on an 8-bit grid: the postprocess stayed float


@pytest.fixture(scope="module")
def features_onnx(tiny_model, calib_dir, tmp_path_factory) -> Path:
    """The backbone + encoder of the tiny model as an fp32 ONNX file with rtdetr metadata."""
    path = tmp_path_factory.mktemp("features") / "features.onnx"
    return export_features_onnx(tiny_model, path, IMGSZ, dynamic_batch=True)


def test_int8_backbone_encoder_features_match_fp32(features_onnx, calib_dir, tmp_path):
    # The default scheme (7-bit weights): its integers are the same on every x86 CPU, so this
    # accuracy holds on AVX2-only CPUs too (8-bit weights gave rel. 0.28 / cos 0.966 there).
    out = quantize_onnx_int8(features_onnx, tmp_path / "features_int8.onnx", calib_dir, max_images=8)
    assert read_onnx_metadata(out).quantization["weight_bits"] == 7

    images, sizes = _calib_batch(calib_dir)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    feed = {"images": images.numpy(), "orig_target_sizes": sizes.numpy()}
    ref = ort.InferenceSession(str(features_onnx), options).run(None, feed)[0]
    got = ort.InferenceSession(str(out), options).run(None, feed)[0]
    rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    cos = float((got * ref).sum() / (np.linalg.norm(got) * np.linalg.norm(ref)))
    assert 0 < rel < 0.08 and cos > 0.995, (rel, cos)


def _int8_weights(path: Path) -> np.ndarray:
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    return np.concatenate(
        [
            numpy_helper.to_array(t).ravel()
            for t in proto.graph.initializer
            if t.data_type == onnx.TensorProto.INT8 and t.dims
        ]
    )


def test_default_int8_cannot_saturate_without_vnni_and_full_range_is_opt_in(features_onnx, calib_dir, tmp_path, caplog):
    # Without VNNI, onnxruntime's U8S8 kernels add two uint8 x int8 products into a saturating int16:
    # exact only when 255 * (|w| + |w'|) <= 32767 for the weights of a pair, i.e. |w| <= 64.
    default = quantize_onnx_int8(features_onnx, tmp_path / "default.onnx", calib_dir, max_images=2)
    w = _int8_weights(default)
    assert w.min() >= -64 and w.max() <= 64 and np.abs(w).max() == 64  # 7-bit range, fully used
    assert 255 * max_weight_pair_sum(onnx.load(str(default))) <= 32767
    assert read_onnx_metadata(default).quantization["saturation_free_on_avx2"] is True

    with caplog.at_level(logging.WARNING, logger="rtdetr.export.quantize"):
        full = quantize_onnx_int8(features_onnx, tmp_path / "full.onnx", calib_dir, max_images=2, reduce_range=False)
    assert np.abs(_int8_weights(full)).max() == 127
    assert 255 * max_weight_pair_sum(onnx.load(str(full))) > 32767
    scheme = read_onnx_metadata(full).quantization
    assert scheme["weight_bits"] == 8 and scheme["reduce_range"] is False and scheme["saturation_free_on_avx2"] is False
    assert "saturate" in caplog.text and "VNNI" in caplog.text


def test_int8_metadata_records_the_scheme(cli_int8, tiny_onnx):
    fp32_path, out, text = cli_int8
    scheme = read_onnx_metadata(out).quantization
    assert scheme == {
        "format": "QDQ",
        "activations": "uint8",
        "weights": "int8",
        "weight_bits": 7,
        "reduce_range": True,
        "per_channel": True,
        "calibration": "minmax",
        "calibration_images": 8,
        "quantized": "backbone, encoder, decoder input projections",
        "onnxruntime": ort.__version__,
        "saturation_free_on_avx2": True,
    }
    assert "7-bit" in text and "every x86 CPU" in text  # the CLI says which scheme it wrote
    # What a runtime sees: the onnxruntime session's metadata map carries it as a JSON object.
    props = OnnxBackend(out, threads=1).session.get_modelmeta().custom_metadata_map
    assert json.loads(props["quantization"]) == scheme
    assert read_onnx_metadata(fp32_path).quantization is None and read_onnx_metadata(tiny_onnx).quantization is None
    # Files written before the key existed still load.
    legacy = {k: v for k, v in read_onnx_metadata(out).to_props().items() if k != "quantization"}
    assert parse_metadata(legacy).quantization is None
    with pytest.raises(ValueError, match="'quantization' should be a JSON object"):
        parse_metadata({**legacy, "quantization": "[7]"})


def test_quantize_argument_errors(tiny_onnx, calib_dir, tmp_path):
    with pytest.raises(ValueError, match="weight_type must be one of"):
        quantize_onnx_int8(tiny_onnx, tmp_path / "q.onnx", calib_dir, weight_type="int4")
    with pytest.raises(ValueError, match="quant_format must be one of"):
        quantize_onnx_int8(tiny_onnx, tmp_path / "q.onnx", calib_dir, quant_format="qqq")


def test_int8_rejects_non_fp32_input(tiny_onnx, calib_dir, tmp_path):
    proto = onnx.load(str(tiny_onnx))
    meta = read_onnx_metadata(tiny_onnx).with_precision("fp16")
    write_onnx_metadata(proto, meta)
    onnx.save(proto, str(tmp_path / "half.onnx"))
    with pytest.raises(ValueError, match="needs an fp32 model, this one is fp16"):
        quantize_onnx_int8(tmp_path / "half.onnx", tmp_path / "q.onnx", calib_dir)
