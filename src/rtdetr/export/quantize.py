"""Int8 static (calibrated) quantization of an exported ONNX detector, QDQ format.

Why static: dynamic int8 quantizes activations at run time and, for this
conv-heavy model, was measured 2.4x *slower* than fp32 in onnxruntime. Static
quantization fixes activation scales from calibration images, so onnxruntime
fuses the QuantizeLinear/DequantizeLinear pairs into int8 kernels (QLinearConv,
MatMulInteger, ...), which are fast on CPUs with VNNI (AVX512-VNNI / AVX-VNNI).

Recipe: uint8 activations and per-channel int8 weights (U8S8, what x86 int8
kernels want), MinMax calibration, and by default **7-bit weights**
(``reduce_range``). Why 7 bits: without VNNI (AVX2-only CPUs, AVX-512 without
VNNI) onnxruntime's U8S8 kernels multiply with ``vpmaddubsw``, which adds two
uint8 x int8 products into a *saturating int16*. With 8-bit weights a pair can
reach 2 * 255 * 127 = 64770 > 32767 and is clipped: on an AVX2 CPU the
backbone + encoder features of a test model came out with 0.28 relative error
(cosine 0.966). With weights in [-64, 64] a pair is at most 2 * 255 * 64 = 32640,
so the same file gives the same integers on every x86 CPU. VNNI kernels
(``vpdpbusd``, int32 accumulation) never saturate, so full 8-bit weights
(``reduce_range=False``) are a little more accurate there, and only there;
``docs/export_int8.md`` has the measured cost. The other saturation-free layout,
uint8 weights (U8U8, ``weight_type="uint8"``), runs slower kernels (int16
``vpmaddwd``) on every CPU. The scheme is recorded in the file's metadata
(``quantization``, see :mod:`rtdetr.export.metadata`).

Quantized: the backbone, the hybrid encoder
and the decoder's input projections (nearly all of the compute). Kept float: the
transformer decoder after its input projections (a small share of the compute
that holds the box regression, the +inf anchors of invalid tokens and the
sampling-location arithmetic, where 8-bit steps cost localization; opt in with
``quantize_decoder``) and always the postprocess (sigmoid scores, top-K, pixel
boxes), whose outputs would otherwise come out on a 256-step grid.

Calibration images are preprocessed exactly like inference
(:func:`rtdetr.infer.predictor.preprocess`: RGB, antialiased bilinear resize to
S x S, /255, no mean/std).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .metadata import parse_metadata
from .onnx import require_onnx, write_onnx_metadata

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageCalibrationReader",
    "list_images",
    "max_weight_pair_sum",
    "preprocess_image",
    "quantize_onnx_int8",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Node-name scopes the TorchScript exporter gives the modules of the end-to-end graph.
_SCOPES_DEFAULT = ("/model/backbone/", "/model/encoder/", "/model/decoder/input_proj")
_SCOPES_WITH_DECODER = ("/model/",)  # never the postprocess (top level: sigmoid, top-K, box scaling)
# Never quantized: LayerNormalization (its 1-D scale cannot take per-channel weights) and the
# attention Softmax of the encoder; measured on a trained model, dropping them costs no speed.
_FLOAT_OP_TYPES = frozenset({"LayerNormalization", "Softmax"})
# vpmaddubsw (U8S8 without VNNI) sums two uint8 x int8 products into a saturating int16.
_INT16_MAX = 32767
_UINT8_MAX = 255
_WEIGHT_TYPES = ("int8", "uint8")
_FORMATS = ("qdq", "qoperator")


def _require_quantization():
    try:
        from onnxruntime import quantization
    except ImportError as exc:
        raise ImportError("int8 quantization needs onnxruntime: pip install 'rtdetr[export]'") from exc
    return quantization


def preprocess_image(image: Tensor, imgsz: int) -> Tensor:
    """uint8 [3, H, W] RGB (or float in [0, 1]) -> float32 [1, 3, S, S] in [0, 1].

    Exactly the inference preprocessing (:func:`rtdetr.infer.predictor.preprocess`:
    antialiased bilinear resize of the 8-bit image, /255, no mean/std).
    """
    from ..infer.predictor import preprocess

    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an RGB image [3, H, W], got shape {tuple(image.shape)}")
    image = image.as_subclass(Tensor)
    if image.is_floating_point():
        image = image.clamp(0, 1).mul(255).round().to(torch.uint8)
    batch, _ = preprocess([image], imgsz)
    return batch


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` or below it, sorted (by suffix; see ``IMAGE_SUFFIXES``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"calibration folder {folder} does not exist or is not a directory")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"calibration folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


class ImageCalibrationReader:
    """onnxruntime ``CalibrationDataReader`` over a folder of images or a list of image tensors.

    Args:
        source: a folder (searched recursively) or a sequence of uint8 [3, H, W] RGB
            tensors (float [3, H, W] in [0, 1] also accepted).
        imgsz: the model's square input side S.
        max_images: use at most this many (evenly spread over a folder's sorted files).

    Each item fed is ``{"images": float32 [1, 3, S, S], "orig_target_sizes": int64 [[S, S]]}``.
    """

    def __init__(self, source: str | Path | Sequence[Tensor], imgsz: int, *, max_images: int = 64) -> None:
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
        self.imgsz = imgsz
        if isinstance(source, (str, Path)):
            files = list_images(source)
            if len(files) > max_images:
                step = len(files) / max_images
                files = [files[int(i * step)] for i in range(max_images)]
            self.items: list[Path | Tensor] = list(files)
        else:
            self.items = list(source)[:max_images]
            if not self.items:
                raise ValueError("no calibration images given")
        self._iter: Iterator[dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def _feeds(self, items: list[Path | Tensor]) -> Iterator[dict[str, np.ndarray]]:
        from ..data.image_io import load_image

        sizes = np.array([[self.imgsz, self.imgsz]], dtype=np.int64)
        for item in items:
            image = load_image(item) if isinstance(item, Path) else item
            yield {"images": preprocess_image(image, self.imgsz).numpy(), "orig_target_sizes": sizes}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = self._feeds(self.items)
        return next(self._iter, None)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Feed only items[start:end] next (onnxruntime's strided MinMax calibration calls this)."""
        self._iter = self._feeds(self.items[start_index:end_index])

    def rewind(self) -> None:
        self._iter = None


def _stride(n: int, most: int = 8) -> int:
    """The largest chunk size <= ``most`` that divides ``n`` (onnxruntime requires a divisor)."""
    return max(d for d in range(1, min(n, most) + 1) if n % d == 0)


def _default_op_types() -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted((set(QDQRegistry) | set(QLinearOpsRegistry)) - _FLOAT_OP_TYPES)


def _float_nodes(model_path: Path, quantize_decoder: bool) -> list[str]:
    """Names of the nodes to keep in float: everything outside the quantized scopes."""
    onnx = require_onnx()
    scopes = _SCOPES_WITH_DECODER if quantize_decoder else _SCOPES_DEFAULT
    names = [n.name for n in onnx.load(str(model_path), load_external_data=False).graph.node]
    if not any(n.startswith("/model/backbone/") for n in names):
        raise ValueError(
            f"{model_path}: no node is named /model/backbone/...; quantization needs the node names "
            "of rtdetr's exporter (export_onnx) to tell the network from the postprocess"
        )
    return [n for n in names if not n.startswith(scopes)]


def quantize_onnx_int8(
    src: str | Path,
    dst: str | Path,
    calib: str | Path | Sequence[Tensor],
    *,
    max_images: int = 64,
    per_channel: bool = True,
    quantize_decoder: bool = False,
    calibrate_method: str = "minmax",
    op_types: Sequence[str] | None = None,
    reduce_range: bool = True,
    weight_type: str = "int8",
    quant_format: str = "qdq",
) -> Path:
    """Statically quantize an fp32 ONNX file written by :func:`rtdetr.export.export_onnx`.

    Args:
        src: fp32 ``.onnx`` with rtdetr metadata (``imgsz`` sets the calibration size).
        dst: output ``.onnx`` (QDQ: QuantizeLinear/DequantizeLinear around int8 weights).
        calib: folder of representative images (a few dozen from the target domain;
            more only slows calibration), or a list of image tensors.
        max_images: calibration images used.
        per_channel: per-output-channel weight scales (recommended).
        quantize_decoder: also quantize the transformer decoder (a little faster, less accurate).
        calibrate_method: ``"minmax"`` (default), ``"entropy"`` or ``"percentile"``
            (the last two keep histograms of every activation: slow and memory-hungry).
        op_types: operator types to quantize (default: every type onnxruntime quantizes
            but LayerNormalization and Softmax).
        reduce_range: 7-bit weights (default), exact on every x86 CPU. ``False``: 8-bit
            weights, slightly more accurate on CPUs with VNNI, but onnxruntime's kernels
            for CPUs without VNNI saturate on them (wrong features; see the module docstring).
        weight_type: ``"int8"`` (U8S8, default) or ``"uint8"`` (U8U8: never saturates,
            slower kernels on every CPU).
        quant_format: ``"qdq"`` (default; QuantizeLinear/DequantizeLinear pairs that
            onnxruntime fuses) or ``"qoperator"`` (QLinearConv etc. written out).

    Returns:
        ``dst``. Metadata is copied with ``precision`` set to ``"int8"`` and
        ``quantization`` describing the scheme (format, weight bits, per-channel,
        calibration, onnxruntime version).
    """
    q = _require_quantization()
    onnx = require_onnx()
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"ONNX model {src} not found")
    props = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    meta = parse_metadata(props, source=str(src))
    if meta.precision != "fp32":
        raise ValueError(f"{src}: int8 quantization needs an fp32 model, this one is {meta.precision}")
    methods = {
        "minmax": q.CalibrationMethod.MinMax,
        "entropy": q.CalibrationMethod.Entropy,
        "percentile": q.CalibrationMethod.Percentile,
    }
    if calibrate_method not in methods:
        raise ValueError(f"calibrate_method must be one of {sorted(methods)}, got {calibrate_method!r}")
    if weight_type not in _WEIGHT_TYPES:
        raise ValueError(f"weight_type must be one of {list(_WEIGHT_TYPES)}, got {weight_type!r}")
    if quant_format not in _FORMATS:
        raise ValueError(f"quant_format must be one of {list(_FORMATS)}, got {quant_format!r}")
    reader = ImageCalibrationReader(calib, meta.imgsz, max_images=max_images)
    dst.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rtdetr_quant_") as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        # Shape inference + basic graph optimization, as onnxruntime recommends before quantizing.
        # The symbolic shape pass is skipped: all shapes are static but the batch.
        q.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        excluded = _float_nodes(pre, quantize_decoder)
        log.info(
            "calibrating on %d images at %dx%d (%s); %d nodes kept float",
            len(reader),
            meta.imgsz,
            meta.imgsz,
            calibrate_method,
            len(excluded),
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            q.quantize_static(
                str(pre),
                str(dst),
                reader,
                quant_format=q.QuantFormat.QDQ if quant_format == "qdq" else q.QuantFormat.QOperator,
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=q.QuantType.QUInt8,
                weight_type=q.QuantType.QInt8 if weight_type == "int8" else q.QuantType.QUInt8,
                calibrate_method=methods[calibrate_method],
                nodes_to_exclude=excluded,
                op_types_to_quantize=list(op_types) if op_types is not None else _default_op_types(),
                # Ranges are merged every `stride` images: the calibrator otherwise holds every
                # activation of every image in memory (~0.3 GB per image for R18 at 640).
                extra_options={"CalibStridedMinMax": _stride(len(reader))},
            )
    proto = onnx.load(str(dst))
    pair_max = max_weight_pair_sum(proto)
    scheme = {
        "format": "QDQ" if quant_format == "qdq" else "QOperator",
        "activations": "uint8",
        "weights": weight_type,
        "weight_bits": 7 if reduce_range else 8,
        "reduce_range": bool(reduce_range),
        "per_channel": bool(per_channel),
        "calibration": calibrate_method,
        "calibration_images": len(reader),
        "quantized": "network" if quantize_decoder else "backbone, encoder, decoder input projections",
        "onnxruntime": _ort_version(),
        # U8U8 kernels widen to int16 before multiplying; U8S8 ones are exact when no pair can overflow.
        "saturation_free_on_avx2": weight_type == "uint8" or _UINT8_MAX * pair_max <= _INT16_MAX,
    }
    write_onnx_metadata(proto, meta.with_quantization(scheme))
    onnx.save(proto, str(dst))
    if not scheme["saturation_free_on_avx2"]:
        log.warning(
            "%s has full 8-bit weights: exact with VNNI (AVX512-VNNI / AVX-VNNI) only; onnxruntime's kernels "
            "for other x86 CPUs saturate on them (use reduce_range=True for a file that is exact everywhere)",
            dst,
        )
    log.info(
        "wrote int8 %s model %s (%d-bit %s weights, %.1f MB) in %.1f s",
        scheme["format"],
        dst,
        scheme["weight_bits"],
        weight_type,
        dst.stat().st_size / 1e6,
        time.perf_counter() - start,
    )
    return dst


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def max_weight_pair_sum(model_proto) -> int:
    """Largest |w| + |w'| over the int8 weight initializers of a quantized ONNX graph.

    An x86 CPU without VNNI multiplies uint8 activations (<= 255) with int8 weights two
    at a time into a saturating int16: the file is exact there when
    ``255 * max_weight_pair_sum <= 32767``. The bound is taken over any two weights of
    a tensor (the kernels' pairing follows their packing), so it is conservative.
    Returns 0 when the graph has no int8 initializer.
    """
    from onnx import TensorProto, numpy_helper

    largest = 0
    for init in model_proto.graph.initializer:
        if init.data_type != TensorProto.INT8 or not init.dims:
            continue
        w = np.abs(numpy_helper.to_array(init).astype(np.int32)).ravel()
        if w.size >= 2:
            top = np.partition(w, w.size - 2)[-2:]
            largest = max(largest, int(top.sum()))
    return largest
