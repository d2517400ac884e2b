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


# Runs an IR through OpenVinoRunner the way the CLI and the trainer's process run it: flush-to-zero /
# denormals-are-zero on (torch.set_flush_denormal(True)). ONEDNN_MAX_CPU_ISA=AVX2 makes OpenVINO's CPU
# plugin use its AVX2 kernels on an AVX-512 machine (a no-op on AVX2 machines): with those kernels and
# the flags on, a dynamic-batch IR returned 0 images or failed with "Value -1 not in range" (Broadcast).
_RUN_IR_AVX2 = """
import sys
import numpy as np
import torch
from rtdetr.export.graph import example_inputs
from rtdetr.export.openvino import OpenVinoRunner

torch.set_flush_denormal(True)
runner = OpenVinoRunner(sys.argv[1], threads=1)
out = {}
for batch in (1, 3):
    images, sizes = example_inputs(int(sys.argv[3]), batch=batch, seed=batch)
    for name, value in zip(("labels", "boxes", "scores"), runner(images, sizes)):
        out[f"{name}{batch}"] = value.numpy()
np.savez(sys.argv[2], **out)
"""


@pytest.fixture(scope="module")
def tiny_ir(tiny_onnx, tmp_path_factory):
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'rtdetr[openvino]')")
    from rtdetr.export.openvino import onnx_to_openvino

    return onnx_to_openvino(tiny_onnx, tmp_path_factory.mktemp("ov_dynamic") / "model.xml")  # dynamic batch


def test_openvino_dynamic_batch_ir_matches_eager_on_avx2_kernels(tiny_model, tiny_ir, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np

    import rtdetr

    env = {
        **os.environ,
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(Path(rtdetr.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    out = tmp_path / "ov.npz"
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_IR_AVX2, str(tiny_ir), str(out), str(IMGSZ)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(out)
    for batch in (1, 3):
        images, sizes = example_inputs(IMGSZ, batch=batch, seed=batch)
        with torch.no_grad():
            ref = export_module(tiny_model)(images, sizes)
        cand = tuple(torch.from_numpy(got[f"{name}{batch}"]) for name in ("labels", "boxes", "scores"))
        assert cand[0].shape == (batch, 300)
        report = compare_detections(ref, cand, name=f"OpenVINO (AVX2 kernels) batch {batch}")
        assert report.passed, report.summary()


def test_openvino_dynamic_batch_ir_matches_eager_in_process(tiny_model, tiny_ir):
    torch.set_flush_denormal(True)  # as the CLI sets it (the root conftest does too)
    for batch in (1, 3):
        images, sizes = example_inputs(IMGSZ, batch=batch, seed=batch)
        report = check_export(tiny_ir, tiny_model, imgsz=IMGSZ, threads=1, inputs=(images, sizes))
        assert report.passed and report.compared == 100 * batch, report.summary()
