"""``rtdetr export``: write ONNX / TorchScript / OpenVINO (optionally int8 or fp16) and check parity.

Wiring in ``rtdetr/cli.py`` (inside ``build_parser``)::

    from .export.command import add_export_parser
    add_export_parser(sub)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..cli_options import TRUSTED_HELP

if TYPE_CHECKING:
    from torch import nn

__all__ = ["FORMATS", "add_export_parser", "run_export"]

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript", "openvino")
CHECK_IMAGES = 4  # images in the post-export parity check


def add_export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``export`` subcommand (its handler is :func:`run_export`, set as ``func``)."""
    p = subparsers.add_parser(
        "export",
        help="export a model (with its postprocess) to ONNX / TorchScript / OpenVINO and check it against PyTorch",
        description=(
            "Writes the end-to-end detector: inputs images float32 [B,3,S,S] in [0,1] and "
            "orig_target_sizes int64 [B,2] (w,h); outputs labels [B,K], boxes [B,K,4] xyxy px, scores [B,K]."
        ),
    )
    p.add_argument(
        "--model", required=True, help="preset name (see `rtdetr info`), training checkpoint or weights file"
    )
    p.add_argument("--weights", default=None, help="weights for a preset name (registry tag, file, URL, hf:ORG/NAME)")
    p.add_argument("--num-classes", type=int, default=None, help="classes of a preset without weights (default 80)")
    p.add_argument("--trusted", action="store_true", help=TRUSTED_HELP)
    p.add_argument("--format", choices=FORMATS, default="onnx")
    p.add_argument(
        "--imgsz", type=int, default=None, help="square input side, multiple of 32 (default: the model's, 640)"
    )
    p.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension (ONNX / OpenVINO)")
    p.add_argument("--half", action="store_true", help="fp16 network (GPU runtimes; slow on most CPUs)")
    p.add_argument("--int8", action="store_true", help="ONNX int8 static quantization (QDQ), calibrated on --calib")
    p.add_argument("--calib", default=None, help="folder of representative images for --int8")
    p.add_argument("--calib-images", type=int, default=64, help="calibration images used (default 64)")
    p.add_argument(
        "--int8-full-range",
        action="store_true",
        help="--int8 with 8-bit instead of 7-bit weights: a little more accurate on CPUs with VNNI "
        "(AVX512-VNNI / AVX-VNNI), wrong (saturated) results on CPUs without it; see docs/export_int8.md",
    )
    p.add_argument(
        "--out", default=None, help="output file (default: derived from the model name, in the current folder)"
    )
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17, minimum 16)")
    p.add_argument("--no-check", action="store_true", help="skip the runtime-vs-PyTorch parity check")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the parity check's runtime")
    p.set_defaults(func=run_export)
    return p


def _load_model(args: argparse.Namespace) -> nn.Module:
    from ..loader import load_model

    return load_model(args.model, weights=args.weights, num_classes=args.num_classes, trusted=args.trusted)


def _default_out(args: argparse.Namespace, model: nn.Module, imgsz: int) -> Path:
    source = Path(args.model)
    stem = source.stem if source.is_file() else model.config.name
    folder = source.parent if source.is_file() else Path(".")
    suffix = "_int8" if args.int8 else "_fp16" if args.half else ""
    base = f"{stem}_{imgsz}{suffix}"
    if args.format == "onnx":
        return folder / f"{base}.onnx"
    if args.format == "torchscript":
        return folder / f"{base}.torchscript"
    return folder / f"{base}_openvino_model" / "model.xml"


def _validate(args: argparse.Namespace) -> None:
    if args.int8 and args.format != "onnx":
        raise SystemExit("--int8 is implemented for --format onnx (onnxruntime static quantization)")
    if args.int8 and args.half:
        raise SystemExit("--int8 and --half exclude each other")
    if args.int8 and not args.calib:
        raise SystemExit("--int8 needs --calib DIR: a folder of representative images (a few dozen)")
    if args.calib and not args.int8:
        raise SystemExit("--calib is only used with --int8")
    if getattr(args, "int8_full_range", False) and not args.int8:
        raise SystemExit("--int8-full-range is only used with --int8")
    if args.dynamic_batch and args.format == "torchscript":
        log.info("TorchScript exports accept any batch; --dynamic-batch is implied")


