"""OpenVINO IR export (``model.xml`` + ``model.bin``) via the ONNX graph, and a small runner.

The detector is first exported with :func:`rtdetr.export.export_onnx` (same
inputs, outputs and postprocess), then read by OpenVINO's ONNX frontend and saved as IR.
The metadata table of :mod:`rtdetr.export.metadata` is stored in the IR's
``rt_info`` under ``rtdetr``. ``half`` stores fp16 weights (OpenVINO's usual
compression; the CPU plugin computes in fp32, or bf16 where the CPU has it,
unless told otherwise).

Denormal flags: OpenVINO's CPU plugin on CPUs without AVX-512 (measured with 2026.4,
AVX2 kernels selected by ``ONEDNN_MAX_CPU_ISA=AVX2`` on an AVX-512 machine) computes
the dynamic batch dimension wrong when flush-to-zero / denormals-are-zero is on in
the threads that run inference (``torch.set_flush_denormal(True)``, which the CLI
and the trainer set, or OpenVINO's own ``CPU_DENORMALS_OPTIMIZATION``): a
dynamic-batch IR returned 0 images, or failed in a Broadcast node with "Value -1
not in range". :class:`OpenVinoRunner` therefore compiles with
``CPU_DENORMALS_OPTIMIZATION`` off, which makes OpenVINO clear both flags in its
threads whatever the caller set. Applications running the IR with their own
OpenVINO code should pass the same property.

Needs the optional ``openvino`` package: ``pip install 'rtdetr[openvino]'``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .metadata import ExportMetadata, parse_metadata
from .onnx import DEFAULT_OPSET, export_onnx

__all__ = [
    "COMPILE_CONFIG",
    "OpenVinoRunner",
    "export_openvino",
    "onnx_to_openvino",
    "read_openvino_metadata",
    "require_openvino",
]

log = logging.getLogger(__name__)

_RT_INFO = "rtdetr"
# Properties every compile_model of an rtdetr IR needs. CPU_DENORMALS_OPTIMIZATION=False makes
# the CPU plugin clear FTZ/DAZ in its inference threads: with them set, its AVX2 kernels turn the
# dynamic batch size into 0 or -1 (see the module docstring).
COMPILE_CONFIG: dict[str, object] = {"CPU_DENORMALS_OPTIMIZATION": False}
_KEYS = (
    "model_name",
    "imgsz",
    "num_classes",
    "class_names",
    "category_ids",
    "num_top_queries",
    "dynamic_batch",
    "precision",
    "rtdetr_version",
    "quantization",
)


def require_openvino():
    """Import ``openvino`` or fail naming the extra to install."""
    try:
        import openvino
    except ImportError as exc:
        raise ImportError("OpenVINO export needs the openvino package: pip install 'rtdetr[openvino]'") from exc
    return openvino


def export_openvino(
    model: nn.Module,
    path: str | Path,
    *,
    imgsz: int = 640,
    dynamic_batch: bool = False,
    half: bool = False,
    opset: int = DEFAULT_OPSET,
    class_names: list[str] | None = None,
) -> Path:
    """Export to OpenVINO IR (through a temporary ONNX file).

    Args:
        model: an :class:`~rtdetr.RTDETR` (not modified).
        path: the ``.xml`` file to write (its ``.bin`` goes next to it), or a folder,
            which receives ``model.xml`` / ``model.bin``.
        imgsz, dynamic_batch, opset, class_names: as for :func:`rtdetr.export.export_onnx`.
        half: store weights in fp16.

    Returns:
        The ``.xml`` path.
    """
    require_openvino()
    with tempfile.TemporaryDirectory(prefix="rtdetr_ov_") as tmp:
        onnx_path = export_onnx(
            model,
            Path(tmp) / "model.onnx",
            imgsz=imgsz,
            dynamic_batch=dynamic_batch,
            opset=opset,
            class_names=class_names,
        )
        return onnx_to_openvino(onnx_path, path, half=half)


def onnx_to_openvino(onnx_path: str | Path, path: str | Path, *, half: bool = False) -> Path:
    """Convert an fp32 ``.onnx`` written by :func:`rtdetr.export.export_onnx` to OpenVINO IR.

    ``path`` is the ``.xml`` to write or a folder (then ``model.xml``); the metadata
    is carried over into ``rt_info``. Returns the ``.xml`` path.
    """
    ov = require_openvino()
    from .onnx import read_onnx_metadata

    path = Path(path)
    xml = path if path.suffix.lower() == ".xml" else path / "model.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    meta = read_onnx_metadata(onnx_path)
    if meta.precision != "fp32":
        raise ValueError(
            f"{onnx_path}: convert the fp32 export ({meta.precision} given); use half=True for fp16 weights"
        )
    # Core.read_model reads ONNX directly; ov.convert_model gives the same IR here but spends
    # seconds in its Python pre-processing layer.
    ov_model = ov.Core().read_model(str(onnx_path))
    for key, value in meta.with_precision("fp16" if half else "fp32").to_props().items():
        ov_model.set_rt_info(value, [_RT_INFO, key])
    ov.save_model(ov_model, str(xml), compress_to_fp16=half)
    log.info(
        "wrote %s (OpenVINO IR of %s, %dx%d, %s weights)",
        xml,
        meta.model_name,
        meta.imgsz,
        meta.imgsz,
        "fp16" if half else "fp32",
    )
    return xml


def read_openvino_metadata(model_or_path) -> ExportMetadata:
    """Metadata of an OpenVINO IR written by :func:`export_openvino` (path or ``ov.Model``)."""
    ov = require_openvino()
    source = str(model_or_path)
    ov_model = ov.Core().read_model(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path
    props = {k: ov_model.get_rt_info([_RT_INFO, k]).astype(str) for k in _KEYS if ov_model.has_rt_info([_RT_INFO, k])}
    return parse_metadata(props, source=source)


class OpenVinoRunner:
    """Runs an exported IR on the OpenVINO CPU device: ``(images, orig_sizes) -> (labels, boxes, scores)``.

    Same tensors as :class:`rtdetr.infer.onnx_backend.OnnxBackend`. ``precision``
    ``"f32"`` (default) forces fp32 compute; ``None`` leaves OpenVINO's default,
    which is bf16 on CPUs with AVX512-BF16 / AMX (faster, not bit-comparable).
    Compiled with :data:`COMPILE_CONFIG` (denormal flags off, see the module docstring).
    """

    def __init__(
        self, path: str | Path, *, threads: int | None = None, device: str = "CPU", precision: str | None = "f32"
    ) -> None:
        ov = require_openvino()
        path = Path(path)
        xml = path / "model.xml" if path.is_dir() else path
        if not xml.is_file():
            raise FileNotFoundError(f"OpenVINO model {xml} not found")
        core = ov.Core()
        ov_model = core.read_model(str(xml))
        self.metadata = read_openvino_metadata(ov_model)
        config: dict[str, object] = dict(COMPILE_CONFIG)
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if precision is not None:
            config["INFERENCE_PRECISION_HINT"] = precision
        self.compiled = core.compile_model(ov_model, device, config)
        self._inputs = {}
        for port in self.compiled.inputs:
            names = port.get_names()
            for wanted in ("images", "orig_target_sizes"):
                if wanted in names:
                    self._inputs[wanted] = port
        if len(self._inputs) != 2:
            raise ValueError(f"{xml}: inputs 'images' and 'orig_target_sizes' not found; export with `rtdetr export`")
        self._outputs = [self.compiled.output(name) for name in ("labels", "boxes", "scores")]
        self.imgsz = self.metadata.imgsz
        self.num_classes = self.metadata.num_classes
        self.class_names = self.metadata.class_names

    def __call__(self, images: Tensor, orig_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        feed = {
            self._inputs["images"]: images.detach().cpu().float().contiguous().numpy(),
            self._inputs["orig_target_sizes"]: orig_sizes.detach().cpu().to(torch.int64).contiguous().numpy(),
        }
        result = self.compiled(feed)
        labels, boxes, scores = (result[port] for port in self._outputs)
        return (
            torch.from_numpy(np.asarray(labels, dtype=np.int64)),
            torch.from_numpy(np.asarray(boxes, dtype=np.float32)),
            torch.from_numpy(np.asarray(scores, dtype=np.float32)),
        )
