"""Export the end-to-end detector (network + top-K postprocess) for deployment.

```python
import rtdetr
from rtdetr.export import export_onnx, check_export, quantize_onnx_int8

model = rtdetr.build_model("rtdetr_r18vd", weights="coco")
export_onnx(model, "rtdetr_r18vd.onnx", imgsz=640, dynamic_batch=True)
print(check_export("rtdetr_r18vd.onnx", model, imgsz=640).summary())
quantize_onnx_int8("rtdetr_r18vd.onnx", "rtdetr_r18vd_int8.onnx", calib="path/to/images")
```

Formats: ONNX (:mod:`.onnx`), TorchScript (:mod:`.torchscript`), OpenVINO IR
(:mod:`.openvino`, optional extra), int8 static QDQ ONNX (:mod:`.quantize`).
Every file carries the metadata of :mod:`.metadata`; serve ONNX files with
:class:`rtdetr.infer.onnx_backend.OnnxBackend`. Command line: ``rtdetr export``.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "ParityReport": ".check",
    "check_export": ".check",
    "compare_detections": ".check",
    "example_inputs": ".graph",
    "export_module": ".graph",
    "ExportMetadata": ".metadata",
    "model_metadata": ".metadata",
    "parse_metadata": ".metadata",
    "DEFAULT_OPSET": ".onnx",
    "export_onnx": ".onnx",
    "onnx_op_types": ".onnx",
    "read_onnx_metadata": ".onnx",
    "export_openvino": ".openvino",
    "read_openvino_metadata": ".openvino",
    "ImageCalibrationReader": ".quantize",
    "quantize_onnx_int8": ".quantize",
    "export_torchscript": ".torchscript",
    "read_torchscript_metadata": ".torchscript",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .check import ParityReport, check_export, compare_detections
    from .graph import example_inputs, export_module
    from .metadata import ExportMetadata, model_metadata, parse_metadata
    from .onnx import DEFAULT_OPSET, export_onnx, onnx_op_types, read_onnx_metadata
    from .openvino import export_openvino, read_openvino_metadata
    from .quantize import ImageCalibrationReader, quantize_onnx_int8
    from .torchscript import export_torchscript, read_torchscript_metadata

__all__ = [
    "DEFAULT_OPSET",
    "ExportMetadata",
    "ImageCalibrationReader",
    "ParityReport",
    "check_export",
    "compare_detections",
    "example_inputs",
    "export_module",
    "export_onnx",
    "export_openvino",
    "export_torchscript",
    "model_metadata",
    "onnx_op_types",
    "parse_metadata",
    "quantize_onnx_int8",
    "read_onnx_metadata",
    "read_openvino_metadata",
    "read_torchscript_metadata",
]
