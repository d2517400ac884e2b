"""The paper's end-to-end speed study, reproducible: NMS cost analysis and RT-DETR vs YOLO.

    python -m benchmarks.nms_study                          # CPU: train both (6 min each), study, ~20 min
    python -m benchmarks.nms_study --ours-ckpt runs/nms_study/ours/model_only.pt \\
        --yolo-ckpt runs/nms_study/yolo/weights/best.pt --device cuda --out docs/nms_study/cuda

1. Trains our model (``--ours-model``, bf16 autocast) and YOLOv8n (Ultralytics, from its yaml,
   no downloaded weights) from scratch on the synthetic set, each for ``--budget-min`` of
   wall clock (``train.train_ours`` / ``train.train_yolo``), unless
   ``--ours-ckpt`` / ``--yolo-ckpt`` give trained checkpoints (repeat them for more models).
2. (a) boxes per image above each confidence threshold; (b) YOLO's NMS time (torchvision
   ``batched_nms`` on its raw ``[4 + nc, anchors]`` output) and COCO AP for every (conf,
   IoU) pair of the grid, and our postprocessing time and AP against its score threshold
   alone; (c) end-to-end latency (preprocess + model + NMS or top-K), batch 1, for our
   model at every decoder depth (``eval_idx``), other presets (latency only) and YOLO at its
   validation and its prediction NMS settings.
3. Writes ``results.json``, ``tables.md`` and PNG plots to ``--out``.

Ultralytics is a benchmark-only dependency (``pip install -e '.[bench]'``). Timing: one
thread setting for everything (``--threads``), warm-up, repetitions, medians, interleaved
detectors; see ``measure``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

import rtdetr

from .detectors import Preprocess, RTDETRRunner, YoloRunner, load_ours, load_yolo, untrained_ours
from .measure import (
    box_counts,
    coco_ap,
    e2e_latency,
    load_val_images,
    ours_threshold_sweep,
    raw_outputs,
    yolo_nms_grid,
)
from .ops import device_sync
from .report import write_report
from .train import ensure_data, train_ours, train_yolo

GRID_CONF = (0.001, 0.01, 0.05, 0.25)
GRID_IOU = (0.5, 0.6, 0.7, 0.8)
# A finer threshold axis for the boxes-vs-confidence curve (contains GRID_CONF).
CURVE_CONF = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.25, 0.35, 0.5, 0.7, 0.9)
YOLO_SETTINGS = (  # (label, conf, iou, multi_label): Ultralytics' val and predict defaults
    ("val", 0.001, 0.7, True),
    ("predict", 0.25, 0.7, False),
)

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{(time.perf_counter() - T0) / 60:5.1f} min] {msg}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-min", type=float, default=6.0, help="training wall clock per model (minutes)")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--device", default="cpu", help="cpu or cuda (timing and evaluation; see --ours-ckpt)")
    p.add_argument("--out", default="docs/nms_study", help="results.json, tables.md and plots")
    p.add_argument("--run-dir", default="runs/nms_study", help="dataset, training runs and checkpoints")
    p.add_argument("--ours-model", default="rtdetrv2_hgnetv2_n")
    p.add_argument("--num-queries", type=int, default=100, help="queries of the model trained here")
    p.add_argument("--no-amp", action="store_true", help="train ours in fp32 instead of bf16 autocast")
    p.add_argument("--ours-ckpt", action="append", default=[], help="trained checkpoint of ours; skips training")
    p.add_argument("--yolo-ckpt", action="append", default=[], help="Ultralytics checkpoint; skips training")
    p.add_argument(
        "--latency-presets",
        default="rtdetrv2_hgnetv2_s,rtdetr_r18vd",
        help="comma list of presets timed with random weights (latency only)",
    )
    p.add_argument("--train-images", type=int, default=800)
    p.add_argument("--val-images", type=int, default=100)
    p.add_argument("--val-limit", type=int, default=None, help="study only the first N val images (quick checks)")
    # One thread by default: on a shared 2-core machine, 2 threads made single-image latency 2-5x
    # slower and very noisy whenever another process held a core (OpenMP waits on the busy core).
    p.add_argument("--threads", type=int, default=1, help="torch threads for all timing (0: torch's default)")
    p.add_argument("--nms-reps", type=int, default=5, help="timed repetitions per image and NMS setting")
    p.add_argument("--latency-images", type=int, default=30, help="images per detector and round")
    p.add_argument("--latency-rounds", type=int, default=4)
    p.add_argument("--warmup", type=int, default=3, help="unrecorded calls before each timed block")
    return p.parse_args(argv)


def machine_info(device: torch.device, threads: int) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "torchvision": __import__("torchvision").__version__,
        "python": platform.python_version(),
        "device": str(device),
        "load_before": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }
    try:
        info["ultralytics"] = __import__("ultralytics").__version__
    except ImportError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["device_name"] = f"{info['gpu']} (host: {os.cpu_count()} x {cpu})"
    else:
        info["device_name"] = f"CPU, {os.cpu_count()} x {cpu}, {threads} threads"
    return info


def slim_checkpoint(src: Path, dst: Path) -> Path:
    """Config + EMA weights + class table only (a quarter of the size): what the study loads."""
    state = torch.load(src, map_location="cpu", weights_only=False)
    weights = state["ema"]["module"] if state.get("ema") else state["model"]
    keep = {k: state[k] for k in ("config", "class_names", "category_ids", "metrics") if k in state}
    torch.save({**keep, "model": weights}, dst)
    return dst


def train_models(args: argparse.Namespace, data: Path, run_dir: Path) -> list[dict[str, Any]]:
    """Train what no checkpoint was given for; appends the new checkpoints to args."""
    rows, budget = [], args.budget_min * 60
    if not args.ours_ckpt:
        log(f"training {args.ours_model} for {args.budget_min:g} min")
        r = train_ours(
            data,
            args.ours_model,
            args.imgsz,
            budget,
            run_dir / "ours",
            {"num_queries": args.num_queries},
            amp=not args.no_amp,
        )
        args.ours_ckpt = [str(slim_checkpoint(run_dir / "ours" / "last.pt", run_dir / "ours" / "model_only.pt"))]
        rows.append(
            {
                "model": r["model"] + (" (bf16 autocast)" if not args.no_amp else ""),
                "budget_min": args.budget_min,
                "epochs": r["epochs"],
                "AP": r["AP"],
            }
        )
        log(f"ours trained: {r}")
    if not args.yolo_ckpt:
        log(f"training YOLOv8n for {args.budget_min:g} min (Ultralytics' recipe, on {args.device})")
        r = train_yolo(data, args.imgsz, budget, run_dir.resolve(), device=args.device)
        weights = run_dir / "yolo" / "weights"
        args.yolo_ckpt = [str(weights / ("best.pt" if (weights / "best.pt").exists() else "last.pt"))]
        rows.append(
            {
                "model": r["model"] + " (AP: Ultralytics predict, conf 0.001)",
                "budget_min": args.budget_min,
                "epochs": None,
                "AP": r["AP"],
            }
        )
        log(f"YOLO trained: {r}")
    return rows


def build_runners(args: argparse.Namespace, device: torch.device, num_classes: int, category_ids: list[int]):
    """Runners: ours trained (one per decoder depth), ours latency-only, and per YOLO model
    ``(model name, [one runner per NMS setting in YOLO_SETTINGS])``."""
    ours = []
    for path in args.ours_ckpt:
        model, cats = load_ours(path, device)
        layers, preset = model.config.decoder.num_layers, model.config.name
        for k in range(layers):
            m = model if k == layers - 1 else load_ours(path, device, eval_idx=k)[0]
            ours.append(RTDETRRunner(f"{preset} {k + 1}/{layers} dec", m, cats))
    untrained = [
        RTDETRRunner(
            f"{p} (random weights)", untrained_ours(p, num_classes, args.imgsz, device), category_ids, trained=False
        )
        for p in filter(None, args.latency_presets.split(","))
    ]
    yolos = []
    for path in args.yolo_ckpt:
        model = load_yolo(path, device)
        name = Path(str((getattr(model, "yaml", None) or {}).get("yaml_file", path))).stem
        if len(model.names) != num_classes:
            raise ValueError(f"{path} predicts {len(model.names)} classes, the dataset has {num_classes}")
        yolos.append(
            (
                name,
                [
                    YoloRunner(f"{name} ({label} NMS)", model, category_ids, args.imgsz, conf=c, iou=i, multi_label=ml)
                    for label, c, i, ml in YOLO_SETTINGS
                ],
            )
        )
    return ours, untrained, yolos


def short_setting(runner: Any) -> str:
    if runner.kind == "yolo":
        return f"NMS conf {runner.conf:g} IoU {runner.iou:g}" + ("" if runner.multi_label else " best-cls")
    return f"top-{runner.post.num_top_queries}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_flush_denormal(True)  # denormals once made CPU inference 17x slower here
    threads = args.threads or torch.get_num_threads()  # read before Ultralytics lowers it for training
    device = torch.device(args.device)
    command = "python -m benchmarks.nms_study " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    machine = machine_info(device, threads)
    run_dir, out = Path(args.run_dir), Path(args.out)
    data = ensure_data(run_dir / "data", args.imgsz, args.train_images, args.val_images)
    training = train_models(args, data, run_dir)

    torch.set_num_threads(threads)  # Ultralytics' CPU training sets 1 thread; every timing uses `threads`
    images, ds = load_val_images(data, device, args.val_limit)
    pre, sync = Preprocess(args.imgsz, device), device_sync(device)
    ours, untrained, yolos = build_runners(args, device, ds.num_classes, list(ds.category_ids))
    log(f"study on {len(images)} val images, {args.imgsz} px, {device}, {torch.get_num_threads()} threads")

    counts: dict[str, Any] = {"table_thresholds": list(GRID_CONF), "detectors": {}}
    grids, ap = {}, {}
    for name, group in yolos:
        head = group[0]  # the validator's setting; the grid varies its thresholds
        raws = raw_outputs(head, images, pre)
        counts["detectors"][name] = {"kind": "yolo", **box_counts(head, raws, CURVE_CONF)}
        log(f"{name}: NMS grid ({len(GRID_CONF) * len(GRID_IOU)} settings x {args.nms_reps} reps)")
        grids[name] = yolo_nms_grid(
            head, raws, images, ds, GRID_CONF, GRID_IOU, reps=args.nms_reps, warmup=1, sync=sync
        )
        for r in group:
            with torch.inference_mode():
                ap[id(r)] = coco_ap(ds, images, [r.postprocess(raw, im.orig_wh) for raw, im in zip(raws, images)])
    ours_raws = []
    for r in ours:
        ours_raws.append(raw_outputs(r, images, pre))
        with torch.inference_mode():
            ap[id(r)] = coco_ap(ds, images, [r.postprocess(raw, im.orig_wh) for raw, im in zip(ours_raws[-1], images)])
        log(f"{r.name}: AP {ap[id(r)]['AP']:.4f}")
    full_depth = [(r, raws) for r, raws in zip(ours, ours_raws) if r.eval_idx == r.num_layers - 1]
    for r, raws in full_depth:
        counts["detectors"][r.name] = {"kind": "rtdetr", **box_counts(r, raws, CURVE_CONF)}
    log("RT-DETR score-threshold sweep")
    sweep = ours_threshold_sweep(
        [r for r, _ in full_depth],
        [raws for _, raws in full_depth],
        images,
        ds,
        [None, *GRID_CONF],
        reps=args.nms_reps,
        warmup=1,
        sync=sync,
    )
    del ours_raws

    runners = [*ours, *untrained, *(r for _, g in yolos for r in g)]
    log(f"end-to-end latency: {len(runners)} detectors x {args.latency_rounds} rounds x {args.latency_images} images")
    lat = e2e_latency(
        runners, images[: args.latency_images], pre, rounds=args.latency_rounds, warmup=args.warmup, sync=sync, log=log
    )
    e2e = [
        {
            "name": r.name,
            "kind": r.kind,
            "setting": r.setting,
            "setting_short": short_setting(r),
            **(ap.get(id(r)) or {"AP": None, "AP50": None}),
            "latency": lat[r.name],
        }
        for r in runners
    ]

    machine["load_after"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    results = {
        "command": command,
        "machine": machine,
        "wall_s": time.perf_counter() - T0,
        "settings": {k: v for k, v in vars(args).items()},
        "training": training,
        "val_images": len(images),
        "box_counts": counts,
        "nms_grid": grids,
        "ours_sweep": sweep,
        "e2e": e2e,
        "rtdetr_version": getattr(rtdetr, "__version__", None),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    for path in write_report(results, out):
        log(f"wrote {path}")
    print((out / "tables.md").read_text())
    log(f"done in {(time.perf_counter() - T0) / 60:.1f} min")
    return 0
