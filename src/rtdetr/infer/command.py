"""``rtdetr predict``: images, folders, globs and videos to annotated files and a COCO-results JSON."""

from __future__ import annotations

import argparse
import time
from collections import Counter

import torch

from ..runtime import PRECISION_HELP, PRECISIONS

__all__ = ["add_predict_parser", "add_benchmark_parser", "resolve_device", "detector_from_args"]


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``; anything else unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def detector_from_args(args: argparse.Namespace):
    """The Detector that ``--model``, ``--weights``, ``--device``, ``--precision``, ``--imgsz``
    and (where the command has it) ``--set`` describe."""
    from ..cli import _parse_sets
    from .predictor import Detector

    return Detector.from_pretrained(
        args.model, weights=args.weights, device=resolve_device(args.device), precision=args.precision,
        imgsz=args.imgsz, **_parse_sets(getattr(args, "set", None)),
    )  # fmt: skip


def _cmd_predict(args: argparse.Namespace) -> int:
    from .writer import PredictionWriter

    device = resolve_device(args.device)
    detector = detector_from_args(args)
    source = args.source[0] if len(args.source) == 1 else args.source
    counts: Counter[str] = Counter()
    n_images, speed_sum = 0, Counter()
    t0 = time.perf_counter()
    with PredictionWriter(args.out, save_images=not args.no_save_images, save_json=not args.no_save_json) as writer:
        results = detector.predict(
            source, conf=args.conf, classes=args.classes, max_det=args.max_det, batch_size=args.batch_size,
            stream=True, progress=True,
        )  # fmt: skip
        for det in results:
            writer.add(det)
            n_images += 1
            counts.update(det.names)
            speed_sum.update(det.speed)
    elapsed = time.perf_counter() - t0
    found = ", ".join(f"{n} {name}" for name, n in counts.most_common(10)) or "nothing"
    print(f"{n_images} image(s)/frame(s) in {elapsed:.1f} s; found {found} (conf >= {args.conf})")
    if n_images:
        per = ", ".join(f"{k} {v / n_images:.1f} ms" for k, v in speed_sum.items())
        print(f"per image: {per} at {detector.imgsz}x{detector.imgsz} on {device} ({args.precision})")
    print(f"results in {args.out}/ (predictions.json, images.json" + (", annotated media)" if not args.no_save_images else ")"))
    return 0


def add_predict_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="detect objects in images, folders, globs or videos")
    p.add_argument("source", nargs="+", help="image / video files, folders or glob patterns")
    p.add_argument("--model", required=True, help="preset name, training checkpoint (.pt) or exported .onnx")
    p.add_argument("--weights", default=None, help="weights for a preset: registry tag (coco), file, URL or hf:ORG/NAME")
    p.add_argument("--conf", type=float, default=0.5, help="minimum score (default 0.5)")
    p.add_argument("--imgsz", type=int, default=None, help="model input side (default: the model's, 640)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--classes", type=int, nargs="+", default=None, help="keep only these class indices")
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.add_argument("--out", default="runs/predict", help="output folder")
    p.add_argument("--no-save-images", action="store_true", help="only write the JSON files")
    p.add_argument("--no-save-json", action="store_true", help="only write annotated media")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model config override, e.g. eval_idx=2")
    p.set_defaults(func=_cmd_predict)


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from .benchmark import benchmark_detector

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    detector = detector_from_args(args)
    stats = benchmark_detector(detector, batch=args.batch, runs=args.runs, warmup=args.warmup)
    print(f"{args.model} on {device} ({args.precision}, {torch.get_num_threads()} threads), "
          f"{detector.imgsz}x{detector.imgsz}, batch {args.batch}, {args.runs} runs")  # fmt: skip
    print("| scope | median ms | p90 ms | images/s |\n|---|---:|---:|---:|")
    for scope, st in stats.items():
        print(f"| {scope.replace('_', '-')} | {st.median_ms:.1f} | {st.p90_ms:.1f} | {st.images_per_s:.2f} |")
    print("end-to-end = JPEG decode (1280x720) + resize + model + top-K + score filter")
    return 0


def add_benchmark_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="latency and throughput, model-only and end to end")
    p.add_argument("--model", required=True, help="preset name, training checkpoint (.pt) or exported .onnx")
    p.add_argument("--weights", default=None)
    p.add_argument("--imgsz", type=int, default=None)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.add_argument("--device", default="auto")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5, help="untimed calls first (oneDNN builds kernels on the first few)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model config override, e.g. eval_idx=2")
    p.set_defaults(func=_cmd_benchmark)
