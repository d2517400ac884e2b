"""CPU inference paths of RT-DETR R18 against transformers, in one run; accuracy cost per path.

    python -m benchmarks.latency                                  # R18 @640, batch 1, all paths
    python -m benchmarks.latency --checkpoint runs/demo/train/best.pt --data runs/demo/data
                                                                  # + AP50 of each path on that val set

Paths (all end to end inside the model call: network + top-K postprocess):
  transformers eager fp32   RTDetrForObjectDetection, same R18 config, random init (the 1.00x)
  ours eager fp32           as built: RepVGG branches and BatchNorms unfused, NCHW
  ours deploy fp32          RepVGG fused, BatchNorm folded, channels-last, eager
  ours deploy bf16          the same under bf16 autocast (AVX512-BF16 / AMX CPUs)
  ours traced fp32 / bf16   the deploy model as a frozen TorchScript graph (what ``Detector``
                            runs by default on a CPU after ``warmup()`` or 50 calls of a size)
  onnxruntime fp32          `rtdetr export` graph
  onnxruntime int8          static QDQ quantization calibrated on synthetic images

Timing: every path runs in interleaved rounds (so a busy machine slows all alike),
medians and p90 over all timed calls, after warm-up, same thread count for all.
``model`` = the backend call on a preprocessed batch; ``end-to-end`` adds JPEG
decode (1280x720), resize and score filtering (:mod:`rtdetr.infer.benchmark`).
Also printed: the eval_idx trade-off (latency by decoder layers kept).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

import rtdetr
from rtdetr.infer import Detector, TorchBackend
from rtdetr.infer.benchmark import LatencyStats, detector_calls, synthetic_jpeg

log = logging.getLogger("latency")


class _HFBackend:
    """transformers' model behind our Backend interface (its own top-K postprocess)."""

    def __init__(self, preset: str, num_classes: int = 80) -> None:
        from benchmarks.hf_reference import hf_rtdetr

        self.net = hf_rtdetr(preset, num_classes).eval()
        self.num_classes, self.class_names, self.imgsz = num_classes, None, None
        self.post = rtdetr.build_postprocessor(rtdetr.get_config(preset, num_classes=num_classes))

    @torch.inference_mode()
    def __call__(self, images, orig_sizes):
        out = self.net(pixel_values=images)
        return self.post.forward_tensors({"pred_logits": out.logits, "pred_boxes": out.pred_boxes}, orig_sizes)


def build_paths(
    model: torch.nn.Module, imgsz: int, workdir: Path, calib, *, threads: int, hf: str | None
) -> dict[str, Detector]:
    """Every inference path for ``model`` (a built or trained detector), as Detectors."""
    paths: dict[str, Detector] = {}
    if hf:
        paths["transformers eager fp32"] = Detector(_HFBackend(hf, model.config.num_classes), imgsz=imgsz)
    paths["ours eager fp32"] = Detector(
        TorchBackend(copy.deepcopy(model), fuse=False, channels_last=False, graph="eager"), imgsz=imgsz
    )
    for precision in ("fp32", "bf16"):
        for graph, name in (("eager", "deploy"), ("auto", "traced")):
            paths[f"ours {name} {precision}"] = Detector(
                copy.deepcopy(model), imgsz=imgsz, precision=precision, graph=graph
            )
    try:
        from rtdetr.export import export_onnx, quantize_onnx_int8
        from rtdetr.infer.onnx_backend import OnnxBackend

        fp32 = export_onnx(copy.deepcopy(model), workdir / "model.onnx", imgsz=imgsz)
        paths["onnxruntime fp32"] = Detector(OnnxBackend(fp32, threads=threads))
        int8 = quantize_onnx_int8(fp32, workdir / "model_int8.onnx", calib)
        paths["onnxruntime int8"] = Detector(OnnxBackend(int8, threads=threads))
    except ImportError as exc:
        log.warning("onnxruntime paths skipped: %s", exc)
    return paths


def time_paths(
    paths: dict[str, Detector], *, rounds: int, per_round: int, batch: int
) -> dict[str, dict[str, list[float]]]:
    """Interleaved timing; returns per path and scope (``model``, ``end_to_end``) the call times in ms."""
    jpeg = synthetic_jpeg()
    for det in paths.values():  # the traced paths trace now, not after 50 calls of the timed loop
        det.warmup(batch_size=batch, runs=0)
    calls = {name: detector_calls(det, batch=batch, jpeg=jpeg) for name, det in paths.items()}
    for scopes in calls.values():
        for fn in scopes.values():  # warm-up: kernel selection, allocator, oneDNN primitive caches
            fn()
            fn()
    times = {name: {scope: [] for scope in scopes} for name, scopes in calls.items()}
    for r in range(rounds):
        for name, scopes in calls.items():
            for _ in range(per_round):
                for scope, fn in scopes.items():
                    t = time.perf_counter()
                    fn()
                    times[name][scope].append((time.perf_counter() - t) * 1e3)
        log.info("round %d/%d done", r + 1, rounds)
    return times