def _check_inputs(args: argparse.Namespace, imgsz: int):
    """Parity-check inputs: calibration images for int8 (random noise hides quantization error), else noise."""
    import torch

    from .graph import example_inputs

    if not args.int8:
        return example_inputs(imgsz, batch=2 if args.dynamic_batch else 1, seed=1)
    from ..data.image_io import load_image
    from .quantize import list_images, preprocess_image

    files = list_images(args.calib)[:CHECK_IMAGES]
    images = [load_image(f) for f in files]
    batch = torch.cat([preprocess_image(im, imgsz) for im in images])
    sizes = torch.tensor([[im.shape[-1], im.shape[-2]] for im in images], dtype=torch.int64)
    return batch, sizes


def _int8_scheme_line(path: Path) -> str:
    """One line saying which int8 scheme was written and on which CPUs it is exact."""
    from .onnx import read_onnx_metadata

    q = read_onnx_metadata(path).quantization or {}
    where = (
        "exact on every x86 CPU"
        if q.get("saturation_free_on_avx2")
        else "exact only on CPUs with VNNI (AVX512-VNNI / AVX-VNNI); saturates on others"
    )
    return (
        f"int8 scheme: {q.get('format')}, {q.get('activations')} activations, {q.get('weight_bits')}-bit "
        f"{'per-channel ' if q.get('per_channel') else ''}{q.get('weights')} weights ({where})"
    )


def run_export(args: argparse.Namespace) -> int:
    """Export as the flags say, then (unless ``--no-check``) compare the file with PyTorch. Exit code 1 on a failed check."""
    from .check import compare_detections, detection_agreement, run_both
    from .graph import check_imgsz
    from .onnx import DEFAULT_OPSET

    _validate(args)
    model = _load_model(args)
    cfg = model.config
    imgsz = args.imgsz or (int(cfg.eval_spatial_size[0]) if cfg.eval_spatial_size else 640)
    try:
        check_imgsz(imgsz)
    except ValueError as exc:
        raise SystemExit(f"--imgsz: {exc}") from None
    opset = args.opset or DEFAULT_OPSET
    out = Path(args.out) if args.out else _default_out(args, model, imgsz)

    if args.format == "onnx":
        from .onnx import export_onnx

        if args.int8:
            from .quantize import quantize_onnx_int8

            fp32 = out.with_name(out.stem.removesuffix("_int8") + "_fp32.onnx")
            export_onnx(model, fp32, imgsz=imgsz, dynamic_batch=args.dynamic_batch, opset=opset)
            print(f"wrote {fp32} (fp32, the quantizer's input)")
            written = quantize_onnx_int8(
                fp32, out, args.calib, max_images=args.calib_images, reduce_range=not args.int8_full_range
            )
            print(_int8_scheme_line(written))
        else:
            written = export_onnx(
                model, out, imgsz=imgsz, dynamic_batch=args.dynamic_batch, half=args.half, opset=opset
            )
    elif args.format == "torchscript":
        from .torchscript import export_torchscript

        written = export_torchscript(model, out, imgsz=imgsz, half=args.half)
    else:
        from .openvino import export_openvino

        written = export_openvino(
            model, out, imgsz=imgsz, dynamic_batch=args.dynamic_batch, half=args.half, opset=opset
        )
    print(f"wrote {written}")

    if args.no_check:
        return 0
    if args.half and args.format == "torchscript":
        print("check skipped: the fp16 TorchScript module needs a GPU (module.cuda()); run it there")
        return 0
    images, sizes = _check_inputs(args, imgsz)
    name, reference, candidate = run_both(written, model, images, sizes, threads=args.threads)
    if args.int8 or args.half:
        # Approximate by design: report agreement instead of a pass/fail parity.
        print(detection_agreement(reference, candidate, name=f"{name} ({'int8' if args.int8 else 'fp16'})").summary())
        return 0
    report = compare_detections(reference, candidate, name=name)
    print(report.summary())
    return 0 if report.passed else 1
