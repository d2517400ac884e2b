"""examples/detect_and_export.py: PyTorch detections, an ONNX file, and the ONNX file's detections."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from .conftest import load_example


def test_detect_export_and_run_onnx(toy_yolo, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from rtdetr.export import read_onnx_metadata

    image = toy_yolo.parent / "images" / "val" / "0000.jpg"
    out = tmp_path / "exp"
    argv = [str(image), "--random-weights", "--model", "rtdetrv2_hgnetv2_n", "--imgsz", "128", "--conf", "0"]
    assert load_example("detect_and_export").main([*argv, "--set", "num_queries=30", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "PASS" in printed  # onnxruntime agreed with PyTorch on the export check
    counts = dict(re.findall(r"^(PyTorch|onnxruntime): (\d+) objects", printed, re.M))
    assert counts["PyTorch"] == counts["onnxruntime"] == "300"  # conf 0: the top 300 (query, class) pairs
    for name in ("detections.png", "detections_onnx.png"):
        with Image.open(out / name) as drawn:
            assert drawn.size == (128, 128)  # drawn on the original image
    meta = read_onnx_metadata(out / "model.onnx")
    assert (meta.model_name, meta.imgsz, meta.num_classes) == ("rtdetrv2_hgnetv2_n", 128, 80)