def print_latency(times: dict[str, dict[str, list[float]]], batch: int, ref: str | None) -> list[dict]:
    rows = []
    stats = {
        name: {scope: LatencyStats.from_times(t, batch) for scope, t in scopes.items()}
        for name, scopes in times.items()
    }
    ref_ms = stats[ref]["model"].median_ms if ref in stats else None
    print("\n| path | model median ms | p90 | vs transformers | end-to-end median ms | p90 | images/s (e2e) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, st in stats.items():
        m, e = st["model"], st["end_to_end"]
        ratio = f"{m.median_ms / ref_ms:.2f}x" if ref_ms else "-"
        print(
            f"| {name} | {m.median_ms:.1f} | {m.p90_ms:.1f} | {ratio} | {e.median_ms:.1f} | {e.p90_ms:.1f} | {e.images_per_s:.2f} |"
        )
        rows.append(
            {
                "path": name,
                "model_ms": m.median_ms,
                "model_p90": m.p90_ms,
                "e2e_ms": e.median_ms,
                "ratio": m.median_ms / ref_ms if ref_ms else None,
            }
        )
    return rows


def eval_idx_tradeoff(preset: str, imgsz: int, runs: int) -> list[dict]:
    from rtdetr.infer.benchmark import time_callable

    cfg = rtdetr.get_config(preset)
    rows = []
    x = torch.rand(1, 3, imgsz, imgsz)
    sizes = torch.tensor([[imgsz, imgsz]])
    print(f"\n| {preset} decoder layers kept (eval_idx) | deploy fp32 model median ms |\n|---|---:|")
    for k in range(cfg.decoder.num_layers):
        torch.manual_seed(0)
        backend = TorchBackend(rtdetr.build_model(preset, eval_idx=k), graph="eager")
        st = time_callable(lambda: backend(x, sizes), warmup=2, runs=runs)
        print(f"| {k + 1} (eval_idx={k}) | {st.median_ms:.1f} |")
        rows.append({"eval_idx": k, "ms": st.median_ms})
    return rows


def accuracy(paths: dict[str, Detector], data: Path) -> dict[str, float]:
    """AP50 of each path on the synthetic val split (COCO json at data/annotations/instances_val.json)."""
    from faster_coco_eval import COCO, COCOeval_faster

    ann = next((data / "annotations").glob("*val*.json"))
    gt = COCO(str(ann))
    images = gt.dataset["images"]
    img_dir = data / "val"
    if not img_dir.is_dir():
        img_dir = next(p for p in data.iterdir() if p.is_dir() and "val" in p.name)
    out = {}
    for name, det in paths.items():
        if name.startswith("transformers"):
            continue
        results = []
        for im, r in zip(
            images,
            det.predict([str(img_dir / im["file_name"]) for im in images], conf=0.001, stream=True, keep_images=False),
        ):
            results.extend(r.to_coco_json(im["id"]))
        ev = COCOeval_faster(gt, gt.loadRes(results) if results else COCO(), "bbox", print_function=lambda *a: None)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        out[name] = float(ev.stats[1])
    print("\n| path | AP50 | change vs ours deploy fp32 (points) |\n|---|---:|---:|")
    base = out.get("ours deploy fp32", 0.0)
    for name, ap in out.items():
        print(f"| {name} | {ap:.3f} | {100 * (ap - base):+.2f} |")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="rtdetr_r18vd")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="default: all cores")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--per-round", type=int, default=3)
    p.add_argument("--no-hf", action="store_true")
    p.add_argument("--no-eval-idx", action="store_true")
    p.add_argument("--checkpoint", default=None, help="trained checkpoint: adds the AP50 of each path")
    p.add_argument("--data", default=None, help="the checkpoint's synthetic dataset folder (for AP50 and calibration)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    work = Path(tempfile.mkdtemp(prefix="rtdetr_latency_"))
    calib_dir = Path(args.data) / "train" if args.data else None
    if calib_dir is None or not calib_dir.is_dir():
        from rtdetr.data import generate_synthetic_dataset

        calib_dir = (
            Path(generate_synthetic_dataset(work / "calib", num_train=32, num_val=1, imgsz=args.imgsz)) / "train"
        )
    report: dict = {"threads": threads}
    torch.manual_seed(0)
    model = rtdetr.build_model(args.preset).eval()
    paths = build_paths(model, args.imgsz, work, calib_dir, threads=threads, hf=None if args.no_hf else args.preset)
    print(f"\n{args.preset} @ {args.imgsz}, batch {args.batch}, random weights")
    report["latency"] = print_latency(
        time_paths(paths, rounds=args.rounds, per_round=args.per_round, batch=args.batch),
        args.batch,
        None if args.no_hf else "transformers eager fp32",
    )
    del paths
    if not args.no_eval_idx:
        report["eval_idx"] = eval_idx_tradeoff(args.preset, args.imgsz, runs=args.rounds * args.per_round)
    if args.checkpoint:
        from rtdetr.loader import model_from_checkpoint

        trained = model_from_checkpoint(args.checkpoint).eval()
        size = int(trained.config.eval_spatial_size[0]) if trained.config.eval_spatial_size else args.imgsz
        print(f"\naccuracy cost per path: {args.checkpoint} ({trained.config.name} @ {size})")
        (work / "trained").mkdir()
        tpaths = build_paths(trained, size, work / "trained", calib_dir, threads=threads, hf=None)
        report["accuracy"] = accuracy(tpaths, Path(args.data))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
