"""TorchScript round trip and (when the optional package is installed) OpenVINO IR parity."""

from __future__ import annotations

import pytest
import torch

from rtdetr.export import check_export, example_inputs, export_module, export_torchscript, read_torchscript_metadata
from rtdetr.export.check import compare_detections
from rtdetr.export.torchscript import load_torchscript

from .conftest import CLASS_NAMES, IMGSZ


def test_torchscript_round_trip_equals_eager(tiny_model, tmp_path):
    path = export_torchscript(tiny_model, tmp_path / "tiny.torchscript", imgsz=IMGSZ)
    meta = read_torchscript_metadata(path)
    assert (meta.model_name, meta.imgsz, meta.class_names) == ("rtdetrv2_hgnetv2_n", IMGSZ, CLASS_NAMES)
    module = load_torchscript(path)
    images, sizes = example_inputs(IMGSZ, batch=2, seed=2)  # traced at batch 1, runs any batch
    with torch.no_grad():
        out = module(images, sizes)
        ref = export_module(tiny_model)(images, sizes)
    assert out[0].dtype == torch.int64 and out[1].shape == (2, 300, 4)
    report = compare_detections(ref, out, name="TorchScript vs eager", max_detections=300)
    assert report.passed, report.summary()
    assert torch.equal(out[0], ref[0])


def test_openvino_ir_matches_eager(tiny_model, tiny_onnx, tmp_path):
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'rtdetr[openvino]')")
    from rtdetr.export import read_openvino_metadata
    from rtdetr.export.openvino import onnx_to_openvino

    # export_openvino = export_onnx (tested elsewhere) + this conversion; the fixture saves an export.
    xml = onnx_to_openvino(tiny_onnx, tmp_path / "ov")
    assert xml.name == "model.xml" and xml.with_suffix(".bin").is_file()
    assert read_openvino_metadata(xml).class_names == CLASS_NAMES
    report = check_export(xml, tiny_model, imgsz=IMGSZ, threads=1)
    assert report.passed, report.summary()


def test_openvino_missing_names_the_extra(tiny_model, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    from rtdetr.export import export_openvino

    with pytest.raises(ImportError, match=r"pip install 'rtdetr\[openvino\]'"):
        export_openvino(tiny_model, tmp_path / "ov", imgsz=IMGSZ)
