"""Int8 ONNX schemes compared on a trained checkpoint: COCO AP, agreement with fp32, features, latency.

    python -m benchmarks.int8_formats --checkpoint runs/bench/ours/last.pt --data runs/bench/data
    python -m benchmarks.int8_formats ... --schemes u8s8_7bit,u8s8_8bit --runs 30 --threads 1

For each scheme the fp32 export is quantized (calibrated on ``--calib-images`` images of the
training split) and, like the fp32 file, scored on the validation split by the package's COCO
evaluator (top 100 detections per image, inference preprocessing: antialiased resize, /255).
Also reported: agreement of the top-10 detections with the fp32 file, the relative error /
cosine of the backbone + encoder features (the quantized part) against fp32, the largest
int8 weight pair (255 * pair <= 32767 means no int16 saturation in onnxruntime's kernels for
CPUs without VNNI), and onnxruntime latency at batch 1 (median of ``--runs``). onnxruntime picks
its int8 kernels from the CPU it runs on (no option selects another), so latency and accuracy
are those of this machine's kernels; the CPU's flags are printed with the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

# name -> quantize_onnx_int8 keyword arguments
SCHEMES: dict[str, dict] = {
    "u8s8_7bit": {"reduce_range": True},  # the default
    "u8s8_8bit": {"reduce_range": False},  # the earlier default (full-range 8-bit weights)
    "u8u8_8bit": {"reduce_range": False, "weight_type": "uint8"},
    "u8s8_7bit_per_tensor": {"reduce_range": True, "per_channel": False},
    "u8s8_7bit_qoperator": {"reduce_range": True, "quant_format": "qoperator"},
}


def cpu_flags() -> str:
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return platform.processor() or "unknown"
    return " ".join(f for f in wanted if f in flags)


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def val_images(data: Path, imgsz: int) -> tuple[dict, list[tuple[int, Tensor, Tensor]]]:
    """Ground truth and (image id, [1, 3, S, S] input, [1, 2] original w, h) per validation image."""
    from rtdetr.data.image_io import load_image
    from rtdetr.export.quantize import preprocess_image

    gt = json.loads((data / "annotations" / "instances_val.json").read_text())
    items = []
    for img in gt["images"]:
        image = load_image(data / "val" / img["file_name"])
        items.append(
            (int(img["id"]), preprocess_image(image, imgsz), torch.tensor([[image.shape[-1], image.shape[-2]]]))
        )
    return gt, items


def evaluate(path: Path, gt: dict, items: list, threads: int) -> tuple[dict, list]:
    """COCO metrics of an exported file on ``items``, and its raw outputs (for agreement)."""
    from rtdetr.eval.coco_eval import CocoEvaluator
    from rtdetr.export.onnx import read_onnx_metadata

    meta = read_onnx_metadata(path)
    ids = meta.category_ids or sorted(int(c["id"]) for c in gt["categories"])
    evaluator = CocoEvaluator(gt)
    sess = session(path, threads)
    outputs = []
    for image_id, x, size in items:
        labels, boxes, scores = sess.run(None, {"images": x.numpy(), "orig_target_sizes": size.numpy()})
        outputs.append((labels, boxes, scores))
        top = np.argsort(-scores[0], kind="stable")[:100]
        evaluator.update(
            [
                {
                    "image_id": image_id,
                    "labels": np.asarray(ids)[labels[0, top]],
                    "boxes": boxes[0, top],
                    "scores": scores[0, top],
                }
            ]
        )
    return evaluator.summarize(), outputs


def latencies_ms(paths: dict[str, Path], x: Tensor, size: Tensor, threads: int, runs: int) -> dict[str, float]:
    """Median batch-1 latency per file, timed round-robin so that load changes hit every file alike."""
    sessions = {name: session(path, threads) for name, path in paths.items()}
    feed = {"images": x.numpy(), "orig_target_sizes": size.numpy()}
    times: dict[str, list[float]] = {name: [] for name in paths}
    for sess in sessions.values():
        for _ in range(3):
            sess.run(None, feed)
    for _ in range(runs):
        for name, sess in sessions.items():
            start = time.perf_counter()
            sess.run(None, feed)
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def export_features(model: nn.Module, path: Path, imgsz: int) -> Path:
    from rtdetr.export.features import export_features_onnx

    return export_features_onnx(model, path, imgsz)


def feature_error(fp32: Path, int8: Path, items: list, threads: int) -> tuple[float, float]:
    """Relative L2 error and cosine of int8 vs fp32 features over ``items`` (all images together)."""
    a, b = session(fp32, threads), session(int8, threads)
    num = den = dot = nb = 0.0
    for _, x, size in items:
        feed = {"images": x.numpy(), "orig_target_sizes": size.numpy()}
        ref, got = a.run(None, feed)[0].astype(np.float64), b.run(None, feed)[0].astype(np.float64)
        num += ((got - ref) ** 2).sum()
        den += (ref**2).sum()
        dot += (got * ref).sum()
        nb += (got**2).sum()
    return float(np.sqrt(num / den)), float(dot / np.sqrt(den * nb))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="one of our training checkpoints (last.pt / best.pt)")
    src.add_argument("--model", help="a preset with random weights (latency and graph checks only: AP means nothing)")
    p.add_argument("--data", required=True, help="COCO-layout dataset root (annotations/, train/, val/)")
    p.add_argument("--out", default="runs/int8_formats")
    p.add_argument("--imgsz", type=int, default=None, help="default: the checkpoint's training size")
    p.add_argument("--schemes", default=",".join(SCHEMES), help=f"comma list of {list(SCHEMES)}")
    p.add_argument("--calib-images", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    p.add_argument("--runs", type=int, default=20, help="timed runs per file (median)")
    p.add_argument("--val-images", type=int, default=None, help="score only the first N validation images")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_flush_denormal(True)

    import onnx

    from rtdetr.export import export_onnx, quantize_onnx_int8
    from rtdetr.export.check import detection_agreement
    from rtdetr.export.quantize import max_weight_pair_sum
    from rtdetr.loader import model_from_checkpoint

    out, data = Path(args.out), Path(args.data)
    out.mkdir(parents=True, exist_ok=True)
    if args.checkpoint:
        model = model_from_checkpoint(args.checkpoint)
    else:
        import rtdetr

        gt_classes = len(json.loads((data / "annotations" / "instances_val.json").read_text())["categories"])
        model = rtdetr.build_model(args.model, num_classes=gt_classes).eval()
    imgsz = args.imgsz or int(model.config.eval_spatial_size[0] if model.config.eval_spatial_size else 640)
    fp32 = export_onnx(model, out / "fp32.onnx", imgsz=imgsz)
    feats = export_features(model, out / "features_fp32.onnx", imgsz)
    gt, items = val_images(data, imgsz)
    items = items[: args.val_images]
    calib = data / "train"

    rows = []
    metrics, ref_out = evaluate(fp32, gt, items, args.threads)
    rows.append({"scheme": "fp32", "AP": metrics["AP"], "AP50": metrics["AP50"]})
    paths = {"fp32": fp32}
    print(rows[-1], flush=True)
    stack = lambda outs: tuple(np.concatenate(parts) for parts in zip(*outs))  # noqa: E731
    for name in args.schemes.split(","):
        kwargs = SCHEMES[name]
        path = quantize_onnx_int8(fp32, out / f"{name}.onnx", calib, max_images=args.calib_images, **kwargs)
        metrics, outs = evaluate(path, gt, items, args.threads)
        agree = detection_agreement(stack(ref_out), stack(outs), top_k=10)
        fq = quantize_onnx_int8(feats, out / f"features_{name}.onnx", calib, max_images=args.calib_images, **kwargs)
        rel, cos = feature_error(feats, fq, items, args.threads)
        rows.append(
            {
                "scheme": name,
                "AP": metrics["AP"],
                "AP50": metrics["AP50"],
                "top10_matched": agree.matched,
                "top10_mean_iou": agree.mean_iou,
                "feature_rel_err": rel,
                "feature_cos": cos,
                "max_weight_pair": max_weight_pair_sum(onnx.load(str(path))),
                "weights": kwargs.get("weight_type", "int8"),
            }
        )
        paths[name] = path
        print(rows[-1], flush=True)
    for row, ms in zip(rows, latencies_ms(paths, *items[0][1:], args.threads, args.runs).values()):
        row["latency_ms"] = ms

    import onnxruntime

    source = args.checkpoint or f"random weights of {args.model}"
    print(
        f"\n{model.config.name} ({source}) @ {imgsz}, {len(items)} val images, onnxruntime {onnxruntime.__version__}, "
        f"{args.threads} thread(s), batch 1, CPU flags: {cpu_flags()}"
    )
    print("| scheme | AP | AP50 | top-10 matched | features rel. err / cos | max pair x255 | latency ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        extra = (
            "| - | - | - "
            if r["scheme"] == "fp32"
            else f"| {100 * r['top10_matched']:.1f}% | {r['feature_rel_err']:.3f} / {r['feature_cos']:.4f} "
            f"| {255 * r['max_weight_pair'] if r['weights'] == 'int8' else 'n/a (U8U8)'} "
        )
        print(f"| {r['scheme']} | {r['AP']:.3f} | {r['AP50']:.3f} {extra}| {r['latency_ms']:.1f} |")
    (out / "results.json").write_text(json.dumps({"cpu_flags": cpu_flags(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
