"""ONNX export of the end-to-end graph: parity with eager, dynamic batch, fusion, metadata, sampling ops."""

from __future__ import annotations

import copy
import re

import onnx
import pytest
import torch

from rtdetr.export import check_export, example_inputs, export_module, export_onnx, onnx_op_types, read_onnx_metadata
from rtdetr.export.check import compare_detections
from rtdetr.infer.onnx_backend import OnnxBackend

from .conftest import CLASS_NAMES, IMGSZ, jittered_model


def test_tiny_export_matches_eager(tiny_model, tiny_onnx):
    report = check_export(tiny_onnx, tiny_model, imgsz=IMGSZ, batch=2, threads=1)
    assert report.passed, report.summary()
    assert report.compared == 200 and report.max_box_diff <= 1e-3


def test_graph_io_postprocess_and_fused_repvgg(tiny_model, tiny_onnx):
    proto = onnx.load(str(tiny_onnx))
    assert [i.name for i in proto.graph.input] == ["images", "orig_target_sizes"]
    assert [o.name for o in proto.graph.output] == ["labels", "boxes", "scores"]
    ops = onnx_op_types(proto)
    assert {"TopK", "Sigmoid", "GatherElements"} <= ops  # the postprocess is in the graph
    assert "GridSample" in ops  # default (bilinear) sampling: the discrete test below relies on this contrast
    names = [n.name for n in proto.graph.node]
    assert any("bottlenecks.0/conv/" in n for n in names)
    assert not [n for n in names if re.search(r"bottlenecks\.\d+/conv[12]/", n)], "RepVGG branches not fused"
    # The caller's model is left unfused.
    assert hasattr(tiny_model.encoder.fpn_blocks[0].bottlenecks[0], "conv1")


def test_metadata_round_trip(tiny_onnx):
    meta = read_onnx_metadata(tiny_onnx)
    assert (meta.model_name, meta.imgsz, meta.num_classes) == ("rtdetrv2_hgnetv2_n", IMGSZ, len(CLASS_NAMES))
    assert meta.class_names == CLASS_NAMES and meta.dynamic_batch and meta.precision == "fp32"
    assert meta.rtdetr_version
    backend = OnnxBackend(tiny_onnx, threads=1)
    assert backend.class_names == CLASS_NAMES
    assert (backend.imgsz, backend.num_classes, backend.model_name) == (IMGSZ, 6, "rtdetrv2_hgnetv2_n")
    assert backend.batch_size is None


def test_dynamic_batch_equals_single_runs(tiny_onnx):
    backend = OnnxBackend(tiny_onnx, threads=1)
    images, sizes = example_inputs(IMGSZ, batch=2, seed=3)
    batched = backend(images, sizes)
    singles = [backend(images[i : i + 1], sizes[i : i + 1]) for i in range(2)]
    joined = tuple(torch.cat([s[k] for s in singles]) for k in range(3))
    assert batched[0].dtype == torch.int64 and batched[1].dtype == torch.float32 and batched[1].shape == (2, 300, 4)
    report = compare_detections(joined, batched, name="batch 2 vs 2 x batch 1", max_detections=300)
    assert report.passed, report.summary()


def test_backend_rejects_wrong_size_and_missing_metadata(tiny_onnx, tmp_path):
    backend = OnnxBackend(tiny_onnx, threads=1)
    with pytest.raises(ValueError, match=r"expects images \[B, 3, 256, 256\]"):
        backend(torch.rand(1, 3, 320, 320), torch.tensor([[320, 320]]))
    bare = onnx.load(str(tiny_onnx))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ValueError, match=r"bare\.onnx: metadata key 'num_classes' is missing"):
        OnnxBackend(tmp_path / "bare.onnx")


def test_discrete_sampling_has_no_grid_sample_and_matches_eager(tmp_path):
    model = jittered_model(decoder__cross_attn_method="discrete")
    path = export_onnx(model, tmp_path / "discrete.onnx", imgsz=IMGSZ)
    ops = onnx_op_types(path)
    assert "GridSample" not in ops and "GatherElements" in ops
    report = check_export(path, model, imgsz=IMGSZ, threads=1)
    assert report.passed, report.summary()
    # Fixed batch 1: the backend runs a larger batch image by image.
    backend = OnnxBackend(path, threads=1)
    assert backend.batch_size == 1
    images, sizes = example_inputs(IMGSZ, batch=2)
    labels, boxes, scores = backend(images, sizes)
    with torch.no_grad():
        ref = export_module(model)(images, sizes)
    assert compare_detections(ref, (labels, boxes, scores)).passed


def test_rtdetr_r18vd_320_matches_eager(tmp_path):
    model = jittered_model("rtdetr_r18vd")
    path = export_onnx(model, tmp_path / "r18.onnx", imgsz=320)
    report = check_export(path, model, imgsz=320, threads=1)
    assert report.passed, report.summary()


def test_dfine_cspdarknet_n_matches_eager(tmp_path):
    """The scratch recipe's preset: C2f's channel split, SPPF's max pools and D-FINE's head in ONNX."""
    model = jittered_model("dfine_cspdarknet_n", num_queries=30, num_top_queries=30)
    path = export_onnx(model, tmp_path / "csp.onnx", imgsz=320)
    assert {"MaxPool", "Split"} <= onnx_op_types(path)
    report = check_export(path, model, imgsz=320, threads=1)
    assert report.passed, report.summary()


def test_export_argument_errors(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="multiple of 32"):
        export_onnx(tiny_model, tmp_path / "x.onnx", imgsz=250)
    with pytest.raises(ValueError, match="opset must be >= 16"):
        export_onnx(tiny_model, tmp_path / "x.onnx", imgsz=IMGSZ, opset=13)
    with pytest.raises(ValueError, match="class_names has 2 entries but the model has 6 classes"):
        export_onnx(tiny_model, tmp_path / "x.onnx", imgsz=IMGSZ, class_names=["a", "b"])


def test_detector_serves_the_onnx_file_like_the_torch_model(tiny_model, tiny_onnx):
    from rtdetr.infer import Detector

    image = (torch.rand(3, 300, 400, generator=torch.Generator().manual_seed(4)) * 255).to(torch.uint8)
    onnx_det = Detector.from_pretrained(tiny_onnx)
    assert onnx_det.imgsz == IMGSZ and onnx_det.class_names == CLASS_NAMES
    (got,) = onnx_det.predict_images([image], conf=0.0, max_det=20)
    torch_det = Detector(
        copy.deepcopy(tiny_model), imgsz=IMGSZ, precision="fp32"
    )  # TorchBackend fuses its model in place
    (ref,) = torch_det.predict_images([image], conf=0.0, max_det=20)
    report = compare_detections(
        (ref.labels[None], ref.boxes[None], ref.scores[None]), (got.labels[None], got.boxes[None], got.scores[None])
    )
    assert report.passed, report.summary()
