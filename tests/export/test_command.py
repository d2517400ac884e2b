"""``rtdetr export`` end to end on the tiny preset, and the parity comparison itself."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

import rtdetr
from rtdetr.export.check import compare_detections
from rtdetr.export.command import add_export_parser
from rtdetr.infer.onnx_backend import OnnxBackend

from .conftest import IMGSZ


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rtdetr")
    add_export_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["export", *argv])


def test_cli_exports_and_checks(tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    args = _parse(
        [
            "--model",
            "rtdetrv2_hgnetv2_n",
            "--num-classes",
            "3",
            "--imgsz",
            str(IMGSZ),
            "--dynamic-batch",
            "--out",
            str(out),
            "--threads",
            "1",
        ]
    )
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "onnxruntime vs PyTorch: PASS" in text
    backend = OnnxBackend(out, threads=1)
    assert backend.num_classes == 3 and backend.class_names is None and backend.batch_size is None


def test_cli_int8_writes_both_files_and_reports_agreement(cli_int8):
    fp32, int8, text = cli_int8
    assert fp32.is_file() and int8.is_file()
    assert f"wrote {fp32} (fp32, the quantizer's input)" in text and f"wrote {int8}" in text
    assert "onnxruntime vs PyTorch (int8): top 10 detections per image" in text


def test_default_output_names(tmp_path):
    from rtdetr.export.command import _default_out

    model = rtdetr.build_model("rtdetrv2_hgnetv2_n", num_classes=2)
    cases = {
        ("onnx", False, False): "rtdetrv2_hgnetv2_n_320.onnx",
        ("onnx", True, False): "rtdetrv2_hgnetv2_n_320_int8.onnx",
        ("onnx", False, True): "rtdetrv2_hgnetv2_n_320_fp16.onnx",
        ("torchscript", False, False): "rtdetrv2_hgnetv2_n_320.torchscript",
        ("openvino", False, False): "rtdetrv2_hgnetv2_n_320_openvino_model/model.xml",
    }
    for (fmt, int8, half), expected in cases.items():
        args = argparse.Namespace(model="rtdetrv2_hgnetv2_n", format=fmt, int8=int8, half=half)
        assert _default_out(args, model, 320).as_posix() == expected
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"")
    args = argparse.Namespace(model=str(ckpt), format="onnx", int8=False, half=False)
    assert _default_out(args, model, 640) == tmp_path / "best_640.onnx"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--int8"], "--int8 needs --calib"),
        (["--int8", "--calib", "x", "--format", "torchscript"], "--int8 is implemented for --format onnx"),
        (["--int8", "--calib", "x", "--half"], "exclude each other"),
        (["--calib", "x"], "--calib is only used with --int8"),
        (["--int8-full-range"], "--int8-full-range is only used with --int8"),
        (["--imgsz", "100"], "--imgsz: imgsz must be a positive multiple of 32"),
    ],
)
def test_cli_flag_errors(argv, message):
    args = _parse(["--model", "rtdetrv2_hgnetv2_n", *argv])
    with pytest.raises(SystemExit, match=message):
        args.func(args)


def test_compare_detections_is_order_insensitive_for_ties_and_catches_errors():
    labels = torch.tensor([[1, 1, 2]])
    boxes = torch.tensor([[[0.0, 0, 10, 10], [20, 20, 30, 30], [5, 5, 9, 9]]])
    scores = torch.tensor([[0.9, 0.9, 0.5]])
    swapped = (labels[:, [1, 0, 2]], boxes[:, [1, 0, 2]], scores[:, [1, 0, 2]])
    assert compare_detections((labels, boxes, scores), swapped).passed

    moved = boxes.clone()
    moved[0, 2, 0] += 0.01
    report = compare_detections((labels, boxes, scores), (labels, moved, scores))
    assert not report.passed and report.max_box_diff == pytest.approx(0.01, abs=1e-6)
    relabelled = (torch.tensor([[1, 1, 3]]), boxes, scores)
    report = compare_detections((labels, boxes, scores), relabelled)
    assert report.unmatched == 1 and "label 2" in report.summary()
    none = compare_detections((labels, boxes, scores), (labels, boxes, scores), score_threshold=0.95)
    assert not none.passed and "nothing scored above the threshold" in none.summary()
    assert np.isfinite(report.max_score_diff)
