"""Detect objects in an image, export the detector to ONNX, and run the ONNX file.

    python examples/detect_and_export.py photo.jpg                       # COCO-trained R18 (downloads once)
    python examples/detect_and_export.py photo.jpg --model rtdetr_r50vd --imgsz 640 --out runs/export_r50
    python examples/detect_and_export.py photo.jpg --weights runs/train/best.pt   # your fine-tuned model
    python examples/detect_and_export.py photo.jpg --random-weights      # no download: checks the pipeline only

Writes to ``--out``: ``detections.png`` (PyTorch), ``model.onnx`` (the network and its
postprocessing in one graph, with the class names in its metadata) and
``detections_onnx.png`` (the ONNX file run by onnxruntime). Needs the ``export`` extra
(``pip install -e '.[export]'``: onnx, onnxruntime).

The command-line equivalents::

    rtdetr predict photo.jpg --model rtdetr_r18vd --weights coco --out runs/predict
    rtdetr export --model rtdetr_r18vd --weights coco --format onnx --imgsz 640
    rtdetr predict photo.jpg --model rtdetr_r18vd.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import rtdetr
from rtdetr.export import check_export, export_onnx


def load(model: str, weights: str | None, random_weights: bool, overrides: dict) -> torch.nn.Module:
    """A preset with registry / file weights, a training checkpoint, or random weights."""
    if Path(model).suffix in {".pt", ".pth", ".safetensors"} or Path(model).is_dir():
        return rtdetr.load_model(model, **overrides)  # the checkpoint knows its preset and classes
    if random_weights:
        return rtdetr.load_model(model, num_classes=80, **overrides)
    return rtdetr.load_model(model, weights=weights or "coco", **overrides)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", type=Path)
    p.add_argument("--model", default="rtdetr_r18vd", help="preset name or checkpoint file")
    p.add_argument("--weights", help="registry tag (default 'coco'), file, folder or hf:ORG/NAME")
    p.add_argument("--random-weights", action="store_true", help="untrained model (no download)")
    p.add_argument("--imgsz", type=int, default=640, help="square input side, a multiple of 32")
    p.add_argument("--conf", type=float, default=0.5)
    p.add_argument("--out", type=Path, default=Path("runs/detect_and_export"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. eval_idx=2")
    args = p.parse_args(argv)
    overrides = {k: int(v) if v.lstrip("-").isdigit() else v for k, v in (s.split("=", 1) for s in args.set)}
    args.out.mkdir(parents=True, exist_ok=True)

    # 1. Detect with PyTorch. Detector fuses a copy of the model for inference and picks
    #    the precision for this machine (bf16 only on CPUs with native bf16).
    model = load(args.model, args.weights, args.random_weights, overrides).eval()
    detector = rtdetr.Detector(model, imgsz=args.imgsz)
    (result,) = detector.predict(args.image, conf=args.conf)
    result.save(args.out / "detections.png")
    print(f"PyTorch: {len(result)} objects: {', '.join(result.names) or '-'}")

    # 2. Export: one ONNX graph from images to (labels, boxes, scores), metadata included,
    #    then compare onnxruntime with PyTorch on a test input.
    onnx_path = export_onnx(model, args.out / "model.onnx", imgsz=args.imgsz)
    report = check_export(onnx_path, model, imgsz=args.imgsz)
    print(f"exported {onnx_path}: {report.summary()}")

    # 3. Run the ONNX file: Detector reads its size and class names from the file's metadata.
    onnx_detector = rtdetr.Detector.from_pretrained(onnx_path)
    (onnx_result,) = onnx_detector.predict(args.image, conf=args.conf)
    onnx_result.save(args.out / "detections_onnx.png")
    print(f"onnxruntime: {len(onnx_result)} objects: {', '.join(onnx_result.names) or '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
